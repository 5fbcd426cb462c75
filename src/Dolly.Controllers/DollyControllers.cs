using System.Net.Sockets;
using Dolly.Controllers.Runtime;
using Grpc.Core;
using Grpc.Net.Client;
using k8s;
using k8s.LeaderElection;
using k8s.LeaderElection.ResourceLock;
using Microsoft.Extensions.Logging;

namespace Dolly.Controllers;

/// <summary>
/// Runs Dolly's controllers against an API server (the embedded one or a real cluster's) and a CSI
/// driver: the snapshot controller, the csi-snapshotter's part, the provisioner with its source guard
/// and volume reaper, the resizer and, when <see cref="ControllerOptions.BindVolumes"/>, the volume
/// binder. With <see cref="ControllerOptions.LeaderElection"/> they run only while this replica holds the
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

        var logger = loggers.CreateLogger(typeof(DollyControllers).FullName!);
        var leaseLock = new LeaseLock(client, options.LeaseNamespace, options.LeaseName, options.Identity);
        using var elector = new LeaderElector(new LeaderElectionConfig(leaseLock)
        {
            LeaseDuration = options.LeaseDuration,
            RenewDeadline = options.RenewDeadline,
            RetryPeriod = options.RetryPeriod,
        });
        using var leading = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        Task? controllers = null;
        elector.OnStartedLeading += () =>
        {
            ControllerLog.Leading(logger, options.Identity, $"{options.LeaseNamespace}/{options.LeaseName}");
            controllers = RunControllersAsync(client, csi, options, loggers, leading.Token);
        };
        elector.OnStoppedLeading += () =>
        {
            ControllerLog.LostLeadership(logger, options.Identity, $"{options.LeaseNamespace}/{options.LeaseName}");
            leading.Cancel();
        };
        try
        {
            await elector.RunUntilLeadershipLostAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
            // Stopped by the caller, as without leader election.
        }
        finally
        {
            await leading.CancelAsync().ConfigureAwait(false);
            if (controllers is not null)
            {
                await controllers.ConfigureAwait(false);
            }
        }
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
        var cluster = new Cluster(client, loggers);
        var events = new EventRecorder(client, "dolly-controllers", options.Identity, loggers.CreateLogger<EventRecorder>());
        var context = new ControllerContext(cluster, events, csi, options, loggers);
        var reconcilers = new List<Reconciler>
        {
            new SnapshotController(context),
            new ContentController(context),
            new Provisioner(context),
            new SourceGuard(context),
            new VolumeReaper(context),
            new Resizer(context),
        };
        if (options.BindVolumes)
        {
            reconcilers.Add(new VolumeBinder(context));
        }

        using var stop = CancellationTokenSource.CreateLinkedTokenSource(ct);
        var informers = cluster.All.Select(i => i.RunAsync(stop.Token)).ToList();
        try
        {
            // Reconcile only once every cache holds a full list, so nothing is judged on a partial view.
            await Task.WhenAll(cluster.All.Select(i => i.Synced)).WaitAsync(ct).ConfigureAwait(false);
            var workers = reconcilers.Select(r => r.RunAsync(options.Workers, stop.Token)).ToList();
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
