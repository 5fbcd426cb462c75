using Dolly.Csi.NodeV1;
using Grpc.Core;

namespace Dolly.Csi;

/// <summary>
/// dolly.node.v1.DollyNode: a freeze window as one bidirectional stream (freeze, frozen, thaw, thawed), so the
/// file system is frozen only while its caller is connected and at most until the deadline; the caller cuts
/// the snapshot between <c>frozen</c> and <c>thaw</c>. Served wherever the CSI Node service is.
/// </summary>
internal sealed class NodeFreezeService(NodeFreezer freezer) : DollyNode.DollyNodeBase
{
    public override async Task FreezeWindow(IAsyncStreamReader<FreezeWindowRequest> requestStream, IServerStreamWriter<FreezeWindowResponse> responseStream, ServerCallContext context)
    {
        var ct = context.CancellationToken;
        if (!await requestStream.MoveNext(ct).ConfigureAwait(false))
        {
            throw CsiStatus.InvalidArgument("FreezeWindow: the stream ended before a freeze request");
        }

        if (requestStream.Current.Freeze is not { } freeze)
        {
            throw CsiStatus.InvalidArgument($"FreezeWindow: the first message must be freeze, not {requestStream.Current.StepCase}");
        }

        var timeout = freeze.TimeoutMs == 0 ? NodeFreezer.DefaultTimeout : TimeSpan.FromMilliseconds(freeze.TimeoutMs);
        using var window = freezer.Freeze(freeze.VolumeId, timeout);
        await responseStream.WriteAsync(new FreezeWindowResponse { Frozen = new FreezeWindowResponse.Types.Frozen { MountPath = window.MountPath } }, ct).ConfigureAwait(false);

        FreezeWindowRequest.StepOneofCase next;
        try
        {
            next = await requestStream.MoveNext(ct).ConfigureAwait(false) ? requestStream.Current.StepCase : FreezeWindowRequest.StepOneofCase.None;
        }
        catch (Exception e) when (e is OperationCanceledException or IOException or RpcException)
        {
            // The caller went away: thaw at once (the using does), nobody to answer.
            return;
        }

        var result = window.Thaw();
        if (next == FreezeWindowRequest.StepOneofCase.Freeze)
        {
            throw CsiStatus.InvalidArgument($"FreezeWindow '{freeze.VolumeId}': a second freeze in one stream; thawed");
        }

        if (next == FreezeWindowRequest.StepOneofCase.Thaw)
        {
            await responseStream.WriteAsync(
                new FreezeWindowResponse
                {
                    Thawed = new FreezeWindowResponse.Types.Thawed { FrozenMicroseconds = result.FrozenMicroseconds, DeadlineExpired = result.DeadlineExpired },
                },
                ct).ConfigureAwait(false);
        }
    }
}
