using System.Text.Json.Serialization;
using k8s;
using k8s.Models;

namespace Dolly.Controllers.Revert;

// dolly.io/v1alpha1 VolumeRevert (namespaced). Field names are the wire names.

/// <summary>Puts a claim's volume back to the content of a snapshot, in place, once nothing holds the volume.</summary>
public sealed class VolumeRevert : IKubernetesObject<V1ObjectMeta>
{
    /// <summary>Group and version.</summary>
    [JsonPropertyName("apiVersion")] public string ApiVersion { get; set; } = RevertNames.ApiVersion;

    /// <summary><see cref="RevertNames.Kind"/>.</summary>
    [JsonPropertyName("kind")] public string Kind { get; set; } = RevertNames.Kind;

    /// <summary>Standard object metadata.</summary>
    [JsonPropertyName("metadata")] public V1ObjectMeta Metadata { get; set; } = new();

    /// <summary>What to revert to what.</summary>
    [JsonPropertyName("spec")] public VolumeRevertSpec Spec { get; set; } = new();

    /// <summary>Where the revert stands.</summary>
    [JsonPropertyName("status")] public VolumeRevertStatus? Status { get; set; }
}

/// <summary>Spec of a revert; it is read once: a revert never runs twice.</summary>
public sealed class VolumeRevertSpec
{
    /// <summary>The claim (in the revert's namespace) whose volume is reverted.</summary>
    [JsonPropertyName("claimName")] public string ClaimName { get; set; } = "";

    /// <summary>A ready VolumeSnapshot in the revert's namespace, of Dolly's driver.</summary>
    [JsonPropertyName("volumeSnapshotName")] public string VolumeSnapshotName { get; set; } = "";

    /// <summary>Allow a snapshot that is not of the claim's volume or its lineage (its content replaces the volume's).</summary>
    [JsonPropertyName("allowForeignSnapshot")] public bool? AllowForeignSnapshot { get; set; }

    /// <summary>Snapshot the current content first (a VolumeSnapshot), so the revert can be undone; true when absent.</summary>
    [JsonPropertyName("takeSafetySnapshot")] public bool? TakeSafetySnapshot { get; set; }
}

/// <summary>Status of a revert.</summary>
public sealed class VolumeRevertStatus
{
    /// <summary><c>Pending</c>, <c>Succeeded</c> or <c>Failed</c>; Succeeded and Failed are final.</summary>
    [JsonPropertyName("phase")] public string? Phase { get; set; }

    /// <summary>Why it waits or failed.</summary>
    [JsonPropertyName("message")] public string? Message { get; set; }

    /// <summary>While pending: who holds the claim's volume.</summary>
    [JsonPropertyName("holders")] public IList<string>? Holders { get; set; }

    /// <summary>The safety snapshot (a VolumeSnapshot in the revert's namespace) holding the content before the revert.</summary>
    [JsonPropertyName("safetySnapshotName")] public string? SafetySnapshotName { get; set; }

    /// <summary>The volume (PersistentVolume) reverted.</summary>
    [JsonPropertyName("volumeName")] public string? VolumeName { get; set; }

    /// <summary>The driver's snapshot handle the volume was reverted to.</summary>
    [JsonPropertyName("snapshotHandle")] public string? SnapshotHandle { get; set; }

    /// <summary>When the volume was reverted.</summary>
    [JsonPropertyName("completionTime")] public DateTime? CompletionTime { get; set; }

    /// <summary>Standard conditions: <c>Succeeded</c> (True, or False with the reason it waits or failed).</summary>
    [JsonPropertyName("conditions")] public IList<V1Condition>? Conditions { get; set; }
}

/// <summary>Names of the VolumeRevert kind, its CRD and its labels.</summary>
public static class RevertNames
{
    /// <summary>API group.</summary>
    public const string Group = "dolly.io";

    /// <summary>API version.</summary>
    public const string Version = "v1alpha1";

    /// <summary>apiVersion.</summary>
    public const string ApiVersion = Group + "/" + Version;

    /// <summary>The kind.</summary>
    public const string Kind = "VolumeRevert";

    /// <summary>Plural.</summary>
    public const string Plural = "volumereverts";

    /// <summary>Phase: waiting (for a snapshot, a claim, or the volume to be let go).</summary>
    public const string Pending = "Pending";

    /// <summary>Phase: the volume holds the snapshot's content.</summary>
    public const string Succeeded = "Succeeded";

    /// <summary>Phase: refused or failed; nothing was changed.</summary>
    public const string Failed = "Failed";

    /// <summary>On a revert while it has a request at the driver: withdrawn before the revert goes.</summary>
    public const string Finalizer = "dolly.io/volume-revert";

    /// <summary>Label on a safety snapshot: the revert that took it.</summary>
    public const string SafetySnapshotLabel = "dolly.io/volume-revert";

    /// <summary>The name of the safety snapshot of revert <paramref name="revert"/>.</summary>
    public static string SafetySnapshotName(string revert) => revert.Length <= 240 ? revert + "-before" : revert[..240] + "-before";
}
