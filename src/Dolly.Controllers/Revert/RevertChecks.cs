using Dolly.Controllers.Runtime;
using Dolly.V1;
using Grpc.Core;

namespace Dolly.Controllers.Revert;

/// <summary>What a revert acts on once every check passed.</summary>
/// <param name="VolumeName">The claim's PersistentVolume.</param>
/// <param name="VolumeHandle">Its CSI volume id.</param>
/// <param name="SnapshotHandle">The CSI snapshot id of the snapshot reverted to.</param>
internal sealed record RevertTarget(string VolumeName, string VolumeHandle, string SnapshotHandle);

/// <summary>Why a revert cannot go on: a reason (the condition's and the event's), a message naming the problem, and whether it is final.</summary>
internal sealed record RevertProblem(string Reason, string Message, bool Final);

/// <summary>The rules a revert must pass before anything is done; none of them changes anything.</summary>
internal static class RevertChecks
{
    /// <summary>Checks the revert against the cache and, for lineage and size, against the driver (a dry run).</summary>
    public static async Task<(RevertTarget? Target, RevertProblem? Problem)> RunAsync(
        ControllerContext c, VolumeContentService.VolumeContentServiceClient content, VolumeRevert revert, CancellationToken ct)
    {
        var (target, problem) = Check(c, revert);
        if (problem is not null)
        {
            return (null, problem);
        }

        try
        {
            await content.ReplaceContentAsync(
                new ReplaceContentRequest
                {
                    RequestId = revert.Metadata.Uid,
                    VolumeId = target!.VolumeHandle,
                    SnapshotId = target.SnapshotHandle,
                    AllowForeignSnapshot = revert.Spec.AllowForeignSnapshot == true,
                    DryRun = true,
                },
                c.CsiCall(ct)).ConfigureAwait(false);
        }
        catch (RpcException ex) when (!ct.IsCancellationRequested && ex.StatusCode == StatusCode.Aborted)
        {
            return (null, new RevertProblem("VolumeBusy", $"another content change of the claim's volume is pending: {ex.Status.Detail}", Final: false));
        }
        catch (RpcException ex) when (!ct.IsCancellationRequested && IsFinal(ex.StatusCode))
        {
            return (null, new RevertProblem(ReasonFor(ex.StatusCode), $"{ex.Status.Detail}; nothing was changed", Final: true));
        }

        return (target, null);
    }

