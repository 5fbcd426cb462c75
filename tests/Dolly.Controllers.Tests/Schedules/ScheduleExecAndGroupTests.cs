using System.Collections.Concurrent;
using System.Text.Json;
using Dolly.Controllers.Hooks;
using Dolly.Controllers.Model;
using Dolly.Controllers.Schedules;
using k8s;
using k8s.Models;
using Microsoft.Extensions.Time.Testing;

namespace Dolly.Controllers.Tests.Schedules;

/// <summary>
/// Schedules with exec hooks and group schedules on the embedded stack (API server, controllers, CSI driver over a
/// real pool), with a fake clock. The exec is a recording stand-in (the transport has its own tests): it looks at
/// the API server when each hook runs, so the tests see that pre hooks run before the snapshot exists and post
/// hooks after it is cut. A second harness with no pod exec shows what the embedded API server of dolly up says.
/// </summary>
public sealed class ScheduleExecAndGroupTests : IAsyncLifetime
{
    private const string Ns = "default";
    private const string GroupApi = "groupsnapshot.storage.k8s.io";
    private const string GroupVersion = "v1beta2";

    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    private readonly FakeTimeProvider _clock = new(DateTimeOffset.UtcNow);
    private readonly RecordingExec _exec = new();
    private ControllerHarness? _h;

    private Kubernetes K => _h!.Client;

    /// <summary>Runs every command at once, recording it with what the API server held at that moment.</summary>
    private sealed class RecordingExec : IPodExec
    {
        public Kubernetes? Client { get; set; }

        public Func<string, string>? Snapshot { get; set; }

        public ConcurrentQueue<string> Log { get; } = new();

        public HashSet<string> Failing { get; } = new(StringComparer.Ordinal);

        public async Task<ExecResult> RunAsync(ExecTarget target, IReadOnlyList<string> command, CancellationToken cancellationToken)
        {
            string state = Snapshot is { } probe ? probe(target.Pod) : "";
            string seen = "none";
            if (state.Length > 0)
            {
                try
                {
                    var s = Deserialize<VolumeSnapshot>(await Client!.CustomObjects.GetNamespacedCustomObjectAsync(Names.SnapshotGroup, "v1", Ns, "volumesnapshots", state, cancellationToken));
                    seen = s.Status?.CreationTime is null ? "uncut" : "cut";
                }
                catch (k8s.Autorest.HttpOperationException)
                {
                }
            }

            Log.Enqueue($"{target.Pod}/{target.Container}:{command[0]}:{seen}");
            return Failing.Contains(command[0]) ? new ExecResult(1, "command terminated with non-zero exit code", "", "cannot lock\n") : new ExecResult(0, null, "", "");
        }
    }

    public async ValueTask InitializeAsync()
    {
        _h = await ControllerHarness.StartAsync("schedule-hooks", Ct, time: _clock, podExec: _exec);
        _exec.Client = _h.Client;
    }

    public async ValueTask DisposeAsync()
    {
        if (_h is not null)
        {
            await _h.DisposeAsync();
        }
    }

    [Fact]
    public async Task ExecHooks_PreBeforeTheSnapshotExists_PostAfterItIsCut_AndAFailedPreStopsIt()
    {
        await ClaimAsync("db", "data");
        await PodAsync("db-0", "db");
        await PodAsync("unrelated", "other");
        var start = _clock.GetUtcNow();
        string first = ScheduleNames.SnapshotName("db", "hooked", start);
        _exec.Snapshot = _ => first;
        await ScheduleAsync("hooked", group: false, hooks: Hooks(pre: ["fsfreeze-ish", "flush"], post: ["resume"]));

        var result = await Until(async () => await ReadScheduleAsync("hooked") is { Status.Claims: [{ Result: "Created" } r] } ? r : null, "the hooked run");
        Assert.Equal(["db-0/app:fsfreeze-ish:none", "db-0/app:flush:none", "db-0/app:resume:cut"], _exec.Log);
        Assert.Equal("exec hooks in 1 pod: 2/2 pre ok, 1/1 post ok", result.Hooks);
        Assert.Equal(first, result.Snapshot);
        var snapshot = await ReadSnapshotAsync(first);
        Assert.Equal("exec hooks in 1 pod: 2/2 pre ok, 1/1 post ok", snapshot.Metadata.Annotations[ExecHookNames.ResultAnnotation]);
        Assert.False(snapshot.Metadata.Annotations.ContainsKey(ExecHookNames.PostPendingAnnotation));

        // The next run: a pre hook fails (onError Fail): no snapshot, the pod resumed all the same.
        _exec.Failing.Add("flush");
        while (_exec.Log.TryDequeue(out _))
        {
        }

        var hour = NextHour(start);
        string second = ScheduleNames.SnapshotName("db", "hooked", hour);
        _exec.Snapshot = _ => second;
        await AdvanceToAsync(hour, "hooked");
        var failed = await Until(async () => await ReadScheduleAsync("hooked") is { Status.Claims: [{ Result: "Failed" } r] } ? r : null, "the failed run");
        Assert.Equal(["db-0/app:fsfreeze-ish:none", "db-0/app:flush:none", "db-0/app:resume:none"], _exec.Log);
        Assert.Equal("a pre hook failed, so no snapshot was taken: pre hook [flush] in default/db-0 container app: exit code 1: cannot lock", failed.Message);
        Assert.Null(failed.Snapshot);
        Assert.DoesNotContain(second, (await SnapshotsAsync()).Select(s => s.Metadata.Name));
    }

