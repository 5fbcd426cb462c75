using System.Net;
using Dolly.V1;
using Google.Protobuf;
using k8s;
using k8s.Autorest;

namespace Dolly.Controllers.Repository;

/// <summary>Why a SnapshotRepository cannot be used now: a condition reason and a message naming the object at fault.</summary>
internal sealed record RepositoryProblem(string Reason, string Message);

/// <summary>Turns a SnapshotRepository and its Secrets into the location the driver opens.</summary>
internal static class RepositoryAccess
{
    /// <summary>The location, or the problem with the spec or a Secret (nothing is sent to the driver then).</summary>
    public static async Task<(RepositoryLocation? Location, RepositoryProblem? Problem)> ResolveAsync(IKubernetes client, SnapshotRepository repository, CancellationToken ct)
    {
        var spec = repository.Spec;
        string name = repository.Metadata.Name;
        if ((spec.S3 is null) == (spec.Directory is null))
        {
            return (null, new("InvalidSpec", $"SnapshotRepository {name} must set exactly one of spec.s3 and spec.directory"));
        }

        if (spec.Encryption?.KeySecretRef is not { } keyRef || keyRef.Name.Length == 0 || keyRef.Namespace.Length == 0)
        {
            return (null, new("InvalidSpec", $"SnapshotRepository {name} needs spec.encryption.keySecretRef (namespace and name of a Secret holding the repository key)"));
        }

        string keyName = string.IsNullOrEmpty(keyRef.Key) ? RepositoryNames.DefaultKeyName : keyRef.Key;
        var (keyData, keyProblem) = await ReadSecretAsync(client, name, keyRef, "encryption key", ct).ConfigureAwait(false);
        if (keyProblem is not null)
        {
            return (null, keyProblem);
        }

        if (!keyData!.TryGetValue(keyName, out var key) || key.Length < 8)
        {
            return (null, new("InvalidKey", $"Secret {keyRef.Namespace}/{keyRef.Name} (the key of SnapshotRepository {name}) has {(key is null ? $"no data key '{keyName}'" : $"a {key.Length}-byte '{keyName}'; a repository key needs at least 8 bytes (32 random bytes are best)")}"));
        }

        var location = new RepositoryLocation { Key = ByteString.CopyFrom(key), Name = name };
        if (spec.Directory is { } directory)
        {
            if (!Path.IsPathFullyQualified(directory.Path))
            {
                return (null, new("InvalidSpec", $"SnapshotRepository {name}: spec.directory.path '{directory.Path}' is not an absolute path"));
            }

            location.Directory = new DirectoryStore { Path = directory.Path };
            return (location, null);
        }

        var s3 = spec.S3!;
        if (s3.CredentialsSecretRef is not { } credRef || credRef.Name.Length == 0 || credRef.Namespace.Length == 0)
        {
            return (null, new("InvalidSpec", $"SnapshotRepository {name} needs spec.s3.credentialsSecretRef (namespace and name of a Secret with {RepositoryNames.AccessKeyIdKey} and {RepositoryNames.SecretAccessKeyKey})"));
        }

        var (creds, credProblem) = await ReadSecretAsync(client, name, credRef, "S3 credentials", ct).ConfigureAwait(false);
        if (credProblem is not null)
        {
            return (null, credProblem);
        }

        byte[]? accessKey = Either(creds!, RepositoryNames.AccessKeyIdKey, RepositoryNames.AwsAccessKeyIdKey);
        byte[]? secretKey = Either(creds!, RepositoryNames.SecretAccessKeyKey, RepositoryNames.AwsSecretAccessKeyKey);
        if (accessKey is null || secretKey is null)
        {
            string missing = string.Join(" and ", new[] { (accessKey, RepositoryNames.AccessKeyIdKey, RepositoryNames.AwsAccessKeyIdKey), (secretKey, RepositoryNames.SecretAccessKeyKey, RepositoryNames.AwsSecretAccessKeyKey) }
                .Where(k => k.Item1 is null).Select(k => $"{k.Item2} (or {k.Item3})"));
            return (null, new("InvalidCredentials", $"Secret {credRef.Namespace}/{credRef.Name} (the S3 credentials of SnapshotRepository {name}) lacks {missing}"));
        }

        location.S3 = new S3Store
        {
            Endpoint = s3.Endpoint,
            Region = s3.Region ?? string.Empty,
            Bucket = s3.Bucket,
            Prefix = s3.Prefix ?? string.Empty,
            AccessKeyId = System.Text.Encoding.UTF8.GetString(accessKey),
            SecretAccessKey = System.Text.Encoding.UTF8.GetString(secretKey),
            PathStyle = s3.PathStyle != false,
        };
        return (location, null);
    }

    /// <summary>The first of two data keys present with a value, or null.</summary>
    private static byte[]? Either(IDictionary<string, byte[]> data, string first, string second) =>
        data.TryGetValue(first, out var a) && a.Length > 0 ? a : data.TryGetValue(second, out var b) && b.Length > 0 ? b : null;

    private static async Task<(IDictionary<string, byte[]>? Data, RepositoryProblem? Problem)> ReadSecretAsync(IKubernetes client, string repository, SecretKeyRef reference, string what, CancellationToken ct)
    {
        try
        {
            var secret = await client.CoreV1.ReadNamespacedSecretAsync(reference.Name, reference.Namespace, cancellationToken: ct).ConfigureAwait(false);
            return (secret.Data ?? new Dictionary<string, byte[]>(), null);
        }
        catch (HttpOperationException ex) when (ex.Response.StatusCode == HttpStatusCode.NotFound)
        {
            return (null, new("SecretNotFound", $"Secret {reference.Namespace}/{reference.Name} ({what} of SnapshotRepository {repository}) does not exist"));
        }
        catch (HttpOperationException ex) when (ex.Response.StatusCode == HttpStatusCode.Forbidden)
        {
            return (null, new("SecretForbidden", $"reading Secret {reference.Namespace}/{reference.Name} ({what} of SnapshotRepository {repository}) is forbidden to the controller"));
        }
    }
}
