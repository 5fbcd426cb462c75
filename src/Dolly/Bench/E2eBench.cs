using System.Diagnostics;
using System.Text.Json;
using Dolly.Controllers.Model;
using k8s;
using k8s.Models;

namespace Dolly.Bench;

/// <summary>How much work <c>bench e2e</c> does.</summary>
internal sealed record E2eSizes(int SnapshotRounds, int RestoreRounds, int Namespaces, int WarmUp, long DataBytes)
{
    public static E2eSizes Full { get; } = new(SnapshotRounds: 50, RestoreRounds: 50, Namespaces: 100, WarmUp: 3, DataBytes: 64L << 20);

    public static E2eSizes Quick { get; } = new(SnapshotRounds: 5, RestoreRounds: 5, Namespaces: 10, WarmUp: 1, DataBytes: 4L << 20);
}

/// <summary>
/// <c>dolly bench e2e</c>: the whole system as a user sees it through the API. <c>dolly up</c> runs in-process
/// on a scratch pool; objects are applied with KubernetesClient and every condition is seen through a watch,
/// as <c>kubectl wait</c> would see it: VolumeSnapshot apply -> readyToUse, restore claim apply -> Bound (from
/// snapshots of a 1 GiB and a 1 TiB volume), and many restores of one snapshot in as many namespaces at once.
/// </summary>
internal sealed class E2eBench(string root, E2eSizes sizes, bool verbose, Action<string> log)
{
    private const string Ns = "bench";
    private const string StorageClass = DefaultClasses.StorageClassName;
    private const string SnapshotClass = DefaultClasses.SnapshotClassName;
    private const string SnapshotVersion = "v1";
    private const string SmallSource = "source-1gi";
    private const string LargeSource = "source-1ti";
    private static readonly TimeSpan WaitTimeout = TimeSpan.FromSeconds(60);
    private static readonly TimeSpan FanOutTimeout = TimeSpan.FromSeconds(120);

    private E2eStack _stack = null!;
    private E2eWatch<V1PersistentVolumeClaim> _claims = null!;
    private E2eWatch<V1PersistentVolume> _volumes = null!;
    private E2eWatch<VolumeSnapshot> _snapshots = null!;
    private E2eWatch<VolumeSnapshotContent> _contents = null!;

    private Kubernetes Kube => _stack.Client;

    public Task<IReadOnlyList<BenchFigure>> RunAsync(CancellationToken ct) => E2eStack.ExplainApiFailuresAsync(() => RunStackAsync(ct));

    private async Task<IReadOnlyList<BenchFigure>> RunStackAsync(CancellationToken ct)
    {
        log("starting dolly up (API server, controllers, CSI driver, NBD server) on a scratch pool");
        await using var stack = await E2eStack.StartAsync(Path.Combine(root, "pool"), verbose, log, ct).ConfigureAwait(false);
        _stack = stack;
        await using var claims = stack.WatchAllClaims();
        await using var volumes = new E2eWatch<V1PersistentVolume>(
            "PersistentVolume",
            async c =>
            {
                var l = await Kube.CoreV1.ListPersistentVolumeAsync(cancellationToken: c).ConfigureAwait(false);
                return (l.Items, l.Metadata.ResourceVersion);
            },
            (rv, c) => Kube.CoreV1.WatchListPersistentVolumeAsync(allowWatchBookmarks: true, resourceVersion: rv, timeoutSeconds: 3600, cancellationToken: c));
        await using var snapshots = CustomWatch<VolumeSnapshot>("VolumeSnapshot", "volumesnapshots");
        await using var contents = CustomWatch<VolumeSnapshotContent>("VolumeSnapshotContent", "volumesnapshotcontents");

        // Owned (and disposed) here; the fields only let the measurements below reach them.
        (_claims, _volumes, _snapshots, _contents) = (claims, volumes, snapshots, contents);
        await Task.WhenAll(claims.StartAsync(), volumes.StartAsync(), snapshots.StartAsync(), contents.StartAsync()).ConfigureAwait(false);

        var figures = new List<BenchFigure>
        {
            new("dolly up", "start until /readyz answers", stack.StartSeconds, "s", $"{BenchReport.Num(stack.StartSeconds)} s", null, null, "in-process, --port 0, fresh pool"),
        };

        log($"applying StorageClass {StorageClass}, VolumeSnapshotClass {SnapshotClass}, {sizes.Namespaces + 1} namespaces, one ReferenceGrant per namespace");
        await ApplyClassesAsync(ct).ConfigureAwait(false);
        var fanOutNamespaces = Enumerable.Range(1, sizes.Namespaces).Select(i => $"bench-{i:000}").ToList();
        foreach (var ns in fanOutNamespaces.Prepend(Ns))
        {
            await Kube.CoreV1.CreateNamespaceAsync(new V1Namespace { Metadata = new V1ObjectMeta { Name = ns } }, cancellationToken: ct).ConfigureAwait(false);
        }

        await GrantAsync(fanOutNamespaces, ct).ConfigureAwait(false);

        log("provisioning the sources: a 1 GiB and a 1 TiB claim");
        var small = await CreateBoundAsync(Ns, SmallSource, "1Gi", null, ct).ConfigureAwait(false);
        var large = await CreateBoundAsync(Ns, LargeSource, "1Ti", null, ct).ConfigureAwait(false);
        string dataNote = await WriteDataAsync([small.Handle, large.Handle], ct).ConfigureAwait(false);

        figures.AddRange(await MeasureSnapshotsAsync(dataNote, ct).ConfigureAwait(false));
        figures.AddRange(await MeasureRestoresAsync(dataNote, ct).ConfigureAwait(false));
        figures.Add(await MeasureFanOutAsync(fanOutNamespaces, ct).ConfigureAwait(false));
        log("stopping dolly up");
        return figures;
    }

