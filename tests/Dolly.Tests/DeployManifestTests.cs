using System.Diagnostics;
using System.Text;
using Dolly.Api;
using YamlDotNet.RepresentationModel;

namespace Dolly.Tests;

/// <summary>
/// deploy/kubernetes against the real kubectl and the embedded API server: every file, and the kustomization, is
/// accepted by a server-side dry run that creates nothing, then applied for real (the workloads are stored, not
/// run); the CRDs agree with the embedded ones; the kustomization builds offline; every <c>dolly node</c> command line parses; the Dockerfile copies what exists.
/// </summary>
public sealed class DeployManifestTests : IAsyncLifetime
{
    /// <summary>The manifests, in the order the kustomization lists them (the namespace first).</summary>
    private static List<string> Files => [.. Sequence(Load(Path.Combine(Deploy, "kustomization.yaml")).Single(), "resources").Select(n => n.ToString())];

    private readonly string _stateDir = Path.Combine(Path.GetTempPath(), "dolly-deploy-test-" + Guid.NewGuid().ToString("N")[..12]);
    private ApiServer? _api;

    private static string Deploy => Path.Combine(RepoRoot, "deploy", "kubernetes");

    private static string RepoRoot
    {
        get
        {
            for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            {
                if (File.Exists(Path.Combine(dir.FullName, "Dolly.slnx")))
                {
                    return dir.FullName;
                }
            }

            throw new InvalidOperationException("the tests run outside the repository: no Dolly.slnx above " + AppContext.BaseDirectory);
        }
    }

    private static CancellationToken Token => TestContext.Current.CancellationToken;

    public async ValueTask InitializeAsync()
    {
        _api = new ApiServer(new ApiServerOptions(_stateDir, "127.0.0.1", 0));
        await _api.StartAsync(Token);
    }

    public async ValueTask DisposeAsync()
    {
        if (_api is not null)
        {
            await _api.DisposeAsync();
        }

        Directory.Delete(_stateDir, recursive: true);
    }

    [Fact]
    public void EveryManifest_IsInTheKustomization()
    {
        var files = Directory.EnumerateFiles(Deploy, "*.yaml").Select(Path.GetFileName).Where(f => f != "kustomization.yaml").Order(StringComparer.Ordinal).ToList();
        Assert.Equal(files, Files.Order(StringComparer.Ordinal));
        Assert.Equal("namespace.yaml", Files[0]);
    }

    [Fact]
    public async Task Kustomize_BuildsOffline_WithEveryObject()
    {
        var r = await KubectlAsync("kustomize", Deploy);
        Assert.True(r.ExitCode == 0, r.ToString());
        var objects = Parse(r.Stdout).Select(d => $"{Scalar(d, "kind")}/{Scalar(Map(d, "metadata"), "name")}").ToHashSet(StringComparer.Ordinal);
        foreach (string expected in new[]
                 {
                     "Namespace/dolly-system", "CustomResourceDefinition/volumesnapshots.snapshot.storage.k8s.io", "CustomResourceDefinition/referencegrants.gateway.networking.k8s.io", "CustomResourceDefinition/snapshotschedules.dolly.io",
                     "ServiceAccount/dolly-controller", "ClusterRole/dolly-controller", "ClusterRoleBinding/dolly-controller", "Role/dolly-controller-leader-election",
                     "RoleBinding/dolly-controller-leader-election", "ServiceAccount/dolly-node", "CSIDriver/csi.dolly.io", "Deployment/dolly-controller",
                     "Service/dolly-nbd", "Service/dolly-controller-metrics", "DaemonSet/dolly-node", "StorageClass/dolly", "VolumeSnapshotClass/dolly-snapshots",
                 })
        {
            Assert.Contains(expected, objects);
        }
    }

