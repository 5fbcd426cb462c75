using System.Diagnostics;
using System.Net.Sockets;
using System.Text;
using Dolly.Nbd.Tests.Support;

namespace Dolly.Nbd.Tests;

/// <summary>Clients that misbehave: each gets an error or a clean disconnect, and everyone else is served.</summary>
public sealed class RobustnessTests
{
    private const int Block = 64 << 10;

    private static TestServer Start(Func<NbdServerOptions, NbdServerOptions>? configure = null)
    {
        var server = TestServer.Start(configure);
        server.CreateVolume("vol", 64 << 20).Write(0, Data.Random(Block, 1)).ThrowIfFailed();
        return server;
    }

    /// <summary>A well-behaved client proves the server still serves: GO, read, write, read back.</summary>
    private static async Task AssertServesAsync(TestServer server)
    {
        await using var c = await server.ConnectAsync();
        await c.GoAsync("vol", structured: true);
        Assert.Equal(Data.Random(Block, 1), (await c.ReadAsync(0, Block)).Data);
        var data = Data.Random(4096, Environment.TickCount);
        Assert.Equal(0u, (await c.WriteAsync(1 << 20, data)).Error);
        Assert.Equal(data, (await c.ReadAsync(1 << 20, 4096)).Data);
        await c.DisconnectAsync();
    }

