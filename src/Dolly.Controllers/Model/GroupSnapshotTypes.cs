using System.Text.Json.Serialization;
using k8s;
using k8s.Models;

namespace Dolly.Controllers.Model;

// groupsnapshot.storage.k8s.io/v1beta2, field names as in external-snapshotter's
// client/apis/volumegroupsnapshot/v1beta2/types.go.

/// <summary>Constants of the group snapshot API and of Dolly's group snapshot controllers.</summary>
public static class GroupNames
{
    /// <summary>The API group.</summary>
    public const string Group = "groupsnapshot.storage.k8s.io";

    /// <summary>The version the controllers read and write.</summary>
    public const string Version = "v1beta2";

    /// <summary>apiVersion of the kinds.</summary>
    public const string ApiVersion = Group + "/" + Version;

    /// <summary>Marks the VolumeGroupSnapshotClass used when a group snapshot names none (one per driver).</summary>
    public const string DefaultClassAnnotation = "groupsnapshot.storage.kubernetes.io/is-default-class";

    /// <summary>Held by a content until the storage system's group snapshot is deleted (policy Delete).</summary>
    public const string ContentBoundFinalizer = "groupsnapshot.storage.kubernetes.io/volumegroupsnapshotcontent-bound-protection";

    /// <summary>Held by a group snapshot until its members and, per policy, its content are gone.</summary>
    public const string GroupBoundFinalizer = "groupsnapshot.storage.kubernetes.io/volumegroupsnapshot-bound-protection";

    /// <summary>Held by a member VolumeSnapshot: it goes with its group, never alone.</summary>
    public const string InGroupFinalizer = "groupsnapshot.storage.kubernetes.io/volumesnapshot-in-group-protection";

    /// <summary>Held while CreateVolumeGroupSnapshot may have cut the group without the reply being recorded.</summary>
    public const string BeingCreatedAnnotation = "groupsnapshot.storage.kubernetes.io/volumegroupsnapshot-being-created";

    /// <summary>
    /// On a member VolumeSnapshotContent from the moment it is created: the driver's group snapshot id. Its
    /// snapshot is deleted with the group (DeleteVolumeGroupSnapshot), never on its own through DeleteSnapshot.
    /// </summary>
    public const string MemberOfGroupAnnotation = "dolly.io/volume-group-snapshot-handle";

    /// <summary>On a member VolumeSnapshot: the group snapshot it belongs to (a label, so `kubectl get vs -l` finds the members).</summary>
    public const string GroupLabel = "dolly.io/volume-group-snapshot";

    /// <summary>On a member VolumeSnapshot: the claim whose volume it is a snapshot of (what a restore wants to know).</summary>
    public const string SourceClaimAnnotation = "dolly.io/source-persistent-volume-claim";

    /// <summary>The content of a dynamic group snapshot.</summary>
    public static string ContentName(string groupUid) => "groupsnapcontent-" + groupUid;

    /// <summary>The CSI name of a dynamic group snapshot (CreateVolumeGroupSnapshot is idempotent by it).</summary>
    public static string CsiGroupName(string groupUid) => "groupsnapshot-" + groupUid;
}

/// <summary>A class of group snapshots: driver, parameters and deletion policy.</summary>
public sealed class VolumeGroupSnapshotClass : IKubernetesObject<V1ObjectMeta>
{
    /// <summary>Group and version.</summary>
    [JsonPropertyName("apiVersion")] public string ApiVersion { get; set; } = GroupNames.ApiVersion;

    /// <summary>Kind.</summary>
    [JsonPropertyName("kind")] public string Kind { get; set; } = "VolumeGroupSnapshotClass";

    /// <summary>Standard object metadata; the default-class annotation lives here.</summary>
    [JsonPropertyName("metadata")] public V1ObjectMeta Metadata { get; set; } = new();

    /// <summary>The CSI driver.</summary>
    [JsonPropertyName("driver")] public string Driver { get; set; } = "";

