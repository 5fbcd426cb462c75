using System.Threading.Channels;

namespace Dolly.Nbd;

/// <summary>
/// The one send path of a connection. Workers post whole replies (<see cref="Begin"/>); one send loop
/// (<see cref="RunAsync"/>) takes everything posted since its last write and writes it in order, so replies
/// that complete while a write is in progress leave together in the next one.
/// <para>
/// Headers, error chunks and read data up to <see cref="CopyLimit"/> are copied into per-connection 64 KiB
/// send blocks, reused from batch to batch: no array is allocated per reply, and many small replies become one
/// socket write. Larger read data is sent straight from the pooled buffer it was read into. A reply's
/// buffer, its share of the connection's byte budget and its request slot are released only once it is
/// written, so a client that does not read its replies holds at most its own budget and request count.
/// </para>
/// </summary>
internal sealed class NbdReplySender
{
    /// <summary>Read data up to this size is copied into a send block (cheaper than a write of its own).</summary>
    public const int CopyLimit = 4096;

    private const int BlockSize = 64 << 10;
    private const int SpareBlocks = 2;

    private readonly Lock _lock = new();
    private readonly Channel<bool> _wake = Channel.CreateBounded<bool>(new BoundedChannelOptions(1)
    {
        FullMode = BoundedChannelFullMode.DropWrite,
        SingleReader = true,
    });

    private readonly NbdBufferPool _pool;
    private readonly ByteBudget _budget;
    private readonly Action<int> _replied;
    private readonly TimeProvider _time;
    private readonly Stack<byte[]> _spare = new();
    private Batch _filling = new();
    private Batch _sending = new();
    private bool _closed;
    private bool _writing;
    private long _lastProgress;

    /// <param name="pool">Where reply buffers go back once written.</param>
    /// <param name="budget">The connection's byte budget, released as replies are written.</param>
    /// <param name="replied">Called with the number of replies written (or dropped), to free their request slots.</param>
    /// <param name="time">Clock for <see cref="StalledFor"/>.</param>
    public NbdReplySender(NbdBufferPool pool, ByteBudget budget, Action<int> replied, TimeProvider time)
    {
        _pool = pool;
        _budget = budget;
        _replied = replied;
        _time = time;
        _lastProgress = time.GetTimestamp();
    }

    /// <summary>
    /// How long replies have been waiting without a byte going out (a client that stopped reading), or null
    /// when nothing is waiting.
    /// </summary>
    public TimeSpan? StalledFor()
    {
        lock (_lock)
        {
            bool waiting = _writing || _filling.Replies > 0;
            return waiting ? _time.GetElapsedTime(_lastProgress) : null;
        }
    }

    /// <summary>Starts a reply; everything written to it leaves together, in order, when it is disposed.</summary>
    public ReplyWriter Begin() => new(this);

    /// <summary>Stops accepting replies; later ones are dropped (their resources released at once).</summary>
    public void Close()
    {
        Batch dropped;
        lock (_lock)
        {
            _closed = true;
            dropped = _filling;
            _filling = new Batch();
            _wake.Writer.TryComplete();
        }

        Release(dropped);
    }

    /// <summary>Writes posted replies until <see cref="Close"/> or a write fails; a failure closes the sender.</summary>
    public async Task RunAsync(Stream stream, CancellationToken cancellationToken)
    {
        try
        {
            while (await _wake.Reader.WaitToReadAsync(cancellationToken).ConfigureAwait(false))
            {
                _wake.Reader.TryRead(out _);
                while (TakeBatch() is { } batch)
                {
                    try
                    {
                        foreach (var segment in batch.Segments)
                        {
                            await stream.WriteAsync(segment, cancellationToken).ConfigureAwait(false);
                            Progress();
                        }

                        await stream.FlushAsync(cancellationToken).ConfigureAwait(false);
                    }
                    finally
                    {
                        lock (_lock)
                        {
                            _writing = false;
                        }

                        Release(batch);
                    }
                }
            }
        }
        finally
        {
            Close();
        }
    }

    private void Progress()
    {
        lock (_lock)
        {
            _lastProgress = _time.GetTimestamp();
        }
    }

    private Batch? TakeBatch()
    {
        lock (_lock)
        {
            _filling.CloseOpenSegment();
            if (_closed || (_filling.Replies == 0 && _filling.Segments.Count == 0))
            {
                return null;
            }

            (_filling, _sending) = (_sending, _filling);
            _writing = true;
            _lastProgress = _time.GetTimestamp();
            return _sending;
        }
    }

