using System.Buffers.Binary;
using System.Text;
using Dolly.Nbd.Tests.Support;

namespace Dolly.Nbd.Tests;

/// <summary>Option haggling, one option at a time, with a hand-written client.</summary>
public sealed class ProtocolOptionTests
{
    private static TestServer Start()
    {
        var server = TestServer.Start();
        var vol = server.CreateVolume("vol", 8 << 20);
        vol.Write(0, Data.Random(4096, 1)).ThrowIfFailed();
        server.Pool.CreateSnapshot("vol", "snap").ThrowIfFailed();
        server.CreateVolume("other", 1 << 20);
        return server;
    }

    [Fact]
    public async Task Greeting_OffersFixedNewstyleAndNoZeroes()
    {
        await using var server = Start();
        await using var c = await server.ConnectAsync();
        Assert.Equal(Wire.HandshakeFixedNewstyle | Wire.HandshakeNoZeroes, await c.ReadGreetingAsync());
    }

    [Fact]
    public async Task ExportName_Known_SendsSizeAndFlags_ThenServes()
    {
        await using var server = Start();
        await using var c = await server.ConnectAsync();
        await c.HandshakeAsync();
        await c.SendOptionAsync(Wire.OptExportName, Encoding.UTF8.GetBytes("vol"));

        var reply = await c.ReadBytesAsync(10);
        Assert.Equal(8UL << 20, BinaryPrimitives.ReadUInt64BigEndian(reply));
        ushort flags = BinaryPrimitives.ReadUInt16BigEndian(reply.AsSpan(8));
        Assert.Equal(Wire.TFlagHasFlags, flags & Wire.TFlagHasFlags);
        Assert.Equal(0, flags & Wire.TFlagReadOnly);

        var read = await c.ReadAsync(0, 4096);
        Assert.Equal(0u, read.Error);
        Assert.Equal(Data.Random(4096, 1), read.Data);
    }

    [Fact]
    public async Task ExportName_WithoutNoZeroes_Sends124ZeroBytes()
    {
        await using var server = Start();
        await using var c = await server.ConnectAsync();
        await c.HandshakeAsync(Wire.ClientFixedNewstyle);
        await c.SendOptionAsync(Wire.OptExportName, Encoding.UTF8.GetBytes("snap"));

        var reply = await c.ReadBytesAsync(134);
        Assert.NotEqual(0, BinaryPrimitives.ReadUInt16BigEndian(reply.AsSpan(8)) & Wire.TFlagReadOnly);
        Assert.All(reply.Skip(10), b => Assert.Equal(0, b));
        Assert.Equal(0u, (await c.ReadAsync(0, 512)).Error);
    }

    [Fact]
    public async Task ExportName_Unknown_Disconnects()
    {
        await using var server = Start();
        await using var c = await server.ConnectAsync();
        await c.HandshakeAsync();
        await c.SendOptionAsync(Wire.OptExportName, Encoding.UTF8.GetBytes("nope"));
        Assert.True(await c.ServerClosedAsync(), "the server must close the connection: EXPORT_NAME has no error reply");
    }

    [Fact]
    public async Task Abort_AcksAndCloses()
    {
        await using var server = Start();
        await using var c = await server.ConnectAsync();
        await c.HandshakeAsync();
        var replies = await c.OptionAsync(Wire.OptAbort);
        Assert.Equal(Wire.RepAck, Assert.Single(replies).Type);
        Assert.True(await c.ServerClosedAsync());
    }

    [Fact]
    public async Task List_NamesEveryExport_WithDataIsInvalid_AndHagglingContinues()
    {
        await using var server = Start();
        await using var c = await server.ConnectAsync();
        await c.HandshakeAsync();

        var bad = await c.OptionAsync(Wire.OptList, [1, 2, 3]);
        Assert.Equal(Wire.RepErrInvalid, Assert.Single(bad).Type);

        var replies = await c.OptionAsync(Wire.OptList);
        Assert.Equal(Wire.RepAck, replies[^1].Type);
        var names = replies.Where(r => r.Type == Wire.RepServer).Select(r =>
        {
            int n = (int)BinaryPrimitives.ReadUInt32BigEndian(r.Data);
            return Encoding.UTF8.GetString(r.Data, 4, n);
        }).ToList();
        Assert.Equal(["other", "snap", "vol"], names);

        // Still in option haggling: GO works.
        var go = await c.OptionAsync(Wire.OptGo, RawNbdClient.InfoRequest("vol"));
        Assert.Equal(Wire.RepAck, go[^1].Type);
    }

