namespace Dolly.Storage.Tests;

/// <summary>
/// The pool is documented thread-safe: parallel readers and writers on different volumes, snapshots taken and
/// deleted meanwhile (their freed blocks are hole-punched outside the pool lock), flushes. Every read and every
/// snapshot must match what its thread knows, and check must be clean at the end.
/// </summary>
public sealed class ConcurrencyTests
{
    private const int Bs = 65536;
    private const long VolumeSize = 24L << 20;

    [Fact]
    public void ParallelWritersWithSnapshotChurn_ReadsAndSnapshotsMatch_CheckClean()
    {
        using var tmp = new TempDir(memory: true);
        string dir = tmp.Sub("pool");
        int seed = Support.Seed(99);
        const int Writers = 3;
        var models = new byte[Writers][];
        var locks = new object[Writers];
        var failures = new System.Collections.Concurrent.ConcurrentQueue<string>();
        using (var pool = Pool.Create(dir, new PoolCreateOptions { BlockSize = Bs }).Value)
        {
            for (int w = 0; w < Writers; w++)
            {
                pool.CreateVolume($"v{w}", VolumeSize).ThrowIfFailed();
                models[w] = new byte[VolumeSize];
                locks[w] = new object();
            }

            using var stop = new CancellationTokenSource(TimeSpan.FromSeconds(6));
            var writers = Enumerable.Range(0, Writers).Select(w => new Thread(() =>
            {
                var rng = new Random(seed + w);
                var dev = pool.OpenDevice($"v{w}").Value;
                while (!stop.IsCancellationRequested)
                {
                    long offset = rng.NextInt64(VolumeSize - (3 * Bs));
                    int length = rng.Next(1, 3 * Bs);
                    var data = new byte[length];
                    rng.NextBytes(data);
                    bool trim = rng.Next(10) == 0;
                    bool fua = rng.Next(50) == 0;
                    lock (locks[w])
                    {
                        var r = trim ? dev.Trim(offset, length) : dev.Write(offset, data, fua);
                        if (!r.IsOk)
                        {
                            failures.Enqueue($"v{w} write: {r.Error}");
                            return;
                        }

                        if (trim)
                        {
                            Array.Clear(models[w], (int)offset, length);
                        }
                        else
                        {
                            data.CopyTo(models[w], offset);
                        }
                    }

                    var check = new byte[rng.Next(1, 2 * Bs)];
                    long at = rng.NextInt64(VolumeSize - check.Length);
                    lock (locks[w])
                    {
                        var r = dev.Read(at, check);
                        if (!r.IsOk || !check.AsSpan().SequenceEqual(models[w].AsSpan((int)at, check.Length)))
                        {
                            failures.Enqueue($"v{w} read at {at}+{check.Length}: {(r.IsOk ? "wrong data" : r.Error)}");
                            return;
                        }
                    }
                }
            })).ToList();

            // Note: a writer's model update and its write are under one lock, so a snapshot taken under that lock
            // is exactly the model at that instant.
            var churn = new Thread(() =>
            {
                var rng = new Random(seed - 1);
                int n = 0;
                var live = new List<(string Name, int Volume, byte[] Content)>();
                while (!stop.IsCancellationRequested)
                {
                    int w = rng.Next(Writers);
                    string name = $"s{n++}";
                    lock (locks[w])
                    {
                        var r = pool.CreateSnapshot($"v{w}", name);
                        if (!r.IsOk)
                        {
                            failures.Enqueue($"snapshot {name}: {r.Error}");
                            return;
                        }

                        live.Add((name, w, (byte[])models[w].Clone()));
                    }

                    if (live.Count > 3)
                    {
                        var victim = live[rng.Next(live.Count)];
                        var content = Support.ReadAll(pool, victim.Name);
                        if (!content.AsSpan().SequenceEqual(victim.Content))
                        {
                            failures.Enqueue($"snapshot {victim.Name} of v{victim.Volume} does not hold its point in time");
                            return;
                        }

                        pool.Delete(victim.Name).ThrowIfFailed();
                        live.Remove(victim);
                    }

                    if (rng.Next(4) == 0)
                    {
                        pool.Flush().ThrowIfFailed();
                    }
                }
            });

            writers.ForEach(t => t.Start());
            churn.Start();
            writers.ForEach(t => t.Join());
            churn.Join();
            Assert.True(failures.IsEmpty, string.Join("\n", failures));
            Support.AssertClean(pool.Check(), "after the concurrent run:");
            for (int w = 0; w < Writers; w++)
            {
                Assert.True(Support.ReadAll(pool, $"v{w}").AsSpan().SequenceEqual(models[w]), $"v{w} differs at the end");
            }
        }

        using var reopened = Pool.Open(dir).Value;
        Support.AssertClean(reopened.Check(), "after reopening:");
        for (int w = 0; w < Writers; w++)
        {
            Assert.True(Support.ReadAll(reopened, $"v{w}").AsSpan().SequenceEqual(models[w]), $"v{w} differs after reopening");
        }
    }
}