    [Fact]
    public async Task EveryFile_ServerDryRun_CreatesNothing_ThenApplyCreatesEverything()
    {
        // kube-apiserver refuses even a dry-run create in a namespace that does not exist, so the namespace is made
        // first, as `kubectl apply -k` on a cluster needs it to be; everything else is only dry-run.
        await Ok("apply", "-f", Path.Combine(Deploy, "namespace.yaml"));
        string crdVersionsBefore = (await Ok("get", "crd", "-o", "jsonpath={range .items[*]}{.metadata.name}={.metadata.resourceVersion} {end}")).Stdout;
        foreach (string file in Files)
        {
            var dry = await Ok("apply", "--dry-run=server", "-f", Path.Combine(Deploy, file));
            int objects = Load(Path.Combine(Deploy, file)).Count;
            int lines = dry.Stdout.Split('\n').Count(l => l.EndsWith("(server dry run)", StringComparison.Ordinal));
            Assert.True(objects == lines, $"{file}: {objects} objects, {lines} dry-run lines: {dry}");
            Assert.False(dry.Stderr.Contains("rror", StringComparison.Ordinal), $"{file}: {dry}");
        }

        var kustomized = await Ok("apply", "-k", Deploy, "--dry-run=server");
        Assert.Contains("deployment.apps/dolly-controller created (server dry run)", kustomized.Stdout, StringComparison.Ordinal);
        Assert.Contains("daemonset.apps/dolly-node created (server dry run)", kustomized.Stdout, StringComparison.Ordinal);
        Assert.Contains("clusterrolebinding.rbac.authorization.k8s.io/dolly-controller created (server dry run)", kustomized.Stdout, StringComparison.Ordinal);

        foreach (string file in Files.Where(f => f is not ("namespace.yaml" or "crds.yaml" or "crds-dolly.yaml")))
        {
            var get = await KubectlAsync("get", "-f", Path.Combine(Deploy, file), "-o", "name");
            Assert.True(get.ExitCode != 0 && get.Stdout.Length == 0 && get.Stderr.Contains("NotFound", StringComparison.Ordinal), $"the dry run of {file} created something: {get}");
        }

        // The embedded server installs the same CRDs at start: the dry run must not have touched them.
        Assert.Equal(crdVersionsBefore, (await Ok("get", "crd", "-o", "jsonpath={range .items[*]}{.metadata.name}={.metadata.resourceVersion} {end}")).Stdout);
        Assert.Contains("No resources found", (await Ok("get", "all", "-n", "dolly-system")).Stderr, StringComparison.Ordinal);

        // The real apply, through the kustomization as the README says, creates every object of every file.
        var applied = await Ok("apply", "-k", Deploy);
        Assert.Contains("deployment.apps/dolly-controller created", applied.Stdout, StringComparison.Ordinal);
        var names = (await Ok("get", "-k", Deploy, "-o", "name")).Stdout;
        foreach (string file in Files)
        {
            foreach (var doc in Load(Path.Combine(Deploy, file)))
            {
                Assert.Contains("/" + Scalar(Map(doc, "metadata"), "name") + "\n", names, StringComparison.Ordinal);
            }
        }

        // Stored, not run: the workloads are there with nothing ready, the Service has no cluster IP.
        var all = (await Ok("get", "all", "-n", "dolly-system")).Stdout;
        Assert.Matches(@"service/dolly-nbd\s+ClusterIP\s+<none>\s+<none>\s+10809/TCP", all);
        Assert.Matches(@"daemonset\.apps/dolly-node\s+0\s+0\s+0\s+0\s+0\s", all);
        Assert.Matches(@"deployment\.apps/dolly-controller\s+0/2\s+0\s+0\s", all);
        Assert.Matches(@"dolly-controller\s+ClusterRole/dolly-controller\s", (await Ok("get", "clusterrolebinding", "dolly-controller")).Stdout);
        Assert.Matches(@"dolly-controller-leader-election\s+Role/dolly-controller-leader-election\s", (await Ok("get", "rolebinding", "-n", "dolly-system")).Stdout);
        Assert.Matches(@"dolly-node\s+0\s", (await Ok("get", "sa", "dolly-node", "-n", "dolly-system")).Stdout);

        // Applying again changes nothing.
        var again = await Ok("apply", "-k", Deploy);
        Assert.DoesNotContain(" configured", again.Stdout, StringComparison.Ordinal);
        Assert.DoesNotContain(" created", again.Stdout, StringComparison.Ordinal);

        Assert.Matches(@"dolly-snapshots\s+csi\.dolly\.io\s+Delete", (await Ok("get", "volumesnapshotclass")).Stdout);
        Assert.Matches(@"dolly\s+csi\.dolly\.io\s+Delete\s+Immediate\s+true", (await Ok("get", "storageclass", "dolly")).Stdout);
        Assert.Equal("true", (await Ok("get", "volumesnapshotclass", "dolly-snapshots", "-o", "jsonpath={.metadata.annotations.snapshot\\.storage\\.kubernetes\\.io/is-default-class}")).Stdout);
        Assert.Equal("false false File Persistent", (await Ok("get", "csidriver", "csi.dolly.io", "-o", "jsonpath={.spec.attachRequired} {.spec.podInfoOnMount} {.spec.fsGroupPolicy} {.spec.volumeLifecycleModes[*]}")).Stdout);
        Assert.StartsWith("https://github.com/", (await Ok("get", "crd", "volumesnapshots.snapshot.storage.k8s.io", "-o", "jsonpath={.metadata.annotations.api-approved\\.kubernetes\\.io}")).Stdout, StringComparison.Ordinal);

        // The CRDs' CEL rules hold: a content must name its snapshot's namespace, and have exactly one source.
        var bad = await KubectlWithInputAsync(
            "apiVersion: snapshot.storage.k8s.io/v1\nkind: VolumeSnapshotContent\nmetadata: {name: vsc-bad}\nspec: {deletionPolicy: Retain, driver: csi.dolly.io, source: {snapshotHandle: s, volumeHandle: v}, volumeSnapshotRef: {name: vs}}\n",
            "apply", "-f", "-");
        Assert.NotEqual(0, bad.ExitCode);
        Assert.Contains("exactly one of volumeHandle and snapshotHandle must be set", bad.Stderr, StringComparison.Ordinal);
        Assert.Contains("both spec.volumeSnapshotRef.name and spec.volumeSnapshotRef.namespace must be set", bad.Stderr, StringComparison.Ordinal);
        (await KubectlWithInputAsync(
            "apiVersion: snapshot.storage.k8s.io/v1\nkind: VolumeSnapshotContent\nmetadata: {name: vsc-good}\nspec: {deletionPolicy: Retain, driver: csi.dolly.io, source: {snapshotHandle: s}, volumeSnapshotRef: {name: vs, namespace: default}}\n",
            "apply", "-f", "-")).EnsureOk();
    }

