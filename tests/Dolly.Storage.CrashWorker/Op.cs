namespace Dolly.Storage.CrashWorker;

/// <summary>What a workload step does.</summary>
public enum OpKind
{
    CreateVolume,
    Write,
    Trim,
    Zero,
    Snapshot,
    Clone,
    Revert,
    Delete,
    Resize,
    Flush,
    Reopen,
    Abandon,
    Check,
}

/// <summary>
/// One workload step. <see cref="ExpectedError"/> is what the reference model predicts (null: success); the engine
/// must return exactly that code.
/// </summary>
public sealed record Op(
    OpKind Kind,
    string Name,
    string? Name2 = null,
    long Offset = 0,
    long Length = 0,
    int DataSeed = 0,
    bool Fua = false,
    bool MayUnmap = true,
    long Size = 0,
    StorageErrorCode? ExpectedError = null)
{
    /// <summary>True when a successful execution of this step is an acknowledged commit.</summary>
    public bool Commits => ExpectedError is null && (Fua || Kind is OpKind.CreateVolume or OpKind.Snapshot or OpKind.Clone
        or OpKind.Revert or OpKind.Delete or OpKind.Resize or OpKind.Flush or OpKind.Reopen);

    /// <summary>The bytes a write step writes: zeros for seed 0, else seeded random bytes.</summary>
    public byte[] Data()
    {
        var data = new byte[Length];
        if (DataSeed != 0)
        {
            new Random(DataSeed).NextBytes(data);
        }

        return data;
    }

    public override string ToString() => Kind switch
    {
        OpKind.Write or OpKind.Trim or OpKind.Zero => $"{Kind} {Name} {Offset}+{Length}{(Fua ? " fua" : "")}{(Kind == OpKind.Zero && !MayUnmap ? " no-unmap" : "")} data={DataSeed} expect={ExpectedError?.ToString() ?? "ok"}",
        _ => $"{Kind} {Name} {Name2} size={Size} expect={ExpectedError?.ToString() ?? "ok"}",
    };
}
