using System.Diagnostics;
using Dolly.Storage;

namespace Dolly.Bench;

/// <summary>
/// <c>dolly bench engine</c>: the measurable properties of DESIGN.md ("Storage engine") in one run. Every
/// pool lives in its own directory under <c>root</c>, next to the plain files used as baselines, so engine
/// and baseline share a file system; each pool is deleted when its section ends.
/// </summary>
/// <remarks>
/// Throughput is measured through the page cache (no O_DIRECT, caches not dropped): it shows what the engine
/// adds on top of the file system. Write figures include the final flush (engine Flush, fsync for the file),
/// so write amplification shows up; the note splits write time from flush time.
/// </remarks>
internal sealed partial class EngineBench(string root, BenchSizes sizes, int blockSize, IReadOnlySet<string> sections, Action<string> log)
{
    /// <summary>The sections of a run, in order; <c>--only</c> picks some of them.</summary>
    public static readonly IReadOnlyList<string> Sections = ["latency", "stream", "random", "lineage", "delete"];

    private const int MiB = 1 << 20;
    private const int Sector = 4096;
    private readonly byte[] _data = MakeData();
    private readonly List<BenchFigure> _figures = [];
    private int _dataCursor;

    public IReadOnlyList<BenchFigure> Run()
    {
        WarmUp();
        var run = new (string Name, Action Body)[] { ("latency", Latency), ("stream", Streaming), ("random", RandomWrites), ("lineage", Lineage), ("delete", Deletes) };
        foreach (var (name, body) in run)
        {
            if (sections.Contains(name))
            {
                body();
            }
        }

        // One table section per group, in the order groups first appeared.
        return _figures.GroupBy(f => f.Group).SelectMany(g => g).ToList();
    }

    private static byte[] MakeData()
    {
        var data = new byte[8 * MiB];
        new Random(42).NextBytes(data);
        return data;
    }

    /// <summary>A slice of random data that differs from the previous one.</summary>
    private ReadOnlySpan<byte> Data(int length)
    {
        _dataCursor = (_dataCursor + 4099) % (_data.Length - length);
        return _data.AsSpan(_dataCursor, length);
    }

    private Pool NewPool(string name) => Pool.Create(Path.Combine(root, name), new PoolCreateOptions { BlockSize = blockSize }).OrFail();

    private static void Drop(Pool pool)
    {
        string dir = pool.Directory;
        pool.Dispose();
        Directory.Delete(dir, recursive: true);
        PageCache.Settle();
    }

    private static double Ms(long start) => Stopwatch.GetElapsedTime(start).TotalMilliseconds;

    private static double Seconds(long start) => Stopwatch.GetElapsedTime(start).TotalSeconds;

    private void WriteSequential(BlockDevice device, long offset, long length)
    {
        for (long pos = offset; pos < offset + length; pos += MiB)
        {
            int n = (int)Math.Min(MiB, offset + length - pos);
            device.Write(pos, Data(n)).OrFail();
        }
    }

    /// <summary>
    /// Runs every measured path until the JIT has promoted it to optimized code: without this the first
    /// sections would measure tier-0 code (a 10x difference on the read path).
    /// </summary>
    private void WarmUp()
    {
        log("warming up");
        var pool = NewPool("warmup");
        const long size = 16L << 20;
        pool.CreateVolume("w", size).OrFail();
        var device = pool.OpenDevice("w").OrFail();
        var buffer = new byte[MiB];
        var rng = new Random(3);
        long start = Stopwatch.GetTimestamp();
        int round = 0;
        while (Seconds(start) < sizes.WarmUpSeconds)
        {
            WriteSequential(device, 0, size);
            pool.Flush().OrFail();
            for (long pos = 0; pos < size; pos += MiB)
            {
                device.Read(pos, buffer).OrFail();
            }

            for (int i = 0; i < 256; i++)
            {
                long o = rng.NextInt64(size / Sector) * Sector;
                device.Read(o, buffer.AsSpan(0, Sector)).OrFail();
                device.Write(o, Data(Sector)).OrFail();
            }

            pool.CreateSnapshot("w", $"s{round}").OrFail();
            pool.Clone($"s{round}", $"c{round}").OrFail();
            pool.Delete($"c{round}").OrFail();
            pool.Delete($"s{round}").OrFail();
            round++;
        }

        Drop(pool);

        // Let the background JIT finish promoting what the loop made hot.
        Thread.Sleep(200);
    }

