using Dolly.Storage.IO;

namespace Dolly.Storage.Tests;

/// <summary>
/// The data path holds the pool lock shared and a lock per device: while a write to one volume is stuck inside its
/// file write, reads and writes of other volumes complete, and only the stuck volume's own I/O waits for it. A write
/// that held the pool lock alone (as before per-device locking) blocks these tests until their generous timeout.
/// </summary>
public sealed class DeviceIndependenceTests
{
    private const int Bs = 65536;

    // Generous bound for "this would block forever"; never reached when the code is right.
    private static readonly TimeSpan Stuck = TimeSpan.FromSeconds(60);

    public static TheoryData<string> StuckWrites => new()
    {
        "new block",          // first write into an unmapped block: a fresh block, written then mapped
        "copy of shared",     // a block a snapshot shares: copied to a new block
        "fresh in place",     // a block this transaction allocated: overwritten in its place
    };

    [Theory]
    [MemberData(nameof(StuckWrites))]
    public async Task WriteToVolumeAStuckInTheFile_VolumeBReadsAndWrites_VolumeAReadsWait(string kind)
    {
        using var tmp = new TempDir(memory: true);
        var fs = new HeldWriteFileSystem();
        using var pool = Pool.Create(tmp.Sub("pool"), new PoolCreateOptions { BlockSize = Bs }, fs).Value;
        pool.CreateVolume("a", 1 << 20).ThrowIfFailed();
        pool.CreateVolume("b", 1 << 20).ThrowIfFailed();
        var a = pool.OpenDevice("a").Value;
        var b = pool.OpenDevice("b").Value;
        var aBefore = Support.Pattern(Bs, 1);
        var bBefore = Support.Pattern(3 * Bs, 2);
        b.Write(0, bBefore).ThrowIfFailed();
        switch (kind)
        {
            case "copy of shared":
                a.Write(0, aBefore).ThrowIfFailed();
                pool.CreateSnapshot("a", "a-snap").ThrowIfFailed();
                break;
            case "fresh in place":
                pool.Flush().ThrowIfFailed();
                a.Write(0, aBefore).ThrowIfFailed(); // born in this transaction: the next write goes in place
                break;
            default:
                aBefore = new byte[Bs];
                pool.Flush().ThrowIfFailed();
                break;
        }

        var ct = TestContext.Current.CancellationToken;
        var aNew = Support.Pattern(8192, 3);
        fs.HoldNextDataWrite();
        var writeA = Task.Run(() => a.Write(4096, aNew), ct);
        Assert.True(fs.WaitUntilHeld(Stuck), "volume a's write never reached the data file");

        // Volume b: reads (of data written before) and writes, including a write into a new block, complete.
        var readB = await Within(Task.Run(() => Read(b, 0, 3 * Bs), ct), "a read of volume b waited for volume a's write");
        Assert.Equal(bBefore, readB);
        var bNew = Support.Pattern(5000, 4);
        var wroteB = await Within(Task.Run(() => b.Write(Bs + 100, bNew), ct), "a write to volume b waited for volume a's write");
        Assert.True(wroteB.IsOk, wroteB.Error?.Message);
        var wroteBNewBlock = await Within(Task.Run(() => b.Write(10 * Bs, bNew), ct), "a write of a new block of volume b waited");
        Assert.True(wroteBNewBlock.IsOk, wroteBNewBlock.Error?.Message);
        Assert.Equal(bNew, await Within(Task.Run(() => Read(b, Bs + 100, bNew.Length), ct), "reading back volume b waited"));

        // Volume a's own read waits for its write: it must never see the new bytes without their checksums.
        var readA = Task.Run(() => Read(a, 0, Bs), ct);
        Assert.False(writeA.IsCompleted, "volume a's write returned while its file write was held");
        Assert.False(readA.IsCompleted, "a read of volume a ran while a write of the same volume was half-way");

        fs.ReleaseDataWrite();
        var wroteA = await Within(writeA, "volume a's write did not finish once released");
        Assert.True(wroteA.IsOk, wroteA.Error?.Message);
        var expectedA = (byte[])aBefore.Clone();
        aNew.CopyTo(expectedA, 4096);
        Assert.Equal(expectedA, await Within(readA, "the read of volume a did not finish after its write"));
        if (kind == "copy of shared")
        {
            Assert.Equal(aBefore, Read(pool.OpenDevice("a-snap").Value, 0, Bs));
        }

        pool.Flush().ThrowIfFailed();
        Support.AssertClean(pool.Check());
    }

