namespace Dolly.Repository.Storage;

/// <summary>
/// The only thing a snapshot repository needs from where it keeps its objects: a flat namespace of immutable
/// keys. An S3 bucket (with a prefix) and a local directory both implement it, so the repository format,
/// upload, restore and maintenance have one code path for both.
/// </summary>
/// <remarks>
/// Keys are relative, '/'-separated, and never start with '/'; implementations map them under their own prefix
/// or root. A put of an existing key replaces it whole (readers see the old or the new object, never a mix).
/// Failures are reported as <see cref="ObjectStoreException"/> with a <see cref="ObjectStoreError"/> the caller
/// can turn into a condition; a missing key is not a failure for <see cref="GetAsync"/> (it answers null).
/// </remarks>
public interface IObjectStore
{
    /// <summary>Where the objects live, for messages: <c>s3://bucket/prefix at http://host:port</c> or a path.</summary>
    string Location { get; }

    /// <summary>Stores <paramref name="data"/> under <paramref name="key"/>, replacing any object there.</summary>
    Task PutAsync(string key, ReadOnlyMemory<byte> data, CancellationToken cancellationToken);

    /// <summary>The whole object, or null when no object has that key.</summary>
    Task<byte[]?> GetAsync(string key, CancellationToken cancellationToken);

    /// <summary>Whether an object has that key (a HEAD; never reads the object).</summary>
    Task<bool> ExistsAsync(string key, CancellationToken cancellationToken);

    /// <summary>Deletes the object; deleting a key that does not exist succeeds.</summary>
    Task DeleteAsync(string key, CancellationToken cancellationToken);

    /// <summary>Every object whose key starts with <paramref name="prefix"/>, in key order. Maintenance only.</summary>
    IAsyncEnumerable<ObjectInfo> ListAsync(string prefix, CancellationToken cancellationToken);
}

/// <summary>One object as a listing reports it.</summary>
public sealed record ObjectInfo(string Key, long Size, DateTimeOffset LastModified);

/// <summary>Why an object store refused or failed a request.</summary>
public enum ObjectStoreError
{
    /// <summary>Anything not covered below; the message says what.</summary>
    Other,

    /// <summary>The server could not be reached or did not answer in time (retrying later may succeed).</summary>
    Unreachable,

    /// <summary>The credentials were refused or lack a permission.</summary>
    AccessDenied,

    /// <summary>The bucket (or the directory) does not exist.</summary>
    NoSuchBucket,
}

/// <summary>A failed object store request, naming the store and the key.</summary>
public sealed class ObjectStoreException : Exception
{
    /// <summary>Creates an exception for a failed request.</summary>
    public ObjectStoreException(ObjectStoreError error, string message, Exception? innerException = null)
        : base(message, innerException) => Error = error;

    /// <summary>Creates an exception with no classification (for serializers and analyzers).</summary>
    public ObjectStoreException() : this(ObjectStoreError.Other, "object store request failed") { }

    /// <summary>Creates an exception with no classification (for serializers and analyzers).</summary>
    public ObjectStoreException(string message) : this(ObjectStoreError.Other, message) { }

    /// <summary>Creates an exception with no classification (for serializers and analyzers).</summary>
    public ObjectStoreException(string message, Exception innerException)
        : this(ObjectStoreError.Other, message, innerException) { }

    /// <summary>The kind of failure.</summary>
    public ObjectStoreError Error { get; }
}
