namespace Dolly.IntegrationTests;

[CollectionDefinition("dolly-up")]
public sealed class DollyUpCollection : ICollectionFixture<DollyUp>;

/// <summary>
/// Every acceptance scenario, applied with kubectl against a real <c>dolly up</c>, files written and read
/// through <c>dolly mount</c>. Scenarios that build on 01 or 03 run those first (once per run).
/// </summary>
[Collection("dolly-up")]
public sealed class AcceptanceTests(DollyUp up)
{
    private const string Hello = "Hello World!";

    private void RequireStack()
    {
        if (up.Unavailable is { } why)
        {
            Assert.Skip(why);
        }
    }

    internal static Task ClassesAsync(DollyUp up) => up.OnceAsync("00", async () =>
    {
        foreach (string doc in DollyUp.Documents("00-classes.yaml"))
        {
            (await up.Apply(doc)).ShouldSucceed();
        }
    });

    /// <summary>Scenario 01 up to the restore: data written, snapshot ready, restore Bound.</summary>
    internal static Task SnapshotRestoreAsync(DollyUp up) => up.OnceAsync("01", async () =>
    {
        await ClassesAsync(up);
        var docs = DollyUp.Documents("01-snapshot-restore.yaml");
        (await up.Apply(docs[0])).ShouldSucceed();
        (await up.Apply(docs[1])).ShouldSucceed();
        await up.WaitFor("pvc/data", "demo", ".status.phase", "Bound");
        await up.WithMounted("demo", "data", dir => File.WriteAllTextAsync(Path.Combine(dir, "hello.txt"), Hello));
        (await up.Apply(docs[2])).ShouldSucceed();
        await up.WaitFor("volumesnapshot/data-snap", "demo", ".status.readyToUse", "true");
        (await up.Apply(docs[3])).ShouldSucceed();
        await up.WaitFor("pvc/restored", "demo", ".status.phase", "Bound");
    });

    internal static Task GoldenAsync(DollyUp up) => up.OnceAsync("03", async () =>
    {
        await ClassesAsync(up);
        foreach (string doc in DollyUp.Documents("03-golden-snapshot.yaml"))
        {
            (await up.Apply(doc.Replace("REPLACE-WITH-GOLDEN-SNAPSHOT-HANDLE", DollyUp.GoldenHandle, StringComparison.Ordinal))).ShouldSucceed();
        }

        foreach (string ns in new[] { "sandbox01", "sandbox02", "sandbox03" })
        {
            await up.WaitFor("volumesnapshot/orders-db-golden", ns, ".status.readyToUse", "true");
            await up.WaitFor("pvc/orders-db", ns, ".status.phase", "Bound");
        }
    });

    [Fact]
    public async Task S00_Classes_StorageClassAndDefaultSnapshotClassExist()
    {
        RequireStack();
        await ClassesAsync(up);
        Assert.Equal("csi.dolly.io", await up.Field("storageclass/dolly", null, ".provisioner"));
        Assert.Equal("csi.dolly.io", await up.Field("volumesnapshotclass/dolly-snapshots", null, ".driver"));
        Assert.Equal("true", await up.Field("volumesnapshotclass/dolly-snapshots", null, ".metadata.annotations.snapshot\\.storage\\.kubernetes\\.io/is-default-class"));
    }

