using Dolly.Csi.V1;
using Grpc.Core;

namespace Dolly.Csi.Tests;

/// <summary>
/// The pure parts of the kernel NBD path, on a fake /dev and /sys: which devices are free, the nbd-client
/// command lines, what is reported missing, and the staged-volume record (old records included).
/// </summary>
public sealed class KernelNbdTests : IDisposable
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "dolly-knbd-" + Guid.NewGuid().ToString("N"));

    public KernelNbdTests() => Directory.CreateDirectory(_dir);

    private string Dev => Path.Combine(_dir, "dev");

    private string Sys => Path.Combine(_dir, "sys");

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public void FreeDevices_SkipsConnectedSizedReservedAndPartitions_InNumericOrder()
    {
        FakeDevice("nbd0", connected: true, sectors: 131072);   // in use
        FakeDevice("nbd1", connected: false, sectors: 0);       // free
        FakeDevice("nbd2", connected: false, sectors: 2048);    // disconnected, not yet cleared
        FakeDevice("nbd3", connected: false, sectors: 0);       // free, but a record names it
        FakeDevice("nbd10", connected: false, sectors: 0);      // free: numeric order puts it after nbd9
        FakeDevice("nbd9", connected: false, sectors: 0);       // free
        FakeDevice("nbd4", connected: false, sectors: null);    // no size attribute: not taken for free
        Directory.CreateDirectory(Path.Combine(Sys, "block", "nbd0p1"));
        FakeDevice("nbd5", connected: false, sectors: 0, node: false); // sysfs only: no device node

        var kernel = new KernelNbd(Dev, Sys, "nbd-client");
        var free = kernel.FreeDevices(new HashSet<string>([Path.Combine(Dev, "nbd3")], StringComparer.Ordinal));

        Assert.Equal([Path.Combine(Dev, "nbd1"), Path.Combine(Dev, "nbd9"), Path.Combine(Dev, "nbd10")], free);
        Assert.True(kernel.InUse(Path.Combine(Dev, "nbd0")));
        Assert.True(kernel.InUse(Path.Combine(Dev, "nbd2")));
        Assert.False(kernel.Connected(Path.Combine(Dev, "nbd2")));
        Assert.Equal(131072L * 512, kernel.SizeBytes(Path.Combine(Dev, "nbd0")));
        Assert.Null(kernel.SizeBytes(Path.Combine(Dev, "nbd2")));
    }

    [Fact]
    public void FreeDevices_WithoutSysfsOrDevices_IsEmpty()
    {
        Assert.Empty(new KernelNbd(Dev, Sys, "nbd-client").FreeDevices(new HashSet<string>()));
        Directory.CreateDirectory(Path.Combine(Sys, "block", "loop0"));
        Assert.Empty(new KernelNbd(Dev, Sys, "nbd-client").FreeDevices(new HashSet<string>()));
    }

    [Fact]
    public void Missing_NamesTheDeviceAndTheProgram()
    {
        string program = Path.Combine(_dir, "bin", "nbd-client");
        var kernel = new KernelNbd(Dev, Sys, program);
        Assert.Equal($"no {Dev}/nbd0 (the nbd kernel module is not loaded: modprobe nbd) and no {program} program (install the nbd-client package)", kernel.Missing());

        FakeDevice("nbd0", connected: false, sectors: 0);
        Assert.Equal($"no {program} program (install the nbd-client package)", kernel.Missing());

        Directory.CreateDirectory(Path.GetDirectoryName(program)!);
        File.WriteAllText(program, string.Empty);
        Assert.Null(kernel.Missing());
        Assert.Equal(program, kernel.ProgramPath);
    }

    [Fact]
    public void ConnectArguments_UnixSocket()
    {
        var args = KernelNbd.ConnectArguments(NbdEndpoint.Unix("/var/lib/dolly/pool/nbd.sock"), "pvc-1", "/dev/nbd3");
        Assert.Equal(["-unix", "/var/lib/dolly/pool/nbd.sock", "/dev/nbd3", "-name", "pvc-1", "-block-size", "4096"], args);
    }

    [Fact]
    public void ConnectArguments_Tcp_UsesNbdClientsOwnTls()
    {
        var withClientCertificate = NbdEndpoint.Tcp("dolly-nbd.dolly-system.svc", 10809, new NbdClientTls("/tls/ca.crt", "/tls/tls.crt", "/tls/tls.key"));
        Assert.Equal(
            ["dolly-nbd.dolly-system.svc", "10809", "/dev/nbd0", "-name", "pvc-2", "-block-size", "4096",
             "-cacertfile", "/tls/ca.crt", "-certfile", "/tls/tls.crt", "-keyfile", "/tls/tls.key", "-tlshostname", "dolly-nbd.dolly-system.svc"],
            KernelNbd.ConnectArguments(withClientCertificate, "pvc-2", "/dev/nbd0"));

        // An IPv6 address goes to getaddrinfo bare, and is the name the certificate must carry.
        var caOnly = NbdEndpoint.Parse("[::1]:10900", new NbdClientTls("/tls/ca.crt"), out string? error)!;
        Assert.Null(error);
        Assert.Equal(
            ["::1", "10900", "/dev/nbd1", "-name", "pvc-3", "-block-size", "4096", "-cacertfile", "/tls/ca.crt", "-tlshostname", "::1"],
            KernelNbd.ConnectArguments(caOnly, "pvc-3", "/dev/nbd1"));
    }

    [Fact]
    public void DisconnectArguments() => Assert.Equal(["-d", "/dev/nbd7"], KernelNbd.DisconnectArguments("/dev/nbd7"));

    [Fact]
    public void Record_Kernel_RoundTrips_WithMechanismAndDevice()
    {
        string path = Path.Combine(_dir, "pvc-k.json");
        var staged = new StagedVolume("pvc-k", "/staging/pvc-k", string.Empty, string.Empty, 0, Block: false, "ext4", Attachment.Kernel, "/dev/nbd4");
        staged.Write(path);

        string json = File.ReadAllText(path);
        Assert.Contains("\"Attach\": \"Kernel\"", json, StringComparison.Ordinal);
        Assert.Contains("\"NbdDevice\": \"/dev/nbd4\"", json, StringComparison.Ordinal);
        Assert.DoesNotContain("\"Device\"", json, StringComparison.Ordinal);
        var read = StagedVolume.Read(path);
        Assert.Equal(staged, read);
        Assert.Equal("/dev/nbd4", read!.Device);
        Assert.False(File.Exists(path + ".tmp"));
    }

    [Fact]
    public void Record_WrittenBeforeTheKernelPath_ReadsAsNbdfuse()
    {
        // A record as the node wrote it before Attach and NbdDevice existed.
        string path = Path.Combine(_dir, "pvc-old.json");
        File.WriteAllText(path, """
            {
              "VolumeId": "pvc-old",
              "StagingPath": "/staging/pvc-old",
              "FuseDir": "/var/lib/dolly/node/pvc-old",
              "LoopDevice": "/dev/loop7",
              "NbdfusePid": 4242,
              "Block": true,
              "FsType": null
            }
            """);

        var read = StagedVolume.Read(path)!;
        Assert.Equal(Attachment.Nbdfuse, read.Attach);
        Assert.Null(read.NbdDevice);
        Assert.Equal("/dev/loop7", read.Device);
        Assert.Equal(new StagedVolume("pvc-old", "/staging/pvc-old", "/var/lib/dolly/node/pvc-old", "/dev/loop7", 4242, Block: true, null), read);
        Assert.Null(StagedVolume.Read(Path.Combine(_dir, "absent.json")));
    }

    private void FakeDevice(string name, bool connected, long? sectors, bool node = true)
    {
        string sys = Path.Combine(Sys, "block", name);
        Directory.CreateDirectory(sys);
        if (connected)
        {
            File.WriteAllText(Path.Combine(sys, "pid"), "1234\n");
        }

        if (sectors is { } s)
        {
            File.WriteAllText(Path.Combine(sys, "size"), s.ToString(System.Globalization.CultureInfo.InvariantCulture) + "\n");
        }

        if (node)
        {
            Directory.CreateDirectory(Dev);
            File.WriteAllText(Path.Combine(Dev, name), string.Empty);
        }
    }
}

