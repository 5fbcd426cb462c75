using System.Globalization;
using Dolly.Controllers.Model;
using Dolly.Controllers.Runtime;
using k8s;
using k8s.Models;

namespace Dolly.Controllers.Golden;

/// <summary>Which of the two VolumeSnapshots of a revision in a namespace an object belongs to.</summary>
internal enum GoldenSlot
{
    /// <summary><c>&lt;snapshotName&gt;-r&lt;N&gt;</c>: stays on its revision.</summary>
    Pinned,

    /// <summary><c>&lt;snapshotName&gt;</c>: on the current revision, replaced at each rollover.</summary>
    Current,
}

/// <summary>
/// The names, labels and shapes of what a GoldenSnapshot makes, and the test of whether an object is its own. Only
/// an object carrying both the golden label and the golden's uid is ever changed or deleted; anything else with a
/// name the controller wants is a user's object and is reported as a conflict, never overwritten nor adopted.
/// </summary>
internal static class GoldenObjects
{
    /// <summary>The longest GoldenSnapshot name whose content names still fit in 253 characters.</summary>
    public const int MaxGoldenName = 253 - 63 - 24;

    private const string SlotLabel = "dolly.io/golden-slot";
    private const string SnapshotApiVersion = Names.SnapshotGroup + "/v1";

    /// <summary>
    /// <c>golden-pin.&lt;golden&gt;.r&lt;N&gt;.&lt;namespace&gt;</c> or <c>golden-cur...</c>: a namespace has no dots and the
    /// prefix none either, so two different (golden, revision, namespace, slot) never share a name.
    /// </summary>
    public static string ContentName(string golden, int revision, string ns, GoldenSlot slot) =>
        $"{(slot == GoldenSlot.Pinned ? "golden-pin" : "golden-cur")}.{golden}.r{revision.ToString(CultureInfo.InvariantCulture)}.{ns}";

    public static string PinnedName(string snapshotName, int revision) => $"{snapshotName}-r{revision.ToString(CultureInfo.InvariantCulture)}";

    public static string SnapshotName(GoldenSnapshot golden, GoldenSlot slot, int revision) =>
        slot == GoldenSlot.Pinned ? PinnedName(golden.Spec.SnapshotName, revision) : golden.Spec.SnapshotName;

    /// <summary>The name of the VolumeSnapshot cut from a claim source for a revision, in the claim's namespace.</summary>
    public static string CutName(string golden, int revision) => $"golden-{golden}-r{revision.ToString(CultureInfo.InvariantCulture)}";

    /// <summary>Whether <paramref name="meta"/> is of an object this GoldenSnapshot made.</summary>
    public static bool IsOurs(V1ObjectMeta meta, GoldenSnapshot golden) =>
        meta.Labels?.TryGetValue(GoldenNames.GoldenLabel, out var name) == true && name == golden.Metadata.Name
        && Cluster.Annotation(meta, GoldenNames.UidAnnotation) == golden.Metadata.Uid;

    /// <summary>The revision label of an object, or null.</summary>
    public static int? RevisionOf(V1ObjectMeta meta) =>
        meta.Labels?.TryGetValue(GoldenNames.RevisionLabel, out var r) == true && int.TryParse(r, NumberStyles.None, CultureInfo.InvariantCulture, out int n) ? n : null;

    /// <summary>The slot label of an object, or null.</summary>
    public static GoldenSlot? SlotOf(V1ObjectMeta meta) =>
        meta.Labels?.TryGetValue(SlotLabel, out var s) == true ? s switch { "pinned" => GoldenSlot.Pinned, "current" => GoldenSlot.Current, _ => null } : null;

    /// <summary>The golden label value of an object, or null.</summary>
    public static string? GoldenOf(V1ObjectMeta meta) =>
        meta.Labels?.TryGetValue(GoldenNames.GoldenLabel, out var g) == true ? g : null;

    public static V1ObjectMeta Meta(GoldenSnapshot golden, string name, string? ns, int revision, GoldenSlot? slot)
    {
        var labels = new Dictionary<string, string>
        {
            [GoldenNames.GoldenLabel] = golden.Metadata.Name,
            [GoldenNames.RevisionLabel] = revision.ToString(CultureInfo.InvariantCulture),
        };
        if (slot is { } s)
        {
            labels[SlotLabel] = s == GoldenSlot.Pinned ? "pinned" : "current";
        }

        return new V1ObjectMeta
        {
            Name = name,
            NamespaceProperty = ns,
            Labels = labels,
            Annotations = new Dictionary<string, string> { [GoldenNames.UidAnnotation] = golden.Metadata.Uid },
        };
    }

