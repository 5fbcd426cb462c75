using System.Diagnostics;
using Dolly.Api;
using k8s;
using k8s.Models;
using Microsoft.Extensions.Logging.Abstractions;

namespace Dolly.Controllers.Tests;

/// <summary>
/// Leader election across an API server outage: the server is stopped (connections refused) and started
/// again on the same state and port. An outage shorter than RenewDeadline costs the leader nothing; a longer
/// one ends its leadership only once RenewDeadline has passed, and a standby then takes the Lease.
/// </summary>
public sealed class LeaseOutageTests : IAsyncLifetime
{
    private static readonly TimeSpan RetryPeriod = TimeSpan.FromMilliseconds(250);
    private static readonly TimeSpan RenewDeadline = TimeSpan.FromSeconds(4);

    // Far above RenewDeadline: the check that the leader gave up before a standby could take the Lease must
    // leave room for a busy machine's late timers, not only for the deadline itself.
    private static readonly TimeSpan LeaseDuration = TimeSpan.FromSeconds(15);

    // For the short outage: stopping, staying down and starting again must all fit in the deadline, and
    // starting an API server on a busy machine can take seconds.
    private static readonly TimeSpan LongRenewDeadline = TimeSpan.FromSeconds(30);
    private static readonly TimeSpan LongLeaseDuration = TimeSpan.FromSeconds(45);
    private static readonly TimeSpan ShortOutage = TimeSpan.FromSeconds(2);

    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    private readonly string _dir = Path.Combine(Path.GetTempPath(), "dolly-lease-" + Guid.NewGuid().ToString("N")[..10]);
    private ApiServer? _api;
    private int _port;

    public async ValueTask InitializeAsync()
    {
        _api = new ApiServer(new ApiServerOptions(Path.Combine(_dir, "api"), "127.0.0.1", 0));
        await _api.StartAsync(Ct);
        _port = _api.Url!.Port;
        using var admin = Client();
        await admin.CoreV1.CreateNamespaceAsync(new V1Namespace { Metadata = new V1ObjectMeta { Name = "dolly-system" } }, cancellationToken: Ct);
    }

    public async ValueTask DisposeAsync()
    {
        if (_api is not null)
        {
            await _api.DisposeAsync();
        }

        Directory.Delete(_dir, recursive: true);
    }

    private Kubernetes Client() => new(KubernetesClientConfiguration.BuildConfigFromConfigFile(Path.Combine(_dir, "api", "kubeconfig")));

    private async Task StopApiAsync()
    {
        await _api!.DisposeAsync();
        _api = null;
    }

    private async Task StartApiAsync()
    {
        // Same state and port: clients keep their kubeconfig, as across a real API server restart.
        _api = new ApiServer(new ApiServerOptions(Path.Combine(_dir, "api"), "127.0.0.1", _port));
        await _api.StartAsync(Ct);
    }

    private sealed record Candidate(string Identity, Kubernetes Client, CancellationTokenSource Stop, Task<bool> Run, TaskCompletionSource Leading) : IDisposable
    {
        public void Dispose()
        {
            Stop.Dispose();
            Client.Dispose();
        }
    }

    private Candidate Start(string identity, TimeSpan? renewDeadline = null, TimeSpan? leaseDuration = null)
    {
        var client = Client();
        var stop = CancellationTokenSource.CreateLinkedTokenSource(Ct);
        var leading = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var options = new ControllerOptions
        {
            Identity = identity,
            LeaseDuration = leaseDuration ?? LeaseDuration,
            RenewDeadline = renewDeadline ?? RenewDeadline,
            RetryPeriod = RetryPeriod,
        };
        var run = DollyControllers.RunWhileLeadingAsync(
            client,
            options,
            NullLoggerFactory.Instance,
            async token =>
            {
                leading.TrySetResult();
                await Task.Delay(Timeout.Infinite, token).ContinueWith(_ => { }, TaskScheduler.Default);
            },
            stop.Token);
        return new Candidate(identity, client, stop, run, leading);
    }