    [Fact]
    public void Crds_AgreeWithTheEmbeddedDefinitions_ApartFromCelRules()
    {
        var embeddedByName = new[] { "bootstrap-snapshot.yaml", "bootstrap-dolly.yaml" }
            .SelectMany(f => Sequence(Load(Path.Combine(RepoRoot, "src", "Dolly.Api", "Definitions", f)).Single(), "items").Cast<YamlMappingNode>())
            .ToDictionary(c => Scalar(Map(c, "metadata"), "name"), StringComparer.Ordinal);
        var deployed = new[] { "crds.yaml", "crds-dolly.yaml" }.SelectMany(f => Load(Path.Combine(Deploy, f))).ToDictionary(c => Scalar(Map(c, "metadata"), "name"), StringComparer.Ordinal);
        Assert.Equal(embeddedByName.Keys.Order(StringComparer.Ordinal), deployed.Keys.Order(StringComparer.Ordinal));
        foreach (var (name, crd) in deployed)
        {
            Assert.Equal(Canon(Map(embeddedByName[name], "spec"), stripCel: false), Canon(Map(crd, "spec"), stripCel: true));
            if (name.EndsWith(".k8s.io", StringComparison.Ordinal))
            {
                Assert.False(string.IsNullOrEmpty(Scalar(Map(Map(crd, "metadata"), "annotations"), "api-approved.kubernetes.io")), $"{name} lacks the api-approved.kubernetes.io annotation that kube-apiserver requires of *.k8s.io groups");
            }
        }

        Assert.Contains("x-kubernetes-validations", File.ReadAllText(Path.Combine(Deploy, "crds.yaml")), StringComparison.Ordinal);
    }

