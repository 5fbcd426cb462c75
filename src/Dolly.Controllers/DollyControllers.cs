using System.Net.Sockets;
using Dolly.Controllers.Metrics;
using Dolly.Controllers.Runtime;
using Dolly.Controllers.Schedules;
using Grpc.Core;
using Grpc.Core.Interceptors;
using Grpc.Net.Client;
using k8s;
using Microsoft.Extensions.Logging;

namespace Dolly.Controllers;

/// <summary>
/// Runs Dolly's controllers against an API server (the embedded one or a real cluster's) and a CSI
/// driver: the snapshot controller, the csi-snapshotter's part, the provisioner with its source guard
/// and volume reaper, the resizer, snapshot schedules, golden snapshots and, when <see cref="ControllerOptions.BindVolumes"/>, the volume
/// binder and the StatefulSet claim maker. With <see cref="ControllerOptions.LeaderElection"/> they run only while this replica holds the
/// Lease, and <see cref="RunAsync"/> returns when it loses it (the process should then exit and restart).
/// </summary>
public static class DollyControllers
{
    /// <summary>Runs until cancelled (or, with leader election, until the lease is lost); returns normally either way.</summary>
    public static async Task RunAsync(IKubernetes client, CallInvoker csi, ControllerOptions options, ILoggerFactory loggers, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(client);
        ArgumentNullException.ThrowIfNull(csi);
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(loggers);
        if (!options.LeaderElection)
        {
            await RunControllersAsync(client, csi, options, loggers, cancellationToken).ConfigureAwait(false);
            return;
        }

        await RunWhileLeadingAsync(client, options, loggers, leading => RunControllersAsync(client, csi, options, loggers, leading), cancellationToken).ConfigureAwait(false);
    }

    /// <summary>
    /// Waits for the Lease named by <paramref name="options"/>, then runs <paramref name="work"/> with a token that
    /// is cancelled when leadership is lost or the caller cancels. Returns true when it ended because this replica
    /// lost the Lease, false when the caller cancelled; an exception from the work ends the election and is rethrown.
    /// </summary>
    public static Task<bool> RunWhileLeadingAsync(IKubernetes client, ControllerOptions options, ILoggerFactory loggers, Func<CancellationToken, Task> work, CancellationToken cancellationToken) =>
        RunWhileLeadingAsync(client, options, loggers, TimeProvider.System, work, cancellationToken);

    /// <inheritdoc cref="RunWhileLeadingAsync(IKubernetes, ControllerOptions, ILoggerFactory, Func{CancellationToken, Task}, CancellationToken)"/>
    public static async Task<bool> RunWhileLeadingAsync(IKubernetes client, ControllerOptions options, ILoggerFactory loggers, TimeProvider time, Func<CancellationToken, Task> work, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(client);
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(loggers);
        ArgumentNullException.ThrowIfNull(time);
        ArgumentNullException.ThrowIfNull(work);
        var logger = loggers.CreateLogger(typeof(DollyControllers).FullName!);
        var elector = new LeaseElector(client, options, time, logger);
        try
        {
            await elector.AcquireAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
            return false;
        }

        using var leading = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        var running = Task.Run(() => work(leading.Token), CancellationToken.None);
        var renewing = elector.RenewUntilLostAsync(leading.Token);
        bool lost = false;
        try
        {
            // Work that ends by itself (a failure) ends the election too.
            if (await Task.WhenAny(running, renewing).ConfigureAwait(false) == renewing && renewing.IsCompletedSuccessfully)
            {
                lost = true;
                ControllerLog.LostLeadership(logger, options.Identity, $"{options.LeaseNamespace}/{options.LeaseName}");
            }
        }
        finally
        {
            await leading.CancelAsync().ConfigureAwait(false);
            try
            {
                await renewing.ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
            }

            await running.ConfigureAwait(false);
        }

        return lost;
    }

    /// <summary>A gRPC channel to a CSI driver's unix socket.</summary>
    public static GrpcChannel ConnectCsi(string socketPath)
    {
        ArgumentException.ThrowIfNullOrEmpty(socketPath);
        string path = Path.GetFullPath(socketPath);
        var handler = new SocketsHttpHandler
        {
            ConnectCallback = async (_, ct) =>
            {
                var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
                try
                {
                    await socket.ConnectAsync(new UnixDomainSocketEndPoint(path), ct).ConfigureAwait(false);
                    return new NetworkStream(socket, ownsSocket: true);
                }
                catch
                {
                    socket.Dispose();
                    throw;
                }
            },
        };
        return GrpcChannel.ForAddress("http://localhost", new GrpcChannelOptions { HttpHandler = handler, DisposeHttpClient = true });
    }

