using System.Diagnostics;
using System.Text.Json;
using Dolly.Controllers.Model;
using k8s;
using k8s.Models;

namespace Dolly.Bench;

/// <summary>How much work <c>bench scale</c> does.</summary>
/// <param name="Objects">Unrelated VolumeSnapshots present in the last phase (the figure is 10,000).</param>
/// <param name="Baseline">Unrelated VolumeSnapshots present in the middle phase (the CPU baseline).</param>
/// <param name="Namespaces">Namespaces the unrelated snapshots are spread over, one source claim each.</param>
/// <param name="Rounds">Measured rounds per phase, each one snapshot and one restore.</param>
/// <param name="WarmUp">Unmeasured rounds at the start of each phase.</param>
/// <param name="Parallelism">Unrelated snapshots applied at once while filling.</param>
internal sealed record ScaleSizes(int Objects, int Baseline, int Namespaces, int Rounds, int WarmUp, int Parallelism)
{
    public static ScaleSizes Full { get; } = new(Objects: 10_000, Baseline: 100, Namespaces: 100, Rounds: 30, WarmUp: 3, Parallelism: 16);

    public static ScaleSizes Quick { get; } = new(Objects: 200, Baseline: 20, Namespaces: 4, Rounds: 3, WarmUp: 1, Parallelism: 8);
}

/// <summary>
/// <c>dolly bench scale</c>: what the control plane costs per event as the cluster grows. <c>dolly up</c> runs
/// in-process on a scratch pool; the same rounds (one VolumeSnapshot apply -> readyToUse, one restore claim apply
/// -> Bound, seen through watches) run with no unrelated snapshots, with <see cref="ScaleSizes.Baseline"/> and with
/// <see cref="ScaleSizes.Objects"/> ready VolumeSnapshots of other claims in other namespaces present; then
/// <c>kubectl get volumesnapshots -A</c> over them all. CPU is the whole process's (API server, controllers, CSI
/// driver, engine and this client), per round.
/// </summary>
internal sealed class ScaleBench(string root, ScaleSizes sizes, bool verbose, string? kubectl, Action<string> log)
{
    private const string Ns = "scale";
    private const string Source = "source";
    private const string RestoreFrom = "restore-from";
    private const string BulkClaim = "bulk-source";
    private const string SnapshotVersion = "v1";
    private const string SnapshotsPlural = "volumesnapshots";
    private static readonly TimeSpan WaitTimeout = TimeSpan.FromSeconds(60);
    private static readonly TimeSpan FillTimeout = TimeSpan.FromMinutes(60);

    private E2eStack _stack = null!;
    private E2eWatch<V1PersistentVolumeClaim> _claims = null!;
    private E2eWatch<VolumeSnapshot> _snapshots = null!;
    private int _bulk;
    private int _round;

    private Kubernetes Kube => _stack.Client;

    /// <summary>Latency and CPU of one phase.</summary>
    private sealed record Phase(int Present, List<double> Ready, List<double> Bound, double CpuMsPerRound);

    public Task<IReadOnlyList<BenchFigure>> RunAsync(CancellationToken ct) => E2eStack.ExplainApiFailuresAsync(() => RunStackAsync(ct));

