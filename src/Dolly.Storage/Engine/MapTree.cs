using System.Buffers.Binary;

namespace Dolly.Storage.Engine;

/// <summary>
/// Copy-on-write radix trees over the <see cref="PageStore"/>: the block maps (one per volume or snapshot, shared
/// between them) and the device table. A block map resolves a logical block to a physical block and the checksums of
/// its sectors in depth-1 page reads, whatever the number of snapshots sharing it (dm-thin's property, not a qcow2
/// chain's). Snapshots and clones share the root; the first write below a shared node copies it (<see cref="Shadow"/>),
/// and its children gain a reference; dropping a node's last reference drops its children's.
/// <para>
/// Holds no state of its own beyond the geometry: pages and their counts are the <see cref="PageStore"/>'s, data
/// blocks the <see cref="BlockAllocator"/>'s. A block whose last reference a tree drops is reported to the owner
/// (the pool forgets its in-place overwrites). Guarded by the pool's locks (Pool.Io.cs).
/// </para>
/// </summary>
internal sealed class MapTree
{
    /// <summary>A map entry that maps nothing.</summary>
    public const uint NoBlock = uint.MaxValue;

    private readonly PageStore _pages;
    private readonly BlockAllocator _blocks;
    private readonly Action<uint> _blockDropped;
    private readonly int _sectorsPerBlock;
    private readonly int _entrySize;

    public MapTree(PageStore pages, BlockAllocator blocks, int blockSize, Action<uint> blockDropped)
    {
        _pages = pages;
        _blocks = blocks;
        _blockDropped = blockDropped;
        _sectorsPerBlock = blockSize / Layout.SectorSize;
        _entrySize = 4 + (4 * _sectorsPerBlock);
        MapGeometry = new TreeGeometry((Layout.PageSize - Layout.HeaderSize) / _entrySize);
    }

    /// <summary>The shape of the block maps: leaf entries hold a block and its sectors' checksums.</summary>
    public TreeGeometry MapGeometry { get; }

    /// <summary>The shape of the device table: leaves hold device records.</summary>
    public TreeGeometry DeviceGeometry { get; } = new(Layout.DevicesPerLeaf);

    /// <summary>Child pointer <paramref name="index"/> of an interior page.</summary>
    public uint GetU32(uint page, int index) => BinaryPrimitives.ReadUInt32LittleEndian(_pages[page].AsSpan(Layout.HeaderSize + (index * 4)));

    private void SetU32(uint page, int index, uint value) =>
        BinaryPrimitives.WriteUInt32LittleEndian(_pages[page].AsSpan(Layout.HeaderSize + (index * 4)), value);

    private uint NewPage(uint magic, int level) => _pages.Allocate(magic, level);

    /// <summary>Drops a map entry's reference to a data block (see <see cref="BlockAllocator.Release"/>).</summary>
    public void DropBlock(uint p, bool replaced = false)
    {
        if (_blocks.Release(p, replaced))
        {
            _blockDropped(p);
        }
    }

    private int EntryOffset(int index) => Layout.HeaderSize + (index * _entrySize);

    /// <summary>The physical block of a leaf entry, or <see cref="NoBlock"/>.</summary>
    public uint LeafBlock(uint leaf, int index) =>
        BinaryPrimitives.ReadUInt32LittleEndian(_pages[leaf].AsSpan(EntryOffset(index))) - 1;

    public Span<byte> LeafSums(uint leaf, int index) =>
        _pages[leaf].AsSpan(EntryOffset(index) + 4, _sectorsPerBlock * 4);

    public void SetLeafEntry(uint leaf, int index, uint block, ReadOnlySpan<byte> sums)
    {
        var entry = _pages[leaf].AsSpan(EntryOffset(index), _entrySize);
        BinaryPrimitives.WriteUInt32LittleEndian(entry, block + 1);
        sums.CopyTo(entry[4..]);
    }

    private void ClearLeafEntry(uint leaf, int index) => _pages[leaf].AsSpan(EntryOffset(index), _entrySize).Clear();

    public static (uint Interior, uint Leaf) Magics(bool map) =>
        map ? (Layout.MagicMapInterior, Layout.MagicMapLeaf) : (Layout.MagicDevInterior, Layout.MagicDevLeaf);

    /// <summary>The leaf holding entry <paramref name="index"/>, or 0 when that part of the tree is empty.</summary>
    public uint FindLeaf(uint root, int depth, in TreeGeometry geometry, long index, out int slot)
    {
        uint id = root;
        long rel = index;
        for (int level = depth - 1; level > 0 && id != 0; level--)
        {
            long covered = geometry.Covered(level - 1);
            id = GetU32(id, (int)(rel / covered));
            rel %= covered;
        }

        slot = (int)rel;
        return id;
    }

