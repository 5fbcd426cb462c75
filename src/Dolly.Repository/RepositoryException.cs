namespace Dolly.Repository;

/// <summary>Why a repository operation failed (object store failures stay <see cref="Storage.ObjectStoreException"/>).</summary>
public enum RepositoryError
{
    /// <summary>No repository config at the location (not initialised, or a wrong prefix or directory).</summary>
    NotARepository,

    /// <summary><c>init</c> on a location that already holds a repository.</summary>
    AlreadyExists,

    /// <summary>The key does not open the repository's data key.</summary>
    WrongKey,

    /// <summary>The repository or one of its objects has a newer format than this build reads.</summary>
    UnsupportedFormat,

    /// <summary>An object failed authentication, its hash, or its structure.</summary>
    Corrupt,

    /// <summary>A manifest, chunk or snapshot named by the request does not exist.</summary>
    NotFound,

    /// <summary>A malformed argument (a manifest id, a chunk size, a snapshot that is a volume).</summary>
    InvalidArgument,

    /// <summary>Another operation holds the repository (a prune while uploading, or uploads while pruning).</summary>
    Busy,
}

/// <summary>A failed repository operation; the message names the repository and the object concerned.</summary>
public sealed class RepositoryException : Exception
{
    /// <summary>Creates the exception.</summary>
    public RepositoryException(RepositoryError error, string message, Exception? innerException = null)
        : base(message, innerException) => Error = error;

    /// <summary>Creates an exception with no classification (for serializers and analyzers).</summary>
    public RepositoryException() : this(RepositoryError.Corrupt, "repository operation failed") { }

    /// <summary>Creates an exception with no classification (for serializers and analyzers).</summary>
    public RepositoryException(string message) : this(RepositoryError.Corrupt, message) { }

    /// <summary>Creates an exception with no classification (for serializers and analyzers).</summary>
    public RepositoryException(string message, Exception innerException) : this(RepositoryError.Corrupt, message, innerException) { }

    /// <summary>The kind of failure.</summary>
    public RepositoryError Error { get; }
}
