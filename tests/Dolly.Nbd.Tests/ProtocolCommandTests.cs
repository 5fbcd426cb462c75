using Dolly.Nbd.Tests.Support;
using Dolly.Storage;

namespace Dolly.Nbd.Tests;

/// <summary>Transmission-phase commands, their error paths and their durability, with a hand-written client.</summary>
public sealed class ProtocolCommandTests
{
    private const uint Size = 8 << 20;
    private const int Block = 64 << 10;

    private static TestServer Start(Func<NbdServerOptions, NbdServerOptions>? configure = null)
    {
        var server = TestServer.Start(configure);
        var vol = server.CreateVolume("vol", Size);
        vol.Write(0, Data.Random(Block, 1)).ThrowIfFailed();
        server.Pool.CreateSnapshot("vol", "snap").ThrowIfFailed();
        return server;
    }

    private static async Task<RawNbdClient> OpenAsync(TestServer server, string export, bool structured, params string[] contexts)
    {
        var c = await server.ConnectAsync();
        await c.GoAsync(export, structured, contexts);
        return c;
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task ReadWriteFlushTrimZeroesCache_RoundTrip(bool structured)
    {
        await using var server = Start();
        await using var c = await OpenAsync(server, "vol", structured);
        var data = Data.Random(100_000, 2);

        Assert.Equal(0u, (await c.WriteAsync(12345, data)).Error);
        Assert.Equal(data, (await c.ReadAsync(12345, (uint)data.Length)).Data);
        Assert.Equal(0u, (await c.FlushAsync()).Error);

        Assert.Equal(0u, (await c.CommandAsync(Wire.CmdTrim, 20000, 30000)).Error);
        Assert.Equal(0u, (await c.CommandAsync(Wire.CmdWriteZeroes, 60000, 10000)).Error);
        var expected = data.ToArray();
        Array.Clear(expected, 20000 - 12345, 30000);
        Array.Clear(expected, 60000 - 12345, 10000);
        Assert.Equal(expected, (await c.ReadAsync(12345, (uint)data.Length)).Data);

        Assert.Equal(0u, (await c.CommandAsync(Wire.CmdCache, 0, 1 << 20)).Error);
        Assert.Equal(expected, Data.ReadAll(server.Pool, "vol").AsSpan(12345, data.Length).ToArray());
    }

    [Fact]
    public async Task SimpleReplies_WithoutStructured_ErrorHasNoPayload()
    {
        await using var server = Start();
        await using var c = await OpenAsync(server, "vol", structured: false);

        // A failed read carries no data: the next reply must parse cleanly right after the 16-byte header.
        Assert.Equal(Wire.EInval, (await c.ReadAsync(Size - 10, 4096)).Error);
        Assert.Equal(Data.Random(Block, 1).AsSpan(0, 4096).ToArray(), (await c.ReadAsync(0, 4096)).Data);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task ReadBeyondEnd_EInval(bool structured)
    {
        await using var server = Start();
        await using var c = await OpenAsync(server, "vol", structured);
        Assert.Equal(Wire.EInval, (await c.ReadAsync(Size - 512, 1024)).Error);
        Assert.Equal(Wire.EInval, (await c.ReadAsync(Size, 1)).Error);
        Assert.Equal(Wire.EInval, (await c.ReadAsync(ulong.MaxValue - 10, 4096)).Error);
        Assert.Equal(0u, (await c.ReadAsync(Size - 512, 512)).Error);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task ZeroLengthRead_SucceedsWithoutContentChunks(bool structured)
    {
        // proto.md: a zero-length read is unspecified but SHOULD NOT disconnect, and every structured content
        // chunk MUST describe at least one byte (libnbd rejects an empty OFFSET_DATA chunk).
        await using var server = Start();
        await using var c = await OpenAsync(server, "vol", structured);
        var r = await c.ReadAsync(4096, 0);
        Assert.Equal(0u, r.Error);
        if (structured)
        {
            Assert.Equal(Wire.ReplyTypeNone, Assert.Single(r.Chunks).Type);
        }

        Assert.Equal(Data.Random(Block, 1).AsSpan(0, 4096).ToArray(), (await c.ReadAsync(0, 4096)).Data);
    }

    [Fact]
    public async Task WriteTrimZeroesBeyondEnd_ENoSpc()
    {
        await using var server = Start();
        await using var c = await OpenAsync(server, "vol", structured: true);
        Assert.Equal(Wire.ENoSpc, (await c.WriteAsync(Size - 100, new byte[200])).Error);
        Assert.Equal(Wire.ENoSpc, (await c.WriteAsync(ulong.MaxValue - 50, new byte[100])).Error);
        Assert.Equal(Wire.ENoSpc, (await c.CommandAsync(Wire.CmdTrim, Size, 4096)).Error);
        Assert.Equal(Wire.ENoSpc, (await c.CommandAsync(Wire.CmdWriteZeroes, Size - 4096, 8192)).Error);
        Assert.Equal(0u, (await c.WriteAsync(Size - 100, new byte[100])).Error);
    }

    [Fact]
    public async Task WriteTrimZeroesToSnapshot_EPerm_NothingChanges()
    {
        await using var server = Start();
        await using var c = await OpenAsync(server, "snap", structured: true);
        var before = Data.Sha256(Data.ReadAll(server.Pool, "snap"));

        var write = await c.WriteAsync(0, new byte[4096]);
        Assert.Equal(Wire.EPerm, write.Error);
        Assert.Contains("read-only", write.Message, StringComparison.Ordinal);
        Assert.Equal(Wire.EPerm, (await c.CommandAsync(Wire.CmdTrim, 0, 4096)).Error);
        Assert.Equal(Wire.EPerm, (await c.CommandAsync(Wire.CmdWriteZeroes, 0, 4096)).Error);
        Assert.Equal(0u, (await c.FlushAsync()).Error);
        Assert.Equal(Data.Random(Block, 1), (await c.ReadAsync(0, Block)).Data);
        Assert.Equal(before, Data.Sha256(Data.ReadAll(server.Pool, "snap")));
    }

    [Fact]
    public async Task OversizedRead_EInval_ConnectionContinues()
    {
        await using var server = Start(o => o with { MaxPayload = 1 << 20, MaxInFlightBytesPerConnection = 2 << 20 });
        await using var c = await OpenAsync(server, "vol", structured: true);
        var r = await c.ReadAsync(0, (1 << 20) + 1);
        Assert.Equal(Wire.EInval, r.Error);
        Assert.Contains("maximum", r.Message, StringComparison.Ordinal);
        Assert.Equal(0u, (await c.ReadAsync(0, 1 << 20)).Error);
    }

    [Fact]
    public async Task OversizedWrite_Disconnects_OtherClientsUnaffected()
    {
        await using var server = Start(o => o with { MaxPayload = 1 << 20, MaxInFlightBytesPerConnection = 2 << 20 });
        await using var other = await OpenAsync(server, "vol", structured: true);
        await using var c = await OpenAsync(server, "vol", structured: true);

        await c.SendRequestAsync(0, Wire.CmdWrite, 1, 0, (1 << 20) + 1);
        Assert.True(await c.DrainUntilClosedAsync(RawNbdClient.Timeout));
        Assert.Equal(Data.Random(Block, 1), (await other.ReadAsync(0, Block)).Data);
    }

    [Theory]
    [InlineData((ushort)8)]
    [InlineData((ushort)11)]
    [InlineData((ushort)0xffff)]
    public async Task UnknownCommand_EInval_ConnectionContinues(ushort type)
    {
        await using var server = Start();
        await using var c = await OpenAsync(server, "vol", structured: true);
        Assert.Equal(Wire.EInval, (await c.CommandAsync(type, 0, 0)).Error);
        Assert.Equal(0u, (await c.ReadAsync(0, 4096)).Error);
    }

    [Theory]
    [InlineData(Wire.CmdRead, (ushort)0x40)]
    [InlineData(Wire.CmdRead, Wire.CmdFlagNoHole)]
    [InlineData(Wire.CmdRead, Wire.CmdFlagReqOne)]
    [InlineData(Wire.CmdWrite, Wire.CmdFlagDf)]
    [InlineData(Wire.CmdWrite, Wire.CmdFlagNoHole)]
    [InlineData(Wire.CmdTrim, Wire.CmdFlagNoHole)]
    [InlineData(Wire.CmdFlush, (ushort)0x100)]
    [InlineData(Wire.CmdCache, Wire.CmdFlagDf)]
    [InlineData(Wire.CmdWriteZeroes, Wire.CmdFlagDf)]
    public async Task UnknownFlags_EInval(ushort type, ushort flags)
    {
        await using var server = Start();
        await using var c = await OpenAsync(server, "vol", structured: true, "base:allocation");
        uint length = 4096;
        var payload = type == Wire.CmdWrite ? new byte[length] : null;
        var r = await c.CommandAsync(type, 0, length, flags, payload);
        Assert.Equal(Wire.EInval, r.Error);
        Assert.Equal(Data.Random(Block, 1), (await c.ReadAsync(0, Block)).Data);
    }

    [Theory]
    [InlineData(Wire.CmdRead)]
    [InlineData(Wire.CmdFlush)]
    [InlineData(Wire.CmdCache)]
    [InlineData(Wire.CmdBlockStatus)]
    [InlineData(Wire.CmdWrite)]
    [InlineData(Wire.CmdTrim)]
    [InlineData(Wire.CmdWriteZeroes)]
    public async Task FuaFlag_AcceptedOnEveryCommand(ushort type)
    {
        // proto.md: with NBD_FLAG_SEND_FUA negotiated the server MUST accept FUA on all commands (clients are
        // known to set it on flushes and reads), ignoring it where nothing is written.
        await using var server = Start();
        await using var c = await OpenAsync(server, "vol", structured: true, "base:allocation");
        var payload = type == Wire.CmdWrite ? new byte[4096] : null;
        var r = await c.CommandAsync(type, Block, type == Wire.CmdFlush ? 0u : 4096u, Wire.CmdFlagFua, payload);
        Assert.Equal(0u, r.Error);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task BlockStatus_WithoutContext_EInval(bool structured)
    {
        await using var server = Start();
        await using var c = await OpenAsync(server, "vol", structured);
        Assert.Equal(Wire.EInval, (await c.CommandAsync(Wire.CmdBlockStatus, 0, 4096)).Error);
        Assert.Equal(0u, (await c.ReadAsync(0, 4096)).Error);
    }

    [Fact]
    public async Task BlockStatus_BothContexts_ReqOne_AndBounds()
    {
        await using var server = Start();
        var vol = server.Pool.OpenDevice("vol").Value;
        vol.Write(4 * Block, Data.Random(Block, 3)).ThrowIfFailed();
        await using var c = await server.ConnectAsync();
        var info = await c.GoAsync("vol", true, "base:allocation", "dolly:delta:snap");
        uint alloc = info.Contexts["base:allocation"], delta = info.Contexts["dolly:delta:snap"];

        var all = await c.CommandAsync(Wire.CmdBlockStatus, 0, 8 * Block);
        Assert.Equal(0u, all.Error);
        Assert.Equal([(Block, 0u), (3 * Block, 3u), (Block, 0u), (3 * Block, 3u)], RawNbdClient.Descriptors(all, alloc).Select(d => ((int)d.Length, d.Flags)));
        Assert.Equal([(4 * Block, 0u), (Block, Wire.StateDirty), (3 * Block, 0u)], RawNbdClient.Descriptors(all, delta).Select(d => ((int)d.Length, d.Flags)));

        var one = await c.CommandAsync(Wire.CmdBlockStatus, Block / 2, 8 * Block, Wire.CmdFlagReqOne);
        Assert.Equal([(Block / 2, 0u)], RawNbdClient.Descriptors(one, alloc).Select(d => ((int)d.Length, d.Flags)));
        Assert.Single(RawNbdClient.Descriptors(one, delta));

        Assert.Equal(Wire.EInval, (await c.CommandAsync(Wire.CmdBlockStatus, Size, 4096)).Error);
        Assert.Equal(Wire.EInval, (await c.CommandAsync(Wire.CmdBlockStatus, 0, 0)).Error);
    }

    [Fact]
    public async Task WriteZeroes_NoHoleAndFastZero_ENotSup_FastZeroAlone_Unmaps_NoHoleAlone_Allocates()
    {
        await using var server = Start();
        await using var c = await OpenAsync(server, "vol", structured: true);
        Assert.Equal(0u, (await c.WriteAsync(2 * Block, Data.Random(2 * Block, 4))).Error);

        var both = await c.CommandAsync(Wire.CmdWriteZeroes, 2 * Block, Block, Wire.CmdFlagNoHole | Wire.CmdFlagFastZero);
        Assert.Equal(Wire.ENotSup, both.Error);
        Assert.Equal(Data.Random(2 * Block, 4), (await c.ReadAsync(2 * Block, 2 * Block)).Data);

        Assert.Equal(0u, (await c.CommandAsync(Wire.CmdWriteZeroes, 2 * Block, Block, Wire.CmdFlagFastZero)).Error);
        Assert.Equal(0u, (await c.CommandAsync(Wire.CmdWriteZeroes, 3 * Block, Block, Wire.CmdFlagNoHole)).Error);
        Assert.Equal(new byte[2 * Block], (await c.ReadAsync(2 * Block, 2 * Block)).Data);

        var allocated = server.Pool.GetAllocatedRanges("vol", 2 * Block, 2 * Block).Value;
        Assert.Equal([new ByteRange(3 * Block, Block)], allocated);
    }

    [Fact]
    public async Task StructuredRead_HolesAsOffsetHole_DfAsOneDataChunk()
    {
        await using var server = Start();
        await using var c = await OpenAsync(server, "vol", structured: true);
        Assert.Equal(0u, (await c.WriteAsync(3 * Block, Data.Random(Block, 5))).Error);

        // [0,64K) data, [64K,192K) hole, [192K,256K) data, [256K,320K) hole.
        var sparse = await c.ReadAsync(0, 5 * Block);
        Assert.Equal(0u, sparse.Error);
        Assert.Equal(
            [(Wire.ReplyTypeOffsetData, 0UL), (Wire.ReplyTypeOffsetHole, (ulong)Block), (Wire.ReplyTypeOffsetData, 3UL * Block), (Wire.ReplyTypeOffsetHole, 4UL * Block)],
            sparse.Chunks.Select(ch => (ch.Type, ch.Offset)));
        Assert.True(sparse.Chunks[^1].Done);
        Assert.All(sparse.Chunks.SkipLast(1), ch => Assert.False(ch.Done));
        var expected = new byte[5 * Block];
        Data.Random(Block, 1).CopyTo(expected, 0);
        Data.Random(Block, 5).CopyTo(expected, 3 * Block);
        Assert.Equal(expected, sparse.Data);

        var df = await c.ReadAsync(0, 5 * Block, Wire.CmdFlagDf);
        var chunk = Assert.Single(df.Chunks);
        Assert.Equal(Wire.ReplyTypeOffsetData, chunk.Type);
        Assert.True(chunk.Done);
        Assert.Equal(expected, df.Data);

        // A read entirely inside a hole is one hole chunk.
        var hole = await c.ReadAsync(Block, 2 * Block);
        Assert.Equal(Wire.ReplyTypeOffsetHole, Assert.Single(hole.Chunks).Type);
    }

    [Fact]
    public async Task FuaWrite_SurvivesACrash_UnflushedWriteNeedNot()
    {
        await using var server = Start();
        await using var c = await OpenAsync(server, "vol", structured: true);
        var fua = Data.Random(Block, 6);
        var plain = Data.Random(Block, 7);

        Assert.Equal(0u, (await c.WriteAsync(2 * Block, fua, Wire.CmdFlagFua)).Error);
        string afterFua = server.CrashCopy();
        Assert.Equal(0u, (await c.WriteAsync(5 * Block, plain)).Error);
        string afterPlain = server.CrashCopy();
        Assert.Equal(0u, (await c.CommandAsync(Wire.CmdTrim, 0, Block, Wire.CmdFlagFua)).Error);
        string afterTrim = server.CrashCopy();

        using (var p = Pool.Open(afterFua).Value)
        {
            Assert.Equal(fua, ReadRange(p, 2 * Block, Block));
        }

        using (var p = Pool.Open(afterPlain).Value)
        {
            // The crash image is what a crash would leave: the FUA write is there, the plain one is not
            // (no background commit ran); this proves the copy really is a crash image.
            Assert.Equal(fua, ReadRange(p, 2 * Block, Block));
            Assert.Equal(new byte[Block], ReadRange(p, 5 * Block, Block));
        }

        using (var p = Pool.Open(afterTrim).Value)
        {
            Assert.Equal(new byte[Block], ReadRange(p, 0, Block));
            Assert.Equal(plain, ReadRange(p, 5 * Block, Block));
        }
    }

    [Fact]
    public async Task MultiConn_WriteOnA_FlushOnB_IsDurable()
    {
        await using var server = Start();
        await using var a = await OpenAsync(server, "vol", structured: true);
        await using var b = await OpenAsync(server, "vol", structured: false);
        var data = Data.Random(3 * Block, 8);

        Assert.Equal(0u, (await a.WriteAsync(Block, data)).Error);
        Assert.Equal(0u, (await b.FlushAsync()).Error);
        string copy = server.CrashCopy();

        using var p = Pool.Open(copy).Value;
        Assert.Equal(data, ReadRange(p, Block, 3 * Block));
        Assert.True(p.Check().IsClean);
    }

    [Fact]
    public async Task Pipelined_ManyRequestsInFlight_EveryCookieAnsweredOnce()
    {
        await using var server = Start();
        await using var c = await OpenAsync(server, "vol", structured: true);
        var sent = new Dictionary<ulong, (ushort Type, ulong Offset, uint Length)>();
        var frames = new List<byte>();
        for (int i = 0; i < 200; i++)
        {
            ulong cookie = c.NextCookie();
            ulong offset = (ulong)(i % 64) * 4096;
            if (i % 3 == 0)
            {
                frames.AddRange(RawNbdClient.RequestFrame(0, Wire.CmdWrite, cookie, (1UL << 20) + offset, 4096));
                frames.AddRange(Data.Random(4096, i));
                sent[cookie] = (Wire.CmdWrite, offset, 4096);
            }
            else
            {
                frames.AddRange(RawNbdClient.RequestFrame(0, Wire.CmdRead, cookie, offset, 4096));
                sent[cookie] = (Wire.CmdRead, offset, 4096);
            }
        }

        var send = c.SendAsync(frames.ToArray());
        var answered = new HashSet<ulong>();
        for (int i = 0; i < sent.Count; i++)
        {
            var chunk = await c.ReadChunkAsync();
            while (!chunk.Done)
            {
                chunk = await c.ReadChunkAsync();
            }

            Assert.True(sent.ContainsKey(chunk.Cookie), $"unknown cookie {chunk.Cookie}");
            Assert.True(answered.Add(chunk.Cookie), $"cookie {chunk.Cookie} answered twice");
            Assert.False(chunk.IsError);
        }

        await send;
    }

    [Fact]
    public async Task Disconnect_AnswersOutstandingRequestsFirst()
    {
        // proto.md, NBD_CMD_DISC: "The server MUST handle all outstanding requests" before closing.
        await using var server = Start();
        await using var c = await OpenAsync(server, "vol", structured: false);

        // Warm up: one request completed already, so the connection has been idle once.
        Assert.Equal(0u, (await c.ReadAsync(0, 4096)).Error);

        var frames = new List<byte>();
        const int Count = 32;
        for (int i = 0; i < Count; i++)
        {
            frames.AddRange(RawNbdClient.RequestFrame(0, Wire.CmdRead, c.NextCookie(), 0, 1 << 20));
        }

        frames.AddRange(RawNbdClient.RequestFrame(0, Wire.CmdDisc, c.NextCookie(), 0, 0));
        await c.SendAsync(frames.ToArray());
        for (int i = 0; i < Count; i++)
        {
            var (error, _) = await c.ReadSimpleReplyAsync();
            Assert.Equal(0u, error);
            await c.ReadBytesAsync(1 << 20);
        }

        Assert.True(await c.ServerClosedAsync());
    }

    private static byte[] ReadRange(Pool pool, long offset, int length)
    {
        var buf = new byte[length];
        pool.OpenDevice("vol").Value.Read(offset, buf).ThrowIfFailed();
        return buf;
    }
}
