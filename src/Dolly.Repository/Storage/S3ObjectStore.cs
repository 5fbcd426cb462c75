using System.Net;
using System.Net.Sockets;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Amazon.Runtime;
using Amazon.S3;
using Amazon.S3.Model;

namespace Dolly.Repository.Storage;

/// <summary>
/// <see cref="IObjectStore"/> on an S3 bucket through the AWS SDK: AWS itself, Ceph's radosgw, MinIO and other
/// S3-compatible servers. Every key lives under the configured prefix; failures become
/// <see cref="ObjectStoreException"/>s naming the endpoint, bucket and key.
/// </summary>
/// <remarks>
/// The SDK retries network errors, throttling and 5xx answers (standard retry mode) before a failure reaches the
/// caller, so an <see cref="ObjectStoreError.Unreachable"/> means the server stayed away for the whole budget.
/// Checksums are computed and validated only where the S3 API requires them: since SDK 4 the default adds CRC
/// trailers that radosgw before Reef rejects, and the repository verifies every object by its own keyed hash.
/// </remarks>
public sealed class S3ObjectStore : IRangedObjectStore, IDisposable
{
    private const string NoSuchBucketCode = "NoSuchBucket";
    private const string NoSuchKeyCode = "NoSuchKey";
    private const string InvalidRangeCode = "InvalidRange";

    private static readonly HashSet<string> AccessDeniedCodes = new(StringComparer.Ordinal)
    {
        "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "RequestTimeTooSkewed", "AllAccessDisabled",
        "InvalidToken", "ExpiredToken", "AccountProblem",
    };

    private readonly AmazonS3Client _client;
    private readonly string _bucket;
    private readonly string _prefix;
    private readonly string _endpoint;

    // A HEAD answers 404 without a body both for a missing key and for a missing bucket. Once any request has
    // shown the bucket exists, a 404 on HEAD means the key; before that, one HeadBucket tells them apart.
    private volatile bool _bucketSeen;

    /// <summary>Creates a store for the bucket the options name; nothing is sent until the first request.</summary>
    /// <exception cref="ArgumentException">The options are not usable; the message lists every problem.</exception>
    public S3ObjectStore(S3ObjectStoreOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        var problems = options.Validate();
        if (problems.Count > 0)
        {
            throw new ArgumentException("invalid S3 repository settings: " + string.Join("; ", problems), nameof(options));
        }

        _bucket = options.Bucket;
        _prefix = options.NormalizedPrefix;
        _endpoint = options.Endpoint.GetLeftPart(UriPartial.Authority);
        Location = $"s3://{_bucket}/{_prefix} at {_endpoint}";
        var config = new AmazonS3Config
        {
            ServiceURL = _endpoint,
            AuthenticationRegion = options.Region,
            ForcePathStyle = options.ForcePathStyle,
            RequestChecksumCalculation = RequestChecksumCalculation.WHEN_REQUIRED,
            ResponseChecksumValidation = ResponseChecksumValidation.WHEN_REQUIRED,
            Timeout = options.RequestTimeout,
            ConnectTimeout = options.ConnectTimeout,
            MaxErrorRetry = options.MaxRetries,
            RetryMode = RequestRetryMode.Standard,
        };
        _client = new AmazonS3Client(new BasicAWSCredentials(options.AccessKey, options.SecretKey), config);
    }

    /// <inheritdoc />
    public string Location { get; }

    /// <inheritdoc />
    public async Task PutAsync(string key, ReadOnlyMemory<byte> data, CancellationToken cancellationToken)
    {
        var objectKey = ObjectKey(key);
        var body = MemoryMarshal.TryGetArray(data, out var segment)
            ? new MemoryStream(segment.Array!, segment.Offset, segment.Count, writable: false)
            : new MemoryStream(data.ToArray(), writable: false);
        await using (body.ConfigureAwait(false))
        {
            var request = new PutObjectRequest
            {
                BucketName = _bucket,
                Key = objectKey,
                InputStream = body,
                AutoCloseStream = false,
                ContentType = "application/octet-stream",
            };
            try
            {
                await SendAsync(ct => _client.PutObjectAsync(request, ct), cancellationToken).ConfigureAwait(false);
                _bucketSeen = true;
            }
            catch (Exception ex) when (IsFailure(ex, cancellationToken))
            {
                throw Map(ex, "put", objectKey);
            }
        }
    }

