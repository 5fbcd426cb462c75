using System.Text.Json;
using k8s;
using k8s.LeaderElection;
using k8s.LeaderElection.ResourceLock;
using k8s.Models;

namespace Dolly.Api.Tests;

/// <summary>What Dolly's controllers do through KubernetesClient: leader election on a Lease, events, status writes.</summary>
public sealed class ControllerPatternTests(ServerFixture fx) : IClassFixture<ServerFixture>
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    [Fact]
    public async Task LeaderElection_OnLease_AcquiresAndRecordsHolder()
    {
        using var client = fx.Client();
        var leaseLock = new LeaseLock(client, "kube-system", "dolly-controllers", "replica-1");
        var config = new LeaderElectionConfig(leaseLock)
        {
            LeaseDuration = TimeSpan.FromSeconds(3),
            RenewDeadline = TimeSpan.FromSeconds(2),
            RetryPeriod = TimeSpan.FromMilliseconds(200),
        };
        using var elector = new LeaderElector(config);
        var leading = new TaskCompletionSource();
        elector.OnStartedLeading += () => leading.TrySetResult();
        using var cts = CancellationTokenSource.CreateLinkedTokenSource(Ct);
        var run = elector.RunUntilLeadershipLostAsync(cts.Token);
        await leading.Task.WaitAsync(TimeSpan.FromSeconds(60), Ct);
        var lease = await client.CoordinationV1.ReadNamespacedLeaseAsync("dolly-controllers", "kube-system", cancellationToken: Ct);
        Assert.Equal("replica-1", lease.Spec.HolderIdentity);
        Assert.NotNull(lease.Spec.RenewTime);
        await cts.CancelAsync();
        try
        {
            await run.WaitAsync(TimeSpan.FromSeconds(60), Ct);
        }
        catch (OperationCanceledException)
        {
            // Cancelling the elector may surface as cancellation or as a normal return.
        }
    }

    [Fact]
    public async Task EventsAndStatus_WrittenByAController_ShowInKubectl()
    {
        using var client = fx.Client();
        await client.CoreV1.CreateNamespaceAsync(new V1Namespace { Metadata = new V1ObjectMeta { Name = "ctrl" } }, cancellationToken: Ct);
        var snapshot = new Dictionary<string, object>
        {
            ["apiVersion"] = "snapshot.storage.k8s.io/v1",
            ["kind"] = "VolumeSnapshot",
            ["metadata"] = new Dictionary<string, object> { ["name"] = "s" },
            ["spec"] = new Dictionary<string, object> { ["source"] = new Dictionary<string, object> { ["persistentVolumeClaimName"] = "data" } },
        };
        var created = (JsonElement)await client.CustomObjects.CreateNamespacedCustomObjectAsync(snapshot, "snapshot.storage.k8s.io", "v1", "ctrl", "volumesnapshots", cancellationToken: Ct);
        string uid = created.GetProperty("metadata").GetProperty("uid").GetString()!;
        await client.CoreV1.CreateNamespacedEventAsync(new Corev1Event
        {
            Metadata = new V1ObjectMeta { GenerateName = "s." },
            InvolvedObject = new V1ObjectReference { Kind = "VolumeSnapshot", Name = "s", NamespaceProperty = "ctrl", Uid = uid, ApiVersion = "snapshot.storage.k8s.io/v1" },
            Reason = "SnapshotReady",
            Message = "Snapshot ctrl/s is ready to use.",
            Type = "Normal",
            Source = new V1EventSource { Component = "dolly-snapshot-controller" },
            FirstTimestamp = DateTime.UtcNow,
            LastTimestamp = DateTime.UtcNow,
            EventTime = DateTime.UtcNow,
            ReportingComponent = "dolly-snapshot-controller",
            ReportingInstance = "replica-1",
            Count = 1,
        }, "ctrl", cancellationToken: Ct);
        var status = new V1Patch("""{"status":{"readyToUse":true,"restoreSize":"1Gi"}}""", V1Patch.PatchType.MergePatch);
        await client.CustomObjects.PatchNamespacedCustomObjectStatusAsync(status, "snapshot.storage.k8s.io", "v1", "ctrl", "volumesnapshots", "s", cancellationToken: Ct);

        var describe = (await fx.KubectlAsync("describe", "vs", "s", "-n", "ctrl")).ShouldSucceed();
        Assert.Matches(@"Ready To Use:\s+true", describe.Stdout);
        Assert.Matches(@"Normal\s+SnapshotReady\s+\S+\s+dolly-snapshot-controller\s+Snapshot ctrl/s is ready to use\.", describe.Stdout);
    }
}
