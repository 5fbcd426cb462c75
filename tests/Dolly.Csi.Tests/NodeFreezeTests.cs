using Dolly.Csi.NodeV1;
using Dolly.Csi.V1;
using Grpc.Core;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Time.Testing;

namespace Dolly.Csi.Tests;

/// <summary>
/// dolly.node.v1.DollyNode FreezeWindow on a volume staged for real (nbdfuse, loop device, ext4) with a fake clock
/// for the deadline: freeze, the file system really frozen (a second FIFREEZE is refused with EBUSY), thaw with the
/// window measured; the node thaws by itself at the deadline, when its caller goes away, and at its next start
/// after a crash; every refusal names its cause.
/// </summary>
public sealed class NodeFreezeTests : CsiTestBase
{
    private readonly FakeTimeProvider _clock;

    public NodeFreezeTests()
        : this(new FakeTimeProvider(DateTimeOffset.UnixEpoch))
    {
    }

    private NodeFreezeTests(FakeTimeProvider clock)
        : base(withNode: true, (options, _) => options with { NodeAttach = NodeAttachMode.Nbdfuse, TimeProvider = clock })
    {
        _clock = clock;
    }

    [Fact]
    public async Task Freeze_HoldsTheFileSystemFrozen_UntilThaw_AndMeasuresTheWindow()
    {
        NodeCleanup.RequireBlockStack();
        string staging = await StageAsync("pvc-freeze");
        var node = Client();

        using var call = node.FreezeWindow(cancellationToken: Token);
        await call.RequestStream.WriteAsync(FreezeRequest("pvc-freeze", 5000), Token);
        var frozen = await NextAsync(call);
        Assert.Equal(staging, frozen.Frozen.MountPath);
        Assert.True(IsFrozen(staging), "the staging mount is not frozen after the frozen answer");

        _clock.Advance(TimeSpan.FromMilliseconds(7));
        await call.RequestStream.WriteAsync(new FreezeWindowRequest { Thaw = new() }, Token);
        var thawed = await NextAsync(call);
        Assert.Equal(7000UL, thawed.Thawed.FrozenMicroseconds);
        Assert.False(thawed.Thawed.DeadlineExpired);
        Assert.False(IsFrozen(staging), "still frozen after the thawed answer");
        Assert.Empty(FrozenRecords());

        // Writable again: a write and fsync go through.
        await File.WriteAllTextAsync(Path.Combine(staging, "after.txt"), "thawed\n", Token);
    }

    [Fact]
    public async Task Deadline_ThawsWithoutTheCaller_AndTheLateThawSaysSo()
    {
        NodeCleanup.RequireBlockStack();
        string staging = await StageAsync("pvc-deadline");
        using var call = Client().FreezeWindow(cancellationToken: Token);
        await call.RequestStream.WriteAsync(FreezeRequest("pvc-deadline", 0), Token);
        await NextAsync(call);

        _clock.Advance(TimeSpan.FromMilliseconds(1999));
        Assert.True(IsFrozen(staging), "thawed before the default 2 s deadline");
        _clock.Advance(TimeSpan.FromMilliseconds(1));
        Assert.False(IsFrozen(staging), "not thawed at the default 2 s deadline");
        Assert.Empty(FrozenRecords());

        await call.RequestStream.WriteAsync(new FreezeWindowRequest { Thaw = new() }, Token);
        var thawed = await NextAsync(call);
        Assert.True(thawed.Thawed.DeadlineExpired);
        Assert.Equal(2_000_000UL, thawed.Thawed.FrozenMicroseconds);
    }

