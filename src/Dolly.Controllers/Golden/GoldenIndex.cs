using Dolly.Controllers.Model;
using Dolly.Controllers.Runtime;
using k8s.Models;

namespace Dolly.Controllers.Golden;

/// <summary>A claim that restores (or restored) from one of a GoldenSnapshot's VolumeSnapshots.</summary>
internal sealed record GoldenConsumer(V1PersistentVolumeClaim Claim, VolumeSnapshot? Snapshot, bool IsSpecClaim);

/// <summary>
/// One pass over the caches per reconcile: a GoldenSnapshot's own VolumeSnapshots and contents, and the claims that
/// consume them, grouped by namespace, so a fan-out to many namespaces never scans the cluster once per namespace.
/// </summary>
internal sealed class GoldenIndex
{
    private GoldenIndex(GoldenSnapshot golden, Cluster cluster)
    {
        string name = golden.Metadata.Name;
        foreach (var s in cluster.Snapshots.List())
        {
            if (GoldenObjects.GoldenOf(s.Metadata) == name && GoldenObjects.IsOurs(s.Metadata, golden) && GoldenObjects.SlotOf(s.Metadata) is not null)
            {
                Bucket(Snapshots, s.Metadata.NamespaceProperty).Add(s);
            }
        }

        foreach (var content in cluster.Contents.List())
        {
            if (GoldenObjects.GoldenOf(content.Metadata) == name && GoldenObjects.IsOurs(content.Metadata, golden))
            {
                Contents.Add(content);
            }
        }

        string snapshotName = golden.Spec.SnapshotName;
        string? claimName = golden.Spec.Claim?.Name;
        foreach (var claim in cluster.Claims.List())
        {
            string ns = claim.Metadata.NamespaceProperty;
            bool isSpecClaim = claim.Metadata.Name == claimName && GoldenObjects.IsOurs(claim.Metadata, golden);
            VolumeSnapshot? source = null;
            if (Provisioner.Source(claim) is { Kind: "VolumeSnapshot", ApiGroup: Names.SnapshotGroup } ds && ds.Namespace == ns
                && (ds.Name == snapshotName || ds.Name.StartsWith(snapshotName + "-r", StringComparison.Ordinal)))
            {
                source = Snapshots.TryGetValue(ns, out var mine) ? mine.FirstOrDefault(s => s.Metadata.Name == ds.Name) : null;
            }

            if (isSpecClaim || source is not null)
            {
                Bucket(Consumers, ns).Add(new GoldenConsumer(claim, source, isSpecClaim));
            }
        }
    }

    /// <summary>This golden snapshot's VolumeSnapshots by namespace.</summary>
    public Dictionary<string, List<VolumeSnapshot>> Snapshots { get; } = new(StringComparer.Ordinal);

    /// <summary>This golden snapshot's contents.</summary>
    public List<VolumeSnapshotContent> Contents { get; } = [];

    /// <summary>Claims restoring from this golden snapshot's VolumeSnapshots (and its spec.claim claims), by namespace.</summary>
    public Dictionary<string, List<GoldenConsumer>> Consumers { get; } = new(StringComparer.Ordinal);

    public static GoldenIndex Build(GoldenSnapshot golden, Cluster cluster) => new(golden, cluster);

    public VolumeSnapshot? Snapshot(string ns, string name) =>
        Snapshots.TryGetValue(ns, out var list) ? list.FirstOrDefault(s => s.Metadata.Name == name) : null;

    public IReadOnlyList<GoldenConsumer> ConsumersIn(string ns) => Consumers.TryGetValue(ns, out var list) ? list : [];

    /// <summary>The revision a consumer's data holds: its annotation, else the revision of the snapshot it names.</summary>
    public static int? RevisionOf(GoldenConsumer consumer) =>
        GoldenObjects.ClaimRevision(consumer.Claim) ?? (consumer.Snapshot is { } s ? GoldenObjects.RevisionOf(s.Metadata) : null);

    private static List<T> Bucket<T>(Dictionary<string, List<T>> map, string ns)
    {
        if (!map.TryGetValue(ns, out var list))
        {
            list = [];
            map[ns] = list;
        }

        return list;
    }
}
