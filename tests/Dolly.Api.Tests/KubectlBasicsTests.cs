namespace Dolly.Api.Tests;

/// <summary>End-to-end with the real kubectl: discovery, get, create, apply, output formats, explain.</summary>
public sealed class KubectlBasicsTests(ServerFixture fx) : IClassFixture<ServerFixture>
{
    private static string Acceptance(string file) =>
        File.ReadAllText(Path.Combine(AppContext.BaseDirectory, "manifests", file));

    [Fact]
    public async Task Version_ReportsServer132()
    {
        var r = (await fx.KubectlAsync("version")).ShouldSucceed();
        Assert.Contains("Server Version: v1.32.4", r.Stdout, StringComparison.Ordinal);
    }

    [Fact]
    public async Task ApiResources_ListsEveryServedKind()
    {
        var r = (await fx.KubectlAsync("api-resources")).ShouldSucceed();
        foreach (var kind in new[] { "Namespace", "PersistentVolumeClaim", "PersistentVolume", "Event", "StorageClass", "CSIDriver",
                     "Lease", "CustomResourceDefinition", "VolumeSnapshot", "VolumeSnapshotContent", "VolumeSnapshotClass",
                     "VolumeGroupSnapshot", "VolumeGroupSnapshotContent", "VolumeGroupSnapshotClass", "ReferenceGrant" })
        {
            Assert.Contains(" " + kind, r.Stdout, StringComparison.Ordinal);
        }
    }

    [Fact]
    public async Task GetNamespaces_ShowsDefaultsAsTable()
    {
        var r = (await fx.KubectlAsync("get", "ns")).ShouldSucceed();
        Assert.Matches(@"NAME\s+STATUS\s+AGE", r.Stdout);
        Assert.Matches(@"default\s+Active", r.Stdout);
        Assert.Matches(@"kube-system\s+Active", r.Stdout);
    }

    [Fact]
    public async Task Apply_AcceptanceManifests_CreatesThenUnchangedThenConfigured()
    {
        var classes = (await fx.KubectlWithInputAsync(Acceptance("00-classes.yaml"), "apply", "-f", "-")).ShouldSucceed();
        Assert.Contains("storageclass.storage.k8s.io/dolly created", classes.Stdout, StringComparison.Ordinal);
        Assert.Contains("volumesnapshotclass.snapshot.storage.k8s.io/dolly-snapshots created", classes.Stdout, StringComparison.Ordinal);

        string manifest = Acceptance("01-snapshot-restore.yaml");
        var first = (await fx.KubectlWithInputAsync(manifest, "apply", "-f", "-")).ShouldSucceed();
        Assert.Contains("namespace/demo created", first.Stdout, StringComparison.Ordinal);
        Assert.Contains("volumesnapshot.snapshot.storage.k8s.io/data-snap created", first.Stdout, StringComparison.Ordinal);
        Assert.Contains("persistentvolumeclaim/restored created", first.Stdout, StringComparison.Ordinal);

        var again = (await fx.KubectlWithInputAsync(manifest, "apply", "-f", "-")).ShouldSucceed();
        Assert.Contains("volumesnapshot.snapshot.storage.k8s.io/data-snap unchanged", again.Stdout, StringComparison.Ordinal);
        Assert.Contains("persistentvolumeclaim/data unchanged", again.Stdout, StringComparison.Ordinal);

        string relabelled = manifest.Replace("metadata:\n  name: data-snap\n", "metadata:\n  name: data-snap\n  labels: {tier: gold}\n", StringComparison.Ordinal)
            .Replace("metadata:\n  name: data\n", "metadata:\n  name: data\n  labels: {tier: gold}\n", StringComparison.Ordinal);
        var changed = (await fx.KubectlWithInputAsync(relabelled, "apply", "-f", "-")).ShouldSucceed();
        Assert.Contains("volumesnapshot.snapshot.storage.k8s.io/data-snap configured", changed.Stdout, StringComparison.Ordinal);
        Assert.Contains("persistentvolumeclaim/data configured", changed.Stdout, StringComparison.Ordinal);

        var vs = (await fx.KubectlAsync("get", "vs", "-n", "demo", "-l", "tier=gold")).ShouldSucceed();
        Assert.Matches(@"NAME\s+READYTOUSE\s+SOURCEPVC\s+SOURCESNAPSHOTCONTENT\s+RESTORESIZE\s+SNAPSHOTCLASS\s+SNAPSHOTCONTENT\s+CREATIONTIME\s+AGE", vs.Stdout);
        Assert.Matches(@"data-snap\s+data\s+dolly-snapshots", vs.Stdout);

        var pvc = (await fx.KubectlAsync("get", "pvc", "-n", "demo", "-o", "wide")).ShouldSucceed();
        Assert.Matches(@"data\s+Pending\s+dolly\s+<unset>\s+\S+\s+Filesystem", pvc.Stdout);

        var sc = (await fx.KubectlAsync("get", "sc")).ShouldSucceed();
        Assert.Matches(@"dolly\s+csi.dolly.io\s+Delete\s+Immediate\s+true", sc.Stdout);
    }