    [Fact]
    public async Task NodePlugin_CommandLine_Parses_PathsAgree()
    {
        var daemonSet = Load(Path.Combine(Deploy, "node.yaml")).Single();
        var pod = Map(Map(Map(daemonSet, "spec"), "template"), "spec");
        var containers = Sequence(pod, "containers").Cast<YamlMappingNode>().ToDictionary(c => Scalar(c, "name"), StringComparer.Ordinal);
        string[] args = [.. Sequence(containers["dolly"], "args").Select(a => a.ToString())];
        Assert.Equal("node", args[0]);

        // Every option is known and has its value: the run gets as far as reading the TLS files, absent here.
        var run = await new CliRunner().RunAsync(args);
        Assert.True(run.ExitCode == ExitCodes.InvalidArgument, run.ToString());
        Assert.Contains("error: cannot read the NBD server's CA certificate /nbd-tls/ca.crt", run.Err, StringComparison.Ordinal);
        Assert.Equal(ExitCodes.Ok, (await new CliRunner().RunAsync(["node", "--help"])).ExitCode);

        // The socket dolly serves is the one the registrar watches and registers with kubelet.
        var volumes = Sequence(pod, "volumes").Cast<YamlMappingNode>().ToDictionary(v => Scalar(v, "name"), StringComparer.Ordinal);
        string pluginDir = Scalar(Map(volumes["plugin-dir"], "hostPath"), "path");
        Assert.Equal("/var/lib/kubelet/plugins/csi.dolly.io", pluginDir);
        Assert.Equal("/csi/csi.sock", Arg(args, "--csi-socket"));
        Assert.Equal("/csi", MountPath(containers["dolly"], "plugin-dir"));
        string[] registrar = [.. Sequence(containers["node-driver-registrar"], "args").Select(a => a.ToString())];
        Assert.Contains("--csi-address=/csi/csi.sock", registrar);
        Assert.Contains($"--kubelet-registration-path={pluginDir}/csi.sock", registrar);
        Assert.Equal("/var/lib/kubelet/plugins_registry", Scalar(Map(volumes["registration-dir"], "hostPath"), "path"));
        Assert.StartsWith("registry.k8s.io/sig-storage/csi-node-driver-registrar:", Scalar(containers["node-driver-registrar"], "image"), StringComparison.Ordinal);

        // The TLS files are where the secret is mounted; the NBD address is the Service's.
        string tlsMount = MountPath(containers["dolly"], "nbd-tls");
        Assert.All(new[] { "--nbd-tls-ca", "--nbd-tls-cert", "--nbd-tls-key" }, o => Assert.StartsWith(tlsMount + "/", Arg(args, o), StringComparison.Ordinal));
        var service = Load(Path.Combine(Deploy, "service.yaml")).Single();
        string port = Scalar((YamlMappingNode)Sequence(Map(service, "spec"), "ports").Single(), "port");
        Assert.Equal($"{Scalar(Map(service, "metadata"), "name")}.{Scalar(Map(service, "metadata"), "namespace")}.svc:{port}", Arg(args, "--nbd"));
        Assert.Equal("Bidirectional", Scalar(VolumeMount(containers["dolly"], "kubelet-dir"), "mountPropagation"));

        // Metrics on the pod's address, at the port the container names and the scrape annotations say.
        Assert.Contains("--metrics-allow-remote", args);
        string metricsPort = Arg(args, "--metrics").Split(':')[^1];
        var ports = Sequence(containers["dolly"], "ports").Cast<YamlMappingNode>().ToDictionary(p => Scalar(p, "name"), StringComparer.Ordinal);
        Assert.Equal(metricsPort, Scalar(ports["metrics"], "containerPort"));
        var annotations = Map(Map(Map(Map(daemonSet, "spec"), "template"), "metadata"), "annotations");
        Assert.Equal("true", Scalar(annotations, "prometheus.io/scrape"));
        Assert.Equal(metricsPort, Scalar(annotations, "prometheus.io/port"));
        Assert.Equal("/metrics", Scalar(annotations, "prometheus.io/path"));
    }