    [Fact]
    public async Task S01_SnapshotRestore_RestoredHoldsTheBytes_AndIsIndependent()
    {
        RequireStack();
        await SnapshotRestoreAsync(up);

        var vs = DollyUp.Json((await up.Kubectl("get", "volumesnapshot", "data-snap", "-n", "demo", "-o", "json")).ShouldSucceed().Stdout);
        string uid = vs.GetProperty("metadata").GetProperty("uid").GetString()!;
        var status = vs.GetProperty("status");
        Assert.True(status.GetProperty("readyToUse").GetBoolean());
        Assert.Equal("1Gi", status.GetProperty("restoreSize").GetString());
        Assert.Equal("snapcontent-" + uid, status.GetProperty("boundVolumeSnapshotContentName").GetString());
        Assert.False(status.TryGetProperty("error", out _));

        // The content points back at the snapshot, and kubectl's table shows the columns users look at.
        Assert.Equal(uid, await up.Field("volumesnapshotcontent/snapcontent-" + uid, null, ".spec.volumeSnapshotRef.uid"));
        string table = (await up.Kubectl("get", "volumesnapshot", "data-snap", "-n", "demo")).ShouldSucceed().Stdout;
        Assert.Matches(@"data-snap\s+true\s+data\s+1Gi\s+dolly-snapshots\s+snapcontent-" + uid, table);

        Assert.Equal("Bound", await up.Field("pvc/restored", "demo", ".status.phase"));
        await up.WithMounted("demo", "restored", async dir =>
        {
            Assert.Equal(Hello, await File.ReadAllTextAsync(Path.Combine(dir, "hello.txt")));
            await File.WriteAllTextAsync(Path.Combine(dir, "hello.txt"), "changed in restored");
        });

        // The source and the snapshot did not change: read the source, and restore the snapshot again.
        await up.WithMounted("demo", "data", async dir => Assert.Equal(Hello, await File.ReadAllTextAsync(Path.Combine(dir, "hello.txt"))), readOnly: true);
        (await up.Apply(DollyUp.Documents("01-snapshot-restore.yaml")[3].Replace("name: restored", "name: restored-again", StringComparison.Ordinal))).ShouldSucceed();
        await up.WaitFor("pvc/restored-again", "demo", ".status.phase", "Bound");
        await up.WithMounted("demo", "restored-again", async dir => Assert.Equal(Hello, await File.ReadAllTextAsync(Path.Combine(dir, "hello.txt"))));
        (await up.Kubectl("delete", "pvc", "restored-again", "-n", "demo", "--wait=true", "--timeout=60s")).ShouldSucceed();
    }

    [Fact]
    public async Task S02_Clone_HasTheSourceFiles_AndIsIndependent()
    {
        RequireStack();
        await SnapshotRestoreAsync(up);
        (await up.Apply(DollyUp.Documents("02-clone.yaml")[0])).ShouldSucceed();
        await up.WaitFor("pvc/clone", "demo", ".status.phase", "Bound");
        string handle = await up.Field("pv/" + await up.Field("pvc/clone", "demo", ".spec.volumeName"), null, ".spec.csi.volumeHandle");
        Assert.NotEqual(await up.Field("pv/" + await up.Field("pvc/data", "demo", ".spec.volumeName"), null, ".spec.csi.volumeHandle"), handle);

        await up.WithMounted("demo", "clone", async dir =>
        {
            Assert.Equal(Hello, await File.ReadAllTextAsync(Path.Combine(dir, "hello.txt")));
            await File.WriteAllTextAsync(Path.Combine(dir, "only-in-clone.txt"), "clone");
        });
        await up.WithMounted("demo", "data", dir =>
        {
            Assert.False(File.Exists(Path.Combine(dir, "only-in-clone.txt")));
            return Task.CompletedTask;
        }, readOnly: true);
    }

    [Fact]
    public async Task S03_GoldenSnapshot_EachSandboxBindsItsOwnContent_AndRetainKeepsTheGolden()
    {
        RequireStack();
        await GoldenAsync(up);
        foreach (string ns in new[] { "sandbox01", "sandbox02", "sandbox03" })
        {
            Assert.Equal("orders-db-golden-" + ns, await up.Field("volumesnapshot/orders-db-golden", ns, ".status.boundVolumeSnapshotContentName"));
            string vsUid = await up.Field("volumesnapshot/orders-db-golden", ns, ".metadata.uid");
            Assert.Equal(vsUid, await up.Field("volumesnapshotcontent/orders-db-golden-" + ns, null, ".spec.volumeSnapshotRef.uid"));
            Assert.Equal(DollyUp.GoldenHandle, await up.Field("volumesnapshotcontent/orders-db-golden-" + ns, null, ".status.snapshotHandle"));
            Assert.Equal("2Gi", await up.Field("pvc/orders-db", ns, ".status.capacity.storage"));
            await up.WithMounted(ns, "orders-db", async dir => Assert.Equal(DollyUp.GoldenText, await File.ReadAllTextAsync(Path.Combine(dir, "orders.csv"))));
        }

        // Deleting one sandbox's objects (claim and snapshot) leaves the content and the golden snapshot.
        (await up.Kubectl("delete", "pvc", "orders-db", "-n", "sandbox03", "--wait=true", "--timeout=60s")).ShouldSucceed();
        (await up.Kubectl("delete", "volumesnapshot", "orders-db-golden", "-n", "sandbox03", "--wait=true", "--timeout=60s")).ShouldSucceed();
        Assert.Equal(DollyUp.GoldenHandle, await up.Field("volumesnapshotcontent/orders-db-golden-sandbox03", null, ".spec.source.snapshotHandle"));

        // The golden snapshot is still on the driver: a fresh sandbox restores from it.
        string manifest = string.Join("\n---\n", DollyUp.Documents("03-golden-snapshot.yaml").Take(4))
            .Replace("REPLACE-WITH-GOLDEN-SNAPSHOT-HANDLE", DollyUp.GoldenHandle, StringComparison.Ordinal)
            .Replace("sandbox01", "sandbox04", StringComparison.Ordinal);
        (await up.Apply(manifest)).ShouldSucceed();
        await up.WaitFor("pvc/orders-db", "sandbox04", ".status.phase", "Bound");
        await up.WithMounted("sandbox04", "orders-db", async dir => Assert.Equal(DollyUp.GoldenText, await File.ReadAllTextAsync(Path.Combine(dir, "orders.csv"))));
    }

