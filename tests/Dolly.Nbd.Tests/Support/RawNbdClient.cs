using System.Buffers.Binary;
using System.Net;
using System.Net.Sockets;
using System.Text;

namespace Dolly.Nbd.Tests.Support;

internal sealed record OptionReply(uint Option, uint Type, byte[] Data)
{
    public bool IsError => (Type & 0x80000000) != 0;

    public string Text => Encoding.UTF8.GetString(Data);

    public override string ToString() => $"option {Option} reply 0x{Type:x} ({Data.Length} bytes){(IsError ? ": " + Text : string.Empty)}";
}

internal sealed record Chunk(ushort Flags, ushort Type, ulong Cookie, byte[] Payload)
{
    public bool Done => (Flags & Wire.ReplyFlagDone) != 0;

    public bool IsError => (Type & 0x8000) != 0;

    public uint Error => BinaryPrimitives.ReadUInt32BigEndian(Payload);

    public string ErrorMessage => Encoding.UTF8.GetString(Payload, 6, BinaryPrimitives.ReadUInt16BigEndian(Payload.AsSpan(4)));

    public ulong Offset => BinaryPrimitives.ReadUInt64BigEndian(Payload);
}

/// <summary>What NBD_OPT_GO told about an export.</summary>
internal sealed record ExportInfo(ulong Size, ushort Flags, string? Name, string? Description, uint MinBlock, uint PreferredBlock, uint MaxBlock, IReadOnlyDictionary<string, uint> Contexts)
{
    public bool ReadOnly => (Flags & Wire.TFlagReadOnly) != 0;
}

/// <summary>The outcome of a command: error (0 = success), the error chunk's message, data read, chunks received.</summary>
internal sealed record CommandReply(uint Error, string? Message, byte[] Data, IReadOnlyList<Chunk> Chunks);

/// <summary>
/// A deliberately small NBD client written from proto.md, independent of the server's code, so that protocol
/// tests can send exactly the bytes they mean (including wrong ones).
/// </summary>
internal sealed class RawNbdClient : IAsyncDisposable
{
    public static readonly TimeSpan Timeout = TimeSpan.FromSeconds(60);

    private readonly Socket? _socket;
    private readonly Stream _stream;
    private ulong _nextCookie = 1;

    private RawNbdClient(Socket socket)
    {
        _socket = socket;
        _stream = new NetworkStream(socket, ownsSocket: true);
    }

    private RawNbdClient(Stream stream) => _stream = stream;

    /// <summary>A client speaking over an existing stream (a TLS session after STARTTLS).</summary>
    public static RawNbdClient Over(Stream stream) => new(stream);

    public bool Structured { get; set; }

    public Stream Stream => _stream;

    public Socket Socket => _socket ?? throw new InvalidOperationException("this client runs over a stream, not a socket");

    public static async Task<RawNbdClient> ConnectUnixAsync(string path)
    {
        var s = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        await s.ConnectAsync(new UnixDomainSocketEndPoint(path));
        return new RawNbdClient(s);
    }