    [Fact]
    public async Task Info_KnownExport_GivesExportNameDescriptionBlockSize_AndStaysInHaggling()
    {
        await using var server = Start();
        await using var c = await server.ConnectAsync();
        await c.HandshakeAsync();

        var replies = await c.OptionAsync(Wire.OptInfo, RawNbdClient.InfoRequest("snap", Wire.InfoName, Wire.InfoDescription, Wire.InfoBlockSize));
        Assert.Equal(Wire.RepAck, replies[^1].Type);
        var info = RawNbdClient.ParseInfo(replies, new Dictionary<string, uint>());
        Assert.Equal(8UL << 20, info.Size);
        Assert.True(info.ReadOnly);
        Assert.Equal("snap", info.Name);
        Assert.Contains("snapshot of vol", info.Description, StringComparison.Ordinal);
        Assert.Equal((1u, 4096u, 32u << 20), (info.MinBlock, info.PreferredBlock, info.MaxBlock));

        // INFO does not end haggling.
        var list = await c.OptionAsync(Wire.OptList);
        Assert.Equal(Wire.RepAck, list[^1].Type);
    }

    [Theory]
    [InlineData(Wire.OptInfo)]
    [InlineData(Wire.OptGo)]
    public async Task InfoOrGo_UnknownExport_ErrUnknown_AndHagglingContinues(uint option)
    {
        await using var server = Start();
        await using var c = await server.ConnectAsync();
        await c.HandshakeAsync();

        var replies = await c.OptionAsync(option, RawNbdClient.InfoRequest("missing"));
        var reply = Assert.Single(replies);
        Assert.Equal(Wire.RepErrUnknown, reply.Type);
        Assert.Contains("missing", reply.Text, StringComparison.Ordinal);

        var go = await c.OptionAsync(Wire.OptGo, RawNbdClient.InfoRequest("vol"));
        Assert.Equal(Wire.RepAck, go[^1].Type);
        Assert.Equal(0u, (await c.ReadAsync(0, 4096)).Error);
    }

    [Theory]
    [InlineData(new byte[] { 0, 0, 0 })]
    [InlineData(new byte[] { 0, 0, 0, 9, 0, 0 })]
    [InlineData(new byte[] { 0, 0, 0, 3, (byte)'v', (byte)'o', (byte)'l', 0, 2, 0, 1 })]
    public async Task Go_MalformedData_ErrInvalid(byte[] data)
    {
        await using var server = Start();
        await using var c = await server.ConnectAsync();
        await c.HandshakeAsync();
        var replies = await c.OptionAsync(Wire.OptGo, data);
        Assert.Equal(Wire.RepErrInvalid, Assert.Single(replies).Type);
    }

    [Fact]
    public async Task StructuredReply_Acked_WithDataInvalid()
    {
        await using var server = Start();
        await using var c = await server.ConnectAsync();
        await c.HandshakeAsync();
        Assert.Equal(Wire.RepErrInvalid, Assert.Single(await c.OptionAsync(Wire.OptStructuredReply, [0])).Type);
        Assert.Equal(Wire.RepAck, Assert.Single(await c.OptionAsync(Wire.OptStructuredReply)).Type);

        // With structured replies negotiated, GO advertises DF.
        var go = await c.OptionAsync(Wire.OptGo, RawNbdClient.InfoRequest("vol"));
        var info = RawNbdClient.ParseInfo(go, new Dictionary<string, uint>());
        Assert.NotEqual(0, info.Flags & Wire.TFlagSendDf);
    }