    private async Task<V1LeaseSpec> LeaseAsync()
    {
        using var admin = Client();
        return (await admin.CoordinationV1.ReadNamespacedLeaseAsync("dolly-controllers", "dolly-system", cancellationToken: Ct)).Spec;
    }

    [Fact]
    public async Task AnOutageShorterThanRenewDeadline_TheLeaderKeepsTheLease()
    {
        // With a 4 s deadline, a 2 s outage plus a slow stop and start could outlast it on a busy machine and the
        // leader would rightly give up; the outage stays short, the deadline is what leaves room.
        using var leader = Start("leader", LongRenewDeadline, LongLeaseDuration);
        await leader.Leading.Task.WaitAsync(TimeSpan.FromSeconds(60), Ct);
        var before = await LeaseAsync();

        await StopApiAsync();
        await Task.Delay(ShortOutage, Ct);
        Assert.False(leader.Run.IsCompleted, "the leader gave up during a short outage");
        await StartApiAsync();

        // The leader renews again: the same holder, a later renewal, no new transition.
        var clock = Stopwatch.StartNew();
        V1LeaseSpec after;
        do
        {
            await Task.Delay(RetryPeriod, Ct);
            after = await LeaseAsync();
            Assert.True(clock.Elapsed < TimeSpan.FromSeconds(60), $"the leader never renewed after the outage (last renewal {after.RenewTime:O}, before the outage {before.RenewTime:O})");
        }
        while (after.RenewTime <= before.RenewTime);

        Assert.Equal("leader", after.HolderIdentity);
        Assert.Equal(before.LeaseTransitions, after.LeaseTransitions);
        Assert.Equal(before.AcquireTime, after.AcquireTime);
        Assert.False(leader.Run.IsCompleted, "the leader stopped leading");

        await leader.Stop.CancelAsync();
        Assert.False(await leader.Run.WaitAsync(TimeSpan.FromSeconds(30), Ct));
    }

    [Fact]
    public async Task AnOutageLongerThanRenewDeadline_TheLeaderStopsAtTheDeadline_AndAStandbyTakesOver()
    {
        using var first = Start("first");
        await first.Leading.Task.WaitAsync(TimeSpan.FromSeconds(60), Ct);
        using var standby = Start("standby");
        await Task.Delay(RetryPeriod * 4, Ct);
        Assert.False(standby.Leading.Task.IsCompleted, "the standby led while the leader held the Lease");

        await StopApiAsync();
        Assert.True(await first.Run.WaitAsync(TimeSpan.FromSeconds(60), Ct), "the leader must report the Lease lost");
        var gaveUp = DateTimeOffset.UtcNow;
        Assert.False(standby.Leading.Task.IsCompleted);

        await StartApiAsync();

        // Measured from the leader's last renewal as the Lease records it (not from the end of the stop, which on a
        // busy machine can come well after that renewal): it kept trying through the outage and gave up only at
        // the deadline, before any other replica could take the Lease.
        var last = await LeaseAsync();
        Assert.Equal("first", last.HolderIdentity);
        var renewed = last.RenewTime!.Value;
        var held = gaveUp - new DateTimeOffset(renewed.Kind == DateTimeKind.Local ? renewed.ToUniversalTime() : DateTime.SpecifyKind(renewed, DateTimeKind.Utc));
        Assert.InRange(held, RenewDeadline, LeaseDuration);
        await standby.Leading.Task.WaitAsync(LeaseDuration + TimeSpan.FromSeconds(60), Ct);
        var lease = await LeaseAsync();
        Assert.Equal("standby", lease.HolderIdentity);
        Assert.True(lease.LeaseTransitions >= 1, $"taking over is a transition ({lease.LeaseTransitions})");

        await standby.Stop.CancelAsync();
        Assert.False(await standby.Run.WaitAsync(TimeSpan.FromSeconds(30), Ct));
    }
}
