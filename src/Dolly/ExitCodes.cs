using Dolly.Storage;

namespace Dolly;

/// <summary>
/// Process exit codes: 0 success, 1 an unexpected failure (a bug), 2 a usage error, and one code per
/// <see cref="StorageErrorCode"/> so scripts can tell "not found" from "no space" without parsing text.
/// </summary>
internal static class ExitCodes
{
    public const int Ok = 0;
    public const int Unexpected = 1;
    public const int Usage = 2;
    public const int NotFound = 3;
    public const int AlreadyExists = 4;
    public const int InvalidName = 5;
    public const int InvalidArgument = 6;
    public const int ReadOnly = 7;
    public const int NoSpace = 8;
    public const int Corrupt = 9;
    public const int NotAPool = 10;
    public const int InUse = 11;
    public const int IoError = 12;

    /// <summary>A benchmark ran but missed at least one target (<c>dolly bench engine --strict</c>).</summary>
    public const int TargetMissed = 13;

    /// <summary><c>dolly mount|unmount</c> found no running <c>dolly up</c> to talk to (no kubeconfig, API server or CSI socket).</summary>
    public const int NotRunning = 14;

    /// <summary><c>dolly mount</c> was given a PersistentVolumeClaim that is not Bound to a volume yet.</summary>
    public const int NotBound = 15;

    public static int For(StorageErrorCode code) => code switch
    {
        StorageErrorCode.NotFound => NotFound,
        StorageErrorCode.AlreadyExists => AlreadyExists,
        StorageErrorCode.InvalidName => InvalidName,
        StorageErrorCode.InvalidArgument => InvalidArgument,
        StorageErrorCode.ReadOnly => ReadOnly,
        StorageErrorCode.NoSpace => NoSpace,
        StorageErrorCode.Corrupt => Corrupt,
        StorageErrorCode.NotAPool => NotAPool,
        StorageErrorCode.InUse => InUse,
        StorageErrorCode.IoError => IoError,
        _ => Unexpected,
    };

    /// <summary>The table printed at the end of <c>dolly --help</c>.</summary>
    public const string HelpText = """
        Exit codes:
          0  success                      7  read-only (a snapshot)
          1  unexpected failure (a bug)   8  no space left on the disk
          2  usage error                  9  corrupt data or metadata (check found problems)
          3  not found                   10  not a Dolly pool
          4  already exists              11  pool in use by another process
          5  invalid name                12  I/O error
          6  invalid argument or size    13  benchmark target missed (bench engine --strict)
                                         14  dolly up not reachable (mount, unmount)
                                         15  PersistentVolumeClaim not Bound (mount)

        Default pool: $DOLLY_POOL, else $XDG_DATA_HOME/dolly/pool, else ~/.local/share/dolly/pool; created on
        first use. A pool named with --pool must already exist (dolly --pool DIR pool init creates one).
        """;
}

/// <summary>
/// An expected failure on its way to the CLI boundary: printed as <c>error: message</c>, never with a
/// stack trace, and turned into its exit code.
/// </summary>
internal sealed class CliFailureException : Exception
{
    public CliFailureException(int exitCode, string message)
        : base(message) => ExitCode = exitCode;

    public CliFailureException(StorageError error)
        : this(ExitCodes.For(error.Code), error.Message)
    {
    }

    public CliFailureException()
        : this(ExitCodes.Unexpected, "failed")
    {
    }

    public CliFailureException(string message)
        : this(ExitCodes.Unexpected, message)
    {
    }

    public CliFailureException(string message, Exception innerException)
        : base(message, innerException) => ExitCode = ExitCodes.Unexpected;

    public int ExitCode { get; }
}

/// <summary>Unwrapping engine results at the CLI boundary.</summary>
internal static class ResultExtensions
{
    public static T OrFail<T>(this Result<T> result) =>
        result.IsOk ? result.Value : throw new CliFailureException(result.Error);

    public static void OrFail(this Result result)
    {
        if (!result.IsOk)
        {
            throw new CliFailureException(result.Error);
        }
    }
}