    [Fact]
    public async Task CallerGone_Thaws()
    {
        NodeCleanup.RequireBlockStack();
        string staging = await StageAsync("pvc-gone");
        using var cancel = CancellationTokenSource.CreateLinkedTokenSource(Token);
        var call = Client().FreezeWindow(cancellationToken: cancel.Token);
        await call.RequestStream.WriteAsync(FreezeRequest("pvc-gone", 60_000), Token);
        await NextAsync(call);
        Assert.True(IsFrozen(staging));

        // The caller dies (the stream is reset) long before the deadline: the node thaws at once.
        await cancel.CancelAsync();
        call.Dispose();
        await UntilAsync(() => !IsFrozen(staging), "the thaw after the caller went away");
        await UntilAsync(() => FrozenRecords().Count == 0, "the freeze record removed");
    }

    [Fact]
    public async Task Restart_ThawsWhatACrashLeftFrozen()
    {
        NodeCleanup.RequireBlockStack();
        string staging = await StageAsync("pvc-crash");
        string state = Path.Combine(Dir, "node");

        // What a node process that died mid-window leaves: the file system frozen (the kernel closed its handle,
        // which does not thaw) and its record.
        Assert.Equal(0, NodeFreezeIoctl.Freeze(staging));
        Directory.CreateDirectory(Path.Combine(state, "frozen"));
        await File.WriteAllTextAsync(
            Path.Combine(state, "frozen", "pvc-crash.json"),
            System.Text.Json.JsonSerializer.Serialize(new FrozenMount("pvc-crash", staging), FrozenJsonContext.Default.FrozenMount),
            Token);
        await File.WriteAllTextAsync(Path.Combine(state, "frozen", "torn.json"), "{\"VolumeId\":", Token);
        Assert.True(IsFrozen(staging));

        var restarted = new NodeFreezer(state, TimeProvider.System, NullLogger.Instance);
        Assert.Equal([staging], restarted.ThawLeftovers());
        Assert.False(IsFrozen(staging), "the restarted node did not thaw the leftover freeze");
        Assert.Empty(FrozenRecords());
    }

    [Fact]
    public async Task Refusals_NameTheirCause_AndNeverLeaveAFreeze()
    {
        NodeCleanup.RequireBlockStack();
        string staging = await StageAsync("pvc-busy");
        var node = Client();

        await AssertWindowFails(node, FreezeRequest("", 100), StatusCode.InvalidArgument, "volume_id");
        await AssertWindowFails(node, FreezeRequest("../etc", 100), StatusCode.InvalidArgument, "../etc");
        await AssertWindowFails(node, FreezeRequest("pvc-busy", 60_001), StatusCode.InvalidArgument, "60001 ms");
        await AssertWindowFails(node, new FreezeWindowRequest { Thaw = new() }, StatusCode.InvalidArgument, "first message must be freeze");
        await AssertWindowFails(node, FreezeRequest("pvc-nowhere", 100), StatusCode.NotFound, "pvc-nowhere", "not staged on this node");

        var block = await CreateVolumeAsync("pvc-block", 16 * MiB);
        await Nodes.NodeStageVolumeAsync(new NodeStageVolumeRequest { VolumeId = block.VolumeId, StagingTargetPath = Path.Combine(Dir, "staging", "blk"), VolumeCapability = BlockCapability() }, cancellationToken: Token);
        await AssertWindowFails(node, FreezeRequest(block.VolumeId, 100), StatusCode.FailedPrecondition, "block access");

        // Frozen by someone else (an operator's fsfreeze): refused, and their freeze is left alone.
        Assert.Equal(0, NodeFreezeIoctl.Freeze(staging));
        try
        {
            await AssertWindowFails(node, FreezeRequest("pvc-busy", 100), StatusCode.Aborted, "already frozen");
            Assert.True(IsFrozen(staging));
        }
        finally
        {
            Assert.Equal(0, NodeFreezeIoctl.Thaw(staging));
        }

        // A second window while one is open: refused; the first still works.
        using var first = node.FreezeWindow(cancellationToken: Token);
        await first.RequestStream.WriteAsync(FreezeRequest("pvc-busy", 5000), Token);
        await NextAsync(first);
        await AssertWindowFails(node, FreezeRequest("pvc-busy", 100), StatusCode.Aborted, "another freeze");
        await first.RequestStream.WriteAsync(new FreezeWindowRequest { Thaw = new() }, Token);
        Assert.False((await NextAsync(first)).Thawed.DeadlineExpired);
        Assert.False(IsFrozen(staging));
        Assert.Empty(FrozenRecords());
    }

