using System.Net.Sockets;
using System.Text.Json;
using System.Text.RegularExpressions;
using Dolly.Api;
using Dolly.Csi;
using Dolly.Csi.Tests;
using Dolly.Csi.V1;
using Dolly.Nbd;
using Dolly.Storage;
using Grpc.Net.Client;
using k8s;
using k8s.Models;

namespace Dolly.Tests;

/// <summary>
/// <c>dolly mount</c>, <c>unmount</c> and <c>mounts</c> against what <c>dolly up</c> runs, started in-process
/// with the same paths: the API server in <c>pool-api/</c>, the NBD server on <c>pool/nbd.sock</c>, the CSI
/// driver (with its Node service) on <c>pool/csi.sock</c>. Claims and volumes are made by hand, as the
/// provisioner would: CreateVolume over CSI, a CSI PersistentVolume, a claim bound to it.
/// </summary>
public sealed partial class MountCommandTests : CliTestBase, IAsyncLifetime
{
    private const long MiB = 1L << 20;
    private const string Ns = "demo";

    private Pool? _pool;
    private ApiServer? _api;
    private NbdServer? _nbd;
    private CsiServer? _csi;
    private GrpcChannel? _channel;
    private Kubernetes? _kube;

    private static CancellationToken Token => TestContext.Current.CancellationToken;

    private Kubernetes Kube => _kube!;

    private string CsiSocket => Path.Combine(PoolDir, "csi.sock");

    private string MountsDir => Path.Combine(Root, "pool-mounts");

    public async ValueTask InitializeAsync()
    {
        // As UpCommand.RunAsync lays it out for the pool directory PoolDir.
        _pool = Pool.Create(PoolDir).Value;
        _api = new ApiServer(new ApiServerOptions(Path.Combine(Root, "pool-api"), "127.0.0.1", 0));
        await _api.StartAsync(Token);
        _csi = new CsiServer(_pool, new CsiServerOptions { SocketPath = CsiSocket, NodeId = "test-node", NbdSocketPath = Path.Combine(PoolDir, "nbd.sock") });
        await _csi.StartAsync(Token);
        _nbd = new NbdServer(new ExportCatalog(_pool), new NbdServerOptions { UnixSocketPath = Path.Combine(PoolDir, "nbd.sock") });
        _nbd.Start();

        _channel = GrpcChannel.ForAddress("http://localhost", new GrpcChannelOptions
        {
            HttpHandler = new SocketsHttpHandler
            {
                ConnectCallback = async (_, ct) =>
                {
                    var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
                    await socket.ConnectAsync(new UnixDomainSocketEndPoint(CsiSocket), ct);
                    return new NetworkStream(socket, ownsSocket: true);
                },
            },
        });
        _kube = new Kubernetes(KubernetesClientConfiguration.BuildConfigFromConfigFile(_api.KubeconfigPath));
        await Kube.CoreV1.CreateNamespaceAsync(new V1Namespace { Metadata = new V1ObjectMeta { Name = Ns } }, cancellationToken: Token);
    }

    public async ValueTask DisposeAsync()
    {
        _kube?.Dispose();
        _channel?.Dispose();
        if (_csi is not null)
        {
            await _csi.DisposeAsync();
        }

        // Whatever a failed test left mounted goes before the NBD server its nbdfuse talks to.
        await NodeCleanup.ForceAsync(Root);
        if (_nbd is not null)
        {
            await _nbd.DisposeAsync();
        }

        if (_api is not null)
        {
            await _api.DisposeAsync();
        }

        _pool?.Dispose();
        Dispose();
    }

