using System.Buffers.Binary;
using Dolly.Storage;

namespace Dolly.Nbd;

// Transmission: one receive loop reads requests (and write payloads) in order and hands every request to the
// thread pool, so the loop itself never calls the engine and never waits for its lock: a FLUSH making a
// commit durable, or a read queued behind one, does not stop this connection from reading its next requests.
// Replies may complete out of order, as the protocol allows; each is posted whole to the connection's one send
// loop (NbdReplySender). Memory is bounded three ways before a payload is read or a read is started: the
// connection's byte budget, its request count, and the server-wide buffer pool (NbdBufferPool), each counted
// at the size really allocated. A FLUSH commits the pool, which covers every write already acknowledged on any
// connection (CAN_MULTI_CONN).
internal sealed partial class NbdConnection
{
    private readonly NbdBufferPool.Reservation _reservation = new();
    private ByteBudget? _budget;
    private SemaphoreSlim? _slots;
    private NbdReplySender? _sender;

    // Requests handed to the thread pool and not yet answered, plus one reference held by the receive loop
    // until it stops reading: the count can reach zero only once, after the loop has stopped, so _drained
    // completes exactly when the last outstanding request is answered (NBD_CMD_DISC: "the server MUST handle
    // all outstanding requests"). Counting from zero instead completed _drained the first time the connection
    // went idle, and a later DISC closed the socket under requests still in flight.
    private int _inFlight = 1;
    private readonly TaskCompletionSource _drained = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private volatile bool _transmitting;
    private long _lastActivity;

    private readonly record struct Request(ushort Flags, ushort Type, ulong Cookie, ulong Offset, uint Length);

    /// <summary>
    /// How long the connection has been in transmission with no request outstanding and none received, or
    /// null while it is haggling or busy.
    /// </summary>
    public TimeSpan? IdleFor() =>
        _transmitting && Volatile.Read(ref _inFlight) == 1 ? _time.GetElapsedTime(Interlocked.Read(ref _lastActivity)) : null;

    /// <summary>How long replies have waited for the client to read them, or null when none waits.</summary>
    public TimeSpan? StalledFor() => _transmitting ? _sender?.StalledFor() : null;

    private void Touch() => Interlocked.Exchange(ref _lastActivity, _time.GetTimestamp());

