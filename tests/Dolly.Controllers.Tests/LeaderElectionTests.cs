using k8s;
using k8s.Models;
using Microsoft.Extensions.Logging.Abstractions;

namespace Dolly.Controllers.Tests;

/// <summary>
/// Two replicas of the controllers against one API server and driver: only the Lease holder acts, and when it
/// stops the other takes the Lease and carries on.
/// </summary>
public sealed class LeaderElectionTests : IAsyncLifetime
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    private DriverStack? _stack;

    public async ValueTask InitializeAsync() => _stack = await DriverStack.StartAsync("dolly-ctrl-", Ct);

    public async ValueTask DisposeAsync()
    {
        if (_stack is not null)
        {
            await _stack.DisposeAsync();
        }
    }

    private Kubernetes Client() => _stack!.NewClient();

    private sealed record Replica(string Identity, CancellationTokenSource Stop, Task Run, Kubernetes Client, Grpc.Net.Client.GrpcChannel Channel) : IDisposable
    {
        public void Dispose()
        {
            Stop.Dispose();
            Client.Dispose();
            Channel.Dispose();
        }
    }

    private Replica Start(string identity)
    {
        var client = Client();
        var channel = DollyControllers.ConnectCsi(_stack!.CsiSocket);
        var stop = CancellationTokenSource.CreateLinkedTokenSource(Ct);
        var options = new ControllerOptions
        {
            BindVolumes = true,
            LeaderElection = true,
            Identity = identity,
            // A deadline a busy machine cannot miss while leading: with 1.5 s, a stalled renewal handed the Lease to
            // the other replica mid-test, and events then came from both. The standby's takeover waits out
            // LeaseDuration, so it stays well under the waits below.
            LeaseDuration = TimeSpan.FromSeconds(12),
            RenewDeadline = TimeSpan.FromSeconds(8),
            RetryPeriod = TimeSpan.FromMilliseconds(200),
        };
        var run = DollyControllers.RunAsync(client, channel.CreateCallInvoker(), options, NullLoggerFactory.Instance, stop.Token);
        return new Replica(identity, stop, run, client, channel);
    }

    private static Task<T> Until<T>(Func<Task<T?>> probe, string what)
        where T : class => Until(probe, () => what);

    private static async Task<T> Until<T>(Func<Task<T?>> probe, Func<string> what)
        where T : class
    {
        var deadline = DateTime.UtcNow.AddSeconds(60);
        while (DateTime.UtcNow < deadline)
        {
            if (await probe() is { } value)
            {
                return value;
            }

            await Task.Delay(100, Ct);
        }

        throw new TimeoutException($"{what()} within 60 s");
    }

    private static async Task<string?> Holder(Kubernetes client)
    {
        try
        {
            return (await client.CoordinationV1.ReadNamespacedLeaseAsync("dolly-controllers", "dolly-system", cancellationToken: Ct)).Spec.HolderIdentity;
        }
        catch (k8s.Autorest.HttpOperationException ex) when (ex.Response.StatusCode == System.Net.HttpStatusCode.NotFound)
        {
            return null;
        }
    }

    private static Task<V1PersistentVolumeClaim> CreateClaimAsync(Kubernetes client, string name) =>
        client.CoreV1.CreateNamespacedPersistentVolumeClaimAsync(
            DriverStack.Claim(name, "1Gi"),
            "default",
            cancellationToken: Ct);

    private static Task<V1PersistentVolumeClaim> BoundAsync(Kubernetes client, string name) =>
        Until<V1PersistentVolumeClaim>(
            async () =>
            {
                var claim = await client.CoreV1.ReadNamespacedPersistentVolumeClaimAsync(name, "default", cancellationToken: Ct);
                return claim.Status?.Phase == "Bound" ? claim : null;
            },
            $"claim {name} never bound");

    [Fact]
    public async Task OnlyTheLeaseHolderActs_AndTheOtherTakesOverWhenItStops()
    {
        using var admin = Client();
        await admin.CoreV1.CreateNamespaceAsync(new V1Namespace { Metadata = new V1ObjectMeta { Name = "dolly-system" } }, cancellationToken: Ct);
        await admin.StorageV1.CreateStorageClassAsync(new V1StorageClass { Metadata = new V1ObjectMeta { Name = "dolly" }, Provisioner = "csi.dolly.io" }, cancellationToken: Ct);

        using var one = Start("replica-one");
        using var two = Start("replica-two");
        string leader = await Until(() => Holder(admin), "nobody took the lease");
        var (active, standby) = leader == one.Identity ? (one, two) : (two, one);

        await CreateClaimAsync(admin, "first");
        await BoundAsync(admin, "first");
        var events = await admin.CoreV1.ListNamespacedEventAsync("default", fieldSelector: "involvedObject.name=first", cancellationToken: Ct);
        Assert.NotEmpty(events.Items);
        Assert.All(events.Items, e => Assert.Equal(active.Identity, e.ReportingInstance));
        Assert.Single((await admin.CoreV1.ListPersistentVolumeAsync(cancellationToken: Ct)).Items);

        // The leader stops; once its lease runs out the standby holds it and provisions.
        await active.Stop.CancelAsync();
        await active.Run.WaitAsync(TimeSpan.FromSeconds(60), Ct);
        string? holder = null;
        await Until(async () => (holder = await Holder(admin)) == standby.Identity ? "yes" : null, () => $"the standby never took the lease (holder: {holder})");
        await CreateClaimAsync(admin, "second");
        await BoundAsync(admin, "second");
        var second = await admin.CoreV1.ListNamespacedEventAsync("default", fieldSelector: "involvedObject.name=second", cancellationToken: Ct);
        Assert.All(second.Items, e => Assert.Equal(standby.Identity, e.ReportingInstance));
        Assert.Equal(2, (await admin.CoreV1.ListPersistentVolumeAsync(cancellationToken: Ct)).Items.Count);

        await standby.Stop.CancelAsync();
        await standby.Run.WaitAsync(TimeSpan.FromSeconds(60), Ct);
    }
}