    [Fact]
    public async Task AFlushWaitsForAWriteHalfWay_AndItsCommitHoldsThatWrite()
    {
        using var tmp = new TempDir(memory: true);
        string dir = tmp.Sub("pool");
        var fs = new HeldWriteFileSystem();
        var pool = Pool.Create(dir, new PoolCreateOptions { BlockSize = Bs }, fs).Value;
        pool.CreateVolume("a", 1 << 20).ThrowIfFailed();
        pool.CreateVolume("b", 1 << 20).ThrowIfFailed();
        var a = pool.OpenDevice("a").Value;
        var b = pool.OpenDevice("b").Value;
        var ct = TestContext.Current.CancellationToken;
        var aData = Support.Pattern(Bs, 5);
        fs.HoldNextDataWrite();
        var writeA = Task.Run(() => a.Write(0, aData), ct);
        Assert.True(fs.WaitUntilHeld(Stuck), "volume a's write never reached the data file");
        b.Write(0, Support.Pattern(4096, 6)).ThrowIfFailed();
        var flush = Task.Run(() => b.Flush(), ct);

        // The flush's commit cannot be prepared while a write is between its bytes and its map entry.
        Assert.False(flush.IsCompleted, "a flush completed while a write was half-way");
        fs.ReleaseDataWrite();
        Assert.True((await Within(writeA, "the write did not finish once released")).IsOk);
        var flushed = await Within(flush, "the flush did not finish after the write");
        Assert.True(flushed.IsOk, flushed.Error?.Message);

        // The flush started after the write began, so (started or not) its commit covers it: it survives a crash.
        pool.Abandon();
        using var reopened = Pool.Open(dir).Value;
        Assert.Equal(aData, Read(reopened.OpenDevice("a").Value, 0, Bs));
        Assert.Equal(Support.Pattern(4096, 6), Read(reopened.OpenDevice("b").Value, 0, 4096));
    }

    [Fact]
    public void VolumeAndItsClone_WrittenInParallelOverSharedBlocks_EachReadsItsOwn_CheckClean()
    {
        using var tmp = new TempDir(memory: true);
        string dir = tmp.Sub("pool");
        int seed = Support.Seed(7);
        const long Size = 8L << 20;
        const int Rounds = 400;
        var origin = new byte[Size];
        new Random(seed).NextBytes(origin);
        var names = new[] { "vol", "clone" };
        var models = new[] { (byte[])origin.Clone(), (byte[])origin.Clone() };
        var failures = new System.Collections.Concurrent.ConcurrentQueue<string>();
        using (var pool = Pool.Create(dir, new PoolCreateOptions { BlockSize = Bs }).Value)
        {
            pool.CreateVolume("vol", Size).ThrowIfFailed();
            pool.OpenDevice("vol").Value.Write(0, origin).ThrowIfFailed();
            pool.Clone("vol", "clone").ThrowIfFailed();

            // Each thread overwrites its device: first writes copy blocks the other device shares, later ones land
            // in place (fresh, or committed through the journal after the flushes some rounds make).
            var threads = Enumerable.Range(0, 2).Select(w => new Thread(() =>
            {
                var rng = new Random(seed + 1 + w);
                var dev = pool.OpenDevice(names[w]).Value;
                for (int round = 0; round < Rounds && failures.IsEmpty; round++)
                {
                    int length = rng.Next(4) switch { 0 => rng.Next(1, 600), 1 => 4096, 2 => rng.Next(4096, 3 * Bs), _ => 2 * Bs };
                    long offset = rng.Next(4) == 0 ? rng.NextInt64(Size / 4096) * 4096 : rng.NextInt64(Size - length);
                    offset = Math.Min(offset, Size - length);
                    var data = new byte[length];
                    rng.NextBytes(data);
                    var r = dev.Write(offset, data, fua: rng.Next(40) == 0);
                    if (!r.IsOk)
                    {
                        failures.Enqueue($"{names[w]} write: {r.Error}");
                        return;
                    }

                    data.CopyTo(models[w], offset);
                    if (rng.Next(10) == 0 && !dev.Flush().IsOk)
                    {
                        failures.Enqueue($"{names[w]} flush failed");
                        return;
                    }

                    int readLength = rng.Next(1, 2 * Bs);
                    long at = rng.NextInt64(Size - readLength);
                    var check = new byte[readLength];
                    r = dev.Read(at, check);
                    if (!r.IsOk || !check.AsSpan().SequenceEqual(models[w].AsSpan((int)at, readLength)))
                    {
                        failures.Enqueue($"{names[w]} read at {at}+{readLength} in round {round}: {(r.IsOk ? "wrong data" : r.Error)}");
                        return;
                    }
                }
            })).ToList();
            threads.ForEach(t => t.Start());
            Assert.All(threads, t => Assert.True(t.Join(TimeSpan.FromMinutes(5)), "a writer did not finish"));
            Assert.True(failures.IsEmpty, string.Join("; ", failures));
            pool.Flush().ThrowIfFailed();
            Support.AssertClean(pool.Check());
        }

        using var reopened = Pool.Open(dir).Value;
        for (int w = 0; w < 2; w++)
        {
            Assert.True(Support.ReadAll(reopened, names[w]).AsSpan().SequenceEqual(models[w]), $"{names[w]} after reopening (seed {seed})");
        }
    }

