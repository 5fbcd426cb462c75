using Dolly.Storage.CrashWorker;

namespace Dolly.Storage.Tests;

/// <summary>Space accounting, allocated ranges and changed ranges against expectations computed from the writes.</summary>
public sealed class SpaceAndRangeTests : IDisposable
{
    private const int Bs = 16384;
    private readonly TempDir _tmp = new();

    public void Dispose() => _tmp.Dispose();

    private Pool NewPool(int blockSize = Bs) => Pool.Create(_tmp.Sub("pool" + Guid.NewGuid().ToString("N")[..6]), new PoolCreateOptions { BlockSize = blockSize }).Value;

    private static (long Allocated, long Exclusive) Space(Pool pool, string name)
    {
        var s = pool.GetSpace(name).Value;
        return (s.Allocated / pool.BlockSize, s.Exclusive / pool.BlockSize);
    }

    private static void WriteBlocks(Pool pool, string name, int seed, params int[] blocks)
    {
        var dev = pool.OpenDevice(name).Value;
        foreach (int b in blocks)
        {
            dev.Write((long)b * pool.BlockSize, Support.Pattern(pool.BlockSize, seed + b)).ThrowIfFailed();
        }
    }

    [Fact]
    public void Space_SnapshotCloneOverwriteDelete_AllocatedAndExclusiveFollowSharing()
    {
        using var pool = NewPool();
        pool.CreateVolume("vol", 64L * Bs).ThrowIfFailed();
        WriteBlocks(pool, "vol", 1, 0, 1, 2, 3, 4, 5, 6, 7);
        Assert.Equal((8, 8), Space(pool, "vol"));

        pool.CreateSnapshot("vol", "snap").ThrowIfFailed();
        Assert.Equal((8, 0), Space(pool, "vol"));
        Assert.Equal((8, 0), Space(pool, "snap"));

        WriteBlocks(pool, "vol", 100, 2, 5);
        Assert.Equal((8, 2), Space(pool, "vol"));
        Assert.Equal((8, 2), Space(pool, "snap"));

        pool.Clone("snap", "clone").ThrowIfFailed();
        Assert.Equal((8, 0), Space(pool, "clone"));
        Assert.Equal((8, 0), Space(pool, "snap"));
        WriteBlocks(pool, "clone", 200, 40);
        Assert.Equal((9, 1), Space(pool, "clone"));
        Assert.Equal(8 + 2 + 1, pool.GetInfo().DataBlocksUsed);

        pool.Delete("snap").ThrowIfFailed();
        Assert.Equal((8, 2), Space(pool, "vol"));
        Assert.Equal((9, 3), Space(pool, "clone"));
        Assert.Equal(11, pool.GetInfo().DataBlocksUsed);

        pool.OpenDevice("vol").Value.Trim(0, 4L * Bs).ThrowIfFailed();
        Assert.Equal((4, 1), Space(pool, "vol")); // blocks 4..7: 5 is its own, 4, 6, 7 are shared with the clone
        Assert.Equal(11 - 1, pool.GetInfo().DataBlocksUsed); // block 2 (its own copy) freed; 0, 1, 3 live on in clone

        pool.Delete("vol").ThrowIfFailed();
        Assert.Equal((9, 9), Space(pool, "clone"));
        Assert.Equal(9, pool.GetInfo().DataBlocksUsed);
        pool.Delete("clone").ThrowIfFailed();
        Assert.Equal(0, pool.GetInfo().DataBlocksUsed);
        Support.AssertClean(pool.Check());
    }

    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    [InlineData(4)]
    [InlineData(5)]
    public void DeleteInAnyOrder_EverythingDeleted_NoBlocksUsed(int order)
    {
        using var pool = NewPool(4096);
        pool.CreateVolume("a", 200 * 4096).ThrowIfFailed();
        WriteBlocks(pool, "a", 1, Enumerable.Range(0, 150).ToArray());
        pool.CreateSnapshot("a", "a1").ThrowIfFailed();
        WriteBlocks(pool, "a", 2, Enumerable.Range(50, 100).ToArray());
        pool.Clone("a1", "b", 300 * 4096).ThrowIfFailed();
        WriteBlocks(pool, "b", 3, Enumerable.Range(120, 150).ToArray());
        pool.CreateSnapshot("b", "b1").ThrowIfFailed();
        pool.Clone("a", "c").ThrowIfFailed();
        pool.Revert("a", "a1").ThrowIfFailed();
        string[] names = ["a", "a1", "b", "b1", "c"];
        var rng = new Random(order);
        var sequence = names.OrderBy(_ => rng.Next()).ToList();
        var model = ReferenceModel.FromPool(pool);
        foreach (var name in sequence)
        {
            long before = pool.GetInfo().DataBlocksUsed;
            long exclusive = pool.GetSpace(name).Value.Exclusive / 4096;
            pool.Delete(name).ThrowIfFailed();
            model.Apply(new Op(OpKind.Delete, name));
            Assert.Equal(before - exclusive, pool.GetInfo().DataBlocksUsed); // frees exactly what was exclusive
            Assert.Null(model.Difference(pool));
            Support.AssertClean(pool.Check());
        }

        var info = pool.GetInfo();
        Assert.Equal(0, info.DataBlocksUsed);
        Assert.Equal(0, info.Volumes + info.Snapshots);
    }

