namespace Dolly.Api.Tests;

/// <summary>End-to-end with the real kubectl: patch, label, status, wait, watch, describe, delete, validation.</summary>
public sealed class KubectlMutationTests(ServerFixture fx) : IClassFixture<ServerFixture>
{
    private async Task<string> NamespaceAsync(string name)
    {
        (await fx.KubectlAsync("create", "ns", name)).ShouldSucceed();
        return name;
    }

    private static string Snapshot(string ns, string name, string source = "persistentVolumeClaimName: data", string extraMeta = "") =>
        $"apiVersion: snapshot.storage.k8s.io/v1\nkind: VolumeSnapshot\nmetadata: {{name: {name}, namespace: {ns}{extraMeta}}}\nspec: {{volumeSnapshotClassName: c, source: {{{source}}}}}\n";

    private static string Pvc(string ns, string name) =>
        $"apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {{name: {name}, namespace: {ns}}}\nspec: {{accessModes: [ReadWriteOnce], resources: {{requests: {{storage: 1Gi}}}}}}\n";

    [Fact]
    public async Task Patch_MergeJsonStrategic_AndStrategicOnCrdIs415()
    {
        string ns = await NamespaceAsync("patching");
        (await fx.KubectlWithInputAsync(Snapshot(ns, "s") + "---\n" + Pvc(ns, "p"), "apply", "-f", "-")).ShouldSucceed();

        (await fx.KubectlAsync("patch", "vs", "s", "-n", ns, "--type", "merge", "-p", """{"metadata":{"labels":{"m":"1"}}}""")).ShouldSucceed();
        (await fx.KubectlAsync("patch", "vs", "s", "-n", ns, "--type", "json", "-p", """[{"op":"add","path":"/metadata/labels/j","value":"2"}]""")).ShouldSucceed();
        (await fx.KubectlAsync("patch", "pvc", "p", "-n", ns, "-p", """{"metadata":{"finalizers":["example.com/a"]}}""")).ShouldSucceed();
        (await fx.KubectlAsync("patch", "pvc", "p", "-n", ns, "-p", """{"metadata":{"finalizers":["example.com/b"]}}""")).ShouldSucceed();
        var finalizers = (await fx.KubectlAsync("get", "pvc", "p", "-n", ns, "-o", "jsonpath={.metadata.finalizers}")).ShouldSucceed();
        Assert.Equal("""["example.com/a","example.com/b"]""", finalizers.Stdout);

        var labels = (await fx.KubectlAsync("get", "vs", "s", "-n", ns, "-o", "jsonpath={.metadata.labels}")).ShouldSucceed();
        Assert.Equal("""{"j":"2","m":"1"}""", labels.Stdout);

        var strategic = (await fx.KubectlAsync("patch", "vs", "s", "-n", ns, "-p", """{"metadata":{"labels":{"x":"y"}}}""")).ShouldFail();
        Assert.Contains("the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml", strategic.Stderr, StringComparison.Ordinal);

        var badJson = (await fx.KubectlAsync("patch", "vs", "s", "-n", ns, "--type", "json", "-p", """[{"op":"remove","path":"/spec/nope"}]""")).ShouldFail();
        // 422 as from kube-apiserver; the cause names what did not apply.
        Assert.Contains("The request is invalid: patch: doc is missing path: \"/spec/nope\"", badJson.Stderr, StringComparison.Ordinal);

        (await fx.KubectlAsync("patch", "pvc", "p", "-n", ns, "--type", "json", "-p", """[{"op":"remove","path":"/metadata/finalizers"}]""")).ShouldSucceed();
    }

