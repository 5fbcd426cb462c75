using Dolly.Controllers.Model;
using Dolly.Controllers.Runtime;

namespace Dolly.Controllers.Schedules;

/// <summary>
/// Something that may depend on a snapshot, so retention must not delete it. New dependents (GoldenSnapshot
/// revisions, repository uploads) join by adding an implementation to <see cref="SnapshotHolders.For"/>.
/// </summary>
internal interface ISnapshotHolder
{
    /// <summary>Who holds <paramref name="snapshot"/> (for example <c>in use: restore source of team-a/db-copy</c>); empty when nobody.</summary>
    IEnumerable<string> Holders(VolumeSnapshot snapshot);
}

/// <summary>The holders retention asks before it deletes a snapshot.</summary>
internal static class SnapshotHolders
{
    public static IReadOnlyList<ISnapshotHolder> For(Cluster cluster) => [new RestoreSourceHolder(cluster), new KeepAnnotationHolder(), new Golden.GoldenSourceHolder()];

    /// <summary>Everything that holds <paramref name="snapshot"/>, in the order of <paramref name="holders"/>.</summary>
    public static List<string> Of(IReadOnlyList<ISnapshotHolder> holders, VolumeSnapshot snapshot) =>
        [.. holders.SelectMany(h => h.Holders(snapshot))];
}

/// <summary>
/// A claim not yet bound whose data source is the snapshot: its volume is (or is about to be) restored from it. A
/// claim in any namespace counts, since a cross-namespace dataSourceRef may name it.
/// </summary>
internal sealed class RestoreSourceHolder(Cluster cluster) : ISnapshotHolder
{
    public IEnumerable<string> Holders(VolumeSnapshot snapshot)
    {
        var naming = cluster.Claims.ByIndex(Indexes.ClaimByDataSource, Indexes.DataSourceValue(Names.SnapshotKind, snapshot.Metadata.NamespaceProperty, snapshot.Metadata.Name));
        foreach (var claim in naming.OrderBy(c => c.Metadata.NamespaceProperty, StringComparer.Ordinal).ThenBy(c => c.Metadata.Name, StringComparer.Ordinal))
        {
            if (string.IsNullOrEmpty(claim.Spec?.VolumeName) && claim.Metadata.DeletionTimestamp is null
                && Provisioner.Source(claim) is { Kind: Names.SnapshotKind, ApiGroup: Names.SnapshotGroup } source
                && source.Namespace == snapshot.Metadata.NamespaceProperty && source.Name == snapshot.Metadata.Name)
            {
                yield return $"in use: restore source of {claim.Metadata.NamespaceProperty}/{claim.Metadata.Name}";
            }
        }
    }
}

/// <summary>A user's <c>dolly.io/keep</c> annotation (any value but <c>false</c>).</summary>
internal sealed class KeepAnnotationHolder : ISnapshotHolder
{
    public IEnumerable<string> Holders(VolumeSnapshot snapshot)
    {
        if (Cluster.Annotation(snapshot.Metadata, ScheduleNames.KeepAnnotation) is { } value && !string.Equals(value, "false", StringComparison.OrdinalIgnoreCase))
        {
            yield return "held: annotation " + ScheduleNames.KeepAnnotation;
        }
    }
}
