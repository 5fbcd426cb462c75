using Dolly.Csi.V1;
using Grpc.Core;
using Microsoft.Extensions.Logging;

namespace Dolly.Controllers.Runtime;

/// <summary>What every controller shares: the cluster cache, the event recorder, the driver and the options.</summary>
internal sealed class ControllerContext
{
    public ControllerContext(Cluster cluster, EventRecorder events, CallInvoker csi, ControllerOptions options, ILoggerFactory loggers)
    {
        Cluster = cluster;
        Events = events;
        Csi = new Controller.ControllerClient(csi);
        Groups = new GroupController.GroupControllerClient(csi);
        CsiInvoker = csi;
        Options = options;
        Loggers = loggers;
    }

    public Cluster Cluster { get; }

    public EventRecorder Events { get; }

    /// <summary>The driver's CSI Controller service.</summary>
    public Controller.ControllerClient Csi { get; }

    /// <summary>The driver's CSI GroupController service.</summary>
    public GroupController.GroupControllerClient Groups { get; }
    /// <summary>The driver's connection, for its other services (SnapshotMetadata).</summary>
    public CallInvoker CsiInvoker { get; }

    public ControllerOptions Options { get; }

    public ILoggerFactory Loggers { get; }

    /// <summary>Call options with the CSI deadline.</summary>
    public CallOptions CsiCall(CancellationToken cancellationToken) =>
        new(deadline: DateTime.UtcNow + Options.CsiTimeout, cancellationToken: cancellationToken);

    /// <summary>A CSI error as upstream sidecars print it.</summary>
    public static string Describe(RpcException ex) => $"rpc error: code = {ex.StatusCode} desc = {ex.Status.Detail}";
}