    // ---------------------------------------------------------------- snapshot and clone latency

    private void Latency()
    {
        string small = BenchSizes.Size(sizes.SmallVolume);
        string large = $"{BenchSizes.Size(sizes.LargeVolume)}, {BenchSizes.Size(sizes.LargeWritten)} written";
        log($"snapshot and clone latency on a {small} volume (written in full) and a {large} (1 MiB pieces spread evenly), interleaved");
        var smallPool = NewPool("latency-small");
        smallPool.CreateVolume("v", sizes.SmallVolume).OrFail();
        WriteSequential(smallPool.OpenDevice("v").OrFail(), 0, sizes.SmallVolume);
        smallPool.Flush().OrFail();

        var largePool = NewPool("latency-large");
        largePool.CreateVolume("v", sizes.LargeVolume).OrFail();
        var device = largePool.OpenDevice("v").OrFail();
        long pieces = sizes.LargeWritten / MiB;
        long stride = sizes.LargeVolume / pieces / largePool.BlockSize * largePool.BlockSize;
        for (long i = 0; i < pieces; i++)
        {
            device.Write(i * stride, Data(MiB)).OrFail();
        }

        largePool.Flush().OrFail();
        var sparseInfo = largePool.GetInfo();
        PageCache.Settle();

        // The two volumes take turns, so a burst of load on a shared machine (an fsync stall) hits both alike
        // and the large/small ratio stays about the engine.
        var small1 = new LatencyProbe(smallPool, sizes.SmallVolume, this);
        var large1 = new LatencyProbe(largePool, sizes.LargeVolume, this);
        for (int i = 0; i < sizes.LatencyRounds * 2; i++)
        {
            small1.Round(i);
            large1.Round(i);
        }

        Drop(smallPool);
        Drop(largePool);
        AddLatency("snapshot create", small, large, small1.Snapshots, large1.Snapshots);
        AddLatency("clone create", small, large, small1.Clones, large1.Clones);
        AddMetadata($"{large} in 1 MiB pieces", sparseInfo);
    }

    /// <summary>Alternating snapshot and clone rounds on one volume.</summary>
    private sealed class LatencyProbe(Pool pool, long size, EngineBench bench)
    {
        private readonly BlockDevice _device = pool.OpenDevice("v").OrFail();
        private readonly Random _rng = new(7);

        public List<double> Snapshots { get; } = [];

        public List<double> Clones { get; } = [];

        public void Round(int i)
        {
            // Each round changes the volume and makes it durable first, so the timed call commits only itself.
            _device.Write(_rng.NextInt64(size / pool.BlockSize) * pool.BlockSize, bench.Data(pool.BlockSize)).OrFail();
            pool.Flush().OrFail();
            long start = Stopwatch.GetTimestamp();
            if (i % 2 == 0)
            {
                pool.CreateSnapshot("v", $"s{i}").OrFail();
                Snapshots.Add(Ms(start));
            }
            else
            {
                pool.Clone("v", $"c{i}").OrFail();
                Clones.Add(Ms(start));
            }
        }
    }

    private void AddLatency(string what, string small, string large, List<double> onSmall, List<double> onLarge)
    {
        const double target = 2.0;
        double ms = BenchReport.Percentile(onSmall, 50), ml = BenchReport.Percentile(onLarge, 50);
        string group = $"{what} latency ({onSmall.Count} each)";
        _figures.Add(new BenchFigure(group, $"median, {small} volume", ms, "ms", BenchReport.Ms(ms), "<= 2 ms", ms <= target,
            $"p99 {BenchReport.Ms(BenchReport.Percentile(onSmall, 99))}", new Dictionary<string, double> { ["p99"] = BenchReport.Percentile(onSmall, 99) }));
        _figures.Add(new BenchFigure(group, $"median, {large} volume", ml, "ms", BenchReport.Ms(ml), "<= 2 ms", ml <= target,
            $"p99 {BenchReport.Ms(BenchReport.Percentile(onLarge, 99))}", new Dictionary<string, double> { ["p99"] = BenchReport.Percentile(onLarge, 99) }));
        double ratio = ml / ms;
        _figures.Add(new BenchFigure(group, "large / small (median)", ratio, "ratio", BenchReport.Num(ratio), "<= 1.50", ratio <= 1.5));
    }