    private async Task<IReadOnlyList<BenchFigure>> RunStackAsync(CancellationToken ct)
    {
        log("starting dolly up (API server, controllers, CSI driver, NBD server) on a scratch pool");
        await using var stack = await E2eStack.StartAsync(Path.Combine(root, "pool"), verbose, log, ct).ConfigureAwait(false);
        _stack = stack;
        await using var claims = stack.WatchAllClaims();
        await using var snapshots = new E2eWatch<VolumeSnapshot>(
            "VolumeSnapshot",
            async c =>
            {
                var list = (JsonElement)await Kube.CustomObjects.ListClusterCustomObjectAsync(Names.SnapshotGroup, SnapshotVersion, SnapshotsPlural, cancellationToken: c).ConfigureAwait(false);
                var items = list.GetProperty("items").EnumerateArray().Select(e => KubernetesJson.Deserialize<VolumeSnapshot>(e.GetRawText())).ToList();
                return (items, list.GetProperty("metadata").GetProperty("resourceVersion").GetString() ?? string.Empty);
            },
            WatchSnapshots);
        (_claims, _snapshots) = (claims, snapshots);
        await Task.WhenAll(claims.StartAsync(), snapshots.StartAsync()).ConfigureAwait(false);

        log($"applying the default classes, namespace {Ns} with a 1 GiB source claim, and {sizes.Namespaces} namespaces with one claim each for the unrelated snapshots");
        await Kube.StorageV1.CreateStorageClassAsync(DefaultClasses.StorageClass(), cancellationToken: ct).ConfigureAwait(false);
        await Kube.CustomObjects.CreateClusterCustomObjectAsync(DefaultClasses.SnapshotClass(), Names.SnapshotGroup, SnapshotVersion, "volumesnapshotclasses", cancellationToken: ct).ConfigureAwait(false);
        var bulkNamespaces = Enumerable.Range(0, sizes.Namespaces).Select(i => $"bulk-{i:000}").ToList();
        foreach (var ns in bulkNamespaces.Prepend(Ns))
        {
            await Kube.CoreV1.CreateNamespaceAsync(new V1Namespace { Metadata = new V1ObjectMeta { Name = ns } }, cancellationToken: ct).ConfigureAwait(false);
        }

        await CreateBoundAsync(Ns, Source, null, ct).ConfigureAwait(false);
        await CreateReadyAsync(Ns, RestoreFrom, Source, ct).ConfigureAwait(false);
        await Task.WhenAll(bulkNamespaces.Select(ns => CreateBoundAsync(ns, BulkClaim, null, ct))).ConfigureAwait(false);

        var phases = new List<Phase> { await MeasureAsync(ct).ConfigureAwait(false) };
        await FillAsync(bulkNamespaces, sizes.Baseline, ct).ConfigureAwait(false);
        phases.Add(await MeasureAsync(ct).ConfigureAwait(false));
        await FillAsync(bulkNamespaces, sizes.Objects, ct).ConfigureAwait(false);
        phases.Add(await MeasureAsync(ct).ConfigureAwait(false));

        GC.Collect();
        long resident;
        using (var self = Process.GetCurrentProcess())
        {
            resident = self.WorkingSet64;
        }

        var figures = Figures(phases, resident);
        if (await TimeKubectlAsync(ct).ConfigureAwait(false) is { } seconds)
        {
            int total = _bulk + 1 + ((sizes.WarmUp + sizes.Rounds) * phases.Count);
            figures.Add(new("kubectl", $"kubectl get volumesnapshots -A ({total} objects, median of 3)", seconds, "s", $"{BenchReport.Num(seconds)} s", "<= 0.5 s", seconds <= 0.5,
                "table output, through dolly up's API server while its controllers run"));
        }
        else
        {
            figures.Add(new("kubectl", "kubectl get volumesnapshots -A", 0, "s", "skipped", "<= 0.5 s", null, "kubectl not found"));
        }

        log("stopping dolly up");
        return figures;
    }