    public static async Task<RawNbdClient> ConnectTcpAsync(IPEndPoint endPoint)
    {
        var s = new Socket(endPoint.AddressFamily, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        await s.ConnectAsync(endPoint);
        return new RawNbdClient(s);
    }

    private static CancellationTokenSource TimeoutToken()
    {
        var cts = CancellationTokenSource.CreateLinkedTokenSource(TestContext.Current.CancellationToken);
        cts.CancelAfter(Timeout);
        return cts;
    }

    public async Task<byte[]> ReadBytesAsync(int count)
    {
        var buffer = new byte[count];
        using var cts = TimeoutToken();
        await _stream.ReadExactlyAsync(buffer, cts.Token);
        return buffer;
    }

    public async Task SendAsync(ReadOnlyMemory<byte> bytes)
    {
        using var cts = TimeoutToken();
        await _stream.WriteAsync(bytes, cts.Token);
    }

    /// <summary>Reads the server greeting and returns its handshake flags.</summary>
    public async Task<ushort> ReadGreetingAsync()
    {
        var g = await ReadBytesAsync(18);
        Assert.Equal(Wire.NbdMagic, BinaryPrimitives.ReadUInt64BigEndian(g));
        Assert.Equal(Wire.IHaveOpt, BinaryPrimitives.ReadUInt64BigEndian(g.AsSpan(8)));
        return BinaryPrimitives.ReadUInt16BigEndian(g.AsSpan(16));
    }

    public Task SendClientFlagsAsync(uint flags)
    {
        var b = new byte[4];
        BinaryPrimitives.WriteUInt32BigEndian(b, flags);
        return SendAsync(b);
    }

    /// <summary>Greeting plus client flags (fixed newstyle and no zeroes by default).</summary>
    public async Task<ushort> HandshakeAsync(uint clientFlags = Wire.ClientFixedNewstyle | Wire.ClientNoZeroes)
    {
        var flags = await ReadGreetingAsync();
        await SendClientFlagsAsync(clientFlags);
        return flags;
    }

    public static byte[] OptionFrame(uint option, ReadOnlySpan<byte> data, uint? declaredLength = null)
    {
        var frame = new byte[16 + data.Length];
        BinaryPrimitives.WriteUInt64BigEndian(frame, Wire.IHaveOpt);
        BinaryPrimitives.WriteUInt32BigEndian(frame.AsSpan(8), option);
        BinaryPrimitives.WriteUInt32BigEndian(frame.AsSpan(12), declaredLength ?? (uint)data.Length);
        data.CopyTo(frame.AsSpan(16));
        return frame;
    }

    public Task SendOptionAsync(uint option, ReadOnlySpan<byte> data = default) => SendAsync(OptionFrame(option, data));

    public async Task<OptionReply> ReadOptionReplyAsync()
    {
        var h = await ReadBytesAsync(20);
        Assert.Equal(Wire.OptReplyMagic, BinaryPrimitives.ReadUInt64BigEndian(h));
        uint length = BinaryPrimitives.ReadUInt32BigEndian(h.AsSpan(16));
        Assert.True(length < 1 << 20, $"option reply of {length} bytes");
        var data = await ReadBytesAsync((int)length);
        return new OptionReply(BinaryPrimitives.ReadUInt32BigEndian(h.AsSpan(8)), BinaryPrimitives.ReadUInt32BigEndian(h.AsSpan(12)), data);
    }

    /// <summary>Reads replies to one option up to and including the final one (ACK or an error).</summary>
    public async Task<List<OptionReply>> ReadOptionRepliesAsync(uint option)
    {
        var replies = new List<OptionReply>();
        while (true)
        {
            var r = await ReadOptionReplyAsync();
            Assert.Equal(option, r.Option);
            replies.Add(r);
            if (r.Type == Wire.RepAck || r.IsError)
            {
                return replies;
            }
        }
    }

    public async Task<List<OptionReply>> OptionAsync(uint option, byte[]? data = null)
    {
        await SendOptionAsync(option, data);
        return await ReadOptionRepliesAsync(option);
    }

    public static byte[] InfoRequest(string export, params ushort[] infos)
    {
        var name = Encoding.UTF8.GetBytes(export);
        var data = new byte[4 + name.Length + 2 + (2 * infos.Length)];
        BinaryPrimitives.WriteUInt32BigEndian(data, (uint)name.Length);
        name.CopyTo(data, 4);
        BinaryPrimitives.WriteUInt16BigEndian(data.AsSpan(4 + name.Length), (ushort)infos.Length);
        for (int i = 0; i < infos.Length; i++)
        {
            BinaryPrimitives.WriteUInt16BigEndian(data.AsSpan(6 + name.Length + (2 * i)), infos[i]);
        }

        return data;
    }

    public static byte[] MetaContextRequest(string export, params string[] queries)
    {
        using var ms = new MemoryStream();
        var name = Encoding.UTF8.GetBytes(export);
        WriteU32(ms, (uint)name.Length);
        ms.Write(name);
        WriteU32(ms, (uint)queries.Length);
        foreach (var q in queries)
        {
            var b = Encoding.UTF8.GetBytes(q);
            WriteU32(ms, (uint)b.Length);
            ms.Write(b);
        }

        return ms.ToArray();
    }

    private static void WriteU32(Stream s, uint v)
    {
        Span<byte> b = stackalloc byte[4];
        BinaryPrimitives.WriteUInt32BigEndian(b, v);
        s.Write(b);
    }

    /// <summary>Parses the INFO replies of an INFO or GO exchange.</summary>
    public static ExportInfo ParseInfo(IEnumerable<OptionReply> replies, IReadOnlyDictionary<string, uint> contexts)
    {
        ulong size = 0;
        ushort flags = 0;
        string? name = null, description = null;
        uint min = 0, pref = 0, max = 0;
        foreach (var r in replies.Where(r => r.Type == Wire.RepInfo))
        {
            ushort type = BinaryPrimitives.ReadUInt16BigEndian(r.Data);
            switch (type)
            {
                case Wire.InfoExport:
                    Assert.Equal(12, r.Data.Length);
                    size = BinaryPrimitives.ReadUInt64BigEndian(r.Data.AsSpan(2));
                    flags = BinaryPrimitives.ReadUInt16BigEndian(r.Data.AsSpan(10));
                    break;
                case Wire.InfoName:
                    name = Encoding.UTF8.GetString(r.Data, 2, r.Data.Length - 2);
                    break;
                case Wire.InfoDescription:
                    description = Encoding.UTF8.GetString(r.Data, 2, r.Data.Length - 2);
                    break;
                case Wire.InfoBlockSize:
                    Assert.Equal(14, r.Data.Length);
                    min = BinaryPrimitives.ReadUInt32BigEndian(r.Data.AsSpan(2));
                    pref = BinaryPrimitives.ReadUInt32BigEndian(r.Data.AsSpan(6));
                    max = BinaryPrimitives.ReadUInt32BigEndian(r.Data.AsSpan(10));
                    break;
            }
        }

        return new ExportInfo(size, flags, name, description, min, pref, max, contexts);
    }

    /// <summary>
    /// Full handshake ending in NBD_OPT_GO: optional structured replies and meta contexts. Fails the test
    /// when the server refuses.
    /// </summary>
    public async Task<ExportInfo> GoAsync(string export, bool structured = false, params string[] contexts)
    {
        await HandshakeAsync();
        var ids = new Dictionary<string, uint>();
        if (structured || contexts.Length > 0)
        {
            var sr = await OptionAsync(Wire.OptStructuredReply);
            Assert.Equal(Wire.RepAck, sr[^1].Type);
            Structured = true;
        }

        if (contexts.Length > 0)
        {
            var replies = await OptionAsync(Wire.OptSetMetaContext, MetaContextRequest(export, contexts));
            Assert.Equal(Wire.RepAck, replies[^1].Type);
            foreach (var r in replies.Where(r => r.Type == Wire.RepMetaContext))
            {
                ids[Encoding.UTF8.GetString(r.Data, 4, r.Data.Length - 4)] = BinaryPrimitives.ReadUInt32BigEndian(r.Data);
            }
        }

        var go = await OptionAsync(Wire.OptGo, InfoRequest(export, Wire.InfoName, Wire.InfoDescription, Wire.InfoBlockSize));
        Assert.True(go[^1].Type == Wire.RepAck, $"GO refused: {go[^1]}");
        return ParseInfo(go, ids);
    }

    public ulong NextCookie() => _nextCookie++;

    public static byte[] RequestFrame(ushort flags, ushort type, ulong cookie, ulong offset, uint length, uint magic = Wire.RequestMagic)
    {
        var h = new byte[28];
        BinaryPrimitives.WriteUInt32BigEndian(h, magic);
        BinaryPrimitives.WriteUInt16BigEndian(h.AsSpan(4), flags);
        BinaryPrimitives.WriteUInt16BigEndian(h.AsSpan(6), type);
        BinaryPrimitives.WriteUInt64BigEndian(h.AsSpan(8), cookie);
        BinaryPrimitives.WriteUInt64BigEndian(h.AsSpan(16), offset);
        BinaryPrimitives.WriteUInt32BigEndian(h.AsSpan(24), length);
        return h;
    }

    public async Task SendRequestAsync(ushort flags, ushort type, ulong cookie, ulong offset, uint length, ReadOnlyMemory<byte> payload = default)
    {
        var frame = new byte[28 + payload.Length];
        RequestFrame(flags, type, cookie, offset, length).CopyTo(frame, 0);
        payload.CopyTo(frame.AsMemory(28));
        await SendAsync(frame);
    }

    /// <summary>Reads one simple reply header: (error, cookie).</summary>
    public async Task<(uint Error, ulong Cookie)> ReadSimpleReplyAsync()
    {
        var h = await ReadBytesAsync(16);
        Assert.Equal(Wire.SimpleReplyMagic, BinaryPrimitives.ReadUInt32BigEndian(h));
        return (BinaryPrimitives.ReadUInt32BigEndian(h.AsSpan(4)), BinaryPrimitives.ReadUInt64BigEndian(h.AsSpan(8)));
    }

    public async Task<Chunk> ReadChunkAsync()
    {
        var h = await ReadBytesAsync(20);
        Assert.Equal(Wire.StructuredReplyMagic, BinaryPrimitives.ReadUInt32BigEndian(h));
        uint length = BinaryPrimitives.ReadUInt32BigEndian(h.AsSpan(16));
        Assert.True(length <= (64u << 20), $"chunk of {length} bytes");
        var payload = await ReadBytesAsync((int)length);
        return new Chunk(BinaryPrimitives.ReadUInt16BigEndian(h.AsSpan(4)), BinaryPrimitives.ReadUInt16BigEndian(h.AsSpan(6)), BinaryPrimitives.ReadUInt64BigEndian(h.AsSpan(8)), payload);
    }

    /// <summary>Reads the chunks of one structured reply, up to the one flagged DONE.</summary>
    public async Task<List<Chunk>> ReadStructuredReplyAsync(ulong cookie)
    {
        var chunks = new List<Chunk>();
        while (true)
        {
            var c = await ReadChunkAsync();
            Assert.Equal(cookie, c.Cookie);
            chunks.Add(c);
            if (c.Done)
            {
                return chunks;
            }
        }
    }

    /// <summary>Sends a command and reads its reply. For READ, the data is assembled from the chunks.</summary>
    public async Task<CommandReply> CommandAsync(ushort type, ulong offset, uint length, ushort flags = 0, ReadOnlyMemory<byte> payload = default)
    {
        ulong cookie = NextCookie();
        await SendRequestAsync(flags, type, cookie, offset, length, payload);
        return await ReadReplyAsync(cookie, type, offset, length);
    }

    public async Task<CommandReply> ReadReplyAsync(ulong cookie, ushort type, ulong offset, uint length)
    {
        if (!Structured)
        {
            var (error, c) = await ReadSimpleReplyAsync();
            Assert.Equal(cookie, c);
            var data = type == Wire.CmdRead && error == 0 ? await ReadBytesAsync((int)length) : [];
            return new CommandReply(error, null, data, []);
        }

        var chunks = await ReadStructuredReplyAsync(cookie);
        var err = chunks.FirstOrDefault(c => c.IsError);
        if (err is not null)
        {
            return new CommandReply(err.Error, err.ErrorMessage, [], chunks);
        }

        var buffer = Array.Empty<byte>();
        if (type == Wire.CmdRead)
        {
            buffer = new byte[length];
            var covered = new bool[length];
            foreach (var c in chunks)
            {
                if (c.Type == Wire.ReplyTypeOffsetData)
                {
                    long at = (long)(c.Offset - offset);
                    Assert.InRange(at, 0, length - (c.Payload.Length - 8));
                    c.Payload.AsSpan(8).CopyTo(buffer.AsSpan((int)at));
                    Array.Fill(covered, true, (int)at, c.Payload.Length - 8);
                }
                else if (c.Type == Wire.ReplyTypeOffsetHole)
                {
                    long at = (long)(c.Offset - offset);
                    int n = (int)BinaryPrimitives.ReadUInt32BigEndian(c.Payload.AsSpan(8));
                    Assert.InRange(at, 0, length - n);
                    Array.Fill(covered, true, (int)at, n);
                }
            }

            Assert.True(length == 0 || covered.All(x => x), "structured read reply does not cover the request");
        }

        return new CommandReply(0, null, buffer, chunks);
    }

    public async Task<CommandReply> ReadAsync(ulong offset, uint length, ushort flags = 0) => await CommandAsync(Wire.CmdRead, offset, length, flags);

    public async Task<CommandReply> WriteAsync(ulong offset, byte[] data, ushort flags = 0) => await CommandAsync(Wire.CmdWrite, offset, (uint)data.Length, flags, data);

    public async Task<CommandReply> FlushAsync() => await CommandAsync(Wire.CmdFlush, 0, 0);

    /// <summary>Block status descriptors (length, flags) for one context id.</summary>
    public static List<(uint Length, uint Flags)> Descriptors(CommandReply reply, uint contextId)
    {
        var chunk = reply.Chunks.Single(c => c.Type == Wire.ReplyTypeBlockStatus && BinaryPrimitives.ReadUInt32BigEndian(c.Payload) == contextId);
        var list = new List<(uint, uint)>();
        for (int i = 4; i < chunk.Payload.Length; i += 8)
        {
            list.Add((BinaryPrimitives.ReadUInt32BigEndian(chunk.Payload.AsSpan(i)), BinaryPrimitives.ReadUInt32BigEndian(chunk.Payload.AsSpan(i + 4))));
        }

        return list;
    }

    public Task DisconnectAsync() => SendRequestAsync(0, Wire.CmdDisc, NextCookie(), 0, 0);

    /// <summary>True when the server closes the connection (EOF or reset) within the timeout, without sending anything.</summary>
    public async Task<bool> ServerClosedAsync(TimeSpan? within = null)
    {
        using var cts = CancellationTokenSource.CreateLinkedTokenSource(TestContext.Current.CancellationToken);
        cts.CancelAfter(within ?? Timeout);
        var b = new byte[1];
        try
        {
            int n = await _stream.ReadAsync(b, cts.Token);
            return n == 0;
        }
        catch (IOException)
        {
            return true;
        }
        catch (OperationCanceledException)
        {
            return false;
        }
    }

    /// <summary>Drains whatever the server sends until it closes the connection; false on timeout.</summary>
    public async Task<bool> DrainUntilClosedAsync(TimeSpan within)
    {
        using var cts = CancellationTokenSource.CreateLinkedTokenSource(TestContext.Current.CancellationToken);
        cts.CancelAfter(within);
        var b = new byte[64 << 10];
        try
        {
            while (await _stream.ReadAsync(b, cts.Token) > 0)
            {
            }

            return true;
        }
        catch (IOException)
        {
            return true;
        }
        catch (OperationCanceledException)
        {
            return false;
        }
    }

    public ValueTask DisposeAsync() => _stream.DisposeAsync();
}
