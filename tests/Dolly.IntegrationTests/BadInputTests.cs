namespace Dolly.IntegrationTests;

/// <summary>
/// The upstream failure modes, through kubectl against a real <c>dolly up</c>: each ends in a clear status
/// error or event, creates nothing, and leaves the data of scenario 01 intact. (A restore smaller than the
/// snapshot and a content that names another namespace are scenarios 04 and 06.)
/// </summary>
[Collection("dolly-up")]
public sealed class BadInputTests(DollyUp up)
{
    private void RequireStack()
    {
        if (up.Unavailable is { } why)
        {
            Assert.Skip(why);
        }
    }

    private async Task NamespaceAsync(string ns) =>
        (await up.Apply($"apiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}}}\n")).ShouldSucceed();

    private async Task<string> EventsAsync(string ns, string name, string reason) =>
        (await up.Kubectl("get", "events", "-n", ns, "--field-selector", $"involvedObject.name={name},reason={reason}", "-o", "jsonpath={.items[*].message}")).ShouldSucceed().Stdout;

    private async Task ExpectSnapshotError(string ns, string name, string expected)
    {
        Assert.True(
            await DollyUp.Eventually(async () => (await up.Field("volumesnapshot/" + name, ns, ".status.error.message")).Contains(expected, StringComparison.Ordinal)),
            $"volumesnapshot {ns}/{name} never got an error saying '{expected}'; status: " + await up.Field("volumesnapshot/" + name, ns, ".status"));
        Assert.NotEqual("true", await up.Field("volumesnapshot/" + name, ns, ".status.readyToUse"));
        Assert.Equal("", await up.Field("volumesnapshot/" + name, ns, ".status.boundVolumeSnapshotContentName"));
    }

    private async Task ExpectProvisioningFailed(string ns, string claim, string expected)
    {
        Assert.True(
            await DollyUp.Eventually(async () => (await EventsAsync(ns, claim, "ProvisioningFailed")).Contains(expected, StringComparison.Ordinal)),
            $"no ProvisioningFailed event for {ns}/{claim} saying '{expected}':\n" + (await up.Kubectl("describe", "pvc", claim, "-n", ns)).Stdout);
        Assert.Equal("Pending", await up.Field("pvc/" + claim, ns, ".status.phase"));
        Assert.Equal("", await up.Field("pvc/" + claim, ns, ".spec.volumeName"));
    }

    private async Task SourceDataIntactAsync()
    {
        Assert.Equal("true", await up.Field("volumesnapshot/data-snap", "demo", ".status.readyToUse"));
        await up.WithMounted("demo", "data", async dir => Assert.Equal("Hello World!", await File.ReadAllTextAsync(Path.Combine(dir, "hello.txt"))), readOnly: true);
    }

    [Fact]
    public async Task SnapshotOfAnUnboundClaim_ErrorsUntilTheClaimBinds()
    {
        RequireStack();
        await AcceptanceTests.ClassesAsync(up);
        await NamespaceAsync("bad-unbound");

        // A claim whose StorageClass does not exist stays Pending (and says so).
        (await up.Apply("""
            apiVersion: v1
            kind: PersistentVolumeClaim
            metadata: {name: orphan, namespace: bad-unbound}
            spec:
              storageClassName: no-such-class
              accessModes: [ReadWriteOnce]
              resources: {requests: {storage: 1Gi}}
            """)).ShouldSucceed();
        await ExpectProvisioningFailed("bad-unbound", "orphan", "storageclass.storage.k8s.io \"no-such-class\" not found");

        (await up.Apply("""
            apiVersion: snapshot.storage.k8s.io/v1
            kind: VolumeSnapshot
            metadata: {name: early, namespace: bad-unbound}
            spec:
              volumeSnapshotClassName: dolly-snapshots
              source: {persistentVolumeClaimName: orphan}
            """)).ShouldSucceed();
        await ExpectSnapshotError("bad-unbound", "early", "the source PersistentVolumeClaim bad-unbound/orphan is Pending, not Bound");
        Assert.Contains("is Pending, not Bound", await EventsAsync("bad-unbound", "early", "SnapshotCreationFailed"), StringComparison.Ordinal);

        // A clone of it waits too.
        (await up.Apply("""
            apiVersion: v1
            kind: PersistentVolumeClaim
            metadata: {name: copy, namespace: bad-unbound}
            spec:
              storageClassName: dolly
              accessModes: [ReadWriteOnce]
              dataSource: {kind: PersistentVolumeClaim, name: orphan}
              resources: {requests: {storage: 1Gi}}
            """)).ShouldSucceed();
        await ExpectProvisioningFailed("bad-unbound", "copy", "the source PersistentVolumeClaim bad-unbound/orphan is not Bound");

        // Once the class exists, the claim binds, and then the snapshot and the clone follow.
        (await up.Apply("""
            apiVersion: storage.k8s.io/v1
            kind: StorageClass
            metadata: {name: no-such-class}
            provisioner: csi.dolly.io
            reclaimPolicy: Delete
            """)).ShouldSucceed();
        await up.WaitFor("pvc/orphan", "bad-unbound", ".status.phase", "Bound");
        await up.WaitFor("volumesnapshot/early", "bad-unbound", ".status.readyToUse", "true");
        Assert.Equal("", await up.Field("volumesnapshot/early", "bad-unbound", ".status.error"));
        await up.WaitFor("pvc/copy", "bad-unbound", ".status.phase", "Bound");
        (await up.Kubectl("delete", "storageclass", "no-such-class")).ShouldSucceed();
    }

