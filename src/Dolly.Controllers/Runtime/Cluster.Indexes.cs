using Dolly.Controllers.Model;
using Dolly.Controllers.Schedules;
using k8s.Models;

namespace Dolly.Controllers.Runtime;

/// <summary>
/// The informers' secondary indexes, so an event touches only the objects related to it (as the upstream controllers'
/// indexers do) instead of walking a whole cache: a handler or reconcile asks <see cref="Informer{T}.ByIndex"/> with one
/// of these names. Every index value is an <see cref="ObjectKey"/> string unless said otherwise.
/// </summary>
internal static class Indexes
{
    /// <summary>VolumeSnapshots by the claim they snapshot (spec.source.persistentVolumeClaimName, in their namespace).</summary>
    public const string SnapshotBySourceClaim = "snapshot-by-source-claim";

    /// <summary>VolumeSnapshots by the content they name: spec.source.volumeSnapshotContentName and status.boundVolumeSnapshotContentName.</summary>
    public const string SnapshotByContent = "snapshot-by-content";

    /// <summary>
    /// VolumeSnapshots not bound to a content yet, by the class they ask for (empty for "the driver's default"): a
    /// class change concerns only these.
    /// </summary>
    public const string UnboundSnapshotByClass = "unbound-snapshot-by-class";

    /// <summary>VolumeSnapshots by the schedule whose label they carry: <c>namespace/name</c> of a SnapshotSchedule, <c>name</c> of a ClusterSnapshotSchedule.</summary>
    public const string SnapshotBySchedule = "snapshot-by-schedule";

    /// <summary>VolumeSnapshotContents by the snapshot their spec.volumeSnapshotRef names.</summary>
    public const string ContentBySnapshotRef = "content-by-snapshot-ref";

    /// <summary>Claims by their data source: <c>Kind:namespace/name</c> of the VolumeSnapshot or claim they restore or clone (dataSourceRef first).</summary>
    public const string ClaimByDataSource = "claim-by-data-source";

    /// <summary>
    /// Claims with no volume yet and not being deleted, by the StorageClass they ask for (empty for "the default
    /// class"): a StorageClass change concerns only these.
    /// </summary>
    public const string PendingClaimByClass = "pending-claim-by-class";

    /// <summary>Pending claims whose data source is in another namespace, by that namespace: a ReferenceGrant there concerns only these.</summary>
    public const string PendingClaimBySourceNamespace = "pending-claim-by-source-namespace";

    /// <summary>Claims made for a StatefulSet (its <c>dolly.io/statefulset</c> annotation), by <c>namespace/statefulset</c>.</summary>
    public const string ClaimByStatefulSet = "claim-by-statefulset";

    /// <summary>PersistentVolumes by the claim their claimRef names.</summary>
    public const string VolumeByClaim = "volume-by-claim";

    /// <summary>PersistentVolumes by the UID their claimRef carries.</summary>
    public const string VolumeByClaimUid = "volume-by-claim-uid";

    /// <summary>PersistentVolumes with no claimRef and not being deleted (index value: empty).</summary>
    public const string AvailableVolume = "available-volume";

    /// <summary>PersistentVolumes by CSI driver and volume handle, <c>driver/handle</c>.</summary>
    public const string VolumeByHandle = "volume-by-handle";

    /// <summary>VolumeSnapshots by the UID of each owner reference (a group snapshot finds its members by its UID).</summary>
    public const string SnapshotByOwnerUid = "snapshot-by-owner-uid";

    /// <summary>VolumeSnapshotClasses annotated as their driver's default, by driver.</summary>
    public const string DefaultSnapshotClassByDriver = "default-snapshot-class-by-driver";

    /// <summary>VolumeGroupSnapshots not bound to a content yet, by namespace: a claim there may be what they wait for.</summary>
    public const string UnboundGroupSnapshotByNamespace = "unbound-group-snapshot-by-namespace";

    /// <summary>
    /// VolumeGroupSnapshots not bound to a content yet, by the class they name (empty for "the driver's default"): a
    /// class change concerns only these.
    /// </summary>
    public const string UnboundGroupSnapshotByClass = "unbound-group-snapshot-by-class";

    /// <summary>VolumeGroupSnapshotClasses annotated as their driver's default, by driver.</summary>
    public const string DefaultGroupClassByDriver = "default-group-class-by-driver";

    /// <summary>SnapshotSchedules and ClusterSnapshotSchedules by the VolumeSnapshotClass they name (none when they name none).</summary>
    public const string ScheduleByClass = "schedule-by-class";

    /// <summary>VolumeSnapshotContents by spec.volumeSnapshotClassName (a class gaining a repository lets them upload).</summary>
    public const string ContentByClass = "content-by-class";

    /// <summary>VolumeSnapshotContents with an upload or restore to a repository not finished (value: empty string).</summary>
    public const string ContentAwaitingRepository = "content-awaiting-repository";

    /// <summary>The index value of a data source.</summary>
    public static string DataSourceValue(string kind, string ns, string name) => kind + ":" + new ObjectKey(ns, name);

    /// <summary>The index value of a claim or a snapshot in a namespace.</summary>
    public static string Key(string? ns, string name) => new ObjectKey(ns ?? "", name).ToString();

    /// <summary>The index value of a CSI volume.</summary>
    public static string Handle(string driver, string handle) => driver + "/" + handle;

    private static readonly string[] None = [];

