using System.Buffers.Binary;
using System.Net.Sockets;
using System.Text;
using Dolly.Controllers.Golden;
using Dolly.Controllers.Model;
using Grpc.Core;
using Grpc.Core.Interceptors;
using k8s;
using k8s.Models;

namespace Dolly.Controllers.Tests.Golden;

/// <summary>
/// OnNextAttach refreshes on the embedded stack with the driver serving the node (one record of NBD clients, as on
/// <c>dolly up</c>): a consumer whose volume an NBD client holds waits, with the holder in status, and takes the new
/// revision when the client lets go; and each way a refresh is refused (the revision larger than the volume, its
/// snapshot gone, the driver unreachable) is reported per claim, changes nothing, and clears once the cause does.
/// </summary>
public sealed class GoldenRefreshTests
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    /// <summary>Waits on conditions only: the controller looks again every <see cref="GoldenController.RefreshPoll"/>, far below this.</summary>
    private const int Patience = 60;

    [Fact]
    public async Task Attached_WaitsWithTheHolder_RefreshedWhenLetGo_ThenTheOldRevisionRetires()
    {
        await using var h = await ControllerHarness.StartAsync("golden-attach", Ct, node: true);
        var g = new GoldenStack(h);
        await g.NamespaceAsync("prod");
        var source = await g.ClaimWithDataAsync("prod", "db", 0x11);
        await g.NamespaceAsync("held");
        await g.NamespaceAsync("free");
        await g.CreateGoldenAsync("app", new
        {
            source = new { persistentVolumeClaim = new { @namespace = "prod", name = "db" } },
            namespaces = new[] { "held", "free" },
            snapshotName = "app",
            claim = new { name = "data", storageClassName = "dolly", refreshPolicy = "OnNextAttach" },
            revisionHistoryLimit = 1,
        });
        await g.StatusAsync("app", x => x.Status is { CurrentRevision: 1, Ready: "2/2" } s && s.Namespaces!.All(n => n.ClaimPhase == "Bound"), "revision 1 with bound claims", Patience);

        using (var hold = await NbdHold.OpenAsync(h.Stack.NbdSocket, await VolumeHandleAsync(g, "held", "data")))
        {
            await g.WriteAsync(source, 0x22);
            await g.PatchGoldenAsync("app", new { metadata = new { annotations = new Dictionary<string, string> { [GoldenNames.PublishNowAnnotation] = "1" } } });
            var waiting = await g.StatusAsync(
                "app",
                x => x.Status is { CurrentRevision: 2, Ready: "2/2" } s && s.Namespaces!.Single(n => n.Name == "free").ClaimRevision == 2 && s.Namespaces!.Single(n => n.Name == "held").RefreshPending is [_]
                    && GoldenStack.Condition(x, GoldenNames.Progressing)?.Reason == "Refreshing",
                "free refreshed, held waiting",
                Patience);
            string note = Assert.Single(waiting.Status!.Namespaces!.Single(n => n.Name == "held").RefreshPending!);
            Assert.StartsWith("data (revision 1): takes revision 2 at its next attach (held by NBD client #", note, StringComparison.Ordinal);
            var progressing = GoldenStack.Condition(waiting, GoldenNames.Progressing)!;
            Assert.Equal(("True", "Refreshing"), (progressing.Status, progressing.Reason));
            Assert.StartsWith("1 OnNextAttach claim(s) take revision 2", progressing.Message, StringComparison.Ordinal);
            Assert.Equal(["not yet refreshed: claim held/data"], waiting.Status.Revisions!.Single(r => r.Revision == 1).HeldBy);
            Assert.Equal(0x11, await g.FirstByteAsync("held", "data"));
            Assert.Equal(0x22, await g.FirstByteAsync("free", "data"));
            var claim = await g.K.CoreV1.ReadNamespacedPersistentVolumeClaimAsync("data", "held", cancellationToken: Ct);
            Assert.Equal(("1", "2"), (claim.Metadata.Annotations[GoldenNames.ClaimRevisionAnnotation], claim.Metadata.Annotations[GoldenNames.RefreshRequestAnnotation]));
        }

        // Let go: the driver applies the request, the controller sees it at its next look, and revision 1 goes.
        var done = await g.StatusAsync("app", x => x.Status!.Namespaces!.All(n => n.ClaimRevision == 2 && n.RefreshPending is null) && x.Status.Revisions is [{ Revision: 2 }], "held refreshed and revision 1 retired", Patience);
        Assert.Equal(("False", "Complete"), (GoldenStack.Condition(done, GoldenNames.Progressing)!.Status, GoldenStack.Condition(done, GoldenNames.Progressing)!.Reason));
        Assert.Equal(0x22, await g.FirstByteAsync("held", "data"));
        var after = await g.K.CoreV1.ReadNamespacedPersistentVolumeClaimAsync("data", "held", cancellationToken: Ct);
        Assert.False(after.Metadata.Annotations.ContainsKey(GoldenNames.RefreshRequestAnnotation));
        var events = await g.K.CoreV1.ListNamespacedEventAsync("held", cancellationToken: Ct);
        Assert.Contains(events.Items, e => e.InvolvedObject.Name == "data" && e.Reason == "Refreshed" && e.Message.StartsWith("its volume now holds revision 2 of GoldenSnapshot app", StringComparison.Ordinal));

        // Nothing of the driver's requests is left behind.
        Assert.Empty(Directory.Exists(Path.Combine(h.Stack.Pool.Directory, "content-requests")) ? Directory.GetFiles(Path.Combine(h.Stack.Pool.Directory, "content-requests")) : []);
    }

    [Fact]
    public async Task RevisionLargerThanTheVolume_Refused_UntilTheClaimGrows()
    {
        await using var h = await ControllerHarness.StartAsync("golden-size", Ct, node: true);
        var g = new GoldenStack(h);
        string small = PoolSnapshot(h, "small", 64 << 20, 0x31);
        string large = PoolSnapshot(h, "large", 128 << 20, 0x32);
        await g.NamespaceAsync("team");
        await g.CreateGoldenAsync("sized", new { source = new { snapshotHandle = small }, namespaces = new[] { "team" }, snapshotName = "sized", revisionHistoryLimit = 1 });
        await g.StatusAsync("sized", x => x.Status is { CurrentRevision: 1, Ready: "1/1" }, "revision 1", Patience);
        await ConsumerAsync(g, "team", "mine", "sized", "64Mi");
        Assert.Equal(0x31, await g.FirstByteAsync("team", "mine"));

        await g.PatchGoldenAsync("sized", new { spec = new { source = new { snapshotHandle = large } } });
        var refused = await g.StatusAsync("sized", x => x.Status is { CurrentRevision: 2, Ready: "1/1" } s && s.Namespaces!.Single().RefreshPending is [_], "the refresh refused", Patience);
        Assert.Equal(
            "mine (revision 1): refresh to revision 2 refused: revision 2 needs 128Mi (134217728 bytes) and volume " + (await ClaimAsync(g, "team", "mine")).Spec.VolumeName + " has 67108864 bytes; grow the claim to at least 128Mi",
            Assert.Single(refused.Status!.Namespaces!.Single().RefreshPending!));
        Assert.Equal(0x31, await g.FirstByteAsync("team", "mine"));
        Assert.Equal(["not yet refreshed: claim team/mine"], refused.Status.Revisions!.Single(r => r.Revision == 1).HeldBy);

        // Grown, it takes revision 2.
        await g.K.CoreV1.PatchNamespacedPersistentVolumeClaimAsync(new V1Patch("""{"spec":{"resources":{"requests":{"storage":"128Mi"}}}}""", V1Patch.PatchType.MergePatch), "mine", "team", cancellationToken: Ct);
        await Eventually.Until(async () => await ClaimRevisionAsync(g, "team", "mine") == "2", "mine refreshed after growing", Patience);
        await g.StatusAsync("sized", x => x.Status!.Namespaces!.Single().RefreshPending is null, "nothing waiting", Patience);
        Assert.Equal(0x32, await g.FirstByteAsync("team", "mine"));
    }

    [Fact]
    public async Task SnapshotGoneBeforeTheVolumeWasLetGo_RefusedAndTheVolumeKept()
    {
        await using var h = await ControllerHarness.StartAsync("golden-gone", Ct, node: true);
        var g = new GoldenStack(h);
        string first = PoolSnapshot(h, "first", 64 << 20, 0x41);
        string second = PoolSnapshot(h, "second", 64 << 20, 0x42);
        await g.NamespaceAsync("team");
        await g.CreateGoldenAsync("gone", new { source = new { snapshotHandle = first }, namespaces = new[] { "team" }, snapshotName = "gone" });
        await g.StatusAsync("gone", x => x.Status is { CurrentRevision: 1, Ready: "1/1" }, "revision 1", Patience);
        await ConsumerAsync(g, "team", "mine", "gone", "64Mi");

        using (await NbdHold.OpenAsync(h.Stack.NbdSocket, await VolumeHandleAsync(g, "team", "mine")))
        {
            await g.PatchGoldenAsync("gone", new { spec = new { source = new { snapshotHandle = second } } });
            await g.StatusAsync("gone", x => x.Status!.Namespaces!.Single().RefreshPending is [var p] && p.Contains("at its next attach", StringComparison.Ordinal), "the refresh waiting for the holder", Patience);

            // Someone deletes revision 2's snapshot on the driver (`dolly snapshot delete`) while the request waits.
            Assert.True(h.Stack.Pool.Delete(second).IsOk);
        }

        var refused = await g.StatusAsync("gone", x => x.Status!.Namespaces!.Single().RefreshPending is [var p] && p.Contains("refused", StringComparison.Ordinal), "the refresh refused", Patience);
        string note = Assert.Single(refused.Status!.Namespaces!.Single().RefreshPending!);
        Assert.StartsWith("mine (revision 1): refresh to revision 2 refused: ", note, StringComparison.Ordinal);
        Assert.Contains(second, note, StringComparison.Ordinal);
        Assert.Equal(0x41, await g.FirstByteAsync("team", "mine"));
        Assert.Equal("1", await ClaimRevisionAsync(g, "team", "mine"));
    }

    [Fact]
    public async Task ClaimDeletedWhileItsRefreshWaits_TheDriversRequestIsWithdrawn()
    {
        await using var h = await ControllerHarness.StartAsync("golden-orphan", Ct, node: true);
        var g = new GoldenStack(h);
        string first = PoolSnapshot(h, "first", 64 << 20, 0x61);
        string second = PoolSnapshot(h, "second", 64 << 20, 0x62);
        await g.NamespaceAsync("team");
        await g.CreateGoldenAsync("orphan", new { source = new { snapshotHandle = first }, namespaces = new[] { "team" }, snapshotName = "orphan" });
        await g.StatusAsync("orphan", x => x.Status is { CurrentRevision: 1, Ready: "1/1" }, "revision 1", Patience);
        await ConsumerAsync(g, "team", "mine", "orphan", "64Mi");
        string uid = (await ClaimAsync(g, "team", "mine")).Metadata.Uid;
        string requests = Path.Combine(h.Stack.Pool.Directory, "content-requests");
        string request = Path.Combine(requests, GoldenRefresher.RequestId(uid, 2) + ".json");

        using (await NbdHold.OpenAsync(h.Stack.NbdSocket, await VolumeHandleAsync(g, "team", "mine")))
        {
            await g.PatchGoldenAsync("orphan", new { spec = new { source = new { snapshotHandle = second } } });
            await g.StatusAsync("orphan", x => x.Status!.Namespaces!.Single().RefreshPending is [var p] && p.Contains("at its next attach", StringComparison.Ordinal), "the refresh waiting for the holder", Patience);
            Assert.True(File.Exists(request));

            await g.K.CoreV1.DeleteNamespacedPersistentVolumeClaimAsync("mine", "team", cancellationToken: Ct);
            await Eventually.Until(() => Task.FromResult(!File.Exists(request)), "the deleted claim's request withdrawn", Patience);
        }
    }

    [Fact]
    public async Task DriverUnreachable_ReportedAndRetried_ThenRefreshed()
    {
        var outage = new ContentServiceOutage();
        await using var h = await ControllerHarness.StartAsync("golden-outage", Ct, interceptor: outage, node: true);
        var g = new GoldenStack(h);
        await g.NamespaceAsync("prod");
        var source = await g.ClaimWithDataAsync("prod", "db", 0x51);
        await g.NamespaceAsync("team");
        await g.CreateGoldenAsync("app", new
        {
            source = new { persistentVolumeClaim = new { @namespace = "prod", name = "db" } },
            namespaces = new[] { "team" },
            snapshotName = "app",
            claim = new { name = "data", storageClassName = "dolly", refreshPolicy = "OnNextAttach" },
        });
        await g.StatusAsync("app", x => x.Status is { CurrentRevision: 1, Ready: "1/1" } s && s.Namespaces!.Single().ClaimPhase == "Bound", "revision 1", Patience);

        outage.Down = true;
        await g.WriteAsync(source, 0x52);
        await g.PatchGoldenAsync("app", new { metadata = new { annotations = new Dictionary<string, string> { [GoldenNames.PublishNowAnnotation] = "1" } } });
        var down = await g.StatusAsync("app", x => x.Status is { CurrentRevision: 2 } s && s.Namespaces!.Single().RefreshPending is [_], "the refresh not asked for", Patience);
        Assert.Equal(
            "data (revision 1): refresh to revision 2 not asked for yet: the driver cannot be reached: rpc error: code = Unavailable desc = the driver is down (test); retrying",
            Assert.Single(down.Status!.Namespaces!.Single().RefreshPending!));
        Assert.Equal(0x51, await g.FirstByteAsync("team", "data"));

        outage.Down = false;
        await g.StatusAsync("app", x => x.Status!.Namespaces!.Single() is { ClaimRevision: 2, RefreshPending: null }, "refreshed once the driver answers", Patience);
        Assert.Equal(0x52, await g.FirstByteAsync("team", "data"));
    }

    /// <summary>A pool volume of <paramref name="size"/> bytes filled with <paramref name="fill"/> in its first 4 KiB, and a snapshot of it.</summary>
    private static string PoolSnapshot(ControllerHarness h, string name, long size, byte fill)
    {
        Assert.True(h.Stack.Pool.CreateVolume(name, size).IsOk);
        var device = h.Stack.Pool.OpenDevice(name).Value;
        Assert.True(device.Write(0, Enumerable.Repeat(fill, 4096).ToArray()).IsOk);
        Assert.True(device.Flush().IsOk);
        Assert.True(h.Stack.Pool.CreateSnapshot(name, name + "-snap").IsOk);
        return name + "-snap";
    }

    /// <summary>A user's claim restored from <paramref name="snapshot"/> and opted into OnNextAttach, bound.</summary>
    private static async Task ConsumerAsync(GoldenStack g, string ns, string name, string snapshot, string size)
    {
        var claim = DriverStack.Claim(name, size, new V1TypedLocalObjectReference { ApiGroup = Names.SnapshotGroup, Kind = "VolumeSnapshot", Name = snapshot });
        claim.Metadata.Annotations = new Dictionary<string, string> { [GoldenNames.RefreshPolicyAnnotation] = GoldenNames.OnNextAttach };
        await g.K.CoreV1.CreateNamespacedPersistentVolumeClaimAsync(claim, ns, cancellationToken: Ct);
        await Eventually.Until(async () => await ClaimRevisionAsync(g, ns, name) == "1" && (await ClaimAsync(g, ns, name)).Status.Phase == "Bound", $"claim {ns}/{name} bound on revision 1", Patience);
    }

    private static Task<V1PersistentVolumeClaim> ClaimAsync(GoldenStack g, string ns, string name) =>
        g.K.CoreV1.ReadNamespacedPersistentVolumeClaimAsync(name, ns, cancellationToken: Ct);

    private static async Task<string?> ClaimRevisionAsync(GoldenStack g, string ns, string name) =>
        (await ClaimAsync(g, ns, name)).Metadata.Annotations?.TryGetValue(GoldenNames.ClaimRevisionAnnotation, out var r) == true ? r : null;

    private static async Task<string> VolumeHandleAsync(GoldenStack g, string ns, string name) =>
        (await g.K.CoreV1.ReadPersistentVolumeAsync((await ClaimAsync(g, ns, name)).Spec.VolumeName, cancellationToken: Ct)).Spec.Csi.VolumeHandle;

    /// <summary>Fails every dolly.v1.VolumeContentService call with UNAVAILABLE while <see cref="Down"/>; other calls pass.</summary>
    private sealed class ContentServiceOutage : Interceptor
    {
        private volatile bool _down;

        public bool Down { get => _down; set => _down = value; }

        public override AsyncUnaryCall<TResponse> AsyncUnaryCall<TRequest, TResponse>(TRequest request, ClientInterceptorContext<TRequest, TResponse> context, AsyncUnaryCallContinuation<TRequest, TResponse> continuation)
        {
            if (_down && context.Method.ServiceName == "dolly.v1.VolumeContentService")
            {
                throw new RpcException(new Status(StatusCode.Unavailable, "the driver is down (test)"));
            }

            return continuation(request, context);
        }
    }
}