    [Fact]
    public async Task Mount_WriteUnmount_MountReadOnly_ReadsBackAndLeavesNothingBehind()
    {
        RequireBlockStack();
        string volumeId = await CreateBoundClaimAsync("data");
        string target = Path.Combine(Root, "mnt", "data");

        var mounted = await Ok("mount", $"{Ns}/data", target);
        Assert.Equal($"mounted {Ns}/data (volume {volumeId}) at {target}", mounted.Out.Trim());
        Assert.Contains(target, NodeCleanup.MountPoints());
        byte[] hello = RandomBytes(300_000, 1);
        await File.WriteAllBytesAsync(Path.Combine(target, "hello.txt"), hello, Token);

        // The same directory twice: refused, the first mount stays.
        await Fails(ExitCodes.AlreadyExists, $"{target} is already mounted by dolly ({Ns}/data)", "mount", $"{Ns}/data", target);
        var listed = (await Ok("mounts", "-o", "json")).Json();
        var record = Assert.Single(listed.EnumerateArray());
        Assert.Equal(target, record.GetProperty("target").GetString());
        Assert.Equal(volumeId, record.GetProperty("volumeId").GetString());
        Assert.Equal("Filesystem", record.GetProperty("volumeMode").GetString());
        Assert.Equal("ext4", record.GetProperty("fsType").GetString());
        Assert.False(record.GetProperty("readOnly").GetBoolean());
        Assert.Contains("mounted", (await Ok("mounts")).Out, StringComparison.Ordinal);

        var unmounted = await Ok("unmount", target);
        Assert.Equal($"unmounted {Ns}/data (volume {volumeId}) from {target}", unmounted.Out.Trim());
        Assert.DoesNotContain(target, NodeCleanup.MountPoints());
        await AssertNothingLeftAsync();

        var again = (await Ok("mount", $"{Ns}/data", target, "--read-only", "-o", "json")).Json();
        Assert.True(again.GetProperty("readOnly").GetBoolean());
        Assert.Equal(hello, await File.ReadAllBytesAsync(Path.Combine(target, "hello.txt"), Token));
        var write = Record.Exception(() => File.WriteAllText(Path.Combine(target, "new.txt"), "x"));
        Assert.True(write is IOException or UnauthorizedAccessException, $"a write to a read-only mount did not fail: {write}");

        await Ok("unmount", target);
        await AssertNothingLeftAsync();
        Assert.Equal("no volumes mounted by dolly mount", (await Ok("mounts")).Out.Trim());
    }

    [Fact]
    public async Task TwoClaims_AndOneClaimAtTwoTargets_UnstageOnlyWithTheLastTarget()
    {
        RequireBlockStack();
        string a = await CreateBoundClaimAsync("a");
        string b = await CreateBoundClaimAsync("b");
        string a1 = Path.Combine(Root, "mnt", "a1");
        string a2 = Path.Combine(Root, "mnt", "a2");
        string b1 = Path.Combine(Root, "mnt", "b1");
        await Ok("mount", $"{Ns}/a", a1);
        await Ok("mount", $"{Ns}/a", a2);
        await Ok("mount", $"{Ns}/b", b1);

        await File.WriteAllTextAsync(Path.Combine(a1, "x.txt"), "written at a1", Token);
        await File.WriteAllTextAsync(Path.Combine(b1, "x.txt"), "written at b1", Token);
        Assert.Equal("written at a1", await File.ReadAllTextAsync(Path.Combine(a2, "x.txt"), Token));

        var list = (await Ok("mounts", "-o", "json")).Json().EnumerateArray().ToList();
        Assert.Equal([a1, a2, b1], list.Select(r => r.GetProperty("target").GetString()).ToArray());
        Assert.Equal([a, a, b], list.Select(r => r.GetProperty("volumeId").GetString()).ToArray());

        var first = await Ok("unmount", a1);
        Assert.Contains("stays staged", first.Out, StringComparison.Ordinal);
        Assert.Equal("written at a1", await File.ReadAllTextAsync(Path.Combine(a2, "x.txt"), Token));
        Assert.Equal("written at b1", await File.ReadAllTextAsync(Path.Combine(b1, "x.txt"), Token));

        Assert.DoesNotContain("stays staged", (await Ok("unmount", a2)).Out, StringComparison.Ordinal);
        await Ok("unmount", b1);
        await AssertNothingLeftAsync();
    }

