using Dolly.Controllers.Model;
using Dolly.Controllers.Runtime;
using Microsoft.Extensions.Logging;
using k8s.Models;

namespace Dolly.Controllers;

/// <summary>
/// Keeps the provisioner's finalizers on data sources: a VolumeSnapshot carries
/// <c>provisioner.storage.kubernetes.io/volumesnapshot-as-source-protection</c> and a claim
/// <c>provisioner.storage.kubernetes.io/cloning-protection</c> exactly while some claim of this driver is
/// still waiting for a volume made from it. One key per source, so many restores of one snapshot never
/// race each other for its finalizer list.
/// </summary>
internal sealed class SourceGuard : Reconciler
{
    private const string SnapshotPrefix = "VolumeSnapshot:";
    private const string ClaimPrefix = "PersistentVolumeClaim:";
    private readonly ControllerContext _c;

    public SourceGuard(ControllerContext context)
        : base("source-guard", context.Options.RetryBaseDelay, context.Options.RetryMaxDelay, context.Loggers.CreateLogger<SourceGuard>())
    {
        _c = context;
        context.Cluster.Claims.OnChange((old, now) =>
        {
            foreach (var claim in new[] { old, now })
            {
                if (claim is not null && Provisioner.Source(claim) is { } s)
                {
                    Enqueue(s);
                }
            }

            if (now is not null && Cluster.HasFinalizer(now.Metadata, Names.CloningFinalizer))
            {
                Queue.Add(ClaimPrefix + Informer<V1PersistentVolumeClaim>.Key(now));
            }
        });
        context.Cluster.Snapshots.OnChange((_, s) =>
        {
            if (s is not null && Cluster.HasFinalizer(s.Metadata, Names.ProvisionerSnapshotSourceFinalizer))
            {
                Queue.Add(SnapshotPrefix + Informer<VolumeSnapshot>.Key(s));
            }
        });
    }

    private void Enqueue(Provisioner.DataSource s)
    {
        if (s.Kind == Names.SnapshotKind && s.ApiGroup == Names.SnapshotGroup)
        {
            Queue.Add(SnapshotPrefix + s.Namespace + "/" + s.Name);
        }
        else if (s.Kind == Names.ClaimKind && s.ApiGroup.Length == 0)
        {
            Queue.Add(ClaimPrefix + s.Namespace + "/" + s.Name);
        }
    }

    protected override async Task<Outcome> ReconcileAsync(string key, CancellationToken cancellationToken)
    {
        bool isSnapshot = key.StartsWith(SnapshotPrefix, StringComparison.Ordinal);
        string objectKey = key[(isSnapshot ? SnapshotPrefix.Length : ClaimPrefix.Length)..];
        int slash = objectKey.IndexOf('/', StringComparison.Ordinal);
        string ns = objectKey[..slash];
        string name = objectKey[(slash + 1)..];
        string kind = isSnapshot ? Names.SnapshotKind : Names.ClaimKind;

        var snapshot = isSnapshot ? _c.Cluster.Snapshots.Get(ns, name) : null;

        // Once a snapshot's deletion has begun, only restores recorded before it hold the snapshot (the provisioner
        // refuses the others): a claim that merely names it must not keep it forever (external-snapshotter#747).
        bool deleting = snapshot?.Metadata.DeletionTimestamp is not null;
        bool wanted = _c.Cluster.Claims.ByIndex(Indexes.ClaimByDataSource, Indexes.DataSourceValue(kind, ns, name)).Any(c =>
            Provisioner.Source(c) is { } s && s.Kind == kind && s.Namespace == ns && s.Name == name
            && (deleting
                ? Provisioner.RecordedRestore(c)
                : string.IsNullOrEmpty(c.Spec?.VolumeName) && c.Metadata.DeletionTimestamp is null
                    && Provisioner.ClassOf(_c.Cluster, c)?.Provisioner == _c.Options.DriverName));

        if (isSnapshot)
        {
            if (snapshot is not null && (wanted ? !deleting : true)
                && Cluster.FinalizerPatch(snapshot.Metadata, Names.ProvisionerSnapshotSourceFinalizer, wanted) is { } patch)
            {
                await _c.Cluster.PatchSnapshotAsync(snapshot, patch, status: false, cancellationToken).ConfigureAwait(false);
            }
        }
        else
        {
            var claim = _c.Cluster.Claims.Get(ns, name);
            if (claim is not null && (wanted ? claim.Metadata.DeletionTimestamp is null : true)
                && Cluster.FinalizerPatch(claim.Metadata, Names.CloningFinalizer, wanted) is { } patch)
            {
                await _c.Cluster.PatchClaimAsync(claim, patch, status: false, cancellationToken).ConfigureAwait(false);
            }
        }

        return Outcome.Done;
    }
}
