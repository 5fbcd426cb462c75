using System.Buffers;
using System.Buffers.Binary;
using System.Text;
using Dolly.Storage;

namespace Dolly.Nbd;

// Transmission: one receive loop reads requests (and write payloads) in order and hands each to the thread
// pool, so reads run in parallel and a slow request does not hold up the next. Replies may complete out of
// order, as the protocol allows; each reply is written whole under the send lock. A FLUSH commits the pool,
// which covers every write already acknowledged on any connection (CAN_MULTI_CONN).
internal sealed partial class NbdConnection
{
    private readonly SemaphoreSlim _sendLock = new(1, 1);
    private ByteBudget? _budget;
    private SemaphoreSlim? _slots;
    // Requests handed to the thread pool and not yet answered, plus one reference held by the receive loop
    // until it stops reading: the count can reach zero only once, after the loop has stopped, so _drained
    // completes exactly when the last outstanding request is answered (NBD_CMD_DISC: "the server MUST handle
    // all outstanding requests"). Counting from zero instead completed _drained the first time the connection
    // went idle, and a later DISC closed the socket under requests still in flight.
    private int _inFlight = 1;
    private readonly TaskCompletionSource _drained = new(TaskCreationOptions.RunContinuationsAsynchronously);

    /// <summary>Reads and writes up to this size are answered on the receive loop itself.</summary>
    private const int InlineLimit = 64 << 10;

    private readonly record struct Request(ushort Flags, ushort Type, ulong Cookie, ulong Offset, uint Length);

