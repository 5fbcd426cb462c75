using Dolly.Storage.Engine;

namespace Dolly.Storage;

// Commits. Two kinds, both run by one committer at a time (the holder of _commitGate):
//
// A full commit seals a new state. Under the pool's write lock it is prepared: the changed device records are
// written into their pages, the overlay's sectors (in-place overwrites not yet in any batch) are laid out as a
// journal batch of the new generation, the fresh pages are sealed and the transaction number moves on, so
// nothing prepared is modified afterwards (later writes copy those pages and treat those blocks as committed).
// Then, with no lock held, so reads and writes of every volume go on, it is made durable, each step before the
// next: the batch is written and the journal synced; the data file synced (every block the new state
// references holds its bytes); the pages written and synced; the superblock written into the slot the durable
// state does not use and synced. A crash before the last sync leaves the previous superblock, whose pages were
// never overwritten, and a torn superblock fails its checksum. Finally, under the lock again, pages and blocks
// the previous state referenced become reusable and the batch's sectors are written to their blocks.
//
// A journal-only commit makes in-place overwrites durable without a new state: when nothing since the last
// full commit allocated or freed a block, a flush writes the overlay's sectors as one batch of the durable
// generation, syncs the journal (one sync), then writes the sectors to their blocks. After a crash, opening the
// pool replays the complete batches that follow the superblock's journal start and carry its generation.
//
// Group commit: a flush waits for the committer; when its turn comes, a commit that started after its writes
// may already have covered them (then it returns at once), otherwise it runs one covering every change so far.
public sealed partial class Pool
{
    private bool _dirty;
    private bool _structDirty;
    private uint _deviceRoot;
    private int _deviceDepth = 1;
    private ulong _generation;

    // Generations are never reused: every full commit attempt takes a new one, and after opening the first skips one
    // (an attempt that a crash interrupted may have used the next), so a journal record's generation names exactly
    // one attempt. The superblock goes into the slot the durable one does not occupy.
    private ulong _lastGeneration;
    private int _durableSlot;
    private readonly byte[] _superPage = new byte[Layout.PageSize];
    private readonly SemaphoreSlim _commitGate = new(1, 1);
    private long _changeSeq;
    private long _durableSeq;
    private ulong _batchIds;
    private int _commitWaiters;

    /// <summary>Flushes waiting for the committer (tests use it to line flushes up behind a commit).</summary>
    internal int CommitWaiters => Volatile.Read(ref _commitWaiters);

    // True while every record after the durable superblock's journal start belongs to a batch that completed.
    // A failed commit of either kind may have left part of a batch behind, so the next commit must be a full one
    // (a new generation, whose records cannot be mistaken for those).
    private bool _journalClean;

    private Journal _journal = null!;
    private Overlay _overlay = null!;

    /// <summary>Overlay sectors that make a write start a flush on its own (an eighth of the journal).</summary>
    private int _overlayFlushSectors;

    private void MarkDirty(DeviceState d)
    {
        _devices.MarkDirty(d);
        Touch();
    }

    /// <summary>Records that the in-memory state changed: a later flush must cover it.</summary>
    private void Touch()
    {
        _dirty = true;
        _changeSeq++;
    }

    /// <summary>What one commit writes, captured when it was prepared.</summary>
    private sealed class CommitPlan
    {
        public required long Covers { get; init; }

        public JournalBatch? Batch { get; init; }

        public ulong BatchId { get; init; }

        public Superblock? Super { get; init; }

        public List<(uint Id, byte[] Page)> Pages { get; init; } = [];

        public bool DataDirty { get; init; }

        public int Slot { get; init; }

        public List<uint> RetiredPages { get; init; } = [];

        public RetiredBlocks? Retired { get; init; }

        public bool Full => Super is not null;
    }

    /// <summary>Makes every completed write durable: joins or runs a group commit.</summary>
    public Result Flush()
    {
        long target;
        _rw.EnterReadLock();
        try
        {
            ThrowIfDisposed();
            lock (_state)
            {
                target = _changeSeq;
            }
        }
        finally
        {
            _rw.ExitReadLock();
        }

        Interlocked.Increment(ref _commitWaiters);
        _commitGate.Wait();
        Interlocked.Decrement(ref _commitWaiters);
        try
        {
            if (Volatile.Read(ref _durableSeq) >= target)
            {
                return Result.Ok;
            }

            CommitPlan? plan;
            _rw.EnterWriteLock();
            try
            {
                ThrowIfDisposed();
                plan = Prepare(journalOnlyAllowed: true);
            }
            finally
            {
                _rw.ExitWriteLock();
            }

            if (plan is null)
            {
                return Result.Ok;
            }

            var r = MakeDurable(plan);
            _rw.EnterWriteLock();
            try
            {
                Finish(plan, r);
            }
            finally
            {
                _rw.ExitWriteLock();
            }

            return r;
        }
        finally
        {
            _commitGate.Release();
            DrainPunches();
        }
    }