    [Fact]
    public async Task S04_RestoreTooSmall_StaysPending_WithAnEventSaying()
    {
        RequireStack();
        await SnapshotRestoreAsync(up);
        int volumesBefore = Count((await up.Kubectl("get", "pv", "-o", "json")).ShouldSucceed().Stdout);
        (await up.Apply(DollyUp.Documents("04-restore-too-small.yaml")[0])).ShouldSucceed();

        const string Why = "requested volume size 536870912 is less than the size 1073741824 for the source snapshot data-snap";
        Assert.True(
            await DollyUp.Eventually(async () => (await up.Kubectl("describe", "pvc", "too-small", "-n", "demo")).Stdout.Contains(Why, StringComparison.Ordinal)),
            "describe never said why:\n" + (await up.Kubectl("describe", "pvc", "too-small", "-n", "demo")).Stdout);
        Assert.Equal("Pending", await up.Field("pvc/too-small", "demo", ".status.phase"));
        string events = (await up.Kubectl("get", "events", "-n", "demo", "--field-selector", "involvedObject.name=too-small,reason=ProvisioningFailed", "-o", "jsonpath={.items[*].message}")).ShouldSucceed().Stdout;
        Assert.Contains(Why, events, StringComparison.Ordinal);
        Assert.Equal(volumesBefore, Count((await up.Kubectl("get", "pv", "-o", "json")).ShouldSucceed().Stdout));
        Assert.Equal("true", await up.Field("volumesnapshot/data-snap", "demo", ".status.readyToUse"));
        (await up.Kubectl("delete", "pvc", "too-small", "-n", "demo", "--wait=true", "--timeout=60s")).ShouldSucceed();
    }

    [Fact]
    public async Task S05_CrossNamespace_PendingWithoutAGrant_BoundWithIt()
    {
        RequireStack();
        await SnapshotRestoreAsync(up);
        var docs = DollyUp.Documents("05-cross-namespace.yaml");
        (await up.Apply(docs[0])).ShouldSucceed();
        (await up.Apply(docs[1])).ShouldSucceed();
        Assert.True(
            await DollyUp.Eventually(async () => (await up.Kubectl("get", "events", "-n", "team-a", "--field-selector", "involvedObject.name=from-demo,reason=ProvisioningFailed", "-o", "jsonpath={.items[*].message}")).Stdout.Contains("ReferenceGrant", StringComparison.Ordinal)),
            "no event named the missing ReferenceGrant");
        Assert.Equal("Pending", await up.Field("pvc/from-demo", "team-a", ".status.phase"));
        Assert.Equal("", await up.Field("pvc/from-demo", "team-a", ".spec.volumeName"));

        (await up.Apply(docs[2])).ShouldSucceed();
        await up.WaitFor("pvc/from-demo", "team-a", ".status.phase", "Bound");
        await up.WithMounted("team-a", "from-demo", async dir => Assert.Equal(Hello, await File.ReadAllTextAsync(Path.Combine(dir, "hello.txt"))));
    }

