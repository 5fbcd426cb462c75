using System.Diagnostics.CodeAnalysis;

namespace Dolly.Storage.Engine;

/// <summary>What a physical data block is to the <see cref="BlockAllocator"/>.</summary>
internal enum BlockPhase : byte
{
    /// <summary>Allocatable. Blocks at or above the high-water mark are free too, and read as zeros.</summary>
    Free,

    /// <summary>Referenced by at least one map entry in memory.</summary>
    Live,

    /// <summary>
    /// No map in memory references it, but the durable state may: it becomes free (or is punched) only once the commit
    /// that stopped referencing it is durable, so nothing is written into a block a crash could still need.
    /// </summary>
    Retiring,

    /// <summary>Freed, and queued for (or in) the hole punch that returns its space to the host; not allocatable until punched.</summary>
    Punching,
}

/// <summary>A run of consecutive physical blocks.</summary>
internal readonly record struct BlockRun(uint First, uint Count);

/// <summary>The blocks a prepared full commit stops referencing: freed once it is durable, handed back if it fails.</summary>
internal sealed class RetiredBlocks(List<uint> dropped, List<uint> replaced)
{
    /// <summary>Blocks deleted, trimmed or reverted away.</summary>
    public List<uint> Dropped { get; } = dropped;

    /// <summary>Blocks a copy-on-write write put a new block in place of.</summary>
    public List<uint> Replaced { get; } = replaced;
}

/// <summary>
/// The data blocks of a pool: their reference counts, their phase (<see cref="BlockPhase"/>), and the free space.
/// Counts are not stored on disk: <see cref="Adopt"/> takes them from a walk of every map at open, and they are
/// maintained incrementally afterwards.
/// <para>
/// Invariants: a block is handed out only from <see cref="BlockPhase.Free"/>, so never twice; it has references
/// exactly when it is <see cref="BlockPhase.Live"/>; the last reference to a block born in the current transaction
/// (<see cref="TxnClock"/>) frees it at once, to any other block makes it <see cref="BlockPhase.Retiring"/> until
/// <see cref="Reclaim"/>; <see cref="FreeBelowHighWater"/> counts the free blocks below <see cref="HighWater"/>.
/// A call that breaks a transition (a reference to a block that is not live) is a bug and throws.
/// </para>
/// <para>
/// Pure in-memory state: no I/O and no lock of its own; the pool's locks guard it (Pool.Io.cs: the pool lock held
/// alone, or shared together with the parts' lock). Only <see cref="QueuedPunches"/> may be read without them.
/// </para>
/// </summary>
internal sealed class BlockAllocator
{
    private readonly TxnClock _clock;
    private BlockEntry[] _entries = new BlockEntry[64];
    private List<uint> _retiring = [];
    private List<uint> _retiringReplaced = [];
    private readonly List<BlockRun> _punchQueue = [];
    private BlockRun? _punchingNow;
    private int _punchesQueued;

    // Allocation scans forward from the last block handed out, so sequential writes land on sequential blocks.
    private uint _cursor;

    public BlockAllocator(TxnClock clock) => _clock = clock;

    /// <summary>Blocks below this number have been used; the data file need not extend beyond it.</summary>
    public uint HighWater { get; private set; }

    /// <summary>Allocatable blocks below <see cref="HighWater"/>.</summary>
    public long FreeBelowHighWater { get; private set; }

    /// <summary>Free blocks whose disk space was kept for reuse rather than punched.</summary>
    public long KeptFree { get; private set; }

    /// <summary>Blocks allocated since the last full commit was prepared (or the last <see cref="Adopt"/>).</summary>
    public long AllocatedSinceCommit { get; private set; }

    /// <summary>
    /// True when a block was allocated or a reference to one dropped since the last full commit was prepared (or the
    /// last <see cref="Adopt"/>): the maps changed in a way only a full commit can make durable.
    /// </summary>
    public bool ChangedSinceCommit { get; private set; }

    /// <summary>Runs queued to be punched; may be read without the pool lock.</summary>
    public int QueuedPunches => Volatile.Read(ref _punchesQueued);

    /// <summary>The number of map entries referencing block <paramref name="p"/> (0 unless it is live).</summary>
    public int References(uint p) => _entries[p].Refs;

    /// <summary>The phase of block <paramref name="p"/>.</summary>
    public BlockPhase Phase(uint p) => p < HighWater ? _entries[p].Phase : BlockPhase.Free;

    /// <summary>True when live block <paramref name="p"/> was allocated in the current transaction: no durable state holds it.</summary>
    public bool IsFresh(uint p) => _entries[p].Born == _clock.Current && _entries[p].Phase == BlockPhase.Live;

    /// <summary>Live blocks (a walk of every block: for reports, not the data path).</summary>
    public long CountLive()
    {
        long n = 0;
        for (uint p = 0; p < HighWater; p++)
        {
            if (_entries[p].Phase == BlockPhase.Live)
            {
                n++;
            }
        }

        return n;
    }

