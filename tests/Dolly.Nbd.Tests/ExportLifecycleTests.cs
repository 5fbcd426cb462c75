using Dolly.Nbd.Tests.Support;

namespace Dolly.Nbd.Tests;

/// <summary>
/// What a connected client sees when its export is deleted, grown or reverted underneath it. These tests
/// define the behaviour documented in docs/NBD.md ("Exports that change while connected").
/// </summary>
public sealed class ExportLifecycleTests
{
    private const int Block = 64 << 10;

    [Fact]
    public async Task Deleted_EveryDataCommandFailsWithEIoAndAMessage_OtherExportsKeepWorking()
    {
        await using var server = TestServer.Start();
        server.CreateVolume("vol", 8 << 20).Write(0, Data.Random(Block, 1)).ThrowIfFailed();
        server.CreateVolume("other", 8 << 20).Write(0, Data.Random(Block, 2)).ThrowIfFailed();
        await using var a = await server.ConnectAsync();
        await a.GoAsync("vol", true, "base:allocation");
        await using var simple = await server.ConnectAsync();
        await simple.GoAsync("vol");
        await using var b = await server.ConnectAsync();
        await b.GoAsync("other", true);
        Assert.Equal(Data.Random(Block, 1), (await a.ReadAsync(0, Block)).Data);

        server.Pool.Delete("vol").ThrowIfFailed();

        var read = await a.ReadAsync(0, 4096);
        Assert.Equal(Wire.EIo, read.Error);
        Assert.Contains("deleted", read.Message, StringComparison.Ordinal);
        var write = await a.WriteAsync(0, new byte[4096]);
        Assert.Equal(Wire.EIo, write.Error);
        Assert.Contains("deleted", write.Message, StringComparison.Ordinal);
        Assert.Equal(Wire.EIo, (await a.CommandAsync(Wire.CmdTrim, 0, 4096)).Error);
        Assert.Equal(Wire.EIo, (await a.CommandAsync(Wire.CmdWriteZeroes, 0, 4096)).Error);
        Assert.Equal(Wire.EIo, (await a.CommandAsync(Wire.CmdBlockStatus, 0, 4096)).Error);
        Assert.Equal(Wire.EIo, (await a.CommandAsync(Wire.CmdCache, 0, 4096)).Error);
        Assert.Equal(Wire.EIo, (await simple.ReadAsync(0, 4096)).Error);
        Assert.Equal(Wire.EIo, (await simple.WriteAsync(0, new byte[512])).Error);

        // FLUSH still succeeds (there is nothing of this export left to lose), and the connection stays
        // open until the client leaves.
        Assert.Equal(0u, (await a.FlushAsync()).Error);

        Assert.Equal(Data.Random(Block, 2), (await b.ReadAsync(0, Block)).Data);
        Assert.Equal(0u, (await b.WriteAsync(Block, Data.Random(Block, 3))).Error);

        // New connections no longer find it.
        await using var late = await server.ConnectAsync();
        await late.HandshakeAsync();
        Assert.Equal(Wire.RepErrUnknown, (await late.OptionAsync(Wire.OptGo, RawNbdClient.InfoRequest("vol")))[^1].Type);

        // A new volume of the same name is a different device: the old connection does not attach to it.
        server.CreateVolume("vol", 8 << 20).Write(0, Data.Random(Block, 4)).ThrowIfFailed();
        Assert.Equal(Wire.EIo, (await a.ReadAsync(0, 4096)).Error);
        Assert.Equal(Data.Random(Block, 4).AsSpan(0, 4096).ToArray(), Data.ReadAll(server.Pool, "vol").AsSpan(0, 4096).ToArray());
    }

