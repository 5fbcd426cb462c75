using System.Buffers.Binary;
using Dolly.Storage.Engine;

namespace Dolly.Storage;

// Copy-on-write radix trees. A block map resolves a logical block to a physical block and the checksums of
// its sectors in depth-1 page reads, whatever the number of snapshots sharing it (dm-thin's property, not a
// qcow2 chain's). Snapshots and clones share the root; the first write below a shared node copies it.
public sealed partial class Pool
{
    private const uint NoBlock = uint.MaxValue;

    private TreeGeometry _mapGeometry;
    private readonly TreeGeometry _deviceGeometry = new(Layout.DevicesPerLeaf);
    private int _sectorsPerBlock;
    private int _entrySize;

    private int EntryOffset(int index) => Layout.HeaderSize + (index * _entrySize);

    /// <summary>The physical block of a leaf entry, or <see cref="NoBlock"/>.</summary>
    private uint LeafBlock(uint leaf, int index) =>
        BinaryPrimitives.ReadUInt32LittleEndian(_pages[leaf].AsSpan(EntryOffset(index))) - 1;

    private Span<byte> LeafSums(uint leaf, int index) =>
        _pages[leaf].AsSpan(EntryOffset(index) + 4, _sectorsPerBlock * 4);

    private void SetLeafEntry(uint leaf, int index, uint block, ReadOnlySpan<byte> sums)
    {
        var entry = _pages[leaf].AsSpan(EntryOffset(index), _entrySize);
        BinaryPrimitives.WriteUInt32LittleEndian(entry, block + 1);
        sums.CopyTo(entry[4..]);
    }

    private void ClearLeafEntry(uint leaf, int index) => _pages[leaf].AsSpan(EntryOffset(index), _entrySize).Clear();

    private static (uint Interior, uint Leaf) Magics(bool map) =>
        map ? (Layout.MagicMapInterior, Layout.MagicMapLeaf) : (Layout.MagicDevInterior, Layout.MagicDevLeaf);

    /// <summary>The leaf holding entry <paramref name="index"/>, or 0 when that part of the tree is empty.</summary>
    private uint FindLeaf(uint root, int depth, in TreeGeometry geometry, long index, out int slot)
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
    private uint LeafForWrite(ref uint root, int depth, in TreeGeometry geometry, bool map, long index, out int slot)
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
    private void DeepenTo(ref uint root, ref int depth, in TreeGeometry geometry, bool map, long entries)
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
            long to = Math.Min(end, nodeStart + _mapGeometry.LeafFanout) - nodeStart;
            for (long i = from; i < to; i++)
            {
                if (LeafBlock(id, (int)i) != NoBlock)
                {
                    return true;
                }
            }

            return false;
        }

        long covered = _mapGeometry.Covered(level - 1);
        long nodeEnd = nodeStart + _mapGeometry.Covered(level);
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
    private uint UnmapRange(uint id, int level, long nodeStart, long first, long end)
    {
        long nodeEnd = nodeStart + _mapGeometry.Covered(level);
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
            for (int i = 0; i < _mapGeometry.LeafFanout; i++)
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
                    DecBlock(p);
                }
                else
                {
                    empty = false;
                }
            }
        }
        else
        {
            long covered = _mapGeometry.Covered(level - 1);
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
    private void WalkMapped(uint root, int depth, long first, long end, Action<long, uint, uint> visit)
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
            long to = Math.Min(end, nodeStart + _mapGeometry.LeafFanout) - nodeStart;
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

        long covered = _mapGeometry.Covered(level - 1);
        long nodeEnd = nodeStart + _mapGeometry.Covered(level);
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
    private void WalkChanged(DeviceState a, DeviceState b, long first, long end, Action<long> changed)
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

        long nodeEnd = nodeStart + _mapGeometry.Covered(level);
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

        long covered = _mapGeometry.Covered(level - 1);
        int c0 = (int)((Math.Max(first, nodeStart) - nodeStart) / covered);
        int c1 = (int)((Math.Min(end, nodeEnd) - 1 - nodeStart) / covered);
        for (int ci = c0; ci <= c1; ci++)
        {
            WalkChanged(ChildOf(a, level, ci, ta), ChildOf(b, level, ci, tb), level - 1, nodeStart + (ci * covered), first, end, ta, tb, changed);
        }
    }
}