    [Fact]
    public async Task S06_ContentTheft_NeverReady_ErrorSaysWhy_ContentStaysWithItsOwner()
    {
        RequireStack();
        await GoldenAsync(up);
        string ownerUid = await up.Field("volumesnapshot/orders-db-golden", "sandbox01", ".metadata.uid");
        foreach (string doc in DollyUp.Documents("06-content-theft.yaml"))
        {
            (await up.Apply(doc)).ShouldSucceed();
        }

        Assert.True(
            await DollyUp.Eventually(async () => (await up.Field("volumesnapshot/orders-db-golden", "intruder", ".status.error.message")).Length > 0),
            "the intruder's snapshot never got an error");
        string error = await up.Field("volumesnapshot/orders-db-golden", "intruder", ".status.error.message");
        Assert.Contains("belongs to VolumeSnapshot sandbox01/orders-db-golden", error, StringComparison.Ordinal);
        Assert.NotEqual("true", await up.Field("volumesnapshot/orders-db-golden", "intruder", ".status.readyToUse"));
        Assert.Equal("", await up.Field("volumesnapshot/orders-db-golden", "intruder", ".status.boundVolumeSnapshotContentName"));
        Assert.Equal("sandbox01", await up.Field("volumesnapshotcontent/orders-db-golden-sandbox01", null, ".spec.volumeSnapshotRef.namespace"));
        Assert.Equal(ownerUid, await up.Field("volumesnapshotcontent/orders-db-golden-sandbox01", null, ".spec.volumeSnapshotRef.uid"));
        Assert.Equal("true", await up.Field("volumesnapshot/orders-db-golden", "sandbox01", ".status.readyToUse"));

        // A restore from the intruder's snapshot gets nothing either.
        (await up.Apply("""
            apiVersion: v1
            kind: PersistentVolumeClaim
            metadata: {name: loot, namespace: intruder}
            spec:
              storageClassName: dolly
              accessModes: [ReadWriteOnce]
              dataSource: {apiGroup: snapshot.storage.k8s.io, kind: VolumeSnapshot, name: orders-db-golden}
              resources: {requests: {storage: 2Gi}}
            """)).ShouldSucceed();
        Assert.True(await DollyUp.Eventually(async () => (await up.Kubectl("describe", "pvc", "loot", "-n", "intruder")).Stdout.Contains("is not bound to a VolumeSnapshotContent", StringComparison.Ordinal)));
        Assert.Equal("", await up.Field("pvc/loot", "intruder", ".spec.volumeName"));
    }

    [Fact]
    public async Task S07_StatefulSetClaims_MadeByTheController_AllBindWithTheData()
    {
        RequireStack();
        await SnapshotRestoreAsync(up);
        // 07-statefulset-replicas.yaml as it is: `dolly up`'s StatefulSet claim controller makes the claims of its
        // volumeClaimTemplate, <template>-<set>-<ordinal>, each restoring data-snap.
        var documents = DollyUp.Documents("07-statefulset-replicas.yaml");
        Assert.Contains("name: data-snap", documents[1], StringComparison.Ordinal);
        (await up.Apply(string.Join("\n---\n", documents))).ShouldSucceed();
        Assert.Equal("StatefulSet 3 consumer", await up.Field("statefulset/consumer", "demo", ".kind} {.spec.replicas} {.spec.serviceName"));
        Assert.Equal("None", await up.Field("service/consumer", "demo", ".spec.clusterIP"));
        for (int i = 0; i < 3; i++)
        {
            await up.WaitFor($"pvc/data-consumer-{i}", "demo", ".status.phase", "Bound");
            Assert.Equal("consumer data-snap", await up.Field($"pvc/data-consumer-{i}", "demo", ".metadata.labels.app} {.spec.dataSource.name"));
            await up.WithMounted("demo", $"data-consumer-{i}", async dir => Assert.Equal(Hello, await File.ReadAllTextAsync(Path.Combine(dir, "hello.txt"))));
        }

        // Stored, not run: the set still exists, with no ready replica and no pods.
        Assert.Matches(@"consumer\s+0/3\s", (await up.Kubectl("get", "statefulset", "consumer", "-n", "demo")).ShouldSucceed().Stdout);
        Assert.Contains("No resources found", (await up.Kubectl("get", "pods", "-n", "demo")).ShouldSucceed().Stderr, StringComparison.Ordinal);
    }

    private static int Count(string listJson) => DollyUp.Json(listJson).GetProperty("items").GetArrayLength();
}