    private async Task<string> TransmitAsync(BlockDevice export, CancellationToken ct)
    {
        _budget = new ByteBudget(_options.MaxInFlightBytesPerConnection);
        _slots = new SemaphoreSlim(_options.MaxInFlightRequestsPerConnection, _options.MaxInFlightRequestsPerConnection);
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

                byte[]? payload = null;
                long budgeted = 0;
                if (req.Type == Nbd.CmdWrite)
                {
                    if (req.Length > _options.MaxPayload)
                    {
                        // The payload cannot be held; the stream cannot be resynchronised without reading it all.
                        throw new NbdProtocolException($"write of {req.Length} bytes exceeds the maximum payload of {_options.MaxPayload}");
                    }

                    budgeted = req.Length;
                    await _budget.AcquireAsync(budgeted, ct).ConfigureAwait(false);
                    payload = ArrayPool<byte>.Shared.Rent((int)req.Length);
                    await ReadExactAsync(payload.AsMemory(0, (int)req.Length), ct).ConfigureAwait(false);
                }
                else if (req.Type == Nbd.CmdRead && req.Length <= _options.MaxPayload)
                {
                    budgeted = req.Length;
                    await _budget.AcquireAsync(budgeted, ct).ConfigureAwait(false);
                }

                await _slots.WaitAsync(ct).ConfigureAwait(false);
                Interlocked.Increment(ref _inFlight);
                if (req.Type is Nbd.CmdRead or Nbd.CmdWrite && req.Length <= InlineLimit)
                {
                    // A small read or write costs less than handing it to another thread: answer it here.
                    // Larger requests, flushes and zeroing of large ranges go to the thread pool.
                    await ProcessAsync(export, req, payload, budgeted, ct).ConfigureAwait(false);
                }
                else
                {
                    _ = Task.Run(() => ProcessAsync(export, req, payload, budgeted, ct), CancellationToken.None);
                }
            }
        }
        finally
        {
            if (!clean)
            {
                // A broken connection (protocol error, reset, server shutdown): the stream is out of step or
                // gone, so replies still queued are cancelled rather than waited for. Waiting was a deadlock
                // with a client that pipelines its requests and reads replies only after sending them all:
                // its send blocked on the bytes this loop no longer reads, our replies on its full receive
                // window. Requests already executing still complete; they are only not acknowledged.
                _abort.Cancel();
            }

            // Outstanding requests finish (and, after a clean end, are answered) before closing.
            if (Interlocked.Decrement(ref _inFlight) > 0 && !await DrainedWithinAsync(TimeSpan.FromSeconds(30)).ConfigureAwait(false))
            {
                // A client that ended cleanly but stopped reading its replies: give up on them.
                _abort.Cancel();
                await DrainedWithinAsync(TimeSpan.FromSeconds(5)).ConfigureAwait(false);
            }
        }

        return reason;
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

    private async Task ProcessAsync(BlockDevice export, Request req, byte[]? payload, long budgeted, CancellationToken ct)
    {
        try
        {
            await HandleAsync(export, req, payload, ct).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is IOException or ObjectDisposedException or OperationCanceledException or System.Net.Sockets.SocketException)
        {
            // The client went away mid-reply; the receive loop sees it too.
            _abort.Cancel();
        }
        catch (Exception ex)
        {
            // A bug. This runs on the thread pool, so without this the exception would vanish with the task and
            // the client would wait forever for a reply that never comes: log it and end the connection.
            NbdLog.Unexpected(_logger, _id, ex);
            _abort.Cancel();
        }
        finally
        {
            if (payload is not null)
            {
                ArrayPool<byte>.Shared.Return(payload);
            }

            _budget!.Release(budgeted);
            _slots!.Release();
            if (Interlocked.Decrement(ref _inFlight) == 0)
            {
                _drained.TrySetResult();
            }
        }
    }

    private async Task HandleAsync(BlockDevice export, Request req, byte[]? payload, CancellationToken ct)
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
            await ErrorAsync(req, Nbd.EIo, $"'{export.Name}' was deleted", ct).ConfigureAwait(false);
            return;
        }

        bool fua = (req.Flags & Nbd.CmdFlagFua) != 0;
        switch (req.Type)
        {
            case Nbd.CmdRead:
                if (!FlagsAllowed(req, _structured ? Nbd.CmdFlagDf : (ushort)0))
                {
                    await ErrorAsync(req, Nbd.EInval, "unsupported flag for NBD_CMD_READ", ct).ConfigureAwait(false);
                }
                else if (req.Length > _options.MaxPayload)
                {
                    await ErrorAsync(req, Nbd.EInval, $"read of {req.Length} bytes exceeds the maximum payload of {_options.MaxPayload}", ct).ConfigureAwait(false);
                }
                else if (!InBounds(export, req))
                {
                    await ErrorAsync(req, Nbd.EInval, "read beyond the end of the export", ct).ConfigureAwait(false);
                }
                else if (req.Length == 0)
                {
                    // proto.md: every structured content chunk MUST describe at least one byte, so an empty
                    // read is answered with a bare NONE chunk (or a simple reply without data).
                    await CompleteAsync(req, (0, null), ct).ConfigureAwait(false);
                }
                else
                {
                    await ReadAsync(export, req, ct).ConfigureAwait(false);
                }

                break;
            case Nbd.CmdWrite:
                await CompleteAsync(req, CheckWrite(export, req, Nbd.CmdFlagFua) ?? Map(export.Write((long)req.Offset, payload.AsSpan(0, (int)req.Length), fua)), ct).ConfigureAwait(false);
                break;
            case Nbd.CmdFlush:
                await CompleteAsync(req, FlagsAllowed(req, 0) ? Map(export.Flush()) : (Nbd.EInval, "unsupported flag for NBD_CMD_FLUSH"), ct).ConfigureAwait(false);
                break;
            case Nbd.CmdTrim:
                await CompleteAsync(req, CheckWrite(export, req, Nbd.CmdFlagFua) ?? Map(export.Trim((long)req.Offset, req.Length, fua)), ct).ConfigureAwait(false);
                break;
            case Nbd.CmdWriteZeroes:
                await CompleteAsync(req, CheckWrite(export, req, Nbd.CmdFlagFua | Nbd.CmdFlagNoHole | Nbd.CmdFlagFastZero) ?? WriteZeroes(export, req, fua), ct).ConfigureAwait(false);
                break;
            case Nbd.CmdCache:
                await CompleteAsync(req, !FlagsAllowed(req, 0) ? (Nbd.EInval, "unsupported flag for NBD_CMD_CACHE") : InBounds(export, req) ? (0, null) : (Nbd.EInval, "cache request beyond the end of the export"), ct).ConfigureAwait(false);
                break;
            case Nbd.CmdBlockStatus:
                await BlockStatusAsync(export, req, ct).ConfigureAwait(false);
                break;
            default:
                await ErrorAsync(req, Nbd.EInval, $"unknown command {req.Type}", ct).ConfigureAwait(false);
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

    private async Task ReadAsync(BlockDevice export, Request req, CancellationToken ct)
    {
        int length = (int)req.Length;
        int headerSize = _structured ? 28 : 16;
        byte[] buffer = ArrayPool<byte>.Shared.Rent(headerSize + length);
        try
        {
            var data = buffer.AsMemory(headerSize, length);
            var r = export.Read((long)req.Offset, data.Span);
            if (!r.IsOk)
            {
                var (error, message) = Map(r);
                await ErrorAsync(req, error, message!, ct).ConfigureAwait(false);
                return;
            }

            if (!_structured)
            {
                WriteSimpleHeader(buffer, 0, req.Cookie);
                await SendAsync(buffer.AsMemory(0, headerSize + length), ct).ConfigureAwait(false);
                return;
            }

            bool df = (req.Flags & Nbd.CmdFlagDf) != 0;
            var holes = df || length == 0 ? null : Holes(export, req);
            if (holes is null || holes.Count == 0)
            {
                WriteChunkHeader(buffer, Nbd.ReplyFlagDone, Nbd.ReplyTypeOffsetData, req.Cookie, 8 + (uint)length);
                BinaryPrimitives.WriteUInt64BigEndian(buffer.AsSpan(20), req.Offset);
                await SendAsync(buffer.AsMemory(0, headerSize + length), ct).ConfigureAwait(false);
                return;
            }

            await SendSparseReadAsync(req, buffer, headerSize, holes, ct).ConfigureAwait(false);
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }

    /// <summary>Unallocated ranges (relative to the request) of at least 4 KiB, worth sending as holes.</summary>
    private static List<ByteRange>? Holes(BlockDevice export, Request req)
    {
        var allocated = export.GetAllocatedRanges((long)req.Offset, req.Length);
        if (!allocated.IsOk)
        {
            return null;
        }

        var holes = new List<ByteRange>();
        long pos = (long)req.Offset;
        long end = pos + req.Length;
        foreach (var a in allocated.Value.Append(new ByteRange(end, 0)))
        {
            if (a.Offset - pos >= 4096)
            {
                holes.Add(new ByteRange(pos - (long)req.Offset, a.Offset - pos));
            }

            pos = Math.Max(pos, a.End);
        }

        return holes;
    }

    private async Task SendSparseReadAsync(Request req, byte[] buffer, int headerSize, List<ByteRange> holes, CancellationToken ct)
    {
        var chunk = new byte[32];
        await _sendLock.WaitAsync(ct).ConfigureAwait(false);
        try
        {
            long pos = 0;
            long length = req.Length;
            int index = 0;
            while (pos < length)
            {
                ByteRange? hole = index < holes.Count ? holes[index] : null;
                bool last;
                if (hole is { } h && h.Offset == pos)
                {
                    last = h.End == length;
                    WriteChunkHeader(chunk, last ? Nbd.ReplyFlagDone : (ushort)0, Nbd.ReplyTypeOffsetHole, req.Cookie, 12);
                    BinaryPrimitives.WriteUInt64BigEndian(chunk.AsSpan(20), req.Offset + (ulong)pos);
                    BinaryPrimitives.WriteUInt32BigEndian(chunk.AsSpan(28), (uint)h.Length);
                    await _stream.WriteAsync(chunk.AsMemory(0, 32), ct).ConfigureAwait(false);
                    pos = h.End;
                    index++;
                    continue;
                }

                long dataEnd = hole?.Offset ?? length;
                last = dataEnd == length;
                WriteChunkHeader(chunk, last ? Nbd.ReplyFlagDone : (ushort)0, Nbd.ReplyTypeOffsetData, req.Cookie, 8 + (uint)(dataEnd - pos));
                BinaryPrimitives.WriteUInt64BigEndian(chunk.AsSpan(20), req.Offset + (ulong)pos);
                await _stream.WriteAsync(chunk.AsMemory(0, 28), ct).ConfigureAwait(false);
                await _stream.WriteAsync(buffer.AsMemory(headerSize + (int)pos, (int)(dataEnd - pos)), ct).ConfigureAwait(false);
                pos = dataEnd;
            }

            await _stream.FlushAsync(ct).ConfigureAwait(false);
        }
        finally
        {
            _sendLock.Release();
        }
    }

    private async Task BlockStatusAsync(BlockDevice export, Request req, CancellationToken ct)
    {
        if (!_structured || _contexts.Count == 0)
        {
            await ErrorAsync(req, Nbd.EInval, "NBD_CMD_BLOCK_STATUS needs structured replies and a selected meta context", ct).ConfigureAwait(false);
            return;
        }

        if (!FlagsAllowed(req, Nbd.CmdFlagReqOne))
        {
            await ErrorAsync(req, Nbd.EInval, "unsupported flag for NBD_CMD_BLOCK_STATUS", ct).ConfigureAwait(false);
            return;
        }

        if (req.Length == 0 || !InBounds(export, req))
        {
            await ErrorAsync(req, Nbd.EInval, "block status request empty or beyond the end of the export", ct).ConfigureAwait(false);
            return;
        }

        bool one = (req.Flags & Nbd.CmdFlagReqOne) != 0;
        var chunks = new List<byte[]>();
        foreach (var context in _contexts)
        {
            Result<IReadOnlyList<ByteRange>> marked;
            uint markedState, otherState;
            if (context.Base is null)
            {
                marked = export.GetAllocatedRanges((long)req.Offset, req.Length);
                markedState = 0;
                otherState = Nbd.StateHole | Nbd.StateZero;
            }
            else
            {
                marked = export.GetChangedRanges(context.Base, (long)req.Offset, req.Length);
                markedState = Nbd.StateDirty;
                otherState = 0;
            }

            if (!marked.IsOk)
            {
                var (error, message) = Map(Result.Fail(marked.Error));
                await ErrorAsync(req, error, $"{context.Name}: {message}", ct).ConfigureAwait(false);
                return;
            }

            var descriptors = Describe((long)req.Offset, (long)req.Offset + req.Length, marked.Value, markedState, otherState, one);
            var chunk = new byte[20 + 4 + (descriptors.Count * 8)];
            BinaryPrimitives.WriteUInt32BigEndian(chunk.AsSpan(20), context.Id);
            for (int i = 0; i < descriptors.Count; i++)
            {
                BinaryPrimitives.WriteUInt32BigEndian(chunk.AsSpan(24 + (i * 8)), (uint)descriptors[i].Length);
                BinaryPrimitives.WriteUInt32BigEndian(chunk.AsSpan(28 + (i * 8)), descriptors[i].State);
            }

            chunks.Add(chunk);
        }

        await _sendLock.WaitAsync(ct).ConfigureAwait(false);
        try
        {
            for (int i = 0; i < chunks.Count; i++)
            {
                WriteChunkHeader(chunks[i], i == chunks.Count - 1 ? Nbd.ReplyFlagDone : (ushort)0, Nbd.ReplyTypeBlockStatus, req.Cookie, (uint)(chunks[i].Length - 20));
                await _stream.WriteAsync(chunks[i], ct).ConfigureAwait(false);
            }

            await _stream.FlushAsync(ct).ConfigureAwait(false);
        }
        finally
        {
            _sendLock.Release();
        }
    }

    /// <summary>Turns marked ranges into consecutive (length, state) descriptors covering [start, end).</summary>
    private static List<(long Length, uint State)> Describe(long start, long end, IReadOnlyList<ByteRange> marked, uint markedState, uint otherState, bool one)
    {
        var result = new List<(long Length, uint State)>();
        long pos = start;
        foreach (var m in marked)
        {
            if (m.Offset > pos)
            {
                result.Add((m.Offset - pos, otherState));
            }

            result.Add((m.End - Math.Max(m.Offset, pos), markedState));
            pos = m.End;
        }

        if (pos < end)
        {
            result.Add((end - pos, otherState));
        }

        return one ? result.GetRange(0, 1) : result;
    }

    private Task CompleteAsync(Request req, (uint Error, string? Message) outcome, CancellationToken ct)
    {
        if (outcome.Error != 0)
        {
            NbdLog.CommandFailed(_logger, _id, CommandName(req.Type), outcome.Message ?? "error");
            return ErrorAsync(req, outcome.Error, outcome.Message ?? string.Empty, ct);
        }

        var reply = new byte[_structured ? 20 : 16];
        if (_structured)
        {
            WriteChunkHeader(reply, Nbd.ReplyFlagDone, Nbd.ReplyTypeNone, req.Cookie, 0);
        }
        else
        {
            WriteSimpleHeader(reply, 0, req.Cookie);
        }

        return SendAsync(reply, ct);
    }

    private Task ErrorAsync(Request req, uint error, string message, CancellationToken ct)
    {
        if (!_structured)
        {
            var reply = new byte[16];
            WriteSimpleHeader(reply, error, req.Cookie);
            return SendAsync(reply, ct);
        }

        var text = Encoding.UTF8.GetBytes(message.Length > 1024 ? message[..1024] : message);
        var chunk = new byte[20 + 6 + text.Length];
        WriteChunkHeader(chunk, Nbd.ReplyFlagDone, Nbd.ReplyTypeError, req.Cookie, (uint)(6 + text.Length));
        BinaryPrimitives.WriteUInt32BigEndian(chunk.AsSpan(20), error);
        BinaryPrimitives.WriteUInt16BigEndian(chunk.AsSpan(24), (ushort)text.Length);
        text.CopyTo(chunk, 26);
        return SendAsync(chunk, ct);
    }

    private static void WriteSimpleHeader(Span<byte> buffer, uint error, ulong cookie)
    {
        BinaryPrimitives.WriteUInt32BigEndian(buffer, Nbd.SimpleReplyMagic);
        BinaryPrimitives.WriteUInt32BigEndian(buffer[4..], error);
        BinaryPrimitives.WriteUInt64BigEndian(buffer[8..], cookie);
    }

    private static void WriteChunkHeader(Span<byte> buffer, ushort flags, ushort type, ulong cookie, uint length)
    {
        BinaryPrimitives.WriteUInt32BigEndian(buffer, Nbd.StructuredReplyMagic);
        BinaryPrimitives.WriteUInt16BigEndian(buffer[4..], flags);
        BinaryPrimitives.WriteUInt16BigEndian(buffer[6..], type);
        BinaryPrimitives.WriteUInt64BigEndian(buffer[8..], cookie);
        BinaryPrimitives.WriteUInt32BigEndian(buffer[16..], length);
    }

    private async Task SendAsync(ReadOnlyMemory<byte> message, CancellationToken ct)
    {
        await _sendLock.WaitAsync(ct).ConfigureAwait(false);
        try
        {
            await _stream.WriteAsync(message, ct).ConfigureAwait(false);
            await _stream.FlushAsync(ct).ConfigureAwait(false);
        }
        finally
        {
            _sendLock.Release();
        }
    }

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
