using System.Text.Json.Serialization;
using k8s;
using k8s.Models;

namespace Dolly.Controllers.Golden;

// dolly.io/v1alpha1 GoldenSnapshot (cluster-scoped): one snapshot published to many namespaces, revision by
// revision. Field names are the wire names of the CRD (deploy/kubernetes/crds-dolly.yaml).

/// <summary>A snapshot published to every opted-in namespace as a VolumeSnapshot (and optionally a claim).</summary>
public sealed class GoldenSnapshot : IKubernetesObject<V1ObjectMeta>
{
    /// <summary>Group and version.</summary>
    [JsonPropertyName("apiVersion")] public string ApiVersion { get; set; } = GoldenNames.ApiVersion;

    /// <summary>Always <see cref="GoldenNames.Kind"/>.</summary>
    [JsonPropertyName("kind")] public string Kind { get; set; } = GoldenNames.Kind;

    /// <summary>Standard object metadata; the publish-now annotation lives here.</summary>
    [JsonPropertyName("metadata")] public V1ObjectMeta Metadata { get; set; } = new();

    /// <summary>What to publish, where, and under which names.</summary>
    [JsonPropertyName("spec")] public GoldenSnapshotSpec Spec { get; set; } = new();

    /// <summary>What is published where, and what holds each kept revision.</summary>
    [JsonPropertyName("status")] public GoldenSnapshotStatus? Status { get; set; }
}

/// <summary>Spec of a GoldenSnapshot.</summary>
public sealed class GoldenSnapshotSpec
{
    /// <summary>Where revisions come from: exactly one of its fields.</summary>
    [JsonPropertyName("source")] public GoldenSource Source { get; set; } = new();

    /// <summary>Persistent-volume-claim source only: when to cut a revision (cron, read in <see cref="TimeZone"/>).</summary>
    [JsonPropertyName("schedule")] public string? Schedule { get; set; }

    /// <summary>IANA time zone of <see cref="Schedule"/>; UTC when empty.</summary>
    [JsonPropertyName("timeZone")] public string? TimeZone { get; set; }

    /// <summary>Namespaces opt in by label.</summary>
    [JsonPropertyName("namespaceSelector")] public V1LabelSelector? NamespaceSelector { get; set; }

    /// <summary>Namespaces opted in by name.</summary>
    [JsonPropertyName("namespaces")] public IList<string>? Namespaces { get; set; }

    /// <summary>The VolumeSnapshot every target namespace gets, bound to the current revision.</summary>
    [JsonPropertyName("snapshotName")] public string SnapshotName { get; set; } = "";

    /// <summary>A claim per target namespace restored from the current revision.</summary>
    [JsonPropertyName("claim")] public GoldenClaimTemplate? Claim { get; set; }

    /// <summary>How many revisions to keep (older ones are retired once nothing holds them); 3 when absent.</summary>
    [JsonPropertyName("revisionHistoryLimit")] public int? RevisionHistoryLimit { get; set; }
}

/// <summary>Exactly one source of revisions.</summary>
public sealed class GoldenSource
{
    /// <summary>A ready VolumeSnapshot; a new revision whenever this reference changes.</summary>
    [JsonPropertyName("volumeSnapshot")] public GoldenObjectRef? VolumeSnapshot { get; set; }

    /// <summary>A claim Dolly snapshots: on create, on schedule and on the publish-now annotation.</summary>
    [JsonPropertyName("persistentVolumeClaim")] public GoldenObjectRef? PersistentVolumeClaim { get; set; }

    /// <summary>A snapshot made outside Kubernetes (<c>dolly snapshot create</c>).</summary>
    [JsonPropertyName("snapshotHandle")] public string? SnapshotHandle { get; set; }

    /// <summary>The driver of <see cref="SnapshotHandle"/>; <c>csi.dolly.io</c> when empty.</summary>
    [JsonPropertyName("driver")] public string? Driver { get; set; }
}

/// <summary>A namespaced object named by a GoldenSnapshot.</summary>
public sealed class GoldenObjectRef
{
    /// <summary>Its namespace.</summary>
    [JsonPropertyName("namespace")] public string Namespace { get; set; } = "";

    /// <summary>Its name.</summary>
    [JsonPropertyName("name")] public string Name { get; set; } = "";
}

/// <summary>The claim made in every target namespace.</summary>
public sealed class GoldenClaimTemplate
{
    /// <summary>Name of the claim.</summary>
    [JsonPropertyName("name")] public string Name { get; set; } = "";

