using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using Dolly.Controllers.Model;
using Dolly.Controllers.Schedules;
using Dolly.Csi.V1;
using k8s;
using k8s.Models;

namespace Dolly.Controllers.Tests.Schedules;

/// <summary>The freeze annotations and hooks.freeze read as specified; every malformed value named.</summary>
public sealed class FreezeRequestTests
{
    public static TheoryData<string?, string?, string?, string?> Annotations() => new()
    {
        // freeze, timeout, onError -> expected "timeout-ms/continue" or "error: <fragment>", or null for no freeze
        { null, null, null, null },
        { "false", "2s", null, null },
        { "true", null, null, "2000/False" },
        { "true", "500ms", "Continue", "500/True" },
        { "true", "1s500ms", "Fail", "1500/False" },
        { "true", "60s", null, "60000/False" },
        { "yes", null, null, "error: dolly.io/freeze is \"yes\"" },
        { "true", "61s", null, "error: dolly.io/freeze-timeout is \"61s\"" },
        { "true", "0ms", null, "error: dolly.io/freeze-timeout is \"0ms\"" },
        { "true", "2", null, "error: dolly.io/freeze-timeout is \"2\"" },
        { "true", "2m", null, "error: dolly.io/freeze-timeout is \"2m\"" },
        { "true", "", null, "error: dolly.io/freeze-timeout is \"\"" },
        { "true", "9999999999s", null, "error: dolly.io/freeze-timeout" },
        { "true", null, "Ignore", "error: dolly.io/freeze-on-error is \"Ignore\": it must be Fail or Continue" },
    };

    [Theory]
    [MemberData(nameof(Annotations))]
    public void Annotations_AreReadAsSpecified(string? freeze, string? timeout, string? onError, string? expected)
    {
        var annotations = new Dictionary<string, string>();
        if (freeze is not null)
        {
            annotations[FreezeNames.FreezeAnnotation] = freeze;
        }

        if (timeout is not null)
        {
            annotations[FreezeNames.TimeoutAnnotation] = timeout;
        }

        if (onError is not null)
        {
            annotations[FreezeNames.OnErrorAnnotation] = onError;
        }

        var (request, error) = FreezeRequest.Of(annotations);
        if (expected is null)
        {
            Assert.Null(request);
            Assert.Null(error);
        }
        else if (expected.StartsWith("error: ", StringComparison.Ordinal))
        {
            Assert.Null(request);
            Assert.NotNull(error);
            Assert.Contains(expected["error: ".Length..], error, StringComparison.Ordinal);
        }
        else
        {
            Assert.Null(error);
            Assert.Equal(expected, $"{request!.Timeout.TotalMilliseconds}/{request.ContinueOnError}");
        }
    }

    [Theory]
    [InlineData(null, null, null)]
    [InlineData("2s", "Continue", null)]
    [InlineData("2 s", null, "spec.hooks.freezeTimeout \"2 s\"")]
    [InlineData(null, "fail", "spec.hooks.onError \"fail\" must be Fail or Continue")]
    public void HooksSpec_Problems(string? timeout, string? onError, string? problem)
    {
        string? found = ScheduleController.HooksProblem(new ScheduleHooks { Freeze = true, FreezeTimeout = timeout, OnError = onError });
        if (problem is null)
        {
            Assert.Null(found);
        }
        else
        {
            Assert.NotNull(found);
            Assert.Contains(problem, found, StringComparison.Ordinal);
        }
    }
}

/// <summary>
/// Frozen cuts on the embedded stack with the driver serving this machine as its node (as on <c>dolly up</c>): a
/// claim's volume staged for real (nbdfuse, loop device, ext4), a one-off VolumeSnapshot annotated
/// dolly.io/freeze and a schedule with hooks.freeze cut frozen with the window reported; a freeze that fails
/// (the file system already frozen by an operator's fsfreeze) fails the snapshot under onError Fail until it can
/// freeze, and is reported and skipped under Continue; a claim staged nowhere is cut without a freeze.
/// </summary>
public sealed class FreezeHookStackTests : IAsyncLifetime
{
    private const string Ns = "default";

    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    private ControllerHarness? _h;
    private readonly List<(string Volume, string Staging)> _staged = [];

    private Kubernetes K => _h!.Client;

    public async ValueTask InitializeAsync()
    {
        if (Environment.UserName != "root" || !File.Exists("/dev/fuse") || !File.Exists("/dev/loop-control"))
        {
            return;
        }

        _h = await ControllerHarness.StartAsync("freeze", Ct, node: true);
    }

    public async ValueTask DisposeAsync()
    {
        if (_h is not null)
        {
            var node = new Dolly.Csi.V1.Node.NodeClient(_h.Stack.Csi);
            foreach (var (volume, staging) in _staged)
            {
                await node.NodeUnstageVolumeAsync(new NodeUnstageVolumeRequest { VolumeId = volume, StagingTargetPath = staging }, cancellationToken: CancellationToken.None);
            }

            await _h.DisposeAsync();
        }
    }

