using System.Text.Json;
using Grpc.Core;
using Grpc.Core.Interceptors;
using k8s;
using k8s.Models;

namespace Dolly.Controllers.Tests;

/// <summary>
/// A restore and the deletion of its snapshot, started at random moments against each other: whatever the
/// order, both converge. The claim either binds (its restore was recorded before the deletion began, and the
/// deletion waited for it) or is refused with an event and holds nothing; the snapshot and its content are
/// always gone in the end. Rounds: DOLLY_RACE_ROUNDS (default 12).
/// </summary>
public sealed class RestoreDeleteRaceTests : IAsyncLifetime
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    private readonly FailCreateVolume _gate = new();
    private ControllerHarness? _h;

    private Kubernetes K => _h!.Client;

    public async ValueTask InitializeAsync() => _h = await ControllerHarness.StartAsync("race", Ct, _gate);

    /// <summary>While <see cref="Failing"/>, CreateVolume fails as a driver that is restarting would.</summary>
    private sealed class FailCreateVolume : Interceptor
    {
        public volatile bool Failing;

        public override AsyncUnaryCall<TResponse> AsyncUnaryCall<TRequest, TResponse>(
            TRequest request, ClientInterceptorContext<TRequest, TResponse> context, AsyncUnaryCallContinuation<TRequest, TResponse> continuation)
        {
            if (!Failing || context.Method.Name != "CreateVolume")
            {
                return continuation(request, context);
            }

            var status = new Status(StatusCode.Unavailable, "the driver is restarting");
            return new AsyncUnaryCall<TResponse>(Task.FromException<TResponse>(new RpcException(status)), Task.FromResult(new Metadata()), () => status, () => [], () => { });
        }
    }

    public async ValueTask DisposeAsync()
    {
        if (_h is not null)
        {
            await _h.DisposeAsync();
        }
    }

    private static Task<T> Until<T>(Func<Task<T?>> probe, Func<string> what, int seconds = 60)
        where T : class
        => Eventually.Until(probe, what, seconds);

    private async Task<V1PersistentVolumeClaim> BoundClaimAsync(string name)
    {
        await K.CoreV1.CreateNamespacedPersistentVolumeClaimAsync(DriverStack.Claim(name, "1Gi"), "default", cancellationToken: Ct);
        return await Until(async () => await ReadClaim(name) is { Status.Phase: "Bound" } c ? c : null, () => $"claim {name} never bound");
    }

    private Task<V1PersistentVolumeClaim> ReadClaim(string name) => K.CoreV1.ReadNamespacedPersistentVolumeClaimAsync(name, "default", cancellationToken: Ct);

    private async Task<JsonElement?> Snapshot(string name)
    {
        try
        {
            return (JsonElement)await K.CustomObjects.GetNamespacedCustomObjectAsync("snapshot.storage.k8s.io", "v1", "default", "volumesnapshots", name, Ct);
        }
        catch (k8s.Autorest.HttpOperationException ex) when (ex.Response.StatusCode == System.Net.HttpStatusCode.NotFound)
        {
            return null;
        }
    }

    private async Task ReadySnapshotAsync(string name, string claim)
    {
        await K.CustomObjects.CreateNamespacedCustomObjectAsync(
            new Dictionary<string, object>
            {
                ["apiVersion"] = "snapshot.storage.k8s.io/v1",
                ["kind"] = "VolumeSnapshot",
                ["metadata"] = new Dictionary<string, object> { ["name"] = name },
                ["spec"] = new Dictionary<string, object> { ["source"] = new Dictionary<string, object> { ["persistentVolumeClaimName"] = claim } },
            },
            "snapshot.storage.k8s.io",
            "v1",
            "default",
            "volumesnapshots",
            cancellationToken: Ct);
        await Until(
            async () => await Snapshot(name) is { } s && s.TryGetProperty("status", out var st) && st.TryGetProperty("readyToUse", out var r) && r.GetBoolean() ? "ready" : null,
            () => $"snapshot {name} never became ready");
    }

    private static V1PersistentVolumeClaim Restore(string name, string snapshot) =>
        DriverStack.Claim(name, "1Gi", new V1TypedLocalObjectReference { ApiGroup = "snapshot.storage.k8s.io", Kind = "VolumeSnapshot", Name = snapshot });

    private async Task<string> Events(string name, string reason) =>
        string.Join('\n', (await K.CoreV1.ListNamespacedEventAsync("default", fieldSelector: $"involvedObject.name={name},reason={reason}", cancellationToken: Ct)).Items.Select(e => e.Message));

    private async Task<string> Describe(string claim)
    {
        var c = await ReadClaim(claim);
        return $"{c.Status?.Phase} volume={c.Spec.VolumeName} finalizers=[{string.Join(",", c.Metadata.Finalizers ?? [])}] " +
            $"annotations=[{string.Join(",", (c.Metadata.Annotations ?? new Dictionary<string, string>()).Select(a => a.Key + "=" + a.Value))}] " +
            $"events: {await Events(claim, "ProvisioningFailed")}";
    }

    private async Task<string> UntilDescribed(string claim, string round, Func<Task<string>> wait)
    {
        try
        {
            return await wait();
        }
        catch (TimeoutException)
        {
            Assert.Fail($"{round}: claim {claim} neither bound nor refused: {await Describe(claim)}");
            throw;
        }
    }

    [Fact]
    public async Task RestoreAndDeleteRacing_BothAlwaysConverge()
    {
        int rounds = int.TryParse(Environment.GetEnvironmentVariable("DOLLY_RACE_ROUNDS"), out int r) && r > 0 ? r : 12;
        int seed = Environment.TickCount;
        var random = new Random(seed);
        await BoundClaimAsync("source");
        int bound = 0;
        int refused = 0;
        for (int i = 0; i < rounds; i++)
        {
            string snap = $"snap-{i}";
            string claim = $"restore-{i}";
            await ReadySnapshotAsync(snap, "source");
            string round = $"seed {seed}, round {i}";

            // Both within the same few milliseconds, in either order.
            int restoreDelay = random.Next(0, 40);
            int deleteDelay = random.Next(0, 40);
            await Task.WhenAll(
                Task.Run(
                    async () =>
                    {
                        await Task.Delay(restoreDelay, Ct);
                        await K.CoreV1.CreateNamespacedPersistentVolumeClaimAsync(Restore(claim, snap), "default", cancellationToken: Ct);
                    },
                    Ct),
                Task.Run(
                    async () =>
                    {
                        await Task.Delay(deleteDelay, Ct);
                        await K.CustomObjects.DeleteNamespacedCustomObjectAsync("snapshot.storage.k8s.io", "v1", "default", "volumesnapshots", snap, cancellationToken: Ct);
                    },
                    Ct));

            // The snapshot always goes, and the claim always ends one way or the other.
            try
            {
                await Until(async () => await Snapshot(snap) is null ? "gone" : null, () => "gone");
            }
            catch (TimeoutException)
            {
                Assert.Fail($"{round}: snapshot {snap} never went away:\n{await Snapshot(snap)}\nclaim: {await Describe(claim)}\nsnapshot events: {await Events(snap, "SnapshotDeletePending")}");
            }

            string outcome = await UntilDescribed(claim, round, () => Until(
                async () =>
                {
                    var c = await ReadClaim(claim);
                    if (c.Status?.Phase == "Bound")
                    {
                        return "bound";
                    }

                    string events = await Events(claim, "ProvisioningFailed");
                    return events.Contains($"VolumeSnapshot default/{snap} is being deleted and cannot be restored", StringComparison.Ordinal)
                        || events.Contains($"VolumeSnapshot default/{snap} was deleted before the restore began", StringComparison.Ordinal)
                        || events.Contains($"VolumeSnapshot default/{snap} does not exist", StringComparison.Ordinal)
                        ? "refused"
                        : null;
                },
                () => "neither"));

            var final = await ReadClaim(claim);
            var pv = (await K.CoreV1.ListPersistentVolumeAsync(cancellationToken: Ct)).Items.SingleOrDefault(v => v.Spec.ClaimRef?.Uid == final.Metadata.Uid);
            if (outcome == "bound")
            {
                bound++;
                Assert.NotNull(pv);
                Assert.Equal(pv.Metadata.Name, final.Spec.VolumeName);
            }
            else
            {
                refused++;

                // A refused restore holds nothing: no volume, no provisioning record, and it stays refused.
                Assert.Null(pv);
                Assert.DoesNotContain("dolly.io/provisioning-protection", final.Metadata.Finalizers ?? [], StringComparer.Ordinal);
                Assert.NotEqual("Bound", final.Status?.Phase);
            }
        }

        // Every snapshot's content, and with it the driver's snapshot, went with its snapshot.
        await Until(
            async () => ((JsonElement)await K.CustomObjects.ListClusterCustomObjectAsync("snapshot.storage.k8s.io", "v1", "volumesnapshotcontents", cancellationToken: Ct))
                .GetProperty("items").GetArrayLength() == 0 ? "none" : null,
            () => $"seed {seed}: contents left behind ({bound} bound, {refused} refused)");
        Assert.Equal(rounds, bound + refused);
    }

    /// <summary>A restore that has begun (recorded on its claim) holds its snapshot while the driver fails, then both finish.</summary>
    [Fact]
    public async Task ARestoreUnderWay_HoldsItsSnapshot_UntilItsVolumeExists()
    {
        await BoundClaimAsync("base");
        await ReadySnapshotAsync("held", "base");
        _gate.Failing = true;
        await K.CoreV1.CreateNamespacedPersistentVolumeClaimAsync(Restore("underway", "held"), "default", cancellationToken: Ct);
        await Until(
            async () => (await Events("underway", "ProvisioningFailed")).Contains("the driver is restarting", StringComparison.Ordinal) ? "failing" : null,
            () => "CreateVolume was never tried");
        var recorded = await ReadClaim("underway");
        Assert.Contains("dolly.io/provisioning-protection", recorded.Metadata.Finalizers ?? [], StringComparer.Ordinal);
        Assert.StartsWith("snapshot:", recorded.Metadata.Annotations["dolly.io/provisioning-source"], StringComparison.Ordinal);

        await K.CustomObjects.DeleteNamespacedCustomObjectAsync("snapshot.storage.k8s.io", "v1", "default", "volumesnapshots", "held", cancellationToken: Ct);
        await Until(
            async () => (await Events("held", "SnapshotDeletePending")).Contains("PersistentVolumeClaim default/underway", StringComparison.Ordinal) ? "waiting" : null,
            () => "the deletion did not wait for the restore under way");
        Assert.NotNull(await Snapshot("held"));

        _gate.Failing = false;
        await Until(async () => await ReadClaim("underway") is { Status.Phase: "Bound" } c ? c : null, () => "the restore never finished");
        await Until(async () => await Snapshot("held") is null ? "gone" : null, () => "the snapshot was not deleted after the restore");
    }

    /// <summary>A claim refused before its restore began (too small) does not hold the snapshot it names.</summary>
    [Fact]
    public async Task ARefusedRestore_DoesNotHoldItsSnapshot()
    {
        await BoundClaimAsync("base");
        await ReadySnapshotAsync("named", "base");
        await K.CoreV1.CreateNamespacedPersistentVolumeClaimAsync(
            DriverStack.Claim("small", "100Mi", new V1TypedLocalObjectReference { ApiGroup = "snapshot.storage.k8s.io", Kind = "VolumeSnapshot", Name = "named" }),
            "default",
            cancellationToken: Ct);
        await Until(
            async () => (await Events("small", "ProvisioningFailed")).Contains("is less than the size", StringComparison.Ordinal) ? "refused" : null,
            () => "the small restore was not refused");

        await K.CustomObjects.DeleteNamespacedCustomObjectAsync("snapshot.storage.k8s.io", "v1", "default", "volumesnapshots", "named", cancellationToken: Ct);
        await Until(async () => await Snapshot("named") is null ? "gone" : null, () => "a refused claim held the snapshot");
        Assert.Equal("", await Events("named", "SnapshotDeletePending"));
        await Until(
            async () => (await Events("small", "ProvisioningFailed")).Contains("VolumeSnapshot default/named does not exist", StringComparison.Ordinal) ? "told" : null,
            () => "the claim was never told its snapshot is gone");
        Assert.NotEqual("Bound", (await ReadClaim("small")).Status?.Phase);
    }

    /// <summary>
    /// A restore writes to its claim four times: the provisioner is announced (with the protection finalizer),
    /// the provisioner records the source, the claim is bound (dropping the provisioner's finalizer), and the
    /// phase becomes Bound. Every write is a new version that `kubectl get pvc -w` prints.
    /// </summary>
    [Fact]
    public async Task ARestore_WritesItsClaimAtMostFourTimes()
    {
        await BoundClaimAsync("origin");
        await ReadySnapshotAsync("golden", "origin");
        var list = await K.CoreV1.ListNamespacedPersistentVolumeClaimAsync("default", cancellationToken: Ct);
        var versions = new List<V1PersistentVolumeClaim>();
        using var watching = CancellationTokenSource.CreateLinkedTokenSource(Ct);
        var watch = Task.Run(
            async () =>
            {
                await foreach (var (type, claim) in K.CoreV1.WatchListNamespacedPersistentVolumeClaimAsync(
                    "default", fieldSelector: "metadata.name=counted", resourceVersion: list.Metadata.ResourceVersion, cancellationToken: watching.Token))
                {
                    if (type is WatchEventType.Added or WatchEventType.Modified)
                    {
                        versions.Add(claim);
                        if (claim.Status?.Phase == "Bound")
                        {
                            return;
                        }
                    }
                }
            },
            Ct);
        await K.CoreV1.CreateNamespacedPersistentVolumeClaimAsync(Restore("counted", "golden"), "default", cancellationToken: Ct);
        await watch.WaitAsync(TimeSpan.FromSeconds(60), Ct);

        // Give any straggling write a moment to show, then count.
        await Task.Delay(500, Ct);
        var final = await ReadClaim("counted");
        string history = string.Join(
            "\n",
            versions.Select(v => $"rv {v.Metadata.ResourceVersion}: {v.Status?.Phase} volume={v.Spec.VolumeName} finalizers=[{string.Join(",", v.Metadata.Finalizers ?? [])}] annotations=[{string.Join(",", (v.Metadata.Annotations ?? new Dictionary<string, string>()).Keys.Order(StringComparer.Ordinal))}]"));
        Assert.Equal("Bound", final.Status?.Phase);
        Assert.Equal(versions[^1].Metadata.ResourceVersion, final.Metadata.ResourceVersion);
        int writes = versions.Count - 1;
        Assert.True(writes <= 4, $"{writes} writes to the claim during its restore:\n{history}");

        // What the writes achieved: protected, bound to the PV provisioned for it, no provisioning record left.
        Assert.Contains("kubernetes.io/pvc-protection", final.Metadata.Finalizers ?? [], StringComparer.Ordinal);
        Assert.DoesNotContain("dolly.io/provisioning-protection", final.Metadata.Finalizers ?? [], StringComparer.Ordinal);
        Assert.Equal("pvc-" + final.Metadata.Uid, final.Spec.VolumeName);
        Assert.Equal("csi.dolly.io", final.Metadata.Annotations["volume.kubernetes.io/storage-provisioner"]);
        await watching.CancelAsync();
    }
}