    /// <summary>Passed to CreateVolumeGroupSnapshot.</summary>
    [JsonPropertyName("parameters")] public IDictionary<string, string>? Parameters { get; set; }

    /// <summary>Delete or Retain.</summary>
    [JsonPropertyName("deletionPolicy")] public string DeletionPolicy { get; set; } = "Delete";
}

/// <summary>A namespaced request for one crash-consistent snapshot of several claims, or a binding to an existing content.</summary>
public sealed class VolumeGroupSnapshot : IKubernetesObject<V1ObjectMeta>
{
    /// <summary>Group and version.</summary>
    [JsonPropertyName("apiVersion")] public string ApiVersion { get; set; } = GroupNames.ApiVersion;

    /// <summary>Kind.</summary>
    [JsonPropertyName("kind")] public string Kind { get; set; } = "VolumeGroupSnapshot";

    /// <summary>Standard object metadata.</summary>
    [JsonPropertyName("metadata")] public V1ObjectMeta Metadata { get; set; } = new();

    /// <summary>What to snapshot.</summary>
    [JsonPropertyName("spec")] public VolumeGroupSnapshotSpec Spec { get; set; } = new();

    /// <summary>Observed state.</summary>
    [JsonPropertyName("status")] public VolumeGroupSnapshotStatus? Status { get; set; }
}

/// <summary>Spec of a <see cref="VolumeGroupSnapshot"/>.</summary>
public sealed class VolumeGroupSnapshotSpec
{
    /// <summary>Exactly one source.</summary>
    [JsonPropertyName("source")] public VolumeGroupSnapshotSource Source { get; set; } = new();

    /// <summary>The class; when absent the default class of the claims' driver.</summary>
    [JsonPropertyName("volumeGroupSnapshotClassName")] public string? VolumeGroupSnapshotClassName { get; set; }
}

/// <summary>A label query over claims (dynamic) or a pre-provisioned content.</summary>
public sealed class VolumeGroupSnapshotSource
{
    /// <summary>The claims in the group snapshot's namespace to snapshot together.</summary>
    [JsonPropertyName("selector")] public V1LabelSelector? Selector { get; set; }

    /// <summary>A pre-provisioned content.</summary>
    [JsonPropertyName("volumeGroupSnapshotContentName")] public string? VolumeGroupSnapshotContentName { get; set; }
}

/// <summary>Status of a <see cref="VolumeGroupSnapshot"/>.</summary>
public sealed class VolumeGroupSnapshotStatus
{
    /// <summary>The content it is bound to.</summary>
    [JsonPropertyName("boundVolumeGroupSnapshotContentName")] public string? BoundVolumeGroupSnapshotContentName { get; set; }

    /// <summary>When the storage system cut the group.</summary>
    [JsonPropertyName("creationTime")] public DateTime? CreationTime { get; set; }

    /// <summary>True once every member snapshot is ready.</summary>
    [JsonPropertyName("readyToUse")] public bool? ReadyToUse { get; set; }

    /// <summary>The last error, cleared on success.</summary>
    [JsonPropertyName("error")] public VolumeSnapshotError? Error { get; set; }
}

/// <summary>A group snapshot in the storage system, bound to one <see cref="VolumeGroupSnapshot"/>.</summary>
public sealed class VolumeGroupSnapshotContent : IKubernetesObject<V1ObjectMeta>
{
    /// <summary>Group and version.</summary>
    [JsonPropertyName("apiVersion")] public string ApiVersion { get; set; } = GroupNames.ApiVersion;

    /// <summary>Kind.</summary>
    [JsonPropertyName("kind")] public string Kind { get; set; } = "VolumeGroupSnapshotContent";

    /// <summary>Standard object metadata.</summary>
    [JsonPropertyName("metadata")] public V1ObjectMeta Metadata { get; set; } = new();

    /// <summary>Binding, policy, driver and source.</summary>
    [JsonPropertyName("spec")] public VolumeGroupSnapshotContentSpec Spec { get; set; } = new();

    /// <summary>Observed state.</summary>
    [JsonPropertyName("status")] public VolumeGroupSnapshotContentStatus? Status { get; set; }
}

