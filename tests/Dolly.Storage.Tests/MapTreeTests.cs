using CsCheck;
using Dolly.Storage.Engine;

namespace Dolly.Storage.Tests;

/// <summary>
/// The map tree over a page store and a block allocator, without a pool: random writes, snapshots (a shared root),
/// unmaps, deletions and commits against a model of each tree's mapping. After every step each tree maps exactly what
/// the model says, and the reference counts the parts hold equal those recounted from the trees (shared pages
/// counted once per pointer), so copy-on-write neither leaks nor frees what another tree still reaches.
/// </summary>
public sealed class MapTreeTests
{
    private const int BlockSize = 64 * 1024;
    private const int Depth = 2;
    private const long Blocks = 200;

    private enum Op
    {
        Write,
        Write2,
        Snapshot,
        Unmap,
        Delete,
        Commit,
    }

    private sealed class Tree(uint root, Dictionary<long, uint> map)
    {
        public uint Root { get; set; } = root;

        public Dictionary<long, uint> Map { get; } = map;
    }

    [Fact]
    public void RandomCopyOnWrite_MapsWhatTheModelSays_AndCountsMatchTheTrees()
    {
        Gen.Select(Gen.Enum<Op>(), Gen.Long[0, Blocks - 1], Gen.Int[1, 80]).Array[1, 120].Sample(RunModel, iter: 100);
    }

    private static void RunModel((Op Op, long Lb, int Span)[] steps)
    {
        var clock = new TxnClock();
        var pages = new PageStore(clock);
        pages.Reset(2);
        var blocks = new BlockAllocator(clock);
        var dropped = new List<uint>();
        var tree = new MapTree(pages, blocks, BlockSize, dropped.Add);
        var trees = new List<Tree> { new(0, []) };
        var sums = new byte[(BlockSize / Layout.SectorSize) * 4];
        int step = 0;
        foreach (var (op, lb, span) in steps)
        {
            step++;
            if (trees.Count == 0)
            {
                trees.Add(new Tree(0, []));
            }

            var t = trees[(int)(lb % trees.Count)];
            switch (op)
            {
                case Op.Write or Op.Write2:
                    uint root = t.Root;
                    uint leaf = tree.LeafForWrite(ref root, Depth, tree.MapGeometry, map: true, lb, out int slot);
                    t.Root = root;
                    uint old = tree.LeafBlock(leaf, slot);
                    uint p = blocks.Allocate(out _);
                    tree.SetLeafEntry(leaf, slot, p, sums);
                    if (old != MapTree.NoBlock)
                    {
                        tree.DropBlock(old, replaced: true);
                    }

                    t.Map[lb] = p;
                    break;
                case Op.Snapshot:
                    if (t.Root != 0)
                    {
                        pages.AddReference(t.Root);
                    }

                    trees.Add(new Tree(t.Root, new Dictionary<long, uint>(t.Map)));
                    break;
                case Op.Unmap when t.Root != 0:
                    long end = Math.Min(Blocks, lb + span);
                    t.Root = tree.UnmapRange(t.Root, Depth - 1, 0, lb, end);
                    for (long b = lb; b < end; b++)
                    {
                        t.Map.Remove(b);
                    }

                    break;
                case Op.Delete:
                    if (t.Root != 0)
                    {
                        tree.DecPage(t.Root);
                    }

                    trees.Remove(t);
                    break;
                case Op.Commit:
                    // A durable commit: what was fresh becomes committed, what was retired becomes free.
                    _ = pages.TakeUnwritten();
                    var retiredPages = pages.TakeRetired();
                    var retiredBlocks = blocks.TakeRetired();
                    clock.Advance();
                    pages.Reclaim(retiredPages);
                    blocks.Reclaim(retiredBlocks, minKept: 2);
                    while (blocks.TryTakePunch(uint.MaxValue, out var run))
                    {
                        blocks.FinishPunch(run);
                    }

                    break;
                default:
                    break;
            }

            Assert.All(dropped, b => Assert.Equal(0, blocks.References(b)));
            dropped.Clear();
            Agree(tree, pages, blocks, trees, step);
        }

        // Deleting every tree frees every page and block.
        foreach (var t in trees.Where(t => t.Root != 0))
        {
            tree.DecPage(t.Root);
        }

        for (uint id = 2; id < pages.HighWater; id++)
        {
            Assert.NotEqual(PagePhase.Live, pages.Phase(id));
        }

        for (uint b = 0; b < blocks.HighWater; b++)
        {
            Assert.NotEqual(BlockPhase.Live, blocks.Phase(b));
        }
    }

    private static void Agree(MapTree tree, PageStore pages, BlockAllocator blocks, List<Tree> trees, int step)
    {
        var pageRefs = new int[pages.HighWater];
        var blockRefs = new int[blocks.HighWater];
        var seen = new HashSet<uint>();
        foreach (var t in trees)
        {
            for (long lb = 0; lb < Blocks; lb++)
            {
                uint leaf = tree.FindLeaf(t.Root, Depth, tree.MapGeometry, lb, out int slot);
                uint p = leaf == 0 ? MapTree.NoBlock : tree.LeafBlock(leaf, slot);
                uint expected = t.Map.TryGetValue(lb, out uint m) ? m : MapTree.NoBlock;
                Assert.True(p == expected, $"step {step}: block {lb} maps to {p}, the model says {expected}");
            }

            if (t.Root != 0)
            {
                Count(tree, t.Root, Depth - 1, pageRefs, blockRefs, seen);
            }
        }

        for (uint id = 2; id < pages.HighWater; id++)
        {
            Assert.True(pageRefs[id] == pages.References(id), $"step {step}: page {id} holds {pages.References(id)} references, the trees {pageRefs[id]}");
        }

        for (uint b = 0; b < blocks.HighWater; b++)
        {
            Assert.True(blockRefs[b] == blocks.References(b), $"step {step}: block {b} holds {blocks.References(b)} references, the trees {blockRefs[b]}");
        }
    }

    private static void Count(MapTree tree, uint id, int level, int[] pageRefs, int[] blockRefs, HashSet<uint> seen)
    {
        pageRefs[id]++;
        if (!seen.Add(id))
        {
            return;
        }

        if (level == 0)
        {
            for (int i = 0; i < tree.MapGeometry.LeafFanout; i++)
            {
                uint p = tree.LeafBlock(id, i);
                if (p != MapTree.NoBlock)
                {
                    blockRefs[p]++;
                }
            }

            return;
        }

        for (int ci = 0; ci < Layout.InteriorFanout; ci++)
        {
            uint child = tree.GetU32(id, ci);
            if (child != 0)
            {
                Count(tree, child, level - 1, pageRefs, blockRefs, seen);
            }
        }
    }
}