    [Fact]
    public void AllocatedRanges_AfterWritesTrimsAndZeroes_MatchTouchedBlocks()
    {
        using var pool = NewPool();
        long size = (40L * Bs) + 8192; // ends inside a block
        pool.CreateVolume("v", size).ThrowIfFailed();
        var dev = pool.OpenDevice("v").Value;
        var expected = new SortedSet<long>();
        void Write(long offset, int length)
        {
            dev.Write(offset, Support.Pattern(length, (int)offset)).ThrowIfFailed();
            for (long b = offset / Bs; b <= (offset + length - 1) / Bs; b++)
            {
                expected.Add(b);
            }
        }

        Write(5000, 100);
        Write((3L * Bs) - 10, 20);
        Write(10L * Bs, 3 * Bs);
        Write(size - 100, 100);
        Assert.Equal(Ranges(expected, size), pool.GetAllocatedRanges("v").Value);

        dev.Trim(10L * Bs, Bs).ThrowIfFailed(); // a whole block: unmapped
        expected.Remove(10);
        dev.Trim(11L * Bs, 100).ThrowIfFailed(); // part of a block: stays allocated, reads zero
        dev.WriteZeroes(20L * Bs, 2 * Bs, mayUnmap: false).ThrowIfFailed(); // allocates
        expected.Add(20);
        expected.Add(21);
        dev.WriteZeroes(12L * Bs, Bs, mayUnmap: true).ThrowIfFailed();
        expected.Remove(12);
        Assert.Equal(Ranges(expected, size), pool.GetAllocatedRanges("v").Value);

        // A window clips the ranges.
        var window = pool.GetAllocatedRanges("v", 3 * Bs, 20L * Bs).Value;
        Assert.Equal(Clip(Ranges(expected, size), 3 * Bs, 23L * Bs), window);
        Assert.Equal(window, dev.GetAllocatedRanges(3 * Bs, 20L * Bs).Value);

        dev.Trim(0, size).ThrowIfFailed();
        Assert.Empty(pool.GetAllocatedRanges("v").Value);
        Assert.Equal(0, pool.GetSpace("v").Value.Allocated);
    }

