using Dolly.Storage.CrashWorker;

namespace Dolly.Storage.Tests;

/// <summary>
/// Power loss at seeded points through <see cref="CrashFileSystem"/>: after "reboot" (unsynced writes applied, dropped
/// or torn) the pool opens, checks clean, and holds exactly the state after some prefix of the steps that is no
/// shorter than the last acknowledged commit. DOLLY_POWER_ROUNDS sets the rounds (default 300), DOLLY_SEED the seed.
/// </summary>
public sealed class PowerLossTests
{
    private const string Dir = "/pool";

    private static int Rounds => Support.EnvInt("DOLLY_POWER_ROUNDS", 300);

    [Theory]
    [InlineData(4096, 1)]
    [InlineData(16384, 2)]
    [InlineData(65536, 3)]
    public void RandomWork_PowerLossAtSeededPoints_RecoversToAcknowledgedPrefix(int blockSize, int seed)
    {
        int baseSeed = (Support.Seed(seed) * 31) + blockSize;
        var rng = new Random(baseSeed);
        var options = new WorkloadOptions { BlockSize = blockSize, MaxVolumeBytes = blockSize * 24L, MaxDevices = 8, Abandon = false, Check = false };
        // The smallest journal for one block size, so that random work wraps it and fills it (and makes it
        // checkpoint) often; the default for the others.
        long journal = blockSize == 65536 ? 128 << 10 : 64L << 20;
        CrashFileSystem fs = NewPool(blockSize, journal);
        double callsPerStep = 20;
        int rounds = Rounds / 3;
        for (int round = 0; round < rounds; round++)
        {
            if (round % 10 == 9)
            {
                fs = NewPool(blockSize, journal); // a fresh pool now and then; otherwise recovery chains on the same one
            }

            int workSeed = rng.Next();
            int steps = rng.Next(1, 40);
            long before = fs.IoCalls;
            long crashIn = 1 + rng.NextInt64((long)(callsPerStep * steps) + 1);
            var outcome = RunUntilPowerLoss(fs, workSeed, steps, options, crashIn);
            callsPerStep = (0.8 * callsPerStep) + (0.2 * Math.Max(1, (fs.IoCalls - before) / (double)Math.Max(1, outcome.StepsRun)));
            string context = $"seed {baseSeed}, round {round}, work seed {workSeed}, {outcome.StepsRun} of {steps} steps, crash {crashIn} I/O calls after opening";
            fs = Recover(fs, rng, outcome, context);
        }
    }

