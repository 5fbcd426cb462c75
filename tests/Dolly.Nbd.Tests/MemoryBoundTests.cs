using System.Net.Sockets;
using Dolly.Nbd.Tests.Support;

namespace Dolly.Nbd.Tests;

/// <summary>
/// Clients that send requests and never read the replies: the server's memory stays within its budgets, is
/// given back when they leave, and nobody else waits for them.
/// </summary>
public sealed class MemoryBoundTests
{
    private const int Mi = 1 << 20;

    /// <summary>Sends <paramref name="count"/> reads in the background and never reads a reply.</summary>
    private static async Task<(RawNbdClient Client, Task Flood)> NonReaderAsync(TestServer server, int count, uint length, bool tcp, CancellationToken stop)
    {
        // Over TCP, a tiny receive window makes the server's sends block soon; the unix socket keeps its
        // default buffers, for a client that reads everything in the end (a 4 KiB TCP window would crawl
        // on zero-window probes).
        var c = tcp ? await server.ConnectTcpAsync() : await server.ConnectAsync();
        if (tcp)
        {
            c.Socket.ReceiveBufferSize = 4096;
        }

        await c.GoAsync("vol");
        var frames = new byte[count * 28];
        for (int i = 0; i < count; i++)
        {
            RawNbdClient.RequestFrame(0, Wire.CmdRead, (ulong)i + 1, (ulong)(i % 4) * length, length).CopyTo(frames, i * 28);
        }

        return (c, SwallowAsync(c.Stream.WriteAsync(frames, stop).AsTask()));
    }

    private static async Task SwallowAsync(Task t)
    {
        try
        {
            await t;
        }
        catch (Exception e) when (e is OperationCanceledException or IOException or SocketException or ObjectDisposedException)
        {
            // The client is closed under its blocked send: that is how these tests end it.
        }
    }

    private static async Task AssertServedAsync(TestServer server, int seed)
    {
        await using var c = await server.ConnectAsync();
        await c.GoAsync("vol", structured: true);
        for (int i = 0; i < 8; i++)
        {
            var data = Data.Random(64 << 10, seed + i);
            ulong offset = (ulong)(40 + i) * (64 << 10);
            Assert.Equal(0u, (await c.WriteAsync(offset, data)).Error);
            Assert.Equal(data, (await c.ReadAsync(offset, 64 << 10)).Data);
        }

        Assert.Equal(0u, (await c.FlushAsync()).Error);
        await c.DisconnectAsync();
    }

    [Fact]
    public async Task NonReadersAtTheConnectionLimit_StayWithinTheServerBudget_OthersServed_MemoryGivenBack()
    {
        const int Connections = 8;
        long budget = (4 * Mi) + (8 * Mi) + (Connections * NbdBufferPool.ReservePerConnection);
        await using var server = TestServer.Start(o => o with
        {
            MaxConnections = Connections,
            MaxPayload = 4 * Mi,
            MaxInFlightBytesPerConnection = 8 * Mi,
            MaxBufferBytes = budget,
        });
        server.CreateVolume("vol", 64 * Mi).Write(0, Data.Random(16 * Mi, 1)).ThrowIfFailed();
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(TestContext.Current.CancellationToken);

        // Every slot but one taken by a client asking for 4 MiB reads (64 MiB each, far beyond any budget)
        // and reading nothing: simple replies (no holes), so every byte of every reply really is sent.
        var nonReaders = new List<(RawNbdClient Client, Task Flood)>();
        for (int i = 0; i < Connections - 1; i++)
        {
            nonReaders.Add(await NonReaderAsync(server, 16, 4 * Mi, tcp: true, stop.Token));
        }

        // They fill the shared part of the budget (the rest of their requests wait for it)...
        await Poll.UntilAsync(() => server.Server.BufferBytesInUse >= 8 * Mi, RawNbdClient.Timeout, "the non-readers to fill the shared budget");

        // ...and the last slot still gets prompt service: its 64 KiB requests fit its own reservation.
        await AssertServedAsync(server, 100);
        Assert.True(server.Server.BufferBytesPeak <= budget, $"the server held {server.Server.BufferBytesPeak} bytes, budget {budget}");
        Assert.True(server.Server.BufferBytesHeld <= budget);

        await stop.CancelAsync();
        foreach (var (client, flood) in nonReaders)
        {
            client.Socket.LingerState = new LingerOption(true, 0);
            await client.DisposeAsync();
            await flood;
        }

        await Poll.UntilAsync(() => server.Server.ConnectionCount == 0, RawNbdClient.Timeout, "the non-readers to be released");

        // Everything goes back: not kept in a pool for the life of the process.
        await Poll.UntilAsync(() => server.Server.BufferBytesHeld == 0, RawNbdClient.Timeout, "the buffers to be unmapped");
        Assert.Equal(0, server.Server.BufferBytesInUse);
        Assert.True(server.Server.BufferBytesPeak <= budget, $"the server held {server.Server.BufferBytesPeak} bytes, budget {budget}");
        await AssertServedAsync(server, 200);
    }