    [Fact]
    public async Task Controller_CommandLine_Parses_UsesTheMountedPaths()
    {
        var deployment = Load(Path.Combine(Deploy, "controller.yaml")).Single();
        var pod = Map(Map(Map(deployment, "spec"), "template"), "spec");
        var container = (YamlMappingNode)Sequence(pod, "containers").Single();
        string[] args = [.. Sequence(container, "args").Select(a => a.ToString())];
        Assert.Equal(["up", "--in-cluster", "--leader-elect", "--no-node"], args[..4]);
        string tls = MountPath(container, "tls");
        Assert.All(new[] { "--nbd-tls-cert", "--nbd-tls-key", "--nbd-tls-client-ca" }, o => Assert.StartsWith(tls + "/", Arg(args, o), StringComparison.Ordinal));
        Assert.StartsWith(MountPath(container, "pool") + "/", Arg(args, "--pool"), StringComparison.Ordinal);
        Assert.EndsWith(":10809", Arg(args, "--nbd-tcp"), StringComparison.Ordinal);
        Assert.Equal("true", Scalar(Map(pod, "nodeSelector"), "dolly.io/storage-node"));
        Assert.Equal("2", Scalar(Map(deployment, "spec"), "replicas"));
        Assert.Contains("--init-pool", args);

        // Metrics: served on the pod's address at the port the container names, the pod's and the Service's scrape
        // annotations say, and the Service targets.
        Assert.Contains("--metrics-allow-remote", args);
        string metricsPort = Arg(args, "--metrics").Split(':')[^1];
        var ports = Sequence(container, "ports").Cast<YamlMappingNode>().ToDictionary(p => Scalar(p, "name"), StringComparer.Ordinal);
        Assert.Equal(metricsPort, Scalar(ports["metrics"], "containerPort"));
        var podAnnotations = Map(Map(Map(Map(deployment, "spec"), "template"), "metadata"), "annotations");
        var service = Load(Path.Combine(Deploy, "metrics-service.yaml")).Single();
        foreach (var annotations in new[] { podAnnotations, Map(Map(service, "metadata"), "annotations") })
        {
            Assert.Equal("true", Scalar(annotations, "prometheus.io/scrape"));
            Assert.Equal(metricsPort, Scalar(annotations, "prometheus.io/port"));
            Assert.Equal("/metrics", Scalar(annotations, "prometheus.io/path"));
        }

        var servicePort = (YamlMappingNode)Sequence(Map(service, "spec"), "ports").Single();
        Assert.Equal("metrics", Scalar(servicePort, "targetPort"));
        Assert.Equal(metricsPort, Scalar(servicePort, "port"));
        Assert.Equal(Scalar(Map(Map(Map(Map(deployment, "spec"), "template"), "metadata"), "labels"), "app.kubernetes.io/name"), Scalar(Map(Map(service, "spec"), "selector"), "app.kubernetes.io/name"));

        // Every option is known and has its value: the run gets as far as loading the TLS files, absent here.
        var run = await new CliRunner().RunAsync(args);
        Assert.True(run.ExitCode == ExitCodes.InvalidArgument, run.ToString());
        Assert.Contains("cannot load the TLS certificate '/tls/tls.crt'", run.Err, StringComparison.Ordinal);
    }

    [Fact]
    public void Dockerfile_CopiesWhatExists_PublishesTheDollyExecutable()
    {
        string[] lines = File.ReadAllLines(Path.Combine(Deploy, "Dockerfile"));
        var copies = lines.Where(l => l.StartsWith("COPY ", StringComparison.Ordinal) && !l.Contains("--from=", StringComparison.Ordinal)).ToList();
        Assert.NotEmpty(copies);
        foreach (string copy in copies)
        {
            string[] parts = copy.Split(' ', StringSplitOptions.RemoveEmptyEntries);
            foreach (string source in parts[1..^1])
            {
                Assert.True(Path.Exists(Path.Combine(RepoRoot, source)), $"the Dockerfile copies '{source}', which the repository lacks");
            }
        }

        string publish = lines.Single(l => l.Contains("dotnet publish", StringComparison.Ordinal));
        string project = publish.Split(' ', StringSplitOptions.RemoveEmptyEntries).Single(p => p.EndsWith(".csproj", StringComparison.Ordinal));
        Assert.Contains("<AssemblyName>dolly</AssemblyName>", File.ReadAllText(Path.Combine(RepoRoot, project)), StringComparison.Ordinal);
        Assert.Contains("FROM --platform=$BUILDPLATFORM mcr.microsoft.com/dotnet/sdk:10.0 AS build", lines);
        Assert.Contains("FROM debian:bookworm-slim", lines);
        Assert.Contains("ENTRYPOINT [\"dolly\"]", lines);
        string install = string.Join(' ', lines.SkipWhile(l => !l.Contains("apt-get install", StringComparison.Ordinal)).Take(2));
        Assert.All(new[] { "nbd-client", "libnbd-bin", "fuse3", "e2fsprogs", "xfsprogs", "util-linux", "mount" }, p => Assert.Contains(" " + p, install, StringComparison.Ordinal));
    }

    private sealed class CliRunner : CliTestBase
    {
        public async Task<CliRun> RunAsync(string[] args)
        {
            try
            {
                return await Dolly(args);
            }
            finally
            {
                Dispose();
            }
        }
    }

