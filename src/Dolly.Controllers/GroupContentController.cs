using System.Globalization;
using System.Text.Json.Nodes;
using Dolly.Controllers.Model;
using Dolly.Controllers.Runtime;
using Dolly.Csi.V1;
using Grpc.Core;
using CsiGroup = Dolly.Csi.V1.VolumeGroupSnapshot;
using Microsoft.Extensions.Logging;

namespace Dolly.Controllers;

/// <summary>
/// The csi-snapshotter's group part, for group contents of this driver only: one CreateVolumeGroupSnapshot for a
/// dynamic content (idempotent by name, with the being-created annotation held across the call so a group cut by
/// a call whose reply was lost is still deleted), GetVolumeGroupSnapshot for a pre-provisioned one, the result in
/// status (handle, time, readiness and which volume each member snapshot is of), and on deletion with policy
/// Delete one DeleteVolumeGroupSnapshot for all members.
/// </summary>
internal sealed class GroupContentController : Reconciler
{
    private const string CreateFailed = "GroupSnapshotCreationFailed";
    private const string CheckFailed = "GroupSnapshotContentCheckandUpdateFailed";
    private const string DeleteFailed = "GroupSnapshotDeleteError";

    private readonly ControllerContext _c;

    public GroupContentController(ControllerContext context)
        : base("csi-snapshotter-groups", context.Options.RetryBaseDelay, context.Options.RetryMaxDelay, context.Loggers.CreateLogger<GroupContentController>())
    {
        _c = context;
        context.Cluster.GroupContents.OnChange((_, content) =>
        {
            if (content is not null && content.Spec.Driver == context.Options.DriverName)
            {
                Queue.Add(content.Metadata.Name);
            }
        });
    }

    protected override async Task<Outcome> ReconcileAsync(string key, CancellationToken cancellationToken)
    {
        var content = _c.Cluster.GroupContents.Get(key);
        if (content is null || content.Spec.Driver != _c.Options.DriverName)
        {
            return Outcome.Done;
        }

        if (content.Metadata.DeletionTimestamp is not null)
        {
            await DeleteAsync(content, cancellationToken).ConfigureAwait(false);
            return Outcome.Done;
        }

        if (content.Spec.DeletionPolicy == "Delete" && Cluster.FinalizerPatch(content.Metadata, GroupNames.ContentBoundFinalizer, true) is { } add)
        {
            content = await _c.Cluster.PatchGroupContentAsync(content, add, status: false, cancellationToken).ConfigureAwait(false);
        }

        var source = content.Spec.Source;
        if (source.VolumeHandles is { Count: > 0 } volumes)
        {
            if (string.IsNullOrEmpty(content.Status?.VolumeGroupSnapshotHandle))
            {
                await CreateAsync(content, volumes, cancellationToken).ConfigureAwait(false);
                return Outcome.Done;
            }

            if (content.Status.ReadyToUse != true)
            {
                return await RefreshAsync(content, content.Status.VolumeGroupSnapshotHandle, [.. (content.Status.VolumeSnapshotInfoList ?? []).Select(i => i.SnapshotHandle ?? "")], cancellationToken).ConfigureAwait(false);
            }
        }
        else if (source.GroupSnapshotHandles is { } handles && (content.Status?.ReadyToUse != true || content.Status.VolumeGroupSnapshotHandle != handles.VolumeGroupSnapshotHandle))
        {
            return await RefreshAsync(content, handles.VolumeGroupSnapshotHandle, handles.VolumeSnapshotHandles, cancellationToken).ConfigureAwait(false);
        }

        return Outcome.Done;
    }

    private async Task<CsiGroup> CallCreateAsync(VolumeGroupSnapshotContent content, IList<string> volumes, string uid, CancellationToken ct)
    {
        var request = new CreateVolumeGroupSnapshotRequest { Name = GroupNames.CsiGroupName(uid) };
        request.SourceVolumeIds.Add(volumes);
        if (content.Spec.VolumeGroupSnapshotClassName is { Length: > 0 } className && _c.Cluster.GroupClasses.Get(className) is { } groupClass)
        {
            foreach (var (k, v) in groupClass.Parameters ?? new Dictionary<string, string>())
            {
                if (!k.StartsWith(Names.ReservedParameterPrefix, StringComparison.Ordinal))
                {
                    request.Parameters[k] = v;
                }
            }
        }

        return (await _c.Groups.CreateVolumeGroupSnapshotAsync(request, _c.CsiCall(ct)).ConfigureAwait(false)).GroupSnapshot;
    }

