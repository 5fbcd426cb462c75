namespace Dolly.Storage;

/// <summary>Whether a device is a writable volume or an immutable snapshot.</summary>
public enum DeviceKind
{
    /// <summary>A writable thin volume (clones are volumes too).</summary>
    Volume = 1,
    /// <summary>An immutable point-in-time image of a volume.</summary>
    Snapshot = 2,
}

/// <summary>A half-open byte range [Offset, Offset + Length).</summary>
public readonly record struct ByteRange(long Offset, long Length)
{
    /// <summary>The first byte after the range.</summary>
    public long End => Offset + Length;
}

/// <summary>A volume or snapshot as stored in a pool.</summary>
/// <param name="Id">Unique, never reused within the pool.</param>
/// <param name="Name">Unique among the pool's volumes and snapshots.</param>
/// <param name="Kind">Volume or snapshot.</param>
/// <param name="Size">Logical size in bytes.</param>
/// <param name="CreatedAt">Creation time.</param>
/// <param name="SourceId">For a snapshot, the volume it was taken of; for a clone, the device it was cloned from; else 0.</param>
/// <param name="SourceName">The source's name if it still exists, else null.</param>
/// <param name="LineageId">The id of the first volume of the family; snapshots and clones inherit it.</param>
public sealed record DeviceInfo(
    ulong Id,
    string Name,
    DeviceKind Kind,
    long Size,
    DateTimeOffset CreatedAt,
    ulong SourceId,
    string? SourceName,
    ulong LineageId)
{
    /// <summary>True for snapshots.</summary>
    public bool IsReadOnly => Kind == DeviceKind.Snapshot;
}

/// <summary>Space used by one device.</summary>
/// <param name="Logical">The logical size.</param>
/// <param name="Allocated">Bytes of data blocks the device maps.</param>
/// <param name="Exclusive">Bytes of data blocks no other device references: what deleting it would free.</param>
public sealed record SpaceUsage(long Logical, long Allocated, long Exclusive);

/// <summary>Pool-wide figures.</summary>
public sealed record PoolInfo(
    string Directory,
    Guid Id,
    int BlockSize,
    ulong Generation,
    int Volumes,
    int Snapshots,
    long DataBlocksUsed,
    long DataBlocksFree,
    long DataFileBytes,
    long MetadataPagesUsed,
    long MetadataBytes,
    long LogicalBytes);

/// <summary>One problem <c>check</c> found, naming the object it concerns.</summary>
public sealed record CheckProblem(string Subject, string Message)
{
    /// <inheritdoc />
    public override string ToString() => $"{Subject}: {Message}";
}

/// <summary>The outcome of a pool check.</summary>
public sealed record CheckReport(
    IReadOnlyList<CheckProblem> Problems,
    int Devices,
    long MetadataPagesVerified,
    long DataBlocksVerified)
{
    /// <summary>True when no problem was found.</summary>
    public bool IsClean => Problems.Count == 0;
}
