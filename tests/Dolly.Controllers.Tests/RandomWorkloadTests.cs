using System.Text.Json;
using Dolly.Storage;
using k8s;
using k8s.Autorest;
using k8s.Models;
using Microsoft.Extensions.Logging.Abstractions;

namespace Dolly.Controllers.Tests;

/// <summary>
/// Random workloads against the whole stack (embedded API server, controllers, real driver over a pool):
/// claims, snapshots, restores (some too small), clones, cross-namespace restores, growth and deletions,
/// issued in concurrent bursts. The API objects and the pool must then agree: every bound claim has its own
/// volume, every ready snapshot its own driver snapshot, and the pool holds nothing that no object accounts
/// for. Deleting everything must leave the pool empty: nothing leaks, whatever the interleaving, and whenever
/// the controllers are restarted (they are, at random points, with empty caches and queues).
/// </summary>
public sealed class RandomWorkloadTests : IAsyncLifetime
{
    private const string Group = "snapshot.storage.k8s.io";
    private static readonly string[] Namespaces = ["ns-a", "ns-b"];

    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    private CancellationTokenSource _stop = new();
    private DriverStack? _stack;
    private Kubernetes? _client;
    private Task? _controllers;

    private Kubernetes K => _client!;

    private Pool P => _stack!.Pool;

    public async ValueTask InitializeAsync()
    {
        _stack = await DriverStack.StartAsync("dolly-random-", Ct);
        _client = _stack.NewClient();
        StartControllers();
        await DriverStack.CreateClassesAsync(K, Ct);
        foreach (string ns in Namespaces)
        {
            await K.CoreV1.CreateNamespaceAsync(new V1Namespace { Metadata = new V1ObjectMeta { Name = ns } }, cancellationToken: Ct);
        }

        // ns-b's claims may restore ns-a's snapshots.
        await K.CustomObjects.CreateNamespacedCustomObjectAsync(
            new Dictionary<string, object>
            {
                ["apiVersion"] = "gateway.networking.k8s.io/v1beta1",
                ["kind"] = "ReferenceGrant",
                ["metadata"] = new Dictionary<string, object> { ["name"] = "b-may-restore" },
                ["spec"] = new Dictionary<string, object>
                {
                    ["from"] = new[] { new Dictionary<string, string> { ["group"] = "", ["kind"] = "PersistentVolumeClaim", ["namespace"] = "ns-b" } },
                    ["to"] = new[] { new Dictionary<string, string> { ["group"] = Group, ["kind"] = "VolumeSnapshot" } },
                },
            },
            "gateway.networking.k8s.io",
            "v1beta1",
            "ns-a",
            "referencegrants",
            cancellationToken: Ct);
    }

    private void StartControllers()
    {
        var options = new ControllerOptions
        {
            BindVolumes = true,
            RetryBaseDelay = TimeSpan.FromMilliseconds(50),
            RetryMaxDelay = TimeSpan.FromMilliseconds(400),
        };
        _controllers = DollyControllers.RunAsync(_client!, _stack!.Csi, options, NullLoggerFactory.Instance, _stop.Token);
    }

    /// <summary>Stops the controllers wherever they are and starts fresh ones: empty caches, empty queues.</summary>
    private async Task RestartControllersAsync()
    {
        await _stop.CancelAsync();
        await _controllers!;
        _stop.Dispose();
        _stop = new CancellationTokenSource();
        StartControllers();
    }

    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync();
        if (_controllers is not null)
        {
            await _controllers;
        }

        _client?.Dispose();
        if (_stack is not null)
        {
            await _stack.DisposeAsync();
        }