    private void AddMetadata(string what, PoolInfo info)
    {
        double gib = (double)info.DataBlocksUsed * info.BlockSize / (1L << 30);
        double perGib = info.MetadataBytes / gib / MiB;
        _figures.Add(new BenchFigure(
            "metadata per GiB of allocated data",
            what,
            perGib,
            "MiB/GiB",
            $"{BenchReport.Num(perGib, "0.000")} MiB",
            "<= 1 MiB",
            perGib <= 1.0,
            $"{ByteSize.Format(info.MetadataBytes)} for {ByteSize.Format(info.DataBlocksUsed * info.BlockSize)}",
            new Dictionary<string, double> { ["metadataBytes"] = info.MetadataBytes, ["dataBytes"] = (double)info.DataBlocksUsed * info.BlockSize }));
    }

    // ---------------------------------------------------------------- sequential and random I/O vs a file

    private void Streaming()
    {
        long size = sizes.StreamBytes;
        log($"sequential 1 MiB writes and reads of {BenchSizes.Size(size)}, engine vs plain file; random 4 KiB reads");
        var pool = NewPool("stream");
        pool.CreateVolume("seq", size).OrFail();
        var device = pool.OpenDevice("seq").OrFail();
        string path = Path.Combine(root, "plain-seq.img");
        using var file = File.OpenHandle(path, FileMode.CreateNew, FileAccess.ReadWrite, FileShare.None);

        // Two rounds into fresh targets, the order swapped in the second, best of each: a busy machine's
        // write-back of one side must not be charged to the other.
        var engineBest = new Timing(double.MaxValue, double.MaxValue);
        var fileBest = engineBest;
        string path2 = Path.Combine(root, "plain-seq-2.img");
        for (int round = 0; round < 2; round++)
        {
            var targetDevice = device;
            if (round == 1)
            {
                pool.CreateVolume("seq-2", size).OrFail();
                targetDevice = pool.OpenDevice("seq-2").OrFail();
            }

            using var second = round == 1 ? File.OpenHandle(path2, FileMode.CreateNew, FileAccess.ReadWrite, FileShare.None) : null;
            var targetFile = second ?? file;
            var engineRun = () => Time(() => WriteSequential(targetDevice, 0, size), () => pool.Flush().OrFail());
            var fileRun = () => Time(() => WriteFileSequential(targetFile, size), () => RandomAccess.FlushToDisk(targetFile));
            Timing e, f;
            if (round == 0)
            {
                e = engineRun();
                f = fileRun();
            }
            else
            {
                f = fileRun();
                e = engineRun();
            }

            engineBest = e.Total < engineBest.Total ? e : engineBest;
            fileBest = f.Total < fileBest.Total ? f : fileBest;
        }

        File.Delete(path2);
        pool.Delete("seq-2").OrFail();
        AddThroughput("sequential 1 MiB", "write (+ flush)", size / engineBest.Total, size / fileBest.Total, 0.8, "MiB/s",
            $"best of 2; engine {engineBest}; file {fileBest.Describe("fsync")}");
        AddMetadata($"{BenchSizes.Size(size)} written sequentially", pool.GetInfo());

        var buffer = new byte[MiB];
        long start;
        double engineRead = double.MaxValue, fileRead = double.MaxValue;
        for (int pass = 0; pass < 3; pass++)
        {
            start = Stopwatch.GetTimestamp();
            for (long pos = 0; pos < size; pos += MiB)
            {
                RandomAccess.Read(file, buffer, pos);
            }

            fileRead = Math.Min(fileRead, Seconds(start));
            start = Stopwatch.GetTimestamp();
            for (long pos = 0; pos < size; pos += MiB)
            {
                device.Read(pos, buffer).OrFail();
            }

            engineRead = Math.Min(engineRead, Seconds(start));
        }

        AddThroughput("sequential 1 MiB", "read, page cache warm", size / engineRead, size / fileRead, 0.8, "MiB/s", "best of 3: the CPU cost of the engine (checksums, one pread per block)");

        var offsets = RandomOffsets(new Random(11), size, sizes.RandomReads);
        var small = new byte[Sector];
        double engineRandom = double.MaxValue, fileRandom = double.MaxValue;
        for (int pass = 0; pass < 2; pass++)
        {
            start = Stopwatch.GetTimestamp();
            foreach (long o in offsets)
            {
                RandomAccess.Read(file, small, o);
            }

            fileRandom = Math.Min(fileRandom, Seconds(start));
            start = Stopwatch.GetTimestamp();
            foreach (long o in offsets)
            {
                device.Read(o, small).OrFail();
            }

            engineRandom = Math.Min(engineRandom, Seconds(start));
        }

        AddThroughput("random 4 KiB", "read", offsets.Length / engineRandom, offsets.Length / fileRandom, 0.7, "IOPS", $"{offsets.Length} reads over {BenchSizes.Size(size)}, page cache warm, best of 2");
        // The same reads from the disk: both files are flushed, so their pages are clean and can be dropped.
        string dataFile = Path.Combine(pool.Directory, "data.dolly");
        double engineCold = double.MaxValue, fileCold = double.MaxValue;
        bool dropped = true;
        for (int pass = 0; pass < 2; pass++)
        {
            dropped &= PageCache.Drop(file);
            start = Stopwatch.GetTimestamp();
            for (long pos = 0; pos < size; pos += MiB)
            {
                RandomAccess.Read(file, buffer, pos);
            }

            fileCold = Math.Min(fileCold, Seconds(start));
            dropped &= PageCache.Drop(dataFile);
            start = Stopwatch.GetTimestamp();
            for (long pos = 0; pos < size; pos += MiB)
            {
                device.Read(pos, buffer).OrFail();
            }

            engineCold = Math.Min(engineCold, Seconds(start));
        }

        AddThroughput("sequential 1 MiB", "read, page cache dropped", size / engineCold, size / fileCold, 0.8, "MiB/s",
            dropped ? "posix_fadvise(DONTNEED) before each pass, best of 2" : "could not drop the page cache here: same as warm");

        file.Dispose();
        File.Delete(path);
        Drop(pool);
    }