    // Releases what a written (or dropped) batch held; its send blocks are kept for the next batches.
    private void Release(Batch batch)
    {
        foreach (var owner in batch.Owners)
        {
            _pool.Return(owner);
        }

        if (batch.Budget > 0)
        {
            _budget.Release(batch.Budget);
        }

        int replies = batch.Replies;
        lock (_lock)
        {
            foreach (var block in batch.Blocks)
            {
                if (_spare.Count < SpareBlocks)
                {
                    _spare.Push(block);
                }
            }
        }

        batch.Clear();
        if (replies > 0)
        {
            _replied(replies);
        }
    }

    private byte[] RentBlock() => _spare.TryPop(out var b) ? b : new byte[BlockSize];

    /// <summary>The replies posted since the last write, as the segments to write and what to release after.</summary>
    private sealed class Batch
    {
        private byte[]? _block;
        private int _start;
        private int _pos;

        public List<ReadOnlyMemory<byte>> Segments { get; } = [];

        public List<byte[]> Blocks { get; } = [];

        public List<NbdBuffer> Owners { get; } = [];

        public long Budget { get; set; }

        public int Replies { get; set; }

        public void Append(NbdReplySender sender, ReadOnlySpan<byte> data)
        {
            while (!data.IsEmpty)
            {
                if (_block is null || _pos == _block.Length)
                {
                    CloseOpenSegment();
                    _block = sender.RentBlock();
                    Blocks.Add(_block);
                    _start = _pos = 0;
                }

                int n = Math.Min(data.Length, _block.Length - _pos);
                data[..n].CopyTo(_block.AsSpan(_pos));
                _pos += n;
                data = data[n..];
            }
        }

        public void Reference(ReadOnlyMemory<byte> data)
        {
            CloseOpenSegment();
            Segments.Add(data);
        }

        public void CloseOpenSegment()
        {
            if (_block is not null && _pos > _start)
            {
                Segments.Add(_block.AsMemory(_start, _pos - _start));
                _start = _pos;
            }
        }

        public void Clear()
        {
            Segments.Clear();
            Blocks.Clear();
            Owners.Clear();
            Budget = 0;
            Replies = 0;
            _block = null;
            _start = _pos = 0;
        }
    }

    /// <summary>
    /// One reply being posted, under the sender's lock (copies only, no I/O). Disposing it queues the reply
    /// and wakes the send loop; after <see cref="Close"/> the reply is dropped and its resources released.
    /// </summary>
    public ref struct ReplyWriter
    {
        private readonly NbdReplySender _sender;
        private Lock.Scope _scope;
        private Batch? _dropped;

        internal ReplyWriter(NbdReplySender sender)
        {
            _sender = sender;
            _scope = sender._lock.EnterScope();
            _dropped = sender._closed ? new Batch() : null;
        }

        private readonly Batch Target => _dropped ?? _sender._filling;

        /// <summary>Copies bytes into the reply.</summary>
        public readonly void Write(ReadOnlySpan<byte> bytes)
        {
            if (_dropped is null)
            {
                Target.Append(_sender, bytes);
            }
        }

        /// <summary>Adds data from a pooled buffer: copied when small, else sent from the buffer itself.</summary>
        public readonly void WriteData(NbdBuffer buffer, int offset, int length)
        {
            if (_dropped is not null)
            {
                return;
            }

            if (length <= CopyLimit)
            {
                Target.Append(_sender, buffer.GetSpan().Slice(offset, length));
            }
            else
            {
                Target.Reference(buffer.Memory.Slice(offset, length));
            }
        }

        /// <summary>
        /// Ends the reply to one request: <paramref name="owner"/> (the buffer its data lives in) and
        /// <paramref name="budget"/> bytes of the connection's budget are released once it is written.
        /// </summary>
        public readonly void Complete(NbdBuffer? owner, long budget)
        {
            var target = Target;
            if (_dropped is null && target.Replies == 0 && !_sender._writing)
            {
                // The first reply after a quiet spell: a stall is measured from now, not from the last write.
                _sender._lastProgress = _sender._time.GetTimestamp();
            }

            if (owner is not null)
            {
                target.Owners.Add(owner);
            }

            target.Budget += budget;
            target.Replies++;
        }

        public void Dispose()
        {
            var dropped = _dropped;
            _scope.Dispose();
            if (dropped is not null)
            {
                _sender.Release(dropped);
            }
            else
            {
                _sender._wake.Writer.TryWrite(true);
            }
        }
    }
}
