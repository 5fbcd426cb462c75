namespace Dolly.IntegrationTests;

/// <summary>
/// Restore anywhere, through kubectl on real <c>dolly up</c> processes: a snapshot of a class naming a
/// SnapshotRepository is uploaded by the first instance; a second, fresh instance (its own pool and API server)
/// pointed at the same repository restores a claim from the handle through a pre-provisioned VolumeSnapshotContent,
/// and <c>dolly mount</c> reads the file written in the first.
/// </summary>
[Collection("dolly-up")]
public sealed class RepositoryTests(DollyUp up)
{
    private const string Ns = "offsite";
    private const string Text = "written in the first cluster, read in the second\n";

    /// <summary>Generous: both instances share a loaded CI machine.</summary>
    private const int Patience = 180;

    private static string Setup(string ns, string repositoryDir) => $$$"""
        apiVersion: v1
        kind: Namespace
        metadata: {name: {{{ns}}}}
        ---
        apiVersion: v1
        kind: Secret
        metadata: {name: repo-key, namespace: {{{ns}}}}
        stringData: {key: an offsite key of more than eight bytes}
        ---
        apiVersion: dolly.io/v1alpha1
        kind: SnapshotRepository
        metadata: {name: offsite}
        spec:
          directory: {path: {{{repositoryDir}}}}
          encryption: {keySecretRef: {namespace: {{{ns}}}, name: repo-key}}
        """;

    [Fact]
    public async Task SnapshotUploadedByOneDollyUp_RestoresAClaimInAnother()
    {
        if (up.Unavailable is { } why)
        {
            Assert.Skip(why);
        }

        string repository = Path.Combine(up.Root, "offsite-repository");
        await AcceptanceTests.ClassesAsync(up);
        (await up.Apply(Setup(Ns, repository))).ShouldSucceed();
        await up.WaitFor("snapshotrepository/offsite", null, ".status.reachable", "true", Patience);
        (await up.Apply("""
            apiVersion: snapshot.storage.k8s.io/v1
            kind: VolumeSnapshotClass
            metadata: {name: offsite}
            driver: csi.dolly.io
            deletionPolicy: Delete
            parameters: {dolly.io/repository: offsite}
            """)).ShouldSucceed();
        (await up.Apply($$$"""
            apiVersion: v1
            kind: PersistentVolumeClaim
            metadata: {name: ledger, namespace: {{{Ns}}}}
            spec:
              storageClassName: dolly
              accessModes: [ReadWriteOnce]
              resources: {requests: {storage: 1Gi}}
            """)).ShouldSucceed();
        await up.WaitFor("pvc/ledger", Ns, ".status.phase", "Bound", Patience);
        await up.WithMounted(Ns, "ledger", dir => File.WriteAllTextAsync(Path.Combine(dir, "ledger.txt"), Text));
        (await up.Apply($$$"""
            apiVersion: snapshot.storage.k8s.io/v1
            kind: VolumeSnapshot
            metadata: {name: ledger-1, namespace: {{{Ns}}}}
            spec: {volumeSnapshotClassName: offsite, source: {persistentVolumeClaimName: ledger}}
            """)).ShouldSucceed();
        await up.WaitFor("volumesnapshot/ledger-1", Ns, ".status.readyToUse", "true", Patience);
        string content = await up.Field("volumesnapshot/ledger-1", Ns, ".status.boundVolumeSnapshotContentName");
        await up.WaitFor("volumesnapshotcontent/" + content, null, ".metadata.annotations.dolly\\.io/upload-phase", "Succeeded", Patience);
        string handle = await up.Field("volumesnapshotcontent/" + content, null, ".metadata.annotations.dolly\\.io/repository-handle");
        Assert.StartsWith("dolly-repo.", handle, StringComparison.Ordinal);
        Assert.Contains("Uploaded", (await up.Kubectl("describe", "volumesnapshot/ledger-1", "-n", Ns)).ShouldSucceed().Stdout, StringComparison.Ordinal);

        var second = new DollyUp();
        try
        {
            await second.InitializeAsync();
            foreach (string doc in DollyUp.Documents("00-classes.yaml"))
            {
                (await second.Apply(doc)).ShouldSucceed();
            }

            (await second.Apply(Setup("elsewhere", repository))).ShouldSucceed();
            await second.WaitFor("snapshotrepository/offsite", null, ".status.reachable", "true", Patience);
            Assert.Equal(await up.Field("snapshotrepository/offsite", null, ".status.repositoryId"), await second.Field("snapshotrepository/offsite", null, ".status.repositoryId"));
            (await second.Apply($$$"""
                apiVersion: snapshot.storage.k8s.io/v1
                kind: VolumeSnapshotContent
                metadata: {name: ledger-imported}
                spec:
                  driver: csi.dolly.io
                  deletionPolicy: Retain
                  source: {snapshotHandle: {{{handle}}}}
                  volumeSnapshotRef: {namespace: elsewhere, name: ledger}
                ---
                apiVersion: snapshot.storage.k8s.io/v1
                kind: VolumeSnapshot
                metadata: {name: ledger, namespace: elsewhere}
                spec: {source: {volumeSnapshotContentName: ledger-imported}}
                """)).ShouldSucceed();
            await second.WaitFor("volumesnapshot/ledger", "elsewhere", ".status.readyToUse", "true", Patience);
            await second.WaitFor("volumesnapshotcontent/ledger-imported", null, ".metadata.annotations.dolly\\.io/restore-phase", "Succeeded", Patience);
            (await second.Apply("""
                apiVersion: v1
                kind: PersistentVolumeClaim
                metadata: {name: ledger, namespace: elsewhere}
                spec:
                  storageClassName: dolly
                  accessModes: [ReadWriteOnce]
                  resources: {requests: {storage: 1Gi}}
                  dataSource: {apiGroup: snapshot.storage.k8s.io, kind: VolumeSnapshot, name: ledger}
                """)).ShouldSucceed();
            await second.WaitFor("pvc/ledger", "elsewhere", ".status.phase", "Bound", Patience);
            string read = "";
            await second.WithMounted("elsewhere", "ledger", async dir => read = await File.ReadAllTextAsync(Path.Combine(dir, "ledger.txt")), readOnly: true);
            Assert.Equal(Text, read);
        }
        finally
        {
            await second.DisposeAsync();
        }
    }
}