    // ---- measurements -------------------------------------------------------------------------------

    private async Task<IEnumerable<BenchFigure>> MeasureSnapshotsAsync(string dataNote, CancellationToken ct)
    {
        log($"VolumeSnapshot apply -> readyToUse: {sizes.WarmUp} warm-up + {sizes.SnapshotRounds} rounds");
        var ready = new List<double>();
        var contentSeen = new List<double>();
        for (int i = -sizes.WarmUp; i < sizes.SnapshotRounds; i++)
        {
            string name = i < 0 ? $"warm-snap-{-i}" : $"snap-{i:000}";
            var done = _snapshots.Expect(Ns, name, s => s.Status?.ReadyToUse == true);
            long t0 = Stopwatch.GetTimestamp();
            await CreateSnapshotAsync(Ns, name, SmallSource, ct).ConfigureAwait(false);
            long t = await WaitAsync(done, $"VolumeSnapshot {Ns}/{name}", "status.readyToUse true", () => Status(_snapshots.Last(Ns, name)?.Status), WaitTimeout, ct).ConfigureAwait(false);
            if (i >= 0)
            {
                ready.Add(Ms(t0, t));
                if (_snapshots.Last(Ns, name)?.Status?.BoundVolumeSnapshotContentName is { } content && _contents.FirstSeen(null, content) is { } seen)
                {
                    contentSeen.Add(Ms(t0, seen));
                }
            }
        }

        const string group = "VolumeSnapshot apply -> readyToUse (source: Bound 1 GiB claim)";
        double p50 = BenchReport.Percentile(ready, 50), p99 = BenchReport.Percentile(ready, 99);
        return
        [
            new(group, $"p50 ({ready.Count} snapshots)", p50, "ms", BenchReport.Ms(p50), "<= 100 ms", p50 <= 100,
                $"p99 {BenchReport.Ms(p99)}; content created after {BenchReport.Ms(BenchReport.Percentile(contentSeen, 50))} (p50); {dataNote}",
                Finite(new Dictionary<string, double> { ["p50"] = p50, ["p99"] = p99, ["rounds"] = ready.Count, ["contentCreatedP50"] = BenchReport.Percentile(contentSeen, 50) })),
        ];
    }