    [Fact]
    public async Task CreateDryRunServer_StoresNothing()
    {
        (await fx.KubectlAsync("create", "ns", "dry-ns")).ShouldSucceed();
        const string vs = "apiVersion: snapshot.storage.k8s.io/v1\nkind: VolumeSnapshot\nmetadata: {name: dry, namespace: dry-ns}\nspec: {source: {persistentVolumeClaimName: p}}\n";
        var r = (await fx.KubectlWithInputAsync(vs, "create", "--dry-run=server", "-f", "-", "-o", "yaml")).ShouldSucceed();
        Assert.Contains("uid:", r.Stdout, StringComparison.Ordinal);
        var get = await fx.KubectlAsync("get", "vs", "dry", "-n", "dry-ns");
        get.ShouldFail();
        Assert.Contains("volumesnapshots.snapshot.storage.k8s.io \"dry\" not found", get.Stderr, StringComparison.Ordinal);
    }

    [Fact]
    public async Task OutputFormats_YamlJsonJsonpath()
    {
        (await fx.KubectlAsync("create", "ns", "formats")).ShouldSucceed();
        var yaml = (await fx.KubectlAsync("get", "ns", "formats", "-o", "yaml")).ShouldSucceed();
        Assert.Contains("kind: Namespace", yaml.Stdout, StringComparison.Ordinal);
        Assert.Contains("- kubernetes", yaml.Stdout, StringComparison.Ordinal);
        var json = (await fx.KubectlAsync("get", "ns", "formats", "-o", "json")).ShouldSucceed();
        Assert.Contains("\"phase\": \"Active\"", json.Stdout, StringComparison.Ordinal);
        var path = (await fx.KubectlAsync("get", "ns", "formats", "-o", "jsonpath={.metadata.labels.kubernetes\\.io/metadata\\.name}")).ShouldSucceed();
        Assert.Equal("formats", path.Stdout);
    }

    [Fact]
    public async Task Explain_VolumeSnapshotSpec_ShowsFields()
    {
        var r = (await fx.KubectlAsync("explain", "volumesnapshot.spec")).ShouldSucceed();
        Assert.Contains("KIND:       VolumeSnapshot", r.Stdout, StringComparison.Ordinal);
        Assert.Contains("source\t<Object> -required-", r.Stdout, StringComparison.Ordinal);
        Assert.Contains("volumeSnapshotClassName\t<string>", r.Stdout, StringComparison.Ordinal);
        var pvc = (await fx.KubectlAsync("explain", "pvc.spec.dataSource")).ShouldSucceed();
        Assert.Contains("apiGroup", pvc.Stdout, StringComparison.Ordinal);
    }

    [Fact]
    public async Task ApplyStrict_UnknownField_IsRejected()
    {
        (await fx.KubectlAsync("create", "ns", "strict")).ShouldSucceed();
        const string vs = "apiVersion: snapshot.storage.k8s.io/v1\nkind: VolumeSnapshot\nmetadata: {name: s, namespace: strict}\nspec: {source: {persistentVolumeClaimName: p}, bogus: 1}\n";
        var r = (await fx.KubectlWithInputAsync(vs, "apply", "-f", "-")).ShouldFail();
        Assert.Contains("unknown field \"spec.bogus\"", r.Stderr, StringComparison.Ordinal);
    }

