using System.Buffers.Binary;
using Dolly.Storage.Engine;

namespace Dolly.Storage;

// Reference counting across the parts: the PageStore counts tree pointers to pages, the BlockAllocator map entries
// to data blocks; copying or dropping a page changes its children's counts, which is tree knowledge, so it is here.
//
// Counts are not stored on disk: they are derived at open by walking every tree from the device table, and
// maintained incrementally afterwards (check compares the two). A page or block is "fresh" when it was allocated
// in the current, uncommitted transaction (TxnClock); only fresh, unshared pages and blocks are modified in
// place. Everything else is copied first, so the committed state on disk is never touched until the next
// superblock points away from it.
public sealed partial class Pool
{
    private readonly TxnClock _clock = new();
    private readonly PageStore _pages;
    private readonly BlockAllocator _blocks;

    // Free blocks whose disk space is kept for reuse at least (see BlockAllocator.Reclaim), at 64 KiB blocks.
    private const int MinKeptBlocks = 4096;

    private uint GetU32(uint page, int index) => BinaryPrimitives.ReadUInt32LittleEndian(_pages[page].AsSpan(Layout.HeaderSize + (index * 4)));

    private void SetU32(uint page, int index, uint value) =>
        BinaryPrimitives.WriteUInt32LittleEndian(_pages[page].AsSpan(Layout.HeaderSize + (index * 4)), value);

    private uint NewPage(uint magic, int level) => _pages.Allocate(magic, level);

    /// <summary>
    /// Returns a page that may be modified in place and holds the same content as <paramref name="id"/>:
    /// the page itself if it is fresh and unshared, otherwise a copy that takes over one reference.
    /// </summary>
    private uint Shadow(uint id)
    {
        if (_pages.References(id) == 1 && _pages.IsFresh(id))
        {
            return id;
        }

        var source = _pages[id];
        uint magic = Layout.Magic(source);
        int level = Layout.Level(source);
        uint copy = NewPage(magic, level);
        source.AsSpan(Layout.HeaderSize).CopyTo(_pages[copy].AsSpan(Layout.HeaderSize));
        if (_pages.References(id) > 1)
        {
            // The copy is a new parent of every child: each gains a reference; the original loses one.
            AddChildReferences(copy, magic);
            _pages.DropReference(id);
        }
        else
        {
            // Sole owner moving off a committed page: children keep their count, the page waits for the commit.
            _pages.ReleaseLast(id);
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
                        _pages.AddReference(child);
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
        if (_pages.References(id) > 1)
        {
            _pages.DropReference(id);
            return;
        }

        var page = _pages[id];
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

        _pages.ReleaseLast(id);
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
