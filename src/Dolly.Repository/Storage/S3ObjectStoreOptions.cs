using System.Globalization;
using System.Text.RegularExpressions;

namespace Dolly.Repository.Storage;

/// <summary>Where and how <see cref="S3ObjectStore"/> reaches a bucket.</summary>
public sealed partial record S3ObjectStoreOptions
{
    /// <summary>The default per-request timeout: a 4 MiB chunk over a slow link still fits.</summary>
    public static readonly TimeSpan DefaultRequestTimeout = TimeSpan.FromSeconds(60);

    /// <summary>The default TCP connect timeout: a server that does not accept in this time counts as unreachable.</summary>
    public static readonly TimeSpan DefaultConnectTimeout = TimeSpan.FromSeconds(5);

    /// <summary>Retries of a failed request (network errors, throttling, 5xx) before it is reported.</summary>
    public const int DefaultMaxRetries = 3;

    /// <summary>The S3 endpoint, e.g. <c>http://127.0.0.1:7480</c> (radosgw) or <c>https://s3.eu-west-1.amazonaws.com</c>.</summary>
    public required Uri Endpoint { get; init; }

    /// <summary>The signing region; radosgw accepts any (its zonegroup name, <c>default</c>, is conventional).</summary>
    public string Region { get; init; } = "us-east-1";

    /// <summary>The bucket; it must exist (the store never creates it implicitly).</summary>
    public required string Bucket { get; init; }

    /// <summary>A key prefix under which every object lives, so one bucket can hold several repositories.</summary>
    public string Prefix { get; init; } = string.Empty;

    /// <summary>The access key id.</summary>
    public required string AccessKey { get; init; }

    /// <summary>The secret access key.</summary>
    public required string SecretKey { get; init; }

    /// <summary>
    /// Path-style addressing (<c>http://host/bucket/key</c>), which radosgw, MinIO and most self-hosted servers need
    /// because they have no wildcard DNS name per bucket; AWS itself works either way.
    /// </summary>
    public bool ForcePathStyle { get; init; } = true;

    /// <summary>The time one request (with its body) may take before it counts as unanswered.</summary>
    public TimeSpan RequestTimeout { get; init; } = DefaultRequestTimeout;

    /// <summary>The time a TCP connect may take.</summary>
    public TimeSpan ConnectTimeout { get; init; } = DefaultConnectTimeout;

    /// <summary>Retries of a request that failed for a reason that may pass (network, throttling, 5xx).</summary>
    public int MaxRetries { get; init; } = DefaultMaxRetries;

    /// <summary>The prefix as the store uses it: empty, or ending with exactly one '/'.</summary>
    internal string NormalizedPrefix => Prefix.Length == 0 ? string.Empty : Prefix.TrimEnd('/') + "/";

    /// <summary>Every problem with these options, each naming the field; empty when they are usable.</summary>
    public IReadOnlyList<string> Validate()
    {
        var problems = new List<string>();
        if (!Endpoint.IsAbsoluteUri || (Endpoint.Scheme != Uri.UriSchemeHttp && Endpoint.Scheme != Uri.UriSchemeHttps))
        {
            problems.Add($"endpoint '{Endpoint}' is not an absolute http:// or https:// URL");
        }
        else if (Endpoint.AbsolutePath != "/" || Endpoint.Query.Length > 0)
        {
            problems.Add($"endpoint '{Endpoint}' has a path or query; give the server only (the bucket and prefix are separate fields)");
        }

        if (!BucketName().IsMatch(Bucket) || Bucket.Contains("..", StringComparison.Ordinal))
        {
            problems.Add($"bucket '{Bucket}' is not a valid S3 bucket name (3-63 characters: lowercase letters, digits, '-' and '.', starting and ending with a letter or digit)");
        }

        if (Prefix.StartsWith('/') || Prefix.Contains("//", StringComparison.Ordinal) || Prefix.Split('/').Any(s => s is "." or ".."))
        {
            problems.Add($"prefix '{Prefix}' must be relative ('backups/cluster-a'), without empty, '.' or '..' segments");
        }

        if (string.IsNullOrWhiteSpace(Region))
        {
            problems.Add("region is empty");
        }

        if (string.IsNullOrEmpty(AccessKey))
        {
            problems.Add("access key is empty");
        }

        if (string.IsNullOrEmpty(SecretKey))
        {
            problems.Add("secret key is empty");
        }

        if (RequestTimeout <= TimeSpan.Zero || ConnectTimeout <= TimeSpan.Zero)
        {
            problems.Add(string.Create(CultureInfo.InvariantCulture, $"timeouts must be positive (request {RequestTimeout}, connect {ConnectTimeout})"));
        }

        if (MaxRetries < 0)
        {
            problems.Add(string.Create(CultureInfo.InvariantCulture, $"max retries {MaxRetries} is negative"));
        }

        return problems;
    }

    [GeneratedRegex("^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", RegexOptions.CultureInvariant)]
    private static partial Regex BucketName();
}