    [Fact]
    public async Task GarbageOptionMagic_Disconnects()
    {
        await using var server = Start();
        await using var c = await server.ConnectAsync();
        await c.HandshakeAsync();
        await c.SendAsync(Encoding.ASCII.GetBytes("GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
        Assert.True(await c.ServerClosedAsync());
        await AssertServesAsync(server);
    }

    [Theory]
    [InlineData(4u)]
    [InlineData(0x80000001u)]
    [InlineData(0xffffffffu)]
    public async Task UnknownClientFlags_Disconnects(uint flags)
    {
        await using var server = Start();
        await using var c = await server.ConnectAsync();
        await c.HandshakeAsync(flags);
        Assert.True(await c.ServerClosedAsync());
        await AssertServesAsync(server);
    }

    [Fact]
    public async Task BadRequestMagic_Disconnects()
    {
        await using var server = Start();
        await using var c = await server.ConnectAsync();
        await c.GoAsync("vol");
        await c.SendAsync(RawNbdClient.RequestFrame(0, Wire.CmdRead, 1, 0, 4096, magic: 0x12345678));
        Assert.True(await c.ServerClosedAsync());
        await AssertServesAsync(server);
    }

    public static TheoryData<string, int> TruncatedFrames => new()
    {
        { "client flags", 2 },
        { "option header", 11 },
        { "option data", 16 + 10 },
        { "request header", -14 },
        { "write payload", -(28 + 1000) },
    };

    [Theory]
    [MemberData(nameof(TruncatedFrames))]
    public async Task TruncatedFrame_ThenEof_ServerClosesAndServesOthers(string what, int bytes)
    {
        await using var server = Start();
        int baseline = server.Server.ConnectionCount;
        await using var c = await server.ConnectAsync();
        if (bytes >= 0)
        {
            await c.ReadGreetingAsync();
            var frame = new List<byte> { 0, 0, 0, 3 };
            frame.AddRange(RawNbdClient.OptionFrame(Wire.OptGo, RawNbdClient.InfoRequest("vol-with-a-long-name")));
            await c.SendAsync(frame.Take(what == "client flags" ? bytes : 4 + bytes).ToArray());
        }
        else
        {
            await c.GoAsync("vol");
            var frame = RawNbdClient.RequestFrame(0, Wire.CmdWrite, 1, 0, 4096).Concat(new byte[4096]).ToArray();
            await c.SendAsync(frame.AsMemory(0, -bytes));
        }

        c.Socket.Shutdown(SocketShutdown.Send);
        Assert.True(await c.DrainUntilClosedAsync(RawNbdClient.Timeout), $"server did not close after a truncated {what}");
        await Poll.UntilAsync(() => server.Server.ConnectionCount == baseline, RawNbdClient.Timeout, "the connection to be released");
        await AssertServesAsync(server);
    }

    [Fact]
    public async Task ClientVanishesMidWrite_NoAcknowledgement_WriteNotApplied_OthersServed()
    {
        await using var server = Start();
        await using var other = await server.ConnectAsync();
        await other.GoAsync("vol", structured: true);

        await using var c = await server.ConnectAsync();
        await c.GoAsync("vol", structured: true);
        var frame = RawNbdClient.RequestFrame(0, Wire.CmdWrite, 77, 0, Block).Concat(Data.Random(Block, 9)).ToArray();
        await c.SendAsync(frame.AsMemory(0, 28 + (Block / 2)));
        c.Socket.Shutdown(SocketShutdown.Send);

        // Half-closed, the client still listens: the server closes without ever acknowledging the write.
        var received = new MemoryStream();
        var buffer = new byte[4096];
        using (var cts = new CancellationTokenSource(RawNbdClient.Timeout))
        {
            int n;
            while ((n = await c.Stream.ReadAsync(buffer, cts.Token)) > 0)
            {
                received.Write(buffer, 0, n);
            }
        }

        Assert.Equal(0, received.Length);
        Assert.Equal(Data.Random(Block, 1), (await other.ReadAsync(0, Block)).Data);
        Assert.Equal(Data.Random(Block, 1), Data.ReadAll(server.Pool, "vol").AsSpan(0, Block).ToArray());
        Assert.Equal(0u, (await other.WriteAsync(Block, Data.Random(Block, 10))).Error);
    }

    [Fact]
    public async Task PipeliningClientThatReadsLate_ProtocolError_ClosedPromptly()
    {
        // The client sends reads, then a write larger than the payload limit with 1 MiB of its data, and reads
        // nothing until it has sent everything. The server stops reading at the bad write; its queued read
        // replies must be dropped, not waited for (waiting deadlocked: the client's send blocked on the bytes
        // the server no longer read, the server's replies on the client's full receive window).
        await using var server = Start(o => o with { MaxPayload = 1 << 20, MaxInFlightBytesPerConnection = 2 << 20 });
        server.Pool.OpenDevice("vol").Value.Write(2 << 20, Data.Random(1 << 20, 5)).ThrowIfFailed();
        int baseline = server.Server.ConnectionCount;
        await using var c = await server.ConnectAsync();
        await c.GoAsync("vol", structured: true);
        var frames = new List<byte>();
        for (int i = 0; i < 2; i++)
        {
            // Within the in-flight budget, so the server goes on to read the bad write. Allocated data, so that each reply really is 900 kB (holes would be sent as a few bytes).
            frames.AddRange(RawNbdClient.RequestFrame(0, Wire.CmdRead, (ulong)i + 1, 2 << 20, 900_000));
        }

        frames.AddRange(RawNbdClient.RequestFrame(0, Wire.CmdWrite, 9, 0, 2 << 20));
        frames.AddRange(new byte[4 << 20]);
        var sw = Stopwatch.StartNew();
        try
        {
            await c.SendAsync(frames.ToArray());
        }
        catch (IOException)
        {
            // Reset by the server while sending: that is the expected outcome too.
        }

        Assert.True(await c.DrainUntilClosedAsync(TimeSpan.FromSeconds(60)), "the server must close a broken connection without waiting for its replies to drain");
        Assert.True(sw.Elapsed < TimeSpan.FromSeconds(60), $"took {sw.Elapsed}");
        await Poll.UntilAsync(() => server.Server.ConnectionCount == baseline, RawNbdClient.Timeout, "the connection to be released");
        await AssertServesAsync(server);
    }

    [Fact]
    public async Task ClientResetsWithRepliesPending_ServerReleasesTheConnection()
    {
        await using var server = Start();
        int baseline = server.Server.ConnectionCount;
        var c = await server.ConnectAsync();
        await c.GoAsync("vol", structured: true);
        var frames = new List<byte>();
        for (int i = 0; i < 40; i++)
        {
            frames.AddRange(RawNbdClient.RequestFrame(0, Wire.CmdRead, (ulong)i + 1, 0, 1 << 20));
        }

        await c.SendAsync(frames.ToArray());
        c.Socket.LingerState = new LingerOption(true, 0);
        await c.DisposeAsync();

        await Poll.UntilAsync(() => server.Server.ConnectionCount == baseline, RawNbdClient.Timeout, "the reset connection to be released");
        await AssertServesAsync(server);
    }

    [Fact]
    public async Task SlowClient_NeverReadingReplies_DoesNotBlockOthers()
    {
        await using var server = Start(o => o with { MaxPayload = 1 << 20, MaxInFlightBytesPerConnection = 4 << 20 });
        await using var slow = await server.ConnectTcpAsync();
        slow.Socket.ReceiveBufferSize = 4096;
        await slow.GoAsync("vol", structured: true);

        // 256 MiB of reads requested, none of the replies read. The sender runs in the background: once the
        // server's budget and the socket buffers are full it blocks, which is the point.
        var frames = new byte[256 * 28];
        for (int i = 0; i < 256; i++)
        {
            RawNbdClient.RequestFrame(0, Wire.CmdRead, (ulong)i + 1, (ulong)i % 64 * (1 << 20), 1 << 20).CopyTo(frames, i * 28);
        }

        using var stopSlow = new CancellationTokenSource();
        var flood = slow.Stream.WriteAsync(frames, stopSlow.Token).AsTask();

        // Meanwhile another client gets prompt, correct service on the same export.
        var sw = Stopwatch.StartNew();
        await using var fast = await server.ConnectAsync();
        await fast.GoAsync("vol", structured: true);
        for (int i = 0; i < 50; i++)
        {
            var data = Data.Random(Block, 100 + i);
            Assert.Equal(0u, (await fast.WriteAsync((ulong)(2 + i) * Block, data)).Error);
            Assert.Equal(data, (await fast.ReadAsync((ulong)(2 + i) * Block, Block)).Data);
        }

        Assert.Equal(0u, (await fast.FlushAsync()).Error);
        // Blocked behind the slow client, the fast one would never finish (each request waits RawNbdClient.Timeout).
        Assert.True(sw.Elapsed < TimeSpan.FromSeconds(60), $"the fast client took {sw.Elapsed}");
        await AssertServesAsync(server);

        await stopSlow.CancelAsync();
        try
        {
            await flood;
        }
        catch (OperationCanceledException)
        {
        }
        catch (IOException)
        {
        }
    }

    [Fact]
    public async Task ServerDispose_WithBusyAndIdleClients_ClosesThemPromptly()
    {
        var server = Start(o => o with { MaxPayload = 1 << 20, MaxInFlightBytesPerConnection = 2 << 20 });
        try
        {
            server.Pool.OpenDevice("vol").Value.Write(0, Data.Random(4 << 20, 3)).ThrowIfFailed();
            await using var idle = await server.ConnectAsync();
            await idle.GoAsync("vol");
            await using var haggling = await server.ConnectAsync();
            await haggling.HandshakeAsync();
            await using var stuck = await server.ConnectTcpAsync();
            stuck.Socket.ReceiveBufferSize = 4096;
            await stuck.GoAsync("vol");
            var frames = new byte[16 * 28];
            for (int i = 0; i < 16; i++)
            {
                RawNbdClient.RequestFrame(0, Wire.CmdRead, (ulong)i + 1, 0, 1 << 20).CopyTo(frames, i * 28);
            }

            await stuck.SendAsync(frames);

            var sw = Stopwatch.StartNew();
            await server.StopServerAsync();
            // A stop that waited for the stuck client would never end; on a busy machine a prompt one can take seconds.
            Assert.True(sw.Elapsed < TimeSpan.FromSeconds(30), $"disposing the server took {sw.Elapsed}");
            Assert.Equal(0, server.Server.ConnectionCount);
            Assert.True(await idle.ServerClosedAsync());
            Assert.True(await haggling.ServerClosedAsync());
        }
        finally
        {
            await server.DisposeAsync();
        }
    }

    [Fact]
    public async Task MaxConnections_Enforced_AndFreedSlotsReused()
    {
        await using var server = Start(o => o with { MaxConnections = 2 });
        var first = await server.ConnectAsync();
        await first.GoAsync("vol");
        await using var second = await server.ConnectAsync();
        await second.GoAsync("vol");

        await using (var third = await server.ConnectAsync())
        {
            Assert.True(await third.ServerClosedAsync(), "a third connection must be closed at accept");
        }

        Assert.Equal(0u, (await second.ReadAsync(0, 4096)).Error);

        await first.DisconnectAsync();
        await first.DisposeAsync();
        await Poll.UntilAsync(() => server.Server.ConnectionCount < 2, RawNbdClient.Timeout, "the first connection to be released");
        await AssertServesAsync(server);
    }

    [Fact]
    public async Task HandshakeTimeout_SilentAndDribblingClientsAreClosed()
    {
        // Long enough that connecting and greeting the two clients below fits in it on a busy machine (with 500 ms
        // the server could close the "dribbling" client before its own handshake was done).
        var handshakeTimeout = TimeSpan.FromSeconds(5);
        await using var server = Start(o => o with { HandshakeTimeout = handshakeTimeout });
        await using var silent = await server.ConnectAsync();
        await silent.ReadGreetingAsync();

        await using var dribbling = await server.ConnectAsync();
        await dribbling.HandshakeAsync();
        var frame = RawNbdClient.OptionFrame(Wire.OptList, []);
        var sw = Stopwatch.StartNew();
        bool closed = false;
        try
        {
            // A client that keeps haggling (one valid option after another) but never picks an export must
            // not hold the connection forever.
            while (sw.Elapsed < TimeSpan.FromSeconds(60))
            {
                await dribbling.SendAsync(frame);
                await dribbling.ReadOptionRepliesAsync(Wire.OptList);
            }
        }
        catch (Exception e) when (e is IOException or EndOfStreamException or SocketException)
        {
            closed = true;
        }

        Assert.True(closed, "a client that haggles forever must be closed at the handshake timeout");
        Assert.True(sw.Elapsed < TimeSpan.FromSeconds(60), $"closed only after {sw.Elapsed}");
        Assert.True(await silent.ServerClosedAsync(TimeSpan.FromSeconds(60)), "a silent client must be closed at the handshake timeout");

        // The timeout is for haggling only: a connection in transmission may idle.
        await using var idle = await server.ConnectAsync();
        await idle.GoAsync("vol");
        // Idling longer than the handshake timeout is the scenario itself, not synchronisation.
        await Task.Delay(handshakeTimeout + TimeSpan.FromSeconds(1), TestContext.Current.CancellationToken);
        Assert.Equal(0u, (await idle.ReadAsync(0, 4096)).Error);
    }

    [Fact]
    public void Validate_RefusesUnsafeOrEmptyOptions()
    {
        Assert.Contains("no listener", new NbdServerOptions().Validate(), StringComparison.Ordinal);
        var exposed = new NbdServerOptions { TcpEndpoints = [new System.Net.IPEndPoint(System.Net.IPAddress.Any, 10809)] };
        Assert.Contains("without TLS", exposed.Validate(), StringComparison.Ordinal);
        Assert.Null(new NbdServerOptions { TcpEndpoints = [new System.Net.IPEndPoint(System.Net.IPAddress.Loopback, 0)] }.Validate());
        Assert.Null(new NbdServerOptions { TcpEndpoints = [new System.Net.IPEndPoint(System.Net.IPAddress.IPv6Loopback, 0)] }.Validate());
        Assert.NotNull(new NbdServerOptions { UnixSocketPath = "/tmp/x", MaxPayload = 100 }.Validate());
        Assert.NotNull(new NbdServerOptions { UnixSocketPath = "/tmp/x", MaxConnections = 0 }.Validate());

        using var dir = new TempDir();
        using var pool = Dolly.Storage.Pool.Create(dir.Sub("pool")).Value;
        var server = new NbdServer(new ExportCatalog(pool), exposed);
        var e = Assert.Throws<InvalidOperationException>(server.Start);
        Assert.Contains("without TLS", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task UnixSocket_IsMode0600_AndRemovedAtDispose()
    {
        await using var server = Start();
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(server.SocketPath));
        await server.StopServerAsync();
        Assert.False(File.Exists(server.SocketPath));
    }

    [Fact]
    public async Task UnixSocket_OfALiveServer_IsNotTakenOver()
    {
        await using var server = Start();
        var second = new NbdServer(new ExportCatalog(server.Pool), new NbdServerOptions { UnixSocketPath = server.SocketPath });
        var e = Assert.Throws<InvalidOperationException>(second.Start);
        Assert.Contains("already listening", e.Message, StringComparison.Ordinal);
    }
}