    /// <summary>Its StorageClass; the default class when empty.</summary>
    [JsonPropertyName("storageClassName")] public string? StorageClassName { get; set; }

    /// <summary>Requested size, at least the revision's restoreSize; the restoreSize when empty.</summary>
    [JsonPropertyName("size")] public string? Size { get; set; }

    /// <summary>Access modes; ReadWriteOnce when empty.</summary>
    [JsonPropertyName("accessModes")] public IList<string>? AccessModes { get; set; }

    /// <summary>Filesystem or Block; Filesystem when empty.</summary>
    [JsonPropertyName("volumeMode")] public string? VolumeMode { get; set; }

    /// <summary>Labels of the claim (besides the controller's own).</summary>
    [JsonPropertyName("labels")] public IDictionary<string, string>? Labels { get; set; }

    /// <summary><c>Never</c> (default) or <c>OnNextAttach</c>.</summary>
    [JsonPropertyName("refreshPolicy")] public string? RefreshPolicy { get; set; }
}

/// <summary>Status of a GoldenSnapshot.</summary>
public sealed class GoldenSnapshotStatus
{
    /// <summary>The generation of the spec this status describes.</summary>
    [JsonPropertyName("observedGeneration")] public long? ObservedGeneration { get; set; }

    /// <summary>The revision target namespaces are (being) moved to; absent before the first is cut.</summary>
    [JsonPropertyName("currentRevision")] public int? CurrentRevision { get; set; }

    /// <summary>A short description of the source, for the printer column.</summary>
    [JsonPropertyName("source")] public string? Source { get; set; }

    /// <summary>The source the last revision was published from (a changed source publishes a new revision).</summary>
    [JsonPropertyName("publishedSource")] public string? PublishedSource { get; set; }

    /// <summary>The value of the publish-now annotation last acted on.</summary>
    [JsonPropertyName("publishNow")] public string? PublishNow { get; set; }

    /// <summary>When the last revision was cut (the schedule counts from here).</summary>
    [JsonPropertyName("lastPublished")] public DateTime? LastPublished { get; set; }

    /// <summary>When the schedule cuts the next revision.</summary>
    [JsonPropertyName("nextPublish")] public DateTime? NextPublish { get; set; }

    /// <summary>How many namespaces opt in (for the printer column).</summary>
    [JsonPropertyName("namespaceCount")] public int? NamespaceCount { get; set; }

    /// <summary>
    /// <c>&lt;ready&gt;/&lt;opted in&gt;</c>: how many opted-in namespaces have <c>snapshotName</c> ready on the current
    /// revision (for the printer column, as a Deployment's READY).
    /// </summary>
    [JsonPropertyName("ready")] public string? Ready { get; set; }

    /// <summary>Every kept revision, newest first.</summary>
    [JsonPropertyName("revisions")] public IList<GoldenRevision>? Revisions { get; set; }

    /// <summary>Every namespace that opts in or still holds something of this golden snapshot.</summary>
    [JsonPropertyName("namespaces")] public IList<GoldenNamespaceStatus>? Namespaces { get; set; }

    /// <summary>Ready and Progressing.</summary>
    [JsonPropertyName("conditions")] public IList<V1Condition>? Conditions { get; set; }
}

/// <summary>One revision.</summary>
public sealed class GoldenRevision
{
    /// <summary>1, 2, ...</summary>
    [JsonPropertyName("revision")] public int Revision { get; set; }

    /// <summary>The driver's snapshot; empty while a claim source is being snapshotted.</summary>
    [JsonPropertyName("snapshotHandle")] public string? SnapshotHandle { get; set; }

    /// <summary>The driver of the snapshot.</summary>
    [JsonPropertyName("driver")] public string? Driver { get; set; }

    /// <summary>The smallest claim that can hold it.</summary>
    [JsonPropertyName("restoreSize")] public ResourceQuantity? RestoreSize { get; set; }

    /// <summary>When it was cut (or published, for a snapshot made elsewhere).</summary>
    [JsonPropertyName("createdAt")] public DateTime? CreatedAt { get; set; }

    /// <summary>The VolumeSnapshot (namespace/name) it was taken from or is, when there is one.</summary>
    [JsonPropertyName("origin")] public string? Origin { get; set; }

    /// <summary>The namespaces whose VolumeSnapshots are on it.</summary>
    [JsonPropertyName("namespaces")] public IList<string>? Namespaces { get; set; }

    /// <summary>Why it is kept although older than the history limit; empty when the limit alone keeps it.</summary>
    [JsonPropertyName("heldBy")] public IList<string>? HeldBy { get; set; }
}