    [Fact]
    public async Task ListMetaContext_AllQueriesAndPrefixes()
    {
        await using var server = Start();
        server.Pool.CreateSnapshot("vol", "snap2").ThrowIfFailed();
        await using var c = await server.ConnectAsync();
        await c.HandshakeAsync();

        Assert.Equal(["base:allocation", "dolly:delta:snap", "dolly:delta:snap2"], await ListContextsAsync(c, "vol"));
        Assert.Equal(["dolly:delta:snap", "dolly:delta:snap2"], await ListContextsAsync(c, "vol", "dolly:delta:"));
        Assert.Equal(["base:allocation"], await ListContextsAsync(c, "vol", "base:"));
        Assert.Equal(["base:allocation"], await ListContextsAsync(c, "vol", "base:allocation", "qemu:dirty-bitmap:x"));
        Assert.Empty(await ListContextsAsync(c, "vol", "unknown:thing"));

        // A snapshot offers the other snapshots of its lineage, never itself; another lineage offers none.
        Assert.Equal(["base:allocation", "dolly:delta:snap2"], await ListContextsAsync(c, "snap"));
        Assert.Equal(["base:allocation"], await ListContextsAsync(c, "other"));

        var unknown = await c.OptionAsync(Wire.OptListMetaContext, RawNbdClient.MetaContextRequest("missing"));
        Assert.Equal(Wire.RepErrUnknown, Assert.Single(unknown).Type);
        var malformed = await c.OptionAsync(Wire.OptListMetaContext, [0, 0, 0, 50, 1, 2]);
        Assert.Equal(Wire.RepErrInvalid, Assert.Single(malformed).Type);
    }

    [Fact]
    public async Task SetMetaContext_NeedsStructuredReplies_AssignsIds_UsedByBlockStatus()
    {
        await using var server = Start();
        await using var c = await server.ConnectAsync();
        await c.HandshakeAsync();

        var early = await c.OptionAsync(Wire.OptSetMetaContext, RawNbdClient.MetaContextRequest("vol", "base:allocation"));
        Assert.Equal(Wire.RepErrInvalid, Assert.Single(early).Type);

        await c.OptionAsync(Wire.OptStructuredReply);
        c.Structured = true;
        var set = await c.OptionAsync(Wire.OptSetMetaContext, RawNbdClient.MetaContextRequest("vol", "base:allocation", "dolly:delta:snap", "nope:x"));
        Assert.Equal(Wire.RepAck, set[^1].Type);
        var ids = set.Where(r => r.Type == Wire.RepMetaContext).ToDictionary(r => Encoding.UTF8.GetString(r.Data, 4, r.Data.Length - 4), r => BinaryPrimitives.ReadUInt32BigEndian(r.Data));
        Assert.Equal(["base:allocation", "dolly:delta:snap"], ids.Keys.Order());
        Assert.NotEqual(ids["base:allocation"], ids["dolly:delta:snap"]);

        var unknown = await c.OptionAsync(Wire.OptSetMetaContext, RawNbdClient.MetaContextRequest("missing", "base:allocation"));
        Assert.Equal(Wire.RepErrUnknown, Assert.Single(unknown).Type);

        // Select again (the last successful SET counts), then GO and ask for block status in both contexts.
        set = await c.OptionAsync(Wire.OptSetMetaContext, RawNbdClient.MetaContextRequest("vol", "base:allocation", "dolly:delta:snap"));
        ids = set.Where(r => r.Type == Wire.RepMetaContext).ToDictionary(r => Encoding.UTF8.GetString(r.Data, 4, r.Data.Length - 4), r => BinaryPrimitives.ReadUInt32BigEndian(r.Data));
        Assert.Equal(Wire.RepAck, (await c.OptionAsync(Wire.OptGo, RawNbdClient.InfoRequest("vol")))[^1].Type);

        var status = await c.CommandAsync(Wire.CmdBlockStatus, 0, 1 << 20);
        Assert.Equal(0u, status.Error);
        Assert.Equal([(64u << 10, 0u), ((1u << 20) - (64u << 10), Wire.StateHole | Wire.StateZero)], RawNbdClient.Descriptors(status, ids["base:allocation"]));
        Assert.Equal([(1u << 20, 0u)], RawNbdClient.Descriptors(status, ids["dolly:delta:snap"]));
    }

