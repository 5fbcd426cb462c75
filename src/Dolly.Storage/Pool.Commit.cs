using Dolly.Storage.Engine;

namespace Dolly.Storage;

// Commit protocol, in order; each step is durable before the next starts:
//   1. fdatasync the data file: every block the new state references is on disk;
//   2. write the device records that changed, then every fresh page, into pages the committed state does not
//      use, and fdatasync the metadata file;
//   3. write the superblock into the slot the committed state does not use, and fdatasync again.
// A crash before 3 completes leaves the previous superblock (and everything it reaches) intact; a torn
// superblock fails its checksum and the other slot wins. Only after 3 may pages and blocks that the old state
// referenced be reused, which is why they wait in the pending lists.
public sealed partial class Pool
{
    private bool _dirty;
    private readonly HashSet<DeviceState> _dirtyDevices = [];
    private readonly List<int> _freeSlots = [];
    private int _slotHighWater;
    private uint _deviceRoot;
    private int _deviceDepth = 1;
    private ulong _nextDeviceId = 1;
    private ulong _generation;
    private readonly byte[] _superPage = new byte[Layout.PageSize];

    private void MarkDirty(DeviceState d)
    {
        _dirtyDevices.Add(d);
        _dirty = true;
    }

    private Result CommitCore()
    {
        if (!_dirty)
        {
            return Result.Ok;
        }

        try
        {
            if (_dataDirty)
            {
                _data.Sync();
            }

            WriteDeviceRecords();
            foreach (uint id in _freshPages)
            {
                if (_pageRef[id] > 0 && _pageBorn[id] == _txn)
                {
                    var page = _pages[id]!;
                    Layout.SealPage(page);
                    _meta.Write((long)id * Layout.PageSize, page);
                }
            }

            _meta.Sync();
            var super = new Superblock(_blockSize, _poolId, _generation + 1, _deviceRoot, _deviceDepth, _nextDeviceId, _metaHighWater, _dataHighWater);
            super.WriteTo(_superPage);
            _meta.Write((long)(super.Generation % 2) * Layout.PageSize, _superPage);
            _meta.Sync();
        }
        catch (IOException ex)
        {
            // Nothing the committed state references was touched; the in-memory state stays dirty and the
            // next flush retries.
            return IsNoSpace(ex)
                ? Result.Fail(StorageErrorCode.NoSpace, $"pool '{_directory}': no space left on the disk to commit metadata; unflushed writes are kept in memory and the flush can be retried")
                : Result.Fail(StorageErrorCode.IoError, $"pool '{_directory}': committing metadata failed: {ex.Message}");
        }

        _generation++;
        _txn++;
        _txnAllocatedBytes = 0;
        _freshPages.Clear();
        foreach (uint id in _pendingPages)
        {
            _pageRef[id] = 0;
            _freePages.Push(id);
        }

        _pendingPages.Clear();
        ReleasePendingBlocks();
        _dirty = false;
        _dataDirty = false;
        return Result.Ok;
    }

    /// <summary>
    /// Frees the blocks the last commit stopped referencing. Blocks deleted, trimmed or reverted away keep
    /// their disk space up to a reserve (256 MiB, or a quarter of the data in use), so that copy-on-write overwrites reuse allocated file space instead
    /// of making the host file system allocate again. The rest are queued to be hole-punched, which returns
    /// their space to the host: that happens outside the pool lock (<see cref="DrainPunches"/>), because
    /// punching a gigabyte takes long enough to stall every reader and writer. Until punched they are neither
    /// free nor referenced (count -2), so nothing can be written into them before the punch.
    /// </summary>
    private void ReleasePendingBlocks()
    {
        // Blocks replaced by copy-on-write keep their space whatever the reserve: their replacement took new
        // space, so keeping them costs no more than an in-place overwrite would have, and the next
        // copy-on-write of the same data lands on allocated (often still cached) file space.
        foreach (uint p in _pendingReplaced)
        {
            _blockRef[p] = 0;
            _blockKept[p] = true;
            _blockStale[p] = true;
        }

        _keptFreeBlocks += _pendingReplaced.Count;
        _freeBlocksBelowHighWater += _pendingReplaced.Count;
        _pendingReplaced.Clear();
        if (_pendingBlocks.Count == 0)
        {
            return;
        }

        _pendingBlocks.Sort();
        long used = _dataHighWater - _freeBlocksBelowHighWater - _pendingBlocks.Count;
        long reserve = Math.Max(MinKeptBlocks * 65536L / _blockSize, used / 4);
        int i = 0;
        while (i < _pendingBlocks.Count)
        {
            int j = i;
            while (j + 1 < _pendingBlocks.Count && _pendingBlocks[j + 1] == _pendingBlocks[j] + 1)
            {
                j++;
            }

            int keep = (int)Math.Clamp(reserve - _keptFreeBlocks, 0, j - i + 1);
            for (int k = i; k < i + keep; k++)
            {
                uint p = _pendingBlocks[k];
                _blockRef[p] = 0;
                _blockKept[p] = true;
                _blockStale[p] = true;
            }

            _keptFreeBlocks += keep;
            _freeBlocksBelowHighWater += keep;
            if (i + keep <= j)
            {
                for (int k = i + keep; k <= j; k++)
                {
                    _blockRef[_pendingBlocks[k]] = Punching;
                }

                _punchQueue.Add((_pendingBlocks[i + keep], (uint)(j - i - keep + 1)));
                _punchesQueued = _punchQueue.Count;
            }

            i = j + 1;
        }

        _pendingBlocks.Clear();
    }

