using System.Text.Json.Serialization;
using k8s;
using k8s.Models;

namespace Dolly.Controllers.Model;

// The snapshot.storage.k8s.io/v1 and gateway.networking.k8s.io/v1beta1 kinds the controllers read and
// write. Field names are the upstream wire names; every property is spelled out so nothing depends on
// the serializer's naming policy.

/// <summary>A namespaced request for a snapshot of a claim, or a binding to an existing content.</summary>
public sealed class VolumeSnapshot : IKubernetesObject<V1ObjectMeta>
{
    /// <summary>Group and version.</summary>
    [JsonPropertyName("apiVersion")] public string ApiVersion { get; set; } = "snapshot.storage.k8s.io/v1";

    /// <summary>Kind.</summary>
    [JsonPropertyName("kind")] public string Kind { get; set; } = "VolumeSnapshot";

    /// <summary>Standard object metadata.</summary>
    [JsonPropertyName("metadata")] public V1ObjectMeta Metadata { get; set; } = new();

    /// <summary>What to snapshot, or which content to bind.</summary>
    [JsonPropertyName("spec")] public VolumeSnapshotSpec Spec { get; set; } = new();

    /// <summary>Observed state; flows from the bound content.</summary>
    [JsonPropertyName("status")] public VolumeSnapshotStatus? Status { get; set; }
}

/// <summary>Spec of a <see cref="VolumeSnapshot"/>.</summary>
public sealed class VolumeSnapshotSpec
{
    /// <summary>Exactly one source.</summary>
    [JsonPropertyName("source")] public VolumeSnapshotSource Source { get; set; } = new();

    /// <summary>The class; when empty the default class of the source's driver is filled in.</summary>
    [JsonPropertyName("volumeSnapshotClassName")] public string? VolumeSnapshotClassName { get; set; }
}

/// <summary>The source of a <see cref="VolumeSnapshot"/>: a claim (dynamic) or a content (pre-provisioned).</summary>
public sealed class VolumeSnapshotSource
{
    /// <summary>A claim in the snapshot's namespace.</summary>
    [JsonPropertyName("persistentVolumeClaimName")] public string? PersistentVolumeClaimName { get; set; }

    /// <summary>A pre-provisioned content.</summary>
    [JsonPropertyName("volumeSnapshotContentName")] public string? VolumeSnapshotContentName { get; set; }
}

/// <summary>Status of a <see cref="VolumeSnapshot"/>.</summary>
public sealed class VolumeSnapshotStatus
{
    /// <summary>The content this snapshot is bound to.</summary>
    [JsonPropertyName("boundVolumeSnapshotContentName")] public string? BoundVolumeSnapshotContentName { get; set; }

    /// <summary>When the storage system cut the snapshot.</summary>
    [JsonPropertyName("creationTime")] public DateTime? CreationTime { get; set; }

    /// <summary>Whether a volume can be restored from it.</summary>
    [JsonPropertyName("readyToUse")] public bool? ReadyToUse { get; set; }

    /// <summary>The smallest size a restored volume may have.</summary>
    [JsonPropertyName("restoreSize")] public ResourceQuantity? RestoreSize { get; set; }

    /// <summary>The last error, cleared when ready.</summary>
    [JsonPropertyName("error")] public VolumeSnapshotError? Error { get; set; }

    /// <summary>The group snapshot this one belongs to, if any.</summary>
    [JsonPropertyName("volumeGroupSnapshotName")] public string? VolumeGroupSnapshotName { get; set; }
}

/// <summary>An error recorded in a snapshot's or content's status.</summary>
public sealed class VolumeSnapshotError
{
    /// <summary>When it happened.</summary>
    [JsonPropertyName("time")] public DateTime? Time { get; set; }

    /// <summary>What went wrong, for a human.</summary>
    [JsonPropertyName("message")] public string? Message { get; set; }
}

/// <summary>The cluster-scoped record of one snapshot on the storage system.</summary>
public sealed class VolumeSnapshotContent : IKubernetesObject<V1ObjectMeta>
{
    /// <summary>Group and version.</summary>
    [JsonPropertyName("apiVersion")] public string ApiVersion { get; set; } = "snapshot.storage.k8s.io/v1";

    /// <summary>Kind.</summary>
    [JsonPropertyName("kind")] public string Kind { get; set; } = "VolumeSnapshotContent";

    /// <summary>Standard object metadata.</summary>
    [JsonPropertyName("metadata")] public V1ObjectMeta Metadata { get; set; } = new();

    /// <summary>Source, owner and policy.</summary>
    [JsonPropertyName("spec")] public VolumeSnapshotContentSpec Spec { get; set; } = new();

    /// <summary>What the driver reported.</summary>
    [JsonPropertyName("status")] public VolumeSnapshotContentStatus? Status { get; set; }
}

/// <summary>Spec of a <see cref="VolumeSnapshotContent"/>.</summary>
public sealed class VolumeSnapshotContentSpec
{
    /// <summary>The snapshot this content belongs to (the other half of the two-way binding).</summary>
    [JsonPropertyName("volumeSnapshotRef")] public V1ObjectReference VolumeSnapshotRef { get; set; } = new();

    /// <summary>Delete or Retain: what happens to the driver's snapshot when the VolumeSnapshot goes.</summary>
    [JsonPropertyName("deletionPolicy")] public string DeletionPolicy { get; set; } = "Delete";

    /// <summary>The CSI driver that holds the snapshot.</summary>
    [JsonPropertyName("driver")] public string Driver { get; set; } = "";

    /// <summary>The class used to create it (dynamic snapshots).</summary>
    [JsonPropertyName("volumeSnapshotClassName")] public string? VolumeSnapshotClassName { get; set; }

