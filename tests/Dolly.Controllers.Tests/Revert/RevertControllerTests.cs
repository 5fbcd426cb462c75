using System.Text.Json;
using Dolly.Controllers.Model;
using Dolly.Controllers.Revert;
using k8s;
using k8s.Models;

namespace Dolly.Controllers.Tests.Revert;

/// <summary>
/// VolumeReverts on the embedded stack (API server, controllers, CSI driver over a real pool): every refusal is a
/// condition and an event naming the problem with nothing changed; a revert waits while the claim is in use, takes a
/// real safety snapshot, puts the snapshot's content back, tells the claim, and never runs twice.
/// </summary>
public sealed class RevertControllerTests : IAsyncLifetime
{
    private const string Ns = "default";
    private const int Probe = 64 << 10;

    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    private ControllerHarness? _h;

    private Kubernetes K => _h!.Client;

    public async ValueTask InitializeAsync() => _h = await ControllerHarness.StartAsync("reverts", Ct);

    public async ValueTask DisposeAsync()
    {
        if (_h is not null)
        {
            await _h.DisposeAsync();
        }
    }

    /// <summary>A bad input: what the test sets up (given the claim "db" with snapshot "db-1"), the revert's spec, and the outcome.</summary>
    private sealed record BadInput(Func<RevertControllerTests, Task> Arrange, string Claim, string Snapshot, bool? AllowForeign, string Phase, string Reason, string Mention);

    private static readonly Dictionary<string, BadInput> Bad = new()
    {
        ["snapshot of another namespace"] = new(_ => Task.CompletedTask, "db", "team-b/db-1", null, RevertNames.Failed, "SnapshotInAnotherNamespace", "another namespace"),
        ["no such snapshot"] = new(_ => Task.CompletedTask, "db", "missing", null, RevertNames.Pending, "SnapshotNotFound", "missing"),
        ["snapshot not ready"] = new(t => t.SnapshotAsync("never", "no-such-claim"), "db", "never", null, RevertNames.Pending, "SnapshotNotReady", "never"),
        ["no such claim"] = new(_ => Task.CompletedTask, "missing", "db-1", null, RevertNames.Pending, "ClaimNotFound", "missing"),
        ["claim not bound"] = new(t => t.K.CoreV1.CreateNamespacedPersistentVolumeClaimAsync(Unbindable("loose"), Ns, cancellationToken: Ct), "loose", "db-1", null, RevertNames.Pending, "ClaimNotBound", "loose"),
        ["snapshot of an unrelated claim"] = new(t => t.ClaimWithSnapshotAsync("other", "1Gi", "other-1"), "db", "other-1", null, RevertNames.Failed, "ForeignSnapshot", "lineage"),
        ["larger foreign snapshot, allowed"] = new(t => t.ClaimWithSnapshotAsync("big", "2Gi", "big-1"), "db", "big-1", true, RevertNames.Failed, "SnapshotTooLarge", "grow the claim first"),
        ["claim of another driver"] = new(t => t.ForeignClaimAsync("nfs"), "nfs", "db-1", null, RevertNames.Failed, "NotDollyVolume", "other.example.com"),
        ["snapshot of another driver"] = new(t => t.ForeignSnapshotAsync("imported"), "db", "imported", null, RevertNames.Failed, "SnapshotOfAnotherDriver", "other.example.com"),
    };

    public static TheoryData<string> BadInputs() => [.. Bad.Keys];

