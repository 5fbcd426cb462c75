using System.Collections.Concurrent;
using System.Text.Json;
using Grpc.Core;
using Grpc.Core.Interceptors;
using k8s;
using k8s.Models;

namespace Dolly.Controllers.Tests;

/// <summary>
/// VolumeGroupSnapshot objects driven by the controllers against the embedded API server and the real driver:
/// one CreateVolumeGroupSnapshot, a bound VolumeSnapshot and content per member, restores holding the instant,
/// deletion of the members with the group in one DeleteVolumeGroupSnapshot, and bad input reported, not acted on.
/// </summary>
public sealed class GroupSnapshotTests : IAsyncLifetime
{
    private const string Group = "groupsnapshot.storage.k8s.io";
    private const string Version = "v1beta2";
    private const long MiB = 1L << 20;

    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    private readonly CsiCalls _calls = new();
    private ControllerHarness? _h;

    private Kubernetes K => _h!.Client;

    private DriverStack S => _h!.Stack;

    /// <summary>Counts the controllers' CSI calls by method.</summary>
    private sealed class CsiCalls : Interceptor
    {
        public ConcurrentDictionary<string, int> Calls { get; } = new(StringComparer.Ordinal);

        public int Count(string method) => Calls.GetValueOrDefault(method);

        public override AsyncUnaryCall<TResponse> AsyncUnaryCall<TRequest, TResponse>(
            TRequest request, ClientInterceptorContext<TRequest, TResponse> context, AsyncUnaryCallContinuation<TRequest, TResponse> continuation)
        {
            Calls.AddOrUpdate(context.Method.Name, 1, (_, n) => n + 1);
            return continuation(request, context);
        }
    }

    private Dolly.Controllers.Runtime.Cluster? _cache;

    public async ValueTask InitializeAsync() => _h = await ControllerHarness.StartAsync("groups", Ct, _calls, cache: c => _cache = c);

    /// <summary>How often the controllers walked a whole cache of a kind a group snapshot touches (each must answer from an index).</summary>
    private long Walks() =>
        _cache!.Claims.Walks + _cache.Volumes.Walks + _cache.Snapshots.Walks + _cache.Contents.Walks + _cache.GroupSnapshots.Walks
        + _cache.GroupContents.Walks + _cache.GroupClasses.Walks + _cache.SnapshotClasses.Walks;

    public async ValueTask DisposeAsync()
    {
        if (_h is not null)
        {
            await _h.DisposeAsync();
        }
    }

    private static Task<T> Until<T>(Func<Task<T?>> probe, string what, int seconds = 60)
        => Eventually.Until(probe, what, seconds);

    private static async Task<JsonElement> UntilFound(Func<Task<JsonElement?>> probe, string what) =>
        (await Until(async () => await probe() is { } found ? (object)found : null, what)) is JsonElement e ? e : throw new InvalidOperationException(what);

    private Task<object> GroupClassAsync(string name, string deletionPolicy, bool isDefault, string driver = "csi.dolly.io") =>
        K.CustomObjects.CreateClusterCustomObjectAsync(
            new Dictionary<string, object>
            {
                ["apiVersion"] = $"{Group}/{Version}",
                ["kind"] = "VolumeGroupSnapshotClass",
                ["metadata"] = new Dictionary<string, object>
                {
                    ["name"] = name,
                    ["annotations"] = new Dictionary<string, string> { ["groupsnapshot.storage.kubernetes.io/is-default-class"] = isDefault ? "true" : "false" },
                },
                ["driver"] = driver,
                ["deletionPolicy"] = deletionPolicy,
            },
            Group,
            Version,
            "volumegroupsnapshotclasses",
            cancellationToken: Ct);

    private Task<object> GroupSnapshotAsync(string name, Dictionary<string, object> source, string? className = null)
    {
        var spec = new Dictionary<string, object> { ["source"] = source };
        if (className is not null)
        {
            spec["volumeGroupSnapshotClassName"] = className;
        }

        return K.CustomObjects.CreateNamespacedCustomObjectAsync(
            new Dictionary<string, object> { ["apiVersion"] = $"{Group}/{Version}", ["kind"] = "VolumeGroupSnapshot", ["metadata"] = new Dictionary<string, object> { ["name"] = name }, ["spec"] = spec },
            Group,
            Version,
            "default",
            "volumegroupsnapshots",
            cancellationToken: Ct);
    }