    private async Task<string> TransmitAsync(BlockDevice export, CancellationToken ct)
    {
        _budget = new ByteBudget(_options.MaxInFlightBytesPerConnection);
        _slots = new SemaphoreSlim(_options.MaxInFlightRequestsPerConnection, _options.MaxInFlightRequestsPerConnection);
        _sender = new NbdReplySender(_pool, _budget, OnReplied, _time);
        var sendLoop = Task.Run(() => SendLoopAsync(_sender, ct), CancellationToken.None);
        Touch();
        _transmitting = true;
        var header = new byte[28];
        string reason;
        bool clean = false;
        try
        {
            while (true)
            {
                try
                {
                    await ReadExactAsync(header, ct).ConfigureAwait(false);
                }
                catch (EndOfStreamException)
                {
                    reason = "client disconnected without NBD_CMD_DISC";
                    clean = true;
                    break;
                }

                Touch();
                if (BinaryPrimitives.ReadUInt32BigEndian(header) != Nbd.RequestMagic)
                {
                    throw new NbdProtocolException("request without the request magic");
                }

                var req = new Request(
                    BinaryPrimitives.ReadUInt16BigEndian(header.AsSpan(4)),
                    BinaryPrimitives.ReadUInt16BigEndian(header.AsSpan(6)),
                    BinaryPrimitives.ReadUInt64BigEndian(header.AsSpan(8)),
                    BinaryPrimitives.ReadUInt64BigEndian(header.AsSpan(16)),
                    BinaryPrimitives.ReadUInt32BigEndian(header.AsSpan(24)));

                if (req.Type == Nbd.CmdDisc)
                {
                    reason = "client sent NBD_CMD_DISC";
                    clean = true;
                    break;
                }

                if (req.Type == Nbd.CmdWrite && req.Length > _options.MaxPayload)
                {
                    // The payload cannot be held; the stream cannot be resynchronised without reading it all.
                    throw new NbdProtocolException($"write of {req.Length} bytes exceeds the maximum payload of {_options.MaxPayload}");
                }

                // The request slot first, then the buffer: a connection holds at most its request count of
                // buffers, also while it waits.
                await _slots.WaitAsync(ct).ConfigureAwait(false);
                NbdBuffer? buffer = null;
                long budget = 0;
                try
                {
                    bool needsBuffer = req.Type == Nbd.CmdWrite || (req.Type == Nbd.CmdRead && req.Length is > 0 && req.Length <= (uint)_options.MaxPayload);
                    if (needsBuffer)
                    {
                        (buffer, budget) = await RentAsync((int)req.Length, ct).ConfigureAwait(false);
                        if (req.Type == Nbd.CmdWrite)
                        {
                            await ReadExactAsync(buffer.Memory[..(int)req.Length], ct).ConfigureAwait(false);
                        }
                    }
                }
                catch
                {
                    if (buffer is not null)
                    {
                        _pool.Return(buffer);
                        _budget.Release(budget);
                    }

                    _slots.Release();
                    throw;
                }

                Interlocked.Increment(ref _inFlight);
                ThreadPool.UnsafeQueueUserWorkItem(
                    static s => s.Connection.Process(s.Export, s.Request, s.Buffer, s.Budget),
                    (Connection: this, Export: export, Request: req, Buffer: buffer, Budget: budget),
                    preferLocal: false);
            }
        }
        finally
        {
            if (!clean)
            {
                // A broken connection (protocol error, reset, server shutdown): the stream is out of step or
                // gone, so replies still queued are dropped rather than waited for. Waiting was a deadlock
                // with a client that pipelines its requests and reads replies only after sending them all:
                // its send blocked on the bytes this loop no longer reads, our replies on its full receive
                // window. Requests already executing still complete; they are only not acknowledged.
                Break();
            }

            // Outstanding requests finish (and, after a clean end, are answered) before closing.
            if (Interlocked.Decrement(ref _inFlight) > 0 && !await DrainedWithinAsync(TimeSpan.FromSeconds(30)).ConfigureAwait(false))
            {
                // A client that ended cleanly but stopped reading its replies: give up on them.
                Break();
                await DrainedWithinAsync(TimeSpan.FromSeconds(5)).ConfigureAwait(false);
            }

            _transmitting = false;
            _sender.Close();
            await sendLoop.ConfigureAwait(false);
        }

        return reason;
    }

    /// <summary>
    /// Takes a request's share of the connection's budget, then a buffer from the server's pool; both are
    /// counted at the buffer's real (class) size. Waiting here stalls only this connection's receive loop.
    /// </summary>
    private async ValueTask<(NbdBuffer Buffer, long Budget)> RentAsync(int length, CancellationToken ct)
    {
        long budget = NbdBufferPool.ClassSize(length);
        await _budget!.AcquireAsync(budget, ct).ConfigureAwait(false);
        try
        {
            return (await _pool.RentAsync(length, _reservation, ct).ConfigureAwait(false), budget);
        }
        catch
        {
            _budget.Release(budget);
            throw;
        }
    }

    private async Task SendLoopAsync(NbdReplySender sender, CancellationToken ct)
    {
        try
        {
            await sender.RunAsync(_stream, ct).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is IOException or ObjectDisposedException or OperationCanceledException or System.Net.Sockets.SocketException)
        {
            // The client went away mid-reply (or the connection is being aborted); the receive loop stops too.
            _abort.Cancel();
        }
        catch (Exception ex)
        {
            NbdLog.Unexpected(_logger, _id, ex);
            _abort.Cancel();
        }
    }

