using Dolly.Controllers.Model;
using Dolly.Controllers.Runtime;
using Dolly.Csi.V1;
using Grpc.Core;

namespace Dolly.Controllers.Schedules;

/// <summary>
/// skipUnchanged: whether a schedule's new snapshot holds exactly what the claim's previous one does. The
/// controllers reach storage only through CSI, so the new snapshot is cut as usual and the driver's
/// SnapshotMetadata service is asked for the blocks that differ between the two (GetMetadataDelta, answered from
/// the pool's block maps without reading data); none, at the same size, means the new one is redundant.
/// </summary>
internal sealed class UnchangedCheck(ControllerContext context)
{
    private readonly SnapshotMetadata.SnapshotMetadataClient _metadata = new(context.CsiInvoker);

    /// <summary>The outcome of one comparison.</summary>
    internal enum Verdict
    {
        /// <summary>Not decidable yet (a content or its handle is missing).</summary>
        NotYet,

        /// <summary>Some block, or the size, differs.</summary>
        Changed,

        /// <summary>Same size, no block differs.</summary>
        Unchanged,
    }

    public async Task<(Verdict Verdict, string? Problem)> CompareAsync(VolumeSnapshot previous, VolumeSnapshot current, CancellationToken ct)
    {
        var before = Content(previous);
        var after = Content(current);
        if (before?.Status?.SnapshotHandle is not { Length: > 0 } baseId || after?.Status?.SnapshotHandle is not { Length: > 0 } targetId)
        {
            return (Verdict.NotYet, null);
        }

        if (before.Status.RestoreSize != after.Status.RestoreSize)
        {
            return (Verdict.Changed, null);
        }

        try
        {
            using var call = _metadata.GetMetadataDelta(
                new GetMetadataDeltaRequest { BaseSnapshotId = baseId, TargetSnapshotId = targetId, MaxResults = 1 },
                context.CsiCall(ct));
            while (await call.ResponseStream.MoveNext(ct).ConfigureAwait(false))
            {
                if (call.ResponseStream.Current.BlockMetadata.Count > 0)
                {
                    return (Verdict.Changed, null);
                }
            }

            return (Verdict.Unchanged, null);
        }
        catch (RpcException ex) when (!ct.IsCancellationRequested)
        {
            // A driver without the service, or a base it no longer has: keep the snapshot, say why.
            return (Verdict.Changed, "could not compare with " + previous.Metadata.Name + ": " + ControllerContext.Describe(ex));
        }
    }

    private VolumeSnapshotContent? Content(VolumeSnapshot s) =>
        s.Status?.BoundVolumeSnapshotContentName is { Length: > 0 } name ? context.Cluster.Contents.Get(name) : null;
}