    [Fact]
    public async Task BlockClaim_PublishesADeviceFile_DataSurvivesRemount()
    {
        RequireBlockStack();
        string volumeId = await CreateBoundClaimAsync("raw", block: true, size: 16 * MiB);
        string dir = Path.Combine(Root, "dev");
        Directory.CreateDirectory(dir);
        await Fails(ExitCodes.InvalidArgument, $"{dir} is a directory, but {Ns}/raw is a Block volume", "mount", $"{Ns}/raw", dir);

        string precious = Path.Combine(dir, "precious");
        await File.WriteAllTextAsync(precious, "keep me", Token);
        await Fails(ExitCodes.AlreadyExists, $"{precious} is a file with data in it", "mount", $"{Ns}/raw", precious);
        Assert.Equal("keep me", await File.ReadAllTextAsync(precious, Token));

        string device = Path.Combine(dir, "raw");
        Assert.Contains(volumeId, (await Ok("mount", $"{Ns}/raw", device)).Out, StringComparison.Ordinal);
        var record = Assert.Single((await Ok("mounts", "-o", "json")).Json().EnumerateArray());
        Assert.Equal("Block", record.GetProperty("volumeMode").GetString());
        Assert.Equal(JsonValueKind.Null, record.GetProperty("fsType").ValueKind);

        byte[] pattern = RandomBytes(8192, 2);
        await using (var stream = new FileStream(device, FileMode.Open, FileAccess.Write))
        {
            stream.Position = MiB;
            await stream.WriteAsync(pattern, Token);
            await stream.FlushAsync(Token);
        }

        await Ok("unmount", device);
        Assert.False(File.Exists(device));
        await AssertNothingLeftAsync();

        await Ok("mount", $"{Ns}/raw", device, "--read-only");
        var back = new byte[pattern.Length];
        await using (var stream = new FileStream(device, FileMode.Open, FileAccess.Read))
        {
            stream.Position = MiB;
            await stream.ReadExactlyAsync(back, Token);
        }

        Assert.Equal(pattern, back);
        await Ok("unmount", device);
        await AssertNothingLeftAsync();
    }

    [Fact]
    public async Task ReadOnlyManyClaim_IsMountedReadOnly_WithoutAsking()
    {
        RequireBlockStack();
        await CreateBoundClaimAsync("shared", accessMode: "ReadOnlyMany");
        string target = Path.Combine(Root, "mnt", "shared");
        var mounted = await Ok("mount", $"{Ns}/shared", target);
        Assert.EndsWith(" read-only", mounted.Out.Trim(), StringComparison.Ordinal);
        var record = Assert.Single((await Ok("mounts", "-o", "json")).Json().EnumerateArray());
        Assert.Equal("ReadOnlyMany", record.GetProperty("accessMode").GetString());
        Assert.True(record.GetProperty("readOnly").GetBoolean());
        var write = Record.Exception(() => File.WriteAllText(Path.Combine(target, "new.txt"), "x"));
        Assert.True(write is IOException or UnauthorizedAccessException, $"a write to a read-only mount did not fail: {write}");
        await Ok("unmount", target);
        await AssertNothingLeftAsync();
    }

    [Fact]
    public async Task Unmount_AfterTheTargetWasUnmountedByHand_CompletesAndUnstages()
    {
        RequireBlockStack();
        await CreateBoundClaimAsync("half");
        string target = Path.Combine(Root, "mnt", "half");
        await Ok("mount", $"{Ns}/half", target);
        await NodeCleanup.RunAsync("umount", target);
        Assert.DoesNotContain(target, NodeCleanup.MountPoints());
        Assert.Contains("not mounted", (await Ok("mounts")).Out, StringComparison.Ordinal);

        await Ok("unmount", target);
        await AssertNothingLeftAsync();
    }

    [Fact]
    public async Task Mount_OnAForeignMountPoint_IsRefused_AndUnmountWillNotTouchIt()
    {
        RequireBlockStack();
        await CreateBoundClaimAsync("data");
        string target = Path.Combine(Root, "tmpfs");
        Directory.CreateDirectory(target);
        await NodeCleanup.RunAsync("mount", "-t", "tmpfs", "tmpfs", target);
        try
        {
            Assert.Contains(target, NodeCleanup.MountPoints());
            await Fails(ExitCodes.AlreadyExists, $"{target} is already a mount point", "mount", $"{Ns}/data", target);
            await Fails(ExitCodes.NotFound, $"{target} is a mount point, but not one that dolly mount made", "unmount", target);
            Assert.Contains(target, NodeCleanup.MountPoints());
        }
        finally
        {
            await NodeCleanup.RunAsync("umount", target);
        }
    }

    [Fact]
    public async Task Mount_BadClaimSyntax_FailsNamingIt()
    {
        string target = Path.Combine(Root, "mnt");
        await Fails(ExitCodes.InvalidName, "'data' is not NAMESPACE/PVC", "mount", "data", target);
        await Fails(ExitCodes.InvalidName, "'a/b/c' is not NAMESPACE/PVC", "mount", "a/b/c", target);
        await Fails(ExitCodes.InvalidName, "'/data' is not NAMESPACE/PVC", "mount", "/data", target);
        await Fails(ExitCodes.InvalidName, "'Demo' is not a namespace name", "mount", "Demo/data", target);
        await Fails(ExitCodes.InvalidName, "'da_ta' is not a PersistentVolumeClaim name", "mount", "demo/da_ta", target);
        Assert.False(Directory.Exists(target));
    }