    private static Dictionary<string, object> Selector(string key, string value) =>
        new() { ["selector"] = new Dictionary<string, object> { ["matchLabels"] = new Dictionary<string, string> { [key] = value } } };

    private async Task<V1PersistentVolumeClaim> ClaimAsync(string name, Dictionary<string, string>? labels = null, string? storageClass = "dolly", V1TypedLocalObjectReference? source = null)
    {
        var claim = DriverStack.Claim(name, "16Mi", source);
        claim.Metadata.Labels = labels;
        claim.Spec.StorageClassName = storageClass;
        await K.CoreV1.CreateNamespacedPersistentVolumeClaimAsync(claim, "default", cancellationToken: Ct);
        if (storageClass != "dolly")
        {
            return claim;
        }

        return await Until(async () => await K.CoreV1.ReadNamespacedPersistentVolumeClaimAsync(name, "default", cancellationToken: Ct) is { Status.Phase: "Bound" } c ? c : null, $"claim {name} never bound");
    }

    private async Task<string> HandleOf(string claim)
    {
        var c = await K.CoreV1.ReadNamespacedPersistentVolumeClaimAsync(claim, "default", cancellationToken: Ct);
        return (await K.CoreV1.ReadPersistentVolumeAsync(c.Spec.VolumeName, cancellationToken: Ct)).Spec.Csi.VolumeHandle;
    }

    private async Task<JsonElement?> TryGet(string group, string version, string plural, string name, bool cluster = false)
    {
        try
        {
            object o = cluster
                ? await K.CustomObjects.GetClusterCustomObjectAsync(group, version, plural, name, Ct)
                : await K.CustomObjects.GetNamespacedCustomObjectAsync(group, version, "default", plural, name, Ct);
            return (JsonElement)o;
        }
        catch (k8s.Autorest.HttpOperationException ex) when (ex.Response.StatusCode == System.Net.HttpStatusCode.NotFound)
        {
            return null;
        }
    }

    private async Task<List<JsonElement>> List(string group, string version, string plural, bool cluster = false)
    {
        object o = cluster
            ? await K.CustomObjects.ListClusterCustomObjectAsync(group, version, plural, cancellationToken: Ct)
            : await K.CustomObjects.ListNamespacedCustomObjectAsync(group, version, "default", plural, cancellationToken: Ct);
        return [.. ((JsonElement)o).GetProperty("items").EnumerateArray()];
    }

    private static string? Str(JsonElement? e, params string[] path)
    {
        if (e is not { } cur)
        {
            return null;
        }

        foreach (string p in path)
        {
            if (cur.ValueKind != JsonValueKind.Object || !cur.TryGetProperty(p, out cur))
            {
                return null;
            }
        }

        return cur.ToString();
    }

    private async Task<string> Events(string name, string reason) =>
        string.Join('\n', (await K.CoreV1.ListNamespacedEventAsync("default", fieldSelector: $"involvedObject.name={name},reason={reason}", cancellationToken: Ct)).Items.Select(e => e.Message));

    private static byte[] Pattern(int length, int seed)
    {
        var data = new byte[length];
        new Random(seed).NextBytes(data);
        return data;
    }

    private byte[] Read(string volume, long offset, int length)
    {
        var buffer = new byte[length];
        S.Pool.OpenDevice(volume).Value.Read(offset, buffer).ThrowIfFailed();
        return buffer;
    }

