namespace Dolly.IntegrationTests;

/// <summary>
/// What happens to a claim after it is bound, through kubectl against a real <c>dolly up</c>: expansion
/// (controller, then the file system at the next mount), reclaim policies, and pvc-protection.
/// </summary>
[Collection("dolly-up")]
public sealed class LifecycleTests(DollyUp up)
{
    private const string Ns = "life";

    private async Task SetUpAsync()
    {
        if (up.Unavailable is { } why)
        {
            Assert.Skip(why);
        }

        await AcceptanceTests.ClassesAsync(up);
        await up.OnceAsync("life", async () =>
        {
            (await up.Apply($"apiVersion: v1\nkind: Namespace\nmetadata: {{name: {Ns}}}\n")).ShouldSucceed();
            (await up.Apply("""
                apiVersion: storage.k8s.io/v1
                kind: StorageClass
                metadata: {name: dolly-retain}
                provisioner: csi.dolly.io
                reclaimPolicy: Retain
                allowVolumeExpansion: false
                """)).ShouldSucceed();
        });
    }

    private async Task<string> ClaimAsync(string name, string storageClass = "dolly", string size = "1Gi")
    {
        (await up.Apply($$$"""
            apiVersion: v1
            kind: PersistentVolumeClaim
            metadata: {name: {{{name}}}, namespace: {{{Ns}}}}
            spec:
              storageClassName: {{{storageClass}}}
              accessModes: [ReadWriteOnce]
              resources: {requests: {storage: {{{size}}}}}
            """)).ShouldSucceed();
        await up.WaitFor("pvc/" + name, Ns, ".status.phase", "Bound");
        return await up.Field("pvc/" + name, Ns, ".spec.volumeName");
    }

    [Fact]
    public async Task Expansion_GrowsTheVolume_ThenTheFileSystemAtTheNextMount()
    {
        await SetUpAsync();
        string pv = await ClaimAsync("grow");
        await up.WithMounted(Ns, "grow", dir => File.WriteAllTextAsync(Path.Combine(dir, "keep.txt"), "before growing"));

        (await up.Kubectl("patch", "pvc", "grow", "-n", Ns, "-p", """{"spec":{"resources":{"requests":{"storage":"2Gi"}}}}""")).ShouldSucceed();
        await up.WaitFor("pv/" + pv, null, ".spec.capacity.storage", "2Gi");
        await up.WaitFor("pvc/grow", Ns, ".status.conditions[0].type", "FileSystemResizePending");
        Assert.Equal("1Gi", await up.Field("pvc/grow", Ns, ".status.capacity.storage"));

        string dir = Path.Combine(up.Root, "mnt", "grow");
        var mount = (await up.Dolly("mount", $"{Ns}/grow", dir)).ShouldSucceed();
        try
        {
            Assert.Contains("grew the file system of life/grow to 2Gi", mount.Stdout, StringComparison.Ordinal);
            Assert.True(new DriveInfo(dir).TotalSize > 3L << 29, $"the file system is still {new DriveInfo(dir).TotalSize} bytes");
            Assert.Equal("before growing", await File.ReadAllTextAsync(Path.Combine(dir, "keep.txt"), TestContext.Current.CancellationToken));
        }
        finally
        {
            (await up.Dolly("unmount", dir)).ShouldSucceed();
        }

        Assert.Equal("2Gi", await up.Field("pvc/grow", Ns, ".status.capacity.storage"));
        Assert.DoesNotContain("FileSystemResizePending", await up.Field("pvc/grow", Ns, ".status.conditions"), StringComparison.Ordinal);
    }

    [Fact]
    public async Task Expansion_OfAClassThatForbidsIt_IsRefusedWithAnEvent()
    {
        await SetUpAsync();
        string pv = await ClaimAsync("fixed", "dolly-retain");
        (await up.Kubectl("patch", "pvc", "fixed", "-n", Ns, "-p", """{"spec":{"resources":{"requests":{"storage":"2Gi"}}}}""")).ShouldSucceed();
        Assert.True(
            await DollyUp.Eventually(async () => (await up.Kubectl("get", "events", "-n", Ns, "--field-selector", "involvedObject.name=fixed,reason=VolumeResizeFailed", "-o", "jsonpath={.items[*].message}")).Stdout
                .Contains("StorageClass dolly-retain does not set allowVolumeExpansion: true", StringComparison.Ordinal)),
            "no VolumeResizeFailed event");
        Assert.Equal("1Gi", await up.Field("pv/" + pv, null, ".spec.capacity.storage"));
    }

    [Fact]
    public async Task ReclaimDelete_RemovesThePersistentVolume_ReclaimRetain_KeepsItReleased()
    {
        await SetUpAsync();
        string gone = await ClaimAsync("scratch");
        string kept = await ClaimAsync("precious", "dolly-retain");
        Assert.Equal("Delete", await up.Field("pv/" + gone, null, ".spec.persistentVolumeReclaimPolicy"));
        Assert.Equal("Retain", await up.Field("pv/" + kept, null, ".spec.persistentVolumeReclaimPolicy"));

        (await up.Kubectl("delete", "pvc", "scratch", "precious", "-n", Ns, "--wait=true", "--timeout=60s")).ShouldSucceed();
        await up.WaitForDeleted("pv/" + gone, null);
        await up.WaitFor("pv/" + kept, null, ".status.phase", "Released");
        Assert.Equal("precious", await up.Field("pv/" + kept, null, ".spec.claimRef.name"));
    }

    [Fact]
    public async Task PvcProtection_HeldWhileAPodUsesTheClaim_ReleasedWhenThePodGoes()
    {
        await SetUpAsync();
        string pv = await ClaimAsync("protected");
        Assert.Contains("kubernetes.io/pvc-protection", await up.Field("pvc/protected", Ns, ".metadata.finalizers"), StringComparison.Ordinal);

        // A pod names the claim. Nothing runs it (the embedded API server stores pods, it runs none), but the
        // binder holds pvc-protection while any pod in the namespace that has not finished uses the claim.
        (await up.Apply($$$"""
            apiVersion: v1
            kind: Pod
            metadata: {name: user, namespace: {{{Ns}}}}
            spec:
              containers: [{name: app, image: busybox, volumeMounts: [{name: data, mountPath: /data}]}]
              volumes: [{name: data, persistentVolumeClaim: {claimName: protected}}]
            """)).ShouldSucceed();
        (await up.Kubectl("delete", "pvc", "protected", "-n", Ns, "--wait=false")).ShouldSucceed();

        // Whether the claim is kept can only be seen by letting time pass: the binder has handled the deletion
        // within this window (it re-checks every 5 s while a pod uses the claim).
        await Task.Delay(TimeSpan.FromSeconds(2), TestContext.Current.CancellationToken);
        Assert.NotEqual("", await up.Field("pvc/protected", Ns, ".metadata.deletionTimestamp"));
        Assert.Equal("Bound", await up.Field("pvc/protected", Ns, ".status.phase"));
        Assert.Contains("kubernetes.io/pvc-protection", await up.Field("pvc/protected", Ns, ".metadata.finalizers"), StringComparison.Ordinal);

        // The pod goes: the claim goes, and with it (reclaim policy Delete) its volume.
        (await up.Kubectl("delete", "pod", "user", "-n", Ns)).ShouldSucceed();
        await up.WaitForDeleted("pvc/protected", Ns);
        await up.WaitForDeleted("pv/" + pv, null);
    }
}
