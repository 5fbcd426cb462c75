using System.Diagnostics.CodeAnalysis;

namespace Dolly.Storage.Engine;

/// <summary>What a metadata page is to the <see cref="PageStore"/>.</summary>
internal enum PagePhase : byte
{
    /// <summary>Allocatable (on the free list), or never used.</summary>
    Free,

    /// <summary>Referenced by a tree pointer (a parent page or a root held by a device or the superblock).</summary>
    Live,

    /// <summary>Unreferenced in memory, but the durable state may reach it: free once the commit that dropped it is durable.</summary>
    Retiring,
}

/// <summary>
/// The metadata pages of a pool held in memory (every tree page is), with their reference counts and phases, the
/// free list, and what the next commit must write. Pages 0 and 1 are the superblocks and are never handed out.
/// <para>
/// Invariants: a page is handed out only from the free list (or above the high-water mark), so never twice; it has
/// references exactly when it is <see cref="PagePhase.Live"/>; a page born in the current transaction
/// (<see cref="TxnClock"/>) is the only kind changed in place, and its last reference frees it at once, while any
/// other page's last reference makes it <see cref="PagePhase.Retiring"/>: committed pages are never overwritten
/// while the durable superblock may reach them. A call that breaks a transition is a bug and throws.
/// </para>
/// <para>Pure in-memory state, no I/O and no lock of its own: the pool's locks guard it (Pool.Io.cs).</para>
/// </summary>
internal sealed class PageStore
{
    private const uint FirstTreePage = 2;

    private readonly TxnClock _clock;
    private byte[]?[] _bytes = new byte[]?[64];
    private PageEntry[] _entries = new PageEntry[64];
    private readonly Stack<uint> _free = new();
    private List<uint> _retiring = [];
    private readonly List<uint> _fresh = [];
    private readonly List<uint> _unwritten = [];

    public PageStore(TxnClock clock) => _clock = clock;

    /// <summary>Pages below this number have been used; the metadata file need not extend beyond it.</summary>
    public uint HighWater { get; private set; } = FirstTreePage;

    /// <summary>The free list (for check).</summary>
    public IEnumerable<uint> FreePages => _free;

    /// <summary>The bytes of a page held in memory.</summary>
    public byte[] this[uint id] => _bytes[id]!;

    /// <summary>True when page <paramref name="id"/> is held in memory.</summary>
    public bool IsLoaded(uint id) => id < HighWater && _bytes[id] is not null;

    /// <summary>Tree pointers reaching page <paramref name="id"/> (0 unless it is live).</summary>
    public int References(uint id) => _entries[id].Refs;

    public PagePhase Phase(uint id) => id < HighWater ? _entries[id].Phase : PagePhase.Free;

    /// <summary>True when live page <paramref name="id"/> was created in the current transaction: no durable state reaches it.</summary>
    public bool IsFresh(uint id) => _entries[id].Born == _clock.Current && _entries[id].Phase == PagePhase.Live;

    /// <summary>Pages in use or retiring, superblocks included (for reports).</summary>
    public long CountInUse()
    {
        long n = FirstTreePage;
        for (uint id = FirstTreePage; id < HighWater; id++)
        {
            n += _entries[id].Phase == PagePhase.Free ? 0 : 1;
        }

        return n;
    }

    /// <summary>Forgets everything: an empty store up to <paramref name="highWater"/>, to be filled by <see cref="Load"/> and <see cref="Adopt"/>.</summary>
    public void Reset(uint highWater)
    {
        HighWater = Math.Max(FirstTreePage, highWater);
        _bytes = new byte[]?[Math.Max(64, (long)HighWater)];
        _entries = new PageEntry[_bytes.Length];
        _free.Clear();
        _retiring.Clear();
        _fresh.Clear();
        _unwritten.Clear();
    }

    /// <summary>Holds a committed page read from disk (at open or rollback).</summary>
    public void Load(uint id, byte[] page) => _bytes[id] = page;

    /// <summary>Takes the reference counts a load computed; unreferenced pages go on the free list.</summary>
    public void Adopt(ReadOnlySpan<int> counts)
    {
        for (uint id = HighWater - 1; id >= FirstTreePage; id--)
        {
            int c = id < counts.Length ? counts[(int)id] : 0;
            ref var e = ref _entries[id];
            e.Born = 0;
            if (c > 0)
            {
                e.Refs = c;
                e.Phase = PagePhase.Live;
            }
            else
            {
                e.Refs = 0;
                e.Phase = PagePhase.Free;
                _free.Push(id);
            }
        }
    }