    [Fact]
    public async Task PipeliningSmallReadsWithoutReadingReplies_StallsOnlyItself_AtItsOwnBudget_AndLosesNothing()
    {
        const int Slots = 16;
        await using var server = TestServer.Start(o => o with { MaxInFlightRequestsPerConnection = Slots });
        server.CreateVolume("vol", 64 * Mi).Write(0, Data.Random(Mi, 3)).ThrowIfFailed();
        var expected = Data.Random(Mi, 3);
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(TestContext.Current.CancellationToken);

        // 20,000 requests of 4 KiB (80 MB of replies): far more than the socket buffers hold.
        const int Count = 20_000;
        var (slow, flood) = await NonReaderAsync(server, Count, 4096, tcp: false, stop.Token);

        // It stalls at its own budget: at most its request count of replies held, whatever it sends.
        await Poll.UntilAsync(() => server.Server.BufferBytesInUse > 0, RawNbdClient.Timeout, "the pipelined reads to start");
        Assert.True(server.Server.BufferBytesInUse <= Slots * 4096, $"{server.Server.BufferBytesInUse} bytes held for {Slots} requests of 4 KiB");
        for (int i = 0; i < 5; i++)
        {
            await AssertServedAsync(server, 300 + (10 * i));
        }

        // Once the others are gone, only its own requests hold buffers.
        await Poll.UntilAsync(() => server.Server.ConnectionCount == 1, RawNbdClient.Timeout, "the other clients to be released");
        Assert.True(server.Server.BufferBytesInUse <= Slots * 4096, $"{server.Server.BufferBytesInUse} bytes held for {Slots} requests of 4 KiB");

        // Then it reads: every reply arrives, in full and correct, and the rest of its requests are served.
        var seen = new HashSet<ulong>();
        for (int i = 0; i < Count; i++)
        {
            var (error, cookie) = await slow.ReadSimpleReplyAsync();
            Assert.Equal(0u, error);
            Assert.True(seen.Add(cookie), $"cookie {cookie} answered twice");
            var data = await slow.ReadBytesAsync(4096);
            int offset = (int)((cookie - 1) % 4) * 4096;
            Assert.True(expected.AsSpan(offset, 4096).SequenceEqual(data), $"reply {cookie} has the wrong data");
        }

        await flood;
        Assert.Equal(Count, seen.Count);
        await slow.DisposeAsync();
    }

    [Fact]
    public async Task ExportNameLongerThanTheOptionLimit_ClosesTheConnection()
    {
        // NBD_OPT_EXPORT_NAME has no reply, not even an error: a TOO_BIG reply would be read as export data.
        await using var server = TestServer.Start();
        server.CreateVolume("vol", 64 * Mi);
        await using var c = await server.ConnectAsync();
        await c.HandshakeAsync();
        await c.SendAsync(RawNbdClient.OptionFrame(Wire.OptExportName, new byte[server.Options.MaxOptionLength + 1]));
        Assert.True(await c.DrainUntilClosedAsync(RawNbdClient.Timeout), "the server must close, not answer");
        await AssertServedAsync(server, 400);
    }
}