    [Fact]
    public async Task TwoClaims_OneCut_MembersBoundAndMapped_RestoresHoldTheInstant_DeletedWithTheGroup()
    {
        await GroupClassAsync("groups", "Delete", isDefault: true);
        var app = new Dictionary<string, string> { ["app"] = "db" };
        await ClaimAsync("wal", app);
        await ClaimAsync("data", app);
        await ClaimAsync("other", new Dictionary<string, string> { ["app"] = "web" });
        var handles = new Dictionary<string, string> { ["wal"] = await HandleOf("wal"), ["data"] = await HandleOf("data") };
        var before = new Dictionary<string, byte[]> { ["wal"] = Pattern(64 * 1024, 1), ["data"] = Pattern(64 * 1024, 2) };
        foreach (var (claim, data) in before)
        {
            S.Pool.OpenDevice(handles[claim]).Value.Write(MiB, data).ThrowIfFailed();
        }

        await GroupSnapshotAsync("db-snap", Selector("app", "db"));
        var group = await UntilFound(async () => await TryGet(Group, Version, "volumegroupsnapshots", "db-snap") is { } g && Str(g, "status", "readyToUse") == "True" ? g : null, "group never ready");
        Assert.Equal("groups", Str(group, "spec", "volumeGroupSnapshotClassName"));
        Assert.NotNull(Str(group, "status", "creationTime"));
        Assert.Equal(1, _calls.Count("CreateVolumeGroupSnapshot"));
        Assert.Equal(0, _calls.Count("CreateSnapshot"));

        // Written after the cut: the restores must not see it.
        foreach (var (claim, handle) in handles)
        {
            S.Pool.OpenDevice(handle).Value.Write(MiB, Pattern(64 * 1024, 9)).ThrowIfFailed();
        }

        string contentName = Str(group, "status", "boundVolumeGroupSnapshotContentName")!;
        var content = await TryGet(Group, Version, "volumegroupsnapshotcontents", contentName, cluster: true);
        Assert.Equal(handles.Values.Order(StringComparer.Ordinal), content!.Value.GetProperty("spec").GetProperty("source").GetProperty("volumeHandles").EnumerateArray().Select(h => h.GetString()));
        var infos = content.Value.GetProperty("status").GetProperty("volumeSnapshotInfoList").EnumerateArray().ToList();
        Assert.Equal(handles.Values.Order(StringComparer.Ordinal), infos.Select(i => i.GetProperty("volumeHandle").GetString()).Order(StringComparer.Ordinal));

        // A member per claim, bound both ways, with its claim and group written on it; and its content marked as a group member.
        var members = (await List("snapshot.storage.k8s.io", "v1", "volumesnapshots")).Where(s => Str(s, "metadata", "labels", "dolly.io/volume-group-snapshot") == "db-snap").ToList();
        Assert.Equal(2, members.Count);
        var memberByClaim = members.ToDictionary(m => Str(m, "metadata", "annotations", "dolly.io/source-persistent-volume-claim")!, m => m);
        Assert.Equal(["data", "wal"], memberByClaim.Keys.Order(StringComparer.Ordinal));
        foreach (var (claim, member) in memberByClaim)
        {
            Assert.Equal("True", Str(member, "status", "readyToUse"));
            Assert.Equal("db-snap", Str(member, "status", "volumeGroupSnapshotName"));
            var vsc = await TryGet("snapshot.storage.k8s.io", "v1", "volumesnapshotcontents", Str(member, "status", "boundVolumeSnapshotContentName")!, cluster: true);
            Assert.Equal(Str(member, "metadata", "name"), Str(vsc, "spec", "volumeSnapshotRef", "name"));
            Assert.Equal(Str(member, "metadata", "uid"), Str(vsc, "spec", "volumeSnapshotRef", "uid"));
            Assert.Equal(Str(content, "status", "volumeGroupSnapshotHandle"), Str(vsc, "status", "volumeGroupSnapshotHandle"));
            string snapshotHandle = Str(vsc, "status", "snapshotHandle")!;
            Assert.Contains(infos, i => i.GetProperty("snapshotHandle").GetString() == snapshotHandle && i.GetProperty("volumeHandle").GetString() == handles[claim]);

            await ClaimAsync("restored-" + claim, source: new V1TypedLocalObjectReference { ApiGroup = "snapshot.storage.k8s.io", Kind = "VolumeSnapshot", Name = Str(member, "metadata", "name") });
            Assert.Equal(before[claim], Read(await HandleOf("restored-" + claim), MiB, 64 * 1024));
        }

        // A member alone cannot go: it stays, and so do its content and its snapshot.
        string lone = Str(memberByClaim["wal"], "metadata", "name")!;
        await K.CustomObjects.DeleteNamespacedCustomObjectAsync("snapshot.storage.k8s.io", "v1", "default", "volumesnapshots", lone, cancellationToken: Ct);
        await Task.Delay(500, Ct);
        Assert.NotNull(Str(await TryGet("snapshot.storage.k8s.io", "v1", "volumesnapshots", lone), "metadata", "deletionTimestamp"));
        Assert.Equal(2, S.Pool.ListDevices(Storage.DeviceKind.Snapshot).Count);

        // The group takes its members, their contents and the driver's snapshots with it, in one call.
        await K.CustomObjects.DeleteNamespacedCustomObjectAsync(Group, Version, "default", "volumegroupsnapshots", "db-snap", cancellationToken: Ct);
        await Until(async () => await TryGet(Group, Version, "volumegroupsnapshotcontents", contentName, cluster: true) is null, "group content never deleted");
        await Until(async () => await TryGet(Group, Version, "volumegroupsnapshots", "db-snap") is null, "group snapshot never deleted");
        await Until(async () => (await List("snapshot.storage.k8s.io", "v1", "volumesnapshotcontents", cluster: true)).Count == 0, "member contents never deleted");
        Assert.Empty(await List("snapshot.storage.k8s.io", "v1", "volumesnapshots"));
        Assert.Empty(S.Pool.ListDevices(Storage.DeviceKind.Snapshot));
        Assert.Equal(1, _calls.Count("DeleteVolumeGroupSnapshot"));
        Assert.Equal(0, _calls.Count("DeleteSnapshot"));

        // The whole life (claims, cut, members, restores, deletion) found every related object through an index.
        Assert.Equal(0, Walks());
    }