    private async Task CreateAsync(VolumeGroupSnapshotContent content, IList<string> volumes, CancellationToken ct)
    {
        string? uid = content.Spec.VolumeGroupSnapshotRef.Uid;
        if (string.IsNullOrEmpty(uid))
        {
            await FailAsync(content, CreateFailed, $"VolumeGroupSnapshotContent {content.Metadata.Name} has no spec.volumeGroupSnapshotRef.uid, so the group snapshot cannot be named", ct).ConfigureAwait(false);
            return;
        }

        if (content.Spec.VolumeGroupSnapshotClassName is { Length: > 0 } className && _c.Cluster.GroupClasses.Get(className) is null)
        {
            await FailAsync(content, CreateFailed, $"VolumeGroupSnapshotClass {className} does not exist", ct).ConfigureAwait(false);
            throw new RetryLaterException($"class {className} missing");
        }

        if (Cluster.Annotation(content.Metadata, GroupNames.BeingCreatedAnnotation) != "yes")
        {
            content = await _c.Cluster.PatchGroupContentAsync(content, Annotate(GroupNames.BeingCreatedAnnotation, "yes"), status: false, ct).ConfigureAwait(false);
        }

        CsiGroup group;
        try
        {
            group = await CallCreateAsync(content, volumes, uid, ct).ConfigureAwait(false);
        }
        catch (RpcException ex) when (!ct.IsCancellationRequested)
        {
            // After a final error the driver cut nothing, so nothing can leak; otherwise the annotation stays: the
            // driver may have cut the group, and the retry (or a delete) finds it by name.
            if (IsFinal(ex.StatusCode))
            {
                content = await _c.Cluster.PatchGroupContentAsync(content, Annotate(GroupNames.BeingCreatedAnnotation, null), status: false, ct).ConfigureAwait(false);
            }

            await FailAsync(content, CreateFailed, $"Failed to create group snapshot: {ControllerContext.Describe(ex)}", ct).ConfigureAwait(false);
            throw new RetryLaterException(ex.Status.Detail, ex);
        }

        content = await WriteStatusAsync(content, group, ct).ConfigureAwait(false);
        await _c.Cluster.PatchGroupContentAsync(content, Annotate(GroupNames.BeingCreatedAnnotation, null), status: false, ct).ConfigureAwait(false);
    }

    private async Task<Outcome> RefreshAsync(VolumeGroupSnapshotContent content, string handle, IList<string> snapshotIds, CancellationToken ct)
    {
        CsiGroup group;
        try
        {
            var request = new GetVolumeGroupSnapshotRequest { GroupSnapshotId = handle };
            request.SnapshotIds.Add(snapshotIds);
            group = (await _c.Groups.GetVolumeGroupSnapshotAsync(request, _c.CsiCall(ct)).ConfigureAwait(false)).GroupSnapshot;
        }
        catch (RpcException ex) when (!ct.IsCancellationRequested)
        {
            await FailAsync(content, CheckFailed, $"Failed to check group snapshot {handle}: {ControllerContext.Describe(ex)}", ct).ConfigureAwait(false);
            throw new RetryLaterException(ex.Status.Detail, ex);
        }

        content = await WriteStatusAsync(content, group, ct).ConfigureAwait(false);
        return content.Status?.ReadyToUse == true ? Outcome.Done : Outcome.After(TimeSpan.FromSeconds(1));
    }

    private async Task<VolumeGroupSnapshotContent> WriteStatusAsync(VolumeGroupSnapshotContent content, CsiGroup group, CancellationToken ct)
    {
        var list = new JsonArray();
        foreach (var s in group.Snapshots)
        {
            list.Add(new JsonObject
            {
                ["volumeHandle"] = s.SourceVolumeId,
                ["snapshotHandle"] = s.SnapshotId,
                ["creationTime"] = s.CreationTime is null ? null : (s.CreationTime.Seconds * 1_000_000_000L) + s.CreationTime.Nanos,
                ["readyToUse"] = s.ReadyToUse,
                ["restoreSize"] = s.SizeBytes,
            });
        }

        bool ready = group.ReadyToUse && group.Snapshots.All(s => s.ReadyToUse);
        var status = new JsonObject
        {
            ["volumeGroupSnapshotHandle"] = group.GroupSnapshotId,
            ["creationTime"] = group.CreationTime is null ? null : FormatTime(group.CreationTime.ToDateTime()),
            ["readyToUse"] = ready,
            ["volumeSnapshotInfoList"] = list,
        };
        if (ready && content.Status?.Error is not null)
        {
            status["error"] = null;
        }

        return await _c.Cluster.PatchGroupContentAsync(content, new JsonObject { ["status"] = status }, status: true, ct).ConfigureAwait(false);
    }

