using System.Diagnostics;
using System.Globalization;
using Dolly.Storage.CrashWorker;

namespace Dolly.Storage.Tests;

/// <summary>
/// A child process (Dolly.Storage.CrashWorker) runs seeded random work on a real pool directory and is SIGKILLed at
/// random moments; after each kill the pool must open, check clean, and equal the replayed model after some prefix
/// of the steps no shorter than the last acknowledged commit (the worker reports every step, and which are acknowledged). Rounds chain on the same pool (each continues from the
/// recovered state) and start a fresh pool every 25 rounds. DOLLY_CRASH_ROUNDS sets the rounds (default 150).
/// </summary>
public sealed class ProcessCrashTests
{
    private static int Rounds => Support.EnvInt("DOLLY_CRASH_ROUNDS", 150);

    [Fact]
    public void Worker_KilledAtRandomMoments_PoolRecoversToAcknowledgedPrefix()
    {
        string worker = Path.Combine(AppContext.BaseDirectory, "Dolly.Storage.CrashWorker.dll");
        Assert.True(File.Exists(worker), $"worker not found at {worker}");
        using var tmp = new TempDir(memory: true);
        int baseSeed = Support.Seed(1234);
        var rng = new Random(baseSeed);
        string dir = "";
        int blockSize = 4096;
        int kills = 0;
        for (int round = 0; round < Rounds; round++)
        {
            if (round % 25 == 0)
            {
                blockSize = round % 50 == 0 ? 4096 : 65536;
                dir = tmp.Sub($"pool{round}");
                Pool.Create(dir, new PoolCreateOptions { BlockSize = blockSize, JournalSize = blockSize == 4096 ? 64L << 20 : 128 << 10 }).Value.Dispose();
            }

            int seed = rng.Next();
            string saved = tmp.Sub("before");
            CopyDirectory(dir, saved);
            // Mostly more steps than the worker finishes before the kill; now and then a short run that ends normally.
            int steps = rng.Next(8) == 0 ? rng.Next(1, 30) : 5000;
            ReferenceModel initial;
            using (var pool = Pool.Open(dir).Value)
            {
                initial = ReferenceModel.FromPool(pool);
            }

            // Kill after a random number of reported steps, or after a random delay, whichever the round picks.
            bool byLines = rng.Next(2) == 0;
            int killAtLine = rng.Next(0, 60);
            int killAfterMs = rng.Next(0, 80);
            var run = RunWorker(worker, dir, seed, steps, blockSize, byLines ? killAtLine : -1, byLines ? -1 : killAfterMs);
            kills += run.Killed ? 1 : 0;
            string context = $"base seed {baseSeed}, round {round}, worker seed {seed}, {steps} steps, block size {blockSize}, " +
                $"acked through {run.LastAcked}, last reported {run.LastDone}, killed={run.Killed}, exit {run.ExitCode}";
            Assert.True(run.Error is null, $"{context}: worker reported an unexpected result: {run.Error}");
            Assert.True(run.Killed || run.ExitCode == 0, $"{context}: worker failed: {run.StdErr}");

            var report = Pool.CheckDirectory(dir);
            Support.AssertClean(report, $"{context}:");
            using var reopened = Pool.Open(dir).Value;
            Support.AssertClean(reopened.Check(), $"{context}:");
            var candidates = Candidates(seed, initial, blockSize, run);
            var diffs = candidates.Select(c => (c.Step, Diff: c.Model.Difference(reopened))).ToList();
            if (!diffs.Any(d => d.Diff is null))
            {
                CopyDirectory(saved, "/tmp/dolly-crash-failure/before");
                CopyDirectory(dir, "/tmp/dolly-crash-failure/after");
                var probe = new Workload(seed, initial, WorkerOptions(blockSize));
                var recent = Enumerable.Range(0, run.LastDone + 2).Select(i => $"{i}: {probe.Next()}").TakeLast(8);
                Assert.Fail(
                    $"{context}: the pool matches no allowed state:\n{string.Join("\n", diffs.Select(d => $"after step {d.Step}: {d.Diff}"))}\n" +
                    $"steps:\n{string.Join("\n", recent)}\ninitial devices: {string.Join(", ", initial.Devices.Keys)}");
            }
        }

        Assert.True(kills >= Rounds / 3, $"only {kills} of {Rounds} rounds ended in a kill");
    }