    /// <inheritdoc />
    public async Task<byte[]?> GetAsync(string key, CancellationToken cancellationToken)
    {
        var objectKey = ObjectKey(key);
        return await ReadAsync(new GetObjectRequest { BucketName = _bucket, Key = objectKey }, "get", objectKey, cancellationToken).ConfigureAwait(false);
    }

    /// <inheritdoc />
    public async Task<byte[]?> GetRangeAsync(string key, long offset, int length, CancellationToken cancellationToken)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(offset);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(length);
        var objectKey = ObjectKey(key);
        var request = new GetObjectRequest { BucketName = _bucket, Key = objectKey, ByteRange = new ByteRange(offset, offset + length - 1) };
        try
        {
            return await ReadAsync(request, "ranged get", objectKey, cancellationToken).ConfigureAwait(false);
        }
        catch (ObjectStoreException ex) when (ex.InnerException is AmazonS3Exception { ErrorCode: InvalidRangeCode })
        {
            // 416: the object exists and ends at or before the offset.
            return [];
        }
    }

    /// <inheritdoc />
    public async Task<bool> ExistsAsync(string key, CancellationToken cancellationToken)
    {
        var objectKey = ObjectKey(key);
        try
        {
            await SendAsync(ct => _client.GetObjectMetadataAsync(new GetObjectMetadataRequest { BucketName = _bucket, Key = objectKey }, ct), cancellationToken).ConfigureAwait(false);
            _bucketSeen = true;
            return true;
        }
        catch (AmazonS3Exception ex) when (ex.StatusCode == HttpStatusCode.NotFound)
        {
            await EnsureBucketExistsAsync(objectKey, cancellationToken).ConfigureAwait(false);
            return false;
        }
        catch (Exception ex) when (IsFailure(ex, cancellationToken))
        {
            throw Map(ex, "head", objectKey);
        }
    }

    /// <inheritdoc />
    public async Task DeleteAsync(string key, CancellationToken cancellationToken)
    {
        var objectKey = ObjectKey(key);
        try
        {
            // S3 answers 204 for a key that does not exist, so deleting twice succeeds twice; a missing bucket is
            // still a 404 NoSuchBucket.
            await SendAsync(ct => _client.DeleteObjectAsync(new DeleteObjectRequest { BucketName = _bucket, Key = objectKey }, ct), cancellationToken).ConfigureAwait(false);
            _bucketSeen = true;
        }
        catch (Exception ex) when (IsFailure(ex, cancellationToken))
        {
            throw Map(ex, "delete", objectKey);
        }
    }

    /// <inheritdoc />
    public async IAsyncEnumerable<ObjectInfo> ListAsync(string prefix, [EnumeratorCancellation] CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(prefix);
        if (prefix.StartsWith('/'))
        {
            throw new ArgumentException($"object key prefix '{prefix}' must not start with '/'", nameof(prefix));
        }

        var request = new ListObjectsV2Request { BucketName = _bucket, Prefix = _prefix + prefix };
        while (true)
        {
            ListObjectsV2Response page;
            try
            {
                page = await SendAsync(ct => _client.ListObjectsV2Async(request, ct), cancellationToken).ConfigureAwait(false);
                _bucketSeen = true;
            }
            catch (Exception ex) when (IsFailure(ex, cancellationToken))
            {
                throw Map(ex, "list", request.Prefix);
            }

            // SDK 4 leaves collections null (not empty) when the answer has none.
            foreach (var o in page.S3Objects ?? [])
            {
                yield return new ObjectInfo(
                    o.Key[_prefix.Length..],
                    o.Size ?? 0,
                    o.LastModified is { } modified ? new DateTimeOffset(modified.ToUniversalTime(), TimeSpan.Zero) : DateTimeOffset.MinValue);
            }

            if (page.IsTruncated != true || string.IsNullOrEmpty(page.NextContinuationToken))
            {
                yield break;
            }

            request.ContinuationToken = page.NextContinuationToken;
        }
    }

    /// <summary>
    /// Creates the bucket unless it exists (for <c>dolly repo init</c> and the dev server); answers whether it
    /// created it. A name taken by another owner is <see cref="ObjectStoreError.AccessDenied"/>.
    /// </summary>
    /// <remarks>
    /// radosgw (like AWS in us-east-1) answers 200 to a create of a bucket the caller already owns, so existence is
    /// asked first; two callers racing on a new name may both answer true, which is harmless.
    /// </remarks>
    public async Task<bool> CreateBucketAsync(CancellationToken cancellationToken)
    {
        try
        {
            await SendAsync(ct => _client.GetBucketLocationAsync(new GetBucketLocationRequest { BucketName = _bucket }, ct), cancellationToken).ConfigureAwait(false);
            _bucketSeen = true;
            return false;
        }
        catch (AmazonS3Exception ex) when (ex.ErrorCode == NoSuchBucketCode)
        {
            // Fall through to create it.
        }
        catch (Exception ex) when (IsFailure(ex, cancellationToken))
        {
            throw Map(ex, "create bucket", key: null);
        }

        try
        {
            await SendAsync(ct => _client.PutBucketAsync(new PutBucketRequest { BucketName = _bucket }, ct), cancellationToken).ConfigureAwait(false);
            _bucketSeen = true;
            return true;
        }
        catch (AmazonS3Exception ex) when (ex.ErrorCode == "BucketAlreadyOwnedByYou")
        {
            _bucketSeen = true;
            return false;
        }
        catch (AmazonS3Exception ex) when (ex.ErrorCode == "BucketAlreadyExists")
        {
            throw new ObjectStoreException(ObjectStoreError.AccessDenied, $"create bucket '{_bucket}' at {_endpoint}: the name is taken by another owner", ex);
        }
        catch (Exception ex) when (IsFailure(ex, cancellationToken))
        {
            throw Map(ex, "create bucket", key: null);
        }
    }

    /// <inheritdoc />
    public void Dispose() => _client.Dispose();

    private async Task<byte[]?> ReadAsync(GetObjectRequest request, string operation, string objectKey, CancellationToken cancellationToken)
    {
        try
        {
            using var response = await SendAsync(ct => _client.GetObjectAsync(request, ct), cancellationToken).ConfigureAwait(false);
            _bucketSeen = true;
            var length = response.ContentLength;
            if (length < 0 || length > Array.MaxLength)
            {
                throw new ObjectStoreException(ObjectStoreError.Other, $"{operation} '{objectKey}' in {Location}: the object's length {length} cannot be held in memory");
            }

            var data = new byte[length];
            await response.ResponseStream.ReadExactlyAsync(data, cancellationToken).ConfigureAwait(false);
            return data;
        }
        catch (AmazonS3Exception ex) when (ex.ErrorCode == NoSuchKeyCode)
        {
            _bucketSeen = true;
            return null;
        }
        catch (EndOfStreamException ex)
        {
            throw new ObjectStoreException(ObjectStoreError.Unreachable, $"{operation} '{objectKey}' in {Location}: the connection ended before the whole object arrived", ex);
        }
        catch (Exception ex) when (ex is not ObjectStoreException && IsFailure(ex, cancellationToken))
        {
            throw Map(ex, operation, objectKey);
        }
    }

    /// <summary>
    /// Sends one request, again once if the answer was a 400 without an S3 request id. radosgw (Pacific's beast
    /// frontend) answers a PUT it refuses (403, 404) before reading the body and keeps the connection; the body then
    /// reaches it as the next request's start, and the next request sent on that pooled connection gets the
    /// frontend's bare 400 (no XML error, no x-amz-request-id), after which the connection is closed. Every error
    /// S3 itself returns carries a request id, so only that stray answer is sent again, on a new connection.
    /// </summary>
    private static async Task<T> SendAsync<T>(Func<CancellationToken, Task<T>> send, CancellationToken cancellationToken)
    {
        try
        {
            return await send(cancellationToken).ConfigureAwait(false);
        }
        catch (AmazonS3Exception ex) when (ex.StatusCode == HttpStatusCode.BadRequest && string.IsNullOrEmpty(ex.RequestId))
        {
            return await send(cancellationToken).ConfigureAwait(false);
        }
    }

    private async Task EnsureBucketExistsAsync(string objectKey, CancellationToken cancellationToken)
    {
        if (_bucketSeen)
        {
            return;
        }

        try
        {
            // HeadBucket answers 404 without a body too, but there nothing else can be missing.
            await SendAsync(ct => _client.GetBucketLocationAsync(new GetBucketLocationRequest { BucketName = _bucket }, ct), cancellationToken).ConfigureAwait(false);
            _bucketSeen = true;
        }
        catch (Exception ex) when (IsFailure(ex, cancellationToken))
        {
            throw Map(ex, "head", objectKey);
        }
    }

    private string ObjectKey(string key)
    {
        ArgumentException.ThrowIfNullOrEmpty(key);
        if (key.StartsWith('/') || key.EndsWith('/') || key.Contains("//", StringComparison.Ordinal))
        {
            throw new ArgumentException($"object key '{key}' must be relative, without empty segments", nameof(key));
        }

        return _prefix + key;
    }

    // The caller's own cancellation passes through unchanged; everything else, including the SDK's timeout (which
    // surfaces as a cancellation of a token the caller never cancelled), is a store failure.
    private static bool IsFailure(Exception ex, CancellationToken cancellationToken) =>
        !(ex is OperationCanceledException && cancellationToken.IsCancellationRequested);

    private ObjectStoreException Map(Exception ex, string operation, string? key)
    {
        var what = key is null ? $"{operation} in {Location}" : $"{operation} '{key}' in {Location}";
        if (ex is AmazonServiceException service && (int)service.StatusCode != 0 && !IsNetworkFailure(ex))
        {
            var code = string.IsNullOrEmpty(service.ErrorCode) ? ((int)service.StatusCode).ToString(System.Globalization.CultureInfo.InvariantCulture) : service.ErrorCode;
            var detail = string.IsNullOrEmpty(service.Message) ? code : $"{code}: {service.Message}";
            if (service.ErrorCode == NoSuchBucketCode)
            {
                return new ObjectStoreException(ObjectStoreError.NoSuchBucket, $"{what}: bucket '{_bucket}' does not exist ({detail})", ex);
            }

            if (service.StatusCode == HttpStatusCode.Forbidden || AccessDeniedCodes.Contains(service.ErrorCode ?? string.Empty))
            {
                return new ObjectStoreException(ObjectStoreError.AccessDenied, $"{what}: the credentials were refused ({detail})", ex);
            }

            if ((int)service.StatusCode >= 500)
            {
                return new ObjectStoreException(ObjectStoreError.Unreachable, $"{what}: the server kept failing ({detail})", ex);
            }

            return new ObjectStoreException(ObjectStoreError.Other, $"{what}: {detail}", ex);
        }

        if (IsNetworkFailure(ex))
        {
            return new ObjectStoreException(ObjectStoreError.Unreachable, $"{what}: {_endpoint} did not answer ({Innermost(ex).Message})", ex);
        }

        return new ObjectStoreException(ObjectStoreError.Other, $"{what}: {ex.Message}", ex);
    }

    private static bool IsNetworkFailure(Exception ex)
    {
        for (Exception? e = ex; e is not null; e = e.InnerException)
        {
            if (e is HttpRequestException or SocketException or IOException or TimeoutException or OperationCanceledException)
            {
                return true;
            }
        }

        return false;
    }

    private static Exception Innermost(Exception ex)
    {
        while (ex.InnerException is not null)
        {
            ex = ex.InnerException;
        }

        return ex;
    }
}