    /// <summary>
    /// The leaf holding entry <paramref name="index"/>, made writable: every page on the path is shadowed and
    /// missing pages are created. <paramref name="root"/> is updated to the (possibly new) root.
    /// </summary>
    public uint LeafForWrite(ref uint root, int depth, in TreeGeometry geometry, bool map, long index, out int slot)
    {
        var (interior, leafMagic) = Magics(map);
        root = root == 0 ? NewPage(depth == 1 ? leafMagic : interior, depth - 1) : Shadow(root);
        uint id = root;
        long rel = index;
        for (int level = depth - 1; level > 0; level--)
        {
            long covered = geometry.Covered(level - 1);
            int ci = (int)(rel / covered);
            rel %= covered;
            uint child = GetU32(id, ci);
            uint writable = child == 0 ? NewPage(level == 1 ? leafMagic : interior, level - 1) : Shadow(child);
            if (writable != child)
            {
                SetU32(id, ci, writable);
            }

            id = writable;
        }

        slot = (int)rel;
        return id;
    }

    /// <summary>Adds levels on top of a tree until it covers <paramref name="entries"/> entries.</summary>
    public void DeepenTo(ref uint root, ref int depth, in TreeGeometry geometry, bool map, long entries)
    {
        var (interior, _) = Magics(map);
        while (geometry.Covered(depth - 1) < entries)
        {
            if (depth == Layout.MaxDepth)
            {
                throw new InvalidOperationException("tree depth limit reached");
            }

            if (root != 0)
            {
                // The new root takes over the holder's reference to the old one.
                uint top = NewPage(interior, depth);
                SetU32(top, 0, root);
                root = top;
            }

            depth++;
        }
    }

    /// <summary>True when any map entry in [first, end) is mapped below this node.</summary>
    private bool AnyMapped(uint id, int level, long nodeStart, long first, long end)
    {
        if (level == 0)
        {
            long from = Math.Max(first, nodeStart) - nodeStart;
            long to = Math.Min(end, nodeStart + MapGeometry.LeafFanout) - nodeStart;
            for (long i = from; i < to; i++)
            {
                if (LeafBlock(id, (int)i) != NoBlock)
                {
                    return true;
                }
            }

            return false;
        }

        long covered = MapGeometry.Covered(level - 1);
        long nodeEnd = nodeStart + MapGeometry.Covered(level);
        int c0 = (int)((Math.Max(first, nodeStart) - nodeStart) / covered);
        int c1 = (int)((Math.Min(end, nodeEnd) - 1 - nodeStart) / covered);
        for (int ci = c0; ci <= c1; ci++)
        {
            uint child = GetU32(id, ci);
            if (child != 0 && AnyMapped(child, level - 1, nodeStart + (ci * covered), first, end))
            {
                return true;
            }
        }

        return false;
    }

    /// <summary>Unmaps blocks [first, end) below a node; returns the node's new id (0 when it became empty).</summary>
    public uint UnmapRange(uint id, int level, long nodeStart, long first, long end)
    {
        long nodeEnd = nodeStart + MapGeometry.Covered(level);
        if (first <= nodeStart && end >= nodeEnd)
        {
            DecPage(id);
            return 0;
        }

        if (!AnyMapped(id, level, nodeStart, first, end))
        {
            return id;
        }

        id = Shadow(id);
        bool empty = true;
        if (level == 0)
        {
            for (int i = 0; i < MapGeometry.LeafFanout; i++)
            {
                long block = nodeStart + i;
                uint p = LeafBlock(id, i);
                if (p == NoBlock)
                {
                    continue;
                }

                if (block >= first && block < end)
                {
                    ClearLeafEntry(id, i);
                    DropBlock(p);
                }
                else
                {
                    empty = false;
                }
            }
        }
        else
        {
            long covered = MapGeometry.Covered(level - 1);
            for (int ci = 0; ci < Layout.InteriorFanout; ci++)
            {
                uint child = GetU32(id, ci);
                if (child == 0)
                {
                    continue;
                }

                long childStart = nodeStart + (ci * covered);
                if (childStart < end && childStart + covered > first)
                {
                    child = UnmapRange(child, level - 1, childStart, first, end);
                    SetU32(id, ci, child);
                }

                empty &= child == 0;
            }
        }

        if (empty)
        {
            DecPage(id);
            return 0;
        }

        return id;
    }

