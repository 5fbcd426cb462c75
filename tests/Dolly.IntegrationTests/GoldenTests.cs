namespace Dolly.IntegrationTests;

/// <summary>
/// GoldenSnapshots through kubectl and <c>dolly mount</c> on a real <c>dolly up</c>: a claim published to the five
/// namespaces that opt in and never to the two that do not, the data read back in each, a second revision that the
/// OnNextAttach claims take when their volume is not mounted (and never while it is), the old revision retired only
/// after its last holder let go; and acceptance scenario 10, a StatefulSet whose replicas follow the golden data.
/// </summary>
[Collection("dolly-up")]
public sealed class GoldenTests(DollyUp up)
{
    private const string Golden = "e2e-db";
    private const string OptIn = "dolly.io/golden.e2e-db";

    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    private static readonly string[] OptedIn = ["gold-1", "gold-2", "gold-3", "gold-4", "gold-5"];
    private static readonly string[] Left = ["gold-6", "gold-7"];

    private void RequireStack()
    {
        if (up.Unavailable is { } why)
        {
            Assert.Skip(why);
        }
    }

    [Fact]
    public async Task FromClaim_FiveOptedInTwoNot_SecondRevision_OnNextAttachRollover_RetiredAfterTheLastHolder()
    {
        RequireStack();
        await AcceptanceTests.ClassesAsync(up);
        (await up.Apply("""
            apiVersion: v1
            kind: Namespace
            metadata: {name: gold-src}
            ---
            apiVersion: v1
            kind: PersistentVolumeClaim
            metadata: {name: db, namespace: gold-src}
            spec:
              storageClassName: dolly
              accessModes: [ReadWriteOnce]
              resources: {requests: {storage: 1Gi}}
            """)).ShouldSucceed();
        await up.WaitFor("pvc/db", "gold-src", ".status.phase", "Bound");
        await up.WithMounted("gold-src", "db", dir => File.WriteAllTextAsync(Path.Combine(dir, "data.txt"), "revision one\n", Ct));
        foreach (string ns in OptedIn.Concat(Left))
        {
            string labels = OptedIn.Contains(ns) ? $", labels: {{{OptIn}: enabled}}" : "";
            (await up.Apply($"apiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}{labels}}}\n")).ShouldSucceed();
        }

        (await up.Apply($$"""
            apiVersion: dolly.io/v1alpha1
            kind: GoldenSnapshot
            metadata: {name: {{Golden}}}
            spec:
              source:
                persistentVolumeClaim: {namespace: gold-src, name: db}
              namespaceSelector:
                matchLabels: {{{OptIn}}: enabled}
              snapshotName: e2e-db
              claim: {name: app, storageClassName: dolly, refreshPolicy: OnNextAttach}
              revisionHistoryLimit: 1
            """)).ShouldSucceed();

        // Revision 1 in the five, with its data; nothing at all in the two.
        await up.WaitFor("goldensnapshot/" + Golden, null, ".status.ready", "5/5", 120);
        Assert.Matches(@"NAME\s+SOURCE\s+REVISION\s+NAMESPACES\s+READY\s+AGE", (await up.Kubectl("get", "golden")).ShouldSucceed().Stdout);
        Assert.Matches(@"e2e-db\s+PersistentVolumeClaim gold-src/db\s+1\s+5\s+5/5\s", (await up.Kubectl("get", "golden", Golden)).ShouldSucceed().Stdout);
        foreach (string ns in OptedIn)
        {
            await up.WaitFor("pvc/app", ns, ".status.phase", "Bound");
            Assert.Equal("1 true", await up.Field("volumesnapshot/e2e-db-r1", ns, ".metadata.labels.dolly\\.io/golden-revision} {.status.readyToUse"));
            Assert.Equal("1", await up.Field("pvc/app", ns, ".metadata.annotations.dolly\\.io/golden-revision"));
            await up.WithMounted(ns, "app", async dir => Assert.Equal("revision one\n", await File.ReadAllTextAsync(Path.Combine(dir, "data.txt"), Ct)), readOnly: true);
        }

        await AssertNothingInAsync(Left);

        // gold-1's claim stays mounted (its pod runs) while revision 2 is published.
        string mounted = Path.Combine(up.Root, "mnt", "gold-1-app-" + Guid.NewGuid().ToString("N")[..6]);
        (await up.Dolly("mount", "gold-1/app", mounted)).ShouldSucceed();
        bool unmounted = false;
        try
        {
            await File.WriteAllTextAsync(Path.Combine(mounted, "mine.txt"), "written by the consumer\n", Ct);
            await up.WithMounted("gold-src", "db", dir => File.WriteAllTextAsync(Path.Combine(dir, "data.txt"), "revision two\n", Ct));
            (await up.Kubectl("annotate", "golden", Golden, "dolly.io/publish-now=2")).ShouldSucceed();
            await up.WaitFor("goldensnapshot/" + Golden, null, ".status.currentRevision", "2", 120);
            await up.WaitFor("goldensnapshot/" + Golden, null, ".status.ready", "5/5", 120);

            // The four not mounted take revision 2 at once; gold-1 waits, its volume untouched, and holds revision 1.
            foreach (string ns in OptedIn.Skip(1))
            {
                await up.WaitFor("pvc/app", ns, ".metadata.annotations.dolly\\.io/golden-revision", "2");
                await up.WithMounted(ns, "app", async dir => Assert.Equal("revision two\n", await File.ReadAllTextAsync(Path.Combine(dir, "data.txt"), Ct)), readOnly: true);
            }

            Assert.True(
                await DollyUp.Eventually(async () => (await up.Field("goldensnapshot/" + Golden, null, ".status.namespaces[?(@.name==\"gold-1\")].refreshPending[0]")).Contains("takes revision 2 at its next attach (held by NBD client", StringComparison.Ordinal), 60),
                await up.Field("goldensnapshot/" + Golden, null, ".status"));
            Assert.Equal("True Refreshing", await up.Field("goldensnapshot/" + Golden, null, ".status.conditions[?(@.type==\"Progressing\")].status} {.status.conditions[?(@.type==\"Progressing\")].reason"));
            Assert.Equal("not yet refreshed: claim gold-1/app", await up.Field("goldensnapshot/" + Golden, null, ".status.revisions[?(@.revision==1)].heldBy[*]"));
            Assert.Equal("1", await up.Field("pvc/app", "gold-1", ".metadata.annotations.dolly\\.io/golden-revision"));
            Assert.Equal("revision one\n", await File.ReadAllTextAsync(Path.Combine(mounted, "data.txt"), Ct));
            Assert.Equal("true", await up.Field("volumesnapshot/e2e-db-r1", "gold-2", ".status.readyToUse"));

            (await up.Dolly("unmount", mounted)).ShouldSucceed();
            unmounted = true;
        }
        finally
        {
            if (!unmounted)
            {
                await up.Dolly("unmount", mounted);
            }
        }

        // Let go: gold-1 takes revision 2 (what its consumer wrote is discarded), then revision 1 retires everywhere.
        await up.WaitFor("pvc/app", "gold-1", ".metadata.annotations.dolly\\.io/golden-revision", "2");
        await up.WithMounted("gold-1", "app", async dir =>
        {
            Assert.Equal("revision two\n", await File.ReadAllTextAsync(Path.Combine(dir, "data.txt"), Ct));
            Assert.False(File.Exists(Path.Combine(dir, "mine.txt")));
        }, readOnly: true);
        Assert.Contains("Refreshed", (await up.Kubectl("get", "events", "-n", "gold-1", "--field-selector", "involvedObject.name=app", "-o", "jsonpath={.items[*].reason}")).ShouldSucceed().Stdout, StringComparison.Ordinal);
        await FieldBecomesAsync("goldensnapshot/" + Golden, ".status.revisions[*].revision", "2");
        await up.WaitFor("goldensnapshot/" + Golden, null, ".status.conditions[?(@.type==\"Progressing\")].reason", "Complete");
        Assert.True(
            await DollyUp.Eventually(async () => (await up.Kubectl("get", "volumesnapshot", "-A", "-l", "dolly.io/golden=e2e-db,dolly.io/golden-revision=1", "-o", "name")).ShouldSucceed().Stdout.Length == 0, 60),
            "revision 1's VolumeSnapshots were never retired");
        foreach (string ns in OptedIn)
        {
            Assert.Equal("e2e-db-r2", (await up.Kubectl("get", "volumesnapshot", "-n", ns, "-l", "dolly.io/golden=e2e-db,dolly.io/golden-revision=2", "-o", "jsonpath={.items[?(@.metadata.name==\"e2e-db-r2\")].metadata.name}")).ShouldSucceed().Stdout);
        }

        await AssertNothingInAsync(Left);
    }

