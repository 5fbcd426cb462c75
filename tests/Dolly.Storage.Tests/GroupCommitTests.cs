using Dolly.Storage.IO;

namespace Dolly.Storage.Tests;

/// <summary>
/// The durable part of a commit runs outside the pool lock: while one flush is stuck in its sync, reads and writes
/// of every volume go on, and flushes that arrive meanwhile join one commit instead of running one each.
/// </summary>
public sealed class GroupCommitTests
{
    // Generous bound for "this would block forever with the lock held across the sync"; never reached when it works.
    private static readonly TimeSpan Stuck = TimeSpan.FromSeconds(60);

    [Fact]
    public async Task FlushOfVolumeBStuckInItsSync_ReadsAndWritesOfVolumeAProceed()
    {
        using var tmp = new TempDir(memory: true);
        var fs = new GatedFileSystem();
        using var pool = Pool.Create(tmp.Sub("pool"), new PoolCreateOptions { BlockSize = 65536 }, fs).Value;
        pool.CreateVolume("a", 1 << 20).ThrowIfFailed();
        pool.CreateVolume("b", 1 << 20).ThrowIfFailed();
        var a = pool.OpenDevice("a").Value;
        var b = pool.OpenDevice("b").Value;
        a.Write(0, Support.Pattern(65536, 1)).ThrowIfFailed();
        pool.Flush().ThrowIfFailed();

        b.Write(0, Support.Pattern(100_000, 2)).ThrowIfFailed(); // new blocks: a full commit, data sync first
        fs.HoldSyncs();
        var ct = TestContext.Current.CancellationToken;
        var flushB = Task.Run(() => b.Flush(), ct);
        Assert.True(fs.WaitUntilHeld(Stuck), "the flush never reached its sync");

        var read = await Within(Task.Run(() =>
        {
            var buf = new byte[65536];
            a.Read(0, buf).ThrowIfFailed();
            return buf;
        }, ct), "a read of volume a waited for volume b's sync");
        Assert.Equal(Support.Pattern(65536, 1), read);
        var write = await Within(Task.Run(() => a.Write(4096, Support.Pattern(8192, 3)), ct), "a write to volume a waited for volume b's sync");
        Assert.True(write.IsOk, write.Error?.Message);
        Assert.False(flushB.IsCompleted, "the flush returned before its sync completed");

        fs.ReleaseSyncs();
        var flushed = await Within(flushB, "the flush did not finish once its sync was released");
        Assert.True(flushed.IsOk, flushed.Error?.Message);
        pool.Flush().ThrowIfFailed();
        Support.AssertClean(pool.Check());
    }

    [Fact]
    public async Task FlushesArrivingDuringACommit_JoinOneCommit_AndAllTheirWritesAreDurable()
    {
        using var tmp = new TempDir(memory: true);
        string dir = tmp.Sub("pool");
        var fs = new GatedFileSystem();
        const int Volumes = 8;
        var pool = Pool.Create(dir, new PoolCreateOptions { BlockSize = 65536 }, fs).Value;
        for (int i = 0; i < Volumes; i++)
        {
            pool.CreateVolume($"v{i}", 1 << 20).ThrowIfFailed();
            pool.OpenDevice($"v{i}").Value.Write(0, Support.Pattern(65536, i)).ThrowIfFailed();
        }

        pool.Flush().ThrowIfFailed();
        var first = pool.OpenDevice("v0").Value;
        first.Write(100, Support.Pattern(300, 100)).ThrowIfFailed();
        fs.HoldSyncs();
        var ct = TestContext.Current.CancellationToken;
        var leader = Task.Run(() => first.Flush(), ct);
        Assert.True(fs.WaitUntilHeld(Stuck), "the first flush never reached its sync");
        int syncsBefore = fs.Syncs;

        // Each of these writes (in place, through the journal) and flushes while the first commit is stuck.
        var followers = new List<Task<Result>>();
        var waiting = new CountdownEvent(Volumes - 1);
        for (int i = 1; i < Volumes; i++)
        {
            var dev = pool.OpenDevice($"v{i}").Value;
            int seed = 200 + i;
            Assert.True(dev.Write(4096, Support.Pattern(5000, seed)).IsOk);
            followers.Add(Task.Run(
                () =>
                {
                    waiting.Signal();
                    return dev.Flush();
                },
                ct));
        }

        Assert.True(waiting.Wait(Stuck, ct));
        Assert.True(SpinWait.SpinUntil(() => pool.CommitWaiters == Volumes - 1, Stuck), "the followers never queued for the commit");
        fs.ReleaseSyncs();
        var results = await Within(Task.WhenAll([leader, .. followers]), "the flushes did not finish once the sync was released");
        Assert.All(results, r => Assert.True(r.IsOk, r.Error?.Message));

        // The leader's batch (its sync was the one held) and one batch for all seven followers.
        Assert.Equal(syncsBefore + 2, fs.Syncs);
        pool.Abandon();
        var reopened = Pool.Open(dir).Value;
        for (int i = 1; i < Volumes; i++)
        {
            var buf = new byte[5000];
            reopened.OpenDevice($"v{i}").Value.Read(4096, buf).ThrowIfFailed();
            Assert.Equal(Support.Pattern(5000, 200 + i), buf);
        }

        reopened.Dispose();
    }