    [Fact]
    public async Task LabelAnnotate_AndSelectors()
    {
        string ns = await NamespaceAsync("labels");
        (await fx.KubectlWithInputAsync(Snapshot(ns, "a") + "---\n" + Snapshot(ns, "b"), "apply", "-f", "-")).ShouldSucceed();
        (await fx.KubectlAsync("label", "vs", "a", "-n", ns, "tier=gold")).ShouldSucceed();
        (await fx.KubectlAsync("annotate", "vs", "b", "-n", ns, "note=hello")).ShouldSucceed();
        var gold = (await fx.KubectlAsync("get", "vs", "-n", ns, "-l", "tier=gold", "-o", "name")).ShouldSucceed();
        Assert.Equal("volumesnapshot.snapshot.storage.k8s.io/a\n", gold.Stdout);
        var notGold = (await fx.KubectlAsync("get", "vs", "-n", ns, "-l", "tier!=gold", "-o", "name")).ShouldSucceed();
        Assert.Equal("volumesnapshot.snapshot.storage.k8s.io/b\n", notGold.Stdout);
        var byName = (await fx.KubectlAsync("get", "vs", "-n", ns, "--field-selector", "metadata.name=b", "-o", "name")).ShouldSucceed();
        Assert.Equal("volumesnapshot.snapshot.storage.k8s.io/b\n", byName.Stdout);
        var badField = (await fx.KubectlAsync("get", "vs", "-n", ns, "--field-selector", "spec.source=x")).ShouldFail();
        Assert.Contains("field label not supported: spec.source", badField.Stderr, StringComparison.Ordinal);
        var all = (await fx.KubectlAsync("get", "vs", "-A", "-l", "tier=gold")).ShouldSucceed();
        Assert.Matches(@"NAMESPACE\s+NAME\s+READYTOUSE", all.Stdout);
    }

    [Fact]
    public async Task StatusSubresource_WaitForJsonpath()
    {
        string ns = await NamespaceAsync("status");
        (await fx.KubectlWithInputAsync(Snapshot(ns, "s"), "apply", "-f", "-")).ShouldSucceed();
        using var wait = fx.StartKubectl("wait", "--for=jsonpath={.status.readyToUse}=true", "vs/s", "-n", ns, "--timeout=60s");
        // A status written through the main resource is ignored.
        (await fx.KubectlAsync("patch", "vs", "s", "-n", ns, "--type", "merge", "-p", """{"status":{"readyToUse":true}}""")).ShouldSucceed();
        var ignored = (await fx.KubectlAsync("get", "vs", "s", "-n", ns, "-o", "jsonpath={.status}")).ShouldSucceed();
        Assert.Equal("", ignored.Stdout);
        (await fx.KubectlAsync("patch", "vs", "s", "-n", ns, "--subresource=status", "--type", "merge", "-p",
            """{"status":{"readyToUse":true,"restoreSize":"1Gi","boundVolumeSnapshotContentName":"snapcontent-x"}}""")).ShouldSucceed();
        await wait.WaitForOutputAsync(o => o.Contains("condition met", StringComparison.Ordinal));
        var row = (await fx.KubectlAsync("get", "vs", "s", "-n", ns)).ShouldSucceed();
        Assert.Matches(@"s\s+true\s+data\s+1Gi\s+c\s+snapcontent-x", row.Stdout);
        var generation = (await fx.KubectlAsync("get", "vs", "s", "-n", ns, "-o", "jsonpath={.metadata.generation}")).ShouldSucceed();
        Assert.Equal("1", generation.Stdout);
    }

    [Fact]
    public async Task GetWatch_PrintsRowsForChanges()
    {
        string ns = await NamespaceAsync("watching");
        (await fx.KubectlWithInputAsync(Snapshot(ns, "first"), "apply", "-f", "-")).ShouldSucceed();
        using var watch = fx.StartKubectl("get", "vs", "-n", ns, "-w");
        await watch.WaitForOutputAsync(o => o.Contains("first", StringComparison.Ordinal));
        (await fx.KubectlWithInputAsync(Snapshot(ns, "second"), "apply", "-f", "-")).ShouldSucceed();
        await watch.WaitForOutputAsync(o => o.Contains("second", StringComparison.Ordinal));
        (await fx.KubectlAsync("delete", "vs", "first", "-n", ns)).ShouldSucceed();
        var output = await watch.WaitForOutputAsync(o => o.Split('\n').Count(l => l.StartsWith("first", StringComparison.Ordinal)) >= 2);
        Assert.Single(output.Split('\n'), l => l.StartsWith("NAME", StringComparison.Ordinal));
    }

