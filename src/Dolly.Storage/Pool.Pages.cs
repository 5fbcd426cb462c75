using System.Buffers.Binary;
using System.Diagnostics;
using Dolly.Storage.Engine;

namespace Dolly.Storage;

// Page cache and reference counts of metadata pages; data blocks belong to the BlockAllocator.
//
// Reference counts are not stored on disk: they are derived at open by walking every tree from the device
// table, and maintained incrementally afterwards (check compares the two). A page or block is "fresh" when it
// was allocated in the current, uncommitted transaction (TxnClock); only fresh, unshared pages and blocks
// are modified in place. Everything else is copied first, so the committed state on disk is never touched
// until the next superblock points away from it. A committed page whose count drops to zero is "pending"
// (count -1) until the commit that stops referencing it is durable, then becomes free.
public sealed partial class Pool
{
    private byte[]?[] _pages = new byte[]?[64];
    private int[] _pageRef = new int[64];
    private uint[] _pageBorn = new uint[64];
    private readonly Stack<uint> _freePages = new();
    private readonly List<uint> _pendingPages = [];
    private readonly List<uint> _freshPages = [];
    private uint _metaHighWater = 2;

    private readonly TxnClock _clock = new();
    private readonly BlockAllocator _blocks;

    // Free blocks whose disk space is kept for reuse at least (see BlockAllocator.Reclaim), at 64 KiB blocks.
    private const int MinKeptBlocks = 4096;

    private Span<byte> Page(uint id) => _pages[id]!;

    private uint GetU32(uint page, int index) => BinaryPrimitives.ReadUInt32LittleEndian(_pages[page]!.AsSpan(Layout.HeaderSize + (index * 4)));

    private void SetU32(uint page, int index, uint value) =>
        BinaryPrimitives.WriteUInt32LittleEndian(_pages[page]!.AsSpan(Layout.HeaderSize + (index * 4)), value);

    private static void Grow<T>(ref T[] array, long needed)
    {
        if (needed > array.Length)
        {
            long size = Math.Max(needed, (long)array.Length * 2);
            Array.Resize(ref array, (int)Math.Min(size, Array.MaxLength));
        }
    }

    private void EnsurePageCapacity(uint id)
    {
        Grow(ref _pages, (long)id + 1);
        Grow(ref _pageRef, (long)id + 1);
        Grow(ref _pageBorn, (long)id + 1);
    }

    /// <summary>A new, zeroed, fresh page with one reference.</summary>
    private uint NewPage(uint magic, int level)
    {
        uint id;
        if (_freePages.Count > 0)
        {
            id = _freePages.Pop();
        }
        else
        {
            if (_metaHighWater == uint.MaxValue)
            {
                throw new StorageException(new StorageError(StorageErrorCode.NoSpace, "the pool's metadata has reached its maximum of 2^32 pages"));
            }

            id = _metaHighWater++;
            EnsurePageCapacity(id);
        }

        Debug.Assert(_pageRef[id] == 0, "allocated page must be free");
        var page = _pages[id] ?? new byte[Layout.PageSize];
        Array.Clear(page);
        Layout.WriteHeader(page, magic, id, level);
        _pages[id] = page;
        _pageRef[id] = 1;
        _pageBorn[id] = _clock.Current;
        _freshPages.Add(id);
        return id;
    }

    /// <summary>
    /// Returns a page that may be modified in place and holds the same content as <paramref name="id"/>:
    /// the page itself if it is fresh and unshared, otherwise a copy that takes over one reference.
    /// </summary>
    private uint Shadow(uint id)
    {
        if (_pageRef[id] == 1 && _pageBorn[id] == _clock.Current)
        {
            return id;
        }

        var source = _pages[id]!;
        uint magic = Layout.Magic(source);
        int level = Layout.Level(source);
        uint copy = NewPage(magic, level);
        source.AsSpan(Layout.HeaderSize).CopyTo(_pages[copy]!.AsSpan(Layout.HeaderSize));
        if (_pageRef[id] > 1)
        {
            // The copy is a new parent of every child: each gains a reference; the original loses one.
            AddChildReferences(copy, magic);
            _pageRef[id]--;
        }
        else
        {
            // Sole owner moving off a committed page: children keep their count, the page waits for the commit.
            ReleasePage(id);
        }

        return copy;
    }

    private void AddChildReferences(uint page, uint magic)
    {
        switch (magic)
        {
            case Layout.MagicMapInterior:
            case Layout.MagicDevInterior:
                for (int i = 0; i < Layout.InteriorFanout; i++)
                {
                    uint child = GetU32(page, i);
                    if (child != 0)
                    {
                        _pageRef[child]++;
                    }
                }

                break;
            case Layout.MagicMapLeaf:
                for (int i = 0; i < _mapGeometry.LeafFanout; i++)
                {
                    uint p = LeafBlock(page, i);
                    if (p != NoBlock)
                    {
                        _blocks.AddReference(p);
                    }
                }

                break;
            default:
                break;
        }
    }

    /// <summary>Drops one reference to a page, releasing it and its subtree when nobody else holds them.</summary>
    private void DecPage(uint id)
    {
        Debug.Assert(_pageRef[id] > 0, "page reference count underflow");
        if (--_pageRef[id] > 0)
        {
            return;
        }

        _pageRef[id] = 1; // ReleasePage expects the last reference.
        var page = _pages[id]!;
        switch (Layout.Magic(page))
        {
            case Layout.MagicMapInterior:
            case Layout.MagicDevInterior:
                for (int i = 0; i < Layout.InteriorFanout; i++)
                {
                    uint child = GetU32(id, i);
                    if (child != 0)
                    {
                        DecPage(child);
                    }
                }

                break;
            case Layout.MagicMapLeaf:
                for (int i = 0; i < _mapGeometry.LeafFanout; i++)
                {
                    uint p = LeafBlock(id, i);
                    if (p != NoBlock)
                    {
                        DecBlock(p);
                    }
                }

                break;
            default:
                break;
        }

        ReleasePage(id);
    }

    /// <summary>Releases the last reference to a page without touching its children.</summary>
    private void ReleasePage(uint id)
    {
        Debug.Assert(_pageRef[id] == 1, "only the last reference can be released");
        if (_pageBorn[id] == _clock.Current)
        {
            _pageRef[id] = 0;
            _freePages.Push(id);
        }
        else
        {
            _pageRef[id] = -1;
            _pendingPages.Add(id);
        }
    }

    private uint AllocBlock() => AllocBlock(out _);

    /// <summary>Allocates a data block; <paramref name="zeroed"/> tells whether its bytes are known to be zero.</summary>
    private uint AllocBlock(out bool zeroed)
    {
        uint p = _blocks.Allocate(out zeroed);
        _dataDirty = true;
        _structDirty = true;
        return p;
    }

    /// <summary>
    /// Drops a reference to a data block (see <see cref="BlockAllocator.Release"/>); a block nobody references any
    /// more leaves the overlay, whose sectors would otherwise outlive it.
    /// </summary>
    private void DecBlock(uint p, bool replaced = false)
    {
        _structDirty = true;
        if (_blocks.Release(p, replaced))
        {
            _overlay.Remove(p);
        }
    }
}