    /// <summary>
    /// Replaces all state with the reference counts of a load (<paramref name="counts"/>[p] for every p below
    /// <paramref name="highWater"/>); unreferenced blocks are free and of unknown content. A run being punched right
    /// now (a rollback while another thread punches) stays <see cref="BlockPhase.Punching"/> until <see cref="FinishPunch"/>.
    /// </summary>
    public void Adopt(uint highWater, ReadOnlySpan<int> counts)
    {
        _entries = new BlockEntry[Math.Max(64, (long)highWater)];
        HighWater = highWater;
        FreeBelowHighWater = 0;
        KeptFree = 0;
        AllocatedSinceCommit = 0;
        ChangedSinceCommit = false;
        _cursor = 0;
        _retiring.Clear();
        _retiringReplaced.Clear();
        _punchQueue.Clear();
        _punchesQueued = 0;
        for (uint p = 0; p < highWater; p++)
        {
            ref var e = ref _entries[p];
            int c = p < counts.Length ? counts[(int)p] : 0;
            if (c > 0)
            {
                e.Refs = c;
                e.Phase = BlockPhase.Live;
            }
            else
            {
                e.Stale = true;
                FreeBelowHighWater++;
            }
        }

        if (_punchingNow is { } busy)
        {
            EnsureCapacity(busy.First + busy.Count - 1);
            for (uint p = busy.First; p < busy.First + busy.Count; p++)
            {
                ref var e = ref _entries[p];
                if (e.Phase == BlockPhase.Free && p < HighWater)
                {
                    FreeBelowHighWater--;
                }

                e.Phase = BlockPhase.Punching;
                e.Refs = 0;
            }
        }
    }

    /// <summary>
    /// Hands out a free block with one reference, born in the current transaction. <paramref name="zeroed"/> tells
    /// whether its bytes are known to be zero (never used, or punched), so a partial write need not write the rest.
    /// </summary>
    public uint Allocate(out bool zeroed)
    {
        uint p;
        if (FreeBelowHighWater > 0)
        {
            p = _cursor;
            while (true)
            {
                if (p >= HighWater)
                {
                    p = 0;
                }

                if (_entries[p].Phase == BlockPhase.Free)
                {
                    break;
                }

                p++;
            }

            FreeBelowHighWater--;
        }
        else
        {
            if (HighWater >= uint.MaxValue - 1)
            {
                throw new StorageException(new StorageError(StorageErrorCode.NoSpace, "the pool has reached its maximum of 2^32 data blocks"));
            }

            p = HighWater++;
            EnsureCapacity(p);
        }

        _cursor = p + 1;
        ref var e = ref _entries[p];
        if (e.Kept)
        {
            e.Kept = false;
            KeptFree--;
        }

        zeroed = !e.Stale;
        e.Stale = false;
        e.Refs = 1;
        e.Phase = BlockPhase.Live;
        e.Born = _clock.Current;
        AllocatedSinceCommit++;
        ChangedSinceCommit = true;
        return p;
    }

    /// <summary>One more map entry references live block <paramref name="p"/> (a shared leaf was copied).</summary>
    public void AddReference(uint p)
    {
        ref var e = ref _entries[p];
        if (e.Phase != BlockPhase.Live)
        {
            ThrowNotLive(p, e.Phase);
        }

        e.Refs++;
    }

    /// <summary>
    /// Drops a reference to live block <paramref name="p"/>; true when it was the last one. A block born in this
    /// transaction is then free at once; any other retires until the commit that drops it is durable.
    /// <paramref name="replaced"/> says a copy-on-write write put a new block in its place: its space is then kept
    /// for the next copy-on-write rather than returned to the host.
    /// </summary>
    public bool Release(uint p, bool replaced)
    {
        ref var e = ref _entries[p];
        if (e.Phase != BlockPhase.Live)
        {
            ThrowNotLive(p, e.Phase);
        }

        ChangedSinceCommit = true;
        if (--e.Refs > 0)
        {
            return false;
        }

        if (e.Born == _clock.Current)
        {
            e.Phase = BlockPhase.Free;
            e.Stale = true;
            FreeBelowHighWater++;
        }
        else
        {
            e.Phase = BlockPhase.Retiring;
            (replaced ? _retiringReplaced : _retiring).Add(p);
        }

        return true;
    }

    /// <summary>
    /// Called when a full commit is prepared: takes the blocks retired so far (that commit frees them) and restarts
    /// <see cref="AllocatedSinceCommit"/> and <see cref="ChangedSinceCommit"/>.
    /// </summary>
    public RetiredBlocks TakeRetired()
    {
        var taken = new RetiredBlocks(_retiring, _retiringReplaced);
        _retiring = [];
        _retiringReplaced = [];
        AllocatedSinceCommit = 0;
        ChangedSinceCommit = false;
        return taken;
    }

    /// <summary>The commit that took <paramref name="retired"/> failed: they wait for the next one.</summary>
    public void ReturnRetired(RetiredBlocks retired)
    {
        _retiring.AddRange(retired.Dropped);
        _retiringReplaced.AddRange(retired.Replaced);
    }