    [Fact]
    public void ChangedRanges_BetweenSnapshotsAndVolume_ExactlyTheRewrittenBlocks()
    {
        using var pool = NewPool();
        pool.CreateVolume("v", 32L * Bs).ThrowIfFailed();
        WriteBlocks(pool, "v", 1, 0, 1, 2, 3, 4, 5, 6, 7);
        pool.CreateSnapshot("v", "s1").ThrowIfFailed();
        Assert.Empty(pool.GetChangedRanges("s1", "v").Value);

        WriteBlocks(pool, "v", 50, 3, 7, 20);
        pool.CreateSnapshot("v", "s2").ThrowIfFailed();
        var expected = Ranges(new SortedSet<long> { 3, 7, 20 }, 32L * Bs);
        Assert.Equal(expected, pool.GetChangedRanges("s1", "s2").Value);
        Assert.Equal(expected, pool.GetChangedRanges("s1", "v").Value);
        Assert.Equal(expected, pool.GetChangedRanges("s2", "s1").Value);
        Assert.Empty(pool.GetChangedRanges("s2", "v").Value);

        pool.OpenDevice("v").Value.Trim(Bs, Bs).ThrowIfFailed();
        Assert.Equal(Ranges(new SortedSet<long> { 1 }, 32L * Bs), pool.GetChangedRanges("s2", "v").Value);
        Assert.Equal(Ranges(new SortedSet<long> { 1 }, 32L * Bs), pool.OpenDevice("v").Value.GetChangedRanges("s2", 0, 32L * Bs).Value);

        // A clone is of the lineage: unchanged until written.
        pool.Clone("s1", "c").ThrowIfFailed();
        Assert.Empty(pool.GetChangedRanges("s1", "c").Value);
        WriteBlocks(pool, "c", 90, 9);
        Assert.Equal(Ranges(new SortedSet<long> { 9 }, 32L * Bs), pool.GetChangedRanges("s1", "c").Value);

        // Growth: the new range is only "changed" where written.
        pool.Resize("v", 64L * Bs).ThrowIfFailed();
        WriteBlocks(pool, "v", 70, 50);
        Assert.Equal(Ranges(new SortedSet<long> { 1, 50 }, 64L * Bs), pool.GetChangedRanges("s2", "v").Value);
        Support.AssertClean(pool.Check());
    }

    [Fact]
    public void Revert_ToSmallerSnapshotAfterGrowth_KeepsSizeAndZeroesTheRest()
    {
        using var pool = NewPool();
        pool.CreateVolume("v", (4L * Bs) + 4096).ThrowIfFailed();
        var dev = pool.OpenDevice("v").Value;
        dev.Write(0, Support.Pattern((4 * Bs) + 4096, 1)).ThrowIfFailed();
        pool.CreateSnapshot("v", "s").ThrowIfFailed();
        pool.Resize("v", 16L * Bs).ThrowIfFailed();
        dev.Write(3L * Bs, Support.Pattern(10 * Bs, 2)).ThrowIfFailed();
        pool.Revert("v", "s").ThrowIfFailed();
        Assert.Equal(16L * Bs, dev.Size);
        var all = Support.ReadAll(pool, "v");
        Assert.Equal(Support.Pattern((4 * Bs) + 4096, 1), all[..((4 * Bs) + 4096)]);
        Assert.All(all[((4 * Bs) + 4096)..], b => Assert.Equal(0, b));
        Support.AssertClean(pool.Check());
    }