    [Fact]
    public async Task WriterAlternatingBetweenTwoVolumes_RestoredPairShowsNoTear()
    {
        // The writer puts sequence number n on the WAL volume, then n on the data volume: at every instant wal is
        // data or data + 1. A group snapshot cut one volume after the other could catch data ahead of wal, or
        // wal ahead by more than one.
        await GroupClassAsync("groups", "Delete", isDefault: true);
        var labels = new Dictionary<string, string> { ["app"] = "seq" };
        await ClaimAsync("seq-wal", labels);
        await ClaimAsync("seq-data", labels);
        var wal = S.Pool.OpenDevice(await HandleOf("seq-wal")).Value;
        var data = S.Pool.OpenDevice(await HandleOf("seq-data")).Value;
        long written = 0;
        using var stopWriter = new CancellationTokenSource();
        var writer = Task.Run(
            () =>
            {
                var block = new byte[4096];
                for (long n = 1; !stopWriter.IsCancellationRequested; n++)
                {
                    BitConverter.TryWriteBytes(block, n);
                    wal.Write(0, block).ThrowIfFailed();
                    data.Write(0, block).ThrowIfFailed();
                    Interlocked.Exchange(ref written, n);
                }
            },
            Ct);
        await Until(() => Task.FromResult(Interlocked.Read(ref written) > 200), "the writer never got going");
        await GroupSnapshotAsync("seq-snap", Selector("app", "seq"));
        await UntilFound(async () => await TryGet(Group, Version, "volumegroupsnapshots", "seq-snap") is { } g && Str(g, "status", "readyToUse") == "True" ? g : null, "group never ready");
        await stopWriter.CancelAsync();
        await writer;

        var members = (await List("snapshot.storage.k8s.io", "v1", "volumesnapshots")).Where(m => Str(m, "metadata", "labels", "dolly.io/volume-group-snapshot") == "seq-snap")
            .ToDictionary(m => Str(m, "metadata", "annotations", "dolly.io/source-persistent-volume-claim")!, m => Str(m, "metadata", "name")!);
        var seen = new Dictionary<string, long>();
        foreach (var (claim, member) in members)
        {
            await ClaimAsync("back-" + claim, source: new V1TypedLocalObjectReference { ApiGroup = "snapshot.storage.k8s.io", Kind = "VolumeSnapshot", Name = member });
            seen[claim] = BitConverter.ToInt64(Read(await HandleOf("back-" + claim), 0, 4096));
        }

        Assert.InRange(seen["seq-data"], 200, Interlocked.Read(ref written));
        Assert.InRange(seen["seq-wal"] - seen["seq-data"], 0, 1);
    }

