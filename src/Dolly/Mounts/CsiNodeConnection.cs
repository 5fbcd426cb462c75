using Dolly.Csi.V1;
using Grpc.Core;
using Grpc.Net.Client;

namespace Dolly.Mounts;

/// <summary>
/// The CSI Node service of a running <c>dolly up</c>, reached as kubelet reaches a driver: gRPC over its unix
/// socket. Every failure comes back as a <see cref="CliFailureException"/> naming the RPC and the volume.
/// </summary>
internal sealed class CsiNodeConnection : IDisposable
{
    private readonly GrpcChannel _channel;
    private readonly Node.NodeClient _node;

    private CsiNodeConnection(string socketPath)
    {
        SocketPath = socketPath;
        _channel = Dolly.Controllers.DollyControllers.ConnectCsi(socketPath);
        _node = new Node.NodeClient(_channel);
    }

    public string SocketPath { get; }

    /// <summary>A connection to the driver at <paramref name="socketPath"/>; fails at once when there is no socket file.</summary>
    public static CsiNodeConnection Open(string socketPath)
    {
        if (!File.Exists(socketPath))
        {
            throw NotRunning(socketPath);
        }

        return new CsiNodeConnection(socketPath);
    }

    public void Dispose() => _channel.Dispose();

    /// <summary>
    /// Asks the driver for its node capabilities, as kubelet does before staging: proves that something
    /// answers on the socket and that it stages volumes, before anything is recorded or changed.
    /// </summary>
    public async Task ProbeAsync(CancellationToken ct)
    {
        var response = await CallAsync("NodeGetCapabilities", () => _node.NodeGetCapabilitiesAsync(new NodeGetCapabilitiesRequest(), cancellationToken: ct).ResponseAsync).ConfigureAwait(false);
        bool stages = response.Capabilities.Any(c => c.Rpc?.Type == NodeServiceCapability.Types.RPC.Types.Type.StageUnstageVolume);
        if (!stages)
        {
            throw new CliFailureException(ExitCodes.NotRunning, $"the CSI driver at {SocketPath} does not stage volumes (no STAGE_UNSTAGE_VOLUME node capability): is it a `dolly up`?");
        }
    }

    public Task StageAsync(NodeStageVolumeRequest request, CancellationToken ct) =>
        CallAsync($"NodeStageVolume of volume {request.VolumeId}", () => _node.NodeStageVolumeAsync(request, cancellationToken: ct).ResponseAsync);

    public Task PublishAsync(NodePublishVolumeRequest request, CancellationToken ct) =>
        CallAsync($"NodePublishVolume of volume {request.VolumeId}", () => _node.NodePublishVolumeAsync(request, cancellationToken: ct).ResponseAsync);

    public Task ExpandAsync(NodeExpandVolumeRequest request, CancellationToken ct) =>
        CallAsync($"NodeExpandVolume of volume {request.VolumeId}", () => _node.NodeExpandVolumeAsync(request, cancellationToken: ct).ResponseAsync);

    public Task UnpublishAsync(string volumeId, string target, CancellationToken ct) =>
        CallAsync($"NodeUnpublishVolume of volume {volumeId}", () => _node.NodeUnpublishVolumeAsync(new NodeUnpublishVolumeRequest { VolumeId = volumeId, TargetPath = target }, cancellationToken: ct).ResponseAsync);

    public Task UnstageAsync(string volumeId, string stagingPath, CancellationToken ct) =>
        CallAsync($"NodeUnstageVolume of volume {volumeId}", () => _node.NodeUnstageVolumeAsync(new NodeUnstageVolumeRequest { VolumeId = volumeId, StagingTargetPath = stagingPath }, cancellationToken: ct).ResponseAsync);

    private async Task<T> CallAsync<T>(string what, Func<Task<T>> call)
    {
        try
        {
            return await call().ConfigureAwait(false);
        }
        catch (RpcException ex) when (ex.StatusCode == StatusCode.Unavailable)
        {
            // Nobody listens on the socket (a stale file left by a dolly up that was killed), or it went away.
            throw NotRunning(SocketPath);
        }
        catch (RpcException ex) when (ex.StatusCode == StatusCode.Cancelled)
        {
            throw new OperationCanceledException($"{what} was cancelled", ex);
        }
        catch (RpcException ex)
        {
            int code = ex.StatusCode switch
            {
                StatusCode.NotFound => ExitCodes.NotFound,
                StatusCode.AlreadyExists => ExitCodes.AlreadyExists,
                StatusCode.InvalidArgument or StatusCode.FailedPrecondition => ExitCodes.InvalidArgument,
                StatusCode.ResourceExhausted => ExitCodes.NoSpace,
                StatusCode.Unimplemented => ExitCodes.NotRunning,
                _ => ExitCodes.IoError,
            };
            string detail = ex.StatusCode == StatusCode.Unimplemented
                ? $"the CSI driver at {SocketPath} has no Node service (is it a `dolly up`?)"
                : ex.Status.Detail;
            throw new CliFailureException(code, $"{what} failed ({ex.StatusCode}): {detail}");
        }
    }

    private static CliFailureException NotRunning(string socketPath) =>
        new(ExitCodes.NotRunning, $"no CSI driver at {socketPath}: is `dolly up` running?");
}