    [Fact]
    public async Task Describe_ShowsEventsOfTheObject()
    {
        string ns = await NamespaceAsync("describing");
        (await fx.KubectlWithInputAsync(Snapshot(ns, "s"), "apply", "-f", "-")).ShouldSucceed();
        string uid = (await fx.KubectlAsync("get", "vs", "s", "-n", ns, "-o", "jsonpath={.metadata.uid}")).ShouldSucceed().Stdout;
        string ev = $$"""
            {"apiVersion":"v1","kind":"Event","metadata":{"name":"s.1","namespace":"{{ns}}"},
             "involvedObject":{"kind":"VolumeSnapshot","namespace":"{{ns}}","name":"s","uid":"{{uid}}","apiVersion":"snapshot.storage.k8s.io/v1"},
             "reason":"CreatingSnapshot","message":"Waiting for a snapshot to be created by the CSI driver.",
             "source":{"component":"snapshot-controller"},"firstTimestamp":"2025-01-02T03:04:05Z","lastTimestamp":"2025-01-02T03:04:05Z","count":1,"type":"Normal"}
            """;
        (await fx.KubectlWithInputAsync(ev, "create", "-f", "-")).ShouldSucceed();
        var d = (await fx.KubectlAsync("describe", "vs", "s", "-n", ns)).ShouldSucceed();
        Assert.Contains("Persistent Volume Claim Name:  data", d.Stdout, StringComparison.Ordinal);
        Assert.Matches(@"Normal\s+CreatingSnapshot\s+\S+\s+snapshot-controller\s+Waiting for a snapshot", d.Stdout);
        var events = (await fx.KubectlAsync("get", "events", "-n", ns)).ShouldSucceed();
        Assert.Matches(@"Normal\s+CreatingSnapshot\s+volumesnapshot/s", events.Stdout);
    }

    [Fact]
    public async Task Delete_WaitsForFinalizersAndNamespaceCascades()
    {
        string ns = await NamespaceAsync("cascade");
        (await fx.KubectlWithInputAsync(Snapshot(ns, "held", extraMeta: ", finalizers: [example.com/hold]") + "---\n" + Pvc(ns, "p"), "apply", "-f", "-")).ShouldSucceed();
        (await fx.KubectlAsync("delete", "pvc", "p", "-n", ns)).ShouldSucceed();

        (await fx.KubectlAsync("delete", "vs", "held", "-n", ns, "--wait=false")).ShouldSucceed();
        var ts = (await fx.KubectlAsync("get", "vs", "held", "-n", ns, "-o", "jsonpath={.metadata.deletionTimestamp}")).ShouldSucceed();
        Assert.NotEmpty(ts.Stdout);
        var addFinalizer = (await fx.KubectlAsync("patch", "vs", "held", "-n", ns, "--type", "json", "-p",
            """[{"op":"add","path":"/metadata/finalizers/-","value":"example.com/more"}]""")).ShouldFail();
        Assert.Contains("no new finalizers can be added if the object is being deleted", addFinalizer.Stderr, StringComparison.Ordinal);

        (await fx.KubectlWithInputAsync(Snapshot(ns, "other"), "apply", "-f", "-")).ShouldSucceed();
        (await fx.KubectlAsync("delete", "ns", ns, "--wait=false")).ShouldSucceed();
        var phase = (await fx.KubectlAsync("get", "ns", ns, "-o", "jsonpath={.status.phase}")).ShouldSucceed();
        Assert.Equal("Terminating", phase.Stdout);
        var refused = (await fx.KubectlWithInputAsync(Pvc(ns, "late"), "create", "-f", "-")).ShouldFail();
        Assert.Contains("unable to create new content in namespace cascade because it is being terminated", refused.Stderr, StringComparison.Ordinal);
        await Poll.UntilAsync(async () => (await fx.KubectlAsync("get", "vs", "-n", ns, "-o", "name")).Stdout,
            o => o == "volumesnapshot.snapshot.storage.k8s.io/held\n", TimeSpan.FromSeconds(60));
        await Poll.UntilAsync(async () => (await fx.KubectlAsync("get", "ns", ns, "-o", "jsonpath={.status.conditions[?(@.type==\"NamespaceFinalizersRemaining\")].message}")).Stdout,
            o => o == "Some content in the namespace has finalizers remaining: example.com/hold in 1 resource instances", TimeSpan.FromSeconds(60));

        using var waitDelete = fx.StartKubectl("delete", "ns", ns, "--timeout=60s");
        (await fx.KubectlAsync("patch", "vs", "held", "-n", ns, "--type", "merge", "-p", """{"metadata":{"finalizers":null}}""")).ShouldSucceed();
        (await fx.KubectlAsync("wait", "--for=delete", "ns/" + ns, "--timeout=60s")).ShouldSucceed();
        var immortal = (await fx.KubectlAsync("delete", "ns", "default")).ShouldFail();
        Assert.Contains("this namespace may not be deleted", immortal.Stderr, StringComparison.Ordinal);
    }

