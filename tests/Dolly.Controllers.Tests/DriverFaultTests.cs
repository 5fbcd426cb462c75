using System.Collections.Concurrent;
using Dolly.Csi.V1;
using Grpc.Core;
using Grpc.Core.Interceptors;
using k8s;
using k8s.Models;

namespace Dolly.Controllers.Tests;

/// <summary>
/// The controllers against the embedded API server and the real driver, with faults injected into their CSI
/// calls: every failure ends in a status error or event that names it, nothing is lost or leaked, and the work
/// completes once the driver answers again.
/// </summary>
public sealed class DriverFaultTests : IAsyncLifetime
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    private readonly Faults _faults = new();
    private ControllerHarness? _h;

    private Kubernetes K => _h!.Client;

    /// <summary>Fails chosen CSI methods with a status; optionally lets the real call through first (a reply that got lost).</summary>
    private sealed class Faults : Interceptor
    {
        private readonly ConcurrentDictionary<string, (Status Status, bool CallFirst)> _armed = new(StringComparer.Ordinal);

        public ConcurrentDictionary<string, int> Calls { get; } = new(StringComparer.Ordinal);

        public void Arm(string method, StatusCode code, string detail, bool callFirst = false) => _armed[method] = (new Status(code, detail), callFirst);

        public void Disarm(string method) => _armed.TryRemove(method, out _);

        public override AsyncUnaryCall<TResponse> AsyncUnaryCall<TRequest, TResponse>(
            TRequest request, ClientInterceptorContext<TRequest, TResponse> context, AsyncUnaryCallContinuation<TRequest, TResponse> continuation)
        {
            Calls.AddOrUpdate(context.Method.Name, 1, (_, n) => n + 1);
            if (!_armed.TryGetValue(context.Method.Name, out var fault))
            {
                return continuation(request, context);
            }

            Task<TResponse> response = fault.CallFirst ? CallThenFail(continuation(request, context), fault.Status) : Task.FromException<TResponse>(new RpcException(fault.Status));
            return new AsyncUnaryCall<TResponse>(response, Task.FromResult(new Metadata()), () => fault.Status, () => [], () => { });
        }

        private static async Task<TResponse> CallThenFail<TResponse>(AsyncUnaryCall<TResponse> call, Status status)
        {
            using (call)
            {
                await call.ResponseAsync.ConfigureAwait(false);
            }

            throw new RpcException(status);
        }
    }

    public async ValueTask InitializeAsync() => _h = await ControllerHarness.StartAsync("faults", Ct, _faults);

    public async ValueTask DisposeAsync()
    {
        if (_h is not null)
        {
            await _h.DisposeAsync();
        }
    }

    private static Task<T> Until<T>(Func<Task<T?>> probe, string what, int seconds = 60)
        => Eventually.Until(probe, what, seconds);

    private async Task<V1PersistentVolumeClaim> ClaimAsync(string name, string size = "1Gi")
    {
        await K.CoreV1.CreateNamespacedPersistentVolumeClaimAsync(
            DriverStack.Claim(name, size),
            "default",
            cancellationToken: Ct);
        return await Until(async () => await ReadClaim(name) is { Status.Phase: "Bound" } c ? c : null, $"claim {name} never bound");
    }

    private Task<V1PersistentVolumeClaim> ReadClaim(string name) => K.CoreV1.ReadNamespacedPersistentVolumeClaimAsync(name, "default", cancellationToken: Ct);

    private async Task<string> EventMessages(string name, string reason) =>
        string.Join('\n', (await K.CoreV1.ListNamespacedEventAsync("default", fieldSelector: $"involvedObject.name={name},reason={reason}", cancellationToken: Ct)).Items.Select(e => e.Message));

    private async Task<System.Text.Json.JsonElement> Get(string plural, string name, bool cluster = false)
    {
        object o = cluster
            ? await K.CustomObjects.GetClusterCustomObjectAsync("snapshot.storage.k8s.io", "v1", plural, name, Ct)
            : await K.CustomObjects.GetNamespacedCustomObjectAsync("snapshot.storage.k8s.io", "v1", "default", plural, name, Ct);
        return (System.Text.Json.JsonElement)o;
    }

    private async Task<System.Text.Json.JsonElement?> TryGet(string plural, string name, bool cluster = false)
    {
        try
        {
            return await Get(plural, name, cluster);
        }
        catch (k8s.Autorest.HttpOperationException ex) when (ex.Response.StatusCode == System.Net.HttpStatusCode.NotFound)
        {
            return null;
        }
    }

    private Task<object> SnapshotAsync(string name, string claim) =>
        K.CustomObjects.CreateNamespacedCustomObjectAsync(
            new Dictionary<string, object>
            {
                ["apiVersion"] = "snapshot.storage.k8s.io/v1",
                ["kind"] = "VolumeSnapshot",
                ["metadata"] = new Dictionary<string, object> { ["name"] = name },
                ["spec"] = new Dictionary<string, object> { ["source"] = new Dictionary<string, object> { ["persistentVolumeClaimName"] = claim } },
            },
            "snapshot.storage.k8s.io",
            "v1",
            "default",
            "volumesnapshots",
            cancellationToken: Ct);

    private static string? Str(System.Text.Json.JsonElement e, params string[] path)
    {
        foreach (string p in path)
        {
            if (e.ValueKind != System.Text.Json.JsonValueKind.Object || !e.TryGetProperty(p, out e))
            {
                return null;
            }
        }

        return e.ToString();
    }

    [Fact]
    public async Task CreateVolumeFailing_LeavesTheClaimPendingWithTheDriversWords_ThenItBinds()
    {
        _faults.Arm("CreateVolume", StatusCode.ResourceExhausted, "the pool is full");
        await K.CoreV1.CreateNamespacedPersistentVolumeClaimAsync(
            DriverStack.Claim("wants-space", "1Gi"),
            "default",
            cancellationToken: Ct);
        string events = await Until(
            async () => await EventMessages("wants-space", "ProvisioningFailed") is { Length: > 0 } m ? m : null, "no ProvisioningFailed event");
        Assert.Contains("failed to provision volume with StorageClass \"dolly\": rpc error: code = ResourceExhausted desc = the pool is full", events, StringComparison.Ordinal);
        Assert.Empty((await K.CoreV1.ListPersistentVolumeAsync(cancellationToken: Ct)).Items);
        Assert.NotEqual("Bound", (await ReadClaim("wants-space")).Status?.Phase);

        _faults.Disarm("CreateVolume");
        await Until(async () => await ReadClaim("wants-space") is { Status.Phase: "Bound" } c ? c : null, "never bound after the driver recovered");
    }

    [Fact]
    public async Task CreateSnapshotFailing_PutsTheErrorOnContentAndSnapshot_ThenItBecomesReady()
    {
        await ClaimAsync("source");
        _faults.Arm("CreateSnapshot", StatusCode.Unavailable, "the driver is restarting");
        await SnapshotAsync("snap", "source");
        await Until(
            async () => Str(await Get("volumesnapshots", "snap"), "status", "error", "message")?.Contains("the driver is restarting", StringComparison.Ordinal) == true ? "shown" : null,
            "the snapshot never showed the driver's error");
        var snapshot = await Get("volumesnapshots", "snap");
        string content = Str(snapshot, "status", "boundVolumeSnapshotContentName")!;
        var vsc = await Get("volumesnapshotcontents", content, cluster: true);
        Assert.Contains("Failed to create snapshot: rpc error: code = Unavailable desc = the driver is restarting", Str(vsc, "status", "error", "message"), StringComparison.Ordinal);
        Assert.Equal("yes", Str(vsc, "metadata", "annotations", "snapshot.storage.kubernetes.io/volumesnapshot-being-created"));
        Assert.NotEqual("True", Str(snapshot, "status", "readyToUse"));

        _faults.Disarm("CreateSnapshot");
        await Until(async () => Str(await Get("volumesnapshots", "snap"), "status", "readyToUse") == "True" ? "ready" : null, "never became ready");
        var ready = await Get("volumesnapshots", "snap");
        Assert.Null(Str(ready, "status", "error"));
        vsc = await Get("volumesnapshotcontents", content, cluster: true);
        Assert.Null(Str(vsc, "metadata", "annotations", "snapshot.storage.kubernetes.io/volumesnapshot-being-created"));
        Assert.Null(Str(vsc, "status", "error"));
    }

    [Fact]
    public async Task ACreateWhoseReplyWasLost_IsStillDeletedWithItsSnapshot_NothingLeaks()
    {
        var claim = await ClaimAsync("lossy");
        string volume = (await K.CoreV1.ReadPersistentVolumeAsync(claim.Spec.VolumeName, cancellationToken: Ct)).Spec.Csi.VolumeHandle;

        // The driver cuts the snapshot but the controller never hears back.
        _faults.Arm("CreateSnapshot", StatusCode.DeadlineExceeded, "deadline exceeded", callFirst: true);
        await SnapshotAsync("lost", "lossy");
        var snapshot = await Until(async () => Str(await Get("volumesnapshots", "lost"), "status", "boundVolumeSnapshotContentName") is { } c ? c : null, "never bound");
        await Until(async () => Str(await Get("volumesnapshotcontents", snapshot, cluster: true), "status", "error", "message") is { } m ? m : null, "no error on the content");
        var cut = await new Controller.ControllerClient(_h!.Stack.Channel).ListSnapshotsAsync(new ListSnapshotsRequest { SourceVolumeId = volume }, cancellationToken: Ct);
        Assert.Single(cut.Entries);

        // Deleting it while the create is unresolved: the controller finishes the create to learn the handle,
        // then deletes the snapshot.
        await K.CustomObjects.DeleteNamespacedCustomObjectAsync("snapshot.storage.k8s.io", "v1", "default", "volumesnapshots", "lost", cancellationToken: Ct);
        await Task.Delay(300, Ct);
        _faults.Disarm("CreateSnapshot");
        await Until(async () => await TryGet("volumesnapshotcontents", snapshot, cluster: true) is null ? "gone" : null, "the content never went");
        await Until(async () => await TryGet("volumesnapshots", "lost") is null ? "gone" : null, "the snapshot never went");
        var left = await new Controller.ControllerClient(_h!.Stack.Channel).ListSnapshotsAsync(new ListSnapshotsRequest { SourceVolumeId = volume }, cancellationToken: Ct);
        Assert.Empty(left.Entries);
    }

    [Fact]
    public async Task DeleteSnapshotRefused_KeepsTheContentWithTheReason_ThenItGoes()
    {
        await ClaimAsync("keep");
        await SnapshotAsync("stubborn", "keep");
        string content = await Until(async () => Str(await Get("volumesnapshots", "stubborn"), "status", "readyToUse") == "True" ? Str(await Get("volumesnapshots", "stubborn"), "status", "boundVolumeSnapshotContentName") : null, "never ready");

        _faults.Arm("DeleteSnapshot", StatusCode.FailedPrecondition, "the snapshot is in use");
        await K.CustomObjects.DeleteNamespacedCustomObjectAsync("snapshot.storage.k8s.io", "v1", "default", "volumesnapshots", "stubborn", cancellationToken: Ct);
        string error = await Until(async () => await TryGet("volumesnapshotcontents", content, cluster: true) is { } c ? Str(c, "status", "error", "message") : null, "no error on the content");
        Assert.Contains("Failed to delete snapshot", error, StringComparison.Ordinal);
        Assert.Contains("FailedPrecondition desc = the snapshot is in use", error, StringComparison.Ordinal);
        // The event is recorded right after the error is saved on the content: wait for it rather than read once.
        string events = await Until(async () => await EventMessages(content, "SnapshotDeleteError") is { Length: > 0 } m ? m : null, "no SnapshotDeleteError event");
        Assert.Contains("the snapshot is in use", events, StringComparison.Ordinal);

        _faults.Disarm("DeleteSnapshot");
        await Until(async () => await TryGet("volumesnapshotcontents", content, cluster: true) is null ? "gone" : null, "the content never went");
    }

    [Fact]
    public async Task DeleteVolumeFailing_KeepsThePersistentVolumeWithAnEvent_ThenItGoes()
    {
        var claim = await ClaimAsync("short-lived");
        string pv = claim.Spec.VolumeName;
        _faults.Arm("DeleteVolume", StatusCode.Internal, "disk on fire");
        await K.CoreV1.DeleteNamespacedPersistentVolumeClaimAsync("short-lived", "default", cancellationToken: Ct);
        string events = await Until(async () => await EventMessages(pv, "VolumeFailedDelete") is { Length: > 0 } m ? m : null, "no VolumeFailedDelete event");
        Assert.Contains("rpc error: code = Internal desc = disk on fire", events, StringComparison.Ordinal);
        Assert.Equal("Released", (await K.CoreV1.ReadPersistentVolumeAsync(pv, cancellationToken: Ct)).Status.Phase);

        _faults.Disarm("DeleteVolume");
        await Until(
            async () => (await K.CoreV1.ListPersistentVolumeAsync(cancellationToken: Ct)).Items.All(v => v.Metadata.Name != pv) ? "gone" : null,
            "the PV never went");
    }

    [Fact]
    public async Task ExpandFailing_IsAnEvent_CapacityUnchanged_ThenItGrows()
    {
        var claim = await ClaimAsync("grows");
        _faults.Arm("ControllerExpandVolume", StatusCode.OutOfRange, "too big for this pool");
        var patch = new V1Patch("""{"spec":{"resources":{"requests":{"storage":"3Gi"}}}}""", V1Patch.PatchType.MergePatch);
        await K.CoreV1.PatchNamespacedPersistentVolumeClaimAsync(patch, "grows", "default", cancellationToken: Ct);
        string events = await Until(async () => await EventMessages("grows", "VolumeResizeFailed") is { Length: > 0 } m ? m : null, "no VolumeResizeFailed event");
        Assert.Contains("OutOfRange desc = too big for this pool", events, StringComparison.Ordinal);
        Assert.Equal("1Gi", (await K.CoreV1.ReadPersistentVolumeAsync(claim.Spec.VolumeName, cancellationToken: Ct)).Spec.Capacity["storage"].ToString());

        _faults.Disarm("ControllerExpandVolume");
        await Until(
            async () => (await K.CoreV1.ReadPersistentVolumeAsync(claim.Spec.VolumeName, cancellationToken: Ct)).Spec.Capacity["storage"].ToString() == "3Gi" ? "grown" : null,
            "the PV never grew");
    }

    [Fact]
    public async Task AClaimDeletedWhileItsVolumeIsCreated_LeavesNoVolumeBehind()
    {
        // The driver creates the volume but the controller never hears back; then the claim is deleted.
        _faults.Arm("CreateVolume", StatusCode.DeadlineExceeded, "deadline exceeded", callFirst: true);
        await K.CoreV1.CreateNamespacedPersistentVolumeClaimAsync(
            DriverStack.Claim("fleeting", "1Gi"),
            "default",
            cancellationToken: Ct);
        var csi = new Controller.ControllerClient(_h!.Stack.Channel);
        await Until(async () => (await csi.ListVolumesAsync(new ListVolumesRequest(), cancellationToken: Ct)).Entries.Count == 1 ? "cut" : null, "the driver never created the volume");
        var claim = await ReadClaim("fleeting");
        Assert.Contains("dolly.io/provisioning-protection", claim.Metadata.Finalizers);

        await K.CoreV1.DeleteNamespacedPersistentVolumeClaimAsync("fleeting", "default", cancellationToken: Ct);
        await Task.Delay(300, Ct);
        _faults.Disarm("CreateVolume");

        await Until(
            async () => (await K.CoreV1.ListNamespacedPersistentVolumeClaimAsync("default", cancellationToken: Ct)).Items.All(c => c.Metadata.Name != "fleeting") ? "gone" : null,
            "the claim never went");
        await Until(async () => (await csi.ListVolumesAsync(new ListVolumesRequest(), cancellationToken: Ct)).Entries.Count == 0 ? "reclaimed" : null, "the volume leaked");
        await Until(async () => (await K.CoreV1.ListPersistentVolumeAsync(cancellationToken: Ct)).Items.Count == 0 ? "none" : null, "a PV was left");
    }
}
