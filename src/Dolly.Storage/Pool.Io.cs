using System.Buffers;
using Dolly.Storage.Engine;

namespace Dolly.Storage;

// Entry points of BlockDevice: bounds and permission checks, locking, then the data path.
//
// Locking, outermost first (never the other way round):
//   _rw        the pool lock. The data path (reads, writes, zeroing of any device) holds it shared, so I/O on
//              different devices runs in parallel; management, a commit's prepare and finish, and check hold it
//              alone, so they see no write half-done (a block written but its checksums not yet in the map).
//   d.Io       one per device: its reads share it, its writes hold it alone. It orders a device's own data
//              (a read must not see a block between its new bytes and its new checksums); another device never
//              touches that device's blocks: a block is written in place only while one device references it, and
//              making a second reference (snapshot, clone) needs _rw alone. Reads take nothing more: what they
//              walk (the device's pages, the overlay's sectors of its blocks) only its writers or _rw alone change.
//   _state     the in-memory structures shared by all devices (pages, block allocator, overlay, device table,
//              change counters), taken by writes. Held for in-memory work only: no file I/O, no other lock, inside it.
// The durable part of a commit (its syncs) holds none of them.
public sealed partial class Pool
{
    /// <summary>
    /// The device's size, or -1 once it was deleted or the pool closed. Read without the pool lock: it is asked before
    /// every NBD request, size and deletion change only under the pool lock held alone, and the read or write that
    /// follows checks both again under the lock.
    /// </summary>
    internal long SizeOf(DeviceState d) => Volatile.Read(ref _disposed) || d.Deleted ? -1 : d.Size;

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

    /// <summary>
    /// Takes the locks of the data path (see above). A file system whose files may not be used from several threads
    /// at once (<see cref="IO.IFileSystem.ConcurrentFiles"/> false) gets its writes one at a time, under the pool lock alone.
    /// </summary>
    private void EnterDataPath(DeviceState d, bool write)
    {
        if (write && !_fs.ConcurrentFiles)
        {
            _rw.EnterWriteLock();
            return;
        }

        _rw.EnterReadLock();
        if (write)
        {
            d.Io.EnterWriteLock();
        }
        else
        {
            d.Io.EnterReadLock();
        }
    }

    private void ExitDataPath(DeviceState d, bool write)
    {
        if (write && !_fs.ConcurrentFiles)
        {
            _rw.ExitWriteLock();
            return;
        }

        if (write)
        {
            d.Io.ExitWriteLock();
        }
        else
        {
            d.Io.ExitReadLock();
        }

        _rw.ExitReadLock();
    }

    internal Result ReadDevice(BlockDevice device, long offset, Span<byte> destination, IList<ByteRange>? holes)
    {
        EnterDataPath(device.State, write: false);
        try
        {
            var d = Resolve(device, offset, destination.Length, write: false);
            return d.IsOk ? ReadCore(d.Value, offset, destination, holes) : Result.Fail(d.Error);
        }
        finally
        {
            ExitDataPath(device.State, write: false);
        }
    }

    internal Result WriteDevice(BlockDevice device, long offset, ReadOnlySpan<byte> data, bool fua)
    {
        bool flush;
        EnterDataPath(device.State, write: true);
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
            ExitDataPath(device.State, write: true);
        }

        return AfterWrite(flush, fua);
    }

    internal Result ZeroDevice(BlockDevice device, long offset, long length, bool unmap, bool fua)
    {
        bool flush;
        EnterDataPath(device.State, write: true);
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
            ExitDataPath(device.State, write: true);
        }

        return AfterWrite(flush, fua);
    }

    /// <summary>
    /// True when the engine should flush on its own after a write: a transaction has allocated
    /// <see cref="AutoCommitBytes"/> (1 GiB) of new blocks, or the overlay holds an eighth of the journal. Committing
    /// in slices bounds the work of the next flush and the memory held, and lets a long overwrite reuse the space
    /// its own first part freed instead of growing the data file by the whole amount.
    /// </summary>
    private bool FlushDue()
    {
        lock (_state)
        {
            return _blocks.AllocatedSinceCommit * _blockSize >= AutoCommitBytes || _overlay.Sectors >= _overlayFlushSectors;
        }
    }

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

    /// <summary>
    /// Makes [offset, offset + length) read as zeros: whole blocks are unmapped (their space is freed once no
    /// snapshot holds them), partial blocks get zeros written.
    /// </summary>
    internal Result ZeroCore(DeviceState d, long offset, long length)
    {
        if (length == 0)
        {
            return Result.Ok;
        }

        long end = offset + length;
        long firstFull = (offset + _blockSize - 1) / _blockSize;
        long endFull = end / _blockSize;
        if (end == d.Size)
        {
            endFull = (end + _blockSize - 1) / _blockSize;
        }

        if (firstFull < endFull)
        {
            if (d.Root != 0)
            {
                lock (_state)
                {
                    uint root = _tree.UnmapRange(d.Root, d.Depth - 1, 0, firstFull, endFull);
                    if (root != d.Root)
                    {
                        d.Root = root;
                        MarkDirty(d);
                    }

                    Touch();
                }
            }

            var head = WriteZeroBytes(d, offset, (firstFull * _blockSize) - offset);
            return head.IsOk ? WriteZeroBytes(d, endFull * _blockSize, Math.Max(0, end - (endFull * _blockSize))) : head;
        }

        return WriteZeroBytes(d, offset, length);
    }

    /// <summary>Writes zeros into a range inside mapped blocks; unmapped blocks already read as zeros.</summary>
    private Result WriteZeroBytes(DeviceState d, long offset, long length)
    {
        if (length <= 0)
        {
            return Result.Ok;
        }

        byte[] zeros = ArrayPool<byte>.Shared.Rent(_blockSize);
        try
        {
            Array.Clear(zeros, 0, _blockSize);
            long pos = offset;
            long end = offset + length;
            while (pos < end)
            {
                long lb = pos / _blockSize;
                int bo = (int)(pos % _blockSize);
                int n = (int)Math.Min(_blockSize - bo, end - pos);
                bool mapped;
                lock (_state)
                {
                    uint leaf = _tree.FindLeaf(d.Root, d.Depth, _tree.MapGeometry, lb, out int slot);
                    mapped = leaf != 0 && _tree.LeafBlock(leaf, slot) != NoBlock;
                }

                if (mapped)
                {
                    var r = WriteBlock(d, lb, bo, zeros.AsSpan(0, n));
                    if (!r.IsOk)
                    {
                        return r;
                    }
                }

                pos += n;
            }

            return Result.Ok;
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(zeros);
        }
    }

    internal Result<IReadOnlyList<ByteRange>> AllocatedRanges(BlockDevice device, long offset, long length)
    {
        _rw.EnterReadLock();
        try
        {
            var d = Resolve(device, offset, length, write: false);
            if (!d.IsOk)
            {
                return d.Error;
            }

            lock (_state)
            {
                return AllocatedRanges(d.Value, offset, length);
            }
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
            if (!b.IsOk)
            {
                return b.Error;
            }

            lock (_state)
            {
                return ChangedRanges(b.Value, d.Value, offset, length);
            }
        }
        finally
        {
            _rw.ExitReadLock();
        }
    }
}
