using System.Net.Sockets;
using Dolly.Csi.V1;
using Dolly.Nbd;
using Dolly.Storage;
using Grpc.Core;
using Grpc.Net.Client;

namespace Dolly.Csi.Tests;

/// <summary>
/// A fresh pool and CSI server per test, reached the way kubelet and the sidecars reach a driver: gRPC
/// over the unix socket.
/// </summary>
public abstract class CsiTestBase : IAsyncLifetime
{
    protected const long MiB = 1L << 20;
    protected const long GiB = 1L << 30;

    private readonly string _dir;
    private GrpcChannel? _channel;

    protected CsiTestBase()
        : this(withNode: false)
    {
    }

    /// <summary>With <paramref name="withNode"/>, an NBD server over the pool too, and the Node service attaching through it.</summary>
    protected CsiTestBase(bool withNode)
        : this(withNode, (options, _) => options)
    {
    }

    /// <summary>As <see cref="CsiTestBase(bool)"/>, the server's options then changed by <paramref name="configure"/> (given the test's directory).</summary>
    protected CsiTestBase(bool withNode, Func<CsiServerOptions, string, CsiServerOptions> configure)
    {
        // tmpfs where present: the tests exercise the driver, not the disk's fsync.
        string root = Directory.Exists("/dev/shm") ? "/dev/shm" : Path.GetTempPath();
        _dir = Path.Combine(root, "dolly-csi-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(_dir);
        Pool = Storage.Pool.Create(Path.Combine(_dir, "pool")).Value;
        SocketPath = Path.Combine(_dir, "csi.sock");
        var options = new CsiServerOptions { SocketPath = SocketPath, VendorVersion = "test" };
        if (withNode)
        {
            string nbdSocket = Path.Combine(_dir, "nbd.sock");
            Nbd = new NbdServer(new ExportCatalog(Pool), new NbdServerOptions { UnixSocketPath = nbdSocket });
            options = options with { NodeId = "node-1", NbdSocketPath = nbdSocket, NodeStateDirectory = Path.Combine(_dir, "node") };
        }

        Server = new CsiServer(Pool, configure(options, _dir));
    }

    /// <summary>The test's temporary directory.</summary>
    protected string Dir => _dir;

    /// <summary>The NBD server the Node service attaches through, when the test asked for the Node service.</summary>
    protected NbdServer? Nbd { get; }

    protected Node.NodeClient Nodes { get; private set; } = null!;

    protected Pool Pool { get; }

    protected string SocketPath { get; }

    protected CsiServer Server { get; }

    protected Identity.IdentityClient Identity { get; private set; } = null!;

    protected Controller.ControllerClient Controller { get; private set; } = null!;

    protected GroupController.GroupControllerClient Groups { get; private set; } = null!;

    protected SnapshotMetadata.SnapshotMetadataClient Metadata { get; private set; } = null!;

    protected static CancellationToken Token => TestContext.Current.CancellationToken;

    public async ValueTask InitializeAsync()
    {
        Nbd?.Start();
        await Server.StartAsync(Token);
        _channel = Connect(SocketPath);
        Identity = new Identity.IdentityClient(_channel);
        Controller = new Controller.ControllerClient(_channel);
        Groups = new GroupController.GroupControllerClient(_channel);
        Metadata = new SnapshotMetadata.SnapshotMetadataClient(_channel);
        Nodes = new Node.NodeClient(_channel);
    }

    public async ValueTask DisposeAsync()
    {
        _channel?.Dispose();
        await Server.DisposeAsync();
        if (Nbd is not null)
        {
            await NodeCleanup.ForceAsync(_dir);
            await Nbd.DisposeAsync();
        }

        Pool.Dispose();
        Directory.Delete(_dir, recursive: true);
        GC.SuppressFinalize(this);
    }

    /// <summary>A gRPC channel over a unix socket; the address is only a placeholder for HTTP/2 framing.</summary>
    internal static GrpcChannel Connect(string socketPath) =>
        GrpcChannel.ForAddress("http://localhost", new GrpcChannelOptions
        {
            HttpHandler = new SocketsHttpHandler
            {
                ConnectCallback = async (_, cancellationToken) =>
                {
                    var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
                    try
                    {
                        await socket.ConnectAsync(new UnixDomainSocketEndPoint(socketPath), cancellationToken);
                        return new NetworkStream(socket, ownsSocket: true);
                    }
                    catch
                    {
                        socket.Dispose();
                        throw;
                    }
                },
            },
        });

    protected static VolumeCapability MountCapability(VolumeCapability.Types.AccessMode.Types.Mode mode = VolumeCapability.Types.AccessMode.Types.Mode.SingleNodeWriter) => new()
    {
        Mount = new VolumeCapability.Types.MountVolume { FsType = "ext4" },
        AccessMode = new VolumeCapability.Types.AccessMode { Mode = mode },
    };

    protected static VolumeCapability BlockCapability() => new()
    {
        Block = new VolumeCapability.Types.BlockVolume(),
        AccessMode = new VolumeCapability.Types.AccessMode { Mode = VolumeCapability.Types.AccessMode.Types.Mode.SingleNodeWriter },
    };

    protected static CreateVolumeRequest VolumeRequest(string name, long required = 0, long limit = 0, VolumeContentSource? source = null)
    {
        var request = new CreateVolumeRequest { Name = name, VolumeContentSource = source };
        request.VolumeCapabilities.Add(MountCapability());
        if (required != 0 || limit != 0)
        {
            request.CapacityRange = new CapacityRange { RequiredBytes = required, LimitBytes = limit };
        }

        return request;
    }

    protected static VolumeContentSource FromSnapshot(string id) => new() { Snapshot = new VolumeContentSource.Types.SnapshotSource { SnapshotId = id } };

    protected static VolumeContentSource FromVolume(string id) => new() { Volume = new VolumeContentSource.Types.VolumeSource { VolumeId = id } };

    protected async Task<V1.Volume> CreateVolumeAsync(string name, long required = 0, VolumeContentSource? source = null) =>
        (await Controller.CreateVolumeAsync(VolumeRequest(name, required, source: source), cancellationToken: Token)).Volume;

    protected async Task<Snapshot> CreateSnapshotAsync(string name, string sourceVolumeId) =>
        (await Controller.CreateSnapshotAsync(new CreateSnapshotRequest { Name = name, SourceVolumeId = sourceVolumeId }, cancellationToken: Token)).Snapshot;

    /// <summary>Asserts that a call fails with <paramref name="code"/> and a message naming each of <paramref name="mentions"/>.</summary>
    protected static async Task<RpcException> AssertStatus(StatusCode code, Func<Task> call, params string[] mentions)
    {
        var e = await Assert.ThrowsAsync<RpcException>(call);
        Assert.True(e.StatusCode == code, $"expected {code}, got {e.StatusCode}: {e.Status.Detail}");
        foreach (var m in mentions)
        {
            Assert.True(e.Status.Detail.Contains(m, StringComparison.Ordinal), $"message does not mention '{m}': {e.Status.Detail}");
        }

        return e;
    }

    protected static byte[] Pattern(int length, int seed)
    {
        var data = new byte[length];
        new Random(seed).NextBytes(data);
        return data;
    }
}