    [Fact]
    public async Task DeletedSnapshot_ReadsFailWithEIo()
    {
        await using var server = TestServer.Start();
        server.CreateVolume("vol", 8 << 20).Write(0, Data.Random(Block, 1)).ThrowIfFailed();
        server.Pool.CreateSnapshot("vol", "snap").ThrowIfFailed();
        await using var c = await server.ConnectAsync();
        await c.GoAsync("snap", true);

        server.Pool.Delete("snap").ThrowIfFailed();

        var read = await c.ReadAsync(0, 4096);
        Assert.Equal(Wire.EIo, read.Error);
        Assert.Contains("deleted", read.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Grown_ConnectionKeepsWorking_NewSizeAfterReconnect_NewRangeReadsZerosAndTakesWrites()
    {
        await using var server = TestServer.Start();
        server.CreateVolume("vol", 8 << 20).Write((8 << 20) - Block, Data.Random(Block, 1)).ThrowIfFailed();
        await using var before = await server.ConnectAsync();
        var info = await before.GoAsync("vol", true);
        Assert.Equal(8UL << 20, info.Size);

        server.Pool.Resize("vol", 24 << 20).ThrowIfFailed();

        // The open connection keeps working within the size it was told.
        Assert.Equal(Data.Random(Block, 1), (await before.ReadAsync((8 << 20) - Block, Block)).Data);
        Assert.Equal(0u, (await before.WriteAsync(0, Data.Random(4096, 2))).Error);

        await using var after = await server.ConnectAsync();
        info = await after.GoAsync("vol", true);
        Assert.Equal(24UL << 20, info.Size);
        Assert.Equal(new byte[1 << 20], (await after.ReadAsync(16 << 20, 1 << 20)).Data);
        Assert.Equal(0u, (await after.WriteAsync((24 << 20) - 4096, Data.Random(4096, 3))).Error);
        Assert.Equal(Data.Random(4096, 3), (await after.ReadAsync((24 << 20) - 4096, 4096)).Data);
        Assert.Equal(Data.Random(Block, 1), (await after.ReadAsync((8 << 20) - Block, Block)).Data);
        Assert.Equal(Wire.EInval, (await after.ReadAsync(24 << 20, 4096)).Error);
    }

    [Fact]
    public async Task Reverted_ConnectionSeesTheSnapshotContentAtOnce()
    {
        await using var server = TestServer.Start();
        var vol = server.CreateVolume("vol", 8 << 20);
        vol.Write(0, Data.Random(2 * Block, 1)).ThrowIfFailed();
        server.Pool.CreateSnapshot("vol", "snap").ThrowIfFailed();
        await using var c = await server.ConnectAsync();
        var info = await c.GoAsync("vol", true, "dolly:delta:snap");
        uint delta = info.Contexts["dolly:delta:snap"];

        Assert.Equal(0u, (await c.WriteAsync(Block, Data.Random(3 * Block, 2))).Error);
        var dirty = await c.CommandAsync(Wire.CmdBlockStatus, 0, 8 * Block);
        Assert.Equal([(Block, 0u), (3 * Block, Wire.StateDirty), (4 * Block, 0u)], RawNbdClient.Descriptors(dirty, delta).Select(d => ((int)d.Length, d.Flags)));

        server.Pool.Revert("vol", "snap").ThrowIfFailed();

        var expected = new byte[4 * Block];
        Data.Random(2 * Block, 1).CopyTo(expected, 0);
        Assert.Equal(expected, (await c.ReadAsync(0, 4 * Block)).Data);
        var clean = await c.CommandAsync(Wire.CmdBlockStatus, 0, 8 * Block);
        Assert.Equal([(8 * Block, 0u)], RawNbdClient.Descriptors(clean, delta).Select(d => ((int)d.Length, d.Flags)));

        // Writes after the revert land on the reverted content.
        Assert.Equal(0u, (await c.WriteAsync(0, Data.Random(4096, 3))).Error);
        Assert.Equal(Data.Random(4096, 3), Data.ReadAll(server.Pool, "vol").AsSpan(0, 4096).ToArray());
    }

    [Fact]
    public async Task Grown_NbdinfoSeesTheNewSize()
    {
        Tools.Require("nbdinfo");
        await using var server = TestServer.Start();
        server.CreateVolume("vol", 8 << 20);
        Assert.Contains("8388608", (await Tools.RunAsync("nbdinfo", "--size", server.UnixUri("vol"))).EnsureSuccess().StdOut, StringComparison.Ordinal);
        server.Pool.Resize("vol", 16 << 20).ThrowIfFailed();
        Assert.Contains("16777216", (await Tools.RunAsync("nbdinfo", "--size", server.UnixUri("vol"))).EnsureSuccess().StdOut, StringComparison.Ordinal);
    }
}