        _stop.Dispose();
    }

    private sealed record Claim(string Ns, string Name, int Gi);

    private sealed record Snap(string Ns, string Name, string Claim);

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    [InlineData(4)]
    [InlineData(5)]
    [InlineData(6)]
    public async Task RandomBursts_ApiObjectsAndPoolAgree_AndDeletingEverythingLeavesThePoolEmpty(int seed)
    {
        var random = new Random(seed);
        var claims = new List<Claim>();
        var snaps = new List<Snap>();
        int next = 0;
        // DOLLY_WORKLOAD_BURSTS runs longer workloads (the default keeps CI quick).
        int bursts = int.TryParse(Environment.GetEnvironmentVariable("DOLLY_WORKLOAD_BURSTS"), out int b) && b > 0 ? b : 8;
        for (int burst = 0; burst < bursts; burst++)
        {
            var ops = new List<Task>();
            for (int i = 0; i < 6; i++)
            {
                string ns = Namespaces[random.Next(Namespaces.Length)];
                int choice = random.Next(100);
                string name = $"o{next++}";
                if (choice < 25 || claims.Count == 0)
                {
                    int gi = 1 + random.Next(2);
                    claims.Add(new Claim(ns, name, gi));
                    ops.Add(K.CoreV1.CreateNamespacedPersistentVolumeClaimAsync(DriverStack.Claim(name, $"{gi}Gi"), ns, cancellationToken: Ct));
                }
                else if (choice < 45)
                {
                    var source = claims[random.Next(claims.Count)];
                    snaps.Add(new Snap(source.Ns, name, source.Name));
                    ops.Add(K.CustomObjects.CreateNamespacedCustomObjectAsync(
                        new Dictionary<string, object>
                        {
                            ["apiVersion"] = "snapshot.storage.k8s.io/v1",
                            ["kind"] = "VolumeSnapshot",
                            ["metadata"] = new Dictionary<string, object> { ["name"] = name },
                            ["spec"] = new Dictionary<string, object> { ["source"] = new Dictionary<string, object> { ["persistentVolumeClaimName"] = source.Name } },
                        },
                        Group,
                        "v1",
                        source.Ns,
                        "volumesnapshots",
                        cancellationToken: Ct));
                }
                else if (choice < 60 && snaps.Count > 0)
                {
                    // A restore, sometimes too small (stays Pending), sometimes from ns-a into ns-b (granted).
                    var snap = snaps[random.Next(snaps.Count)];
                    string into = snap.Ns == "ns-a" && random.Next(3) == 0 ? "ns-b" : snap.Ns;
                    int gi = 1 + random.Next(2);
                    claims.Add(new Claim(into, name, gi));
                    var claim = into == snap.Ns
                        ? DriverStack.Claim(name, $"{gi}Gi", source: new V1TypedLocalObjectReference { ApiGroup = Group, Kind = "VolumeSnapshot", Name = snap.Name })
                        : DriverStack.Claim(name, $"{gi}Gi", sourceRef: new V1TypedObjectReference { ApiGroup = Group, Kind = "VolumeSnapshot", Name = snap.Name, NamespaceProperty = snap.Ns });
                    ops.Add(K.CoreV1.CreateNamespacedPersistentVolumeClaimAsync(claim, into, cancellationToken: Ct));
                }
                else if (choice < 70)
                {
                    var source = claims[random.Next(claims.Count)];
                    claims.Add(new Claim(source.Ns, name, 2));
                    ops.Add(K.CoreV1.CreateNamespacedPersistentVolumeClaimAsync(
                        DriverStack.Claim(name, "2Gi", source: new V1TypedLocalObjectReference { Kind = "PersistentVolumeClaim", Name = source.Name }), source.Ns, cancellationToken: Ct));
                }
                else if (choice < 78)
                {
                    var grow = claims[random.Next(claims.Count)];
                    string body = "{\"spec\":{\"resources\":{\"requests\":{\"storage\":\"" + (grow.Gi + 1) + "Gi\"}}}}";
                    var patch = new V1Patch(body, V1Patch.PatchType.MergePatch);
                    ops.Add(Tolerate(K.CoreV1.PatchNamespacedPersistentVolumeClaimAsync(patch, grow.Name, grow.Ns, cancellationToken: Ct)));
                }
                else if (choice < 84)
                {
                    // An intruder: a snapshot naming a content that belongs to another snapshot. It must never
                    // bind, and the content must stay its owner's.
                    var contents = Items(await K.CustomObjects.ListClusterCustomObjectAsync(Group, "v1", "volumesnapshotcontents", cancellationToken: Ct));
                    if (contents.Count > 0)
                    {
                        string target = Str(contents[random.Next(contents.Count)], "metadata", "name")!;
                        snaps.Add(new Snap(ns, name, ""));
                        ops.Add(K.CustomObjects.CreateNamespacedCustomObjectAsync(
                            new Dictionary<string, object>
                            {
                                ["apiVersion"] = "snapshot.storage.k8s.io/v1",
                                ["kind"] = "VolumeSnapshot",
                                ["metadata"] = new Dictionary<string, object> { ["name"] = name },
                                ["spec"] = new Dictionary<string, object> { ["source"] = new Dictionary<string, object> { ["volumeSnapshotContentName"] = target } },
                            },
                            Group,
                            "v1",
                            ns,
                            "volumesnapshots",
                            cancellationToken: Ct));
                    }
                }
                else if (choice < 92)
                {
                    var gone = claims[random.Next(claims.Count)];
                    claims.Remove(gone);
                    ops.Add(Tolerate(K.CoreV1.DeleteNamespacedPersistentVolumeClaimAsync(gone.Name, gone.Ns, cancellationToken: Ct)));
                }
                else if (snaps.Count > 0)
                {
                    var gone = snaps[random.Next(snaps.Count)];
                    snaps.Remove(gone);
                    ops.Add(Tolerate(K.CustomObjects.DeleteNamespacedCustomObjectAsync(Group, "v1", gone.Ns, "volumesnapshots", gone.Name, cancellationToken: Ct)));
                }
            }

            await Task.WhenAll(ops);
            await Task.Delay(random.Next(0, 150), Ct);

            // Now and then the controllers restart mid-work: they must carry on from the API objects alone.
            if (random.Next(4) == 0)
            {
                await RestartControllersAsync();
            }
        }

        // Settled: the objects and the pool agree.
        await Eventually(() => Disagreements(final: false), "the API objects and the pool never agreed");

        // Everything deleted: nothing is left in the pool, no PV and no content.
        foreach (string ns in Namespaces)
        {
            foreach (var pvc in (await K.CoreV1.ListNamespacedPersistentVolumeClaimAsync(ns, cancellationToken: Ct)).Items)
            {
                await Tolerate(K.CoreV1.DeleteNamespacedPersistentVolumeClaimAsync(pvc.Metadata.Name, ns, cancellationToken: Ct));
            }

            foreach (var vs in Items(await K.CustomObjects.ListNamespacedCustomObjectAsync(Group, "v1", ns, "volumesnapshots", cancellationToken: Ct)))
            {
                await Tolerate(K.CustomObjects.DeleteNamespacedCustomObjectAsync(Group, "v1", ns, "volumesnapshots", vs.GetProperty("metadata").GetProperty("name").GetString()!, cancellationToken: Ct));
            }
        }

        await Eventually(() => Disagreements(final: true), "deleting everything did not empty the pool");
    }

    private static async Task Tolerate(Task call)
    {
        try
        {
            await call;
        }
        catch (HttpOperationException ex) when (ex.Response.StatusCode == System.Net.HttpStatusCode.NotFound)
        {
            // Deleted by an earlier step of the same burst.
        }
    }

    private static List<JsonElement> Items(object list) => [.. ((JsonElement)list).GetProperty("items").EnumerateArray()];

    private static string? Str(JsonElement e, params string[] path)
    {
        foreach (string p in path)
        {
            if (e.ValueKind != JsonValueKind.Object || !e.TryGetProperty(p, out e))
            {
                return null;
            }
        }

        return e.ValueKind == JsonValueKind.Null ? null : e.ToString();
    }

    /// <summary>What is inconsistent between the API objects and the pool right now; empty when they agree.</summary>
    private async Task<List<string>> Disagreements(bool final)
    {
        var problems = new List<string>();
        var pvs = (await K.CoreV1.ListPersistentVolumeAsync(cancellationToken: Ct)).Items;
        var contents = Items(await K.CustomObjects.ListClusterCustomObjectAsync(Group, "v1", "volumesnapshotcontents", cancellationToken: Ct)).ToList();
        var volumes = P.ListDevices(DeviceKind.Volume).Select(d => d.Name).ToHashSet(StringComparer.Ordinal);
        var snapshots = P.ListDevices(DeviceKind.Snapshot).Select(d => d.Name).ToHashSet(StringComparer.Ordinal);
        var claimsByUid = new Dictionary<string, V1PersistentVolumeClaim>(StringComparer.Ordinal);
        var snapshotObjects = new List<JsonElement>();
        foreach (string ns in Namespaces)
        {
            foreach (var c in (await K.CoreV1.ListNamespacedPersistentVolumeClaimAsync(ns, cancellationToken: Ct)).Items)
            {
                claimsByUid[c.Metadata.Uid] = c;
            }

            snapshotObjects.AddRange(Items(await K.CustomObjects.ListNamespacedCustomObjectAsync(Group, "v1", ns, "volumesnapshots", cancellationToken: Ct)));
        }

        if (final)
        {
            problems.AddRange(claimsByUid.Values.Select(c => $"claim {c.Metadata.NamespaceProperty}/{c.Metadata.Name} still exists (finalizers [{string.Join(' ', c.Metadata.Finalizers ?? [])}])"));
            problems.AddRange(snapshotObjects.Select(s => $"snapshot {Str(s, "metadata", "name")} still exists (finalizers {Str(s, "metadata", "finalizers")})"));
            problems.AddRange(pvs.Select(v =>
                $"PV {v.Metadata.Name} still exists (phase {v.Status?.Phase}, claim {v.Spec.ClaimRef?.NamespaceProperty}/{v.Spec.ClaimRef?.Name}, " +
                $"deleting {v.Metadata.DeletionTimestamp is not null}, finalizers [{string.Join(' ', v.Metadata.Finalizers ?? [])}], handle {v.Spec.Csi?.VolumeHandle})"));
            problems.AddRange(contents.Select(c => $"content {Str(c, "metadata", "name")} still exists"));
            problems.AddRange(volumes.Select(v => $"pool volume {v} leaked"));
            problems.AddRange(snapshots.Select(s => $"pool snapshot {s} leaked"));
            return problems;
        }

        // Every bound claim has a PV that names it, on a volume the pool has.
        foreach (var c in claimsByUid.Values.Where(c => c.Status?.Phase == "Bound"))
        {
            var pv = pvs.FirstOrDefault(v => v.Metadata.Name == c.Spec.VolumeName);
            if (pv is null || pv.Spec.ClaimRef?.Uid != c.Metadata.Uid)
            {
                problems.Add($"bound claim {c.Metadata.Name} has no PV naming it");
            }
            else if (!volumes.Contains(pv.Spec.Csi.VolumeHandle))
            {
                problems.Add($"PV {pv.Metadata.Name} names volume {pv.Spec.Csi.VolumeHandle}, which the pool lacks");
            }
        }

        // Every PV belongs to a live claim (Delete policy: released ones go), and every pool volume to a PV.
        problems.AddRange(pvs.Where(v => v.Spec.ClaimRef?.Uid is not { } uid || !claimsByUid.ContainsKey(uid)).Select(v => $"PV {v.Metadata.Name} outlived its claim"));
        var handles = pvs.Select(v => v.Spec.Csi.VolumeHandle).ToHashSet(StringComparer.Ordinal);
        problems.AddRange(volumes.Where(v => !handles.Contains(v)).Select(v => $"pool volume {v} has no PV"));

        // A claim still Pending must have a reason to be: a source that is missing, too large, or not ready.
        foreach (var c in claimsByUid.Values.Where(c => c.Status?.Phase != "Bound" && c.Metadata.DeletionTimestamp is null))
        {
            bool hasSource = c.Spec.DataSource is not null || c.Spec.DataSourceRef is not null;
            if (!hasSource)
            {
                problems.Add($"claim {c.Metadata.Name} without a source is not Bound");
            }
        }

        // No snapshot is bound to a content that names another snapshot (an intruder never gets one).
        foreach (var s in snapshotObjects.Where(s => Str(s, "status", "boundVolumeSnapshotContentName") is not null))
        {
            var content = contents.FirstOrDefault(c => Str(c, "metadata", "name") == Str(s, "status", "boundVolumeSnapshotContentName"));
            if (content.ValueKind != JsonValueKind.Undefined
                && (Str(content, "spec", "volumeSnapshotRef", "name") != Str(s, "metadata", "name") || Str(content, "spec", "volumeSnapshotRef", "namespace") != Str(s, "metadata", "namespace")))
            {
                problems.Add($"snapshot {Str(s, "metadata", "namespace")}/{Str(s, "metadata", "name")} is bound to {Str(content, "metadata", "name")}, which belongs to another");
            }
        }

        // Every snapshot that is ready is bound to a content that points back, on a snapshot the pool has;
        // every pool snapshot belongs to a content.
        foreach (var s in snapshotObjects.Where(s => Str(s, "status", "readyToUse") == "True"))
        {
            string? bound = Str(s, "status", "boundVolumeSnapshotContentName");
            var content = contents.FirstOrDefault(c => Str(c, "metadata", "name") == bound);
            if (content.ValueKind == JsonValueKind.Undefined || Str(content, "spec", "volumeSnapshotRef", "uid") != Str(s, "metadata", "uid"))
            {
                problems.Add($"ready snapshot {Str(s, "metadata", "namespace")}/{Str(s, "metadata", "name")} (uid {Str(s, "metadata", "uid")}) is not bound both ways: bound to {bound}, " +
                    (content.ValueKind == JsonValueKind.Undefined ? "which does not exist" : $"whose ref is {Str(content, "spec", "volumeSnapshotRef")}"));
            }
            else if (Str(content, "status", "snapshotHandle") is not { } handle || !snapshots.Contains(handle))
            {
                problems.Add($"content {bound} names a snapshot the pool lacks");
            }
        }

        var snapshotHandles = contents.Select(c => Str(c, "status", "snapshotHandle")).OfType<string>().ToHashSet(StringComparer.Ordinal);
        problems.AddRange(snapshots.Where(s => !snapshotHandles.Contains(s)).Select(s => $"pool snapshot {s} has no content"));
        problems.AddRange(contents.Where(c => Str(c, "spec", "volumeSnapshotRef", "uid") is { } uid && !snapshotObjects.Any(s => Str(s, "metadata", "uid") == uid))
            .Select(c => $"content {Str(c, "metadata", "name")} outlived its snapshot"));
        return problems;
    }

    private static async Task Eventually(Func<Task<List<string>>> check, string what)
    {
        var deadline = DateTime.UtcNow.AddSeconds(60);
        List<string> problems;
        do
        {
            problems = await check();
            if (problems.Count == 0)
            {
                return;
            }

            await Task.Delay(200, Ct);
        }
        while (DateTime.UtcNow < deadline);

        Assert.Fail($"{what}:\n  " + string.Join("\n  ", problems));
    }
}
