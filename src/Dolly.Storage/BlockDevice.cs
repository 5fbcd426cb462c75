namespace Dolly.Storage;

/// <summary>
/// An open volume or snapshot for byte-addressed I/O. Handles stay valid across resize and revert (they see
/// the new size or content); after the device is deleted every call returns <see cref="StorageErrorCode.NotFound"/>.
/// </summary>
public sealed class BlockDevice
{
    private readonly Pool _pool;

    internal BlockDevice(Pool pool, Engine.DeviceState state, string name, DeviceKind kind)
    {
        _pool = pool;
        State = state;
        Id = state.Id;
        Name = name;
        Kind = kind;
    }

    /// <summary>The engine's record of the device: the same object across resize and revert, flagged when deleted.</summary>
    internal Engine.DeviceState State { get; }

    /// <summary>The device id.</summary>
    public ulong Id { get; }

    /// <summary>The device name.</summary>
    public string Name { get; }

    /// <summary>Volume or snapshot.</summary>
    public DeviceKind Kind { get; }

    /// <summary>True for snapshots.</summary>
    public bool IsReadOnly => Kind == DeviceKind.Snapshot;

    /// <summary>The pool the device lives in.</summary>
    public Pool Pool => _pool;

    /// <summary>The current size in bytes, or -1 when the device was deleted.</summary>
    public long Size => _pool.SizeOf(State);

    /// <summary>Reads <c>destination.Length</c> bytes at <paramref name="offset"/>. Unwritten ranges read as zeros.</summary>
    public Result Read(long offset, Span<byte> destination) => _pool.ReadDevice(this, offset, destination, null);

    /// <summary>
    /// Reads like <see cref="Read(long, Span{byte})"/> and appends to <paramref name="holes"/> the unallocated ranges
    /// it met (device offsets, in order, adjacent ones merged; they read as zeros): the same answer as
    /// <see cref="GetAllocatedRanges"/> for the range, found by the read's own walk of the map.
    /// </summary>
    public Result Read(long offset, Span<byte> destination, IList<ByteRange> holes) => _pool.ReadDevice(this, offset, destination, holes);

    /// <summary>Writes bytes; with <paramref name="fua"/> they are durable when this returns.</summary>
    public Result Write(long offset, ReadOnlySpan<byte> data, bool fua = false) => _pool.WriteDevice(this, offset, data, fua);

    /// <summary>Deallocates a range: it reads as zeros afterwards and its blocks are freed when unshared.</summary>
    public Result Trim(long offset, long length, bool fua = false) => _pool.ZeroDevice(this, offset, length, unmap: true, fua);

    /// <summary>Writes zeros; with <paramref name="mayUnmap"/> whole blocks are deallocated instead of written.</summary>
    public Result WriteZeroes(long offset, long length, bool mayUnmap = true, bool fua = false) => _pool.ZeroDevice(this, offset, length, mayUnmap, fua);

    /// <summary>Makes all completed writes (to every device of the pool) durable.</summary>
    public Result Flush() => _pool.Flush();

    /// <summary>Allocated ranges within a window.</summary>
    public Result<IReadOnlyList<ByteRange>> GetAllocatedRanges(long offset, long length) => _pool.AllocatedRanges(this, offset, length);

    /// <summary>Ranges that differ from snapshot <paramref name="baseSnapshot"/> within a window.</summary>
    public Result<IReadOnlyList<ByteRange>> GetChangedRanges(string baseSnapshot, long offset, long length) => _pool.ChangedRanges(this, baseSnapshot, offset, length);
}