    [Fact]
    public async Task Mount_ClaimMissingPendingOrWithoutItsVolume_FailsNamingIt()
    {
        string target = Path.Combine(Root, "mnt");
        await Fails(ExitCodes.NotFound, $"PersistentVolumeClaim {Ns}/missing not found", "mount", $"{Ns}/missing", target);

        await Kube.CoreV1.CreateNamespacedPersistentVolumeClaimAsync(Claim("waiting", volumeName: null, block: false, ["ReadWriteOnce"]), Ns, cancellationToken: Token);
        await Fails(ExitCodes.NotBound, $"PersistentVolumeClaim {Ns}/waiting is Pending, not Bound", "mount", $"{Ns}/waiting", target);

        await CreateClaimAsync("ghost", "pv-ghost", block: false, ["ReadWriteOnce"]);
        await Fails(ExitCodes.NotFound, $"PersistentVolume pv-ghost (of PersistentVolumeClaim {Ns}/ghost) not found", "mount", $"{Ns}/ghost", target);

        Assert.False(Directory.Exists(target));
        Assert.Equal("no volumes mounted by dolly mount", (await Ok("mounts")).Out.Trim());
    }

    [Fact]
    public async Task Mount_VolumeNotOursOrNotTheClaims_FailsNamingIt()
    {
        string target = Path.Combine(Root, "mnt");

        var hostPath = Volume("pv-host", "host", block: false);
        hostPath.Spec.Csi = null;
        hostPath.Spec.HostPath = new V1HostPathVolumeSource { Path = "/srv" };
        await Kube.CoreV1.CreatePersistentVolumeAsync(hostPath, cancellationToken: Token);
        await CreateClaimAsync("host", "pv-host", block: false, ["ReadWriteOnce"]);
        await Fails(ExitCodes.InvalidArgument, $"PersistentVolume pv-host (of {Ns}/host) is not a CSI volume; dolly mount attaches volumes of CSI driver csi.dolly.io only", "mount", $"{Ns}/host", target);

        var foreign = Volume("pv-foreign", "foreign", block: false);
        foreign.Spec.Csi.Driver = "other.example.com";
        await Kube.CoreV1.CreatePersistentVolumeAsync(foreign, cancellationToken: Token);
        await CreateClaimAsync("foreign", "pv-foreign", block: false, ["ReadWriteOnce"]);
        await Fails(ExitCodes.InvalidArgument, $"PersistentVolume pv-foreign (of {Ns}/foreign) belongs to CSI driver other.example.com, not csi.dolly.io", "mount", $"{Ns}/foreign", target);

        await Kube.CoreV1.CreatePersistentVolumeAsync(Volume("pv-taken", "owner", block: false), cancellationToken: Token);
        await CreateClaimAsync("thief", "pv-taken", block: false, ["ReadWriteOnce"]);
        await Fails(ExitCodes.InvalidArgument, $"PersistentVolume pv-taken is bound to {Ns}/owner, not to {Ns}/thief", "mount", $"{Ns}/thief", target);

        await Kube.CoreV1.CreatePersistentVolumeAsync(Volume("pv-modes", "modes", block: true), cancellationToken: Token);
        await CreateClaimAsync("modes", "pv-modes", block: false, ["ReadWriteOnce"]);
        await Fails(ExitCodes.InvalidArgument, $"PersistentVolumeClaim {Ns}/modes asks for volumeMode Filesystem but PersistentVolume pv-modes is Block", "mount", $"{Ns}/modes", target);

        Assert.False(Directory.Exists(target));
    }

    [Fact]
    public async Task Mount_VolumeTheDriverDoesNotHave_FailsAndKeepsNoRecord()
    {
        var pv = Volume("pv-lost", "lost", block: false);
        pv.Spec.Csi.VolumeHandle = "pvc-gone";
        await Kube.CoreV1.CreatePersistentVolumeAsync(pv, cancellationToken: Token);
        await CreateClaimAsync("lost", "pv-lost", block: false, ["ReadWriteOnce"]);
        await Fails(ExitCodes.NotFound, "NodeStageVolume of volume pvc-gone failed (NotFound)", "mount", $"{Ns}/lost", Path.Combine(Root, "mnt"));
        Assert.Equal("no volumes mounted by dolly mount", (await Ok("mounts")).Out.Trim());
        await Fails(ExitCodes.NotFound, "nothing is mounted at", "unmount", Path.Combine(Root, "mnt"));
    }

