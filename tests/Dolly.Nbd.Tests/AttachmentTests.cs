using Dolly.Nbd.Tests.Support;

namespace Dolly.Nbd.Tests;

/// <summary>
/// <see cref="ExportAttachments"/> as the server keeps it: a client holds an export from the handshake option that
/// names it until it leaves; <see cref="ExportAttachments.RunDetached{T}"/> runs only when nobody holds it.
/// </summary>
public sealed class AttachmentTests
{
    [Fact]
    public async Task ClientsHoldWhatTheyOpened_UntilTheyLeave_ThenReleasedIsRaised()
    {
        await using var server = TestServer.Start();
        server.CreateVolume("a", 1 << 20);
        server.CreateVolume("b", 1 << 20);
        var attachments = server.Server.Attachments;
        var released = new System.Collections.Concurrent.ConcurrentQueue<string>();
        attachments.Released += released.Enqueue;

        await using var unix = await server.ConnectAsync();
        await unix.GoAsync("a");
        await using var tcp = await server.ConnectTcpAsync();
        await tcp.GoAsync("a");
        await using var other = await server.ConnectAsync();
        await other.GoAsync("b");

        var holders = attachments.HoldersOf("a");
        Assert.Equal(2, holders.Count);
        Assert.Contains(holders, h => h.Client == "unix socket");
        Assert.Contains(holders, h => h.Client.StartsWith("tcp 127.0.0.1:", StringComparison.Ordinal));
        Assert.Equal(["a", "b"], attachments.HeldExports());
        Assert.False(attachments.RunDetached("a", () => true).Ran);

        await unix.DisposeAsync();
        await Until(() => attachments.HoldersOf("a").Count == 1);
        Assert.Empty(released);
        await tcp.DisposeAsync();
        await Until(() => attachments.HoldersOf("a").Count == 0);
        await Until(() => released.Contains("a"));
        Assert.Equal(["b"], attachments.HeldExports());
        var (ran, result, left) = attachments.RunDetached("a", () => 42);
        Assert.Equal((true, 42, 0), (ran, result, left.Count));
    }

    [Fact]
    public async Task InfoOnly_HoldsUntilTheClientMovesOnOrLeaves()
    {
        await using var server = TestServer.Start();
        server.CreateVolume("a", 1 << 20);
        server.CreateVolume("b", 1 << 20);
        var attachments = server.Server.Attachments;

        await using var client = await server.ConnectAsync();
        await client.HandshakeAsync();
        await client.OptionAsync(Wire.OptInfo, RawNbdClient.InfoRequest("a"));
        Assert.Single(attachments.HoldersOf("a"));

        // Selecting another export moves the hold there.
        var go = await client.OptionAsync(Wire.OptGo, RawNbdClient.InfoRequest("b"));
        Assert.Equal(Wire.RepAck, go[^1].Type);
        Assert.Empty(attachments.HoldersOf("a"));
        Assert.Single(attachments.HoldersOf("b"));
    }

    [Fact]
    public async Task UnknownExport_HoldsNothing()
    {
        await using var server = TestServer.Start();
        await using var client = await server.ConnectAsync();
        await client.HandshakeAsync();
        var go = await client.OptionAsync(Wire.OptGo, RawNbdClient.InfoRequest("missing"));
        Assert.Equal(Wire.RepErrUnknown, go[^1].Type);
        Assert.Empty(server.Server.Attachments.HeldExports());
    }

    [Fact]
    public async Task RunDetached_HoldsOffAnAttachUntilTheChangeIsDone()
    {
        await using var server = TestServer.Start();
        server.CreateVolume("a", 1 << 20);
        var attachments = server.Server.Attachments;
        using var inChange = new ManualResetEventSlim();
        using var finish = new ManualResetEventSlim();
        var change = Task.Run(() => attachments.RunDetached("a", () =>
        {
            inChange.Set();
            finish.Wait(TestContext.Current.CancellationToken);
            return attachments.HoldersOf("a").Count;
        }));
        inChange.Wait(TestContext.Current.CancellationToken);

        await using var client = await server.ConnectAsync();
        var going = client.GoAsync("a");
        await Task.Delay(200, TestContext.Current.CancellationToken);
        Assert.False(going.IsCompleted, "the client attached while a detached change ran");
        finish.Set();

        var (ran, holdersSeenInside, _) = await change;
        await going;
        Assert.True(ran);
        Assert.Equal(0, holdersSeenInside);
        Assert.Single(attachments.HoldersOf("a"));
    }

    private static async Task Until(Func<bool> condition)
    {
        var deadline = DateTime.UtcNow.AddSeconds(60);
        while (!condition())
        {
            Assert.True(DateTime.UtcNow < deadline, "timed out after 60 s");
            await Task.Delay(10, TestContext.Current.CancellationToken);
        }
    }
}