    [Fact]
    public async Task CustomResourceDefinition_AppliedCrdIsServedWithColumns()
    {
        const string crd = """
            apiVersion: apiextensions.k8s.io/v1
            kind: CustomResourceDefinition
            metadata: {name: widgets.example.dolly.io}
            spec:
              group: example.dolly.io
              scope: Namespaced
              names: {plural: widgets, singular: widget, kind: Widget, shortNames: [wd]}
              versions:
              - name: v1
                served: true
                storage: true
                subresources: {status: {}}
                additionalPrinterColumns:
                - {name: Size, type: integer, jsonPath: .spec.size}
                - {name: Ready, type: boolean, jsonPath: .status.ready}
                schema:
                  openAPIV3Schema:
                    type: object
                    properties:
                      spec:
                        type: object
                        required: [size]
                        properties:
                          size: {type: integer, minimum: 1}
                          color: {type: string, default: blue}
                          shape:
                            type: string
                            x-kubernetes-validations:
                            - {rule: self == oldSelf, message: shape is immutable}
                        x-kubernetes-validations:
                        - {rule: "!has(self.shape) || self.shape != 'square' || self.size % 2 == 0", message: squares need an even size}
                      status:
                        type: object
                        properties:
                          ready: {type: boolean}
            """;
        (await fx.KubectlWithInputAsync(crd, "apply", "-f", "-")).ShouldSucceed();
        (await fx.KubectlAsync("wait", "--for", "condition=established", "crd/widgets.example.dolly.io", "--timeout=60s")).ShouldSucceed();
        (await fx.KubectlAsync("create", "ns", "widgets")).ShouldSucceed();
        const string widget = "apiVersion: example.dolly.io/v1\nkind: Widget\nmetadata: {name: w1, namespace: widgets}\nspec: {size: 3}\n";
        (await fx.KubectlWithInputAsync(widget, "apply", "-f", "-")).ShouldSucceed();
        var get = (await fx.KubectlAsync("get", "wd", "-n", "widgets")).ShouldSucceed();
        Assert.Matches(@"NAME\s+SIZE\s+READY", get.Stdout);
        Assert.Matches(@"w1\s+3", get.Stdout);
        var color = (await fx.KubectlAsync("get", "wd", "w1", "-n", "widgets", "-o", "jsonpath={.spec.color}")).ShouldSucceed();
        Assert.Equal("blue", color.Stdout);

        const string bad = "apiVersion: example.dolly.io/v1\nkind: Widget\nmetadata: {name: w2, namespace: widgets}\nspec: {size: 0}\n";
        var invalid = (await fx.KubectlWithInputAsync(bad, "apply", "-f", "-")).ShouldFail();
        Assert.Contains("spec.size: Invalid value: 0: should be greater than or equal to 1", invalid.Stderr, StringComparison.Ordinal);

        const string square = "apiVersion: example.dolly.io/v1\nkind: Widget\nmetadata: {name: w3, namespace: widgets}\nspec: {size: 3, shape: square}\n";
        var odd = (await fx.KubectlWithInputAsync(square, "apply", "-f", "-")).ShouldFail();
        Assert.True(odd.Stderr.Contains("spec: Invalid value: \"object\": squares need an even size", StringComparison.Ordinal), odd.Stderr);
        (await fx.KubectlWithInputAsync(square.Replace("size: 3", "size: 4", StringComparison.Ordinal), "apply", "-f", "-")).ShouldSucceed();
        var reshape = (await fx.KubectlAsync("patch", "wd", "w3", "-n", "widgets", "--type", "merge", "-p", """{"spec":{"shape":"round"}}""")).ShouldFail();
        Assert.Contains("spec.shape: Invalid value: \"string\": shape is immutable", reshape.Stderr, StringComparison.Ordinal);

        var explain = (await fx.KubectlAsync("explain", "widget.spec")).ShouldSucceed();
        Assert.Contains("size\t<integer> -required-", explain.Stdout, StringComparison.Ordinal);

        (await fx.KubectlAsync("delete", "crd", "widgets.example.dolly.io", "--timeout=60s")).ShouldSucceed();
        var gone = await fx.KubectlAsync("get", "widgets.example.dolly.io", "-n", "widgets");
        gone.ShouldFail();
    }

    [Fact]
    public async Task Pods_AreStoredButNotRun_StayPending_NodesStayEmpty()
    {
        (await fx.KubectlAsync("create", "ns", "podless")).ShouldSucceed();
        var mixed = (await fx.KubectlAsync("-n", "podless", "get", "volumesnapshotContent,volumesnapshot,pvc,pod")).ShouldSucceed();
        Assert.Contains("No resources found", mixed.Stderr + mixed.Stdout, StringComparison.Ordinal);
        const string pod = "apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: podless}\nspec: {containers: [{name: c, image: busybox}]}\n";
        (await fx.KubectlWithInputAsync(pod, "create", "-f", "-")).ShouldSucceed();
        var table = (await fx.KubectlAsync("get", "pod", "p", "-n", "podless", "-o", "wide")).ShouldSucceed();
        Assert.Matches(@"NAME\s+READY\s+STATUS\s+RESTARTS\s+AGE\s+IP\s+NODE\s+NOMINATED NODE\s+READINESS GATES", table.Stdout);
        Assert.Matches(@"\np\s+0/1\s+Pending\s+0\s+\S+\s+<none>\s+<none>\s+<none>\s+<none>", table.Stdout);
        var defaults = (await fx.KubectlAsync("get", "pod", "p", "-n", "podless", "-o", "jsonpath={.spec.containers[0].imagePullPolicy} {.spec.restartPolicy} {.status.phase}")).ShouldSucceed();
        Assert.Equal("Always Always Pending", defaults.Stdout);

        // No scheduler or kubelet: deleting an unscheduled pod removes it at once, as kube-apiserver does.
        (await fx.KubectlAsync("delete", "pod", "p", "-n", "podless", "--timeout=60s")).ShouldSucceed();
        Assert.Contains("NotFound", (await fx.KubectlAsync("get", "pod", "p", "-n", "podless")).ShouldFail().Stderr, StringComparison.Ordinal);
        var info = (await fx.KubectlAsync("cluster-info")).ShouldSucceed();
        Assert.Contains("Kubernetes control plane is running at " + fx.Server.Url!.ToString().TrimEnd('/'), info.Stdout, StringComparison.Ordinal);
        Assert.Contains("No resources found", (await fx.KubectlAsync("get", "nodes")).ShouldSucceed().Stderr, StringComparison.Ordinal);
        var create = (await fx.KubectlWithInputAsync("apiVersion: v1\nkind: Node\nmetadata: {name: n1}\n", "create", "-f", "-", "--validate=false")).ShouldFail();
        Assert.Contains("MethodNotAllowed", create.Stderr, StringComparison.Ordinal);
    }

