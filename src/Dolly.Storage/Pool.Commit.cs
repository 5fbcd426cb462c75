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
    /// Frees the blocks the last commit stopped referencing. Up to a reserve (256 MiB, or a quarter of the data
    /// in use) they keep their disk space, so that copy-on-write overwrites reuse allocated file space
    /// instead of making the host file system allocate again; beyond it they are hole-punched and the space
    /// goes back to the host.
    /// </summary>
    private void ReleasePendingBlocks()
    {
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

            bool keep = _keptFreeBlocks + (j - i + 1) <= reserve;
            for (int k = i; k <= j; k++)
            {
                _blockRef[_pendingBlocks[k]] = 0;
                _blockKept[_pendingBlocks[k]] = keep;
                _blockStale[_pendingBlocks[k]] = keep;
            }

            if (keep)
            {
                _keptFreeBlocks += j - i + 1;
            }
            else
            {
                try
                {
                    _data.PunchHole((long)_pendingBlocks[i] * _blockSize, (long)(j - i + 1) * _blockSize);
                }
                catch (IOException)
                {
                    // Punching only returns space to the host file system early; the blocks are free either way.
                }
            }

            i = j + 1;
        }

        _freeBlocksBelowHighWater += _pendingBlocks.Count;
        _pendingBlocks.Clear();
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