    [Fact]
    public async Task RetainPolicy_ContentOutlivesTheGroup_AndBindsAgainPreProvisioned()
    {
        await GroupClassAsync("keep", "Retain", isDefault: true);
        await ClaimAsync("a", new Dictionary<string, string> { ["set"] = "x" });
        await ClaimAsync("b", new Dictionary<string, string> { ["set"] = "x" });
        await GroupSnapshotAsync("first", Selector("set", "x"));
        var group = await UntilFound(async () => await TryGet(Group, Version, "volumegroupsnapshots", "first") is { } g && Str(g, "status", "readyToUse") == "True" ? g : null, "group never ready");
        var content = await TryGet(Group, Version, "volumegroupsnapshotcontents", Str(group, "status", "boundVolumeGroupSnapshotContentName")!, cluster: true);
        await K.CustomObjects.DeleteNamespacedCustomObjectAsync(Group, Version, "default", "volumegroupsnapshots", "first", cancellationToken: Ct);
        await Until(async () => await TryGet(Group, Version, "volumegroupsnapshots", "first") is null, "group never deleted");
        Assert.Equal(2, S.Pool.ListDevices(Storage.DeviceKind.Snapshot).Count);
        Assert.NotNull(await TryGet(Group, Version, "volumegroupsnapshotcontents", Str(content, "metadata", "name")!, cluster: true));

        // The retained group, brought back under a new name by hand.
        string handle = Str(content, "status", "volumeGroupSnapshotHandle")!;
        var ids = content!.Value.GetProperty("status").GetProperty("volumeSnapshotInfoList").EnumerateArray().Select(i => i.GetProperty("snapshotHandle").GetString()!).ToList();
        await K.CustomObjects.CreateClusterCustomObjectAsync(
            new Dictionary<string, object>
            {
                ["apiVersion"] = $"{Group}/{Version}",
                ["kind"] = "VolumeGroupSnapshotContent",
                ["metadata"] = new Dictionary<string, object> { ["name"] = "imported" },
                ["spec"] = new Dictionary<string, object>
                {
                    ["deletionPolicy"] = "Delete",
                    ["driver"] = "csi.dolly.io",
                    ["source"] = new Dictionary<string, object> { ["groupSnapshotHandles"] = new Dictionary<string, object> { ["volumeGroupSnapshotHandle"] = handle, ["volumeSnapshotHandles"] = ids } },
                    ["volumeGroupSnapshotRef"] = new Dictionary<string, object> { ["name"] = "second", ["namespace"] = "default" },
                },
            },
            Group,
            Version,
            "volumegroupsnapshotcontents",
            cancellationToken: Ct);
        await GroupSnapshotAsync("second", new Dictionary<string, object> { ["volumeGroupSnapshotContentName"] = "imported" });
        await Until(async () => Str(await TryGet(Group, Version, "volumegroupsnapshots", "second"), "status", "readyToUse") == "True", "pre-provisioned group never ready");
        Assert.Equal(0, _calls.Count("CreateSnapshot"));
        Assert.Equal(1, _calls.Count("CreateVolumeGroupSnapshot"));
    }

    public static TheoryData<string, string, string> BadInput() => new()
    {
        { "nothing-matches", "selector-none", "no PersistentVolumeClaim in namespace default matches the selector app=none" },
        { "not-bound", "selector-pending", "PersistentVolumeClaim default/pending is not Bound" },
        { "missing-class", "class-missing", "VolumeGroupSnapshotClass nope does not exist" },
        { "other-driver-class", "class-other", "VolumeGroupSnapshotClass elsewhere is of driver other.example.com, but the claims are volumes of csi.dolly.io" },
        { "no-default", "no-default", "cannot find a default VolumeGroupSnapshotClass for driver csi.dolly.io" },
        { "pre-provisioned-missing", "content-missing", "VolumeGroupSnapshotContent absent does not exist" },
        { "mixed-drivers", "other-driver-claim", "PersistentVolumeClaim default/foreign is a volume of driver other.example.com, the others of csi.dolly.io: one group snapshot is cut by one driver" },
    };