    private async Task<IEnumerable<BenchFigure>> MeasureRestoresAsync(string dataNote, CancellationToken ct)
    {
        log("cutting one snapshot of each source to restore from");
        foreach (var (snapshot, source) in new[] { ("snap-1gi", SmallSource), ("snap-1ti", LargeSource) })
        {
            var done = _snapshots.Expect(Ns, snapshot, s => s.Status?.ReadyToUse == true);
            await CreateSnapshotAsync(Ns, snapshot, source, ct).ConfigureAwait(false);
            await WaitAsync(done, $"VolumeSnapshot {Ns}/{snapshot}", "status.readyToUse true", () => Status(_snapshots.Last(Ns, snapshot)?.Status), WaitTimeout, ct).ConfigureAwait(false);
        }

        log($"restore claim apply -> Bound, 1 GiB and 1 TiB taking turns: {sizes.WarmUp} warm-up + {sizes.RestoreRounds} rounds");
        var bound = new Dictionary<string, List<double>> { ["1Gi"] = [], ["1Ti"] = [] };
        var pvSeen = new Dictionary<string, List<double>> { ["1Gi"] = [], ["1Ti"] = [] };
        for (int i = -sizes.WarmUp; i < sizes.RestoreRounds; i++)
        {
            // Swap the order every round, so drift on a shared machine hits both sizes alike.
            string[] order = (i & 1) == 0 ? ["1Gi", "1Ti"] : ["1Ti", "1Gi"];
            foreach (var size in order)
            {
                string name = $"{(i < 0 ? "warm-" : string.Empty)}restore-{size.ToLowerInvariant()}-{Math.Abs(i):000}";
                long t0 = Stopwatch.GetTimestamp();
                var claim = await CreateBoundAsync(Ns, name, size, (Ns, $"snap-{size.ToLowerInvariant()}"), ct).ConfigureAwait(false);
                if (i >= 0)
                {
                    bound[size].Add(Ms(t0, claim.Bound));
                    if (claim.VolumeCreated is { } pv)
                    {
                        pvSeen[size].Add(Ms(t0, pv));
                    }
                }
            }
        }

        const string group = "restore claim (dataSource VolumeSnapshot) apply -> Bound";
        var figures = new List<BenchFigure>();
        foreach (var (size, what) in new[] { ("1Gi", "1 GiB"), ("1Ti", "1 TiB") })
        {
            double p50 = BenchReport.Percentile(bound[size], 50), p99 = BenchReport.Percentile(bound[size], 99), pv = BenchReport.Percentile(pvSeen[size], 50);
            figures.Add(new(group, $"p50, snapshot of a {what} volume ({bound[size].Count} restores)", p50, "ms", BenchReport.Ms(p50), "<= 200 ms", p50 <= 200,
                $"p99 {BenchReport.Ms(p99)}; PV created after {BenchReport.Ms(pv)} (p50); {dataNote}",
                Finite(new Dictionary<string, double> { ["p50"] = p50, ["p99"] = p99, ["rounds"] = bound[size].Count, ["pvCreatedP50"] = pv })));
        }

        double ratio = figures[1].Value / figures[0].Value;
        figures.Add(new(group, "1 TiB / 1 GiB (p50)", ratio, "ratio", BenchReport.Num(ratio), "within 1.50x", Math.Max(ratio, 1 / ratio) <= 1.5));
        return figures;
    }

    private async Task<BenchFigure> MeasureFanOutAsync(List<string> namespaces, CancellationToken ct)
    {
        log($"{namespaces.Count} restores of {Ns}/snap-1gi in {namespaces.Count} namespaces, applied at once");
        const string name = "restore";
        var waits = namespaces.ToDictionary(ns => ns, ns => _claims.Expect(ns, name, c => c.Status?.Phase == "Bound"));
        long t0 = Stopwatch.GetTimestamp();
        await Task.WhenAll(namespaces.Select(ns => CreateClaimAsync(ns, name, "1Gi", (Ns, "snap-1gi"), ct))).ConfigureAwait(false);
        long applied = Stopwatch.GetTimestamp();
        var all = Task.WhenAll(waits.Values);
        try
        {
            await all.WaitAsync(FanOutTimeout, ct).ConfigureAwait(false);
        }
        catch (TimeoutException)
        {
            _stack.ThrowIfEnded();
            int done = waits.Values.Count(w => w.IsCompletedSuccessfully);
            var stuck = waits.First(w => !w.Value.IsCompleted).Key;
            throw new CliFailureException(
                ExitCodes.Unexpected,
                $"{done} of {namespaces.Count} restore claims were Bound {FanOutTimeout.TotalSeconds:0} s after they were applied (e.g. {stuck}/{name}: {Status(_claims.Last(stuck, name)?.Status)}); rerun with --verbose to see the controllers' log");
        }

        var times = waits.Values.Select(w => Ms(t0, w.Result)).ToList();
        var pvTimes = namespaces.Select(ns => _claims.Last(ns, name)?.Spec?.VolumeName is { } pv && _volumes.FirstSeen(null, pv) is { } seen ? Ms(t0, seen) : double.NaN).Where(double.IsFinite).ToList();
        double seconds = times.Max() / 1000;
        return new(
            $"{namespaces.Count} restores of one snapshot in {namespaces.Count} namespaces, applied concurrently",
            "first apply -> last Bound",
            seconds,
            "s",
            $"{BenchReport.Num(seconds)} s",
            "<= 5 s",
            seconds <= 5,
            $"{times.Count}/{namespaces.Count} Bound; all applies answered after {BenchReport.Ms(Ms(t0, applied))}; first Bound {BenchReport.Ms(times.Min())}, p50 {BenchReport.Ms(BenchReport.Percentile(times, 50))}; last PV created {BenchReport.Ms(pvTimes.DefaultIfEmpty(double.NaN).Max())}",
            new Dictionary<string, double>
            {
                ["claims"] = namespaces.Count,
                ["bound"] = times.Count,
                ["appliedMs"] = Ms(t0, applied),
                ["firstBoundMs"] = times.Min(),
                ["p50BoundMs"] = BenchReport.Percentile(times, 50),
                ["lastPvCreatedMs"] = pvTimes.Count > 0 ? pvTimes.Max() : 0,
            });
    }