    internal static void AddTo(Cluster cluster)
    {
        cluster.Snapshots.AddIndex(SnapshotBySourceClaim, s =>
            s.Spec?.Source?.PersistentVolumeClaimName is { Length: > 0 } claim ? [Key(s.Metadata.NamespaceProperty, claim)] : None);
        cluster.Snapshots.AddIndex(SnapshotByContent, s =>
        {
            string? named = s.Spec?.Source?.VolumeSnapshotContentName;
            string? bound = s.Status?.BoundVolumeSnapshotContentName;
            return (named, bound) switch
            {
                ({ Length: > 0 }, { Length: > 0 }) when named != bound => [named, bound],
                ({ Length: > 0 }, _) => [named],
                (_, { Length: > 0 }) => [bound],
                _ => None,
            };
        });
        cluster.Snapshots.AddIndex(UnboundSnapshotByClass, s =>
            string.IsNullOrEmpty(s.Status?.BoundVolumeSnapshotContentName) ? [s.Spec?.VolumeSnapshotClassName ?? ""] : None);
        cluster.Snapshots.AddIndex(SnapshotBySchedule, s =>
        {
            var labels = s.Metadata.Labels;
            if (labels is null)
            {
                return None;
            }

            var values = new List<string>(1);
            if (labels.TryGetValue(ScheduleNames.LabelFor(cluster: false), out var ns) && ns.Length > 0)
            {
                values.Add(Key(s.Metadata.NamespaceProperty, ns));
            }

            if (labels.TryGetValue(ScheduleNames.LabelFor(cluster: true), out var cl) && cl.Length > 0)
            {
                values.Add(cl);
            }

            return values;
        });
        cluster.Snapshots.AddIndex(SnapshotByOwnerUid, s =>
            s.Metadata.OwnerReferences is { Count: > 0 } owners ? owners.Select(o => o.Uid).Where(u => !string.IsNullOrEmpty(u)) : None);
        cluster.SnapshotClasses.AddIndex(DefaultSnapshotClassByDriver, c =>
            Cluster.Annotation(c.Metadata, Names.DefaultSnapshotClassAnnotation) == "true" ? [c.Driver ?? ""] : None);
        cluster.GroupSnapshots.AddIndex(UnboundGroupSnapshotByNamespace, g =>
            string.IsNullOrEmpty(g.Status?.BoundVolumeGroupSnapshotContentName) ? [g.Metadata.NamespaceProperty ?? ""] : None);
        cluster.GroupSnapshots.AddIndex(UnboundGroupSnapshotByClass, g =>
            string.IsNullOrEmpty(g.Status?.BoundVolumeGroupSnapshotContentName) ? [g.Spec?.VolumeGroupSnapshotClassName ?? ""] : None);
        cluster.GroupClasses.AddIndex(DefaultGroupClassByDriver, c =>
            Cluster.Annotation(c.Metadata, GroupNames.DefaultClassAnnotation) == "true" ? [c.Driver ?? ""] : None);
        cluster.Schedules.AddIndex(ScheduleByClass, ClassOf);
        cluster.ClusterSchedules.AddIndex(ScheduleByClass, ClassOf);
        cluster.Contents.AddIndex(ContentBySnapshotRef, c =>
            c.Spec?.VolumeSnapshotRef is { Name.Length: > 0 } r ? [Key(r.NamespaceProperty, r.Name)] : None);
        cluster.Contents.AddIndex(ContentByClass, c =>
            c.Spec?.VolumeSnapshotClassName is { Length: > 0 } name ? [name] : None);
        cluster.Contents.AddIndex(ContentAwaitingRepository, c =>
            Repository.TransferController.Waits(c) ? [""] : None);

        cluster.Claims.AddIndex(ClaimByDataSource, c =>
            Provisioner.Source(c) is { } s ? [DataSourceValue(s.Kind, s.Namespace, s.Name)] : None);
        cluster.Claims.AddIndex(PendingClaimByClass, c =>
            IsPending(c) ? [c.Spec?.StorageClassName ?? ""] : None);
        cluster.Claims.AddIndex(PendingClaimBySourceNamespace, c =>
            IsPending(c) && Provisioner.Source(c) is { } s && s.Namespace != c.Metadata.NamespaceProperty ? [s.Namespace] : None);
        cluster.Claims.AddIndex(ClaimByStatefulSet, c =>
            Cluster.Annotation(c.Metadata, StatefulSetClaims.CreatedByAnnotation) is { Length: > 0 } set ? [Key(c.Metadata.NamespaceProperty, set)] : None);

        cluster.Volumes.AddIndex(VolumeByClaim, v =>
            v.Spec?.ClaimRef is { Name.Length: > 0 } r ? [Key(r.NamespaceProperty, r.Name)] : None);
        cluster.Volumes.AddIndex(VolumeByClaimUid, v =>
            v.Spec?.ClaimRef?.Uid is { Length: > 0 } uid ? [uid] : None);
        cluster.Volumes.AddIndex(AvailableVolume, v =>
            v.Spec?.ClaimRef is null && v.Metadata.DeletionTimestamp is null ? [""] : None);
        cluster.Volumes.AddIndex(VolumeByHandle, v =>
            v.Spec?.Csi is { Driver.Length: > 0, VolumeHandle.Length: > 0 } csi ? [Handle(csi.Driver, csi.VolumeHandle)] : None);
    }

    private static IEnumerable<string> ClassOf(SnapshotSchedule s) =>
        s.Spec?.SnapshotClassName is { Length: > 0 } name ? [name] : None;

    private static bool IsPending(V1PersistentVolumeClaim claim) =>
        string.IsNullOrEmpty(claim.Spec?.VolumeName) && claim.Metadata.DeletionTimestamp is null;
}