    /// <summary>
    /// A pre-provisioned, Retain content of the revision's driver snapshot, bound to exactly one VolumeSnapshot: the
    /// two-way binding the snapshot controller checks, so no other namespace's snapshot can claim it.
    /// </summary>
    public static VolumeSnapshotContent Content(GoldenSnapshot golden, GoldenRevision revision, string ns, GoldenSlot slot) => new()
    {
        Metadata = Meta(golden, ContentName(golden.Metadata.Name, revision.Revision, ns, slot), null, revision.Revision, slot),
        Spec = new VolumeSnapshotContentSpec
        {
            VolumeSnapshotRef = new V1ObjectReference { ApiVersion = SnapshotApiVersion, Kind = "VolumeSnapshot", Name = SnapshotName(golden, slot, revision.Revision), NamespaceProperty = ns },
            DeletionPolicy = "Retain",
            Driver = revision.Driver ?? GoldenNames.DefaultDriver,
            Source = new VolumeSnapshotContentSource { SnapshotHandle = revision.SnapshotHandle },
        },
    };

    public static VolumeSnapshot Snapshot(GoldenSnapshot golden, int revision, string ns, GoldenSlot slot) => new()
    {
        Metadata = Meta(golden, SnapshotName(golden, slot, revision), ns, revision, slot),
        Spec = new VolumeSnapshotSpec { Source = new VolumeSnapshotSource { VolumeSnapshotContentName = ContentName(golden.Metadata.Name, revision, ns, slot) } },
    };

    /// <summary>The spec.claim claim of a namespace, restored from the revision's pinned snapshot (so its revision is never in doubt).</summary>
    public static V1PersistentVolumeClaim Claim(GoldenSnapshot golden, GoldenClaimTemplate template, GoldenRevision revision, long bytes, string ns)
    {
        var meta = Meta(golden, template.Name, ns, revision.Revision, null);
        foreach (var (k, v) in template.Labels ?? new Dictionary<string, string>())
        {
            meta.Labels[k] = v;
        }

        meta.Annotations[GoldenNames.ClaimRevisionAnnotation] = revision.Revision.ToString(CultureInfo.InvariantCulture);
        meta.Annotations[GoldenNames.RefreshPolicyAnnotation] = template.RefreshPolicy ?? GoldenNames.Never;
        return new V1PersistentVolumeClaim
        {
            Metadata = meta,
            Spec = new V1PersistentVolumeClaimSpec
            {
                AccessModes = template.AccessModes is { Count: > 0 } modes ? [.. modes] : ["ReadWriteOnce"],
                StorageClassName = string.IsNullOrEmpty(template.StorageClassName) ? null : template.StorageClassName,
                VolumeMode = template.VolumeMode,
                Resources = new V1VolumeResourceRequirements { Requests = new Dictionary<string, ResourceQuantity> { ["storage"] = Quantities.FromBytes(bytes) } },
                DataSource = new V1TypedLocalObjectReference { ApiGroup = Names.SnapshotGroup, Kind = "VolumeSnapshot", Name = PinnedName(golden.Spec.SnapshotName, revision.Revision) },
                DataSourceRef = new V1TypedObjectReference { ApiGroup = Names.SnapshotGroup, Kind = "VolumeSnapshot", Name = PinnedName(golden.Spec.SnapshotName, revision.Revision) },
            },
        };
    }

    /// <summary>The revision annotation of a claim, or null.</summary>
    public static int? ClaimRevision(V1PersistentVolumeClaim claim) =>
        Cluster.Annotation(claim.Metadata, GoldenNames.ClaimRevisionAnnotation) is { } r && int.TryParse(r, NumberStyles.None, CultureInfo.InvariantCulture, out int n) ? n : null;

    /// <summary>The revision the controller asked the driver to refresh the claim's volume to, while that request stands.</summary>
    public static int? RefreshRequest(V1PersistentVolumeClaim claim) =>
        Cluster.Annotation(claim.Metadata, GoldenNames.RefreshRequestAnnotation) is { } r && int.TryParse(r, NumberStyles.None, CultureInfo.InvariantCulture, out int n) ? n : null;

    public static bool RefreshesOnNextAttach(V1PersistentVolumeClaim claim) =>
        Cluster.Annotation(claim.Metadata, GoldenNames.RefreshPolicyAnnotation) == GoldenNames.OnNextAttach;

    /// <summary>The object a merge patch and a round trip through JSON would give (a deep copy).</summary>
    public static T Copy<T>(T item) => KubernetesJson.Deserialize<T>(KubernetesJson.Serialize(item));
}