    [Fact]
    public async Task SnapshotStuckInItsCommit_WritesGoOn_AndTheSnapshotHoldsTheContentWhenItWasTaken()
    {
        using var tmp = new TempDir(memory: true);
        var fs = new GatedFileSystem();
        using var pool = Pool.Create(tmp.Sub("pool"), new PoolCreateOptions { BlockSize = 65536 }, fs).Value;
        pool.CreateVolume("v", 1 << 20).ThrowIfFailed();
        var v = pool.OpenDevice("v").Value;
        v.Write(0, Support.Pattern(200_000, 1)).ThrowIfFailed(); // not flushed: the snapshot commits it too
        var ct = TestContext.Current.CancellationToken;
        fs.HoldSyncs();
        var snapshot = Task.Run(() => pool.CreateSnapshot("v", "s"), ct);
        Assert.True(fs.WaitUntilHeld(Stuck), "the snapshot never reached its sync");

        var write = await Within(Task.Run(() => v.Write(1000, Support.Pattern(70_000, 2)), ct), "a write waited for the snapshot's sync");
        Assert.True(write.IsOk, write.Error?.Message);
        Assert.False(snapshot.IsCompleted, "the snapshot returned before its commit was durable");
        fs.ReleaseSyncs();
        var created = await Within(snapshot, "the snapshot did not finish once its sync was released");
        Assert.True(created.IsOk, created.Error?.Message);

        var expected = new byte[1 << 20];
        Support.Pattern(200_000, 1).CopyTo(expected, 0);
        Assert.Equal(expected, Support.ReadAll(pool, "s"));
        Support.Pattern(70_000, 2).CopyTo(expected, 1000);
        Assert.Equal(expected, Support.ReadAll(pool, "v"));
        pool.Flush().ThrowIfFailed();
        Support.AssertClean(pool.Check());
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

    /// <summary>The real file system, whose syncs can be held (they wait until released) and are counted.</summary>
    private sealed class GatedFileSystem : IFileSystem
    {
        private readonly ManualResetEventSlim _open = new(true);
        private readonly ManualResetEventSlim _held = new(false);
        private int _syncs;

        public int Syncs => Volatile.Read(ref _syncs);

        public void HoldSyncs()
        {
            _held.Reset();
            _open.Reset();
        }

        public void ReleaseSyncs() => _open.Set();

        public bool WaitUntilHeld(TimeSpan timeout) => _held.Wait(timeout);

        private void Sync(IStorageFile file)
        {
            if (!_open.IsSet)
            {
                _held.Set();
                _open.Wait();
            }

            file.Sync();
            Interlocked.Increment(ref _syncs);
        }

        public bool DirectoryExists(string path) => PhysicalFileSystem.Instance.DirectoryExists(path);

        public void CreateDirectory(string path) => PhysicalFileSystem.Instance.CreateDirectory(path);

        public IReadOnlyList<string> ListDirectory(string path) => PhysicalFileSystem.Instance.ListDirectory(path);

        public bool FileExists(string path) => PhysicalFileSystem.Instance.FileExists(path);

        public IStorageFile Open(string path, bool create) => new File(this, PhysicalFileSystem.Instance.Open(path, create));

        public IDisposable? TryLock(string directory) => PhysicalFileSystem.Instance.TryLock(directory);

        public void SyncDirectory(string path) => PhysicalFileSystem.Instance.SyncDirectory(path);

        private sealed class File(GatedFileSystem fs, IStorageFile inner) : IStorageFile
        {
            public long Length => inner.Length;

            public long AllocatedBytes => inner.AllocatedBytes;

            public void Read(long offset, Span<byte> buffer) => inner.Read(offset, buffer);

            public void Write(long offset, ReadOnlySpan<byte> data) => inner.Write(offset, data);

            public void Sync() => fs.Sync(inner);

            public void PunchHole(long offset, long length) => inner.PunchHole(offset, length);

            public void Dispose() => inner.Dispose();
        }
    }
}