    [Theory]
    [MemberData(nameof(BadInputs))]
    public async Task BadInput_ConditionAndEventNameIt_NothingChanged(string name)
    {
        var input = Bad[name];
        string handle = await ClaimWithSnapshotAsync("db", "1Gi", "db-1");
        Write(handle, 2);
        await input.Arrange(this);
        var snapshotsBefore = await SnapshotNamesAsync();

        await CreateRevertAsync("r", input.Claim, input.Snapshot, input.AllowForeign);

        var revert = await Until(async () => await ReadRevertAsync("r") is { Status.Conditions: [{ } c] } r && c.Reason == input.Reason ? r : null, $"{name}: reason {input.Reason}");
        Assert.Equal(input.Phase, revert.Status!.Phase);
        var condition = Assert.Single(revert.Status.Conditions!);
        Assert.Equal(("Reverted", "False"), (condition.Type, condition.Status));
        Assert.Contains(input.Mention, condition.Message, StringComparison.Ordinal);
        await Until(async () => (await EventsAsync("r")).Any(e => e.Reason == input.Reason && e.Message.Contains(input.Mention, StringComparison.Ordinal)), $"{name}: event {input.Reason}");
        Assert.Equal(Pattern(2), Read(handle));
        Assert.Equal(snapshotsBefore, await SnapshotNamesAsync());
        Assert.Null(revert.Status.CompletionTime);
        Assert.True(revert.Metadata.Finalizers is null or { Count: 0 });
    }

    [Fact]
    public async Task InUse_WaitsWithTheHolder_ThenTakesTheSafetySnapshot_RevertsAndTellsTheClaim_AndNeverRunsTwice()
    {
        string handle = await ClaimWithSnapshotAsync("db", "1Gi", "db-1");
        Write(handle, 2);
        await K.CoreV1.CreateNamespacedPodAsync(PodUsing("app", "db"), Ns, cancellationToken: Ct);

        await CreateRevertAsync("undo", "db", "db-1", null);
        var waiting = await Until(async () => await ReadRevertAsync("undo") is { Status.Holders.Count: > 0 } r ? r : null, "the revert waiting for the pod");
        Assert.Equal(RevertNames.Pending, waiting.Status!.Phase);
        Assert.Contains($"pod {Ns}/app", Assert.Single(waiting.Status.Holders!), StringComparison.Ordinal);
        Assert.Equal("VolumeInUse", waiting.Status.Conditions![0].Reason);
        Assert.Equal(Pattern(2), Read(handle));
        Assert.DoesNotContain(RevertNames.SafetySnapshotName("undo"), await SnapshotNamesAsync());

        await K.CoreV1.DeleteNamespacedPodAsync("app", Ns, gracePeriodSeconds: 0, cancellationToken: Ct);
        var done = await Until(async () => await ReadRevertAsync("undo") is { Status.Phase: RevertNames.Succeeded } r && r.Metadata.Finalizers is null or { Count: 0 } ? r : null, "the revert done");

        Assert.Equal(Pattern(1), Read(handle));
        Assert.NotNull(done.Status!.CompletionTime);
        Assert.Equal(("Reverted", "True"), (done.Status.Conditions![0].Type, done.Status.Conditions[0].Status));
        Assert.Null(done.Status.Holders);
        string safety = Assert.IsType<string>(done.Status.SafetySnapshotName);
        var safetySnapshot = await ReadSnapshotAsync(safety);
        Assert.True(safetySnapshot.Status?.ReadyToUse);
        Assert.Equal("undo", safetySnapshot.Metadata.Labels[RevertNames.SafetySnapshotLabel]);
        Assert.Equal(Pattern(2), Read(await SnapshotHandleAsync(safety)));
        await Until(async () => (await EventsAsync("db")).Any(e => e.Reason == "Reverted" && e.Message.Contains("db-1", StringComparison.Ordinal)), "the event on the claim");

        // Written after, and the revert looked at again: it does not run a second time.
        Write(handle, 3);
        await K.CustomObjects.PatchNamespacedCustomObjectAsync(
            new V1Patch("""{"metadata":{"annotations":{"touched":"yes"}}}""", V1Patch.PatchType.MergePatch), RevertNames.Group, RevertNames.Version, Ns, RevertNames.Plural, "undo", cancellationToken: Ct);
        await Until(async () => (await ReadRevertAsync("undo")).Metadata.Annotations?.ContainsKey("touched") == true, "the touch seen");
        await Task.Delay(500, Ct);
        Assert.Equal(Pattern(3), Read(handle));
    }

