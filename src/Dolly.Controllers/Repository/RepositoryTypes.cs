using System.Text.Json.Serialization;
using k8s;
using k8s.Models;

namespace Dolly.Controllers.Repository;

// dolly.io/v1alpha1 SnapshotRepository (cluster-scoped). Field names are the wire names.

/// <summary>Where snapshots are copied to (and restored from): an S3 bucket and prefix, or a directory on the storage machine.</summary>
public sealed class SnapshotRepository : IKubernetesObject<V1ObjectMeta>
{
    /// <summary>Group and version.</summary>
    [JsonPropertyName("apiVersion")] public string ApiVersion { get; set; } = RepositoryNames.ApiVersion;

    /// <summary><see cref="RepositoryNames.Kind"/>.</summary>
    [JsonPropertyName("kind")] public string Kind { get; set; } = RepositoryNames.Kind;

    /// <summary>Standard object metadata.</summary>
    [JsonPropertyName("metadata")] public V1ObjectMeta Metadata { get; set; } = new();

    /// <summary>Where the repository is and how it is opened.</summary>
    [JsonPropertyName("spec")] public SnapshotRepositorySpec Spec { get; set; } = new();

    /// <summary>What the controller found there.</summary>
    [JsonPropertyName("status")] public SnapshotRepositoryStatus? Status { get; set; }
}

/// <summary>Spec: exactly one of <see cref="S3"/> and <see cref="Directory"/>, and the encryption key.</summary>
public sealed class SnapshotRepositorySpec
{
    /// <summary>An S3 bucket and prefix.</summary>
    [JsonPropertyName("s3")] public S3Repository? S3 { get; set; }

    /// <summary>A directory on the machine holding the pool.</summary>
    [JsonPropertyName("directory")] public DirectoryRepository? Directory { get; set; }

    /// <summary>The key that opens the repository.</summary>
    [JsonPropertyName("encryption")] public RepositoryEncryption? Encryption { get; set; }
}

/// <summary>An S3 location.</summary>
public sealed class S3Repository
{
    /// <summary>http(s)://host[:port] of the S3 server.</summary>
    [JsonPropertyName("endpoint")] public string Endpoint { get; set; } = "";

    /// <summary>Signing region; us-east-1 when absent.</summary>
    [JsonPropertyName("region")] public string? Region { get; set; }

    /// <summary>The bucket (it must exist).</summary>
    [JsonPropertyName("bucket")] public string Bucket { get; set; } = "";

    /// <summary>Key prefix of the repository inside the bucket.</summary>
    [JsonPropertyName("prefix")] public string? Prefix { get; set; }

    /// <summary>Path-style addressing (true when absent: what radosgw and MinIO expect).</summary>
    [JsonPropertyName("pathStyle")] public bool? PathStyle { get; set; }

    /// <summary>A Secret with <c>accessKeyId</c> and <c>secretAccessKey</c> (or <c>AWS_ACCESS_KEY_ID</c> and <c>AWS_SECRET_ACCESS_KEY</c>).</summary>
    [JsonPropertyName("credentialsSecretRef")] public SecretKeyRef? CredentialsSecretRef { get; set; }
}

/// <summary>A directory location.</summary>
public sealed class DirectoryRepository
{
    /// <summary>Absolute path on the machine holding the pool.</summary>
    [JsonPropertyName("path")] public string Path { get; set; } = "";
}

/// <summary>Encryption settings.</summary>
public sealed class RepositoryEncryption
{
    /// <summary>The Secret key holding the repository key (at least 8 bytes; 32 random bytes are best).</summary>
    [JsonPropertyName("keySecretRef")] public SecretKeyRef? KeySecretRef { get; set; }
}

/// <summary>A Secret (and, where one is read, a key of it).</summary>
public sealed class SecretKeyRef
{
    /// <summary>Namespace of the Secret.</summary>
    [JsonPropertyName("namespace")] public string Namespace { get; set; } = "";

    /// <summary>Name of the Secret.</summary>
    [JsonPropertyName("name")] public string Name { get; set; } = "";

    /// <summary>The data key read (<c>key</c> when absent); unused for credentials.</summary>
    [JsonPropertyName("key")] public string? Key { get; set; }
}

/// <summary>Status of a repository.</summary>
public sealed class SnapshotRepositoryStatus
{
    /// <summary>The repository's id (what repository snapshot handles name).</summary>
    [JsonPropertyName("repositoryId")] public string? RepositoryId { get; set; }

    /// <summary>Where it is, as the driver names it.</summary>
    [JsonPropertyName("location")] public string? Location { get; set; }

    /// <summary>Whether the last probe opened it.</summary>
    [JsonPropertyName("reachable")] public bool? Reachable { get; set; }

