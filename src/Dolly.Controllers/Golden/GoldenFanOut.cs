using System.Net;
using Dolly.Controllers.Model;
using Dolly.Controllers.Runtime;
using k8s;
using k8s.Autorest;
using k8s.Models;

namespace Dolly.Controllers.Golden;

/// <summary>What the fan-out found in one namespace.</summary>
internal sealed record NamespaceOutcome(GoldenNamespaceStatus Status, bool Conflict);

/// <summary>
/// Brings one opted-in namespace to the current revision: the pinned <c>&lt;snapshotName&gt;-r&lt;N&gt;</c> and, once the
/// previous one is gone, <c>&lt;snapshotName&gt;</c> itself, each bound two-way to its own Retain content of the
/// revision's driver snapshot; then the spec.claim claim. A name held by anything not made by this golden snapshot is
/// a conflict: reported, never overwritten nor adopted.
/// </summary>
internal sealed class GoldenFanOut(ControllerContext c)
{
    public async Task<NamespaceOutcome> EnsureAsync(GoldenSnapshot golden, GoldenRevision revision, GoldenTarget target, GoldenIndex index, long? claimBytes, CancellationToken ct)
    {
        string ns = target.Namespace;
        var status = new GoldenNamespaceStatus { Name = ns };
        var current = c.Cluster.Snapshots.Get(ns, golden.Spec.SnapshotName);
        if (target.Blocked is { } blocked)
        {
            Describe(status, golden, current);
            status.Message = blocked;
            return new NamespaceOutcome(status, false);
        }

        try
        {
            var conflicts = new List<string>();
            if (await EnsurePairAsync(golden, revision, ns, GoldenSlot.Pinned, ct).ConfigureAwait(false) is { } pinnedConflict)
            {
                conflicts.Add(pinnedConflict);
            }

            string? moving = null;
            if (current is null)
            {
                if (await EnsurePairAsync(golden, revision, ns, GoldenSlot.Current, ct).ConfigureAwait(false) is { } currentConflict)
                {
                    conflicts.Add(currentConflict);
                }

                current = c.Cluster.Snapshots.Get(ns, golden.Spec.SnapshotName);
            }
            else if (!GoldenObjects.IsOurs(current.Metadata, golden))
            {
                conflicts.Add(Conflict("VolumeSnapshot", ns + "/" + golden.Spec.SnapshotName));
            }
            else if (GoldenObjects.RevisionOf(current.Metadata) != revision.Revision)
            {
                // VolumeSnapshot sources are immutable: the rollover replaces it. A restore in progress from it holds it
                // (its finalizer) until done; the new one is made once it is gone.
                if (current.Metadata.DeletionTimestamp is null)
                {
                    await c.Cluster.DeleteSnapshotAsync(current, ct).ConfigureAwait(false);
                }

                moving = $"moving to revision {revision.Revision}";
            }

            if (golden.Spec.Claim is { } template && claimBytes is { } bytes && await EnsureClaimAsync(golden, template, revision, bytes, ns, ct).ConfigureAwait(false) is { } claimConflict)
            {
                conflicts.Add(claimConflict);
            }

            Describe(status, golden, current);
            status.Message = conflicts.Count > 0 ? string.Join("; ", conflicts) : moving;
            return new NamespaceOutcome(status, conflicts.Count > 0);
        }
        catch (HttpOperationException ex) when (ex.Response.StatusCode is HttpStatusCode.Forbidden or HttpStatusCode.NotFound)
        {
            // A namespace being deleted (403 NamespaceTerminating) or gone between the look and the write.
            Describe(status, golden, current);
            status.Message = $"writing into namespace {ns} was refused: {(int)ex.Response.StatusCode} {ex.Response.ReasonPhrase}";
            return new NamespaceOutcome(status, false);
        }
    }

    /// <summary>The status of a namespace that no longer opts in but still has this golden snapshot's objects.</summary>
    public GoldenNamespaceStatus Leftover(GoldenSnapshot golden, string ns)
    {
        var status = new GoldenNamespaceStatus { Name = ns };
        Describe(status, golden, c.Cluster.Snapshots.Get(ns, golden.Spec.SnapshotName));
        status.Message = "no longer opted in: no new revision reaches it; what it has stays until its users delete it";
        return status;
    }