    private List<BenchFigure> Figures(List<Phase> phases, long resident)
    {
        var (none, baseline, full) = (phases[0], phases[1], phases[2]);
        double readyNone = BenchReport.Percentile(none.Ready, 50), readyFull = BenchReport.Percentile(full.Ready, 50);
        double boundNone = BenchReport.Percentile(none.Bound, 50), boundFull = BenchReport.Percentile(full.Bound, 50);
        double readyRatio = readyFull / readyNone;
        double cpuRatio = full.CpuMsPerRound / baseline.CpuMsPerRound;
        string snapshotGroup = $"VolumeSnapshot apply -> readyToUse, {sizes.Rounds} rounds per phase";
        string restoreGroup = $"restore claim apply -> Bound, {sizes.Rounds} rounds per phase";
        string cpuGroup = "process CPU per round (one snapshot and one restore)";
        var figures = new List<BenchFigure>
        {
            new(snapshotGroup, "p50, no unrelated snapshots", readyNone, "ms", BenchReport.Ms(readyNone), null, null, $"p99 {BenchReport.Ms(BenchReport.Percentile(none.Ready, 99))}"),
            new(snapshotGroup, $"p50, {baseline.Present} unrelated snapshots", BenchReport.Percentile(baseline.Ready, 50), "ms", BenchReport.Ms(BenchReport.Percentile(baseline.Ready, 50)), null, null),
            new(snapshotGroup, $"p50, {full.Present} unrelated snapshots", readyFull, "ms", BenchReport.Ms(readyFull), null, null, $"p99 {BenchReport.Ms(BenchReport.Percentile(full.Ready, 99))}"),
            new(snapshotGroup, $"{full.Present} / none (p50)", readyRatio, "ratio", BenchReport.Num(readyRatio), "<= 1.2x", readyRatio <= 1.2),
            new(restoreGroup, "p50, no unrelated snapshots", boundNone, "ms", BenchReport.Ms(boundNone), null, null, $"p99 {BenchReport.Ms(BenchReport.Percentile(none.Bound, 99))}"),
            new(restoreGroup, $"p50, {full.Present} unrelated snapshots", boundFull, "ms", BenchReport.Ms(boundFull), "<= 50 ms", boundFull <= 50, $"p99 {BenchReport.Ms(BenchReport.Percentile(full.Bound, 99))}"),
            new(cpuGroup, $"{baseline.Present} unrelated snapshots", baseline.CpuMsPerRound, "ms", BenchReport.Ms(baseline.CpuMsPerRound), null, null, "API server, controllers, CSI driver, engine and the bench's own client together"),
            new(cpuGroup, $"{full.Present} unrelated snapshots", full.CpuMsPerRound, "ms", BenchReport.Ms(full.CpuMsPerRound), null, null),
            new(cpuGroup, $"{full.Present} / {baseline.Present}", cpuRatio, "ratio", BenchReport.Num(cpuRatio), "within 1.5x", cpuRatio <= 1.5),
            new("memory", $"process working set with {full.Present} unrelated snapshots", resident, "bytes", Dolly.Storage.ByteSize.Format(resident), null, null, "the whole dolly process after a GC"),
        };
        return figures;
    }

    /// <summary>One phase: warm-up, then rounds of one snapshot and one restore, timed from the apply to the watch event.</summary>
    private async Task<Phase> MeasureAsync(CancellationToken ct)
    {
        log($"measuring with {_bulk} unrelated snapshots present: {sizes.WarmUp} warm-up + {sizes.Rounds} rounds");
        var ready = new List<double>();
        var bound = new List<double>();
        TimeSpan cpu = TimeSpan.Zero;
        for (int i = -sizes.WarmUp; i < sizes.Rounds; i++)
        {
            int n = _round++;
            TimeSpan before = ProcessorTime();
            long t0 = Stopwatch.GetTimestamp();
            long readyAt = await CreateReadyAsync(Ns, $"snap-{n:0000}", Source, ct).ConfigureAwait(false);
            long t1 = Stopwatch.GetTimestamp();
            long boundAt = await CreateBoundAsync(Ns, $"restore-{n:0000}", RestoreFrom, ct).ConfigureAwait(false);
            if (i >= 0)
            {
                cpu += ProcessorTime() - before;
                ready.Add(Stopwatch.GetElapsedTime(t0, readyAt).TotalMilliseconds);
                bound.Add(Stopwatch.GetElapsedTime(t1, boundAt).TotalMilliseconds);
            }
        }

        return new Phase(_bulk, ready, bound, cpu.TotalMilliseconds / sizes.Rounds);
    }