    [Fact]
    public async Task SafetySnapshotOff_RevertsWithoutOne()
    {
        string handle = await ClaimWithSnapshotAsync("db", "1Gi", "db-1");
        Write(handle, 2);
        var before = await SnapshotNamesAsync();

        await CreateRevertAsync("undo", "db", "db-1", null, takeSafetySnapshot: false);
        var done = await Until(async () => await ReadRevertAsync("undo") is { Status.Phase: RevertNames.Succeeded } r ? r : null, "the revert done");

        Assert.Null(done.Status!.SafetySnapshotName);
        Assert.Equal(Pattern(1), Read(handle));
        Assert.Equal(before, await SnapshotNamesAsync());
    }

    [Fact]
    public async Task SameLineage_RestoredClaimRevertsToTheOriginalsSnapshot_ForeignAllowedSmallerSnapshotFits()
    {
        await ClaimWithSnapshotAsync("db", "1Gi", "db-1");
        await K.CoreV1.CreateNamespacedPersistentVolumeClaimAsync(
            DriverStack.Claim("copy", "2Gi", new V1TypedLocalObjectReference { ApiGroup = Names.SnapshotGroup, Kind = "VolumeSnapshot", Name = "db-1" }), Ns, cancellationToken: Ct);
        string copy = await BoundHandleAsync("copy");
        Write(copy, 4);

        await CreateRevertAsync("back", "copy", "db-1", null, takeSafetySnapshot: false);
        await Until(async () => await ReadRevertAsync("back") is { Status.Phase: RevertNames.Succeeded } r ? r : null, "a restored claim reverted to its origin's snapshot");
        Assert.Equal(Pattern(1), Read(copy));

        await ClaimWithSnapshotAsync("small", "1Gi", "small-1", seed: 5);
        await CreateRevertAsync("golden", "copy", "small-1", allowForeign: true, takeSafetySnapshot: false);
        await Until(async () => await ReadRevertAsync("golden") is { Status.Phase: RevertNames.Succeeded } r ? r : null, "a foreign snapshot allowed");
        Assert.Equal(Pattern(5), Read(copy));
    }

    [Fact]
    public async Task DeletedWhileWaiting_GoneAndNothingChanged()
    {
        string handle = await ClaimWithSnapshotAsync("db", "1Gi", "db-1");
        Write(handle, 2);
        await K.CoreV1.CreateNamespacedPodAsync(PodUsing("app", "db"), Ns, cancellationToken: Ct);
        await CreateRevertAsync("undo", "db", "db-1", null);
        await Until(async () => await ReadRevertAsync("undo") is { Status.Phase: RevertNames.Pending } r ? r : null, "the revert waiting");

        await K.CustomObjects.DeleteNamespacedCustomObjectAsync(RevertNames.Group, RevertNames.Version, Ns, RevertNames.Plural, "undo", cancellationToken: Ct);
        await Until(async () => !(await RevertNamesAsync()).Contains("undo"), "the revert gone");
        await K.CoreV1.DeleteNamespacedPodAsync("app", Ns, gracePeriodSeconds: 0, cancellationToken: Ct);
        await Task.Delay(500, Ct);

        Assert.Equal(Pattern(2), Read(handle));
    }

    // ---- helpers ------------------------------------------------------------------------------------

    /// <summary>A bound claim of class dolly whose volume holds pattern <paramref name="seed"/>, with a ready snapshot of it; returns the volume handle.</summary>
    private async Task<string> ClaimWithSnapshotAsync(string claim, string size, string snapshot, int seed = 1)
    {
        await K.CoreV1.CreateNamespacedPersistentVolumeClaimAsync(DriverStack.Claim(claim, size), Ns, cancellationToken: Ct);
        string handle = await BoundHandleAsync(claim);
        Write(handle, seed);
        await SnapshotAsync(snapshot, claim);
        await Until(async () => (await ReadSnapshotAsync(snapshot)).Status?.ReadyToUse == true, $"snapshot {snapshot} ready");
        return handle;
    }

