using Dolly.Api;
using k8s;
using k8s.Models;

namespace Dolly.Tests;

public sealed class BenchAndDemoTests : CliTestBase
{
    [Fact]
    public async Task BenchEngineQuick_RunsEndToEndAndWritesValidJson()
    {
        string json = Path.Combine(Root, "bench.json");
        string scratch = Path.Combine(Root, "scratch");
        Directory.CreateDirectory(scratch);
        var r = await Ok("bench", "engine", "--quick", "--json", json, "--dir", scratch);
        Assert.Contains("snapshot create latency", r.Out, StringComparison.Ordinal);
        Assert.Contains("target(s) met", r.Out, StringComparison.Ordinal);
        Assert.Empty(Directory.EnumerateFileSystemEntries(scratch));

        using var doc = System.Text.Json.JsonDocument.Parse(await File.ReadAllTextAsync(json, TestContext.Current.CancellationToken));
        var root = doc.RootElement;
        Assert.True(root.GetProperty("quick").GetBoolean());
        Assert.StartsWith("dolly bench engine --quick", root.GetProperty("command").GetString(), StringComparison.Ordinal);
        Assert.True(root.GetProperty("machine").GetProperty("processors").GetInt32() > 0);
        var figures = root.GetProperty("figures").EnumerateArray().ToList();
        Assert.True(figures.Count >= 15, $"{figures.Count} figures");
        foreach (var group in new[] { "snapshot create latency", "clone create latency", "sequential 1 MiB", "random 4 KiB", "snapshots in the lineage", "metadata per GiB", "snapshot delete" })
        {
            Assert.Contains(figures, f => f.GetProperty("group").GetString()!.Contains(group, StringComparison.Ordinal));
        }

        Assert.All(figures, f =>
        {
            Assert.True(double.IsFinite(f.GetProperty("value").GetDouble()) && f.GetProperty("value").GetDouble() >= 0);
            Assert.False(string.IsNullOrEmpty(f.GetProperty("unit").GetString()));
        });
        Assert.Contains(figures, f => f.GetProperty("pass").ValueKind is System.Text.Json.JsonValueKind.True or System.Text.Json.JsonValueKind.False);
    }

    [Fact]
    public async Task BenchEngine_MissingDirectory_FailsNamingIt()
    {
        string missing = Path.Combine(Root, "nope");
        await Fails(ExitCodes.NotFound, $"benchmark directory '{missing}' does not exist", "bench", "engine", "--quick", "--dir", missing);
        await Fails(ExitCodes.IoError, "cannot create a scratch directory in '/proc'", "bench", "engine", "--quick", "--dir", "/proc");
        await Fails(ExitCodes.InvalidArgument, "--only: unknown section 'nope'", "bench", "engine", "--quick", "--only", "nope");
    }

    [Fact]
    public async Task Demo_ExplicitPool_TellsBothActsAndKeepsThePoolAndItsApiState()
    {
        string pool = Path.Combine(Root, "demo-pool");
        var r = await Demo("--pool", pool, "demo");
        foreach (var step in EngineSteps.Concat(KubernetesSteps))
        {
            Assert.Contains(step, r.Out, StringComparison.Ordinal);
        }

        Assert.Contains($"Done. The pool stays in '{pool}' and its API server state in '{pool}-api'", r.Out, StringComparison.Ordinal);

        // The pool holds the engine act's two volumes and the three claims' volumes (the refused restore made none).
        var volumes = (await Ok("--pool", pool, "volume", "list", "-o", "json")).Json();
        Assert.Equal(5, volumes.GetArrayLength());
        Assert.Equal(3, volumes.EnumerateArray().Count(v => v.GetProperty("name").GetString()!.StartsWith("pvc-", StringComparison.Ordinal)));
        Assert.True(File.Exists(Path.Combine(pool + "-api", "kubeconfig")), "the API server state stays beside a pool named with --pool");
        Assert.False(File.Exists(Path.Combine(pool, "csi.sock")), "the CSI socket is removed on shutdown");
        Assert.Empty(Directory.EnumerateFileSystemEntries(Temp));
    }

    [Fact]
    public async Task Demo_ScratchPool_ShowsEachStepAndLeavesNothingBehind()
    {
        var r = await Demo("demo");
        foreach (var step in EngineSteps.Concat(KubernetesSteps))
        {
            Assert.Contains(step, r.Out, StringComparison.Ordinal);
        }

        // Each step of the Kubernetes act prints its elapsed time, and the summary sums them up.
        Assert.Matches(@"started in [0-9.]+ (ms|s)\n", r.Out);
        Assert.Matches(@"persistentvolumeclaim/data Bound to volume pvc-[0-9a-f-]+ in [0-9.]+ (ms|s)", r.Out);
        Assert.Matches(@"volumesnapshot/data-snap readyToUse in [0-9.]+ (ms|s) \(content snapcontent-[0-9a-f-]+, restoreSize 1Gi\)", r.Out);
        Assert.Matches(@"stopped in [0-9.]+ (ms|s)", r.Out);
        Assert.Matches(@"restore claim Bound +[0-9.]+ (ms|s) +holds the snapshot's bytes", r.Out);
        Assert.Matches(@"clone claim Bound +[0-9.]+ (ms|s) +holds the source's bytes at clone time", r.Out);
        Assert.Contains("Done. The scratch pool is deleted", r.Out, StringComparison.Ordinal);
        Assert.DoesNotContain("MISMATCH", r.Out, StringComparison.Ordinal);
        Assert.Empty(Directory.EnumerateFileSystemEntries(Temp));
        Assert.False(Directory.Exists(PoolDir), "the default pool is not touched");
    }