    /// <summary>The checks the cache can answer.</summary>
    internal static (RevertTarget? Target, RevertProblem? Problem) Check(ControllerContext c, VolumeRevert revert)
    {
        string ns = revert.Metadata.NamespaceProperty;
        var spec = revert.Spec;
        if (string.IsNullOrEmpty(spec.ClaimName))
        {
            return Fail("InvalidSpec", "spec.claimName is required");
        }

        if (string.IsNullOrEmpty(spec.VolumeSnapshotName))
        {
            return Fail("InvalidSpec", "spec.volumeSnapshotName is required");
        }

        if (spec.VolumeSnapshotName.Contains('/', StringComparison.Ordinal))
        {
            return Fail("SnapshotInAnotherNamespace", $"spec.volumeSnapshotName \"{spec.VolumeSnapshotName}\" names a snapshot of another namespace; a claim is reverted only to a snapshot of its own namespace ({ns})");
        }

        var claim = c.Cluster.Claims.Get(ns, spec.ClaimName);
        if (claim is null)
        {
            return Wait("ClaimNotFound", $"claim {ns}/{spec.ClaimName} does not exist");
        }

        if (claim.Metadata.DeletionTimestamp is not null)
        {
            return Fail("ClaimBeingDeleted", $"claim {ns}/{spec.ClaimName} is being deleted");
        }

        if (claim.Status?.Phase != "Bound" || string.IsNullOrEmpty(claim.Spec?.VolumeName))
        {
            return Wait("ClaimNotBound", $"claim {ns}/{spec.ClaimName} is not bound (phase {claim.Status?.Phase ?? "Pending"})");
        }

        var pv = c.Cluster.Volumes.Get(claim.Spec.VolumeName);
        if (pv is null)
        {
            return Wait("VolumeNotFound", $"volume {claim.Spec.VolumeName} of claim {ns}/{spec.ClaimName} does not exist");
        }

        if (pv.Spec?.Csi?.Driver != c.Options.DriverName || string.IsNullOrEmpty(pv.Spec.Csi.VolumeHandle))
        {
            return Fail("NotDollyVolume", $"claim {ns}/{spec.ClaimName} is a volume of {(pv.Spec?.Csi?.Driver is { } d ? "driver " + d : "no CSI driver")}, not of {c.Options.DriverName}; only {c.Options.DriverName} reverts in place");
        }

        if (c.Cluster.Reverts.List().FirstOrDefault(r => r.Metadata.NamespaceProperty == ns && r.Metadata.Uid != revert.Metadata.Uid
            && r.Spec.ClaimName == spec.ClaimName && Cluster.HasFinalizer(r.Metadata, RevertNames.Finalizer) && r.Status?.Phase == RevertNames.Pending) is { } other)
        {
            return Wait("AnotherRevertInProgress", $"VolumeRevert {ns}/{other.Metadata.Name} of claim {spec.ClaimName} is in progress; this one waits for it");
        }

        var snapshot = c.Cluster.Snapshots.Get(ns, spec.VolumeSnapshotName);
        if (snapshot is null)
        {
            return Wait("SnapshotNotFound", $"VolumeSnapshot {ns}/{spec.VolumeSnapshotName} does not exist");
        }

        if (snapshot.Metadata.DeletionTimestamp is not null)
        {
            return Fail("SnapshotBeingDeleted", $"VolumeSnapshot {ns}/{spec.VolumeSnapshotName} is being deleted");
        }

        var content = snapshot.Status?.BoundVolumeSnapshotContentName is { } cn ? c.Cluster.Contents.Get(cn) : null;
        if (content is not null && content.Spec.Driver != c.Options.DriverName)
        {
            return Fail("SnapshotOfAnotherDriver", $"VolumeSnapshot {ns}/{spec.VolumeSnapshotName} is of driver {content.Spec.Driver}, not {c.Options.DriverName}");
        }

        if (snapshot.Status?.ReadyToUse != true || content?.Status?.SnapshotHandle is not { Length: > 0 } handle)
        {
            string error = snapshot.Status?.Error?.Message is { } e ? $": {e}" : "";
            return Wait("SnapshotNotReady", $"VolumeSnapshot {ns}/{spec.VolumeSnapshotName} is not ready to use{error}");
        }

        long? capacity = Quantities.Capacity(pv);
        long? size = content.Status.RestoreSize ?? Quantities.ToBytes(snapshot.Status.RestoreSize);
        if (capacity is { } cap && size is { } sz && sz > cap)
        {
            return Fail("SnapshotTooLarge", $"VolumeSnapshot {ns}/{spec.VolumeSnapshotName} ({sz} bytes) is larger than claim {spec.ClaimName} ({cap} bytes); grow the claim first");
        }

        // Lineage (a snapshot of this volume, of a clone of it, of what it was cloned from) only the driver knows: the
        // dry run that follows asks it.
        return (new RevertTarget(pv.Metadata.Name, pv.Spec.Csi.VolumeHandle, handle), null);

        static (RevertTarget?, RevertProblem?) Fail(string reason, string message) => (null, new RevertProblem(reason, message + "; nothing was changed", Final: true));
        static (RevertTarget?, RevertProblem?) Wait(string reason, string message) => (null, new RevertProblem(reason, message + "; waiting", Final: false));
    }

    /// <summary>Whether a gRPC failure is an answer (not worth retrying as it is) rather than trouble reaching the driver.</summary>
    public static bool IsFinal(StatusCode code) =>
        code is not (StatusCode.Cancelled or StatusCode.DeadlineExceeded or StatusCode.Unavailable or StatusCode.ResourceExhausted or StatusCode.Aborted or StatusCode.Internal or StatusCode.Unknown);

    /// <summary>The condition reason for a driver's refusal.</summary>
    public static string ReasonFor(StatusCode code) => code switch
    {
        StatusCode.FailedPrecondition => "ForeignSnapshot",
        StatusCode.OutOfRange => "SnapshotTooLarge",
        StatusCode.NotFound => "NotFoundByDriver",
        StatusCode.InvalidArgument => "InvalidSpec",
        _ => "RefusedByDriver",
    };
}