    [Fact]
    public async Task PostHooks_LeftPendingByARestart_RunOnTheNextLook_PreHooksDoNot()
    {
        // What a controller that stopped between the cut and the post hooks leaves: the run's snapshot, still marked.
        await ClaimAsync("db", "data");
        await PodAsync("db-0", "db");
        var start = _clock.GetUtcNow();
        string name = ScheduleNames.SnapshotName("db", "resumed", start);
        _exec.Snapshot = _ => name;
        await K.CustomObjects.CreateNamespacedCustomObjectAsync(
            new Dictionary<string, object>
            {
                ["apiVersion"] = "snapshot.storage.k8s.io/v1",
                ["kind"] = "VolumeSnapshot",
                ["metadata"] = new Dictionary<string, object>
                {
                    ["name"] = name,
                    ["labels"] = new Dictionary<string, string> { [ScheduleNames.ScheduleLabel] = "resumed" },
                    ["annotations"] = new Dictionary<string, string> { [ExecHookNames.PostPendingAnnotation] = "true" },
                },
                ["spec"] = new Dictionary<string, object> { ["source"] = new Dictionary<string, object> { ["persistentVolumeClaimName"] = "db" } },
            },
            Names.SnapshotGroup, "v1", Ns, "volumesnapshots", cancellationToken: Ct);
        await Until(async () => (await ReadSnapshotAsync(name)).Status?.CreationTime is not null, "the snapshot cut");

        await ScheduleAsync("resumed", group: false, hooks: Hooks(pre: ["quiesce"], post: ["resume"]));
        var result = await Until(async () => await ReadScheduleAsync("resumed") is { Status.Claims: [{ Result: "Created" } r] } ? r : null, "the repeated run");
        Assert.Equal(["db-0/app:resume:cut"], _exec.Log);
        Assert.Equal("post hooks run after a restart: exec hooks in 1 pod: 0/0 pre ok, 1/1 post ok", result.Hooks);
        var snapshot = await ReadSnapshotAsync(name);
        Assert.False(snapshot.Metadata.Annotations.ContainsKey(ExecHookNames.PostPendingAnnotation));
        Assert.Equal(result.Hooks, snapshot.Metadata.Annotations[ExecHookNames.ResultAnnotation]);
    }

    [Fact]
    public async Task GroupSchedule_OneGroupSnapshotPerRun_HooksAroundIt_RetentionByGroup()
    {
        await GroupClassAsync();
        await ClaimAsync("db", "data");
        await ClaimAsync("wal", "data");
        await ClaimAsync("scratch", "tmp");
        await PodAsync("db-0", "db", "wal");
        var start = _clock.GetUtcNow();
        string first = ScheduleNames.GroupSnapshotName("nightly", start);
        await ScheduleAsync("nightly", group: true, hooks: Hooks(pre: ["quiesce"], post: ["resume"]), maxCount: 1);

        var run = await Until(async () => await ReadScheduleAsync("nightly") is { Status.Claims: { Count: 2 } c } && c.All(r => r.Result == "Created") ? c : null, "the group run");
        Assert.Equal(["db", "wal"], run.Select(r => r.Name));
        Assert.All(run, r => Assert.Equal(first, r.GroupSnapshot));
        Assert.Equal(["db-0/app:quiesce:none", "db-0/app:resume:none"], _exec.Log);
        Assert.All(run, r => Assert.Equal("exec hooks in 1 pod: 1/1 pre ok, 1/1 post ok", r.Hooks));
        var group = await Until(async () => await ReadGroupAsync(first) is { Status.ReadyToUse: true } g ? g : null, "the group snapshot ready");
        Assert.NotNull(group.Status!.CreationTime);
        Assert.Equal("nightly", group.Metadata.Labels[ScheduleNames.ScheduleLabel]);
        await Until(async () => (await SnapshotsAsync()).Count(s => s.Metadata.OwnerReferences?.Any(o => o.Uid == group.Metadata.Uid) == true) == 2, "two member snapshots");
        var content = Deserialize<VolumeGroupSnapshotContent>(await K.CustomObjects.GetClusterCustomObjectAsync(GroupApi, GroupVersion, "volumegroupsnapshotcontents", group.Status.BoundVolumeGroupSnapshotContentName, Ct));
        Assert.Equal(new[] { _handles["db"], _handles["wal"] }.Order(StringComparer.Ordinal), content.Spec.Source.VolumeHandles!);

        // The next run makes a second group snapshot; maxCount 1 keeps only the newest group.
        var hour = NextHour(start);
        string second = ScheduleNames.GroupSnapshotName("nightly", hour);
        await AdvanceToAsync(hour, "nightly");
        await Until(async () => await ReadGroupAsync(second) is { Status.ReadyToUse: true }, "the second group snapshot ready");
        var kept = await Until(async () => await ReadScheduleAsync("nightly") is { Status.Kept: [{ } only] } && only.Name == second ? only : null, "retention down to the newest group");
        Assert.Equal(("VolumeGroupSnapshot", "retention: maxCount 1"), (kept.Kind, kept.Reason));
        await Until(async () => await ReadGroupAsync(first) is null, "the older group snapshot deleted");
        await Until(async () => (await SnapshotsAsync()).All(s => s.Metadata.OwnerReferences?.Any(o => o.Uid == group.Metadata.Uid) != true), "its members deleted with it");
    }