    [Fact]
    public async Task OneOffAndScheduled_CutFrozen_FailuresFollowOnError()
    {
        Assert.SkipWhen(_h is null, "staging a volume needs root, /dev/fuse and loop devices");
        await ClaimAsync("db", stage: true);
        await ClaimAsync("idle", stage: false);
        string dbStaging = _staged.Single().Staging;

        // One-off: frozen around the cut, the window on the snapshot and in an event.
        // With the default 2 s deadline a cut on a busy machine can outlast the freeze; the default itself is in the table above.
        await SnapshotAsync("db-once", "db", new() { [FreezeNames.FreezeAnnotation] = "true", [FreezeNames.TimeoutAnnotation] = "30s" });
        var once = await Until(async () => await ReadyAsync("db-once"), "db-once ready");
        string summary = once.Metadata.Annotations[FreezeNames.ResultAnnotation];
        long us = long.Parse(once.Metadata.Annotations[FreezeNames.FrozenMicrosecondsAnnotation], CultureInfo.InvariantCulture);
        Assert.StartsWith($"frozen {us} us: {dbStaging} frozen", summary, StringComparison.Ordinal);
        Assert.InRange(us, 1, 30_000_000);
        await Until(async () => (await EventsAsync("db-once")).Any(e => e.Reason == "Frozen" && e.Type == "Normal" && e.Message == summary), "the Frozen event");

        // A claim staged nowhere: cut at once, no freeze needed, said so.
        await SnapshotAsync("idle-once", "idle", new() { [FreezeNames.FreezeAnnotation] = "true" });
        var idle = await Until(async () => await ReadyAsync("idle-once"), "idle-once ready");
        Assert.StartsWith("not frozen: the volume is not staged on any node", idle.Metadata.Annotations[FreezeNames.ResultAnnotation], StringComparison.Ordinal);
        Assert.False(idle.Metadata.Annotations.ContainsKey(FreezeNames.FrozenMicrosecondsAnnotation));

        // The file system frozen by someone else: Fail leaves the snapshot unready with the reason, Continue cuts it.
        await RunAsync("fsfreeze", "-f", dbStaging);
        try
        {
            // A timeout far above what refusing takes, even on a busy machine: the failure must be the refusal, not the clock.
            await SnapshotAsync("db-fail", "db", new() { [FreezeNames.FreezeAnnotation] = "true", [FreezeNames.TimeoutAnnotation] = "30s" });
            var failed = await Until(async () => await ReadAsync("db-fail") is { Status.Error.Message: { } m } ? m : null, "db-fail's error");
            Assert.Contains("the freeze failed, so the snapshot was not cut (onError Fail)", failed, StringComparison.Ordinal);
            Assert.True(failed.Contains("already frozen", StringComparison.Ordinal), failed);
            // One at a time: two freezes of one volume at once are refused by the node ("another freeze of this
            // volume is in progress"), which is not the case under test.
            await SnapshotAsync("db-continue", "db", new() { [FreezeNames.FreezeAnnotation] = "true", [FreezeNames.OnErrorAnnotation] = FreezeNames.Continue });
            var continued = await Until(async () => await ReadyAsync("db-continue"), "db-continue ready");
            Assert.StartsWith("not frozen (onError Continue):", continued.Metadata.Annotations[FreezeNames.ResultAnnotation], StringComparison.Ordinal);
            await Until(async () => (await EventsAsync("db-continue")).Any(e => e.Reason == "NotFrozen" && e.Type == "Warning"), "the NotFrozen warning");
            Assert.NotEqual(true, (await ReadAsync("db-fail")).Status?.ReadyToUse);
        }
        finally
        {
            await RunAsync("fsfreeze", "-u", dbStaging);
        }

        // Once it can freeze, the failed one is retried and cut frozen.
        var retried = await Until(async () => await ReadyAsync("db-fail"), "db-fail ready after the operator's thaw");
        Assert.StartsWith("frozen ", retried.Metadata.Annotations[FreezeNames.ResultAnnotation], StringComparison.Ordinal);

        // A schedule with hooks.freeze: its snapshots carry the annotations; status reports each claim's window.
        await K.CustomObjects.CreateNamespacedCustomObjectAsync(
            new Dictionary<string, object>
            {
                ["apiVersion"] = ScheduleNames.ApiVersion,
                ["kind"] = ScheduleNames.NamespacedKind,
                ["metadata"] = new Dictionary<string, object> { ["name"] = "nightly", ["annotations"] = new Dictionary<string, string> { [ScheduleNames.RunNowAnnotation] = "" } },
                ["spec"] = new Dictionary<string, object>
                {
                    ["schedule"] = "@daily",
                    ["hooks"] = new Dictionary<string, object> { ["freeze"] = true, ["freezeTimeout"] = "10s", ["onError"] = "Fail" },
                },
            },
            ScheduleNames.Group, ScheduleNames.Version, Ns, ScheduleNames.NamespacedPlural, cancellationToken: Ct);
        var claims = await Until(
            async () => await ReadScheduleAsync("nightly") is { Status.Claims: { Count: 2 } c } && c.All(r => r.Freeze is not null) ? c : null,
            "the schedule's freeze results");
        var db = claims.Single(r => r.Name == "db");
        Assert.NotNull(db.FrozenMicroseconds);
        Assert.NotNull(db.Freeze);
        Assert.StartsWith($"frozen {db.FrozenMicroseconds} us: ", db.Freeze, StringComparison.Ordinal);
        Assert.Null(claims.Single(r => r.Name == "idle").FrozenMicroseconds);
        var scheduled = await ReadAsync(db.Snapshot!);
        Assert.NotNull(scheduled.Metadata.Annotations);
        Assert.Equal("true", scheduled.Metadata.Annotations[FreezeNames.FreezeAnnotation]);
        Assert.Equal("10s", scheduled.Metadata.Annotations[FreezeNames.TimeoutAnnotation]);
        Assert.Equal("Fail", scheduled.Metadata.Annotations[FreezeNames.OnErrorAnnotation]);

        // A malformed annotation is named in the snapshot's error; nothing is cut.
        await SnapshotAsync("db-bad", "db", new() { [FreezeNames.FreezeAnnotation] = "true", [FreezeNames.TimeoutAnnotation] = "forever" });
        var bad = await Until(async () => await ReadAsync("db-bad") is { Status.Error.Message: { } m } ? m : null, "db-bad's error");
        Assert.Contains("dolly.io/freeze-timeout is \"forever\"", bad, StringComparison.Ordinal);
    }

