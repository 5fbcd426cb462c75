using System.Net.Sockets;
using Dolly.Nbd.Tests.Support;
using Microsoft.Extensions.Time.Testing;

namespace Dolly.Nbd.Tests;

/// <summary>Idle connections give their slot to newcomers; a client that stops reading replies is closed (fake clock).</summary>
public sealed class IdleTimeoutTests
{
    private const int Mi = 1 << 20;
    private static readonly TimeSpan Idle = TimeSpan.FromMinutes(5);

    private static TestServer Start(FakeTimeProvider time, int maxConnections = 64, Func<NbdServerOptions, NbdServerOptions>? configure = null)
    {
        var server = TestServer.Start(o => (configure ?? (x => x))(o with { MaxConnections = maxConnections, IdleTimeout = Idle }), time: time);
        server.CreateVolume("vol", 16 * Mi).Write(0, Data.Random(4 * Mi, 1)).ThrowIfFailed();
        return server;
    }

    private static async Task<RawNbdClient> OpenAsync(TestServer server)
    {
        var c = await server.ConnectAsync();
        await c.GoAsync("vol");
        return c;
    }

    [Fact]
    public async Task AtTheLimit_AConnectionIdlePastTheTimeout_GivesItsSlotToANewClient()
    {
        var time = new FakeTimeProvider();
        await using var server = Start(time, maxConnections: 2);
        await using var busy = await OpenAsync(server);
        await using var idle = await OpenAsync(server);

        // Full, and nobody idle long enough: the newcomer is refused.
        await using (var early = await server.ConnectAsync())
        {
            Assert.True(await early.ServerClosedAsync(), "no connection has been idle past the timeout yet");
        }

        time.Advance(Idle + TimeSpan.FromSeconds(1));
        Assert.Equal(0u, (await busy.ReadAsync(0, 4096)).Error);

        // The idle one (not the one that just read) makes room; the newcomer is served.
        await using var late = await OpenAsync(server);
        Assert.Equal(Data.Random(4 * Mi, 1).AsSpan(0, 4096).ToArray(), (await late.ReadAsync(0, 4096)).Data);
        Assert.True(await idle.ServerClosedAsync(), "the connection idle past the timeout must be closed");
        Assert.Equal(0u, (await busy.ReadAsync(4096, 4096)).Error);
        Assert.Contains(server.Log.Entries, e => e.EventId == 8);

        // Full again, both recently active: refused again.
        await using var refused = await server.ConnectAsync();
        Assert.True(await refused.ServerClosedAsync());
    }

    [Fact]
    public async Task BelowTheLimit_IdleConnectionsStayOpen()
    {
        // A mounted file system may leave its connection idle for hours, and nbdfuse and the kernel driver do
        // not reconnect: idleness alone never closes a connection.
        var time = new FakeTimeProvider();
        await using var server = Start(time, maxConnections: 4);
        await using var c = await OpenAsync(server);
        for (int i = 0; i < 10; i++)
        {
            time.Advance(Idle);
        }

        Assert.Equal(0u, (await c.ReadAsync(0, 4096)).Error);
    }

    [Fact]
    public async Task RepliesUnreadPastTheTimeout_ConnectionClosed_BufferGivenBack_OthersUntouched()
    {
        var time = new FakeTimeProvider();
        await using var server = Start(time, configure: o => o with { MaxPayload = Mi, MaxInFlightBytesPerConnection = 4 * Mi });
        await using var idle = await OpenAsync(server);
        var stuck = await server.ConnectTcpAsync();
        stuck.Socket.ReceiveBufferSize = 4096;
        await stuck.GoAsync("vol");
        var frames = new byte[64 * 28];
        for (int i = 0; i < 64; i++)
        {
            RawNbdClient.RequestFrame(0, Wire.CmdRead, (ulong)i + 1, (ulong)(i % 4) * Mi, Mi).CopyTo(frames, i * 28);
        }

        using var stop = CancellationTokenSource.CreateLinkedTokenSource(TestContext.Current.CancellationToken);
        var flood = stuck.Stream.WriteAsync(frames, stop.Token).AsTask();
        await Poll.UntilAsync(() => server.Server.BufferBytesInUse >= 4 * Mi, RawNbdClient.Timeout, "the stuck client's budget to fill");

        // The clock moves on with the replies still unread: the stuck connection is closed.
        await Poll.UntilAsync(
            () =>
            {
                time.Advance(Idle);
                return server.Server.ConnectionCount == 1;
            },
            RawNbdClient.Timeout,
            "the stuck connection to be closed");
        Assert.Contains(server.Log.Entries, e => e.EventId == 9);
        await Poll.UntilAsync(() => server.Server.BufferBytesInUse == 0, RawNbdClient.Timeout, "its buffers to come back");
        Assert.Equal(0u, (await idle.ReadAsync(0, 4096)).Error);

        await stop.CancelAsync();
        try
        {
            await flood;
        }
        catch (Exception e) when (e is OperationCanceledException or IOException or SocketException)
        {
        }

        await stuck.DisposeAsync();
    }
}