    [Fact]
    public async Task S10_StatefulSetReplicas_FollowTheGoldenData_AtTheirNextAttach()
    {
        RequireStack();
        await AcceptanceTests.ClassesAsync(up);
        var docs = DollyUp.Documents("10-golden-statefulset.yaml");
        // As in the README's worked example: the source claim first, its data, then the whole file.
        (await up.Apply(docs[0] + "\n---\n" + docs[1])).ShouldSucceed();
        await up.WaitFor("pvc/catalog", "shop-prod", ".status.phase", "Bound");
        await up.WithMounted("shop-prod", "catalog", dir => File.WriteAllTextAsync(Path.Combine(dir, "catalog.txt"), "catalog v1\n", Ct));
        (await up.Apply(string.Join("\n---\n", docs))).ShouldSucceed();
        await up.WaitFor("goldensnapshot/catalog", null, ".status.ready", "1/1", 120);
        var uids = new List<string>();
        for (int i = 0; i < 3; i++)
        {
            await up.WaitFor($"pvc/data-consumer-{i}", "shop", ".status.phase", "Bound");
            Assert.Equal("OnNextAttach 1", await up.Field($"pvc/data-consumer-{i}", "shop", ".metadata.annotations.dolly\\.io/refresh-policy} {.metadata.annotations.dolly\\.io/golden-revision"));
            uids.Add(await up.Field($"pvc/data-consumer-{i}", "shop", ".metadata.uid"));
            await up.WithMounted("shop", $"data-consumer-{i}", async dir => Assert.Equal("catalog v1\n", await File.ReadAllTextAsync(Path.Combine(dir, "catalog.txt"), Ct)), readOnly: true);
        }

        // Replica 0's pod runs (its claim is mounted) while a new catalog is published; 1 and 2 are between pods.
        string mounted = Path.Combine(up.Root, "mnt", "shop-consumer-0-" + Guid.NewGuid().ToString("N")[..6]);
        (await up.Dolly("mount", "shop/data-consumer-0", mounted)).ShouldSucceed();
        bool unmounted = false;
        try
        {
            await up.WithMounted("shop-prod", "catalog", dir => File.WriteAllTextAsync(Path.Combine(dir, "catalog.txt"), "catalog v2\n", Ct));
            (await up.Kubectl("annotate", "golden", "catalog", "dolly.io/publish-now=2")).ShouldSucceed();
            await up.WaitFor("goldensnapshot/catalog", null, ".status.currentRevision", "2", 120);
            await up.WaitFor("pvc/data-consumer-1", "shop", ".metadata.annotations.dolly\\.io/golden-revision", "2");
            await up.WaitFor("pvc/data-consumer-2", "shop", ".metadata.annotations.dolly\\.io/golden-revision", "2");
            Assert.True(
                await DollyUp.Eventually(async () => (await up.Field("goldensnapshot/catalog", null, ".status.namespaces[0].refreshPending[0]")).StartsWith("data-consumer-0 (revision 1): takes revision 2 at its next attach", StringComparison.Ordinal), 60),
                await up.Field("goldensnapshot/catalog", null, ".status"));
            Assert.Equal("catalog v1\n", await File.ReadAllTextAsync(Path.Combine(mounted, "catalog.txt"), Ct));
            (await up.Dolly("unmount", mounted)).ShouldSucceed();
            unmounted = true;
        }
        finally
        {
            if (!unmounted)
            {
                await up.Dolly("unmount", mounted);
            }
        }

        // The pod restarted: replica 0 has the new catalog too. Same claims, same StatefulSet.
        await up.WaitFor("pvc/data-consumer-0", "shop", ".metadata.annotations.dolly\\.io/golden-revision", "2");
        for (int i = 0; i < 3; i++)
        {
            await up.WithMounted("shop", $"data-consumer-{i}", async dir => Assert.Equal("catalog v2\n", await File.ReadAllTextAsync(Path.Combine(dir, "catalog.txt"), Ct)), readOnly: true);
            Assert.Equal(uids[i], await up.Field($"pvc/data-consumer-{i}", "shop", ".metadata.uid"));
        }

        Assert.Equal("1", await up.Field("statefulset/consumer", "shop", ".metadata.generation"));
        Assert.Equal(3, (await up.Kubectl("get", "pvc", "-n", "shop", "-o", "name")).ShouldSucceed().Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries).Length);
        await FieldBecomesAsync("goldensnapshot/catalog", ".status.revisions[*].revision", "2");
    }

    /// <summary>Waits for a cluster-scoped object's field (which may list several values, unlike kubectl wait's) to read <paramref name="value"/>.</summary>
    private async Task FieldBecomesAsync(string kindAndName, string jsonPath, string value)
    {
        Assert.True(await DollyUp.Eventually(async () => await up.Field(kindAndName, null, jsonPath) == value, 120), $"{kindAndName} never got {jsonPath}={value}: {await up.Field(kindAndName, null, ".status")}");
    }

    /// <summary>No VolumeSnapshot, claim or content of the golden snapshot names any of <paramref name="namespaces"/>.</summary>
    private async Task AssertNothingInAsync(IEnumerable<string> namespaces)
    {
        foreach (string ns in namespaces)
        {
            Assert.Equal("", (await up.Kubectl("get", "volumesnapshot,pvc", "-n", ns, "-o", "name")).ShouldSucceed().Stdout.Trim());
        }

        string refs = (await up.Kubectl("get", "volumesnapshotcontent", "-o", "jsonpath={range .items[*]}{.spec.volumeSnapshotRef.namespace}{\"\\n\"}{end}")).ShouldSucceed().Stdout;
        Assert.DoesNotContain(refs.Split('\n'), line => namespaces.Contains(line));
    }
}