    [Fact]
    public async Task Unmount_OfADirectoryDollyDidNotMount_FailsNamingIt()
    {
        string dir = Path.Combine(Root, "elsewhere");
        Directory.CreateDirectory(dir);
        await Fails(ExitCodes.NotFound, $"nothing is mounted at {dir} by dolly mount (no record in {MountsDir})", "unmount", dir);
        await Fails(ExitCodes.NotFound, $"nothing is mounted at {dir} by dolly mount", "unmount", dir + "/");
        Assert.True(Directory.Exists(dir));
    }

    [Fact]
    public async Task NoDollyUp_NoSocket_StaleSocket_NoKubeconfig_UnreachableApi_SayDollyUpIsNotRunning()
    {
        await CreateBoundClaimAsync("data");
        string target = Path.Combine(Root, "mnt");

        string none = Path.Combine(Root, "none.sock");
        await Fails(ExitCodes.NotRunning, $"no CSI driver at {none}: is `dolly up` running?", "mount", $"{Ns}/data", target, "--csi-socket", none);

        // A socket file with nobody accepting on it, as a killed dolly up leaves behind.
        string stale = Path.Combine(Root, "stale.sock");
        using (var bound = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified))
        {
            bound.Bind(new UnixDomainSocketEndPoint(stale));
            await Fails(ExitCodes.NotRunning, $"no CSI driver at {stale}: is `dolly up` running?", "mount", $"{Ns}/data", target, "--csi-socket", stale);
        }

        // A CSI driver without the Node service (no node id): not one that can mount.
        string controllerOnly = Path.Combine(Root, "controller-only.sock");
        await using (var csi = new CsiServer(_pool!, new CsiServerOptions { SocketPath = controllerOnly }))
        {
            await csi.StartAsync(Token);
            await Fails(ExitCodes.NotRunning, $"the CSI driver at {controllerOnly} has no Node service", "mount", $"{Ns}/data", target, "--csi-socket", controllerOnly);
        }

        string noKubeconfig = Path.Combine(Root, "nowhere", "kubeconfig");
        await Fails(ExitCodes.NotRunning, $"no kubeconfig at {noKubeconfig}: is `dolly up` running?", "mount", $"{Ns}/data", target, "--kubeconfig", noKubeconfig);

        // The kubeconfig of a dolly up that has stopped: its port no longer answers.
        string closed = Path.Combine(Root, "closed-kubeconfig");
        string text = await File.ReadAllTextAsync(Path.Combine(Root, "pool-api", "kubeconfig"), Token);
        await File.WriteAllTextAsync(closed, ServerLine().Replace(text, "server: https://127.0.0.1:1"), Token);
        await Fails(ExitCodes.NotRunning, "cannot reach the API server at https://127.0.0.1:1/", "mount", $"{Ns}/data", target, "--kubeconfig", closed);