    [Fact]
    public async Task SnapshotValidation_Returns422WithFieldPaths()
    {
        string ns = await NamespaceAsync("validation");
        var both = (await fx.KubectlWithInputAsync(Snapshot(ns, "both", "persistentVolumeClaimName: a, volumeSnapshotContentName: b"), "apply", "-f", "-")).ShouldFail();
        Assert.Contains("The VolumeSnapshot \"both\" is invalid: spec.source", both.Stderr, StringComparison.Ordinal);

        var emptyClass = "apiVersion: snapshot.storage.k8s.io/v1\nkind: VolumeSnapshot\nmetadata: {name: e, namespace: " + ns + "}\nspec: {volumeSnapshotClassName: '', source: {persistentVolumeClaimName: a}}\n";
        var e = (await fx.KubectlWithInputAsync(emptyClass, "apply", "-f", "-")).ShouldFail();
        Assert.Contains("spec.volumeSnapshotClassName: Invalid value: \"string\": volumeSnapshotClassName must not be the empty string when set", e.Stderr, StringComparison.Ordinal);

        (await fx.KubectlWithInputAsync(Snapshot(ns, "s"), "apply", "-f", "-")).ShouldSucceed();
        var immutable = (await fx.KubectlAsync("patch", "vs", "s", "-n", ns, "--type", "merge", "-p", """{"spec":{"source":{"persistentVolumeClaimName":"other"}}}""")).ShouldFail();
        Assert.Contains("spec.source.persistentVolumeClaimName: Invalid value: \"string\": persistentVolumeClaimName is immutable", immutable.Stderr, StringComparison.Ordinal);

        const string vsc = "apiVersion: snapshot.storage.k8s.io/v1\nkind: VolumeSnapshotContent\nmetadata: {name: c1}\nspec: {deletionPolicy: Retain, driver: d, source: {snapshotHandle: h}, volumeSnapshotRef: {name: s}}\n";
        var r = (await fx.KubectlWithInputAsync(vsc, "apply", "-f", "-")).ShouldFail();
        Assert.Contains("both spec.volumeSnapshotRef.name and spec.volumeSnapshotRef.namespace must be set", r.Stderr, StringComparison.Ordinal);

        var badName = (await fx.KubectlWithInputAsync(Snapshot(ns, "Bad_Name"), "apply", "-f", "-")).ShouldFail();
        Assert.Contains("metadata.name: Invalid value: \"Bad_Name\"", badName.Stderr, StringComparison.Ordinal);

        var pvc = "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: p, namespace: " + ns + "}\nspec: {resources: {requests: {storage: 1Gi}}}\n";
        var noModes = (await fx.KubectlWithInputAsync(pvc, "apply", "-f", "-")).ShouldFail();
        Assert.Contains("spec.accessModes: Required value", noModes.Stderr, StringComparison.Ordinal);
    }