    private sealed record KubectlResult(int ExitCode, string Stdout, string Stderr)
    {
        public KubectlResult EnsureOk() => ExitCode == 0 ? this : throw new InvalidOperationException(ToString());

        public override string ToString() => $"kubectl exit {ExitCode}\n--- stdout\n{Stdout}\n--- stderr\n{Stderr}";
    }

    private Task<KubectlResult> KubectlAsync(params string[] args) => KubectlWithInputAsync(null, args);

    private async Task<KubectlResult> Ok(params string[] args)
    {
        var r = await KubectlAsync(args);
        Assert.True(r.ExitCode == 0, $"kubectl {string.Join(' ', args)}: {r}");
        return r;
    }

    private async Task<KubectlResult> KubectlWithInputAsync(string? stdin, params string[] args)
    {
        var psi = new ProcessStartInfo("kubectl") { RedirectStandardInput = true, RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (string a in args)
        {
            psi.ArgumentList.Add(a);
        }

        psi.Environment["KUBECONFIG"] = _api!.KubeconfigPath;
        using var process = Process.Start(psi)!;
        await process.StandardInput.WriteAsync(stdin ?? string.Empty);
        process.StandardInput.Close();
        var stdout = process.StandardOutput.ReadToEndAsync(Token);
        var stderr = process.StandardError.ReadToEndAsync(Token);
        await process.WaitForExitAsync(Token);
        return new KubectlResult(process.ExitCode, await stdout, await stderr);
    }

    private static List<YamlMappingNode> Load(string path) => Parse(File.ReadAllText(path)).ToList() is { Count: > 0 } docs ? docs : throw new InvalidOperationException(path + " is empty");

    private static IEnumerable<YamlMappingNode> Parse(string text)
    {
        var stream = new YamlStream();
        stream.Load(new StringReader(text));
        foreach (var doc in stream.Documents)
        {
            if (doc.RootNode is YamlMappingNode map)
            {
                yield return map;
            }
            else if (doc.RootNode is YamlSequenceNode)
            {
                // The embedded definitions are one YAML list; wrap it so callers unwrap it.
                yield return new YamlMappingNode(new YamlScalarNode("items"), doc.RootNode);
            }
        }
    }

    private static YamlMappingNode Map(YamlMappingNode node, string key) => (YamlMappingNode)node.Children[new YamlScalarNode(key)];

    private static IEnumerable<YamlNode> Sequence(YamlMappingNode node, string key) => ((YamlSequenceNode)node.Children[new YamlScalarNode(key)]).Children;

    private static string Scalar(YamlMappingNode node, string key) =>
        node.Children.TryGetValue(new YamlScalarNode(key), out var value) ? ((YamlScalarNode)value).Value ?? string.Empty : string.Empty;

    private static string Arg(string[] args, string option) => args[Array.IndexOf(args, option) + 1];

    private static YamlMappingNode VolumeMount(YamlMappingNode container, string volume) =>
        Sequence(container, "volumeMounts").Cast<YamlMappingNode>().Single(m => Scalar(m, "name") == volume);

    private static string MountPath(YamlMappingNode container, string volume) => Scalar(VolumeMount(container, volume), "mountPath");

    /// <summary>A canonical text of a YAML tree (keys sorted, flow or block style alike), optionally without CEL rules.</summary>
    private static string Canon(YamlNode node, bool stripCel)
    {
        var sb = new StringBuilder();
        Write(node);
        return sb.ToString();

        void Write(YamlNode n)
        {
            switch (n)
            {
                case YamlScalarNode s:
                    sb.Append('"').Append(s.Value).Append('"');
                    break;
                case YamlSequenceNode q:
                    sb.Append('[');
                    foreach (var item in q.Children)
                    {
                        Write(item);
                        sb.Append(',');
                    }

                    sb.Append(']');
                    break;
                case YamlMappingNode m:
                    sb.Append('{');
                    foreach (var (key, value) in m.Children.Select(kv => (((YamlScalarNode)kv.Key).Value!, kv.Value)).OrderBy(kv => kv.Item1, StringComparer.Ordinal))
                    {
                        if (stripCel && key == "x-kubernetes-validations")
                        {
                            continue;
                        }

                        sb.Append(key).Append(':');
                        Write(value);
                        sb.Append(',');
                    }

                    sb.Append('}');
                    break;
            }
        }
    }
}