/// <summary>
/// Kernel attach forced on a node that cannot do it (a fake /dev and /sys, so the same on every machine):
/// FAILED_PRECONDITION naming what is missing, or RESOURCE_EXHAUSTED with no free device; nothing left behind.
/// </summary>
public sealed class KernelAttachForcedTests() : CsiTestBase(withNode: true, (options, dir) => options with
{
    NodeAttach = NodeAttachMode.Kernel,
    KernelNbd = new KernelNbd(Path.Combine(dir, "dev"), Path.Combine(dir, "sys"), Path.Combine(dir, "bin", "nbd-client")),
})
{
    private string Staging => Path.Combine(Dir, "staging", "pvc-k");

    [Fact]
    public async Task Stage_WithoutNbdModuleOrNbdClient_IsFailedPrecondition_NamingBoth()
    {
        await CreateVolumeAsync("pvc-k", 16 * MiB);
        await AssertStatus(
            StatusCode.FailedPrecondition,
            StageAsync,
            "NodeStageVolume 'pvc-k'",
            "attach mode kernel",
            $"no {Dir}/dev/nbd0 (the nbd kernel module is not loaded: modprobe nbd)",
            $"no {Dir}/bin/nbd-client program (install the nbd-client package)");
        await AssertNothingLeftBehindAsync();
    }

    [Fact]
    public async Task Stage_WithoutNbdClient_IsFailedPrecondition_NamingTheProgramOnly()
    {
        await CreateVolumeAsync("pvc-k", 16 * MiB);
        Directory.CreateDirectory(Path.Combine(Dir, "dev"));
        File.WriteAllText(Path.Combine(Dir, "dev", "nbd0"), string.Empty);
        var e = await AssertStatus(StatusCode.FailedPrecondition, StageAsync, $"no {Dir}/bin/nbd-client program");
        Assert.DoesNotContain("nbd0", e.Status.Detail, StringComparison.Ordinal);
        await AssertNothingLeftBehindAsync();
    }

    [Fact]
    public async Task Stage_UnknownVolume_IsStillNotFound()
    {
        await AssertStatus(StatusCode.NotFound, StageAsync, "pvc-k");
        await AssertNothingLeftBehindAsync();
    }

    [Fact]
    public async Task Stage_EveryDeviceTaken_IsResourceExhausted()
    {
        await CreateVolumeAsync("pvc-k", 16 * MiB);
        Directory.CreateDirectory(Path.Combine(Dir, "dev"));
        Directory.CreateDirectory(Path.Combine(Dir, "bin"));
        File.WriteAllText(Path.Combine(Dir, "bin", "nbd-client"), string.Empty); // found, never run: no device is free
        File.WriteAllText(Path.Combine(Dir, "dev", "nbd0"), string.Empty);
        string sys = Path.Combine(Dir, "sys", "block", "nbd0");
        Directory.CreateDirectory(sys);
        File.WriteAllText(Path.Combine(sys, "pid"), "1\n");
        File.WriteAllText(Path.Combine(sys, "size"), "2048\n");

        await AssertStatus(StatusCode.ResourceExhausted, StageAsync, "no free NBD device", "modprobe nbd nbds_max=N");
        await AssertNothingLeftBehindAsync();
    }

    private Task StageAsync() =>
        Nodes.NodeStageVolumeAsync(new NodeStageVolumeRequest { VolumeId = "pvc-k", StagingTargetPath = Staging, VolumeCapability = MountCapability() }, cancellationToken: Token).ResponseAsync;

    private async Task AssertNothingLeftBehindAsync()
    {
        Assert.DoesNotContain(NodeCleanup.MountPoints(), m => m.StartsWith(Dir + "/", StringComparison.Ordinal));
        Assert.False(Directory.Exists(Staging));
        string node = Path.Combine(Dir, "node");
        Assert.True(!Directory.Exists(node) || !Directory.EnumerateFileSystemEntries(node).Any(), "the node state directory is not empty");

        // Nothing staged: unstage is a no-op.
        await Nodes.NodeUnstageVolumeAsync(new NodeUnstageVolumeRequest { VolumeId = "pvc-k", StagingTargetPath = Staging }, cancellationToken: Token);
    }
}
