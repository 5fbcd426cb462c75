using System.Diagnostics;
using Dolly.Api;
using k8s;
using k8s.Models;

namespace Dolly.Tests;

/// <summary><c>dolly up</c>: its flags' error paths, and the controllers against an external API server.</summary>
public sealed class UpCommandTests : CliTestBase
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    [Fact]
    public async Task KubeconfigAndInCluster_ExcludeEachOther()
    {
        await Ok("pool", "init");
        string config = Path.Combine(Root, "kubeconfig");
        await File.WriteAllTextAsync(config, "apiVersion: v1\nkind: Config\n", Ct);
        await Fails(ExitCodes.InvalidArgument, "--kubeconfig and --in-cluster exclude each other", "up", "--kubeconfig", config, "--in-cluster");
    }

    [Fact]
    public async Task LeaderElect_WithTheEmbeddedServer_IsRefused()
    {
        await Ok("pool", "init");
        await Fails(ExitCodes.InvalidArgument, "--leader-elect needs --kubeconfig or --in-cluster", "up", "--leader-elect");
    }

    [Fact]
    public async Task AMissingKubeconfig_IsNamed()
    {
        await Ok("pool", "init");
        await Fails(ExitCodes.NotFound, "--kubeconfig '/nonexistent/kubeconfig' does not exist", "up", "--kubeconfig", "/nonexistent/kubeconfig");
    }

    [Fact]
    public async Task AnUnusableKubeconfig_IsNamed()
    {
        await Ok("pool", "init");
        string config = Path.Combine(Root, "kubeconfig");
        await File.WriteAllTextAsync(config, "this is not a kubeconfig: [", Ct);
        await Fails(ExitCodes.InvalidArgument, "cannot configure the Kubernetes client", "up", "--kubeconfig", config);
    }

    [Fact]
    public async Task NbdTlsFlags_AreChecked()
    {
        await Ok("pool", "init");
        await Fails(ExitCodes.InvalidArgument, "--nbd-tls-cert and --nbd-tls-key go together", "up", "--nbd-tls-cert", "/tmp/x.pem");
        await Fails(ExitCodes.InvalidArgument, "--nbd-tcp 'not-an-address' is not an address and port", "up", "--nbd-tcp", "not-an-address");
        await Fails(ExitCodes.InvalidArgument, "cannot load the TLS certificate", "up", "--nbd-tls-cert", "/nonexistent/c.pem", "--nbd-tls-key", "/nonexistent/k.pem");
    }

    [Fact]
    public async Task NonLoopbackNbdWithoutTls_IsRefused()
    {
        await Ok("pool", "init");
        await Fails(ExitCodes.InvalidArgument, "TLS", "up", "--port", "0", "--nbd-tcp", "0.0.0.0:10809");
    }

    /// <summary>
    /// With --kubeconfig, no API server is embedded: the controllers provision against the one named, as on a
    /// real cluster (where kube-controller-manager, not Dolly, then binds the claim).
    /// </summary>
    [Fact]
    public async Task WithAKubeconfig_TheControllersProvisionOnThatApiServer_AndNoneIsEmbedded()
    {
        await Ok("pool", "init");
        await using var api = new ApiServer(new ApiServerOptions(Path.Combine(Root, "cluster-api"), "127.0.0.1", 0));
        await api.StartAsync(Ct);
        using var client = new Kubernetes(KubernetesClientConfiguration.BuildConfigFromConfigFile(api.KubeconfigPath));
        await client.StorageV1.CreateStorageClassAsync(new V1StorageClass { Metadata = new V1ObjectMeta { Name = "dolly" }, Provisioner = "csi.dolly.io" }, cancellationToken: Ct);
        await client.CoreV1.CreateNamespacedPersistentVolumeClaimAsync(
            new V1PersistentVolumeClaim
            {
                Metadata = new V1ObjectMeta { Name = "data" },
                Spec = new V1PersistentVolumeClaimSpec
                {
                    StorageClassName = "dolly",
                    AccessModes = ["ReadWriteOnce"],
                    Resources = new V1VolumeResourceRequirements { Requests = new Dictionary<string, ResourceQuantity> { ["storage"] = new("1Gi") } },
                },
            },
            "default",
            cancellationToken: Ct);

        using var stop = CancellationTokenSource.CreateLinkedTokenSource(Ct);
        var outText = new StringWriter();
        var errText = new StringWriter();
        var env = new Dictionary<string, string?> { ["DOLLY_POOL"] = PoolDir };
        var host = new CliHost(new SyncWriter(outText), new SyncWriter(errText), () => Stream.Null, () => Stream.Null, false, false, name => env.GetValueOrDefault(name));
        var running = Cli.RunAsync(["up", "--kubeconfig", api.KubeconfigPath, "--no-node"], host, stop.Token);

        var clock = Stopwatch.StartNew();
        V1PersistentVolume? pv = null;
        while (pv is null && clock.Elapsed < TimeSpan.FromSeconds(60))
        {
            Assert.False(running.IsCompleted, $"up ended early: {outText}{errText}");
            var list = await client.CoreV1.ListPersistentVolumeAsync(cancellationToken: Ct);
            pv = list.Items.FirstOrDefault();
            await Task.Delay(100, Ct);
        }

        Assert.NotNull(pv);
        Assert.Equal("data", pv.Spec.ClaimRef.Name);
        Assert.Equal("csi.dolly.io", pv.Spec.Csi.Driver);
        Assert.Contains("(external", outText.ToString(), StringComparison.Ordinal);
        Assert.DoesNotContain("Node,", outText.ToString(), StringComparison.Ordinal);
        Assert.False(Directory.Exists(PoolDir + "-api"), "no API server state beside the pool");

        // Binding is kube-controller-manager's job on a real cluster; Dolly leaves the claim to it.
        var claim = await client.CoreV1.ReadNamespacedPersistentVolumeClaimAsync("data", "default", cancellationToken: Ct);
        Assert.Null(claim.Spec.VolumeName);

        await stop.CancelAsync();
        Assert.Equal(0, await running.WaitAsync(TimeSpan.FromSeconds(60), Ct));
        await Ok("volume", "list");
    }
}