    [Fact]
    public async Task SnapshotNamingAMissingClass_Errors()
    {
        RequireStack();
        await AcceptanceTests.SnapshotRestoreAsync(up);
        (await up.Apply("""
            apiVersion: snapshot.storage.k8s.io/v1
            kind: VolumeSnapshot
            metadata: {name: classless, namespace: demo}
            spec:
              volumeSnapshotClassName: gold
              source: {persistentVolumeClaimName: data}
            """)).ShouldSucceed();
        await ExpectSnapshotError("demo", "classless", "VolumeSnapshotClass gold does not exist");
        (await up.Kubectl("delete", "volumesnapshot", "classless", "-n", "demo", "--wait=true", "--timeout=60s")).ShouldSucceed();
        await SourceDataIntactAsync();
    }

    [Fact]
    public async Task TwoDefaultSnapshotClasses_SnapshotWithoutAClass_Errors_AndOneDefaultFixesIt()
    {
        RequireStack();
        await AcceptanceTests.SnapshotRestoreAsync(up);
        (await up.Apply("""
            apiVersion: snapshot.storage.k8s.io/v1
            kind: VolumeSnapshotClass
            metadata:
              name: dolly-snapshots-2
              annotations: {snapshot.storage.kubernetes.io/is-default-class: "true"}
            driver: csi.dolly.io
            deletionPolicy: Delete
            """)).ShouldSucceed();
        try
        {
            (await up.Apply("""
                apiVersion: snapshot.storage.k8s.io/v1
                kind: VolumeSnapshot
                metadata: {name: which-class, namespace: demo}
                spec:
                  source: {persistentVolumeClaimName: data}
                """)).ShouldSucceed();
            await ExpectSnapshotError("demo", "which-class", "2 default VolumeSnapshotClasses for driver csi.dolly.io (dolly-snapshots, dolly-snapshots-2)");
            Assert.Contains("exactly one may carry", await EventsAsync("demo", "which-class", "SetDefaultSnapshotClassFailed"), StringComparison.Ordinal);
        }
        finally
        {
            (await up.Kubectl("delete", "volumesnapshotclass", "dolly-snapshots-2")).ShouldSucceed();
        }

        // With one default again, the same snapshot gets that class and becomes ready.
        await up.WaitFor("volumesnapshot/which-class", "demo", ".status.readyToUse", "true");
        Assert.Equal("dolly-snapshots", await up.Field("volumesnapshot/which-class", "demo", ".spec.volumeSnapshotClassName"));
        (await up.Kubectl("delete", "volumesnapshot", "which-class", "-n", "demo", "--wait=true", "--timeout=60s")).ShouldSucceed();
        await SourceDataIntactAsync();
    }

    [Fact]
    public async Task RestoreIntoAnotherVolumeMode_StaysPending()
    {
        RequireStack();
        await AcceptanceTests.SnapshotRestoreAsync(up);
        (await up.Apply("""
            apiVersion: v1
            kind: PersistentVolumeClaim
            metadata: {name: as-block, namespace: demo}
            spec:
              storageClassName: dolly
              volumeMode: Block
              accessModes: [ReadWriteOnce]
              dataSource: {apiGroup: snapshot.storage.k8s.io, kind: VolumeSnapshot, name: data-snap}
              resources: {requests: {storage: 1Gi}}
            """)).ShouldSucceed();
        await ExpectProvisioningFailed("demo", "as-block", "cannot restore VolumeSnapshot demo/data-snap of a Filesystem volume into a Block claim");
        (await up.Kubectl("delete", "pvc", "as-block", "-n", "demo", "--wait=true", "--timeout=60s")).ShouldSucceed();
        await SourceDataIntactAsync();
    }

