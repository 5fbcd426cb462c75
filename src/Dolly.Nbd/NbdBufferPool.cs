using System.Buffers;
using System.Diagnostics;
using System.Numerics;
using System.Runtime.InteropServices;

namespace Dolly.Nbd;

/// <summary>
/// The server-wide pool of request and reply payload buffers, and the server's memory budget.
/// <para>
/// Buffers live outside the GC heap (anonymous <c>mmap</c> on Linux), in power-of-two size classes from 4 KiB.
/// Every byte the pool has allocated counts against <see cref="Capacity"/>, whether it is rented or lying
/// free, and is counted at its class size, never at the size asked for: that is what the process really holds.
/// Free buffers beyond <see cref="RetainLimit"/> are unmapped at once and <see cref="ReleaseFree"/> unmaps the
/// rest, so memory goes back to the operating system, not to a shared pool that keeps it for the life of the
/// process (as <c>ArrayPool.Shared</c> would).
/// </para>
/// <para>
/// The capacity is split in two. Each connection has a small <see cref="Reservation"/> of its own
/// (<see cref="ReservePerConnection"/>), carved out of the capacity for every connection the server admits;
/// the rest is shared, first come first served. A rent that does not fit the shared part first unmaps free
/// buffers, then falls back to the connection's reservation, then waits for the shared part. So clients that
/// hold the whole shared part (large reads they never read the replies of) cannot stop another connection's
/// ordinary requests: those fit its reservation.
/// </para>
/// </summary>
internal sealed class NbdBufferPool : IDisposable
{
    /// <summary>The smallest class; smaller requests get a 4 KiB buffer (one page).</summary>
    public const int MinClass = 4096;

    /// <summary>What each connection can always rent, whatever the others hold.</summary>
    public const long ReservePerConnection = 1 << 20;

    private readonly Lock _lock = new();
    private readonly Stack<NbdBuffer>[] _free;
    private readonly LinkedList<Waiter> _waiters = new();
    private readonly long _sharedCapacity;
    private long _held;
    private long _reserved;
    private long _rented;
    private long _retained;
    private long _peakHeld;
    private bool _disposed;

    /// <summary>
    /// Creates a pool that never holds more than <paramref name="capacity"/> bytes, of which
    /// <paramref name="connections"/> reservations of <see cref="ReservePerConnection"/> are set aside.
    /// </summary>
    public NbdBufferPool(long capacity, int connections, int maxBuffer, long retainLimit)
    {
        _sharedCapacity = capacity - (connections * ReservePerConnection);
        Debug.Assert(ClassSize(maxBuffer) <= _sharedCapacity, "the shared part must fit the largest buffer");
        Capacity = capacity;
        RetainLimit = retainLimit;
        _free = new Stack<NbdBuffer>[ClassIndex(ClassSize(maxBuffer)) + 1];
        for (int i = 0; i < _free.Length; i++)
        {
            _free[i] = new Stack<NbdBuffer>();
        }
    }

    /// <summary>Bytes the pool may hold at once (rented and free together).</summary>
    public long Capacity { get; }

    /// <summary>Free bytes kept for reuse; beyond this, returned buffers are unmapped.</summary>
    public long RetainLimit { get; }

    /// <summary>Bytes allocated now, rented or free.</summary>
    public long HeldBytes
    {
        get
        {
            lock (_lock)
            {
                return _held;
            }
        }
    }

    /// <summary>Bytes rented now.</summary>
    public long RentedBytes
    {
        get
        {
            lock (_lock)
            {
                return _rented;
            }
        }
    }

    /// <summary>The most bytes held at any time since the pool was created.</summary>
    public long PeakHeldBytes
    {
        get
        {
            lock (_lock)
            {
                return _peakHeld;
            }
        }
    }

    /// <summary>The size actually allocated (and accounted) for a buffer of <paramref name="length"/> bytes.</summary>
    public static int ClassSize(int length) => length <= MinClass ? MinClass : (int)BitOperations.RoundUpToPowerOf2((uint)length);

    private static int ClassIndex(int classSize) => BitOperations.Log2((uint)classSize) - BitOperations.Log2(MinClass);

    // Bytes counted against the shared part: everything held except buffers rented on a reservation.
    private long Shared => _held - _reserved;

    /// <summary>
    /// Rents a buffer of at least <paramref name="length"/> bytes for a connection, waiting while the shared
    /// budget is used up and the connection's reservation cannot hold it. Cancellation removes the wait.
    /// </summary>
    public ValueTask<NbdBuffer> RentAsync(int length, Reservation reservation, CancellationToken cancellationToken)
    {
        int size = ClassSize(length);
        Waiter waiter;
        lock (_lock)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            if (size > _sharedCapacity)
            {
                throw new ArgumentOutOfRangeException(nameof(length), $"a buffer of {length} bytes exceeds the pool's budget of {_sharedCapacity}");
            }

            if (_waiters.Count == 0 && TryTake(size) is { } buffer)
            {
                return ValueTask.FromResult(buffer);
            }

            if (reservation.Used + size <= ReservePerConnection)
            {
                return ValueTask.FromResult(TakeReserved(size, reservation));
            }

            waiter = new Waiter(size, reservation);
            waiter.Node = _waiters.AddLast(waiter);
        }