    [Theory]
    [InlineData(true, false, null, null, null)]
    [InlineData(true, true, null, null, "spec.skipUnchanged compares a claim's snapshots one by one")]
    [InlineData(true, false, true, null, "spec.hooks.freeze freezes one claim's file system around its own cut")]
    [InlineData(false, false, null, "groups", "spec.volumeGroupSnapshotClassName is set but spec.group is not true")]
    [InlineData(true, false, null, "groups", null)]
    public void GroupProblem_NamesTheConflictingField(bool group, bool skipUnchanged, bool? freeze, string? groupClass, string? problem)
    {
        var spec = new SnapshotScheduleSpec { Group = group, SkipUnchanged = skipUnchanged, Hooks = new ScheduleHooks { Freeze = freeze }, VolumeGroupSnapshotClassName = groupClass };
        string? actual = ScheduleController.GroupProblem(spec);
        if (problem is null)
        {
            Assert.Null(actual);
        }
        else
        {
            Assert.StartsWith(problem, actual, StringComparison.Ordinal);
        }
    }

    private static Dictionary<string, object> Hooks(string[] pre, string[] post) => new()
    {
        ["pre"] = pre.Select(c => new Dictionary<string, object> { ["command"] = new[] { c }, ["container"] = "app" }).ToArray(),
        ["post"] = post.Select(c => new Dictionary<string, object> { ["command"] = new[] { c } }).ToArray(),
    };

    private readonly Dictionary<string, string> _handles = [];

    private async Task ClaimAsync(string name, string tier)
    {
        var claim = DriverStack.Claim(name, "1Gi");
        claim.Metadata.Labels = new Dictionary<string, string> { ["tier"] = tier };
        await K.CoreV1.CreateNamespacedPersistentVolumeClaimAsync(claim, Ns, cancellationToken: Ct);
        var bound = await Until(async () => await K.CoreV1.ReadNamespacedPersistentVolumeClaimAsync(name, Ns, cancellationToken: Ct) is { Status.Phase: "Bound" } c ? c : null, $"claim {name} bound");
        var pv = await K.CoreV1.ReadPersistentVolumeAsync(bound.Spec.VolumeName, cancellationToken: Ct);
        _handles[name] = pv.Spec.Csi.VolumeHandle;
    }

    /// <summary>A running pod (as the kubelet would report it) with containers app and side, mounting the claims.</summary>
    private async Task PodAsync(string name, params string[] claims)
    {
        var pod = new V1Pod
        {
            Metadata = new V1ObjectMeta { Name = name },
            Spec = new V1PodSpec
            {
                Containers = [new V1Container { Name = "app", Image = "app" }, new V1Container { Name = "side", Image = "side" }],
                Volumes = [.. claims.Select(c => new V1Volume { Name = c, PersistentVolumeClaim = new V1PersistentVolumeClaimVolumeSource { ClaimName = c } })],
            },
        };
        var made = await K.CoreV1.CreateNamespacedPodAsync(pod, Ns, cancellationToken: Ct);
        made.Status = new V1PodStatus { Phase = "Running" };
        await K.CoreV1.ReplaceNamespacedPodStatusAsync(made, name, Ns, cancellationToken: Ct);
    }