    /// <summary>
    /// Stops both loops at once: cancellation, and a shutdown of the socket so that a send blocked on a client
    /// that does not read fails now rather than whenever the peer's window opens (the send loop must end
    /// before the connection can be released).
    /// </summary>
    private void Break()
    {
        _abort.Cancel();
        try
        {
            _socket.Shutdown(System.Net.Sockets.SocketShutdown.Both);
        }
        catch (Exception ex) when (ex is System.Net.Sockets.SocketException or ObjectDisposedException)
        {
            // Already closed.
        }
    }

    private void OnReplied(int replies)
    {
        Touch();
        _slots!.Release(replies);
        if (Interlocked.Add(ref _inFlight, -replies) == 0)
        {
            _drained.TrySetResult();
        }
    }

    private async Task<bool> DrainedWithinAsync(TimeSpan timeout)
    {
        try
        {
            await _drained.Task.WaitAsync(timeout, CancellationToken.None).ConfigureAwait(false);
            return true;
        }
        catch (TimeoutException)
        {
            return false;
        }
    }

    /// <summary>
    /// Runs one request on a thread pool thread and posts its reply. The read buffer passes to the reply (it is
    /// released once written); anything not handed over is released here, also when the handler fails.
    /// </summary>
    private void Process(BlockDevice export, Request req, NbdBuffer? buffer, long budget)
    {
        bool posted = false;
        long started = _options.Metrics?.Time.GetTimestamp() ?? 0;
        try
        {
            Handle(export, req, ref buffer, ref budget);
            posted = true;
            _options.Metrics?.Record(export.Name, req.Type, req.Length, _options.Metrics.Time.GetElapsedTime(started));
        }
        catch (Exception ex)
        {
            // A bug. Without this the client would wait forever for a reply that never comes: log it and end
            // the connection.
            NbdLog.Unexpected(_logger, _id, ex);
            _abort.Cancel();
        }
        finally
        {
            if (buffer is not null)
            {
                _pool.Return(buffer);
            }

            if (budget > 0)
            {
                _budget!.Release(budget);
            }

            if (!posted)
            {
                OnReplied(1);
            }
        }
    }

    private void Handle(BlockDevice export, Request req, ref NbdBuffer? buffer, ref long budget)
    {
        if (req.Type is not (Nbd.CmdWrite or Nbd.CmdTrim or Nbd.CmdWriteZeroes))
        {
            // proto.md: the server MUST accept NBD_CMD_FLAG_FUA on every command (clients are known to set it
            // on FLUSH and READ); it only means something where data is written.
            req = req with { Flags = (ushort)(req.Flags & ~Nbd.CmdFlagFua) };
        }

        if (req.Type is Nbd.CmdRead or Nbd.CmdCache or Nbd.CmdBlockStatus && export.Size < 0)
        {
            // Checked before the bounds: a deleted device has size -1, and "beyond the end" (EINVAL) would
            // tell the client its request was wrong rather than that the export is gone.
            Error(req, Nbd.EIo, $"'{export.Name}' was deleted");
            return;
        }

        bool fua = (req.Flags & Nbd.CmdFlagFua) != 0;
        switch (req.Type)
        {
            case Nbd.CmdRead:
                if (!FlagsAllowed(req, _structured ? Nbd.CmdFlagDf : (ushort)0))
                {
                    Error(req, Nbd.EInval, "unsupported flag for NBD_CMD_READ");
                }
                else if (req.Length > _options.MaxPayload)
                {
                    Error(req, Nbd.EInval, $"read of {req.Length} bytes exceeds the maximum payload of {_options.MaxPayload}");
                }
                else if (!InBounds(export, req))
                {
                    Error(req, Nbd.EInval, "read beyond the end of the export");
                }
                else if (req.Length == 0)
                {
                    // proto.md: every structured content chunk MUST describe at least one byte, so an empty
                    // read is answered with a bare NONE chunk (or a simple reply without data).
                    Complete(req, (0, null));
                }
                else
                {
                    Read(export, req, ref buffer, ref budget);
                }

                break;
            case Nbd.CmdWrite:
                Complete(req, CheckWrite(export, req, Nbd.CmdFlagFua) ?? Map(export.Write((long)req.Offset, buffer!.GetSpan()[..(int)req.Length], fua)));
                break;
            case Nbd.CmdFlush:
                Complete(req, FlagsAllowed(req, 0) ? Map(export.Flush()) : (Nbd.EInval, "unsupported flag for NBD_CMD_FLUSH"));
                break;
            case Nbd.CmdTrim:
                Complete(req, CheckWrite(export, req, Nbd.CmdFlagFua) ?? Map(export.Trim((long)req.Offset, req.Length, fua)));
                break;
            case Nbd.CmdWriteZeroes:
                Complete(req, CheckWrite(export, req, Nbd.CmdFlagFua | Nbd.CmdFlagNoHole | Nbd.CmdFlagFastZero) ?? WriteZeroes(export, req, fua));
                break;
            case Nbd.CmdCache:
                Complete(req, !FlagsAllowed(req, 0) ? (Nbd.EInval, "unsupported flag for NBD_CMD_CACHE") : InBounds(export, req) ? (0, null) : (Nbd.EInval, "cache request beyond the end of the export"));
                break;
            case Nbd.CmdBlockStatus:
                BlockStatus(export, req);
                break;
            default:
                Error(req, Nbd.EInval, $"unknown command {req.Type}");
                break;
        }
    }