    /// <summary>A full commit made durable before it returns; the caller holds the commit gate and the write lock.</summary>
    private Result CommitCore()
    {
        var plan = Prepare(journalOnlyAllowed: false);
        if (plan is null)
        {
            return Result.Ok;
        }

        var r = MakeDurable(plan);
        Finish(plan, r);
        return r;
    }

    /// <summary>
    /// Captures what the next commit writes, or null when nothing needs to be made durable. Holds the write lock.
    /// </summary>
    private CommitPlan? Prepare(bool journalOnlyAllowed)
    {
        long covers = _changeSeq;
        if (!_dirty && _overlay.DirtySectors == 0)
        {
            _durableSeq = Math.Max(_durableSeq, covers);
            return null;
        }

        int sectors = _overlay.DirtySectors;
        long advance = sectors > 0 ? _journal.Advance(sectors) : 0;
        if (journalOnlyAllowed && _journalClean && !_structDirty && !_blocks.ChangedSinceCommit && _journal.Live + advance <= _journal.Size / 2)
        {
            if (sectors == 0)
            {
                // Only pages copied for checksums the journal already holds: nothing to make durable yet.
                _durableSeq = Math.Max(_durableSeq, covers);
                return null;
            }

            ulong id = ++_batchIds;
            return new CommitPlan { Covers = covers, Batch = BuildBatch(_generation, id), BatchId = id };
        }

        if (_journal.Live + advance > _journal.Size)
        {
            // Cannot happen while the overlay stays below its bound and journal-only commits below half the ring.
            throw new StorageException($"pool '{_directory}': the journal has no room for the overlay's {sectors} sectors");
        }

        WriteDeviceRecords();
        ulong generation = ++_lastGeneration;
        ulong batchId = sectors > 0 ? ++_batchIds : 0;
        ulong start = _journal.Tail;
        ulong startSeq = _journal.NextSeq;
        var batch = sectors > 0 ? BuildBatch(generation, batchId) : null;
        var plan = new CommitPlan
        {
            Covers = covers,
            Batch = batch,
            BatchId = batchId,
            Slot = 1 - _durableSlot,
            Super = new Superblock(
                _blockSize, _poolId, generation, _deviceRoot, _deviceDepth, _devices.NextId, _pages.HighWater, _blocks.HighWater,
                start, startSeq, (uint)(_journal.Size / Layout.PageSize)),
            Pages = _pages.TakeUnwritten(),
            DataDirty = _dataDirty,
            RetiredPages = _pages.TakeRetired(),
            Retired = _blocks.TakeRetired(),
        };
        _clock.Advance();
        _dirty = false;
        _structDirty = false;
        _dataDirty = false;
        return plan;
    }

    private JournalBatch BuildBatch(ulong generation, ulong batchId)
    {
        var items = _overlay.TakeDirty(batchId);
        return _journal.Build(generation, items.Count, (i, target) =>
        {
            var (block, sector, device, lb, bytes) = items[i];
            bytes.CopyTo(target);
            return new JournalEntry(device, lb, block, sector, Layout.Checksum(bytes));
        });
    }

    /// <summary>The durable part of a commit, in order; runs without the pool lock (or under it, for <see cref="CommitCore"/>).</summary>
    private Result MakeDurable(CommitPlan plan)
    {
        try
        {
            if (plan.Super is not { } super)
            {
                WriteJournal(plan);
                return Result.Ok;
            }

            // The journal batch, the data and the pages only have to be durable before the superblock; where the
            // file system allows it they are synced at the same time, so the commit waits for one sync, not three.
            if (_fs.ConcurrentFiles && (plan.Batch is not null || plan.DataDirty))
            {
                var journal = plan.Batch is null ? Task.CompletedTask : Task.Run(() => WriteJournal(plan));
                var data = plan.DataDirty ? Task.Run(_data.Sync) : Task.CompletedTask;
                WritePages(plan);
                try
                {
                    Task.WaitAll(journal, data);
                }
                catch (AggregateException ex) when (ex.InnerExceptions.FirstOrDefault(e => e is IOException) is IOException io)
                {
                    throw io;
                }
            }
            else
            {
                WriteJournal(plan);
                if (plan.DataDirty)
                {
                    _data.Sync();
                }

                WritePages(plan);
            }

            super.WriteTo(_superPage);
            _meta.Write((long)plan.Slot * Layout.PageSize, _superPage);
            _meta.Sync();
            return Result.Ok;
        }
        catch (IOException ex)
        {
            // Nothing the durable state references was touched; the changes stay in memory and the next flush
            // retries them (as a full commit).
            return IsNoSpace(ex)
                ? Result.Fail(StorageErrorCode.NoSpace, $"pool '{_directory}': no space left on the disk to commit metadata; unflushed writes are kept in memory and the flush can be retried")
                : Result.Fail(StorageErrorCode.IoError, $"pool '{_directory}': committing metadata failed: {ex.Message}");
        }
    }