    // ---- objects ------------------------------------------------------------------------------------

    private async Task ApplyClassesAsync(CancellationToken ct)
    {
        await Kube.StorageV1.CreateStorageClassAsync(DefaultClasses.StorageClass(), cancellationToken: ct).ConfigureAwait(false);
        await Kube.CustomObjects.CreateClusterCustomObjectAsync(DefaultClasses.SnapshotClass(), Names.SnapshotGroup, SnapshotVersion, "volumesnapshotclasses", cancellationToken: ct).ConfigureAwait(false);
    }

    /// <summary>
    /// One ReferenceGrant per fan-out namespace, in the bench namespace, letting that namespace's claims restore
    /// its snapshots (as each tenant would get its own; the API caps spec.from at 16 entries anyway).
    /// </summary>
    private async Task GrantAsync(List<string> namespaces, CancellationToken ct)
    {
        foreach (var ns in namespaces)
        {
            var grant = new ReferenceGrant
            {
                Metadata = new V1ObjectMeta { Name = $"restores-to-{ns}", NamespaceProperty = Ns },
                Spec = new ReferenceGrantSpec
                {
                    From = [new ReferenceGrantFrom { Group = "", Kind = "PersistentVolumeClaim", Namespace = ns }],
                    To = [new ReferenceGrantTo { Group = Names.SnapshotGroup, Kind = "VolumeSnapshot" }],
                },
            };
            await Kube.CustomObjects.CreateNamespacedCustomObjectAsync(grant, "gateway.networking.k8s.io", "v1beta1", Ns, "referencegrants", cancellationToken: ct).ConfigureAwait(false);
        }
    }

    private Task<object> CreateSnapshotAsync(string ns, string name, string claim, CancellationToken ct) =>
        Kube.CustomObjects.CreateNamespacedCustomObjectAsync(
            new VolumeSnapshot
            {
                Metadata = new V1ObjectMeta { Name = name, NamespaceProperty = ns },
                Spec = new VolumeSnapshotSpec { Source = new VolumeSnapshotSource { PersistentVolumeClaimName = claim } },
            },
            Names.SnapshotGroup,
            SnapshotVersion,
            ns,
            "volumesnapshots",
            cancellationToken: ct);

    /// <summary>A claim of the bench StorageClass; with a snapshot source in another namespace it uses dataSourceRef.</summary>
    private Task<V1PersistentVolumeClaim> CreateClaimAsync(string ns, string name, string size, (string Namespace, string Name)? snapshot, CancellationToken ct)
    {
        var spec = new V1PersistentVolumeClaimSpec
        {
            StorageClassName = StorageClass,
            AccessModes = ["ReadWriteOnce"],
            Resources = new V1VolumeResourceRequirements { Requests = new Dictionary<string, ResourceQuantity> { ["storage"] = new ResourceQuantity(size) } },
        };
        if (snapshot is { } s && s.Namespace == ns)
        {
            spec.DataSource = new V1TypedLocalObjectReference { ApiGroup = Names.SnapshotGroup, Kind = "VolumeSnapshot", Name = s.Name };
        }
        else if (snapshot is { } other)
        {
            spec.DataSourceRef = new V1TypedObjectReference { ApiGroup = Names.SnapshotGroup, Kind = "VolumeSnapshot", Name = other.Name, NamespaceProperty = other.Namespace };
        }

        return Kube.CoreV1.CreateNamespacedPersistentVolumeClaimAsync(
            new V1PersistentVolumeClaim { ApiVersion = "v1", Kind = "PersistentVolumeClaim", Metadata = new V1ObjectMeta { Name = name, NamespaceProperty = ns }, Spec = spec },
            ns,
            cancellationToken: ct);
    }

    private readonly record struct BoundClaim(long Bound, long? VolumeCreated, string Handle);

