using Dolly.Api;
using Dolly.Csi;
using Dolly.Storage;
using Grpc.Core;
using Grpc.Net.Client;
using k8s;
using k8s.Models;

namespace Dolly.Controllers.Tests;

/// <summary>
/// The real peers the controllers talk to, in a scratch directory: the embedded API server, a pool and the CSI
/// driver over it on a unix socket, plus a client of each. The tests start the controllers themselves.
/// </summary>
internal sealed class DriverStack : IAsyncDisposable
{
    private readonly string _dir;
    private readonly ApiServer _api;
    private readonly CsiServer _csi;

    private readonly Dolly.Nbd.NbdServer? _nbd;

    private DriverStack(string dir, ApiServer api, Pool pool, CsiServer csi, Dolly.Nbd.NbdServer? nbd = null)
    {
        _dir = dir;
        _api = api;
        Pool = pool;
        _csi = csi;
        _nbd = nbd;
        Channel = DollyControllers.ConnectCsi(CsiSocket);
    }

    /// <summary>The scratch directory (node staging paths go under it).</summary>
    public string Directory => _dir;

    /// <summary>Whether the driver also serves the Node service (and Dolly's node service), attaching through an NBD server over the pool.</summary>
    public bool ServesNode => _nbd is not null;

    public Pool Pool { get; }

    public string CsiSocket => Path.Combine(_dir, "csi.sock");

    /// <summary>The NBD server's socket, when the driver serves the node.</summary>
    public string NbdSocket => Path.Combine(_dir, "nbd.sock");

    /// <summary>A channel to the driver (the controllers' own, or the test's).</summary>
    public GrpcChannel Channel { get; }

    public CallInvoker Csi => Channel.CreateCallInvoker();

    /// <summary>A new client of the API server; the caller disposes it.</summary>
    public Kubernetes NewClient() => new(KubernetesClientConfiguration.BuildConfigFromConfigFile(_api.KubeconfigPath));

    /// <summary>A stack; with <paramref name="node"/>, the driver serves this machine as its one node too, as on <c>dolly up</c>.</summary>
    public static async Task<DriverStack> StartAsync(string prefix, CancellationToken ct, bool node = false)
    {
        string dir = Path.Combine(Path.GetTempPath(), prefix + Guid.NewGuid().ToString("N")[..10]);
        System.IO.Directory.CreateDirectory(dir);
        var api = new ApiServer(new ApiServerOptions(Path.Combine(dir, "api"), "127.0.0.1", 0));
        await api.StartAsync(ct);
        var pool = Pool.Create(Path.Combine(dir, "pool")).Value;
        var options = new CsiServerOptions { SocketPath = Path.Combine(dir, "csi.sock") };
        Dolly.Nbd.NbdServer? nbd = null;
        if (node)
        {
            string nbdSocket = Path.Combine(dir, "nbd.sock");
            // One record of NBD clients for the NBD server and the driver, as on `dolly up`: content changes wait for them.
            var attachments = new Dolly.Nbd.ExportAttachments();
            nbd = new Dolly.Nbd.NbdServer(new Dolly.Nbd.ExportCatalog(pool, attachments), new Dolly.Nbd.NbdServerOptions { UnixSocketPath = nbdSocket });
            nbd.Start();
            options = options with { NodeId = "node-1", NbdSocketPath = nbdSocket, NodeStateDirectory = Path.Combine(dir, "node"), NodeAttach = NodeAttachMode.Nbdfuse, Attachments = attachments };
        }

        var csi = new CsiServer(pool, options);
        await csi.StartAsync(ct);
        return new DriverStack(dir, api, pool, csi, nbd);
    }

    /// <summary>StorageClass <c>dolly</c> (Delete, expansion allowed) and a default VolumeSnapshotClass, both of Dolly's driver.</summary>
    public static async Task CreateClassesAsync(Kubernetes client, CancellationToken ct)
    {
        await client.StorageV1.CreateStorageClassAsync(
            new V1StorageClass { Metadata = new V1ObjectMeta { Name = "dolly" }, Provisioner = "csi.dolly.io", AllowVolumeExpansion = true, ReclaimPolicy = "Delete" },
            cancellationToken: ct);
        await client.CustomObjects.CreateClusterCustomObjectAsync(
            new Dictionary<string, object>
            {
                ["apiVersion"] = "snapshot.storage.k8s.io/v1",
                ["kind"] = "VolumeSnapshotClass",
                ["metadata"] = new Dictionary<string, object> { ["name"] = "snaps", ["annotations"] = new Dictionary<string, string> { ["snapshot.storage.kubernetes.io/is-default-class"] = "true" } },
                ["driver"] = "csi.dolly.io",
                ["deletionPolicy"] = "Delete",
            },
            "snapshot.storage.k8s.io",
            "v1",
            "volumesnapshotclasses",
            cancellationToken: ct);
    }

    /// <summary>A claim of class <c>dolly</c>, optionally restoring or cloning a source.</summary>
    public static V1PersistentVolumeClaim Claim(string name, string size, V1TypedLocalObjectReference? source = null, V1TypedObjectReference? sourceRef = null) => new()
    {
        Metadata = new V1ObjectMeta { Name = name },
        Spec = new V1PersistentVolumeClaimSpec
        {
            StorageClassName = "dolly",
            AccessModes = ["ReadWriteOnce"],
            Resources = new V1VolumeResourceRequirements { Requests = new Dictionary<string, ResourceQuantity> { ["storage"] = new(size) } },
            DataSource = source,
            DataSourceRef = sourceRef,
        },
    };

    public async ValueTask DisposeAsync()
    {
        Channel.Dispose();
        await _csi.DisposeAsync();
        if (_nbd is not null)
        {
            await _nbd.DisposeAsync();
        }

        Pool.Dispose();
        await _api.DisposeAsync();
        System.IO.Directory.Delete(_dir, recursive: true);
    }
}