    private void WriteJournal(CommitPlan plan)
    {
        if (plan.Batch is { } batch)
        {
            _journal.Write(batch);
            _journal.Sync();
        }
    }

    private void WritePages(CommitPlan plan)
    {
        foreach (var (id, page) in plan.Pages)
        {
            _meta.Write((long)id * Layout.PageSize, page);
        }

        _meta.Sync();
    }

    /// <summary>After the durable part, under the write lock: adopt the new state, or put the plan back for a retry.</summary>
    private void Finish(CommitPlan plan, Result result)
    {
        if (!result.IsOk)
        {
            _journalClean = false;
            if (plan.BatchId != 0)
            {
                _overlay.Abort(plan.BatchId);
                _journal.Abandoned();
            }

            if (plan.Full)
            {
                _pages.ReturnToNextCommit(plan.Pages.Select(p => p.Id), plan.RetiredPages);
                _blocks.ReturnRetired(plan.Retired!);
                _dataDirty |= plan.DataDirty;
                _structDirty = true;
                _dirty = true;
            }

            return;
        }

        if (plan.Super is { } super)
        {
            _generation = super.Generation;
            _durableSlot = plan.Slot;
            _journal.DurableStart = super.JournalStart;
            _journalClean = true;
            _pages.Reclaim(plan.RetiredPages);

            _blocks.Reclaim(plan.Retired!, MinKeptBlocks * 65536L / _blockSize);
        }

        if (plan.Batch is { } done)
        {
            _journal.Completed(done);
            _overlay.Complete(plan.BatchId, WriteSectorsInPlace);
        }

        _durableSeq = Math.Max(_durableSeq, plan.Covers);
    }

    /// <summary>Writes a journaled sector to its block; false (it stays in the overlay) when the write fails.</summary>
    private bool WriteSectorsInPlace(uint block, int sector, byte[] bytes)
    {
        try
        {
            _data.Write(((long)block * _blockSize) + ((long)sector * Layout.SectorSize), bytes);
            _dataDirty = true;
            return true;
        }
        catch (IOException)
        {
            return false;
        }
    }

    // At most one thread punches at a time (the allocator holds the queue; the punch itself runs outside the lock).
    private int _draining;

    /// <summary>
    /// Punches the blocks the allocator queued (<see cref="BlockAllocator.Reclaim"/>) in pieces of at most 64 MiB
    /// without holding the pool lock, because punching a gigabyte takes long enough to stall every reader and
    /// writer; each piece becomes allocatable once punched. Called by whichever thread just committed, after
    /// releasing the lock; when <paramref name="lockHeld"/> (closing the pool) everything is punched at once.
    /// </summary>
    private void DrainPunches(bool lockHeld = false)
    {
        if (_blocks.QueuedPunches == 0)
        {
            return;
        }

        if (lockHeld)
        {
            while (_blocks.TryTakePunch(uint.MaxValue, out var run))
            {
                Punch(run);
                _blocks.FinishPunch(run);
            }

            return;
        }

        uint pieceBlocks = (uint)Math.Max(1, (64 << 20) / _blockSize);
        while (_blocks.QueuedPunches > 0 && Interlocked.Exchange(ref _draining, 1) == 0)
        {
            try
            {
                while (true)
                {
                    BlockRun piece;
                    _rw.EnterWriteLock();
                    try
                    {
                        if (!_blocks.TryTakePunch(pieceBlocks, out piece))
                        {
                            break;
                        }
                    }
                    finally
                    {
                        _rw.ExitWriteLock();
                    }

                    Punch(piece);
                    _rw.EnterWriteLock();
                    try
                    {
                        if (!_disposed)
                        {
                            _blocks.FinishPunch(piece);
                        }
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

    private void Punch(BlockRun run)
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

    private void WriteDeviceRecords()
    {
        foreach (var d in _devices.TakeDirty())
        {
            long capacity = _tree.DeviceGeometry.Covered(_deviceDepth - 1);
            if (d.Slot >= capacity)
            {
                _tree.DeepenTo(ref _deviceRoot, ref _deviceDepth, _tree.DeviceGeometry, map: false, d.Slot + 1L);
            }

            uint leaf = _tree.LeafForWrite(ref _deviceRoot, _deviceDepth, _tree.DeviceGeometry, map: false, d.Slot, out int pos);
            d.WriteRecord(_pages[leaf].AsSpan(Layout.HeaderSize + (pos * Layout.DeviceRecordSize), Layout.DeviceRecordSize));
        }
    }
}