    /// <summary>Creates a claim and waits, on the watch, until it is Bound.</summary>
    private async Task<BoundClaim> CreateBoundAsync(string ns, string name, string size, (string, string)? snapshot, CancellationToken ct)
    {
        var done = _claims.Expect(ns, name, c => c.Status?.Phase == "Bound");
        await CreateClaimAsync(ns, name, size, snapshot, ct).ConfigureAwait(false);
        long t = await WaitAsync(done, $"PersistentVolumeClaim {ns}/{name}", "status.phase Bound", () => Status(_claims.Last(ns, name)?.Status), WaitTimeout, ct).ConfigureAwait(false);
        string pv = _claims.Last(ns, name)?.Spec?.VolumeName ?? string.Empty;
        string handle = _volumes.Last(null, pv)?.Spec?.Csi?.VolumeHandle ?? pv;
        return new BoundClaim(t, _volumes.FirstSeen(null, pv), handle);
    }

    /// <summary>
    /// Writes random data at the start of each source volume through dolly up's own NBD server with nbdcopy, so
    /// the snapshots are of volumes with data in them; without nbdcopy the sources stay empty (thin) and the
    /// figures say so.
    /// </summary>
    private async Task<string> WriteDataAsync(string[] volumes, CancellationToken ct)
    {
        if (NbdBench.FindOnPath("nbdcopy") is null)
        {
            log("nbdcopy not found: the source volumes stay empty");
            return "sources empty (nbdcopy not installed)";
        }

        string data = Path.Combine(root, "data.img");
        NbdBench.WriteRandomFile(data, sizes.DataBytes);
        foreach (var volume in volumes)
        {
            log($"writing {BenchSizes.Size(sizes.DataBytes)} into {volume} with nbdcopy over {_stack.NbdSocket}");
            await NbdBench.RunAsync("nbdcopy", ["--flush", data, $"nbd+unix:///{volume}?socket={_stack.NbdSocket}"], ct).ConfigureAwait(false);
        }

        File.Delete(data);
        return $"sources hold {BenchSizes.Size(sizes.DataBytes)} written over NBD";
    }

    // ---- helpers ------------------------------------------------------------------------------------

    private E2eWatch<T> CustomWatch<T>(string kind, string plural)
        where T : class, IKubernetesObject<V1ObjectMeta> => new(
            kind,
            async c =>
            {
                var list = (JsonElement)await Kube.CustomObjects.ListClusterCustomObjectAsync(Names.SnapshotGroup, SnapshotVersion, plural, cancellationToken: c).ConfigureAwait(false);
                var items = list.GetProperty("items").EnumerateArray().Select(e => KubernetesJson.Deserialize<T>(e.GetRawText())).ToList();
                return (items, list.GetProperty("metadata").GetProperty("resourceVersion").GetString() ?? string.Empty);
            },
            (rv, c) => WatchCustom<T>(plural, rv, c));

    private async IAsyncEnumerable<(WatchEventType, T)> WatchCustom<T>(string plural, string rv, [System.Runtime.CompilerServices.EnumeratorCancellation] CancellationToken ct)
    {
        await foreach (var (type, item) in Kube.CustomObjects.WatchListClusterCustomObjectAsync(
            Names.SnapshotGroup, SnapshotVersion, plural, allowWatchBookmarks: true, resourceVersion: rv, timeoutSeconds: 3600, cancellationToken: ct).ConfigureAwait(false))
        {
            yield return (type, item is JsonElement e ? KubernetesJson.Deserialize<T>(e.GetRawText()) : KubernetesJson.Deserialize<T>(KubernetesJson.Serialize(item)));
        }
    }

    /// <summary>Waits for a watch expectation; on timeout the message names the object, the condition and its last status.</summary>
    private async Task<long> WaitAsync(Task<long> done, string what, string condition, Func<string> lastStatus, TimeSpan timeout, CancellationToken ct)
    {
        try
        {
            return await done.WaitAsync(timeout, ct).ConfigureAwait(false);
        }
        catch (TimeoutException)
        {
            _stack.ThrowIfEnded();
            throw new CliFailureException(
                ExitCodes.Unexpected,
                $"{what} did not reach {condition} within {timeout.TotalSeconds:0} s (last status: {lastStatus()}); rerun with --verbose to see the controllers' log");
        }
    }

    /// <summary>Drops figures that could not be measured (NaN), which JSON cannot hold.</summary>
    private static Dictionary<string, double> Finite(Dictionary<string, double> details) =>
        details.Where(kv => double.IsFinite(kv.Value)).ToDictionary(kv => kv.Key, kv => kv.Value);

    private static string Status(object? status) => status is null ? "none" : KubernetesJson.Serialize(status);

    private static double Ms(long from, long to) => Stopwatch.GetElapsedTime(from, to).TotalMilliseconds;

}