    /// <summary>
    /// The commit that took <paramref name="retired"/> is durable: its blocks are free. Replaced blocks, and dropped
    /// ones up to a reserve (<paramref name="minKept"/> blocks, or a quarter of those in use), keep their disk space,
    /// so copy-on-write overwrites reuse allocated file space instead of making the host file system allocate
    /// again; the rest are queued to be punched (<see cref="TryTakePunch"/>) and become free only once punched.
    /// </summary>
    public void Reclaim(RetiredBlocks retired, long minKept)
    {
        // Replaced blocks keep their space whatever the reserve: their replacement took new space, so keeping them
        // costs no more than an in-place overwrite would have, and the next copy-on-write of the same data lands on
        // allocated (often still cached) file space.
        foreach (uint p in retired.Replaced)
        {
            Keep(p);
        }

        var dropped = retired.Dropped;
        if (dropped.Count == 0)
        {
            return;
        }

        dropped.Sort();
        long used = HighWater - FreeBelowHighWater - dropped.Count;
        long reserve = Math.Max(minKept, used / 4);
        int i = 0;
        while (i < dropped.Count)
        {
            int j = i;
            while (j + 1 < dropped.Count && dropped[j + 1] == dropped[j] + 1)
            {
                j++;
            }

            int keep = (int)Math.Clamp(reserve - KeptFree, 0, j - i + 1);
            for (int k = i; k < i + keep; k++)
            {
                Keep(dropped[k]);
            }

            if (i + keep <= j)
            {
                for (int k = i + keep; k <= j; k++)
                {
                    ref var e = ref _entries[dropped[k]];
                    CheckRetiring(dropped[k], e.Phase);
                    e.Phase = BlockPhase.Punching;
                }

                _punchQueue.Add(new BlockRun(dropped[i + keep], (uint)(j - i - keep + 1)));
                Volatile.Write(ref _punchesQueued, _punchQueue.Count);
            }

            i = j + 1;
        }
    }

    private void Keep(uint p)
    {
        ref var e = ref _entries[p];
        CheckRetiring(p, e.Phase);
        e.Phase = BlockPhase.Free;
        e.Kept = true;
        e.Stale = true;
        KeptFree++;
        FreeBelowHighWater++;
    }

    /// <summary>
    /// Takes the next piece (at most <paramref name="maxBlocks"/> blocks) of the queued runs to punch; it is
    /// "being punched" until <see cref="FinishPunch"/>. False when nothing is queued.
    /// </summary>
    public bool TryTakePunch(uint maxBlocks, out BlockRun piece)
    {
        if (_punchQueue.Count == 0)
        {
            piece = default;
            return false;
        }

        var run = _punchQueue[0];
        piece = new BlockRun(run.First, Math.Min(maxBlocks, run.Count));
        if (piece.Count == run.Count)
        {
            _punchQueue.RemoveAt(0);
        }
        else
        {
            _punchQueue[0] = new BlockRun(run.First + piece.Count, run.Count - piece.Count);
        }

        Volatile.Write(ref _punchesQueued, _punchQueue.Count);
        _punchingNow = piece;
        return true;
    }

    /// <summary>
    /// The punch of <paramref name="piece"/> is done: its blocks are free and read as zeros. A piece no longer the
    /// one being punched (a later <see cref="TryTakePunch"/> superseded it) changes nothing.
    /// </summary>
    public void FinishPunch(BlockRun piece)
    {
        if (_punchingNow != piece)
        {
            return;
        }

        _punchingNow = null;
        for (uint p = piece.First; p < piece.First + piece.Count; p++)
        {
            ref var e = ref _entries[p];
            if (e.Phase != BlockPhase.Punching)
            {
                ThrowTransition(p, e.Phase, BlockPhase.Free);
            }

            e.Phase = BlockPhase.Free;
            e.Stale = false;
        }

        FreeBelowHighWater += piece.Count;
    }

    private void EnsureCapacity(uint p)
    {
        if (p >= _entries.Length)
        {
            long size = Math.Max((long)p + 1, (long)_entries.Length * 2);
            Array.Resize(ref _entries, (int)Math.Min(size, Array.MaxLength));
        }
    }

    private static void CheckRetiring(uint p, BlockPhase phase)
    {
        if (phase != BlockPhase.Retiring)
        {
            ThrowTransition(p, phase, BlockPhase.Free);
        }
    }

    [DoesNotReturn]
    private static void ThrowNotLive(uint p, BlockPhase phase) =>
        throw new InvalidOperationException($"data block {p} is {phase}, not live: a reference to it cannot be added or dropped");

    [DoesNotReturn]
    private static void ThrowTransition(uint p, BlockPhase from, BlockPhase to) =>
        throw new InvalidOperationException($"data block {p} cannot go from {from} to {to}");

    /// <summary>
    /// One block. <see cref="Refs"/> is non-zero exactly when <see cref="Phase"/> is live. <see cref="Stale"/>: the
    /// block's bytes in the data file may be non-zero (kept for reuse, freed within the transaction, or of unknown
    /// content after open). <see cref="Kept"/>: a free block whose disk space was kept rather than punched.
    /// </summary>
    private struct BlockEntry
    {
        public int Refs;
        public uint Born;
        public BlockPhase Phase;
        public bool Stale;
        public bool Kept;
    }
}