    private Task<object> GroupClassAsync() =>
        K.CustomObjects.CreateClusterCustomObjectAsync(
            new Dictionary<string, object>
            {
                ["apiVersion"] = $"{GroupApi}/{GroupVersion}",
                ["kind"] = "VolumeGroupSnapshotClass",
                ["metadata"] = new Dictionary<string, object> { ["name"] = "groups", ["annotations"] = new Dictionary<string, string> { ["groupsnapshot.storage.kubernetes.io/is-default-class"] = "true" } },
                ["driver"] = "csi.dolly.io",
                ["deletionPolicy"] = "Delete",
            },
            GroupApi,
            GroupVersion,
            "volumegroupsnapshotclasses",
            cancellationToken: Ct);

    private async Task ScheduleAsync(string name, bool group, Dictionary<string, object> hooks, int? maxCount = null)
    {
        var spec = new Dictionary<string, object>
        {
            ["schedule"] = "0 * * * *",
            ["claimSelector"] = new Dictionary<string, object> { ["matchLabels"] = new Dictionary<string, string> { ["tier"] = "data" } },
            ["hooks"] = hooks,
            ["group"] = group,
        };
        if (maxCount is { } n)
        {
            spec["retention"] = new Dictionary<string, object> { ["maxCount"] = n };
        }

        var meta = new Dictionary<string, object> { ["name"] = name, ["annotations"] = new Dictionary<string, string> { [ScheduleNames.RunNowAnnotation] = "" } };
        await K.CustomObjects.CreateNamespacedCustomObjectAsync(
            new Dictionary<string, object> { ["apiVersion"] = ScheduleNames.ApiVersion, ["kind"] = ScheduleNames.NamespacedKind, ["metadata"] = meta, ["spec"] = spec },
            ScheduleNames.Group, ScheduleNames.Version, Ns, ScheduleNames.NamespacedPlural, cancellationToken: Ct);
    }

    /// <summary>Moves the fake clock and makes the controller look (the real requeue timer runs on real time).</summary>
    private async Task AdvanceToAsync(DateTimeOffset at, string schedule)
    {
        _clock.AdjustTime(at);
        await K.CustomObjects.PatchNamespacedCustomObjectAsync(
            new V1Patch(KubernetesJson.Serialize(new { metadata = new { annotations = new Dictionary<string, string> { ["test/touch"] = at.ToString("O", System.Globalization.CultureInfo.InvariantCulture) } } }), V1Patch.PatchType.MergePatch),
            ScheduleNames.Group, ScheduleNames.Version, Ns, ScheduleNames.NamespacedPlural, schedule, cancellationToken: Ct);
    }

    private async Task<SnapshotSchedule> ReadScheduleAsync(string name) =>
        Deserialize<SnapshotSchedule>(await K.CustomObjects.GetNamespacedCustomObjectAsync(ScheduleNames.Group, ScheduleNames.Version, Ns, ScheduleNames.NamespacedPlural, name, Ct));

    private async Task<VolumeSnapshot> ReadSnapshotAsync(string name) =>
        Deserialize<VolumeSnapshot>(await K.CustomObjects.GetNamespacedCustomObjectAsync(Names.SnapshotGroup, "v1", Ns, "volumesnapshots", name, Ct));

    private async Task<VolumeGroupSnapshot?> ReadGroupAsync(string name)
    {
        try
        {
            var g = Deserialize<VolumeGroupSnapshot>(await K.CustomObjects.GetNamespacedCustomObjectAsync(GroupApi, GroupVersion, Ns, "volumegroupsnapshots", name, Ct));
            return g.Metadata.DeletionTimestamp is null ? g : null;
        }
        catch (k8s.Autorest.HttpOperationException ex) when (ex.Response.StatusCode == System.Net.HttpStatusCode.NotFound)
        {
            return null;
        }
    }

    private async Task<List<VolumeSnapshot>> SnapshotsAsync()
    {
        var list = Deserialize<CustomObjectList<VolumeSnapshot>>(await K.CustomObjects.ListNamespacedCustomObjectAsync(Names.SnapshotGroup, "v1", Ns, "volumesnapshots", cancellationToken: Ct));
        return [.. list.Items.Where(s => s.Metadata.DeletionTimestamp is null)];
    }

    private static T Deserialize<T>(object o) => KubernetesJson.Deserialize<T>(((JsonElement)o).GetRawText());

    private static DateTimeOffset NextHour(DateTimeOffset t) => new DateTimeOffset(t.Year, t.Month, t.Day, t.Hour, 0, 0, TimeSpan.Zero).AddHours(1);

    private static Task<T> Until<T>(Func<Task<T?>> probe, string what, int seconds = 60) => Eventually.Until(probe, what, seconds);

    private static async Task Until(Func<Task<bool>> probe, string what) => await Until<object>(async () => await probe() ? true : null, what);
}