/// <summary>Spec of a <see cref="VolumeGroupSnapshotContent"/>.</summary>
public sealed class VolumeGroupSnapshotContentSpec
{
    /// <summary>The group snapshot it belongs to (name and namespace; uid once bound).</summary>
    [JsonPropertyName("volumeGroupSnapshotRef")] public V1ObjectReference VolumeGroupSnapshotRef { get; set; } = new();

    /// <summary>Delete or Retain.</summary>
    [JsonPropertyName("deletionPolicy")] public string DeletionPolicy { get; set; } = "Delete";

    /// <summary>The CSI driver.</summary>
    [JsonPropertyName("driver")] public string Driver { get; set; } = "";

    /// <summary>The class used to create it (dynamic).</summary>
    [JsonPropertyName("volumeGroupSnapshotClassName")] public string? VolumeGroupSnapshotClassName { get; set; }

    /// <summary>Exactly one source.</summary>
    [JsonPropertyName("source")] public VolumeGroupSnapshotContentSource Source { get; set; } = new();
}

/// <summary>The volumes to snapshot (dynamic) or an existing group snapshot (pre-provisioned).</summary>
public sealed class VolumeGroupSnapshotContentSource
{
    /// <summary>CSI volume ids to snapshot together.</summary>
    [JsonPropertyName("volumeHandles")] public IList<string>? VolumeHandles { get; set; }

    /// <summary>An existing group snapshot and its member snapshots.</summary>
    [JsonPropertyName("groupSnapshotHandles")] public GroupSnapshotHandles? GroupSnapshotHandles { get; set; }
}

/// <summary>The CSI ids of a pre-provisioned group snapshot.</summary>
public sealed class GroupSnapshotHandles
{
    /// <summary>The group_snapshot_id.</summary>
    [JsonPropertyName("volumeGroupSnapshotHandle")] public string VolumeGroupSnapshotHandle { get; set; } = "";

    /// <summary>The members' snapshot_ids.</summary>
    [JsonPropertyName("volumeSnapshotHandles")] public IList<string> VolumeSnapshotHandles { get; set; } = [];
}

/// <summary>Status of a <see cref="VolumeGroupSnapshotContent"/>.</summary>
public sealed class VolumeGroupSnapshotContentStatus
{
    /// <summary>The driver's group_snapshot_id.</summary>
    [JsonPropertyName("volumeGroupSnapshotHandle")] public string? VolumeGroupSnapshotHandle { get; set; }

    /// <summary>When the group was cut.</summary>
    [JsonPropertyName("creationTime")] public DateTime? CreationTime { get; set; }

    /// <summary>True once every member is ready.</summary>
    [JsonPropertyName("readyToUse")] public bool? ReadyToUse { get; set; }

    /// <summary>The last error, cleared on success.</summary>
    [JsonPropertyName("error")] public VolumeSnapshotError? Error { get; set; }

    /// <summary>One entry per member: which volume each snapshot is of (upstream #969).</summary>
    [JsonPropertyName("volumeSnapshotInfoList")] public IList<VolumeSnapshotInfo>? VolumeSnapshotInfoList { get; set; }
}

/// <summary>One member of a group snapshot as the driver reported it.</summary>
public sealed class VolumeSnapshotInfo
{
    /// <summary>The CSI volume_id it was taken of.</summary>
    [JsonPropertyName("volumeHandle")] public string? VolumeHandle { get; set; }

    /// <summary>The CSI snapshot_id.</summary>
    [JsonPropertyName("snapshotHandle")] public string? SnapshotHandle { get; set; }

    /// <summary>Unix nanoseconds.</summary>
    [JsonPropertyName("creationTime")] public long? CreationTime { get; set; }

    /// <summary>Whether it can be restored from.</summary>
    [JsonPropertyName("readyToUse")] public bool? ReadyToUse { get; set; }

    /// <summary>Bytes.</summary>
    [JsonPropertyName("restoreSize")] public long? RestoreSize { get; set; }
}
