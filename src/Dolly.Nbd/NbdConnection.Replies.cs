using System.Buffers.Binary;
using System.Text;
using Dolly.Storage;

namespace Dolly.Nbd;

// Replies: each is composed in stack memory (headers) and the request's pooled buffer (read data), and posted
// whole to the connection's send loop; no array is allocated per reply.
internal sealed partial class NbdConnection
{
    /// <summary>
    /// Descriptors per metadata context in one BLOCK_STATUS reply. proto.md lets the server describe less than
    /// the requested length (the client asks again for the rest); the cap bounds what one reply holds.
    /// </summary>
    private const int MaxDescriptors = 4096;

    private void Read(BlockDevice export, Request req, ref NbdBuffer? buffer, ref long budget)
    {
        int length = (int)req.Length;

        // The read reports the unallocated ranges it met (no second walk of the map, no second lock).
        List<ByteRange>? holes = _structured && (req.Flags & Nbd.CmdFlagDf) == 0 ? [] : null;
        var target = buffer!.GetSpan()[..length];
        var r = holes is null ? export.Read((long)req.Offset, target) : export.Read((long)req.Offset, target, holes);
        if (!r.IsOk)
        {
            var (error, message) = Map(r);
            Error(req, error, message!);
            return;
        }

        if (holes is not null)
        {
            WorthSending(holes, req.Offset);
        }

        Span<byte> header = stackalloc byte[32];
        using (var reply = _sender!.Begin())
        {
            if (!_structured)
            {
                WriteSimpleHeader(header, 0, req.Cookie);
                reply.Write(header[..16]);
                reply.WriteData(buffer, 0, length);
            }
            else if (holes is null || holes.Count == 0)
            {
                WriteChunkHeader(header, Nbd.ReplyFlagDone, Nbd.ReplyTypeOffsetData, req.Cookie, 8 + (uint)length);
                BinaryPrimitives.WriteUInt64BigEndian(header[20..], req.Offset);
                reply.Write(header[..28]);
                reply.WriteData(buffer, 0, length);
            }
            else
            {
                WriteSparse(reply, req, buffer, holes, header);
            }

            reply.Complete(buffer, budget);
        }

        // The reply owns the buffer and its budget now: released once it is written.
        buffer = null;
        budget = 0;
    }

