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
    /// --metrics-allow-remote lets /metrics listen off loopback (a pod's address in a cluster); the web view, whose
    /// login cookie must not cross a network in clear text, is then not served. The start lists every controller.
    /// </summary>
    [Fact]
    public async Task MetricsAllowRemote_ServesMetricsOnAnyAddress_AndNoWebView()
    {
        await Ok("pool", "init");
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(Ct);
        var outText = new StringWriter();
        var errText = new StringWriter();
        var env = new Dictionary<string, string?> { ["DOLLY_POOL"] = PoolDir };
        var host = new CliHost(new SyncWriter(outText), new SyncWriter(errText), () => Stream.Null, () => Stream.Null, false, false, name => env.GetValueOrDefault(name));
        var running = Cli.RunAsync(["up", "--port", "0", "--no-node", "--metrics", "0.0.0.0:0", "--metrics-allow-remote"], host, stop.Token);
        var clock = Stopwatch.StartNew();
        while (!outText.ToString().Contains("try: export KUBECONFIG", StringComparison.Ordinal))
        {
            Assert.False(running.IsCompleted, $"up ended early: {outText}{errText}");
            Assert.True(clock.Elapsed < TimeSpan.FromSeconds(120), $"up did not finish starting: {outText}{errText}");
            await Task.Delay(100, Ct);
        }

        string shown = outText.ToString();
        var printed = System.Text.RegularExpressions.Regex.Match(shown, @"  metrics      http://0\.0\.0\.0:(\d+)/metrics \(Prometheus, unauthenticated\)\n");
        Assert.True(printed.Success, shown);
        Assert.DoesNotContain("web view", shown, StringComparison.Ordinal);
        Assert.Contains("  controllers  snapshot, snapshotter, group snapshot, provisioner, resizer, volume binder, StatefulSet claims; dolly.io: schedules, golden snapshots, reverts", shown, StringComparison.Ordinal);
        using (var http = new HttpClient())
        {
            var root = new Uri($"http://127.0.0.1:{printed.Groups[1].Value}/");
            string metrics = await http.GetStringAsync(new Uri(root, "metrics"), Ct);
            Assert.Contains("dolly_pool_logical_bytes", metrics, StringComparison.Ordinal);
            using var ui = await http.GetAsync(new Uri(root, "ui/"), Ct);
            Assert.Equal(System.Net.HttpStatusCode.NotFound, ui.StatusCode);
        }

        await stop.CancelAsync();
        Assert.Equal(0, await running.WaitAsync(TimeSpan.FromSeconds(60), Ct));
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
        var running = Cli.RunAsync(["up", "--kubeconfig", api.KubeconfigPath, "--no-node", "--metrics", "127.0.0.1:0"], host, stop.Token);

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

        // The metrics URL printed at start answers with the pool's gauges.
        var printed = System.Text.RegularExpressions.Regex.Match(outText.ToString(), @"  metrics      (http://127\.0\.0\.1:\d+/metrics) \(Prometheus, unauthenticated, loopback\)");
        Assert.True(printed.Success, outText.ToString());
        using (var http = new HttpClient())
        {
            string metrics = await http.GetStringAsync(new Uri(printed.Groups[1].Value), Ct);
            Assert.True(System.Text.RegularExpressions.Regex.IsMatch(metrics, @"(?m)^dolly_pool_logical_bytes(\{\})? 1073741824( \d+)?$"), metrics);
        }

        // Binding is kube-controller-manager's job on a real cluster; Dolly leaves the claim to it.
        var claim = await client.CoreV1.ReadNamespacedPersistentVolumeClaimAsync("data", "default", cancellationToken: Ct);
        Assert.Null(claim.Spec.VolumeName);

        await stop.CancelAsync();
        Assert.Equal(0, await running.WaitAsync(TimeSpan.FromSeconds(60), Ct));
        await Ok("volume", "list");
    }

    /// <summary>
    /// Two replicas of <c>dolly up --leader-elect</c> on one pool, as the controller Deployment runs them: the
    /// Lease holder opens the pool and serves, the other holds nothing and waits; when the leader stops, the
    /// standby opens the pool and serves in its place.
    /// </summary>
    [Fact]
    public async Task LeaderElect_OnlyTheLeaseHolderOpensThePool_TheStandbyTakesOver()
    {
        await using var api = new ApiServer(new ApiServerOptions(Path.Combine(Root, "cluster-api"), "127.0.0.1", 0));
        await api.StartAsync(Ct);
        using var client = new Kubernetes(KubernetesClientConfiguration.BuildConfigFromConfigFile(api.KubeconfigPath));
        await client.CoreV1.CreateNamespaceAsync(new V1Namespace { Metadata = new V1ObjectMeta { Name = "dolly-system" } }, cancellationToken: Ct);

        (StringWriter Out, Task<int> Run, CancellationTokenSource Stop) Replica(string name)
        {
            var outText = new StringWriter();
            var env = new Dictionary<string, string?> { ["DOLLY_POOL"] = PoolDir, ["POD_NAME"] = name };
            var host = new CliHost(new SyncWriter(outText), new SyncWriter(new StringWriter()), () => Stream.Null, () => Stream.Null, false, false, n => env.GetValueOrDefault(n));
            var stop = CancellationTokenSource.CreateLinkedTokenSource(Ct);
            return (outText, Cli.RunAsync(["up", "--kubeconfig", api.KubeconfigPath, "--leader-elect", "--no-node", "--init-pool", "--metrics", "127.0.0.1:0"], host, stop.Token), stop);
        }

        async Task Until(Func<bool> condition, string what)
        {
            var clock = Stopwatch.StartNew();
            while (!condition())
            {
                Assert.True(clock.Elapsed < TimeSpan.FromSeconds(60), what);
                await Task.Delay(100, Ct);
            }
        }

        var first = Replica("first");
        await Until(() => first.Out.ToString().Contains("Dolly is up", StringComparison.Ordinal), "the first replica never served");
        Assert.Contains("created the pool in", Directory.Exists(PoolDir) ? "created the pool in" : string.Empty, StringComparison.Ordinal);
        var second = Replica("second");
        await Until(() => second.Out.ToString().Contains("waiting for the Lease dolly-system/dolly-controllers as second_", StringComparison.Ordinal), "the second replica never waited");
        await Task.Delay(1000, Ct);
        Assert.DoesNotContain("Dolly is up", second.Out.ToString(), StringComparison.Ordinal);
        Assert.False(second.Run.IsCompleted, "the standby must wait, not fail on the pool the leader holds");

        await first.Stop.CancelAsync();
        Assert.Equal(0, await first.Run.WaitAsync(TimeSpan.FromSeconds(60), Ct));
        await Until(() => second.Out.ToString().Contains("Dolly is up", StringComparison.Ordinal), "the standby never took over");
        var lease = await client.CoordinationV1.ReadNamespacedLeaseAsync("dolly-controllers", "dolly-system", cancellationToken: Ct);
        Assert.StartsWith("second_", lease.Spec.HolderIdentity, StringComparison.Ordinal);

        await second.Stop.CancelAsync();
        Assert.Equal(0, await second.Run.WaitAsync(TimeSpan.FromSeconds(60), Ct));
        first.Stop.Dispose();
        second.Stop.Dispose();
        await Ok("volume", "list");
    }
}
