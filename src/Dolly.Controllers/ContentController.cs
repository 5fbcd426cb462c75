using Dolly.Controllers.Model;
using Dolly.Controllers.Runtime;
using Dolly.Controllers.Schedules;
using Microsoft.Extensions.Logging;
using Dolly.Csi.V1;
using Grpc.Core;

namespace Dolly.Controllers;

/// <summary>
/// The csi-snapshotter's part, for contents of this driver only: cuts the snapshot of a dynamic content
/// (CreateSnapshot, idempotent by name, with the being-created annotation held across the call so a
/// timed-out snapshot is never leaked), checks that a pre-provisioned content's snapshot exists
/// (ListSnapshots by id), writes the content's status, and on deletion calls DeleteSnapshot when the
/// policy is Delete before letting the content go. A snapshot annotated <c>dolly.io/freeze: "true"</c> is cut
/// inside a freeze window of the node that stages its volume (<see cref="FreezeHook"/>).
/// </summary>
internal sealed class ContentController : Reconciler
{
    private readonly ControllerContext _c;
    private readonly FreezeHook _freeze;

    public ContentController(ControllerContext context)
        : base("csi-snapshotter", context.Options.RetryBaseDelay, context.Options.RetryMaxDelay, context.Loggers.CreateLogger<ContentController>())
    {
        _c = context;
        _freeze = new FreezeHook(context);
        context.Cluster.Contents.OnChange((_, content) =>
        {
            if (content is not null && content.Spec.Driver == context.Options.DriverName)
            {
                Queue.Add(content.Metadata.Name);
            }
        });
    }

    protected override async Task<Outcome> ReconcileAsync(string key, CancellationToken cancellationToken)
    {
        var content = _c.Cluster.Contents.Get(key);
        if (content is null || content.Spec.Driver != _c.Options.DriverName)
        {
            return Outcome.Done;
        }

        if (content.Metadata.DeletionTimestamp is not null)
        {
            await DeleteAsync(content, cancellationToken).ConfigureAwait(false);
            return Outcome.Done;
        }

        if (content.Spec.DeletionPolicy == PolicyValues.Delete && MergePatch.Finalizer(content.Metadata, Names.ContentBoundFinalizer, true) is { } add)
        {
            content = await _c.Cluster.PatchContentAsync(content, add, cancellationToken).ConfigureAwait(false);
        }

        var source = content.Spec.Source;
        if (!string.IsNullOrEmpty(source.VolumeHandle))
        {
            if (string.IsNullOrEmpty(content.Status?.SnapshotHandle))
            {
                await CreateSnapshotAsync(content, source.VolumeHandle, cancellationToken).ConfigureAwait(false);
                return Outcome.Done;
            }

            if (content.Status?.ReadyToUse != true)
            {
                return await RefreshAsync(content, content.Status!.SnapshotHandle!, cancellationToken).ConfigureAwait(false);
            }
        }
        else if (!string.IsNullOrEmpty(source.SnapshotHandle) && (content.Status?.ReadyToUse != true || content.Status.SnapshotHandle != source.SnapshotHandle))
        {
            return await RefreshAsync(content, source.SnapshotHandle, cancellationToken).ConfigureAwait(false);
        }

        return Outcome.Done;
    }