    private static void WriteSparse(NbdReplySender.ReplyWriter reply, Request req, NbdBuffer buffer, List<ByteRange> holes, Span<byte> chunk)
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
                BinaryPrimitives.WriteUInt64BigEndian(chunk[20..], req.Offset + (ulong)pos);
                BinaryPrimitives.WriteUInt32BigEndian(chunk[28..], (uint)h.Length);
                reply.Write(chunk[..32]);
                pos = h.End;
                index++;
                continue;
            }

            long dataEnd = hole?.Offset ?? length;
            last = dataEnd == length;
            WriteChunkHeader(chunk, last ? Nbd.ReplyFlagDone : (ushort)0, Nbd.ReplyTypeOffsetData, req.Cookie, 8 + (uint)(dataEnd - pos));
            BinaryPrimitives.WriteUInt64BigEndian(chunk[20..], req.Offset + (ulong)pos);
            reply.Write(chunk[..28]);
            reply.WriteData(buffer, (int)pos, (int)(dataEnd - pos));
            pos = dataEnd;
        }
    }

    /// <summary>
    /// Keeps the unallocated ranges of at least 4 KiB (worth a hole chunk), made relative to the request at
    /// <paramref name="offset"/>.
    /// </summary>
    private static void WorthSending(List<ByteRange> holes, ulong offset)
    {
        int kept = 0;
        for (int i = 0; i < holes.Count; i++)
        {
            var h = holes[i];
            if (h.Length >= 4096)
            {
                holes[kept++] = h with { Offset = h.Offset - (long)offset };
            }
        }

        holes.RemoveRange(kept, holes.Count - kept);
    }

    private void BlockStatus(BlockDevice export, Request req)
    {
        if (!_structured || _contexts.Count == 0)
        {
            Error(req, Nbd.EInval, "NBD_CMD_BLOCK_STATUS needs structured replies and a selected meta context");
            return;
        }

        if (!FlagsAllowed(req, Nbd.CmdFlagReqOne))
        {
            Error(req, Nbd.EInval, "unsupported flag for NBD_CMD_BLOCK_STATUS");
            return;
        }

        if (req.Length == 0 || !InBounds(export, req))
        {
            Error(req, Nbd.EInval, "block status request empty or beyond the end of the export");
            return;
        }

        bool one = (req.Flags & Nbd.CmdFlagReqOne) != 0;
        var described = new List<List<(long Length, uint State)>>(_contexts.Count);
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
                Error(req, error, $"{context.Name}: {message}");
                return;
            }

            described.Add(Describe((long)req.Offset, (long)req.Offset + req.Length, marked.Value, markedState, otherState, one ? 1 : MaxDescriptors));
        }

        Span<byte> header = stackalloc byte[24];
        Span<byte> descriptor = stackalloc byte[8];
        using var reply = _sender!.Begin();
        for (int i = 0; i < described.Count; i++)
        {
            var descriptors = described[i];
            WriteChunkHeader(header, i == described.Count - 1 ? Nbd.ReplyFlagDone : (ushort)0, Nbd.ReplyTypeBlockStatus, req.Cookie, 4 + ((uint)descriptors.Count * 8));
            BinaryPrimitives.WriteUInt32BigEndian(header[20..], _contexts[i].Id);
            reply.Write(header);
            foreach (var (length, state) in descriptors)
            {
                BinaryPrimitives.WriteUInt32BigEndian(descriptor, (uint)length);
                BinaryPrimitives.WriteUInt32BigEndian(descriptor[4..], state);
                reply.Write(descriptor);
            }
        }

        reply.Complete(null, 0);
    }

    /// <summary>Turns marked ranges into consecutive (length, state) descriptors covering [start, end), at most <paramref name="max"/>.</summary>
    private static List<(long Length, uint State)> Describe(long start, long end, IReadOnlyList<ByteRange> marked, uint markedState, uint otherState, int max)
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

        return result.Count > max ? result.GetRange(0, max) : result;
    }

    private void Complete(Request req, (uint Error, string? Message) outcome)
    {
        if (outcome.Error != 0)
        {
            NbdLog.CommandFailed(_logger, _id, CommandName(req.Type), outcome.Message ?? "error");
            Error(req, outcome.Error, outcome.Message ?? string.Empty);
            return;
        }

        Span<byte> header = stackalloc byte[20];
        if (_structured)
        {
            WriteChunkHeader(header, Nbd.ReplyFlagDone, Nbd.ReplyTypeNone, req.Cookie, 0);
        }
        else
        {
            WriteSimpleHeader(header, 0, req.Cookie);
            header = header[..16];
        }

        using var reply = _sender!.Begin();
        reply.Write(header);
        reply.Complete(null, 0);
    }

    private void Error(Request req, uint error, string message)
    {
        const int MaxText = 1024;
        Span<byte> chunk = stackalloc byte[26 + (MaxText * 3)];
        int length;
        if (!_structured)
        {
            WriteSimpleHeader(chunk, error, req.Cookie);
            length = 16;
        }
        else
        {
            int text = Encoding.UTF8.GetBytes(message.Length > MaxText ? message[..MaxText] : message, chunk[26..]);
            WriteChunkHeader(chunk, Nbd.ReplyFlagDone, Nbd.ReplyTypeError, req.Cookie, (uint)(6 + text));
            BinaryPrimitives.WriteUInt32BigEndian(chunk[20..], error);
            BinaryPrimitives.WriteUInt16BigEndian(chunk[24..], (ushort)text);
            length = 26 + text;
        }

        using var reply = _sender!.Begin();
        reply.Write(chunk[..length]);
        reply.Complete(null, 0);
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
}