    private async Task DeleteAsync(VolumeGroupSnapshotContent content, CancellationToken ct)
    {
        if (!Cluster.HasFinalizer(content.Metadata, GroupNames.ContentBoundFinalizer))
        {
            return;
        }

        string? handle = content.Status?.VolumeGroupSnapshotHandle ?? content.Spec.Source.GroupSnapshotHandles?.VolumeGroupSnapshotHandle;
        IList<string> ids = content.Status?.VolumeSnapshotInfoList is { Count: > 0 } infos
            ? [.. infos.Select(i => i.SnapshotHandle ?? "")]
            : content.Spec.Source.GroupSnapshotHandles?.VolumeSnapshotHandles ?? [];
        if (content.Spec.DeletionPolicy == "Delete" && string.IsNullOrEmpty(handle)
            && Cluster.Annotation(content.Metadata, GroupNames.BeingCreatedAnnotation) == "yes"
            && content.Spec.Source.VolumeHandles is { Count: > 0 } volumes && content.Spec.VolumeGroupSnapshotRef.Uid is { Length: > 0 } uid)
        {
            // A create that may have cut the group never reported back: finish it (idempotent by name) to learn
            // the handle and members, so they are deleted rather than leaked. Until then the content stays.
            try
            {
                var group = await CallCreateAsync(content, volumes, uid, ct).ConfigureAwait(false);
                handle = group.GroupSnapshotId;
                ids = [.. group.Snapshots.Select(s => s.SnapshotId)];
            }
            catch (RpcException ex) when (!ct.IsCancellationRequested && IsFinal(ex.StatusCode) && ex.StatusCode != StatusCode.AlreadyExists)
            {
                // The create is idempotent by name and looks for a group of that name first, so a final error other
                // than AlreadyExists (a member volume gone, say) means no group exists under it: nothing to delete.
                // Without this the content of a claim deleted mid-creation (upstream #1183) could never go.
                handle = null;
            }
            catch (RpcException ex) when (!ct.IsCancellationRequested)
            {
                await FailAsync(content, DeleteFailed, $"cannot delete: the group snapshot may have been cut by a create that never answered, and finishing it failed: {ControllerContext.Describe(ex)}", ct).ConfigureAwait(false);
                throw new RetryLaterException(ex.Status.Detail, ex);
            }
        }

        if (content.Spec.DeletionPolicy == "Delete" && !string.IsNullOrEmpty(handle))
        {
            try
            {
                var request = new DeleteVolumeGroupSnapshotRequest { GroupSnapshotId = handle };
                request.SnapshotIds.Add(ids);
                await _c.Groups.DeleteVolumeGroupSnapshotAsync(request, _c.CsiCall(ct)).ConfigureAwait(false);
            }
            catch (RpcException ex) when (!ct.IsCancellationRequested)
            {
                await FailAsync(content, DeleteFailed, $"Failed to delete group snapshot {handle}: {ControllerContext.Describe(ex)}", ct).ConfigureAwait(false);
                throw new RetryLaterException(ex.Status.Detail, ex);
            }
        }

        if (Cluster.FinalizerPatch(content.Metadata, GroupNames.ContentBoundFinalizer, false) is { } remove)
        {
            await _c.Cluster.PatchGroupContentAsync(content, remove, status: false, ct).ConfigureAwait(false);
        }
    }

    private async Task FailAsync(VolumeGroupSnapshotContent content, string reason, string message, CancellationToken ct)
    {
        if (content.Status?.Error?.Message != message)
        {
            var error = new JsonObject { ["time"] = FormatTime(_c.Options.TimeProvider.GetUtcNow().UtcDateTime), ["message"] = message };
            await _c.Cluster.PatchGroupContentAsync(content, new JsonObject { ["status"] = new JsonObject { ["error"] = error, ["readyToUse"] = false } }, status: true, ct).ConfigureAwait(false);
        }

        await _c.Events.RecordAsync(content, EventRecorder.Warning, reason, message, ct).ConfigureAwait(false);
    }

    /// <summary>Whether the call certainly did nothing (the codes the sidecars treat as final).</summary>
    private static bool IsFinal(StatusCode code) =>
        code is not (StatusCode.Cancelled or StatusCode.DeadlineExceeded or StatusCode.Unavailable or StatusCode.ResourceExhausted or StatusCode.Aborted);

    internal static string FormatTime(DateTime time) => time.ToUniversalTime().ToString("yyyy-MM-ddTHH:mm:ssZ", CultureInfo.InvariantCulture);

    private static JsonObject Annotate(string name, string? value) =>
        new() { ["metadata"] = new JsonObject { ["annotations"] = new JsonObject { [name] = value } } };
}