    /// <summary>Adds unrelated snapshots, spread over the bulk namespaces, until <paramref name="total"/> are ready.</summary>
    private async Task FillAsync(List<string> namespaces, int total, CancellationToken ct)
    {
        int from = _bulk;
        log($"applying {total - from} more unrelated VolumeSnapshots ({sizes.Parallelism} at once) and waiting until all {total} are ready");
        long t0 = Stopwatch.GetTimestamp();
        using var deadline = CancellationTokenSource.CreateLinkedTokenSource(ct);
        deadline.CancelAfter(FillTimeout);
        int done = 0;
        long lap = t0;
        try
        {
            await Parallel.ForAsync(from, total, new ParallelOptions { MaxDegreeOfParallelism = sizes.Parallelism, CancellationToken = deadline.Token }, async (i, c) =>
            {
                string ns = namespaces[i % namespaces.Count];
                await CreateReadyAsync(ns, $"bulk-{i:00000}", BulkClaim, c).ConfigureAwait(false);

                // The rate per thousand shows whether each snapshot costs more as the cluster grows.
                int n = Interlocked.Increment(ref done);
                if (n % 1000 == 0)
                {
                    long now = Stopwatch.GetTimestamp();
                    long last = Interlocked.Exchange(ref lap, now);
                    log($"{from + n} ready; the last 1000 at {1000 / Stopwatch.GetElapsedTime(last, now).TotalSeconds:0} a second");
                }
            }).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (!ct.IsCancellationRequested)
        {
            throw new CliFailureException(ExitCodes.Unexpected, $"{from + Volatile.Read(ref done)} of {total} unrelated snapshots were ready {FillTimeout.TotalMinutes:0} minutes after the first was applied; rerun with --verbose to see the controllers' log");
        }

        _bulk = total;
        double seconds = Stopwatch.GetElapsedTime(t0).TotalSeconds;
        log($"{total - from} snapshots ready in {seconds:0.0} s ({(total - from) / seconds:0} a second)");
    }

    // ---- objects ------------------------------------------------------------------------------------

    /// <summary>Applies a VolumeSnapshot of a claim and returns when the watch shows it ready.</summary>
    private async Task<long> CreateReadyAsync(string ns, string name, string claim, CancellationToken ct)
    {
        var done = _snapshots.Expect(ns, name, s => s.Status?.ReadyToUse == true);
        await Kube.CustomObjects.CreateNamespacedCustomObjectAsync(
            new VolumeSnapshot
            {
                Metadata = new V1ObjectMeta { Name = name, NamespaceProperty = ns },
                Spec = new VolumeSnapshotSpec { Source = new VolumeSnapshotSource { PersistentVolumeClaimName = claim } },
            },
            Names.SnapshotGroup,
            SnapshotVersion,
            ns,
            SnapshotsPlural,
            cancellationToken: ct).ConfigureAwait(false);
        return await WaitAsync(done, $"VolumeSnapshot {ns}/{name}", "status.readyToUse true", () => Status(_snapshots.Last(ns, name)?.Status), ct).ConfigureAwait(false);
    }

    /// <summary>Applies a 1 GiB claim of the default class (restoring from a snapshot in its namespace when named) and returns when the watch shows it Bound.</summary>
    private async Task<long> CreateBoundAsync(string ns, string name, string? snapshot, CancellationToken ct)
    {
        var done = _claims.Expect(ns, name, c => c.Status?.Phase == "Bound");
        var spec = new V1PersistentVolumeClaimSpec
        {
            StorageClassName = DefaultClasses.StorageClassName,
            AccessModes = ["ReadWriteOnce"],
            Resources = new V1VolumeResourceRequirements { Requests = new Dictionary<string, ResourceQuantity> { ["storage"] = new ResourceQuantity("1Gi") } },
            DataSource = snapshot is null ? null : new V1TypedLocalObjectReference { ApiGroup = Names.SnapshotGroup, Kind = Names.SnapshotKind, Name = snapshot },
        };
        await Kube.CoreV1.CreateNamespacedPersistentVolumeClaimAsync(
            new V1PersistentVolumeClaim { ApiVersion = "v1", Kind = Names.ClaimKind, Metadata = new V1ObjectMeta { Name = name, NamespaceProperty = ns }, Spec = spec },
            ns,
            cancellationToken: ct).ConfigureAwait(false);
        return await WaitAsync(done, $"PersistentVolumeClaim {ns}/{name}", "status.phase Bound", () => Status(_claims.Last(ns, name)?.Status), ct).ConfigureAwait(false);
    }

    // ---- helpers ------------------------------------------------------------------------------------

    private async IAsyncEnumerable<(WatchEventType, VolumeSnapshot)> WatchSnapshots(string rv, [System.Runtime.CompilerServices.EnumeratorCancellation] CancellationToken ct)
    {
        await foreach (var (type, item) in Kube.CustomObjects.WatchListClusterCustomObjectAsync(
            Names.SnapshotGroup, SnapshotVersion, SnapshotsPlural, allowWatchBookmarks: true, resourceVersion: rv, timeoutSeconds: 3600, cancellationToken: ct).ConfigureAwait(false))
        {
            yield return (type, item is JsonElement e ? KubernetesJson.Deserialize<VolumeSnapshot>(e.GetRawText()) : KubernetesJson.Deserialize<VolumeSnapshot>(KubernetesJson.Serialize(item)));
        }
    }

    /// <summary>Median wall time of three <c>kubectl get volumesnapshots -A</c> runs against dolly up; null without kubectl.</summary>
    private async Task<double?> TimeKubectlAsync(CancellationToken ct)
    {
        string? path = kubectl is null ? null : kubectl.Contains('/', StringComparison.Ordinal) ? (File.Exists(kubectl) ? kubectl : null) : NbdBench.FindOnPath(kubectl);
        if (path is null)
        {
            return null;
        }

        log("timing kubectl get volumesnapshots -A (3 runs)");
        var times = new List<double>();
        for (int i = 0; i < 3; i++)
        {
            var start = new ProcessStartInfo(path) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
            foreach (var arg in new[] { "--kubeconfig", _stack.KubeconfigPath, "get", "volumesnapshots", "-A" })
            {
                start.ArgumentList.Add(arg);
            }

            long t0 = Stopwatch.GetTimestamp();
            using var process = Process.Start(start) ?? throw new CliFailureException(ExitCodes.Unexpected, $"cannot start {path}");
            var output = process.StandardOutput.ReadToEndAsync(ct);
            var error = process.StandardError.ReadToEndAsync(ct);
            await process.WaitForExitAsync(ct).ConfigureAwait(false);
            double seconds = Stopwatch.GetElapsedTime(t0).TotalSeconds;
            await output.ConfigureAwait(false);
            if (process.ExitCode != 0)
            {
                throw new CliFailureException(ExitCodes.Unexpected, $"kubectl get volumesnapshots -A failed with exit code {process.ExitCode}: {(await error.ConfigureAwait(false)).Trim()}");
            }

            times.Add(seconds);
        }

        return BenchReport.Percentile(times, 50);
    }

    private async Task<long> WaitAsync(Task<long> done, string what, string condition, Func<string> lastStatus, CancellationToken ct)
    {
        try
        {
            return await done.WaitAsync(WaitTimeout, ct).ConfigureAwait(false);
        }
        catch (TimeoutException)
        {
            _stack.ThrowIfEnded();
            throw new CliFailureException(
                ExitCodes.Unexpected,
                $"{what} did not reach {condition} within {WaitTimeout.TotalSeconds:0} s (last status: {lastStatus()}); rerun with --verbose to see the controllers' log");
        }
    }

    private static TimeSpan ProcessorTime()
    {
        using var self = Process.GetCurrentProcess();
        return self.TotalProcessorTime;
    }

    private static string Status(object? status) => status is null ? "none" : KubernetesJson.Serialize(status);
}