    [Fact]
    public void HugeVolume_SparseWritesAtTheFarEnd_ReadBackWithSmallMetadata()
    {
        const long size = 64L << 40;
        string dir = _tmp.Sub("huge");
        var offsets = new[] { 0L, size - 4096, size - (1 << 20) - 3, (size / 2) + 12345 };
        using (var pool = Pool.Create(dir, new PoolCreateOptions { BlockSize = 4096 }).Value)
        {
            pool.CreateVolume("huge", size).ThrowIfFailed();
            var dev = pool.OpenDevice("huge").Value;
            foreach (var o in offsets)
            {
                dev.Write(o, Support.Pattern(4096 - (int)(o % 4096 == 0 ? 0 : 1000), (int)(o % 1000))).ThrowIfFailed();
            }

            pool.CreateSnapshot("huge", "huge-snap").ThrowIfFailed();
            dev.Write(size - 10, new byte[] { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10 }).ThrowIfFailed();
            Assert.Equal([new ByteRange(size - 4096, 4096)], pool.GetChangedRanges("huge-snap", "huge").Value);
        }

        using (var pool = Pool.Open(dir).Value)
        {
            var dev = pool.OpenDevice("huge").Value;
            Assert.Equal(size, dev.Size);
            foreach (var o in offsets.Where(o => o != size - 4096))
            {
                var buf = new byte[4096 - (int)(o % 4096 == 0 ? 0 : 1000)];
                dev.Read(o, buf).ThrowIfFailed();
                Assert.Equal(Support.Pattern(buf.Length, (int)(o % 1000)), buf);
            }

            var tail = new byte[10];
            dev.Read(size - 10, tail).ThrowIfFailed();
            Assert.Equal(new byte[] { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10 }, tail);
            var hole = new byte[65536];
            dev.Read(size / 4, hole).ThrowIfFailed();
            Assert.All(hole, b => Assert.Equal(0, b));

            var ranges = pool.GetAllocatedRanges("huge").Value;
            long allocatedBytes = ranges.Sum(r => r.Length);
            Assert.InRange(allocatedBytes, 5 * 4096, 7 * 4096);
            Assert.Contains(ranges, r => r.End == size);
            var info = pool.GetInfo();
            Assert.True(info.MetadataPagesUsed < 64, $"{info.MetadataPagesUsed} metadata pages for a handful of blocks");
            Support.AssertClean(pool.Check());
        }
    }

    private static List<ByteRange> Ranges(SortedSet<long> blocks, long size)
    {
        var result = new List<ByteRange>();
        foreach (long b in blocks)
        {
            long start = b * Bs, end = Math.Min(size, start + Bs);
            if (result.Count > 0 && result[^1].End == start)
            {
                result[^1] = new ByteRange(result[^1].Offset, end - result[^1].Offset);
            }
            else
            {
                result.Add(new ByteRange(start, end - start));
            }
        }

        return result;
    }

    [Fact]
    public void ReadReportingHoles_GivesTheComplementOfTheAllocatedRanges_AndTheSameBytes()
    {
        using var pool = NewPool();
        const long Size = 64L * Bs;
        pool.CreateVolume("v", Size).ThrowIfFailed();
        var dev = pool.OpenDevice("v").Value;
        var rng = new Random(Support.Seed(31));
        foreach (int b in new[] { 1, 2, 5, 9, 10, 11, 30, 63 })
        {
            dev.Write((long)b * Bs, Support.Pattern(Bs, b)).ThrowIfFailed();
        }

        dev.Write((20 * Bs) + 100, Support.Pattern(700, 99)).ThrowIfFailed(); // a partial write maps its whole block
        dev.Trim(10 * Bs, Bs).ThrowIfFailed();
        for (int i = 0; i < 200; i++)
        {
            long offset = rng.NextInt64(Size);
            int length = (int)rng.NextInt64(1, Math.Min(Size - offset, 12 * Bs) + 1);
            var plain = new byte[length];
            dev.Read(offset, plain).ThrowIfFailed();
            var holes = new List<ByteRange> { new(-1, 1) }; // appended to, not replaced
            var withHoles = new byte[length];
            dev.Read(offset, withHoles, holes).ThrowIfFailed();
            Assert.Equal(plain, withHoles);
            Assert.Equal(new ByteRange(-1, 1), holes[0]);

            var expected = new List<ByteRange>();
            long pos = offset;
            foreach (var a in dev.GetAllocatedRanges(offset, length).Value.Append(new ByteRange(offset + length, 0)))
            {
                if (a.Offset > pos)
                {
                    expected.Add(new ByteRange(pos, a.Offset - pos));
                }

                pos = Math.Max(pos, a.End);
            }

            Assert.Equal(expected, holes.Skip(1));
            Assert.All(holes.Skip(1), h => Assert.True(plain.AsSpan((int)(h.Offset - offset), (int)h.Length).IndexOfAnyExcept((byte)0) < 0));
        }
    }

    private static List<ByteRange> Clip(List<ByteRange> ranges, long from, long to) =>
        ranges.Select(r => new ByteRange(Math.Max(r.Offset, from), Math.Min(r.End, to) - Math.Max(r.Offset, from)))
            .Where(r => r.Length > 0).ToList();
}
