using System.Diagnostics.CodeAnalysis;

namespace Dolly.Storage;

/// <summary>What went wrong with a storage operation. Expected outcomes are values, not exceptions.</summary>
public enum StorageErrorCode
{
    /// <summary>No volume or snapshot has that name.</summary>
    NotFound,
    /// <summary>The name is already taken by a volume or snapshot.</summary>
    AlreadyExists,
    /// <summary>The name is not a valid Kubernetes-style name.</summary>
    InvalidName,
    /// <summary>A size or range is malformed, out of bounds, or would shrink a volume.</summary>
    InvalidArgument,
    /// <summary>The device is read-only (a snapshot).</summary>
    ReadOnly,
    /// <summary>The disk under the pool is full.</summary>
    NoSpace,
    /// <summary>Stored data or metadata failed verification.</summary>
    Corrupt,
    /// <summary>The directory is not a Dolly pool, or is an unsupported version.</summary>
    NotAPool,
    /// <summary>Another process holds the pool.</summary>
    InUse,
    /// <summary>The underlying file system failed.</summary>
    IoError,
}

/// <summary>An error with a message that names the object concerned.</summary>
public sealed record StorageError(StorageErrorCode Code, string Message)
{
    /// <inheritdoc />
    public override string ToString() => Message;
}

/// <summary>Success or a <see cref="StorageError"/>.</summary>
public readonly struct Result
{
    private Result(StorageError? error) => Error = error;

    /// <summary>The error, or null on success.</summary>
    public StorageError? Error { get; }

    /// <summary>True when the operation succeeded.</summary>
    [MemberNotNullWhen(false, nameof(Error))]
    public bool IsOk => Error is null;

    /// <summary>The successful result.</summary>
    public static Result Ok => default;

    /// <summary>A failed result.</summary>
    public static Result Fail(StorageErrorCode code, string message) => new(new StorageError(code, message));

    /// <summary>A failed result from an existing error.</summary>
    public static Result Fail(StorageError error) => new(error);

    /// <summary>Converts an error into a failed result.</summary>
    public static implicit operator Result(StorageError error) => new(error);

    /// <summary>Throws <see cref="StorageException"/> when failed.</summary>
    public void ThrowIfFailed()
    {
        if (Error is not null)
        {
            throw new StorageException(Error);
        }
    }
}

/// <summary>A value or a <see cref="StorageError"/>.</summary>
public readonly struct Result<T>
{
    private readonly T? _value;

    private Result(T? value, StorageError? error)
    {
        _value = value;
        Error = error;
    }

    /// <summary>The error, or null on success.</summary>
    public StorageError? Error { get; }

    /// <summary>True when the operation succeeded.</summary>
    [MemberNotNullWhen(false, nameof(Error))]
    public bool IsOk => Error is null;

    /// <summary>The value; throws <see cref="StorageException"/> when the result is an error.</summary>
    public T Value => Error is null ? _value! : throw new StorageException(Error);

    /// <summary>A successful result.</summary>
    public static Result<T> Ok(T value) => new(value, null);

    /// <summary>A failed result.</summary>
    public static Result<T> Fail(StorageErrorCode code, string message) => new(default, new StorageError(code, message));

    /// <summary>Converts a value into a successful result.</summary>
    public static implicit operator Result<T>(T value) => new(value, null);

    /// <summary>Converts an error into a failed result.</summary>
    public static implicit operator Result<T>(StorageError error) => new(default, error);
}

/// <summary>Thrown only where a caller asked for exceptions (<see cref="Result.ThrowIfFailed"/>, <see cref="Result{T}.Value"/>).</summary>
public sealed class StorageException : Exception
{
    /// <summary>Creates the exception for an error.</summary>
    public StorageException(StorageError error)
        : base(error.Message) => Error = error;

    /// <summary>Creates an exception with a message (corruption found where no result could carry it).</summary>
    public StorageException(string message)
        : base(message) => Error = new StorageError(StorageErrorCode.Corrupt, message);

    /// <summary>Creates an exception with a message.</summary>
    public StorageException()
        : this("storage error")
    {
    }

    /// <summary>Creates an exception with a message and inner exception.</summary>
    public StorageException(string message, Exception innerException)
        : base(message, innerException) => Error = new StorageError(StorageErrorCode.IoError, message);

    /// <summary>The error.</summary>
    public StorageError Error { get; }
}