    [Fact]
    public async Task StartTls_WithoutTlsConfigured_IsRefused_AndHagglingContinues()
    {
        await using var server = Start();
        await using var c = await server.ConnectTcpAsync();
        await c.HandshakeAsync();
        var replies = await c.OptionAsync(Wire.OptStartTls);
        var reply = Assert.Single(replies);
        Assert.True(reply.IsError, reply.ToString());
        Assert.Equal(Wire.RepErrPolicy, reply.Type);
        Assert.Equal(Wire.RepAck, (await c.OptionAsync(Wire.OptGo, RawNbdClient.InfoRequest("vol")))[^1].Type);
    }

    [Theory]
    [InlineData(4u)]
    [InlineData(Wire.OptExtendedHeaders)]
    [InlineData(12u)]
    [InlineData(0xdeadu)]
    public async Task UnknownOption_ErrUnsup_AndHagglingContinues(uint option)
    {
        await using var server = Start();
        await using var c = await server.ConnectAsync();
        await c.HandshakeAsync();
        var replies = await c.OptionAsync(option, [1, 2, 3, 4]);
        Assert.Equal(Wire.RepErrUnsup, Assert.Single(replies).Type);
        Assert.Equal(Wire.RepAck, (await c.OptionAsync(Wire.OptList))[^1].Type);
    }

    [Fact]
    public async Task OversizedOption_DataSkipped_ErrTooBig_AndHagglingContinues()
    {
        await using var server = Start();
        await using var c = await server.ConnectAsync();
        await c.HandshakeAsync();
        int length = server.Options.MaxOptionLength + 1;
        await c.SendAsync(RawNbdClient.OptionFrame(Wire.OptGo, new byte[length]));
        var reply = await c.ReadOptionReplyAsync();
        Assert.Equal(Wire.RepErrTooBig, reply.Type);
        Assert.Equal(Wire.RepAck, (await c.OptionAsync(Wire.OptList))[^1].Type);
    }

    [Fact]
    public async Task HugeOption_Disconnects()
    {
        await using var server = Start();
        await using var c = await server.ConnectAsync();
        await c.HandshakeAsync();
        await c.SendAsync(RawNbdClient.OptionFrame(Wire.OptGo, [], declaredLength: 0xfffffff0));
        Assert.True(await c.ServerClosedAsync());
    }

    [Fact]
    public async Task OldStyleClientFlags_OnlyExportNameAllowed()
    {
        await using var server = Start();
        await using (var c = await server.ConnectAsync())
        {
            await c.HandshakeAsync(0);
            await c.SendOptionAsync(Wire.OptList);
            Assert.True(await c.ServerClosedAsync(), "a client without fixed newstyle gets no error replies: only EXPORT_NAME");
        }

        await using (var c = await server.ConnectAsync())
        {
            await c.HandshakeAsync(0);
            await c.SendOptionAsync(Wire.OptExportName, Encoding.UTF8.GetBytes("vol"));
            var reply = await c.ReadBytesAsync(134);
            Assert.Equal(8UL << 20, BinaryPrimitives.ReadUInt64BigEndian(reply));
            Assert.Equal(0u, (await c.ReadAsync(0, 4096)).Error);
        }
    }

    private static async Task<List<string>> ListContextsAsync(RawNbdClient c, string export, params string[] queries)
    {
        var replies = await c.OptionAsync(Wire.OptListMetaContext, RawNbdClient.MetaContextRequest(export, queries));
        Assert.Equal(Wire.RepAck, replies[^1].Type);
        return replies.Where(r => r.Type == Wire.RepMetaContext)
            .Select(r =>
            {
                Assert.Equal(0u, BinaryPrimitives.ReadUInt32BigEndian(r.Data));
                return Encoding.UTF8.GetString(r.Data, 4, r.Data.Length - 4);
            })
            .Order(StringComparer.Ordinal)
            .ToList();
    }
}