    [Fact]
    public void Create_PowerLossAtEveryCall_PoolOpensCleanOrCanBeCreatedAgain()
    {
        var probe = new CrashFileSystem();
        Pool.Create(Dir, new PoolCreateOptions { BlockSize = 4096 }, probe).Value.Dispose();
        long calls = probe.IoCalls;
        var rng = new Random(Support.Seed(5));
        for (long n = 0; n <= calls; n++)
        {
            for (int attempt = 0; attempt < 4; attempt++)
            {
                var fs = new CrashFileSystem { CrashAfter = n };
                var created = Pool.Create(Dir, new PoolCreateOptions { BlockSize = 4096 }, fs);
                if (created.IsOk)
                {
                    created.Value.Abandon();
                }

                var after = fs.Reboot(rng);
                var opened = Pool.Open(Dir, after);
                if (opened.IsOk)
                {
                    Support.AssertClean(opened.Value.Check(), $"crash after call {n}:");
                    Assert.Empty(opened.Value.ListDevices());
                    opened.Value.Dispose();
                    continue;
                }

                // Not a pool yet: creating it again must work.
                var again = Pool.Create(Dir, new PoolCreateOptions { BlockSize = 4096 }, after);
                Assert.True(again.IsOk, $"crash after I/O call {n} of Pool.Create left a directory that neither opens ({opened.Error.Code}: {opened.Error.Message}) nor can be created again ({again.Error?.Code}: {again.Error?.Message})");
                again.Value.CreateVolume("v", 4096).ThrowIfFailed();
                again.Value.Dispose();
            }
        }
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void DeleteOrRevertFreeingManyBlocks_PowerLossAtEveryCall_RecoversAndReusesSpaceSafely(bool revert)
    {
        // A volume with 600 blocks of its own beside a snapshot: deleting it (or reverting it) frees ~600 blocks and
        // many map pages in one commit. Crash at every I/O call of that commit.
        var setup = NewPool(4096);
        var pool = Pool.Open(Dir, setup).Value;
        pool.CreateVolume("big", 4096 * 700).ThrowIfFailed();
        var dev = pool.OpenDevice("big").Value;
        dev.Write(0, Support.Pattern(4096 * 650, 1)).ThrowIfFailed();
        pool.CreateSnapshot("big", "snap").ThrowIfFailed();
        dev.Write(4096 * 20, Support.Pattern(4096 * 600, 2)).ThrowIfFailed();
        pool.Flush().ThrowIfFailed();
        var model = ReferenceModel.FromPool(pool);
        pool.Dispose();
        var op = revert ? new Op(OpKind.Revert, "big", "snap") : new Op(OpKind.Delete, "big");
        var afterModel = model.Copy();
        Assert.Null(afterModel.Apply(op));

        var dry = setup.Fork();
        long start = dry.IoCalls;
        var dryPool = Pool.Open(Dir, dry).Value;
        long openCalls = dry.IoCalls;
        Assert.Null(new OpExecutor(Dir, dry, dryPool).Execute(op));
        long opCalls = dry.IoCalls - openCalls;
        var rng = new Random(Support.Seed(7));
        for (long k = 0; k <= opCalls + 1; k++)
        {
            var fs = setup.Fork();
            fs.CrashAfter = fs.IoCalls + (openCalls - start) + k;
            var p = Pool.Open(Dir, fs).Value;
            StorageError? error;
            try
            {
                error = new OpExecutor(Dir, fs, p).Execute(op);
            }
            catch (IOException) when (fs.Crashed)
            {
                error = new StorageError(StorageErrorCode.IoError, "crashed");
            }

            p.Abandon();
            var outcome = new Outcome(error is null ? [afterModel] : [model, afterModel], 1);
            var rebooted = Recover(fs, rng, outcome, $"{op.Kind} crash after call {k} of {opCalls}");

            // Reuse the freed space and make sure nothing still referenced gets overwritten.
            var again = Pool.Open(Dir, rebooted).Value;
            var expected = ReferenceModel.FromPool(again);
            again.CreateVolume("fill", 4096 * 700).ThrowIfFailed();
            var fill = again.OpenDevice("fill").Value;
            fill.Write(0, Support.Pattern(4096 * 700, 3)).ThrowIfFailed();
            again.Flush().ThrowIfFailed();
            Assert.Null(expected.Apply(new Op(OpKind.CreateVolume, "fill", Size: 4096 * 700)));
            Assert.Null(expected.Apply(new Op(OpKind.Write, "fill", Offset: 0, Length: 4096 * 700, DataSeed: 3)) is null ? null : "model");
            again.Dispose();
            var final = Pool.Open(Dir, rebooted).Value;
            Support.AssertClean(final.Check(), "after reusing the freed space:");
            Assert.Equal(Support.Pattern(4096 * 650, 1), Support.ReadAll(final, "snap").AsSpan(0, 4096 * 650).ToArray());
            Assert.Equal(Support.Pattern(4096 * 700, 3), Support.ReadAll(final, "fill"));
            final.Dispose();
        }
    }

    [Fact]
    public void Commit_SuperblockWriteTorn_PreviousCommitSurvives()
    {
        var fs = NewPool(16384);
        var pool = Pool.Open(Dir, fs).Value;
        pool.CreateVolume("v", 1 << 20).ThrowIfFailed();
        var dev = pool.OpenDevice("v").Value;
        dev.Write(0, Support.Pattern(100_000, 1)).ThrowIfFailed();
        pool.Flush().ThrowIfFailed();
        var committed = ReferenceModel.FromPool(pool);
        dev.Write(50_000, Support.Pattern(300_000, 2)).ThrowIfFailed();

        // Find the superblock write of the next commit on a copy, then crash right after it and tear it.
        var probe = fs.Fork();
        probe.LogCalls = true;
        pool.Abandon();
        var probePool = Pool.Open(Dir, probe).Value;
        probePool.OpenDevice("v").Value.Write(50_000, Support.Pattern(300_000, 2)).ThrowIfFailed();
        probe.Log.Clear();
        probePool.Flush().ThrowIfFailed();
        var superWrite = probe.Log.Last(e => e.What == "write" && e.Path.EndsWith("meta.dolly", StringComparison.Ordinal) && e.Offset < 8192);
        long sinceStart = superWrite.Call - probe.Log[0].Call;

        for (int variant = 0; variant < 8; variant++)
        {
            var run = fs.Fork();
            var p = Pool.Open(Dir, run).Value;
            p.OpenDevice("v").Value.Write(50_000, Support.Pattern(300_000, 2)).ThrowIfFailed();
            run.CrashAfter = run.IoCalls + sinceStart + 1; // the superblock write happens, its sync does not
            Assert.False(p.Flush().IsOk);
            p.Abandon();
            int v = variant;
            run.FateOverride = w => w.Offset == superWrite.Offset && w.Length == 4096 && w.Path.EndsWith("meta.dolly", StringComparison.Ordinal)
                ? Fate.Tear
                : (v % 2 == 0 ? Fate.Apply : null);
            var rebooted = run.Reboot(new Random(v));
            Support.AssertClean(Pool.CheckDirectory(Dir, rebooted), "torn superblock:");
            var reopened = Pool.Open(Dir, rebooted).Value;
            var full = committed.Copy();
            full.Apply(new Op(OpKind.Write, "v", Offset: 50_000, Length: 300_000, DataSeed: 2));
            Assert.True(
                committed.Difference(reopened) is null || full.Difference(reopened) is null,
                $"variant {v}: neither the previous commit ({committed.Difference(reopened)}) nor the new one ({full.Difference(reopened)})");
            reopened.Dispose();
        }
    }

    [Theory]
    [InlineData(16384, 1)]
    [InlineData(65536, 3)]
    [InlineData(4096, 2)]
    public void CapacityLimit_FillUntilNoSpace_ErrorNamesVolumeAndFlushedDataSurvives(int blockSize, int flushEvery)
    {
        var fs = new CrashFileSystem();
        Pool.Create(Dir, new PoolCreateOptions { BlockSize = blockSize }, fs).Value.Dispose();
        fs.Capacity = fs.AllocatedBytes + (2 << 20);
        var pool = Pool.Open(Dir, fs).Value;
        pool.CreateVolume("filler", 64 << 20).ThrowIfFailed();
        var dev = pool.OpenDevice("filler").Value;
        long flushedUpTo = 0;
        StorageError? failure = null;
        for (int i = 0; i < 1000 && failure is null; i++)
        {
            var r = dev.Write(i * 100_000L, Support.Pattern(100_000, i + 1));
            if (!r.IsOk)
            {
                failure = r.Error;
                break;
            }

            if (i % flushEvery != flushEvery - 1)
            {
                continue;
            }

            var f = pool.Flush();
            if (!f.IsOk)
            {
                failure = f.Error;
                break;
            }

            flushedUpTo = i + 1;
        }

        Assert.NotNull(failure);
        Assert.Equal(StorageErrorCode.NoSpace, failure.Code);
        Assert.Contains("no space", failure.Message, StringComparison.OrdinalIgnoreCase);
        Assert.True(flushedUpTo > 10, $"only {flushedUpTo} writes fitted");
        pool.Dispose();

        Support.AssertClean(Pool.CheckDirectory(Dir, fs), "after filling the disk:");
        var reopened = Pool.Open(Dir, fs).Value;
        Support.AssertClean(reopened.Check(), "after filling the disk:");
        var rd = reopened.OpenDevice("filler").Value;
        var buf = new byte[100_000];
        for (int i = 0; i < flushedUpTo; i++)
        {
            rd.Read(i * 100_000L, buf).ThrowIfFailed();
            Assert.True(Support.Pattern(100_000, i + 1).AsSpan().SequenceEqual(buf), $"flushed write {i} does not read back");
        }

        // Deleting frees space again (the commit needs no new space: it writes into freed pages and slots).
        reopened.Delete("filler").ThrowIfFailed();
        reopened.CreateVolume("after", 1 << 20).ThrowIfFailed();
        reopened.OpenDevice("after").Value.Write(0, Support.Pattern(1 << 20, 9), fua: true).ThrowIfFailed();
        reopened.Dispose();
    }

    [Fact]
    public void ManagementOperations_CommitFailsNoSpace_ChangeNothing()
    {
        // The disk fills between the data and the metadata of a commit: every management operation must then fail
        // with NoSpace and leave the pool as it was (no half-created snapshot that a retry collides with).
        var fs = new CrashFileSystem();
        Pool.Create(Dir, new PoolCreateOptions { BlockSize = 4096 }, fs).Value.Dispose();
        var pool = Pool.Open(Dir, fs).Value;
        pool.CreateVolume("v", 1 << 20).ThrowIfFailed();
        pool.OpenDevice("v").Value.Write(0, Support.Pattern(1 << 20, 1)).ThrowIfFailed();
        pool.CreateSnapshot("v", "s0").ThrowIfFailed();
        var model = ReferenceModel.FromPool(pool);
        Op[] ops =
        [
            new(OpKind.CreateVolume, "w", Size: 1 << 20),
            new(OpKind.Snapshot, "v", "s1"),
            new(OpKind.Clone, "s0", "c1", Size: 2 << 20),
            new(OpKind.Resize, "v", Size: 4 << 20),
            new(OpKind.Revert, "v", "s0"),
            new(OpKind.Delete, "s0"),
        ];
        var executor = new OpExecutor(Dir, fs, pool);
        var failures = new List<string>();
        foreach (var op in ops)
        {
            // Make the op's own change visible to its commit: v gets a new block first (committed).
            pool.OpenDevice("v").Value.Write(8192, Support.Pattern(100, 5)).ThrowIfFailed();
            pool.Flush().ThrowIfFailed();
            model.Apply(new Op(OpKind.Write, "v", Offset: 8192, Length: 100, DataSeed: 5));
            fs.NoSpaceFor = "meta.dolly";
            var error = executor.Execute(op);
            fs.NoSpaceFor = null;
            if (error?.Code != StorageErrorCode.NoSpace)
            {
                failures.Add($"{op.Kind}: expected NoSpace, got {error?.Code.ToString() ?? "success"}");
                continue;
            }

            if (model.Difference(pool) is { } diff)
            {
                failures.Add($"{op.Kind} failed with NoSpace but changed the pool: {diff}");
            }

            // Whatever it did in memory, the next commit must not make a refused operation happen after all.
            pool.Flush().ThrowIfFailed();
            pool.Dispose();
            pool = Pool.Open(Dir, fs).Value;
            executor.Replace(pool);
            if (model.Difference(pool) is { } after)
            {
                failures.Add($"{op.Kind} failed with NoSpace but after the next flush and a reopen: {after}");
                model = ReferenceModel.FromPool(pool);
            }
        }

        pool.Dispose();
        Assert.True(failures.Count == 0, string.Join("\n", failures));
    }

    [Fact]
    public void Write_NoSpaceAfterPartOfAnInPlaceWriteLanded_BlockStaysReadableAndClean()
    {
        // A new block gets only its touched sector written (the rest stays a hole). A second write into the same
        // block, in this transaction, goes in place and spans that sector and a hole sector: the disk is full, so
        // the kernel writes the first sector and fails. Whatever the failed write left, the block must read back
        // (old or new bytes) and check must stay clean after the next commit.
        var fs = new CrashFileSystem();
        Pool.Create(Dir, new PoolCreateOptions { BlockSize = 65536 }, fs).Value.Dispose();
        var pool = Pool.Open(Dir, fs).Value;
        pool.CreateVolume("v", 1 << 20).ThrowIfFailed();
        var dev = pool.OpenDevice("v").Value;
        dev.Write(100, Support.Pattern(100, 1)).ThrowIfFailed();
        fs.Capacity = fs.AllocatedBytes;
        var failed = dev.Write(2048, Support.Pattern(4096, 2));
        Support.AssertError(failed.Error, StorageErrorCode.NoSpace, "'v'");
        fs.Capacity = null;

        var buf = new byte[8192];
        Assert.True(dev.Read(0, buf).IsOk, "the block no longer reads after a failed write");
        pool.Flush().ThrowIfFailed();
        Support.AssertClean(pool.Check(), "after a failed in-place write:");
        pool.Dispose();
        Support.AssertClean(Pool.CheckDirectory(Dir, fs), "after a failed in-place write, reopened:");
    }

    [Fact]
    public void Create_DiskFull_FailsWithNoSpaceAndReleasesTheDirectory()
    {
        var fs = new CrashFileSystem { Capacity = 4096 };
        var created = Pool.Create(Dir, null, fs);
        Support.AssertError(created.Error, StorageErrorCode.NoSpace, Dir);
        fs.Capacity = null;
        var again = Pool.Create(Dir, null, fs);
        Assert.True(again.IsOk || again.Error.Code != StorageErrorCode.InUse, $"a failed create kept the pool locked: {again.Error?.Message}");
        var opened = again.IsOk ? again.Value : Pool.Open(Dir, fs).Value;
        opened.Dispose();
    }

    /// <summary>
    /// The states allowed after the crash: the last acknowledged one and every later prefix that was started (an engine
    /// may commit at any step boundary, e.g. a management operation first commits the writes before it).
    /// </summary>
    private sealed record Outcome(List<ReferenceModel> Allowed, int StepsRun);

    private static CrashFileSystem NewPool(int blockSize, long journalSize = 64L << 20)
    {
        var fs = new CrashFileSystem();
        Pool.Create(Dir, new PoolCreateOptions { BlockSize = blockSize, JournalSize = journalSize }, fs).Value.Dispose();
        return fs;
    }

    /// <summary>
    /// Opens the pool, arms the crash <paramref name="crashIn"/> I/O calls later, runs steps until the power fails (or
    /// cuts it after the last step) and abandons the pool.
    /// </summary>
    private static Outcome RunUntilPowerLoss(CrashFileSystem fs, int seed, int steps, WorkloadOptions options, long crashIn)
    {
        var opened = Pool.Open(Dir, fs).Value;
        var initial = ReferenceModel.FromPool(opened);
        fs.CrashAfter = fs.IoCalls + crashIn;
        var workload = new Workload(seed, initial, options);
        var executor = new OpExecutor(Dir, fs, opened);
        var allowed = new List<ReferenceModel> { initial };
        int run = 0;
        for (int i = 0; i < steps && !fs.Crashed; i++)
        {
            var op = workload.Next();
            run++;
            StorageError? error;
            try
            {
                error = executor.Execute(op);
            }
            catch (IOException) when (fs.Crashed)
            {
                error = new StorageError(StorageErrorCode.IoError, "simulated power loss");
            }
            catch (StorageException) when (fs.Crashed)
            {
                error = new StorageError(StorageErrorCode.IoError, "simulated power loss");
            }

            if (fs.Crashed && error is not null && error.Code != op.ExpectedError)
            {
                // The step failed because the power went: it may or may not have taken effect.
                allowed.Add(workload.Model.Copy());
                break;
            }

            Assert.True(error?.Code == op.ExpectedError, $"step {i} {op}: expected {op.ExpectedError?.ToString() ?? "success"}, got {error?.Message ?? "success"}");
            if (op.Commits && !(op.Kind == OpKind.Reopen && fs.Crashed))
            {
                allowed.Clear(); // acknowledged: nothing shorter may come back
            }

            allowed.Add(workload.Model.Copy());
        }

        fs.PowerOff();
        executor.Pool.Abandon();
        return new Outcome(allowed, run);
    }

    /// <summary>Reboots, then requires: check clean, open works, content equals one of the allowed states.</summary>
    private static CrashFileSystem Recover(CrashFileSystem fs, Random rng, Outcome outcome, string context)
    {
        var rebooted = fs.Reboot(rng);
        Support.AssertClean(Pool.CheckDirectory(Dir, rebooted), $"{context}: CheckDirectory after reboot:");
        var opened = Pool.Open(Dir, rebooted);
        Assert.True(opened.IsOk, $"{context}: open after reboot failed: {opened.Error?.Message}");
        var pool = opened.Value;
        Support.AssertClean(pool.Check(), $"{context}: check after reboot:");
        var diffs = outcome.Allowed.Select(m => m.Difference(pool)).ToList();
        Assert.True(
            diffs.Any(d => d is null),
            $"{context}: the pool matches no allowed state (the last acknowledged one first):\n{string.Join("\n", diffs)}");
        pool.Dispose();
        return rebooted;
    }
}
