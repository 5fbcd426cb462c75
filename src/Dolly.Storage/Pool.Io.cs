using Dolly.Storage.Engine;

namespace Dolly.Storage;

// Entry points of BlockDevice: bounds and permission checks, locking, then the data path.
public sealed partial class Pool
{
    internal long SizeOf(ulong id)
    {
        _rw.EnterReadLock();
        try
        {
            return !_disposed && _devices.TryGet(id, out var d) ? d.Size : -1;
        }
        finally
        {
            _rw.ExitReadLock();
        }
    }

    private Result<DeviceState> Resolve(BlockDevice device, long offset, long length, bool write)
    {
        ThrowIfDisposed();
        var d = device.State;
        if (d.Deleted)
        {
            return new StorageError(StorageErrorCode.NotFound, $"'{device.Name}' was deleted");
        }

        if (write && d.Kind == DeviceKind.Snapshot)
        {
            return new StorageError(StorageErrorCode.ReadOnly, $"snapshot '{d.Name}' is read-only");
        }

        if (offset < 0 || length < 0 || offset > d.Size || length > d.Size - offset)
        {
            return new StorageError(StorageErrorCode.InvalidArgument, $"range {offset}+{length} is outside {Describe(d)} of {d.Size} bytes");
        }

        return d;
    }

    internal Result ReadDevice(BlockDevice device, long offset, Span<byte> destination)
    {
        _rw.EnterReadLock();
        try
        {
            var d = Resolve(device, offset, destination.Length, write: false);
            return d.IsOk ? ReadCore(d.Value, offset, destination) : Result.Fail(d.Error);
        }
        finally
        {
            _rw.ExitReadLock();
        }
    }

    internal Result WriteDevice(BlockDevice device, long offset, ReadOnlySpan<byte> data, bool fua)
    {
        bool flush;
        _rw.EnterWriteLock();
        try
        {
            var d = Resolve(device, offset, data.Length, write: true);
            if (!d.IsOk)
            {
                return Result.Fail(d.Error);
            }

            var r = WriteCore(d.Value, offset, data);
            if (!r.IsOk)
            {
                return r;
            }

            flush = fua || FlushDue();
        }
        finally
        {
            _rw.ExitWriteLock();
        }

        return AfterWrite(flush, fua);
    }

    internal Result ZeroDevice(BlockDevice device, long offset, long length, bool unmap, bool fua)
    {
        bool flush;
        _rw.EnterWriteLock();
        try
        {
            var d = Resolve(device, offset, length, write: true);
            if (!d.IsOk)
            {
                return Result.Fail(d.Error);
            }

            var r = unmap ? ZeroCore(d.Value, offset, length) : WriteZeroBytesAllocating(d.Value, offset, length);
            if (!r.IsOk)
            {
                return r;
            }

            flush = fua || FlushDue();
        }
        finally
        {
            _rw.ExitWriteLock();
        }

        return AfterWrite(flush, fua);
    }

    /// <summary>
    /// True when the engine should flush on its own after a write: a transaction has allocated
    /// <see cref="AutoCommitBytes"/> (1 GiB) of new blocks, or the overlay holds an eighth of the journal. Committing
    /// in slices bounds the work of the next flush and the memory held, and lets a long overwrite reuse the space
    /// its own first part freed instead of growing the data file by the whole amount.
    /// </summary>
    private bool FlushDue() => _blocks.AllocatedSinceCommit * _blockSize >= AutoCommitBytes || _overlay.Sectors >= _overlayFlushSectors;

    /// <summary>
    /// After a successful write, outside the lock: flush when the client asked (FUA; its result is the write's) or
    /// when <see cref="FlushDue"/> said so (then a failure is not the write's: the data stays pending for the next flush).
    /// </summary>
    private Result AfterWrite(bool flush, bool fua)
    {
        if (flush)
        {
            var r = Flush();
            if (fua)
            {
                return r;
            }
        }
        else
        {
            DrainPunches();
        }

        return Result.Ok;
    }

    /// <summary>New data a transaction may allocate before the engine commits it on its own.</summary>
    internal const long AutoCommitBytes = 1L << 30;

    /// <summary>Writes real zeros, allocating blocks (NBD's NO_HOLE): later writes will not need to allocate.</summary>
    private Result WriteZeroBytesAllocating(DeviceState d, long offset, long length)
    {
        var zeros = new byte[Math.Min(length, _blockSize)];
        long pos = offset;
        while (pos < offset + length)
        {
            int n = (int)Math.Min(_blockSize - (pos % _blockSize), offset + length - pos);
            var r = WriteCore(d, pos, zeros.AsSpan(0, n));
            if (!r.IsOk)
            {
                return r;
            }

            pos += n;
        }

        return Result.Ok;
    }

    internal Result<IReadOnlyList<ByteRange>> AllocatedRanges(BlockDevice device, long offset, long length)
    {
        _rw.EnterReadLock();
        try
        {
            var d = Resolve(device, offset, length, write: false);
            return d.IsOk ? AllocatedRanges(d.Value, offset, length) : d.Error;
        }
        finally
        {
            _rw.ExitReadLock();
        }
    }

    internal Result<IReadOnlyList<ByteRange>> ChangedRanges(BlockDevice device, string baseSnapshot, long offset, long length)
    {
        _rw.EnterReadLock();
        try
        {
            var d = Resolve(device, offset, length, write: false);
            if (!d.IsOk)
            {
                return d.Error;
            }

            var b = Find(baseSnapshot);
            return b.IsOk ? ChangedRanges(b.Value, d.Value, offset, length) : b.Error;
        }
        finally
        {
            _rw.ExitReadLock();
        }
    }
}