    /// <summary>Exactly one of volume handle (to be snapshotted) or snapshot handle (already exists).</summary>
    [JsonPropertyName("source")] public VolumeSnapshotContentSource Source { get; set; } = new();

    /// <summary>Filesystem or Block: the mode of the volume snapshotted.</summary>
    [JsonPropertyName("sourceVolumeMode")] public string? SourceVolumeMode { get; set; }
}

/// <summary>Source of a <see cref="VolumeSnapshotContent"/>.</summary>
public sealed class VolumeSnapshotContentSource
{
    /// <summary>The CSI volume to snapshot (dynamic).</summary>
    [JsonPropertyName("volumeHandle")] public string? VolumeHandle { get; set; }

    /// <summary>The CSI snapshot that already exists (pre-provisioned).</summary>
    [JsonPropertyName("snapshotHandle")] public string? SnapshotHandle { get; set; }
}

/// <summary>Status of a <see cref="VolumeSnapshotContent"/>.</summary>
public sealed class VolumeSnapshotContentStatus
{
    /// <summary>The driver's snapshot id.</summary>
    [JsonPropertyName("snapshotHandle")] public string? SnapshotHandle { get; set; }

    /// <summary>Unix time of the cut, in nanoseconds.</summary>
    [JsonPropertyName("creationTime")] public long? CreationTime { get; set; }

    /// <summary>Bytes a restored volume needs at least.</summary>
    [JsonPropertyName("restoreSize")] public long? RestoreSize { get; set; }

    /// <summary>Whether a volume can be restored from it.</summary>
    [JsonPropertyName("readyToUse")] public bool? ReadyToUse { get; set; }

    /// <summary>The last error, cleared when ready.</summary>
    [JsonPropertyName("error")] public VolumeSnapshotError? Error { get; set; }

    /// <summary>The driver's group snapshot id, if any.</summary>
    [JsonPropertyName("volumeGroupSnapshotHandle")] public string? VolumeGroupSnapshotHandle { get; set; }
}

/// <summary>A class of snapshots: driver, parameters and deletion policy.</summary>
public sealed class VolumeSnapshotClass : IKubernetesObject<V1ObjectMeta>
{
    /// <summary>Group and version.</summary>
    [JsonPropertyName("apiVersion")] public string ApiVersion { get; set; } = "snapshot.storage.k8s.io/v1";

    /// <summary>Kind.</summary>
    [JsonPropertyName("kind")] public string Kind { get; set; } = "VolumeSnapshotClass";

    /// <summary>Standard object metadata; the default-class annotation lives here.</summary>
    [JsonPropertyName("metadata")] public V1ObjectMeta Metadata { get; set; } = new();

    /// <summary>The CSI driver.</summary>
    [JsonPropertyName("driver")] public string Driver { get; set; } = "";

    /// <summary>Passed to CreateSnapshot.</summary>
    [JsonPropertyName("parameters")] public IDictionary<string, string>? Parameters { get; set; }

    /// <summary>Delete or Retain, copied into dynamic contents.</summary>
    [JsonPropertyName("deletionPolicy")] public string DeletionPolicy { get; set; } = "Delete";
}

/// <summary>gateway.networking.k8s.io/v1beta1 ReferenceGrant: lets objects in other namespaces refer to objects in this one.</summary>
public sealed class ReferenceGrant : IKubernetesObject<V1ObjectMeta>
{
    /// <summary>Group and version.</summary>
    [JsonPropertyName("apiVersion")] public string ApiVersion { get; set; } = "gateway.networking.k8s.io/v1beta1";

    /// <summary>Kind.</summary>
    [JsonPropertyName("kind")] public string Kind { get; set; } = "ReferenceGrant";

    /// <summary>Standard object metadata.</summary>
    [JsonPropertyName("metadata")] public V1ObjectMeta Metadata { get; set; } = new();

    /// <summary>Who may refer to what.</summary>
    [JsonPropertyName("spec")] public ReferenceGrantSpec Spec { get; set; } = new();
}

/// <summary>Spec of a <see cref="ReferenceGrant"/>.</summary>
public sealed class ReferenceGrantSpec
{
    /// <summary>The referring objects (group, kind, namespace).</summary>
    [JsonPropertyName("from")] public IList<ReferenceGrantFrom> From { get; set; } = [];

    /// <summary>The referenced objects in this namespace (group, kind, optional name).</summary>
    [JsonPropertyName("to")] public IList<ReferenceGrantTo> To { get; set; } = [];
}

/// <summary>One allowed referrer.</summary>
public sealed class ReferenceGrantFrom
{
    /// <summary>API group; empty for the core group.</summary>
    [JsonPropertyName("group")] public string Group { get; set; } = "";

    /// <summary>Kind of the referrer.</summary>
    [JsonPropertyName("kind")] public string Kind { get; set; } = "";

    /// <summary>Namespace of the referrer.</summary>
    [JsonPropertyName("namespace")] public string Namespace { get; set; } = "";
}

/// <summary>One allowed target.</summary>
public sealed class ReferenceGrantTo
{
    /// <summary>API group; empty for the core group.</summary>
    [JsonPropertyName("group")] public string Group { get; set; } = "";

    /// <summary>Kind of the target.</summary>
    [JsonPropertyName("kind")] public string Kind { get; set; } = "";

    /// <summary>One object, or every object of the kind when empty.</summary>
    [JsonPropertyName("name")] public string? Name { get; set; }
}

/// <summary>A list of custom objects as the API server returns it.</summary>
internal sealed class CustomObjectList<T>
{
    [JsonPropertyName("metadata")] public V1ListMeta Metadata { get; set; } = new();

    [JsonPropertyName("items")] public IList<T> Items { get; set; } = [];
}