        if (cancellationToken.CanBeCanceled)
        {
            waiter.Registration = cancellationToken.Register(
                static s =>
                {
                    var (pool, w) = ((NbdBufferPool, Waiter))s!;
                    pool.Cancel(w);
                },
                (this, waiter));
        }

        return new ValueTask<NbdBuffer>(waiter.Completion.Task);
    }

    /// <summary>Gives a buffer back; it is kept for reuse or unmapped, and waiting renters are served.</summary>
    public void Return(NbdBuffer buffer)
    {
        List<NbdBuffer>? unmap = null;
        lock (_lock)
        {
            _rented -= buffer.Length;
            if (buffer.ChargedTo is { } reservation)
            {
                reservation.Used -= buffer.Length;
                _reserved -= buffer.Length;
                buffer.ChargedTo = null;
            }

            // Free, the buffer counts against the shared part: keep it only if that part has room for it.
            if (_disposed || _retained + buffer.Length > RetainLimit || Shared > _sharedCapacity)
            {
                _held -= buffer.Length;
                (unmap ??= []).Add(buffer);
            }
            else
            {
                _free[ClassIndex(buffer.Length)].Push(buffer);
                _retained += buffer.Length;
            }

            ServeWaiters(ref unmap);
        }

        Unmap(unmap);
    }

    /// <summary>Unmaps every free buffer (the server calls this when its last connection ends).</summary>
    public void ReleaseFree()
    {
        List<NbdBuffer>? unmap = null;
        lock (_lock)
        {
            foreach (var stack in _free)
            {
                while (stack.TryPop(out var b))
                {
                    (unmap ??= []).Add(b);
                    _held -= b.Length;
                    _retained -= b.Length;
                }
            }
        }

        Unmap(unmap);
    }

    public void Dispose()
    {
        lock (_lock)
        {
            _disposed = true;
            foreach (var w in _waiters)
            {
                w.Completion.TrySetException(new ObjectDisposedException(nameof(NbdBufferPool)));
            }

            _waiters.Clear();
        }

        // Rented buffers are unmapped as they come back (Return sees _disposed).
        ReleaseFree();
    }

    // Called under _lock. Reuses a free buffer of the class, else allocates within the shared part, unmapping
    // free buffers of other classes when that makes room; null when rented buffers fill the shared part.
    private NbdBuffer? TryTake(int size)
    {
        if (_free[ClassIndex(size)].TryPop(out var reused))
        {
            _retained -= size;
            _rented += size;
            return reused;
        }

        if (Shared + size > _sharedCapacity && Shared - _retained + size <= _sharedCapacity)
        {
            for (int i = _free.Length - 1; i >= 0 && Shared + size > _sharedCapacity; i--)
            {
                while (Shared + size > _sharedCapacity && _free[i].TryPop(out var evicted))
                {
                    _held -= evicted.Length;
                    _retained -= evicted.Length;
                    evicted.Unmap();
                }
            }
        }

        if (Shared + size > _sharedCapacity)
        {
            return null;
        }

        return Allocate(size);
    }

    // Called under _lock, when the reservation has room: never waits. A free buffer of the class moves from
    // the shared part to the reservation.
    private NbdBuffer TakeReserved(int size, Reservation reservation)
    {
        NbdBuffer buffer;
        if (_free[ClassIndex(size)].TryPop(out var reused))
        {
            _retained -= size;
            _rented += size;
            buffer = reused;
        }
        else
        {
            buffer = Allocate(size);
        }

        buffer.ChargedTo = reservation;
        reservation.Used += size;
        _reserved += size;
        return buffer;
    }

    private NbdBuffer Allocate(int size)
    {
        var buffer = NbdBuffer.Allocate(size);
        _held += size;
        _rented += size;
        _peakHeld = Math.Max(_peakHeld, _held);
        return buffer;
    }

    // Called under _lock. The shared part is first come, first served: a large request at the head is not
    // overtaken by small ones forever. A waiter whose own reservation has room again (its connection's buffers
    // came back) takes from it, whatever its place in the queue: that costs the others nothing.
    private void ServeWaiters(ref List<NbdBuffer>? unmap)
    {
        while (_waiters.First is { } head && TryTake(head.Value.Size) is { } buffer)
        {
            Grant(head.Value, buffer, ref unmap);
        }

        for (var node = _waiters.First; node is not null;)
        {
            var next = node.Next;
            var w = node.Value;
            if (w.Reservation.Used + w.Size <= ReservePerConnection)
            {
                Grant(w, TakeReserved(w.Size, w.Reservation), ref unmap);
            }

            node = next;
        }
    }

    private void Grant(Waiter waiter, NbdBuffer buffer, ref List<NbdBuffer>? unmap)
    {
        _waiters.Remove(waiter.Node!);
        waiter.Node = null;
        waiter.Registration.Unregister();
        if (!waiter.Completion.TrySetResult(buffer))
        {
            // Cannot happen while the waiter was still queued (cancellation dequeues under the lock); undo.
            _rented -= buffer.Length;
            _held -= buffer.Length;
            if (buffer.ChargedTo is { } r)
            {
                r.Used -= buffer.Length;
                _reserved -= buffer.Length;
                buffer.ChargedTo = null;
            }

            (unmap ??= []).Add(buffer);
        }
    }

    private void Cancel(Waiter waiter)
    {
        List<NbdBuffer>? unmap = null;
        lock (_lock)
        {
            if (waiter.Node is null)
            {
                // Already granted: the renter owns the buffer.
                return;
            }

            _waiters.Remove(waiter.Node);
            waiter.Node = null;
            waiter.Completion.TrySetCanceled();

            // The cancelled waiter may have been the head holding up smaller requests behind it.
            ServeWaiters(ref unmap);
        }

        Unmap(unmap);
    }

    private static void Unmap(List<NbdBuffer>? buffers)
    {
        if (buffers is not null)
        {
            foreach (var b in buffers)
            {
                b.Unmap();
            }
        }
    }

    /// <summary>One connection's share set aside in the pool; its fields change only under the pool's lock.</summary>
    internal sealed class Reservation
    {
        public long Used { get; set; }
    }

    private sealed class Waiter(int size, Reservation reservation)
    {
        public int Size { get; } = size;

        public Reservation Reservation { get; } = reservation;

        public TaskCompletionSource<NbdBuffer> Completion { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public LinkedListNode<Waiter>? Node { get; set; }

        public CancellationTokenRegistration Registration { get; set; }
    }
}