    private async Task<string> BoundHandleAsync(string claim)
    {
        var bound = await Until(async () => await K.CoreV1.ReadNamespacedPersistentVolumeClaimAsync(claim, Ns, cancellationToken: Ct) is { Status.Phase: "Bound" } c ? c : null, $"claim {claim} bound");
        var pv = await K.CoreV1.ReadPersistentVolumeAsync(bound.Spec.VolumeName, cancellationToken: Ct);
        return pv.Spec.Csi.VolumeHandle;
    }

    private async Task SnapshotAsync(string name, string claim) =>
        await K.CustomObjects.CreateNamespacedCustomObjectAsync(
            new VolumeSnapshot { Metadata = new V1ObjectMeta { Name = name }, Spec = new VolumeSnapshotSpec { Source = new VolumeSnapshotSource { PersistentVolumeClaimName = claim } } },
            Names.SnapshotGroup, "v1", Ns, "volumesnapshots", cancellationToken: Ct);

    /// <summary>A claim statically bound to a volume of another CSI driver.</summary>
    private async Task ForeignClaimAsync(string name)
    {
        await K.CoreV1.CreatePersistentVolumeAsync(
            new V1PersistentVolume
            {
                Metadata = new V1ObjectMeta { Name = "pv-" + name },
                Spec = new V1PersistentVolumeSpec
                {
                    Capacity = new Dictionary<string, ResourceQuantity> { ["storage"] = new("1Gi") },
                    AccessModes = ["ReadWriteOnce"],
                    Csi = new V1CSIPersistentVolumeSource { Driver = "other.example.com", VolumeHandle = "share-1" },
                    PersistentVolumeReclaimPolicy = "Retain",
                    StorageClassName = "",
                },
            },
            cancellationToken: Ct);
        var claim = DriverStack.Claim(name, "1Gi");
        claim.Spec.StorageClassName = "";
        claim.Spec.VolumeName = "pv-" + name;
        await K.CoreV1.CreateNamespacedPersistentVolumeClaimAsync(claim, Ns, cancellationToken: Ct);
        await BoundHandleAsync(name);
    }

    /// <summary>A snapshot bound to a pre-provisioned content of another CSI driver.</summary>
    private async Task ForeignSnapshotAsync(string name)
    {
        await K.CustomObjects.CreateClusterCustomObjectAsync(
            new VolumeSnapshotContent
            {
                Metadata = new V1ObjectMeta { Name = "content-" + name },
                Spec = new VolumeSnapshotContentSpec
                {
                    Driver = "other.example.com",
                    DeletionPolicy = "Retain",
                    Source = new VolumeSnapshotContentSource { SnapshotHandle = "snap-9" },
                    VolumeSnapshotRef = new V1ObjectReference { Name = name, NamespaceProperty = Ns },
                },
            },
            Names.SnapshotGroup, "v1", "volumesnapshotcontents", cancellationToken: Ct);
        await K.CustomObjects.CreateNamespacedCustomObjectAsync(
            new VolumeSnapshot { Metadata = new V1ObjectMeta { Name = name }, Spec = new VolumeSnapshotSpec { Source = new VolumeSnapshotSource { VolumeSnapshotContentName = "content-" + name } } },
            Names.SnapshotGroup, "v1", Ns, "volumesnapshots", cancellationToken: Ct);
        await Until(async () => (await ReadSnapshotAsync(name)).Status?.BoundVolumeSnapshotContentName is not null, $"snapshot {name} bound");
    }

    private static V1PersistentVolumeClaim Unbindable(string name)
    {
        var claim = DriverStack.Claim(name, "1Gi");
        claim.Spec.StorageClassName = "no-such-class";
        return claim;
    }

    private static V1Pod PodUsing(string name, string claim) => new()
    {
        Metadata = new V1ObjectMeta { Name = name },
        Spec = new V1PodSpec
        {
            Containers = [new V1Container { Name = "app", Image = "busybox" }],
            Volumes = [new V1Volume { Name = "data", PersistentVolumeClaim = new V1PersistentVolumeClaimVolumeSource { ClaimName = claim } }],
        },
    };

