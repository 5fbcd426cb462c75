using System.Net;
using System.Text;
using Dolly.Csi.V1;
using Dolly.Nbd;
using Dolly.Storage;
using Grpc.Core;
using Grpc.Net.Client;

namespace Dolly.Csi.Tests;

/// <summary>
/// A node-only CSI server (no pool: Identity and Node) attaching volumes from an NBD server on TCP with
/// STARTTLS and client certificates, as the node DaemonSet of a cluster reaches the pool's machine.
/// </summary>
public sealed class RemoteNodeTests : IAsyncLifetime
{
    private const long MiB = 1L << 20;
    private const string Hello = "written on a node, through TLS\n";

    private readonly string _dir;
    private readonly Pool _pool;
    private readonly TestPki _pki;
    private readonly TestPki _otherPki;
    private readonly NbdServer _nbd;
    private readonly List<(CsiServer Server, GrpcChannel Channel)> _nodes = [];

    public RemoteNodeTests()
    {
        string root = Directory.Exists("/dev/shm") ? "/dev/shm" : Path.GetTempPath();
        _dir = Path.Combine(root, "dolly-csi-remote-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(_dir);
        _pool = Pool.Create(Path.Combine(_dir, "pool")).Value;
        _pki = new TestPki(Path.Combine(_dir, "secret"), "Dolly");
        _otherPki = new TestPki(Path.Combine(_dir, "other-secret"), "Someone else");
        _nbd = new NbdServer(new ExportCatalog(_pool), new NbdServerOptions
        {
            TcpEndpoints = [new IPEndPoint(IPAddress.Loopback, 0)],
            Certificate = _pki.Server,
            ClientCertificateAuthority = _pki.Ca,
        });
    }

    private static CancellationToken Token => TestContext.Current.CancellationToken;

    private int NbdPort => _nbd.LocalEndpoints.OfType<IPEndPoint>().Single().Port;

    public ValueTask InitializeAsync()
    {
        _nbd.Start();
        return ValueTask.CompletedTask;
    }

    public async ValueTask DisposeAsync()
    {
        foreach (var (server, channel) in _nodes)
        {
            channel.Dispose();
            await server.DisposeAsync();
        }

        await NodeCleanup.ForceAsync(_dir);
        await _nbd.DisposeAsync();
        _pool.Dispose();
        _pki.Dispose();
        _otherPki.Dispose();
        Directory.Delete(_dir, recursive: true);
    }

    [Fact]
    public async Task NodeOnly_ServesIdentityAndNode_AdvertisesNoController()
    {
        var channel = await StartNodeAsync("a", _pki.ClientTls);
        var identity = new Identity.IdentityClient(channel);
        Assert.Equal(CsiServerOptions.DefaultDriverName, (await identity.GetPluginInfoAsync(new GetPluginInfoRequest(), cancellationToken: Token)).Name);
        Assert.Empty((await identity.GetPluginCapabilitiesAsync(new GetPluginCapabilitiesRequest(), cancellationToken: Token)).Capabilities);
        Assert.True((await identity.ProbeAsync(new ProbeRequest(), cancellationToken: Token)).Ready);
        Assert.Equal("node-a", (await new Node.NodeClient(channel).NodeGetInfoAsync(new NodeGetInfoRequest(), cancellationToken: Token)).NodeId);

        var controller = await Assert.ThrowsAsync<RpcException>(() => new Controller.ControllerClient(channel).ControllerGetCapabilitiesAsync(new ControllerGetCapabilitiesRequest(), cancellationToken: Token).ResponseAsync);
        Assert.Equal(StatusCode.Unimplemented, controller.StatusCode);
    }

    [Fact]
    public void NodeOnly_WithoutNodeIdOrNbd_IsRefused()
    {
        var e = Assert.Throws<ArgumentException>(() => new CsiServer(new CsiServerOptions { SocketPath = Path.Combine(_dir, "x.sock"), NodeId = "n" }));
        Assert.Contains("NBD server", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public Task StagePublishWriteUnstage_OverTls_DataLandsInThePool()
    {
        NodeCleanup.RequireBlockStack();
        return StagePublishWriteUnstageAsync(NodeAttachMode.Nbdfuse);
    }

    /// <summary>The same through the kernel NBD driver, nbd-client doing the TLS; skipped where there is no /dev/nbd0 or nbd-client.</summary>
    [Fact]
    public Task StagePublishWriteUnstage_OverTls_KernelNbd_DataLandsInThePool()
    {
        NodeCleanup.RequireKernelNbd();
        return StagePublishWriteUnstageAsync(NodeAttachMode.Kernel);
    }

    private async Task StagePublishWriteUnstageAsync(NodeAttachMode attach)
    {
        _ = _pool.CreateVolume("pvc-remote", 64 * MiB).Value;
        var nodes = new Node.NodeClient(await StartNodeAsync("a", _pki.ClientTls, attach: attach));
        string staging = Path.Combine(_dir, "kubelet", "staging", "pvc-remote");
        string target = Path.Combine(_dir, "kubelet", "pods", "p1", "mount");

        await nodes.NodeStageVolumeAsync(Stage("pvc-remote", staging), cancellationToken: Token);
        await nodes.NodeStageVolumeAsync(Stage("pvc-remote", staging), cancellationToken: Token);
        Assert.Contains(staging, NodeCleanup.MountPoints());
        await nodes.NodePublishVolumeAsync(
            new NodePublishVolumeRequest { VolumeId = "pvc-remote", StagingTargetPath = staging, TargetPath = target, VolumeCapability = Mount() },
            cancellationToken: Token);
        await File.WriteAllTextAsync(Path.Combine(target, "hello.txt"), Hello, Token);

        var expanded = await nodes.NodeExpandVolumeAsync(new NodeExpandVolumeRequest { VolumeId = "pvc-remote", VolumePath = target, StagingTargetPath = staging }, cancellationToken: Token);
        Assert.Equal(64 * MiB, expanded.CapacityBytes);

        await nodes.NodeUnpublishVolumeAsync(new NodeUnpublishVolumeRequest { VolumeId = "pvc-remote", TargetPath = target }, cancellationToken: Token);
        await nodes.NodeUnstageVolumeAsync(new NodeUnstageVolumeRequest { VolumeId = "pvc-remote", StagingTargetPath = staging }, cancellationToken: Token);
        await nodes.NodeUnstageVolumeAsync(new NodeUnstageVolumeRequest { VolumeId = "pvc-remote", StagingTargetPath = staging }, cancellationToken: Token);
        Assert.DoesNotContain(MountsUnder(_dir), m => m.Contains("kubelet", StringComparison.Ordinal) || m.Contains("node-a", StringComparison.Ordinal));
        // No record, no pid file, no nbdfuse mount point; for nbdfuse the TLS relay's socket stays.
        Assert.Equal(attach == NodeAttachMode.Nbdfuse ? ["nbd-tls.sock"] : [], Directory.EnumerateFileSystemEntries(Path.Combine(_dir, "node-a")).Select(Path.GetFileName));

        // Unstage unmounted and flushed: the pool itself holds an ext4 file system with the file's bytes.
        var device = _pool.OpenDevice("pvc-remote").Value;
        var image = new byte[64 * MiB];
        device.Read(0, image).ThrowIfFailed();
        Assert.Equal(0xEF53, image[1080] | (image[1081] << 8));
        Assert.True(image.AsSpan().IndexOf(Encoding.UTF8.GetBytes(Hello)) >= 0, "the file's contents are not in the pool");
    }

    [Fact]
    public async Task Stage_UnknownVolume_IsNotFound_NamingTheServer()
    {
        var nodes = new Node.NodeClient(await StartNodeAsync("a", _pki.ClientTls));
        var e = await Assert.ThrowsAsync<RpcException>(() => nodes.NodeStageVolumeAsync(Stage("pvc-missing", Path.Combine(_dir, "staging")), cancellationToken: Token).ResponseAsync);
        Assert.Equal(StatusCode.NotFound, e.StatusCode);
        Assert.Contains("'pvc-missing' not found on the NBD server nbds://127.0.0.1:", e.Status.Detail, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Stage_WithAnotherCa_FailsClearly_LeavesNothingMounted()
    {
        _ = _pool.CreateVolume("pvc-untrusted", 16 * MiB).Value;
        var nodes = new Node.NodeClient(await StartNodeAsync("b", _otherPki.ClientTls));
        string staging = Path.Combine(_dir, "kubelet", "staging", "pvc-untrusted");

        var e = await Assert.ThrowsAsync<RpcException>(() => nodes.NodeStageVolumeAsync(Stage("pvc-untrusted", staging), cancellationToken: Token).ResponseAsync);
        Assert.Equal(StatusCode.Internal, e.StatusCode);
        Assert.Contains($"NodeStageVolume 'pvc-untrusted': cannot reach the volume on the NBD server nbds://127.0.0.1:{NbdPort}", e.Status.Detail, StringComparison.Ordinal);
        Assert.Contains("does not chain to the configured CA (CN=Someone else CA)", e.Status.Detail, StringComparison.Ordinal);
        TestContext.Current.TestOutputHelper?.WriteLine(e.Status.Detail);

        Assert.Empty(MountsUnder(_dir));
        Assert.False(Directory.Exists(staging));
        Assert.False(Directory.Exists(Path.Combine(_dir, "node-b", "pvc-untrusted")));
        Assert.False(File.Exists(Path.Combine(_dir, "node-b", "pvc-untrusted.json")));
        await nodes.NodeUnstageVolumeAsync(new NodeUnstageVolumeRequest { VolumeId = "pvc-untrusted", StagingTargetPath = staging }, cancellationToken: Token);
    }

    [Fact]
    public async Task Stage_WithoutClientCertificate_IsRefusedByTheServer()
    {
        _ = _pool.CreateVolume("pvc-anonymous", 16 * MiB).Value;
        var nodes = new Node.NodeClient(await StartNodeAsync("c", new NbdClientTls(_pki.CaFile)));
        var e = await Assert.ThrowsAsync<RpcException>(() => nodes.NodeStageVolumeAsync(Stage("pvc-anonymous", Path.Combine(_dir, "staging")), cancellationToken: Token).ResponseAsync);
        Assert.Equal(StatusCode.Internal, e.StatusCode);
        Assert.Contains("cannot reach the volume on the NBD server", e.Status.Detail, StringComparison.Ordinal);
        Assert.Contains("client certificate", e.Status.Detail, StringComparison.Ordinal);
        TestContext.Current.TestOutputHelper?.WriteLine(e.Status.Detail);
        Assert.Empty(MountsUnder(_dir));
    }

    [Fact]
    public async Task NodeOnly_OverAUnixSocket_StagesAndFindsMissingVolumes()
    {
        NodeCleanup.RequireBlockStack();
        string socket = Path.Combine(_dir, "nbd.sock");
        await using var local = new NbdServer(new ExportCatalog(_pool), new NbdServerOptions { UnixSocketPath = socket });
        local.Start();
        _ = _pool.CreateVolume("pvc-local", 16 * MiB).Value;
        var nodes = new Node.NodeClient(await StartNodeAsync("d", null, NbdEndpoint.Unix(socket)));
        string staging = Path.Combine(_dir, "kubelet", "staging", "pvc-local");

        var missing = await Assert.ThrowsAsync<RpcException>(() => nodes.NodeStageVolumeAsync(Stage("pvc-nope", staging), cancellationToken: Token).ResponseAsync);
        Assert.Equal(StatusCode.NotFound, missing.StatusCode);
        Assert.Contains($"volume 'pvc-nope' not found on the NBD server unix:{socket}", missing.Status.Detail, StringComparison.Ordinal);

        await nodes.NodeStageVolumeAsync(Stage("pvc-local", staging), cancellationToken: Token);
        Assert.Contains(staging, NodeCleanup.MountPoints());
        await nodes.NodeUnstageVolumeAsync(new NodeUnstageVolumeRequest { VolumeId = "pvc-local", StagingTargetPath = staging }, cancellationToken: Token);
        Assert.Empty(MountsUnder(_dir));
    }

    private async Task<GrpcChannel> StartNodeAsync(string name, NbdClientTls? tls, NbdEndpoint? endpoint = null, NodeAttachMode attach = NodeAttachMode.Nbdfuse)
    {
        var options = new CsiServerOptions
        {
            SocketPath = Path.Combine(_dir, $"csi-{name}.sock"),
            VendorVersion = "test",
            NodeId = "node-" + name,
            Nbd = endpoint ?? NbdEndpoint.Tcp("127.0.0.1", NbdPort, tls!),
            NodeStateDirectory = Path.Combine(_dir, "node-" + name),

            // nbdfuse and its TLS relay unless a test asks for the kernel path.
            NodeAttach = attach,
        };
        var server = new CsiServer(options);
        Assert.False(server.ServesController);
        await server.StartAsync(Token);
        var channel = CsiTestBase.Connect(options.SocketPath);
        _nodes.Add((server, channel));
        return channel;
    }

    private static List<string> MountsUnder(string dir) =>
        NodeCleanup.MountPoints().Where(m => m.StartsWith(dir + "/", StringComparison.Ordinal)).ToList();

    private static VolumeCapability Mount() => new()
    {
        Mount = new VolumeCapability.Types.MountVolume { FsType = "ext4" },
        AccessMode = new VolumeCapability.Types.AccessMode { Mode = VolumeCapability.Types.AccessMode.Types.Mode.SingleNodeWriter },
    };

    private static NodeStageVolumeRequest Stage(string volumeId, string staging) =>
        new() { VolumeId = volumeId, StagingTargetPath = staging, VolumeCapability = Mount() };
}