    private async Task CreateSnapshotAsync(VolumeSnapshotContent content, string volumeHandle, CancellationToken ct)
    {
        string? uid = content.Spec.VolumeSnapshotRef.Uid;
        if (string.IsNullOrEmpty(uid))
        {
            await FailAsync(content, Reasons.SnapshotCreationFailed, $"VolumeSnapshotContent {content.Metadata.Name} has no spec.volumeSnapshotRef.uid, so the snapshot cannot be named", ct).ConfigureAwait(false);
            return;
        }

        var parameters = new Dictionary<string, string>(StringComparer.Ordinal);
        if (content.Spec.VolumeSnapshotClassName is { Length: > 0 } className)
        {
            var snapshotClass = _c.Cluster.SnapshotClasses.Get(className);
            if (snapshotClass is null)
            {
                await FailAsync(content, Reasons.SnapshotCreationFailed, $"VolumeSnapshotClass {className} does not exist", ct).ConfigureAwait(false);
                return;
            }

            foreach (var (k, v) in snapshotClass.Parameters ?? new Dictionary<string, string>())
            {
                if (!k.StartsWith(Names.ReservedParameterPrefix, StringComparison.Ordinal))
                {
                    parameters[k] = v;
                }
            }
        }

        // dolly.io/freeze on the VolumeSnapshot (set by a user or a schedule with hooks.freeze): cut inside a freeze window.
        var snapshotRef = content.Spec.VolumeSnapshotRef;
        var snapshot = _c.Cluster.Snapshots.Get(snapshotRef.NamespaceProperty ?? "", snapshotRef.Name ?? "") is { } found && found.Metadata.Uid == uid ? found : null;
        var (freeze, freezeProblem) = FreezeRequest.Of(snapshot?.Metadata.Annotations);
        if (freezeProblem is not null)
        {
            await FailAsync(content, Reasons.SnapshotCreationFailed, $"VolumeSnapshot {snapshotRef.NamespaceProperty}/{snapshotRef.Name}: {freezeProblem}", ct).ConfigureAwait(false);
            throw new RetryLaterException(freezeProblem);
        }

        if (Cluster.Annotation(content.Metadata, Names.BeingCreatedAnnotation) != PolicyValues.Yes)
        {
            content = await _c.Cluster.PatchContentAsync(content, new MergePatch().Annotation(Names.BeingCreatedAnnotation, PolicyValues.Yes), ct).ConfigureAwait(false);
        }

        CreateSnapshotResponse response;
        FreezeHook.Outcome? frozen = null;
        try
        {
            var request = new CreateSnapshotRequest { Name = Names.CsiSnapshotName(uid), SourceVolumeId = volumeHandle };
            request.Parameters.Add(parameters);
            if (freeze is null)
            {
                response = await _c.Csi.CreateSnapshotAsync(request, _c.CsiCall(ct)).ConfigureAwait(false);
            }
            else
            {
                frozen = await _freeze.CutAsync(
                    volumeHandle,
                    freeze,
                    async () => await _c.Csi.CreateSnapshotAsync(request, _c.CsiCall(ct)).ConfigureAwait(false),
                    async id => await _c.Csi.DeleteSnapshotAsync(new DeleteSnapshotRequest { SnapshotId = id }, _c.CsiCall(ct)).ConfigureAwait(false),
                    ct).ConfigureAwait(false);
                response = frozen.Response;
            }
        }
        catch (FreezeFailedException ex)
        {
            await FailAsync(content, "SnapshotFreezeFailed", ex.Message, ct).ConfigureAwait(false);
            throw new RetryLaterException(ex.Message, ex);
        }
        catch (RpcException ex) when (!ct.IsCancellationRequested)
        {
            // The annotation stays: the driver may have cut the snapshot; the retry finds it by name.
            await FailAsync(content, Reasons.SnapshotCreationFailed, $"Failed to create snapshot: {ControllerContext.Describe(ex)}", ct).ConfigureAwait(false);
            throw new RetryLaterException(ex.Status.Detail, ex);
        }

        content = await WriteStatusAsync(content, response.Snapshot, ct).ConfigureAwait(false);
        await _c.Cluster.PatchContentAsync(content, new MergePatch().Annotation(Names.BeingCreatedAnnotation, null), ct).ConfigureAwait(false);
        if (frozen is not null && snapshot is not null)
        {
            await _freeze.ReportAsync(snapshot, frozen, ct).ConfigureAwait(false);
        }
    }

    private async Task<Outcome> RefreshAsync(VolumeSnapshotContent content, string snapshotHandle, CancellationToken ct)
    {
        ListSnapshotsResponse list;
        try
        {
            list = await _c.Csi.ListSnapshotsAsync(new ListSnapshotsRequest { SnapshotId = snapshotHandle }, _c.CsiCall(ct)).ConfigureAwait(false);
        }
        catch (RpcException ex) when (!ct.IsCancellationRequested)
        {
            await FailAsync(content, Reasons.SnapshotContentCheckandUpdateFailed, $"Failed to check snapshot {snapshotHandle}: {ControllerContext.Describe(ex)}", ct).ConfigureAwait(false);
            throw new RetryLaterException(ex.Status.Detail, ex);
        }

        var entry = list.Entries.Select(e => e.Snapshot).FirstOrDefault(s => s.SnapshotId == snapshotHandle);
        if (entry is null)
        {
            await FailAsync(content, Reasons.SnapshotContentCheckandUpdateFailed, $"snapshot {snapshotHandle} does not exist on driver {_c.Options.DriverName}", ct).ConfigureAwait(false);
            throw new RetryLaterException($"snapshot {snapshotHandle} not found");
        }

        content = await WriteStatusAsync(content, entry, ct).ConfigureAwait(false);
        return content.Status?.ReadyToUse == true ? Outcome.Done : Outcome.After(TimeSpan.FromSeconds(1));
    }