        Assert.Equal("no volumes mounted by dolly mount", (await Ok("mounts")).Out.Trim());
        Assert.False(Directory.Exists(target));
    }

    [GeneratedRegex(@"server: \S+")]
    private static partial Regex ServerLine();

    private static void RequireBlockStack()
    {
        if (Environment.UserName != "root")
        {
            Assert.Skip("loop devices and mounts need root");
        }

        if (!File.Exists("/dev/fuse"))
        {
            Assert.Skip("/dev/fuse is absent: nbdfuse cannot expose a volume as a file here");
        }

        if (!File.Exists("/dev/loop-control"))
        {
            Assert.Skip("/dev/loop-control is absent: no loop devices to mount a file system from");
        }
    }

    /// <summary>No mount, loop device or nbdfuse left under the test directory, no node or mount records.</summary>
    private async Task AssertNothingLeftAsync()
    {
        Assert.DoesNotContain(NodeCleanup.MountPoints(), m => m.StartsWith(Root + "/", StringComparison.Ordinal));
        string loops = await NodeCleanup.RunAsync("losetup", "-n", "-O", "BACK-FILE", "-l");
        Assert.DoesNotContain(Root, loops, StringComparison.Ordinal);
        foreach (string dir in Directory.EnumerateDirectories("/proc").Where(d => int.TryParse(Path.GetFileName(d), out _)))
        {
            string cmdline;
            try
            {
                cmdline = (await File.ReadAllTextAsync(Path.Combine(dir, "cmdline"), Token)).Replace('\0', ' ');
            }
            catch (IOException)
            {
                continue;
            }

            Assert.False(cmdline.StartsWith("nbdfuse", StringComparison.Ordinal) && cmdline.Contains(Root, StringComparison.Ordinal), $"nbdfuse still running: {cmdline}");
        }

        string nodeState = Path.Combine(PoolDir, "node");
        Assert.True(!Directory.Exists(nodeState) || !Directory.EnumerateFiles(nodeState, "*.json").Any(), "the CSI node still records a staged volume");
        string targets = Path.Combine(MountsDir, "targets");
        Assert.True(!Directory.Exists(targets) || !Directory.EnumerateFiles(targets).Any(), "dolly mount still has a record");
    }

    /// <summary>A volume made through CSI CreateVolume, its PersistentVolume, and a claim Bound to it; returns the volume id.</summary>
    private async Task<string> CreateBoundClaimAsync(string name, bool block = false, long size = 64 * MiB, string accessMode = "ReadWriteOnce")
    {
        var capability = new VolumeCapability
        {
            AccessMode = new VolumeCapability.Types.AccessMode { Mode = VolumeCapability.Types.AccessMode.Types.Mode.SingleNodeWriter },
        };
        if (block)
        {
            capability.Block = new VolumeCapability.Types.BlockVolume();
        }
        else
        {
            capability.Mount = new VolumeCapability.Types.MountVolume { FsType = "ext4" };
        }

        var request = new CreateVolumeRequest { Name = "pvc-" + name, CapacityRange = new CapacityRange { RequiredBytes = size } };
        request.VolumeCapabilities.Add(capability);
        var volume = (await new Controller.ControllerClient(_channel).CreateVolumeAsync(request, cancellationToken: Token)).Volume;

        var pv = Volume("pv-" + name, name, block);
        pv.Spec.AccessModes = [accessMode];
        pv.Spec.Csi.VolumeHandle = volume.VolumeId;
        pv.Spec.Csi.VolumeAttributes = new Dictionary<string, string>(volume.VolumeContext);
        pv.Spec.Capacity = new Dictionary<string, ResourceQuantity> { ["storage"] = new ResourceQuantity(volume.CapacityBytes.ToString(System.Globalization.CultureInfo.InvariantCulture)) };
        await Kube.CoreV1.CreatePersistentVolumeAsync(pv, cancellationToken: Token);
        await CreateClaimAsync(name, "pv-" + name, block, [accessMode]);
        return volume.VolumeId;
    }

    private static V1PersistentVolume Volume(string name, string claim, bool block) => new()
    {
        Metadata = new V1ObjectMeta { Name = name },
        Spec = new V1PersistentVolumeSpec
        {
            AccessModes = ["ReadWriteOnce"],
            Capacity = new Dictionary<string, ResourceQuantity> { ["storage"] = new ResourceQuantity("64Mi") },
            VolumeMode = block ? "Block" : "Filesystem",
            PersistentVolumeReclaimPolicy = "Delete",
            ClaimRef = new V1ObjectReference { NamespaceProperty = Ns, Name = claim },
            Csi = new V1CSIPersistentVolumeSource { Driver = "csi.dolly.io", VolumeHandle = "pvc-" + claim, FsType = block ? null : "ext4" },
        },
    };

    private static V1PersistentVolumeClaim Claim(string name, string? volumeName, bool block, IList<string> accessModes) => new()
    {
        Metadata = new V1ObjectMeta { Name = name, NamespaceProperty = Ns },
        Spec = new V1PersistentVolumeClaimSpec
        {
            AccessModes = accessModes,
            VolumeMode = block ? "Block" : "Filesystem",
            VolumeName = volumeName,
            StorageClassName = string.Empty,
            Resources = new V1VolumeResourceRequirements { Requests = new Dictionary<string, ResourceQuantity> { ["storage"] = new ResourceQuantity("16Mi") } },
        },
    };

    /// <summary>A claim naming <paramref name="volumeName"/>, its status set to Bound through the status subresource as the binder does.</summary>
    private async Task CreateClaimAsync(string name, string volumeName, bool block, IList<string> accessModes)
    {
        var created = await Kube.CoreV1.CreateNamespacedPersistentVolumeClaimAsync(Claim(name, volumeName, block, accessModes), Ns, cancellationToken: Token);
        created.Status = new V1PersistentVolumeClaimStatus { Phase = "Bound", AccessModes = accessModes };
        await Kube.CoreV1.ReplaceNamespacedPersistentVolumeClaimStatusAsync(created, name, Ns, cancellationToken: Token);
    }
}
