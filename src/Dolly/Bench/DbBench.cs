using System.Diagnostics;
using System.Globalization;
using Dolly.Nbd;
using Dolly.Storage;

namespace Dolly.Bench;

/// <summary>The sizes of one <c>dolly bench db</c> run.</summary>
internal sealed record DbBenchOptions(long VolumeSize, int Scale, int Rounds, TimeSpan RoundTime, TimeSpan SnapshotInterval, int Clients, int Threads)
{
    /// <summary>Seconds, not minutes: proves the whole stack comes up, runs and goes away; the figures mean nothing.</summary>
    public static DbBenchOptions Quick { get; } = new(512L << 20, Scale: 1, Rounds: 1, TimeSpan.FromSeconds(3), TimeSpan.FromSeconds(1), Clients: 4, Threads: 2);
}

/// <summary>
/// <c>dolly bench db</c>: PostgreSQL with its data directory on ext4 over nbdfuse and a loop device, once
/// over Dolly's NBD server and once over nbdkit's file plugin serving a plain file in the same directory;
/// pgbench rounds alternate between the two (and a third stack state: Dolly with an engine snapshot of the
/// volume every few seconds, as a VolumeSnapshot schedule would take), so drift on a noisy machine hits
/// all alike. Medians of the rounds are compared.
/// </summary>
internal sealed class DbBench(string root, DbBenchOptions options, DbTools tools, Action<string> log)
{
    private const string Volume = "db";
    private const string Group = "PostgreSQL pgbench (ext4 on nbdfuse + loop)";

    private readonly List<string> _leftovers = [];

    /// <summary>What the run could not clean up (a mount, a loop device, a server), each with its manual command.</summary>
    public IReadOnlyList<string> Leftovers => _leftovers;

    public async Task<IReadOnlyList<BenchFigure>> RunAsync(CancellationToken ct)
    {
        string raw = Path.Combine(root, "plain.raw");
        using (var f = File.Create(raw))
        {
            f.SetLength(options.VolumeSize);
        }

        string kitSocket = Path.Combine(root, "kit.sock");
        string dollySocket = Path.Combine(root, "dolly.sock");
        using var pool = Pool.Create(Path.Combine(root, "pool")).OrFail();
        pool.CreateVolume(Volume, options.VolumeSize).OrFail();
        var server = new NbdServer(new ExportCatalog(pool), new NbdServerOptions { UnixSocketPath = dollySocket });
        // Not --exit-with-parent: nbdkit ties it to the parent *thread* (PR_SET_PDEATHSIG), and the thread-pool
        // thread that started it can retire mid-run, which takes the baseline's disk away (EIO in PostgreSQL).
        // The finally below kills it.
        using var kit = BenchProcess.StartBackground(tools.Setsid, [tools.Nbdkit, "--foreground", "-U", kitSocket, "file", raw], new System.Text.StringBuilder());
        DbStack? dolly = null, plain = null;
        try
        {
            server.Start();
            await NbdBench.WaitForSocketAsync(kitSocket, ct).ConfigureAwait(false);
            dolly = new DbStack("dolly", Path.Combine(root, "dolly"), tools, log);
            await dolly.StartAsync($"nbd+unix:///{Volume}?socket={dollySocket}", ct).ConfigureAwait(false);
            plain = new DbStack("nbdkit", Path.Combine(root, "nbdkit"), tools, log);
            await plain.StartAsync($"nbd+unix:///?socket={kitSocket}", ct).ConfigureAwait(false);

            log($"pgbench -i -s {options.Scale} on dolly and nbdkit");
            double initDolly = await dolly.InitAsync(options.Scale, ct).ConfigureAwait(false);
            double initKit = await plain.InitAsync(options.Scale, ct).ConfigureAwait(false);

            var tpsDolly = new List<double>();
            var tpsKit = new List<double>();
            var tpsSnap = new List<double>();
            var snapshotMs = new List<double>();
            for (int round = 1; round <= options.Rounds; round++)
            {
                tpsDolly.Add(await RoundAsync(dolly, round, "dolly", ct).ConfigureAwait(false));
                tpsKit.Add(await RoundAsync(plain, round, "nbdkit", ct).ConfigureAwait(false));
                tpsSnap.Add(await SnapshotRoundAsync(pool, dolly, round, snapshotMs, ct).ConfigureAwait(false));
            }

            return Figures(tpsDolly, tpsKit, tpsSnap, snapshotMs, initDolly, initKit);
        }
        finally
        {
            // Stacks first: their unmounts flush through nbdfuse to servers that must still be up.
            foreach (var stack in new[] { plain, dolly })
            {
                if (stack is not null)
                {
                    await stack.DisposeAsync().ConfigureAwait(false);
                    _leftovers.AddRange(stack.Leftovers);
                }
            }

            BenchProcess.Kill(kit);
            await server.DisposeAsync().ConfigureAwait(false);
        }
    }