    private void Describe(GoldenNamespaceStatus status, GoldenSnapshot golden, VolumeSnapshot? current)
    {
        if (current is not null && GoldenObjects.IsOurs(current.Metadata, golden))
        {
            status.Revision = GoldenObjects.RevisionOf(current.Metadata);
            status.SnapshotReady = current.Status?.ReadyToUse == true && current.Metadata.DeletionTimestamp is null;
        }

        if (golden.Spec.Claim is { } template && c.Cluster.Claims.Get(status.Name, template.Name) is { } claim && GoldenObjects.IsOurs(claim.Metadata, golden))
        {
            status.ClaimPhase = claim.Status?.Phase ?? "Pending";
            status.ClaimRevision = GoldenObjects.ClaimRevision(claim);
        }
    }

    /// <summary>Makes the content and VolumeSnapshot of a slot; returns a conflict message when a name is taken.</summary>
    private async Task<string?> EnsurePairAsync(GoldenSnapshot golden, GoldenRevision revision, string ns, GoldenSlot slot, CancellationToken ct)
    {
        string snapshotName = GoldenObjects.SnapshotName(golden, slot, revision.Revision);
        var existing = c.Cluster.Snapshots.Get(ns, snapshotName);
        if (existing is not null)
        {
            return GoldenObjects.IsOurs(existing.Metadata, golden) ? null : Conflict("VolumeSnapshot", ns + "/" + snapshotName);
        }

        var wanted = GoldenObjects.Content(golden, revision, ns, slot);
        var content = c.Cluster.Contents.Get(wanted.Metadata.Name);
        if (content is null)
        {
            (content, _) = await c.Cluster.CreateContentAsync(wanted, ct).ConfigureAwait(false);
        }

        if (!GoldenObjects.IsOurs(content.Metadata, golden) || content.Spec.Source.SnapshotHandle != revision.SnapshotHandle
            || content.Spec.VolumeSnapshotRef.Name != snapshotName || content.Spec.VolumeSnapshotRef.NamespaceProperty != ns)
        {
            return Conflict("VolumeSnapshotContent", wanted.Metadata.Name);
        }

        var made = await c.Cluster.CreateSnapshotAsync(GoldenObjects.Snapshot(golden, revision.Revision, ns, slot), ct).ConfigureAwait(false);
        return GoldenObjects.IsOurs(made.Metadata, golden) ? null : Conflict("VolumeSnapshot", ns + "/" + snapshotName);
    }

    private async Task<string?> EnsureClaimAsync(GoldenSnapshot golden, GoldenClaimTemplate template, GoldenRevision revision, long bytes, string ns, CancellationToken ct)
    {
        var existing = c.Cluster.Claims.Get(ns, template.Name);
        if (existing is null)
        {
            try
            {
                existing = await c.Cluster.Client.CoreV1.CreateNamespacedPersistentVolumeClaimAsync(GoldenObjects.Claim(golden, template, revision, bytes, ns), ns, cancellationToken: ct).ConfigureAwait(false);
                c.Cluster.Claims.Remember(existing);
            }
            catch (HttpOperationException ex) when (ex.Response.StatusCode == HttpStatusCode.Conflict)
            {
                existing = await c.Cluster.Client.CoreV1.ReadNamespacedPersistentVolumeClaimAsync(template.Name, ns, cancellationToken: ct).ConfigureAwait(false);
            }
        }

        return GoldenObjects.IsOurs(existing.Metadata, golden) ? null : Conflict("PersistentVolumeClaim", ns + "/" + template.Name);
    }

    private static string Conflict(string kind, string name) =>
        $"{kind} {name} already exists and was not made by this golden snapshot: it is left alone";

    /// <summary>Whether the claim is not yet bound and restores from a VolumeSnapshot (so that snapshot must stay).</summary>
    public static bool Restoring(V1PersistentVolumeClaim claim) =>
        string.IsNullOrEmpty(claim.Spec?.VolumeName) && claim.Metadata.DeletionTimestamp is null
        && Provisioner.Source(claim) is { Kind: "VolumeSnapshot", ApiGroup: Names.SnapshotGroup };
}