    private static async Task RunControllersAsync(IKubernetes client, CallInvoker csi, ControllerOptions options, ILoggerFactory loggers, CancellationToken ct)
    {
        if (options.Metrics is { } metrics)
        {
            csi = csi.Intercept(new CsiMetricsInterceptor(metrics, options.DriverName));
        }

        var cluster = new Cluster(client, loggers);
        options.CacheCreated?.Invoke(cluster);
        var events = new EventRecorder(client, "dolly-controllers", options.Identity, loggers.CreateLogger<EventRecorder>(), options.TimeProvider);
        var context = new ControllerContext(cluster, events, csi, options, loggers);
        var snapshots = new SnapshotController(context);
        var reconcilers = new List<IController>
        {
            snapshots,
            snapshots.SourceClaims,
            new ContentController(context),
            new Provisioner(context),
            new SourceGuard(context),
            new VolumeReaper(context),
            new Resizer(context),
            new GroupSnapshotController(context),
            new GroupContentController(context),
        };

        // Made now, so its change handlers see every event; run once the dolly.io informers have listed.
        var schedules = new ScheduleController(context);
        var reverts = new Revert.RevertController(context);
        var goldens = new Golden.GoldenController(context);
        var repositories = new Repository.RepositoryController(context);
        var transfers = new Repository.TransferController(context);
        StatefulSetClaims? statefulSets = null;
        if (options.BindVolumes)
        {
            reconcilers.Add(new VolumeBinder(context));
            statefulSets = new StatefulSetClaims(context);
        }

        if (options.Metrics is { } meters)
        {
            foreach (IController controller in (IEnumerable<IController>)[.. reconcilers, schedules, reverts, goldens, .. (statefulSets is null ? [] : (IController[])[statefulSets])])
            {
                controller.Instrument(meters);
            }
        }

        using var stop = CancellationTokenSource.CreateLinkedTokenSource(ct);
        var informers = cluster.All.Concat(cluster.Own).Select(i => i.RunAsync(stop.Token)).ToList();
        try
        {
            // Reconcile only once every cache holds a full list, so nothing is judged on a partial view.
            await Task.WhenAll(cluster.All.Select(i => i.Synced)).WaitAsync(ct).ConfigureAwait(false);
            var workers = reconcilers.Select(r => r.RunAsync(options.Workers, stop.Token)).ToList();
            workers.Add(RunWhenSyncedAsync(schedules, [cluster.Schedules, cluster.ClusterSchedules], options.Workers, stop.Token));
            workers.Add(RunWhenSyncedAsync(reverts, [cluster.Reverts], options.Workers, stop.Token));
            workers.Add(RunWhenSyncedAsync(goldens, [cluster.Goldens], options.Workers, stop.Token));
            workers.Add(RunWhenSyncedAsync(repositories, [cluster.Repositories], options.Workers, stop.Token));
            workers.Add(RunWhenSyncedAsync(transfers, [cluster.Repositories], options.Workers, stop.Token));
            if (statefulSets is not null)
            {
                workers.Add(statefulSets.RunWithInformerAsync(options.Workers, stop.Token));
            }
            var resync = ResyncAsync(cluster, options.Resync, stop.Token);
            await Task.WhenAll([.. workers, resync]).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (ct.IsCancellationRequested)
        {
        }
        finally
        {
            await stop.CancelAsync().ConfigureAwait(false);
            await Task.WhenAll(informers).ConfigureAwait(false);
        }
    }

    /// <summary>Runs a controller once its informers have listed; until then (their CRDs missing) it waits, and the rest run.</summary>
    private static async Task RunWhenSyncedAsync(Reconciler reconciler, IEnumerable<IInformer> informers, int workers, CancellationToken ct)
    {
        try
        {
            await Task.WhenAll(informers.Select(i => i.Synced)).WaitAsync(ct).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            reconciler.Queue.Dispose();
            return;
        }

        await reconciler.RunAsync(workers, ct).ConfigureAwait(false);
    }

    /// <summary>Every so often, every object is looked at again, so nothing waits forever on a missed change.</summary>
    private static async Task ResyncAsync(Cluster cluster, TimeSpan every, CancellationToken ct)
    {
        using var timer = new PeriodicTimer(every);
        try
        {
            while (await timer.WaitForNextTickAsync(ct).ConfigureAwait(false))
            {
                cluster.Touch();
            }
        }
        catch (OperationCanceledException)
        {
        }
    }
}