/// <summary>
/// A page-aligned buffer outside the GC heap. Unmapping gives its pages back to the operating system at
/// once (the GC would keep a large array's memory until a full collection, and often after it).
/// </summary>
internal sealed unsafe partial class NbdBuffer : MemoryManager<byte>
{
    private const int ProtRead = 1;
    private const int ProtWrite = 2;
    private const int MapPrivate = 2;
    private const int MapAnonymousLinux = 0x20;

    private byte* _pointer;

    private NbdBuffer(byte* pointer, int length)
    {
        _pointer = pointer;
        Length = length;
    }

    /// <summary>The buffer's size (its class size).</summary>
    public int Length { get; }

    /// <summary>The reservation it is rented on, or null when it counts against the shared part.</summary>
    internal NbdBufferPool.Reservation? ChargedTo { get; set; }

    public static NbdBuffer Allocate(int length)
    {
        byte* p;
        if (OperatingSystem.IsLinux())
        {
            p = (byte*)Mmap(null, (nuint)length, ProtRead | ProtWrite, MapPrivate | MapAnonymousLinux, -1, 0);
            if (p == (byte*)-1)
            {
                throw new InsufficientMemoryException($"mmap of {length} bytes failed (errno {Marshal.GetLastPInvokeError()})");
            }
        }
        else
        {
            p = (byte*)NativeMemory.AlignedAlloc((nuint)length, 4096);
        }

        return new NbdBuffer(p, length);
    }

    public override Span<byte> GetSpan()
    {
        ObjectDisposedException.ThrowIf(_pointer is null, this);
        return new Span<byte>(_pointer, Length);
    }

    public override MemoryHandle Pin(int elementIndex = 0)
    {
        ObjectDisposedException.ThrowIf(_pointer is null, this);
        return new MemoryHandle(_pointer + elementIndex);
    }

    public override void Unpin()
    {
        // Native memory never moves.
    }

    /// <summary>Gives the pages back. Only the pool calls this, once no one uses the buffer.</summary>
    public void Unmap()
    {
        var p = _pointer;
        _pointer = null;
        if (p is null)
        {
            return;
        }

        if (OperatingSystem.IsLinux())
        {
            _ = Munmap(p, (nuint)Length);
        }
        else
        {
            NativeMemory.AlignedFree(p);
        }
    }

    protected override void Dispose(bool disposing)
    {
        // Lifetime belongs to the pool (Unmap); MemoryManager's IDisposable is not the owner's handle here.
    }

    [LibraryImport("libc", EntryPoint = "mmap", SetLastError = true)]
    private static partial void* Mmap(void* address, nuint length, int protection, int flags, int fd, nint offset);

    [LibraryImport("libc", EntryPoint = "munmap", SetLastError = true)]
    private static partial int Munmap(void* address, nuint length);
}