    private async Task<double> RoundAsync(DbStack stack, int round, string label, CancellationToken ct)
    {
        log($"round {round}/{options.Rounds}: pgbench on {label}");
        double tps = await stack.PgbenchAsync(options.Clients, options.Threads, options.RoundTime, ct).ConfigureAwait(false);
        await stack.CheckpointAsync(ct).ConfigureAwait(false);
        log($"round {round}/{options.Rounds}: {label} {tps:0} TPS");
        return tps;
    }

    /// <summary>
    /// A Dolly round with a snapshot of the volume every <see cref="DbBenchOptions.SnapshotInterval"/>; the
    /// snapshots are deleted after the round so every round starts from the same sharing state.
    /// </summary>
    private async Task<double> SnapshotRoundAsync(Pool pool, DbStack stack, int round, List<double> snapshotMs, CancellationToken ct)
    {
        var taken = new List<string>();
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(ct);
        var snapshots = Task.Run(
            async () =>
            {
                using var timer = new PeriodicTimer(options.SnapshotInterval);
                try
                {
                    while (await timer.WaitForNextTickAsync(stop.Token).ConfigureAwait(false))
                    {
                        string name = $"round{round}-snap{taken.Count + 1}";
                        var started = Stopwatch.GetTimestamp();
                        pool.CreateSnapshot(Volume, name).OrFail();
                        lock (snapshotMs)
                        {
                            snapshotMs.Add(Stopwatch.GetElapsedTime(started).TotalMilliseconds);
                        }

                        taken.Add(name);
                    }
                }
                catch (OperationCanceledException) when (stop.IsCancellationRequested)
                {
                    // The round is over.
                }
            },
            CancellationToken.None);
        double tps;
        try
        {
            tps = await RoundAsync(stack, round, "dolly with snapshots", ct).ConfigureAwait(false);
        }
        finally
        {
            await stop.CancelAsync().ConfigureAwait(false);
            await snapshots.ConfigureAwait(false);
            foreach (var name in taken)
            {
                pool.Delete(name).OrFail();
            }
        }

        log($"round {round}/{options.Rounds}: {taken.Count} snapshots taken during the round, deleted again");
        return tps;
    }

    private List<BenchFigure> Figures(List<double> tpsDolly, List<double> tpsKit, List<double> tpsSnap, List<double> snapshotMs, double initDolly, double initKit)
    {
        double d = BenchReport.Median(tpsDolly), k = BenchReport.Median(tpsKit), s = BenchReport.Median(tpsSnap);
        string shape = string.Create(
            CultureInfo.InvariantCulture,
            $"scale {options.Scale}, -c {options.Clients} -j {options.Threads} -T {options.RoundTime.TotalSeconds:0}, {options.Rounds} rounds, medians");
        var figures = new List<BenchFigure>
        {
            new(Group, "TPS: dolly / nbdkit", d / k, "ratio", string.Create(CultureInfo.InvariantCulture, $"{d:0} vs {k:0} TPS = {d / k:0.00}"), ">= 1.0", d / k >= 1.0, shape, Rounds("dolly", tpsDolly, "nbdkit", tpsKit)),
            new(
                Group,
                $"TPS with a snapshot every {options.SnapshotInterval.TotalSeconds:0} s / without (dolly)",
                s / d,
                "ratio",
                string.Create(CultureInfo.InvariantCulture, $"{s:0} vs {d:0} TPS = {s / d:0.00}"),
                ">= 0.8",
                s / d >= 0.8,
                $"{snapshotMs.Count} snapshots in all, deleted after each round",
                Rounds("with_snapshots", tpsSnap, "without", tpsDolly)),
            new(Group, "pgbench -i time: dolly / nbdkit", initDolly / initKit, "ratio", string.Create(CultureInfo.InvariantCulture, $"{initDolly:0.0} s vs {initKit:0.0} s"), null, null, "lower is better for Dolly"),
        };
        if (snapshotMs.Count > 0)
        {
            double p50 = BenchReport.Median(snapshotMs), max = snapshotMs.Max();
            figures.Add(new(Group, "snapshot create during pgbench, p50", p50, "ms", $"{BenchReport.Ms(p50)} (max {BenchReport.Ms(max)})", null, null));
        }

        return figures;
    }

    private static Dictionary<string, double> Rounds(string a, List<double> first, string b, List<double> second)
    {
        var details = new Dictionary<string, double>();
        for (int i = 0; i < first.Count; i++)
        {
            details[$"{a}_tps_round{i + 1}"] = first[i];
            details[$"{b}_tps_round{i + 1}"] = second[i];
        }

        return details;
    }
}