    private void AddThroughput(string group, string name, double engine, double baseline, double target, string unit, string? note)
    {
        double ratio = engine / baseline;
        string Format(double v) => unit == "MiB/s" ? BenchReport.Num(v / MiB, "0") : BenchReport.Num(v, "0");
        _figures.Add(new BenchFigure(
            $"{group}: engine vs plain file",
            name,
            ratio,
            "ratio",
            $"{Format(engine)} / {Format(baseline)} {unit} = {BenchReport.Num(ratio)}",
            $">= {BenchReport.Num(target)}",
            ratio >= target,
            note,
            new Dictionary<string, double> { ["engine"] = unit == "MiB/s" ? engine / MiB : engine, ["baseline"] = unit == "MiB/s" ? baseline / MiB : baseline }));
    }

    private void RandomWrites()
    {
        long span = sizes.RandomSpan;
        var pool = NewPool("random");
        int blockSize = pool.BlockSize;
        log($"random 4 KiB writes, one per {ByteSize.Format(blockSize)} block of {BenchSizes.Size(span)}: fresh blocks; after a flush (unshared: in place); after a snapshot (shared: copied); 2 rounds");
        (string Name, double Target)[] phases =
        [
            ("write, fresh blocks (+ flush)", 0.7),
            ("overwrite of unshared committed blocks, in place (+ flush)", 0.9),
            ("overwrite of blocks a snapshot shares, copied (+ flush)", 0.5),
        ];
        var engineBest = Enumerable.Repeat(new Timing(double.MaxValue, double.MaxValue), phases.Length).ToArray();
        var fileBest = engineBest.ToArray();
        int count = 0;
        for (int round = 0; round < 2; round++)
        {
            pool.CreateVolume($"rw{round}", span).OrFail();
            var device = pool.OpenDevice($"rw{round}").OrFail();
            string path = Path.Combine(root, $"plain-random-{round}.img");
            using (var file = File.OpenHandle(path, FileMode.CreateNew, FileAccess.ReadWrite, FileShare.None))
            {
                RandomAccess.SetLength(file, span);
                var rng = new Random(13 + round);
                for (int phase = 0; phase < phases.Length; phase++)
                {
                    if (phase == 2)
                    {
                        // Every block is shared from here: each write copies its block.
                        pool.CreateSnapshot($"rw{round}", $"rw{round}-snap").OrFail();
                    }

                    var offsets = OnePerBlock(rng, span, blockSize);
                    count = offsets.Length;
                    var engineRun = () => Time(
                        () =>
                        {
                            foreach (long o in offsets)
                            {
                                device.Write(o, Data(Sector)).OrFail();
                            }
                        },
                        () => pool.Flush().OrFail());
                    var fileRun = () => Time(
                        () =>
                        {
                            foreach (long o in offsets)
                            {
                                RandomAccess.Write(file, Data(Sector), o);
                            }
                        },
                        () => RandomAccess.FlushToDisk(file));
                    Timing e, f;
                    if (round == 0)
                    {
                        f = fileRun();
                        e = engineRun();
                    }
                    else
                    {
                        e = engineRun();
                        f = fileRun();
                    }

                    engineBest[phase] = e.Total < engineBest[phase].Total ? e : engineBest[phase];
                    fileBest[phase] = f.Total < fileBest[phase].Total ? f : fileBest[phase];
                }
            }

            File.Delete(path);
            pool.Delete($"rw{round}-snap").OrFail();
            pool.Delete($"rw{round}").OrFail();
            pool.Flush().OrFail();
        }

        for (int phase = 0; phase < phases.Length; phase++)
        {
            AddThroughput("random 4 KiB", phases[phase].Name, count / engineBest[phase].Total, count / fileBest[phase].Total, phases[phase].Target, "IOPS",
                $"{count} writes, best of 2; engine {engineBest[phase]}; file {fileBest[phase].Describe("fsync")}");
        }

        Drop(pool);
    }