/// <summary>What one namespace has.</summary>
public sealed class GoldenNamespaceStatus
{
    /// <summary>The namespace.</summary>
    [JsonPropertyName("name")] public string Name { get; set; } = "";

    /// <summary>The revision its <c>snapshotName</c> VolumeSnapshot is bound to.</summary>
    [JsonPropertyName("revision")] public int? Revision { get; set; }

    /// <summary>Whether that VolumeSnapshot is ready to use.</summary>
    [JsonPropertyName("snapshotReady")] public bool SnapshotReady { get; set; }

    /// <summary>Phase of the spec.claim claim.</summary>
    [JsonPropertyName("claimPhase")] public string? ClaimPhase { get; set; }

    /// <summary>The revision the spec.claim claim's data holds.</summary>
    [JsonPropertyName("claimRevision")] public int? ClaimRevision { get; set; }

    /// <summary>
    /// Consumers that opted into OnNextAttach and are behind the current revision: "claim (revision held): what it
    /// waits for" (its volume to be let go, or a refusal naming the problem).
    /// </summary>
    [JsonPropertyName("refreshPending")] public IList<string>? RefreshPending { get; set; }

    /// <summary>Why nothing (more) is published here: a user's object in the way, the namespace being deleted, no longer opted in.</summary>
    [JsonPropertyName("message")] public string? Message { get; set; }
}

/// <summary>Names of the kind, its labels, annotations, reasons and defaults.</summary>
public static class GoldenNames
{
    /// <summary>API group.</summary>
    public const string Group = "dolly.io";

    /// <summary>API version.</summary>
    public const string Version = "v1alpha1";

    /// <summary>apiVersion.</summary>
    public const string ApiVersion = Group + "/" + Version;

    /// <summary>The kind.</summary>
    public const string Kind = "GoldenSnapshot";

    /// <summary>Its plural.</summary>
    public const string Plural = "goldensnapshots";

    /// <summary>The default driver of a snapshotHandle source.</summary>
    public const string DefaultDriver = "csi.dolly.io";

    /// <summary>The default history limit.</summary>
    public const int DefaultHistoryLimit = 3;

    /// <summary>On a GoldenSnapshot with a claim source: a changed value cuts a revision now.</summary>
    public const string PublishNowAnnotation = "dolly.io/publish-now";

    /// <summary>On every object the controller makes: the GoldenSnapshot's name.</summary>
    public const string GoldenLabel = "dolly.io/golden";

    /// <summary>On every object the controller makes: the revision it belongs to.</summary>
    public const string RevisionLabel = "dolly.io/golden-revision";

    /// <summary>On every object the controller makes: the GoldenSnapshot's uid (a label a user copied is not enough).</summary>
    public const string UidAnnotation = "dolly.io/golden-uid";

    /// <summary>On a consumer claim: the revision its data holds.</summary>
    public const string ClaimRevisionAnnotation = "dolly.io/golden-revision";

    /// <summary>
    /// On a consumer claim, set by the controller before it asks the driver to refresh the claim's volume: the
    /// revision asked for, until the request is applied and forgotten, or withdrawn.
    /// </summary>
    public const string RefreshRequestAnnotation = "dolly.io/golden-refresh-request";

    /// <summary>On a consumer claim: <c>OnNextAttach</c> to take each new revision the next time it is attached.</summary>
    public const string RefreshPolicyAnnotation = "dolly.io/refresh-policy";

    /// <summary>Refresh policy: the claim keeps its data.</summary>
    public const string Never = "Never";

    /// <summary>Refresh policy: the claim takes the new revision at its next attach.</summary>
    public const string OnNextAttach = "OnNextAttach";

    /// <summary>
    /// Finalizer on the VolumeSnapshot a revision was taken from (the source snapshot, or the one cut from a claim)
    /// while a kept revision uses its driver snapshot: deleting it would delete the data every namespace restores from.
    /// </summary>
    public const string SourceFinalizer = "dolly.io/golden-source-protection";

    /// <summary>
    /// Finalizer on a GoldenSnapshot, so that deleting it first lets go of <see cref="SourceFinalizer"/> (what it
    /// published stays: the VolumeSnapshots are the namespaces' now).
    /// </summary>
    public const string GoldenFinalizer = "dolly.io/golden-protection";

    /// <summary>Condition type: the current revision is published everywhere it should be.</summary>
    public const string Ready = "Ready";

    /// <summary>Condition type: a revision is being cut or rolled out.</summary>
    public const string Progressing = "Progressing";
}