    /// <summary>Calls <paramref name="visit"/> for every mapped block in [first, end), in order.</summary>
    public void WalkMapped(uint root, int depth, long first, long end, Action<long, uint, uint> visit)
    {
        if (root != 0)
        {
            WalkMapped(root, depth - 1, 0, first, end, visit);
        }
    }

    private void WalkMapped(uint id, int level, long nodeStart, long first, long end, Action<long, uint, uint> visit)
    {
        if (level == 0)
        {
            long from = Math.Max(first, nodeStart) - nodeStart;
            long to = Math.Min(end, nodeStart + MapGeometry.LeafFanout) - nodeStart;
            for (long i = from; i < to; i++)
            {
                uint p = LeafBlock(id, (int)i);
                if (p != NoBlock)
                {
                    visit(nodeStart + i, p, id);
                }
            }

            return;
        }

        long covered = MapGeometry.Covered(level - 1);
        long nodeEnd = nodeStart + MapGeometry.Covered(level);
        if (first >= nodeEnd || end <= nodeStart)
        {
            return;
        }

        int c0 = (int)((Math.Max(first, nodeStart) - nodeStart) / covered);
        int c1 = (int)((Math.Min(end, nodeEnd) - 1 - nodeStart) / covered);
        for (int ci = c0; ci <= c1; ci++)
        {
            uint child = GetU32(id, ci);
            if (child != 0)
            {
                WalkMapped(child, level - 1, nodeStart + (ci * covered), first, end, visit);
            }
        }
    }

    /// <summary>A marker for a level above a shallower tree's real root, whose child 0 leads to that root.</summary>
    private const uint Virtual = uint.MaxValue;

    /// <summary>
    /// Calls <paramref name="changed"/> for every block in [first, end) whose mapping differs between two trees.
    /// Identical subtrees (the same page) are skipped without reading them: the cost follows the changes,
    /// not the size.
    /// </summary>
    public void WalkChanged(DeviceState a, DeviceState b, long first, long end, Action<long> changed)
    {
        int top = Math.Max(a.Depth, b.Depth) - 1;
        uint ra = a.Depth - 1 == top ? a.Root : Virtual;
        uint rb = b.Depth - 1 == top ? b.Root : Virtual;
        WalkChanged(ra, rb, top, 0, first, end, a, b, changed);
    }

    private uint ChildOf(uint id, int level, int ci, DeviceState tree)
    {
        if (id == 0)
        {
            return 0;
        }

        if (id == Virtual)
        {
            return ci != 0 ? 0 : level - 1 == tree.Depth - 1 ? tree.Root : Virtual;
        }

        return GetU32(id, ci);
    }

    private void WalkChanged(uint a, uint b, int level, long nodeStart, long first, long end, DeviceState ta, DeviceState tb, Action<long> changed)
    {
        if (a == b && a != Virtual)
        {
            return;
        }

        long nodeEnd = nodeStart + MapGeometry.Covered(level);
        if (first >= nodeEnd || end <= nodeStart)
        {
            return;
        }

        if (level == 0)
        {
            long from = Math.Max(first, nodeStart) - nodeStart;
            long to = Math.Min(end, nodeEnd) - nodeStart;
            for (long i = from; i < to; i++)
            {
                uint pa = a == 0 ? NoBlock : LeafBlock(a, (int)i);
                uint pb = b == 0 ? NoBlock : LeafBlock(b, (int)i);
                if (pa != pb)
                {
                    changed(nodeStart + i);
                }
            }

            return;
        }

        long covered = MapGeometry.Covered(level - 1);
        int c0 = (int)((Math.Max(first, nodeStart) - nodeStart) / covered);
        int c1 = (int)((Math.Min(end, nodeEnd) - 1 - nodeStart) / covered);
        for (int ci = c0; ci <= c1; ci++)
        {
            WalkChanged(ChildOf(a, level, ci, ta), ChildOf(b, level, ci, tb), level - 1, nodeStart + (ci * covered), first, end, ta, tb, changed);
        }
    }

    /// <summary>
    /// Returns a page that may be modified in place and holds the same content as <paramref name="id"/>:
    /// the page itself if it is fresh and unshared, otherwise a copy that takes over one reference.
    /// </summary>
    public uint Shadow(uint id)
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
                for (int i = 0; i < MapGeometry.LeafFanout; i++)
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
    public void DecPage(uint id)
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
                for (int i = 0; i < MapGeometry.LeafFanout; i++)
                {
                    uint p = LeafBlock(id, i);
                    if (p != NoBlock)
                    {
                        DropBlock(p);
                    }
                }

                break;
            default:
                break;
        }

        _pages.ReleaseLast(id);
    }
}