    [Fact]
    public async Task Demo_Keep_KeepsTheScratchPoolAndItsApiState()
    {
        var r = await Demo("demo", "--keep");
        string root = Assert.Single(Directory.EnumerateDirectories(Temp, "dolly-demo-*"));
        string pool = Path.Combine(root, "pool");
        Assert.Contains($"Done. The pool stays in '{pool}' and its API server state in '{pool}-api'", r.Out, StringComparison.Ordinal);
        Assert.True(File.Exists(Path.Combine(pool, "meta.dolly")));
        Assert.True(File.Exists(Path.Combine(pool + "-api", "kubeconfig")));
        Assert.Equal(5, (await Ok("--pool", pool, "volume", "list", "-o", "json")).Json().GetArrayLength());
    }

    [Fact]
    public async Task Demo_SkipKubernetes_ShowsOnlyTheEngine()
    {
        string pool = Path.Combine(Root, "demo-pool");
        var r = await Demo("--pool", pool, "demo", "--skip-kubernetes");
        foreach (var step in EngineSteps)
        {
            Assert.Contains(step, r.Out, StringComparison.Ordinal);
        }

        Assert.DoesNotContain("kubectl", r.Out, StringComparison.Ordinal);
        Assert.Contains($"Done. The pool stays in '{pool}': try", r.Out, StringComparison.Ordinal);
        Assert.Equal(2, (await Ok("--pool", pool, "volume", "list", "-o", "json")).Json().GetArrayLength());
        Assert.False(Directory.Exists(pool + "-api"), "no API server ran");
    }

    [Fact]
    public async Task Demo_NamespaceDemoAlreadyInThePoolsApiState_FailsNamingItAndStopsEverything()
    {
        // A pool whose API server (dolly up's state beside it) already has a namespace 'demo'.
        string pool = Path.Combine(Root, "used-pool");
        await Ok("--pool", pool, "pool", "init");
        await using (var api = new ApiServer(new ApiServerOptions(pool + "-api", "127.0.0.1", 0)))
        {
            await api.StartAsync(TestContext.Current.CancellationToken);
            using var client = new Kubernetes(KubernetesClientConfiguration.BuildConfigFromConfigFile(api.KubeconfigPath));
            await client.CoreV1.CreateNamespaceAsync(new V1Namespace { Metadata = new V1ObjectMeta { Name = "demo" } }, cancellationToken: TestContext.Current.CancellationToken);
        }

        var r = await Run(["--pool", pool, "demo"], stdin: null, Environment(), fileSystem: null);
        Assert.True(r.ExitCode == ExitCodes.AlreadyExists, r.ToString());
        Assert.Contains($"error: namespace 'demo' already exists in the API server state '{pool}-api': the demo needs a pool whose Kubernetes objects it owns", r.Err, StringComparison.Ordinal);
        Assert.DoesNotContain("   at ", r.Err, StringComparison.Ordinal);

        // Everything stopped: the pool and the API server state can be opened again.
        Assert.False(File.Exists(Path.Combine(pool, "csi.sock")));
        await Ok("--pool", pool, "volume", "list");
        await using var again = new ApiServer(new ApiServerOptions(pool + "-api", "127.0.0.1", 0));
        await again.StartAsync(TestContext.Current.CancellationToken);
        Assert.Empty(Directory.EnumerateFileSystemEntries(Temp));
    }

    private static readonly string[] EngineSteps =
    [
        "$ dolly volume create web --size 10Gi", "$ dolly snapshot create web before-upgrade", "$ dolly volume revert web before-upgrade", "$ dolly volume list", "is clean",
        "byte for byte the imported image",
    ];

    private static readonly string[] KubernetesSteps =
    [
        "Now the main job: instant copies of Kubernetes volumes",
        "controllers  snapshot, snapshotter, group snapshot, provisioner, resizer, volume binder, StatefulSet claims; dolly.io: schedules, golden snapshots, reverts",
        "storageclass.storage.k8s.io/dolly created",
        "volumesnapshotclass.snapshot.storage.k8s.io/dolly-snapshots created",
        "namespace/demo created",
        "$ kubectl wait -n demo pvc/data --for=jsonpath='{.status.phase}'=Bound",
        "wrote \"Hello from Dolly\" (padded to 4 KiB) at offset 0 of pvc-",
        "volumesnapshot/data-snap readyToUse in ",
        "persistentvolumeclaim/data-restore Bound to volume pvc-",
        "persistentvolumeclaim/data-clone Bound to volume pvc-",
        "Goodbye from Dolly, overwritten   the new bytes",
        "Hello from Dolly                  the snapshot's bytes",
        "Hello from Dolly                  the bytes at clone time",
        "the restore and the clone hold the original 4 KiB byte for byte; only 'data' changed",
        "Warning ProvisioningFailed persistentvolumeclaim/too-small: requested volume size 536870912 is less than the size 1073741824 for the source snapshot data-snap",
        "persistentvolumeclaim/too-small is Pending: no volume was created",
        "Stop the controllers, the CSI driver and the API server.",
        "too-small restore refused",
        "$ dolly volume list",
    ];

    /// <summary>The scratch directory the demo gets as $TMPDIR, so a test can see what it leaves behind.</summary>
    private string Temp => Path.Combine(Root, "tmp");

    private Dictionary<string, string?> Environment()
    {
        Directory.CreateDirectory(Temp);
        return new() { ["DOLLY_POOL"] = PoolDir, ["TMPDIR"] = Temp };
    }

    private async Task<CliRun> Demo(params string[] args)
    {
        var r = await Run(args, stdin: null, Environment(), fileSystem: null);
        Assert.True(r.ExitCode == 0, $"dolly {string.Join(' ', args)} failed: {r}");
        return r;
    }
}