    private async Task CreateRevertAsync(string name, string claim, string snapshot, bool? allowForeign, bool? takeSafetySnapshot = null)
    {
        var spec = new Dictionary<string, object> { ["claimName"] = claim, ["volumeSnapshotName"] = snapshot };
        if (allowForeign is { } a)
        {
            spec["allowForeignSnapshot"] = a;
        }

        if (takeSafetySnapshot is { } t)
        {
            spec["takeSafetySnapshot"] = t;
        }

        await K.CustomObjects.CreateNamespacedCustomObjectAsync(
            new Dictionary<string, object> { ["apiVersion"] = RevertNames.ApiVersion, ["kind"] = RevertNames.Kind, ["metadata"] = new Dictionary<string, object> { ["name"] = name }, ["spec"] = spec },
            RevertNames.Group, RevertNames.Version, Ns, RevertNames.Plural, cancellationToken: Ct);
    }

    private async Task<VolumeRevert> ReadRevertAsync(string name) =>
        Deserialize<VolumeRevert>(await K.CustomObjects.GetNamespacedCustomObjectAsync(RevertNames.Group, RevertNames.Version, Ns, RevertNames.Plural, name, Ct));

    private async Task<List<string>> RevertNamesAsync() =>
        [.. Deserialize<CustomObjectList<VolumeRevert>>(await K.CustomObjects.ListNamespacedCustomObjectAsync(RevertNames.Group, RevertNames.Version, Ns, RevertNames.Plural, cancellationToken: Ct)).Items.Select(r => r.Metadata.Name)];

    private async Task<VolumeSnapshot> ReadSnapshotAsync(string name) =>
        Deserialize<VolumeSnapshot>(await K.CustomObjects.GetNamespacedCustomObjectAsync(Names.SnapshotGroup, "v1", Ns, "volumesnapshots", name, Ct));

    private async Task<string> SnapshotHandleAsync(string snapshot)
    {
        var s = await ReadSnapshotAsync(snapshot);
        var content = Deserialize<VolumeSnapshotContent>(await K.CustomObjects.GetClusterCustomObjectAsync(Names.SnapshotGroup, "v1", "volumesnapshotcontents", s.Status!.BoundVolumeSnapshotContentName!, Ct));
        return content.Status!.SnapshotHandle!;
    }

    private async Task<List<string>> SnapshotNamesAsync() =>
        [.. Deserialize<CustomObjectList<VolumeSnapshot>>(await K.CustomObjects.ListNamespacedCustomObjectAsync(Names.SnapshotGroup, "v1", Ns, "volumesnapshots", cancellationToken: Ct)).Items.Select(s => s.Metadata.Name).Order(StringComparer.Ordinal)];

    private async Task<List<Corev1Event>> EventsAsync(string involved) =>
        [.. (await K.CoreV1.ListNamespacedEventAsync(Ns, cancellationToken: Ct)).Items.Where(e => e.InvolvedObject.Name == involved)];

    private static byte[] Pattern(int seed)
    {
        var data = new byte[Probe];
        new Random(seed).NextBytes(data);
        return data;
    }

    private void Write(string device, int seed) => _h!.Stack.Pool.OpenDevice(device).Value.Write(0, Pattern(seed)).ThrowIfFailed();

    private byte[] Read(string device)
    {
        var data = new byte[Probe];
        _h!.Stack.Pool.OpenDevice(device).Value.Read(0, data).ThrowIfFailed();
        return data;
    }

    private static T Deserialize<T>(object o) => o is JsonElement e ? KubernetesJson.Deserialize<T>(e.GetRawText()) : KubernetesJson.Deserialize<T>(KubernetesJson.Serialize(o));

    private static Task<T> Until<T>(Func<Task<T?>> probe, string what, int seconds = 60) => Eventually.Until(probe, what, seconds);

    private static async Task Until(Func<Task<bool>> probe, string what) => await Eventually.Until<object>(async () => await probe() ? true : null, what);
}