    /// <summary>
    /// A claim that names a snapshot but was refused before its restore began (too small) does not hold the
    /// snapshot: only a restore under way does (the restore-versus-delete rule in docs/ARCHITECTURE.md). The
    /// snapshot and its content go at once, and the claim is told why it can never be restored.
    /// </summary>
    [Fact]
    public async Task DeletingASnapshot_ThatARefusedClaimNames_IsNotHeldByIt()
    {
        RequireStack();
        await AcceptanceTests.SnapshotRestoreAsync(up);
        (await up.Apply("""
            apiVersion: snapshot.storage.k8s.io/v1
            kind: VolumeSnapshot
            metadata: {name: doomed, namespace: demo}
            spec:
              volumeSnapshotClassName: dolly-snapshots
              source: {persistentVolumeClaimName: data}
            """)).ShouldSucceed();
        await up.WaitFor("volumesnapshot/doomed", "demo", ".status.readyToUse", "true");
        string content = await up.Field("volumesnapshot/doomed", "demo", ".status.boundVolumeSnapshotContentName");

        // A restore that cannot begin (too small).
        (await up.Apply("""
            apiVersion: v1
            kind: PersistentVolumeClaim
            metadata: {name: wants-doomed, namespace: demo}
            spec:
              storageClassName: dolly
              accessModes: [ReadWriteOnce]
              dataSource: {apiGroup: snapshot.storage.k8s.io, kind: VolumeSnapshot, name: doomed}
              resources: {requests: {storage: 100Mi}}
            """)).ShouldSucceed();
        await ExpectProvisioningFailed("demo", "wants-doomed", "requested volume size 104857600 is less than the size 1073741824 for the source snapshot doomed");

        (await up.Kubectl("delete", "volumesnapshot", "doomed", "-n", "demo", "--wait=true", "--timeout=60s")).ShouldSucceed();
        (await up.Kubectl("wait", "--for=delete", "volumesnapshotcontent/" + content, "--timeout=60s")).ShouldSucceed();
        Assert.Equal("", await EventsAsync("demo", "doomed", "SnapshotDeletePending"));
        await ExpectProvisioningFailed("demo", "wants-doomed", "VolumeSnapshot demo/doomed does not exist");
        (await up.Kubectl("delete", "pvc", "wants-doomed", "-n", "demo", "--wait=true", "--timeout=60s")).ShouldSucceed();
        await SourceDataIntactAsync();
    }

    [Fact]
    public async Task PreProvisionedContentWithoutASnapshotOnTheDriver_ErrorsOnTheContent()
    {
        RequireStack();
        await AcceptanceTests.ClassesAsync(up);
        await NamespaceAsync("bad-handle");
        (await up.Apply("""
            apiVersion: snapshot.storage.k8s.io/v1
            kind: VolumeSnapshotContent
            metadata: {name: ghost-content}
            spec:
              deletionPolicy: Retain
              driver: csi.dolly.io
              source: {snapshotHandle: no-such-snapshot}
              volumeSnapshotRef: {kind: VolumeSnapshot, name: ghost, namespace: bad-handle}
            ---
            apiVersion: snapshot.storage.k8s.io/v1
            kind: VolumeSnapshot
            metadata: {name: ghost, namespace: bad-handle}
            spec:
              source: {volumeSnapshotContentName: ghost-content}
            """)).ShouldSucceed();
        Assert.True(
            await DollyUp.Eventually(async () => (await up.Field("volumesnapshotcontent/ghost-content", null, ".status.error.message")).Contains("snapshot no-such-snapshot does not exist on driver csi.dolly.io", StringComparison.Ordinal)),
            "the content never said its snapshot is missing");
        Assert.True(
            await DollyUp.Eventually(async () => (await up.Field("volumesnapshot/ghost", "bad-handle", ".status.error.message")).Contains("does not exist on driver", StringComparison.Ordinal)),
            "the error never reached the snapshot");
        Assert.NotEqual("true", await up.Field("volumesnapshot/ghost", "bad-handle", ".status.readyToUse"));
    }
}