    private static void CopyDirectory(string from, string to)
    {
        if (Directory.Exists(to))
        {
            Directory.Delete(to, recursive: true);
        }

        Directory.CreateDirectory(to);
        foreach (var f in Directory.GetFiles(from).Where(f => !f.EndsWith("pool.lock", StringComparison.Ordinal)))
        {
            File.Copy(f, Path.Combine(to, Path.GetFileName(f)));
        }
    }

    private sealed record WorkerRun(int LastAcked, int LastDone, bool Killed, int ExitCode, string? Error, string StdErr, List<string> Steps);

    /// <summary>
    /// The states the pool may be in: after any prefix of the steps from the last acknowledged one up to one step past
    /// the last one reported (it may have finished, or its commit landed, before the kill). A worker that exited
    /// normally disposed the pool, which commits everything: then only the state after its last step is allowed.
    /// </summary>
    private static List<(int Step, ReferenceModel Model)> Candidates(int seed, ReferenceModel initial, int blockSize, WorkerRun run)
    {
        var workload = new Workload(seed, initial, WorkerOptions(blockSize));
        var result = new List<(int, ReferenceModel)>();
        if (run.LastAcked < 0 && run.Killed)
        {
            result.Add((-1, initial.Copy()));
        }

        int last = run.Killed ? run.LastDone + 1 : run.LastDone;
        for (int i = 0; i <= last; i++)
        {
            var op = workload.Next();
            if (i < run.Steps.Count && run.Steps[i] != op.ToString())
            {
                Assert.Fail($"step {i}: the worker ran '{run.Steps[i]}' but the replay generated '{op}'");
            }

            if (run.Killed ? i >= run.LastAcked : i == last)
            {
                result.Add((i, workload.Model.Copy()));
            }
        }

        return result;
    }

    /// <summary>Must equal the options in the worker's Program.cs.</summary>
    private static WorkloadOptions WorkerOptions(int blockSize) => new()
    {
        BlockSize = blockSize,
        MaxVolumeBytes = 256 * 1024,
        MaxDevices = 8,
        Abandon = false,
        Reopen = true,
        Check = false,
    };

    private static WorkerRun RunWorker(string worker, string dir, int seed, int steps, int blockSize, int killAtLine, int killAfterMs)
    {
        var psi = new ProcessStartInfo("dotnet")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (var a in new[] { worker, dir, seed.ToString(CultureInfo.InvariantCulture), steps.ToString(CultureInfo.InvariantCulture), blockSize.ToString(CultureInfo.InvariantCulture) })
        {
            psi.ArgumentList.Add(a);
        }

        using var process = Process.Start(psi)!;
        var stderrTask = process.StandardError.ReadToEndAsync();
        int lastAcked = -1, lastDone = -1, lines = 0;
        var reported = new List<string>();
        string? error = null;
        string? line = process.StandardOutput.ReadLine();
        if (line?.StartsWith("READY", StringComparison.Ordinal) != true)
        {
            // (stderr is awaited only here: waiting for it earlier would block until the worker exits.)
            Assert.Fail($"worker did not start: {line} {stderrTask.Result}");
        }
        Thread? timer = null;
        if (killAfterMs >= 0)
        {
            timer = new Thread(() =>
            {
                Thread.Sleep(killAfterMs);
                Kill(process);
            });
            timer.Start();
        }

        if (killAtLine == 0)
        {
            Kill(process);
        }

        while ((line = process.StandardOutput.ReadLine()) is not null)
        {
            lines++;
            var parts = line.Split(' ', 3);
            switch (parts[0])
            {
                case "A":
                    lastAcked = lastDone = int.Parse(parts[1], CultureInfo.InvariantCulture);
                    reported.Add(parts[2]);
                    break;
                case "D":
                    lastDone = int.Parse(parts[1], CultureInfo.InvariantCulture);
                    reported.Add(parts[2]);
                    break;
                case "E":
                    error = line;
                    break;
                default:
                    break;
            }

            if (lines == killAtLine)
            {
                Kill(process);
            }
        }

        Assert.True(process.WaitForExit(60_000), "worker did not exit");
        timer?.Join();

        // A kill that raced with a normal exit did not interrupt anything.
        bool killed = process.ExitCode != 0 && error is null;
        return new WorkerRun(lastAcked, lastDone, killed, process.ExitCode, error, stderrTask.Result, reported);
    }

    /// <summary>SIGKILL (Process.Kill on Unix): no code of the worker runs afterwards.</summary>
    private static void Kill(Process process)
    {
        try
        {
            process.Kill();
        }
        catch (InvalidOperationException)
        {
            // Already exited.
        }
    }
}