    /// <summary>Reference count of a block waiting to be hole-punched.</summary>
    private const int Punching = -2;

    // Runs of freed blocks waiting to be punched, and the piece being punched right now (at most one thread
    // drains at a time). Both are guarded by the pool's write lock; the punch itself runs outside it.
    private readonly List<(uint First, uint Count)> _punchQueue = [];
    private (uint First, uint Count)? _punchingNow;
    private int _punchesQueued;
    private int _draining;

    /// <summary>
    /// Punches the queued runs of freed blocks in pieces of at most 64 MiB without holding the pool lock, then
    /// makes them allocatable. Called by whichever thread just committed, after releasing the lock; when
    /// <paramref name="lockHeld"/> (closing the pool) everything is punched at once.
    /// </summary>
    private void DrainPunches(bool lockHeld = false)
    {
        if (Volatile.Read(ref _punchesQueued) == 0)
        {
            return;
        }

        uint pieceBlocks = (uint)Math.Max(1, (64 << 20) / _blockSize);
        if (lockHeld)
        {
            foreach (var run in _punchQueue)
            {
                Punch(run);
                MarkPunched(run);
            }

            _punchQueue.Clear();
            _punchesQueued = 0;
            return;
        }

        while (Volatile.Read(ref _punchesQueued) > 0 && Interlocked.Exchange(ref _draining, 1) == 0)
        {
            try
            {
                while (true)
                {
                    (uint First, uint Count) piece;
                    _rw.EnterWriteLock();
                    try
                    {
                        if (_punchQueue.Count == 0)
                        {
                            break;
                        }

                        var run = _punchQueue[0];
                        piece = (run.First, Math.Min(pieceBlocks, run.Count));
                        if (piece.Count == run.Count)
                        {
                            _punchQueue.RemoveAt(0);
                        }
                        else
                        {
                            _punchQueue[0] = (run.First + piece.Count, run.Count - piece.Count);
                        }

                        _punchesQueued = _punchQueue.Count;
                        _punchingNow = piece;
                    }
                    finally
                    {
                        _rw.ExitWriteLock();
                    }

                    Punch(piece);
                    _rw.EnterWriteLock();
                    try
                    {
                        if (_punchingNow == piece && !_disposed)
                        {
                            MarkPunched(piece);
                        }

                        _punchingNow = null;
                    }
                    finally
                    {
                        _rw.ExitWriteLock();
                    }
                }
            }
            finally
            {
                Volatile.Write(ref _draining, 0);
            }
        }
    }

    private void Punch((uint First, uint Count) run)
    {
        try
        {
            _data.PunchHole((long)run.First * _blockSize, (long)run.Count * _blockSize);
        }
        catch (Exception ex) when (ex is IOException or ObjectDisposedException)
        {
            // Punching only returns space to the host early; the blocks are free either way.
        }
    }

    private void MarkPunched((uint First, uint Count) run)
    {
        for (uint p = run.First; p < run.First + run.Count; p++)
        {
            _blockRef[p] = 0;
            _blockStale[p] = false;
        }

        _freeBlocksBelowHighWater += run.Count;
    }

    private void WriteDeviceRecords()
    {
        foreach (var d in _dirtyDevices)
        {
            long capacity = _deviceGeometry.Covered(_deviceDepth - 1);
            if (d.Slot >= capacity)
            {
                DeepenTo(ref _deviceRoot, ref _deviceDepth, _deviceGeometry, map: false, d.Slot + 1L);
            }

            uint leaf = LeafForWrite(ref _deviceRoot, _deviceDepth, _deviceGeometry, map: false, d.Slot, out int pos);
            d.WriteRecord(_pages[leaf].AsSpan(Layout.HeaderSize + (pos * Layout.DeviceRecordSize), Layout.DeviceRecordSize));
        }

        _dirtyDevices.Clear();
    }
}
