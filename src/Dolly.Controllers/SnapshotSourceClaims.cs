using Dolly.Controllers.Model;
using Dolly.Controllers.Runtime;
using Microsoft.Extensions.Logging;

namespace Dolly.Controllers;

/// <summary>
/// The snapshot controller's part for the claims snapshots are cut from, on its own queue of claim keys (upstream's
/// pvc-as-source protection): the finalizer <c>snapshot.storage.kubernetes.io/pvc-as-source-protection</c> goes from
/// a claim once no snapshot of it is still being cut. <see cref="SnapshotController"/> sets it and queues the claims.
/// </summary>
internal sealed class SnapshotSourceClaims : Reconciler<ObjectKey>
{
    private readonly ControllerContext _c;

    public SnapshotSourceClaims(ControllerContext context)
        : base(
            "snapshot-source-claims",
            new WorkQueue<ObjectKey>(context.Options.RetryBaseDelay, context.Options.RetryMaxDelay),
            context.Loggers.CreateLogger<SnapshotSourceClaims>())
    {
        _c = context;
    }

    protected override async Task<Outcome> ReconcileAsync(ObjectKey key, CancellationToken cancellationToken)
    {
        await ReleaseAsync(key, cancellationToken).ConfigureAwait(false);
        return Outcome.Done;
    }

    /// <summary>Drops the claim's snapshot-source finalizer once no snapshot of it is still being cut.</summary>
    public async Task ReleaseAsync(ObjectKey claimKey, CancellationToken ct)
    {
        var claim = _c.Cluster.Claims.Get(claimKey.ToString());
        if (claim is null || !Cluster.HasFinalizer(claim.Metadata, Names.PvcAsSourceFinalizer))
        {
            return;
        }

        // Being cut: past its checks (it holds its finalizers, set just before the claim's) or bound, and not
        // ready yet. A snapshot that failed its checks (say, its class is missing) cuts nothing and must not
        // pin the claim.
        bool cutting = _c.Cluster.Snapshots.ByIndex(Indexes.SnapshotBySourceClaim, claimKey.ToString()).Any(s =>
            s.Metadata.DeletionTimestamp is null && s.Status?.ReadyToUse != true
            && (!string.IsNullOrEmpty(s.Status?.BoundVolumeSnapshotContentName) || Cluster.HasFinalizer(s.Metadata, Names.SnapshotAsSourceFinalizer)));
        if (!cutting && MergePatch.Finalizer(claim.Metadata, Names.PvcAsSourceFinalizer, false) is { } patch)
        {
            await _c.Cluster.PatchClaimAsync(claim, patch, ct).ConfigureAwait(false);
        }
    }
}