    [Fact]
    public async Task ServerSideApply_OwnsFieldsConflictsAndForce()
    {
        string ns = await NamespaceAsync("ssa");
        string v1 = "apiVersion: snapshot.storage.k8s.io/v1\nkind: VolumeSnapshot\nmetadata: {name: s, namespace: " + ns + ", labels: {a: '1'}}\nspec: {source: {persistentVolumeClaimName: data}}\n";
        var created = (await fx.KubectlWithInputAsync(v1, "apply", "--server-side", "-f", "-")).ShouldSucceed();
        Assert.Contains("serverside-applied", created.Stdout, StringComparison.Ordinal);
        var managers = (await fx.KubectlAsync("get", "vs", "s", "-n", ns, "--show-managed-fields", "-o", "jsonpath={.metadata.managedFields[*].manager}/{.metadata.managedFields[*].operation}")).ShouldSucceed();
        Assert.Equal("kubectl/Apply", managers.Stdout);

        // Leaving a field out of the next apply removes it.
        string v2 = v1.Replace("a: '1'", "b: '2'", StringComparison.Ordinal);
        (await fx.KubectlWithInputAsync(v2, "apply", "--server-side", "-f", "-")).ShouldSucceed();
        var labels = (await fx.KubectlAsync("get", "vs", "s", "-n", ns, "-o", "jsonpath={.metadata.labels}")).ShouldSucceed();
        Assert.Equal("""{"b":"2"}""", labels.Stdout);

        // Another manager's change is a conflict unless forced.
        (await fx.KubectlAsync("label", "vs", "s", "-n", ns, "b=3", "--overwrite")).ShouldSucceed();
        var conflict = (await fx.KubectlWithInputAsync(v2, "apply", "--server-side", "-f", "-")).ShouldFail();
        Assert.Contains("Apply failed with 1 conflict: conflict with \"kubectl-label\"", conflict.Stderr, StringComparison.Ordinal);
        Assert.Contains(".metadata.labels.b", conflict.Stderr, StringComparison.Ordinal);
        (await fx.KubectlWithInputAsync(v2, "apply", "--server-side", "--force-conflicts", "-f", "-")).ShouldSucceed();
        labels = (await fx.KubectlAsync("get", "vs", "s", "-n", ns, "-o", "jsonpath={.metadata.labels}")).ShouldSucceed();
        Assert.Equal("""{"b":"2"}""", labels.Stdout);
    }

    [Fact]
    public async Task DescribePvcAndNamespace_Work()
    {
        string ns = await NamespaceAsync("describe-builtins");
        (await fx.KubectlWithInputAsync(Pvc(ns, "p"), "apply", "-f", "-")).ShouldSucceed();
        var pvc = (await fx.KubectlAsync("describe", "pvc", "p", "-n", ns)).ShouldSucceed();
        Assert.Matches(@"Status:\s+Pending", pvc.Stdout);
        Assert.Matches(@"Used By:\s+<none>", pvc.Stdout);
        var nsd = (await fx.KubectlAsync("describe", "ns", ns)).ShouldSucceed();
        Assert.Matches(@"Status:\s+Active", nsd.Stdout);
    }

    [Fact]
    public async Task DeleteCascadeForeground_OwnerWaitsForItsDependents()
    {
        string ns = await NamespaceAsync("foreground");
        (await fx.KubectlWithInputAsync(Pvc(ns, "owner"), "apply", "-f", "-")).ShouldSucceed();
        string uid = (await fx.KubectlAsync("get", "pvc", "owner", "-n", ns, "-o", "jsonpath={.metadata.uid}")).ShouldSucceed().Stdout;
        string owned = ", finalizers: [example.com/hold], ownerReferences: [{apiVersion: v1, kind: PersistentVolumeClaim, name: owner, uid: " + uid + "}]";
        (await fx.KubectlWithInputAsync(Snapshot(ns, "dep", extraMeta: owned), "apply", "-f", "-")).ShouldSucceed();

        (await fx.KubectlAsync("delete", "pvc", "owner", "-n", ns, "--cascade=foreground", "--wait=false")).ShouldSucceed();
        var finalizers = (await fx.KubectlAsync("get", "pvc", "owner", "-n", ns, "-o", "jsonpath={.metadata.finalizers}")).ShouldSucceed();
        Assert.Contains("foregroundDeletion", finalizers.Stdout, StringComparison.Ordinal);
        await Poll.UntilAsync(async () => (await fx.KubectlAsync("get", "vs", "dep", "-n", ns, "-o", "jsonpath={.metadata.deletionTimestamp}")).Stdout,
            ts => ts.Length > 0, TimeSpan.FromSeconds(60));
        (await fx.KubectlAsync("get", "pvc", "owner", "-n", ns)).ShouldSucceed();

        (await fx.KubectlAsync("patch", "vs", "dep", "-n", ns, "--type", "merge", "-p", """{"metadata":{"finalizers":null}}""")).ShouldSucceed();
        (await fx.KubectlAsync("wait", "--for=delete", "pvc/owner", "-n", ns, "--timeout=60s")).ShouldSucceed();
    }
}