    /// <summary>A new, zeroed page with the given header, born in this transaction, with one reference.</summary>
    public uint Allocate(uint magic, int level)
    {
        uint id;
        if (_free.Count > 0)
        {
            id = _free.Pop();
        }
        else
        {
            if (HighWater == uint.MaxValue)
            {
                throw new StorageException(new StorageError(StorageErrorCode.NoSpace, "the pool's metadata has reached its maximum of 2^32 pages"));
            }

            id = HighWater++;
            EnsureCapacity(id);
        }

        ref var e = ref _entries[id];
        if (e.Phase != PagePhase.Free)
        {
            ThrowTransition(id, e.Phase, PagePhase.Live);
        }

        var page = _bytes[id] ?? new byte[Layout.PageSize];
        Array.Clear(page);
        Layout.WriteHeader(page, magic, id, level);
        _bytes[id] = page;
        e.Refs = 1;
        e.Born = _clock.Current;
        e.Phase = PagePhase.Live;
        _fresh.Add(id);
        return id;
    }

    /// <summary>One more tree pointer reaches live page <paramref name="id"/>.</summary>
    public void AddReference(uint id)
    {
        ref var e = ref _entries[id];
        if (e.Phase != PagePhase.Live)
        {
            ThrowTransition(id, e.Phase, PagePhase.Live);
        }

        e.Refs++;
    }

    /// <summary>Drops one of several references to page <paramref name="id"/>; the last one goes through <see cref="ReleaseLast"/>.</summary>
    public void DropReference(uint id)
    {
        ref var e = ref _entries[id];
        if (e.Phase != PagePhase.Live || e.Refs < 2)
        {
            ThrowTransition(id, e.Phase, PagePhase.Live);
        }

        e.Refs--;
    }

    /// <summary>
    /// Drops the last reference to page <paramref name="id"/> (its children are the caller's business): a page born in
    /// this transaction is free at once, any other retires until the commit that drops it is durable.
    /// </summary>
    public void ReleaseLast(uint id)
    {
        ref var e = ref _entries[id];
        if (e.Phase != PagePhase.Live || e.Refs != 1)
        {
            ThrowTransition(id, e.Phase, e.Born == _clock.Current ? PagePhase.Free : PagePhase.Retiring);
        }

        e.Refs = 0;
        if (e.Born == _clock.Current)
        {
            e.Phase = PagePhase.Free;
            _free.Push(id);
        }
        else
        {
            e.Phase = PagePhase.Retiring;
            _retiring.Add(id);
        }
    }

    /// <summary>
    /// Called when a full commit is prepared: seals and returns the pages it must write (those created in this
    /// transaction and still live, and those a failed commit left unwritten), each once.
    /// </summary>
    public List<(uint Id, byte[] Page)> TakeUnwritten()
    {
        var pages = new List<(uint, byte[])>(_fresh.Count + _unwritten.Count);
        var seen = new HashSet<uint>();
        foreach (uint id in _unwritten)
        {
            Add(id);
        }

        foreach (uint id in _fresh)
        {
            if (_entries[id].Born == _clock.Current)
            {
                Add(id);
            }
        }

        _fresh.Clear();
        _unwritten.Clear();
        return pages;

        void Add(uint id)
        {
            if (_entries[id].Phase == PagePhase.Live && seen.Add(id))
            {
                var page = _bytes[id]!;
                Layout.SealPage(page);
                pages.Add((id, page));
            }
        }
    }

    /// <summary>Called when a full commit is prepared: the pages retired so far, which that commit frees.</summary>
    public List<uint> TakeRetired()
    {
        var taken = _retiring;
        _retiring = [];
        return taken;
    }

    /// <summary>The commit that took these pages failed: the next one writes and frees them.</summary>
    public void ReturnToNextCommit(IEnumerable<uint> unwritten, List<uint> retired)
    {
        _unwritten.AddRange(unwritten);
        _retiring.AddRange(retired);
    }

    /// <summary>The commit that took <paramref name="retired"/> is durable: those pages are free.</summary>
    public void Reclaim(List<uint> retired)
    {
        foreach (uint id in retired)
        {
            ref var e = ref _entries[id];
            if (e.Phase != PagePhase.Retiring)
            {
                ThrowTransition(id, e.Phase, PagePhase.Free);
            }

            e.Phase = PagePhase.Free;
            _free.Push(id);
        }
    }

    private void EnsureCapacity(uint id)
    {
        if (id >= _bytes.Length)
        {
            long size = Math.Min(Math.Max((long)id + 1, (long)_bytes.Length * 2), Array.MaxLength);
            Array.Resize(ref _bytes, (int)size);
            Array.Resize(ref _entries, (int)size);
        }
    }

    [DoesNotReturn]
    private static void ThrowTransition(uint id, PagePhase from, PagePhase to) =>
        throw new InvalidOperationException($"metadata page {id} cannot go from {from} to {to} here");

    private struct PageEntry
    {
        public int Refs;
        public uint Born;
        public PagePhase Phase;
    }
}