/// <summary>An NBD client that selects an export with NBD_OPT_GO and holds it open until disposed (what a mount does).</summary>
internal sealed class NbdHold : IDisposable
{
    private readonly Socket _socket;

    private NbdHold(Socket socket) => _socket = socket;

    public static async Task<NbdHold> OpenAsync(string socketPath, string export)
    {
        var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        await socket.ConnectAsync(new UnixDomainSocketEndPoint(socketPath));
        using var stream = new NetworkStream(socket, ownsSocket: false);
        await stream.ReadExactlyAsync(new byte[18]); // NBDMAGIC, IHAVEOPT, handshake flags
        var flags = new byte[4];
        BinaryPrimitives.WriteUInt32BigEndian(flags, 3); // fixed newstyle, no zeroes
        await stream.WriteAsync(flags);
        byte[] name = Encoding.UTF8.GetBytes(export);
        var option = new byte[16 + 4 + name.Length + 2];
        BinaryPrimitives.WriteUInt64BigEndian(option, 0x49484156454F5054); // IHAVEOPT
        BinaryPrimitives.WriteUInt32BigEndian(option.AsSpan(8), 7); // NBD_OPT_GO
        BinaryPrimitives.WriteUInt32BigEndian(option.AsSpan(12), (uint)(4 + name.Length + 2));
        BinaryPrimitives.WriteUInt32BigEndian(option.AsSpan(16), (uint)name.Length);
        name.CopyTo(option, 20);
        await stream.WriteAsync(option);
        while (true)
        {
            var header = new byte[20];
            await stream.ReadExactlyAsync(header);
            uint type = BinaryPrimitives.ReadUInt32BigEndian(header.AsSpan(12));
            await stream.ReadExactlyAsync(new byte[BinaryPrimitives.ReadUInt32BigEndian(header.AsSpan(16))]);
            if (type == 1)
            {
                return new NbdHold(socket); // NBD_REP_ACK: in transmission, holding the export
            }

            if ((type & 0x80000000) != 0)
            {
                socket.Dispose();
                throw new InvalidOperationException($"NBD_OPT_GO for '{export}' refused (reply type {type:x})");
            }
        }
    }

    public void Dispose() => _socket.Dispose();
}