    private async Task ClaimAsync(string name, bool stage)
    {
        await K.CoreV1.CreateNamespacedPersistentVolumeClaimAsync(DriverStack.Claim(name, "64Mi"), Ns, cancellationToken: Ct);
        var claim = await Until(async () => await K.CoreV1.ReadNamespacedPersistentVolumeClaimAsync(name, Ns, cancellationToken: Ct) is { Status.Phase: "Bound" } c ? c : null, $"claim {name} bound");
        if (!stage)
        {
            return;
        }

        var pv = await K.CoreV1.ReadPersistentVolumeAsync(claim.Spec.VolumeName, cancellationToken: Ct);
        string volume = pv.Spec.Csi.VolumeHandle;
        string staging = Path.Combine(_h!.Stack.Directory, "staging", volume);
        var node = new Dolly.Csi.V1.Node.NodeClient(_h.Stack.Csi);
        await node.NodeStageVolumeAsync(
            new NodeStageVolumeRequest
            {
                VolumeId = volume,
                StagingTargetPath = staging,
                VolumeCapability = new VolumeCapability
                {
                    Mount = new VolumeCapability.Types.MountVolume { FsType = "ext4" },
                    AccessMode = new VolumeCapability.Types.AccessMode { Mode = VolumeCapability.Types.AccessMode.Types.Mode.SingleNodeWriter },
                },
            },
            cancellationToken: Ct);
        _staged.Add((volume, staging));
    }

    private Task<object> SnapshotAsync(string name, string claim, Dictionary<string, string> annotations) =>
        K.CustomObjects.CreateNamespacedCustomObjectAsync(
            new VolumeSnapshot
            {
                Metadata = new V1ObjectMeta { Name = name, NamespaceProperty = Ns, Annotations = annotations },
                Spec = new VolumeSnapshotSpec { Source = new VolumeSnapshotSource { PersistentVolumeClaimName = claim } },
            },
            Names.SnapshotGroup, "v1", Ns, "volumesnapshots", cancellationToken: Ct);

    private async Task<VolumeSnapshot> ReadAsync(string name) =>
        KubernetesJson.Deserialize<VolumeSnapshot>(((JsonElement)await K.CustomObjects.GetNamespacedCustomObjectAsync(Names.SnapshotGroup, "v1", Ns, "volumesnapshots", name, Ct)).GetRawText());

    private async Task<VolumeSnapshot?> ReadyAsync(string name) =>
        await ReadAsync(name) is { Status.ReadyToUse: true } s && s.Metadata.Annotations?.ContainsKey(FreezeNames.ResultAnnotation) == true ? s : null;

    private async Task<SnapshotSchedule> ReadScheduleAsync(string name) =>
        KubernetesJson.Deserialize<SnapshotSchedule>(((JsonElement)await K.CustomObjects.GetNamespacedCustomObjectAsync(ScheduleNames.Group, ScheduleNames.Version, Ns, ScheduleNames.NamespacedPlural, name, Ct)).GetRawText());

    private async Task<List<Corev1Event>> EventsAsync(string involved) =>
        [.. (await K.CoreV1.ListNamespacedEventAsync(Ns, cancellationToken: Ct)).Items.Where(e => e.InvolvedObject.Name == involved)];

    private static Task<T> Until<T>(Func<Task<T?>> probe, string what) => Eventually.Until(probe, () => what);

    private static async Task RunAsync(string program, params string[] args)
    {
        using var p = Process.Start(new ProcessStartInfo(program, args) { RedirectStandardError = true })!;
        string err = await p.StandardError.ReadToEndAsync(Ct);
        await p.WaitForExitAsync(Ct);
        Assert.True(p.ExitCode == 0, $"{program} {string.Join(' ', args)} exited with {p.ExitCode}: {err}");
    }
}