    [Theory]
    [MemberData(nameof(BadInput))]
    public async Task BadInput_ErrorAndEventNameIt_NothingCut(string name, string setUp, string expected)
    {
        await GroupClassAsync("elsewhere", "Delete", isDefault: false, driver: "other.example.com");
        await GroupClassAsync("not-default", "Delete", isDefault: false);
        await ClaimAsync("bound", new Dictionary<string, string> { ["app"] = "db" });
        switch (setUp)
        {
            case "selector-none":
                await GroupClassAsync("groups", "Delete", isDefault: true);
                await GroupSnapshotAsync(name, Selector("app", "none"));
                break;
            case "selector-pending":
                await GroupClassAsync("groups", "Delete", isDefault: true);
                await ClaimAsync("pending", new Dictionary<string, string> { ["app"] = "db" }, storageClass: "no-such-class");
                await GroupSnapshotAsync(name, Selector("app", "db"));
                break;
            case "class-missing":
                await GroupSnapshotAsync(name, Selector("app", "db"), className: "nope");
                break;
            case "class-other":
                await GroupSnapshotAsync(name, Selector("app", "db"), className: "elsewhere");
                break;
            case "no-default":
                await GroupSnapshotAsync(name, Selector("app", "db"));
                break;
            case "other-driver-claim":
                await GroupClassAsync("groups", "Delete", isDefault: true);
                await K.CoreV1.CreatePersistentVolumeAsync(
                    new V1PersistentVolume
                    {
                        Metadata = new V1ObjectMeta { Name = "foreign-pv" },
                        Spec = new V1PersistentVolumeSpec
                        {
                            Capacity = new Dictionary<string, ResourceQuantity> { ["storage"] = new("16Mi") },
                            AccessModes = ["ReadWriteOnce"],
                            StorageClassName = "",
                            Csi = new V1CSIPersistentVolumeSource { Driver = "other.example.com", VolumeHandle = "elsewhere-1" },
                        },
                    },
                    cancellationToken: Ct);
                var foreign = DriverStack.Claim("foreign", "16Mi");
                foreign.Metadata.Labels = new Dictionary<string, string> { ["app"] = "db" };
                foreign.Spec.StorageClassName = "";
                foreign.Spec.VolumeName = "foreign-pv";
                await K.CoreV1.CreateNamespacedPersistentVolumeClaimAsync(foreign, "default", cancellationToken: Ct);
                await Until(async () => (await K.CoreV1.ReadNamespacedPersistentVolumeClaimAsync("foreign", "default", cancellationToken: Ct)).Status?.Phase == "Bound", "foreign claim never bound");
                await GroupSnapshotAsync(name, Selector("app", "db"));
                break;
            case "content-missing":
                await GroupSnapshotAsync(name, new Dictionary<string, object> { ["volumeGroupSnapshotContentName"] = "absent" });
                break;
            default:
                throw new ArgumentOutOfRangeException(nameof(setUp), setUp, null);
        }

        // The controller's cache may see a claim a moment before its binding (the mixed-drivers case): it reports
        // what it sees and retries, so the error settles on the one named here.
        string? seen = null;
        var group = await Eventually.Until(
            async () => await TryGet(Group, Version, "volumegroupsnapshots", name) is { } g && (seen = Str(g, "status", "error", "message")) == expected ? (object)g : null,
            () => $"the status error never read \"{expected}\"; last: \"{seen}\"",
            60) is JsonElement found ? found : throw new InvalidOperationException("not a JSON object");
        Assert.Equal(expected, Str(group, "status", "error", "message"));
        Assert.Equal("False", Str(group, "status", "readyToUse"));
        // Likewise the events: an earlier attempt may have recorded another message under the same reason, and the
        // one named here may be recorded a moment after the status reads it, so wait for it rather than the first.
        string reason = setUp == "no-default" ? "SetDefaultGroupSnapshotClassFailed" : setUp == "content-missing" ? "GroupSnapshotContentMisbound" : "GroupSnapshotCreationFailed";
        string events = "";
        await Eventually.Until(async () => (events = await Events(name, reason)).Contains(expected, StringComparison.Ordinal), () => $"no {reason} event saying \"{expected}\"; events: \"{events}\"");
        Assert.Contains(expected, events, StringComparison.Ordinal);
        Assert.Empty(await List(Group, Version, "volumegroupsnapshotcontents", cluster: true));
        Assert.Empty(S.Pool.ListDevices(Storage.DeviceKind.Snapshot));
        Assert.Equal(0, _calls.Count("CreateVolumeGroupSnapshot"));

        // Deleting a group snapshot that never bound leaves nothing behind.
        await K.CustomObjects.DeleteNamespacedCustomObjectAsync(Group, Version, "default", "volumegroupsnapshots", name, cancellationToken: Ct);
        await Until(async () => await TryGet(Group, Version, "volumegroupsnapshots", name) is null, "group never deleted");
    }