    [Fact]
    public async Task OlderKubectl_UsesOpenApiV2Protobuf_ForApplyValidationAndExplain()
    {
        // kubectl 1.27 and 1.28 read /openapi/v2 as protobuf; the gcloud kubectl bundle ships them beside 1.32.
        const string old = "/usr/lib/google-cloud-sdk/bin/kubectl.1.28";
        Assert.SkipUnless(File.Exists(old), "kubectl 1.28 is not installed here");
        var psi = new System.Diagnostics.ProcessStartInfo(old) { RedirectStandardInput = true, RedirectStandardOutput = true, RedirectStandardError = true };
        psi.Environment["KUBECONFIG"] = fx.Server.KubeconfigPath;
        foreach (var a in new[] { "--cache-dir", fx.CacheDirectory + "-128", "apply", "-f", "-" })
        {
            psi.ArgumentList.Add(a);
        }

        using var p = System.Diagnostics.Process.Start(psi)!;
        await p.StandardInput.WriteAsync("apiVersion: snapshot.storage.k8s.io/v1\nkind: VolumeSnapshot\nmetadata: {name: old-kubectl, namespace: default}\nspec: {source: {persistentVolumeClaimName: a}, bogus: 1}\n");
        p.StandardInput.Close();
        string stderr = await p.StandardError.ReadToEndAsync(TestContext.Current.CancellationToken);
        await p.WaitForExitAsync(TestContext.Current.CancellationToken);
        Assert.NotEqual(0, p.ExitCode);
        Assert.Contains("strict decoding error: unknown field \"spec.bogus\"", stderr, StringComparison.Ordinal);
    }

    [Fact]
    public async Task MultiVersionCrd_ServesEveryServedVersionFromOneStorage_PrefersHighest()
    {
        const string crd = """
            apiVersion: apiextensions.k8s.io/v1
            kind: CustomResourceDefinition
            metadata: {name: grants.example.dolly.io}
            spec:
              group: example.dolly.io
              scope: Namespaced
              names: {plural: grants, kind: Grant}
              versions:
              - {name: v1alpha1, served: true, storage: false, schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}}
              - {name: v1beta1, served: true, storage: true, schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}}
              - {name: v1, served: false, storage: false, schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}}
            """;
        (await fx.KubectlWithInputAsync(crd, "apply", "-f", "-")).ShouldSucceed();
        var versions = (await fx.KubectlAsync("api-versions")).ShouldSucceed();
        Assert.Contains("example.dolly.io/v1beta1", versions.Stdout, StringComparison.Ordinal);
        Assert.Contains("example.dolly.io/v1alpha1", versions.Stdout, StringComparison.Ordinal);
        Assert.DoesNotContain("example.dolly.io/v1\n", versions.Stdout, StringComparison.Ordinal);
        var storedVersions = (await fx.KubectlAsync("get", "crd", "grants.example.dolly.io", "-o", "jsonpath={.status.storedVersions}")).ShouldSucceed();
        Assert.Equal("""["v1beta1"]""", storedVersions.Stdout);

        const string grant = "apiVersion: example.dolly.io/v1alpha1\nkind: Grant\nmetadata: {name: g, namespace: default}\nspec: {x: 1}\n";
        (await fx.KubectlWithInputAsync(grant, "create", "-f", "-", "--validate=false")).ShouldSucceed();
        var preferred = (await fx.KubectlAsync("get", "grants", "g", "-n", "default", "-o", "jsonpath={.apiVersion}")).ShouldSucceed();
        Assert.Equal("example.dolly.io/v1beta1", preferred.Stdout);
        var old = (await fx.KubectlAsync("get", "grants.v1alpha1.example.dolly.io", "g", "-n", "default", "-o", "jsonpath={.apiVersion}")).ShouldSucceed();
        Assert.Equal("example.dolly.io/v1alpha1", old.Stdout);
    }
}