    // ---------------------------------------------------------------- snapshots in the lineage

    private void Lineage()
    {
        long size = sizes.LineageVolume;
        int count = sizes.LineageSnapshots;
        log($"reads with {count} snapshots in the lineage vs none ({BenchSizes.Size(size)} volumes)");
        var pool = NewPool("lineage");
        int blockSize = pool.BlockSize;
        pool.CreateVolume("flat", size).OrFail();
        pool.CreateVolume("deep", size).OrFail();
        var flat = pool.OpenDevice("flat").OrFail();
        var deep = pool.OpenDevice("deep").OrFail();
        WriteSequential(flat, 0, size);
        WriteSequential(deep, 0, size);
        pool.Flush().OrFail();
        var rng = new Random(17);
        long blocks = size / blockSize;
        for (int i = 0; i < count; i++)
        {
            // Some writes between snapshots: 16 random blocks, so every snapshot differs from the next.
            // The volume without snapshots gets the same writes and flushes, so both are fragmented alike by
            // redirect-on-write and only the snapshots differ.
            for (int w = 0; w < 16; w++)
            {
                long at = rng.NextInt64(blocks) * blockSize;
                deep.Write(at, Data(blockSize)).OrFail();
                flat.Write(at, Data(blockSize)).OrFail();
            }

            pool.Flush().OrFail();
            pool.CreateSnapshot("deep", $"d{i}").OrFail();
        }

        var buffer = new byte[MiB];
        double flatSeq = double.MaxValue, deepSeq = double.MaxValue;
        for (int pass = 0; pass < 3; pass++)
        {
            flatSeq = Math.Min(flatSeq, ReadAll(flat, size, buffer));
            deepSeq = Math.Min(deepSeq, ReadAll(deep, size, buffer));
        }

        var offsets = RandomOffsets(new Random(19), size, sizes.RandomReads);
        var small = new byte[Sector];
        double flatRandom = double.MaxValue, deepRandom = double.MaxValue;
        for (int pass = 0; pass < 2; pass++)
        {
            flatRandom = Math.Min(flatRandom, ReadAt(flat, offsets, small));
            deepRandom = Math.Min(deepRandom, ReadAt(deep, offsets, small));
        }

        string group = $"reads with {count} snapshots in the lineage vs none";
        double seqRatio = flatSeq / deepSeq;
        _figures.Add(new BenchFigure(group, "sequential 1 MiB read", seqRatio, "ratio",
            $"{BenchReport.Num(size / deepSeq / MiB, "0")} / {BenchReport.Num(size / flatSeq / MiB, "0")} MiB/s = {BenchReport.Num(seqRatio)}", ">= 0.90", seqRatio >= 0.9,
            "page cache warm, best of 3", new Dictionary<string, double> { ["withSnapshots"] = size / deepSeq / MiB, ["without"] = size / flatSeq / MiB }));
        double randomRatio = flatRandom / deepRandom;
        _figures.Add(new BenchFigure(group, "random 4 KiB read", randomRatio, "ratio",
            $"{BenchReport.Num(offsets.Length / deepRandom, "0")} / {BenchReport.Num(offsets.Length / flatRandom, "0")} IOPS = {BenchReport.Num(randomRatio)}", ">= 0.90", randomRatio >= 0.9,
            "page cache warm, best of 2", new Dictionary<string, double> { ["withSnapshots"] = offsets.Length / deepRandom, ["without"] = offsets.Length / flatRandom }));
        var info = pool.GetInfo();
        double gib = (double)info.DataBlocksUsed * info.BlockSize / (1L << 30);
        double perGib = info.MetadataBytes / gib / MiB;
        _figures.Add(new BenchFigure("metadata per GiB of allocated data", $"two volumes, {count} snapshots of one", perGib, "MiB/GiB",
            $"{BenchReport.Num(perGib, "0.000")} MiB", null, null,
            $"{ByteSize.Format(info.MetadataBytes)} for {ByteSize.Format(info.DataBlocksUsed * info.BlockSize)}; each snapshot keeps its own copies of the map pages its successor changed"));
        Drop(pool);
    }