    /// <summary>Bytes of stored chunks (compressed and encrypted), at <see cref="UsageTime"/>.</summary>
    [JsonPropertyName("bytesStored")] public long? BytesStored { get; set; }

    /// <summary>Chunks stored, at <see cref="UsageTime"/>.</summary>
    [JsonPropertyName("chunkCount")] public long? ChunkCount { get; set; }

    /// <summary>Snapshots (manifests) stored, at <see cref="UsageTime"/>.</summary>
    [JsonPropertyName("snapshotCount")] public long? SnapshotCount { get; set; }

    /// <summary>When the usage was counted (a listing, done at most hourly).</summary>
    [JsonPropertyName("usageTime")] public DateTime? UsageTime { get; set; }

    /// <summary>When the repository was last probed.</summary>
    [JsonPropertyName("lastProbeTime")] public DateTime? LastProbeTime { get; set; }

    /// <summary>The Ready condition.</summary>
    [JsonPropertyName("conditions")] public IList<V1Condition>? Conditions { get; set; }
}

/// <summary>Names of the SnapshotRepository kind, the class parameter and the annotations on contents.</summary>
public static class RepositoryNames
{
    /// <summary>API group.</summary>
    public const string Group = "dolly.io";

    /// <summary>API version.</summary>
    public const string Version = "v1alpha1";

    /// <summary>apiVersion.</summary>
    public const string ApiVersion = Group + "/" + Version;

    /// <summary>Kind.</summary>
    public const string Kind = "SnapshotRepository";

    /// <summary>Plural resource name.</summary>
    public const string Plural = "snapshotrepositories";

    /// <summary>The VolumeSnapshotClass parameter naming the SnapshotRepository every snapshot of the class is uploaded to.</summary>
    public const string ClassParameter = "dolly.io/repository";

    /// <summary>The condition type on a SnapshotRepository.</summary>
    public const string ReadyCondition = "Ready";

    /// <summary>The data key of the encryption Secret when keySecretRef.key is absent.</summary>
    public const string DefaultKeyName = "key";

    /// <summary>The data key of the access key id in the credentials Secret.</summary>
    public const string AccessKeyIdKey = "accessKeyId";

    /// <summary>The data key of the secret access key in the credentials Secret.</summary>
    public const string SecretAccessKeyKey = "secretAccessKey";

    /// <summary>The access key id under the name S3 tools use (read when <see cref="AccessKeyIdKey"/> is absent).</summary>
    public const string AwsAccessKeyIdKey = "AWS_ACCESS_KEY_ID";

    /// <summary>The secret access key under the name S3 tools use (read when <see cref="SecretAccessKeyKey"/> is absent).</summary>
    public const string AwsSecretAccessKeyKey = "AWS_SECRET_ACCESS_KEY";

    /// <summary>On an uploaded content: the handle that restores it in any cluster with the repository.</summary>
    public const string HandleAnnotation = "dolly.io/repository-handle";

    /// <summary>Annotation names of an operation (<c>upload</c> or <c>restore</c>) on a content.</summary>
    internal static TransferAnnotations Upload { get; } = new("upload");

    /// <inheritdoc cref="Upload"/>
    internal static TransferAnnotations Restore { get; } = new("restore");

    /// <summary>Phases written in <see cref="TransferAnnotations.Phase"/>.</summary>
    public const string Waiting = "Waiting";

    /// <inheritdoc cref="Waiting"/>
    public const string Running = "Running";

    /// <inheritdoc cref="Waiting"/>
    public const string Succeeded = "Succeeded";

    /// <inheritdoc cref="Waiting"/>
    public const string Failed = "Failed";
}

/// <summary>The annotations one kind of transfer writes on a content: <c>dolly.io/&lt;operation&gt;-…</c>.</summary>
internal sealed class TransferAnnotations(string operation)
{
    public string Operation => operation;

    /// <summary>The SnapshotRepository used.</summary>
    public string Repository { get; } = $"dolly.io/{operation}-repository";

    /// <summary>Waiting, Running, Succeeded or Failed.</summary>
    public string Phase { get; } = $"dolly.io/{operation}-phase";

    /// <summary>Percent, bytes, rate and time left while running; the size when done.</summary>
    public string Progress { get; } = $"dolly.io/{operation}-progress";

    /// <summary>Why it waits or failed.</summary>
    public string Message { get; } = $"dolly.io/{operation}-message";

    /// <summary>Attempts that failed (each retried later, with backoff).</summary>
    public string Failures { get; } = $"dolly.io/{operation}-failures";

    /// <summary>When the last failure happened (the driver's time), so each is counted once.</summary>
    public string FailedAt { get; } = $"dolly.io/{operation}-failed-at";
}