    private DollyNode.DollyNodeClient Client() => new(Connect(SocketPath));

    private async Task<string> StageAsync(string name)
    {
        var volume = await CreateVolumeAsync(name, 32 * MiB);
        string staging = Path.Combine(Dir, "staging", volume.VolumeId);
        await Nodes.NodeStageVolumeAsync(new NodeStageVolumeRequest { VolumeId = volume.VolumeId, StagingTargetPath = staging, VolumeCapability = MountCapability() }, cancellationToken: Token);
        return staging;
    }

    private static FreezeWindowRequest FreezeRequest(string volumeId, uint timeoutMs) =>
        new() { Freeze = new FreezeWindowRequest.Types.Freeze { VolumeId = volumeId, TimeoutMs = timeoutMs } };

    private static async Task<FreezeWindowResponse> NextAsync(AsyncDuplexStreamingCall<FreezeWindowRequest, FreezeWindowResponse> call)
    {
        Assert.True(await call.ResponseStream.MoveNext(Token), "the node ended the stream early");
        return call.ResponseStream.Current;
    }

    private static async Task AssertWindowFails(DollyNode.DollyNodeClient node, FreezeWindowRequest first, StatusCode code, params string[] mentions)
    {
        await AssertStatus(code, async () =>
        {
            using var call = node.FreezeWindow(cancellationToken: Token);
            await call.RequestStream.WriteAsync(first, Token);
            await call.RequestStream.CompleteAsync();
            while (await call.ResponseStream.MoveNext(Token))
            {
            }
        }, mentions);
    }

    [Fact]
    public async Task Restart_ThroughTheServer_ThawsBeforeServing()
    {
        NodeCleanup.RequireBlockStack();
        string staging = await StageAsync("pvc-restart");
        string state = Path.Combine(Dir, "node");
        Assert.Equal(0, NodeFreezeIoctl.Freeze(staging));
        Directory.CreateDirectory(Path.Combine(state, "frozen"));
        await File.WriteAllTextAsync(
            Path.Combine(state, "frozen", "pvc-restart.json"),
            System.Text.Json.JsonSerializer.Serialize(new FrozenMount("pvc-restart", staging), FrozenJsonContext.Default.FrozenMount),
            Token);

        // The same driver started again (its pool is this one; only the node's start-up matters here).
        await Server.StopAsync(Token);
        Assert.True(IsFrozen(staging));
        await Server.StartAsync(Token);
        Assert.False(IsFrozen(staging), "the restarted server did not thaw what its previous run left frozen");
        Assert.Empty(FrozenRecords());
    }

    /// <summary>Whether the file system is frozen: a FIFREEZE of a frozen one fails with EBUSY (one that succeeds is undone).</summary>
    private static bool IsFrozen(string path)
    {
        int errno = NodeFreezeIoctl.Freeze(path);
        if (errno == 0)
        {
            Assert.Equal(0, NodeFreezeIoctl.Thaw(path));
            return false;
        }

        Assert.Equal(NodeFreezeIoctl.EBusy, errno);
        return true;
    }

    private List<string> FrozenRecords()
    {
        string dir = Path.Combine(Dir, "node", "frozen");
        return Directory.Exists(dir) ? [.. Directory.EnumerateFiles(dir)] : [];
    }

    private static async Task UntilAsync(Func<bool> condition, string what)
    {
        var give = DateTime.UtcNow + TimeSpan.FromSeconds(60);
        while (!condition())
        {
            Assert.True(DateTime.UtcNow < give, $"timed out after 60 s waiting for {what}");
            await Task.Delay(20, Token);
        }
    }
}