    // ---------------------------------------------------------------- deleting snapshots

    private void Deletes()
    {
        long size = sizes.DeleteVolume;
        log($"deleting a snapshot of a {BenchSizes.Size(size)} volume: all blocks shared vs all exclusive");
        var pool = NewPool("delete");
        pool.CreateVolume("v", size).OrFail();
        var device = pool.OpenDevice("v").OrFail();
        WriteSequential(device, 0, size);
        pool.Flush().OrFail();
        var shared = new List<double>();
        for (int i = 0; i < sizes.DeleteRounds * 2; i++)
        {
            pool.CreateSnapshot("v", $"shared{i}").OrFail();
            long start = Stopwatch.GetTimestamp();
            pool.Delete($"shared{i}").OrFail();
            shared.Add(Ms(start));
        }

        var exclusive = new List<double>();
        long freed = 0;
        for (int i = 0; i < sizes.DeleteRounds; i++)
        {
            pool.CreateSnapshot("v", $"excl{i}").OrFail();
            WriteSequential(device, 0, size);
            pool.Flush().OrFail();
            freed = pool.GetSpace($"excl{i}").OrFail().Exclusive;
            long start = Stopwatch.GetTimestamp();
            pool.Delete($"excl{i}").OrFail();
            exclusive.Add(Ms(start));
        }

        string group = $"snapshot delete latency ({BenchSizes.Size(size)} volume)";
        double ms = BenchReport.Percentile(shared, 50), me = BenchReport.Percentile(exclusive, 50);
        _figures.Add(new BenchFigure(group, "all blocks shared (median)", ms, "ms", BenchReport.Ms(ms), null, null, $"{shared.Count} deletes, max {BenchReport.Ms(shared.Max())}; frees nothing"));
        _figures.Add(new BenchFigure(group, "all blocks exclusive (median)", me, "ms", BenchReport.Ms(me), null, null,
            $"{exclusive.Count} deletes, max {BenchReport.Ms(exclusive.Max())}; frees {ByteSize.Format(freed)} each"));
        Drop(pool);
    }
}