    private static bool FlagsAllowed(Request req, ushort allowed) => (req.Flags & ~allowed) == 0;

    private static bool InBounds(BlockDevice export, Request req)
    {
        long size = export.Size;
        return size >= 0 && req.Offset <= (ulong)size && req.Length <= (ulong)size - req.Offset;
    }

    private static (uint Error, string? Message)? CheckWrite(BlockDevice export, Request req, ushort allowedFlags)
    {
        if (!FlagsAllowed(req, allowedFlags))
        {
            return (Nbd.EInval, $"unsupported flag 0x{req.Flags:x} for command {req.Type}");
        }

        if (export.IsReadOnly)
        {
            return (Nbd.EPerm, $"snapshot '{export.Name}' is read-only");
        }

        if (export.Size < 0)
        {
            return (Nbd.EIo, $"'{export.Name}' was deleted");
        }

        return InBounds(export, req) ? null : (Nbd.ENoSpc, "write beyond the end of the export");
    }

    private static (uint Error, string? Message) WriteZeroes(BlockDevice export, Request req, bool fua)
    {
        bool noHole = (req.Flags & Nbd.CmdFlagNoHole) != 0;
        if (noHole && (req.Flags & Nbd.CmdFlagFastZero) != 0)
        {
            // Writing real zeros is as slow as writing data: tell the client to fall back at once.
            return (Nbd.ENotSup, "zeroing without holes is not fast on this server");
        }

        return Map(export.WriteZeroes((long)req.Offset, req.Length, mayUnmap: !noHole, fua));
    }

    private static (uint Error, string? Message) Map(Result r) =>
        r.IsOk ? (0u, null) : (r.Error.Code switch
        {
            StorageErrorCode.ReadOnly => Nbd.EPerm,
            StorageErrorCode.NoSpace => Nbd.ENoSpc,
            StorageErrorCode.InvalidArgument => Nbd.EInval,
            _ => Nbd.EIo,
        }, r.Error.Message);

    private static string CommandName(ushort type) => type switch
    {
        Nbd.CmdRead => "READ",
        Nbd.CmdWrite => "WRITE",
        Nbd.CmdFlush => "FLUSH",
        Nbd.CmdTrim => "TRIM",
        Nbd.CmdCache => "CACHE",
        Nbd.CmdWriteZeroes => "WRITE_ZEROES",
        Nbd.CmdBlockStatus => "BLOCK_STATUS",
        _ => $"command {type}",
    };
}