    private static byte[] Read(BlockDevice device, long offset, int length)
    {
        var buffer = new byte[length];
        device.Read(offset, buffer).ThrowIfFailed();
        return buffer;
    }

    private static async Task<T> Within<T>(Task<T> task, string what)
    {
        try
        {
            return await task.WaitAsync(Stuck, TestContext.Current.CancellationToken);
        }
        catch (TimeoutException)
        {
            Assert.Fail(what);
            throw;
        }
    }

    /// <summary>
    /// The real file system (thread-safe, so the pool runs devices in parallel), where the next write to the data file
    /// can be held until released; every other call passes.
    /// </summary>
    private sealed class HeldWriteFileSystem : IFileSystem
    {
        private readonly ManualResetEventSlim _open = new(true);
        private readonly ManualResetEventSlim _held = new(false);
        private int _armed;

        public bool ConcurrentFiles => true;

        public void HoldNextDataWrite()
        {
            _held.Reset();
            _open.Reset();
            Volatile.Write(ref _armed, 1);
        }

        public void ReleaseDataWrite() => _open.Set();

        public bool WaitUntilHeld(TimeSpan timeout) => _held.Wait(timeout);

        private void BeforeDataWrite()
        {
            if (Interlocked.Exchange(ref _armed, 0) == 1)
            {
                _held.Set();
                _open.Wait();
            }
        }

        public bool DirectoryExists(string path) => PhysicalFileSystem.Instance.DirectoryExists(path);

        public void CreateDirectory(string path) => PhysicalFileSystem.Instance.CreateDirectory(path);

        public IReadOnlyList<string> ListDirectory(string path) => PhysicalFileSystem.Instance.ListDirectory(path);

        public bool FileExists(string path) => PhysicalFileSystem.Instance.FileExists(path);

        public IStorageFile Open(string path, bool create)
        {
            var inner = PhysicalFileSystem.Instance.Open(path, create);
            return Path.GetFileName(path) == "data.dolly" ? new DataFile(this, inner) : inner;
        }

        public IDisposable? TryLock(string directory) => PhysicalFileSystem.Instance.TryLock(directory);

        public void SyncDirectory(string path) => PhysicalFileSystem.Instance.SyncDirectory(path);

        private sealed class DataFile(HeldWriteFileSystem fs, IStorageFile inner) : IStorageFile
        {
            public long Length => inner.Length;

            public long AllocatedBytes => inner.AllocatedBytes;

            public void Read(long offset, Span<byte> buffer) => inner.Read(offset, buffer);

            public void Write(long offset, ReadOnlySpan<byte> data)
            {
                fs.BeforeDataWrite();
                inner.Write(offset, data);
            }

            public void Sync() => inner.Sync();

            public void PunchHole(long offset, long length) => inner.PunchHole(offset, length);

            public void Dispose() => inner.Dispose();
        }
    }
}