    private async Task<VolumeSnapshotContent> WriteStatusAsync(VolumeSnapshotContent content, Snapshot snapshot, CancellationToken ct)
    {
        long created = snapshot.CreationTime is null ? (_c.Options.TimeProvider.GetUtcNow() - DateTimeOffset.UnixEpoch).Ticks * 100
            : (snapshot.CreationTime.Seconds * 1_000_000_000L) + snapshot.CreationTime.Nanos;
        var status = new MergePatch()
            .Status("snapshotHandle", snapshot.SnapshotId)
            .Status("creationTime", created)
            .Status("restoreSize", snapshot.SizeBytes)
            .Status("readyToUse", snapshot.ReadyToUse);
        if (snapshot.ReadyToUse && content.Status?.Error is not null)
        {
            status.Status("error", null);
        }

        var s = content.Status;
        if (s is not null && s.SnapshotHandle == snapshot.SnapshotId && s.CreationTime == created && s.RestoreSize == snapshot.SizeBytes
            && s.ReadyToUse == snapshot.ReadyToUse && (s.Error is null || !snapshot.ReadyToUse))
        {
            return content;
        }

        return await _c.Cluster.PatchContentAsync(content, status, ct).ConfigureAwait(false);
    }

    private async Task DeleteAsync(VolumeSnapshotContent content, CancellationToken ct)
    {
        if (!Cluster.HasFinalizer(content.Metadata, Names.ContentBoundFinalizer))
        {
            return;
        }

        string? handle = content.Status?.SnapshotHandle ?? content.Spec.Source.SnapshotHandle;
        if (content.Spec.DeletionPolicy == PolicyValues.Delete && string.IsNullOrEmpty(handle)
            && Cluster.Annotation(content.Metadata, Names.BeingCreatedAnnotation) == PolicyValues.Yes
            && content.Spec.Source.VolumeHandle is { Length: > 0 } volumeHandle && content.Spec.VolumeSnapshotRef.Uid is { Length: > 0 } uid)
        {
            // A create that may have cut the snapshot never reported back: finish it (idempotent by name) to
            // learn the handle, so the snapshot is deleted rather than leaked. Until then the content stays.
            try
            {
                var request = new CreateSnapshotRequest { Name = Names.CsiSnapshotName(uid), SourceVolumeId = volumeHandle };
                handle = (await _c.Csi.CreateSnapshotAsync(request, _c.CsiCall(ct)).ConfigureAwait(false)).Snapshot.SnapshotId;
            }
            catch (RpcException ex) when (!ct.IsCancellationRequested)
            {
                await FailAsync(content, Reasons.SnapshotDeleteError, $"cannot delete: the snapshot may have been cut by a create that never answered, and finishing it failed: {ControllerContext.Describe(ex)}", ct).ConfigureAwait(false);
                throw new RetryLaterException(ex.Status.Detail, ex);
            }
        }

        // A member of a group snapshot is deleted with its group (DeleteVolumeGroupSnapshot), never on its own.
        bool groupMember = !string.IsNullOrEmpty(Cluster.Annotation(content.Metadata, GroupNames.MemberOfGroupAnnotation));
        if (content.Spec.DeletionPolicy == PolicyValues.Delete && !string.IsNullOrEmpty(handle) && !groupMember)
        {
            try
            {
                await _c.Csi.DeleteSnapshotAsync(new DeleteSnapshotRequest { SnapshotId = handle }, _c.CsiCall(ct)).ConfigureAwait(false);
            }
            catch (RpcException ex) when (!ct.IsCancellationRequested)
            {
                await FailAsync(content, Reasons.SnapshotDeleteError, $"Failed to delete snapshot {handle}: {ControllerContext.Describe(ex)}", ct).ConfigureAwait(false);
                throw new RetryLaterException(ex.Status.Detail, ex);
            }
        }

        if (MergePatch.Finalizer(content.Metadata, Names.ContentBoundFinalizer, false) is { } remove)
        {
            await _c.Cluster.PatchContentAsync(content, remove, ct).ConfigureAwait(false);
        }
    }

    private async Task FailAsync(VolumeSnapshotContent content, string reason, string message, CancellationToken ct)
    {
        if (content.Status?.Error?.Message != message)
        {
            var error = SnapshotController.ErrorNode(message, _c.Options.TimeProvider);
            await _c.Cluster.PatchContentAsync(content, new MergePatch().Status("error", error).Status("readyToUse", false), ct).ConfigureAwait(false);
        }

        await _c.Events.RecordAsync(content, EventRecorder.Warning, reason, message, ct).ConfigureAwait(false);
    }
}
