using Dolly.Storage.CrashWorker;
using Dolly.Storage.IO;

namespace Dolly.Storage.Tests;

/// <summary>
/// Long seeded random sequences applied to the engine and to the plain in-memory <see cref="ReferenceModel"/>; every
/// read, the device list, ranges and check must agree. DOLLY_MODEL_OPS sets the steps per run (default 1500),
/// DOLLY_SEED the base seed. A failure names the seed and step so it can be replayed.
/// </summary>
public sealed class ModelBasedTests
{
    private static int Ops => Support.EnvInt("DOLLY_MODEL_OPS", 1500);

    [Theory]
    [InlineData(4096, 1)]
    [InlineData(4096, 2)]
    [InlineData(16384, 3)]
    [InlineData(16384, 4)]
    [InlineData(65536, 5)]
    public void RandomOperations_InMemoryFileSystem_MatchReferenceModel(int blockSize, int seed)
    {
        Run(new CrashFileSystem(), "/pool", blockSize, Support.Seed(seed) * 7919 + blockSize, Ops);
    }

    [Fact]
    public void RandomOperations_RealFileSystem_MatchReferenceModel()
    {
        using var tmp = new TempDir();
        Run(PhysicalFileSystem.Instance, tmp.Sub("pool"), 16384, Support.Seed(11), Ops / 3);
    }

    [Fact]
    public void RandomOperations_LargeVolumesDefaultBlockSize_MatchReferenceModel()
    {
        // Fewer, bigger devices with the 64 KiB default: deeper trees per device, multi-block I/O.
        var options = new WorkloadOptions { BlockSize = 65536, MaxVolumeBytes = 4 << 20, MaxDevices = 6, Abandon = true };
        Run(new CrashFileSystem(), "/pool", 65536, Support.Seed(21), Ops / 2, options);
    }

    private static void Run(IFileSystem fs, string dir, int blockSize, int seed, int ops, WorkloadOptions? options = null)
    {
        options ??= new WorkloadOptions { BlockSize = blockSize, MaxVolumeBytes = blockSize <= 4096 ? 256 * 1024 : 768 * 1024, Abandon = true };
        var rng = new Random(seed ^ 0x5EED);
        var workload = new Workload(seed, new ReferenceModel(), options);
        var executor = new OpExecutor(dir, fs, Pool.Create(dir, new PoolCreateOptions { BlockSize = blockSize }, fs).Value);
        var recent = new Queue<string>();
        int step = 0;
        try
        {
            for (step = 0; step < ops; step++)
            {
                var op = workload.Next();
                recent.Enqueue($"{step}: {op}");
                if (recent.Count > 12)
                {
                    recent.Dequeue();
                }

                if (op.Kind == OpKind.Abandon)
                {
                    executor.Pool.Abandon();
                    executor.Replace(Pool.Open(dir, fs).Value);
                    Support.AssertClean(executor.Pool.Check(), "after abandon:");
                    AssertMatches(executor.Pool, workload.Model, "after abandon (state of the last commit)");
                    continue;
                }

                var error = executor.Execute(op);
                Assert.True(error?.Code == op.ExpectedError, $"expected {op.ExpectedError?.ToString() ?? "success"}, got {error?.Code.ToString() ?? "success"}: {error?.Message}");
                if (error is not null)
                {
                    // A refused request names what it refused.
                    Assert.True(
                        error.Message.Contains(op.Name, StringComparison.Ordinal) || (op.Name2 is not null && error.Message.Contains(op.Name2, StringComparison.Ordinal)),
                        $"error message names neither '{op.Name}' nor '{op.Name2}': {error.Message}");
                }

                if (op.Kind == OpKind.Reopen)
                {
                    Support.AssertClean(executor.Pool.Check(), "after reopen:");
                    AssertMatches(executor.Pool, workload.Model, "after reopen");
                }

                RandomRead(executor.Pool, workload.Model, rng);
                if (step % 97 == 0)
                {
                    AssertMatches(executor.Pool, workload.Model, "periodic comparison");
                    var rangeProblem = Support.RangeProblem(executor.Pool, workload.Model, rng, pairs: 4);
                    Assert.True(rangeProblem is null, rangeProblem);
                    CheckSpace(executor.Pool, workload.Model);
                }
            }

            AssertMatches(executor.Pool, workload.Model, "at the end");
            Support.AssertClean(executor.Pool.Check(), "at the end:");
            Assert.Null(Support.RangeProblem(executor.Pool, workload.Model, rng, pairs: 20));

            // Deleting everything returns every block.
            foreach (var name in workload.Model.Devices.Keys.ToList())
            {
                executor.Pool.Delete(name).ThrowIfFailed();
            }

            Assert.Equal(0, executor.Pool.GetInfo().DataBlocksUsed);
            Support.AssertClean(executor.Pool.Check(), "after deleting everything:");
            executor.Dispose();
            Support.AssertClean(Pool.CheckDirectory(dir, fs), "directory after deleting everything:");
        }
        catch (Exception ex) when (ex is not OutOfMemoryException)
        {
            throw new InvalidOperationException(
                $"model test failed: workload seed {seed}, block size {blockSize}, step {step} (rerun the same test with the same DOLLY_SEED and DOLLY_MODEL_OPS; DOLLY_SEED now {Environment.GetEnvironmentVariable("DOLLY_SEED") ?? "unset"})\nlast steps:\n{string.Join("\n", recent)}\n{ex.Message}",
                ex);
        }
    }

    private static void AssertMatches(Pool pool, ReferenceModel model, string when)
    {
        var diff = model.Difference(pool);
        Assert.True(diff is null, $"{when}: {diff}");
    }

    private static void RandomRead(Pool pool, ReferenceModel model, Random rng)
    {
        if (model.Devices.Count == 0)
        {
            return;
        }

        var d = model.Devices.Values.ElementAt(rng.Next(model.Devices.Count));
        long offset = rng.NextInt64(d.Size);
        int length = (int)Math.Min(d.Size - offset, rng.Next(1, 70_000));
        var buf = new byte[length];
        pool.OpenDevice(d.Name).Value.Read(offset, buf).ThrowIfFailed();
        int at = buf.AsSpan().CommonPrefixLength(d.Content.Slice((int)offset, length));
        Assert.True(at == length, $"read of '{d.Name}' at {offset}+{length} differs from the model at byte {offset + at}");
    }

    private static void CheckSpace(Pool pool, ReferenceModel model)
    {
        long exclusiveSum = 0;
        foreach (var d in model.Devices.Values)
        {
            var space = pool.GetSpace(d.Name).Value;
            Assert.Equal(d.Size, space.Logical);
            Assert.InRange(space.Exclusive, 0, space.Allocated);
            Assert.Equal(0, space.Allocated % pool.BlockSize);
            long rangeBytes = pool.GetAllocatedRanges(d.Name).Value.Sum(r => r.Length);
            Assert.True(rangeBytes <= space.Allocated, $"'{d.Name}': allocated ranges span {rangeBytes} bytes but only {space.Allocated} are allocated");
            exclusiveSum += space.Exclusive;
        }

        long used = pool.GetInfo().DataBlocksUsed * pool.BlockSize;
        Assert.True(exclusiveSum <= used, $"exclusive bytes add up to {exclusiveSum}, more than the {used} bytes of blocks in use");
    }
}