    [Fact]
    public async Task NoDefaultClassYet_Waits_ThenCutOnceOneIsMade()
    {
        await ClaimAsync("late", new Dictionary<string, string> { ["app"] = "late" });
        await GroupSnapshotAsync("waits", Selector("app", "late"));
        await UntilFound(async () => await TryGet(Group, Version, "volumegroupsnapshots", "waits") is { } g && Str(g, "status", "error", "message") is not null ? g : null, "no error while no class exists");
        Assert.Empty(S.Pool.ListDevices(Storage.DeviceKind.Snapshot));
        await GroupClassAsync("arrives", "Delete", isDefault: true);
        var group = await UntilFound(async () => await TryGet(Group, Version, "volumegroupsnapshots", "waits") is { } g && Str(g, "status", "readyToUse") == "True" ? g : null, "never cut after the class was made");
        Assert.Null(Str(group, "status", "error"));
        Assert.Equal("arrives", Str(group, "spec", "volumeGroupSnapshotClassName"));
        Assert.Single(S.Pool.ListDevices(Storage.DeviceKind.Snapshot));
    }

    [Fact]
    public async Task VolumeGoneBeforeTheCut_ContentAndGroupSayWhich_NothingCut_ThenDeletes()
    {
        // A claim deleted while its group is being created (upstream #1183): the driver cannot find the volume.
        await GroupClassAsync("groups", "Delete", isDefault: true);
        await ClaimAsync("stays", new Dictionary<string, string> { ["app"] = "db" });
        var going = await ClaimAsync("goes", new Dictionary<string, string> { ["app"] = "db" });
        string goneHandle = await HandleOf("goes");
        S.Pool.Delete(goneHandle).ThrowIfFailed();
        await GroupSnapshotAsync("torn", Selector("app", "db"));
        var group = await UntilFound(async () => await TryGet(Group, Version, "volumegroupsnapshots", "torn") is { } g && Str(g, "status", "error", "message") is { } m && m.Contains(goneHandle, StringComparison.Ordinal) ? g : null, "no error naming the missing volume");
        Assert.Contains("NotFound", Str(group, "status", "error", "message"), StringComparison.Ordinal);
        Assert.Empty(S.Pool.ListDevices(Storage.DeviceKind.Snapshot));
        Assert.NotNull(going);

        await K.CustomObjects.DeleteNamespacedCustomObjectAsync(Group, Version, "default", "volumegroupsnapshots", "torn", cancellationToken: Ct);
        await Until(async () => await TryGet(Group, Version, "volumegroupsnapshots", "torn") is null, "group never deleted");
        await Until(async () => (await List(Group, Version, "volumegroupsnapshotcontents", cluster: true)).Count == 0, "content never deleted");
        Assert.Empty(S.Pool.ListDevices(Storage.DeviceKind.Snapshot));
    }
}
