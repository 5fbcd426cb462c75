using System.Globalization;
using Dolly.Controllers.Revert;
using Dolly.Controllers.Runtime;
using Dolly.V1;
using Grpc.Core;

namespace Dolly.Controllers.Golden;

/// <summary>
/// <see cref="IGoldenRefresher"/> over the driver's dolly.v1.VolumeContentService, the same durable
/// replace-when-detached requests a VolumeRevert uses. A golden revision is in general not of the consumer
/// volume's lineage (a snapshot made outside Kubernetes, a source claim the consumer was never cloned from), so the
/// request allows a foreign snapshot: the controller only ever asks for a revision this golden snapshot published,
/// for a claim that opted in.
/// </summary>
internal sealed class GoldenRefresher(ControllerContext context) : IGoldenRefresher
{
    private readonly VolumeContentService.VolumeContentServiceClient _client = new(context.CsiInvoker);

    /// <summary>The driver's request id: unique per claim and revision, within the driver's 128 characters.</summary>
    internal static string RequestId(string claimUid, int revision) =>
        "golden-" + claimUid + "-r" + revision.ToString(CultureInfo.InvariantCulture);

    public async Task<GoldenRefreshResult> RequestAsync(GoldenRefresh refresh, CancellationToken cancellationToken)
    {
        string id = RequestId(refresh.ClaimUid, refresh.Revision);
        ContentRequestStatus status;
        try
        {
            status = await _client.ReplaceContentAsync(
                new ReplaceContentRequest { RequestId = id, VolumeId = refresh.VolumeHandle, SnapshotId = refresh.SnapshotHandle, AllowForeignSnapshot = true },
                context.CsiCall(cancellationToken)).ConfigureAwait(false);
        }
        catch (RpcException ex) when (!cancellationToken.IsCancellationRequested)
        {
            return Refusal(ex);
        }

        switch (status.Phase)
        {
            case ContentRequestPhase.Succeeded:
                return new GoldenRefreshResult(GoldenRefreshState.Done, null);
            case ContentRequestPhase.Failed or ContentRequestPhase.Withdrawn:
                // Finished without changing the volume: forgotten, so that the next look asks afresh rather than read
                // the same failure back forever.
                var forgotten = await ReleaseAsync(refresh.ClaimUid, refresh.Revision, cancellationToken).ConfigureAwait(false);
                return forgotten.State == GoldenRefreshState.Done
                    ? forgotten
                    : new GoldenRefreshResult(GoldenRefreshState.Refused, string.IsNullOrEmpty(status.Message) ? "the driver did not apply it" : status.Message);
            default:
                string held = status.Holders.Count > 0
                    ? "held by " + string.Join(", ", status.Holders.Select(h => h.Client))
                    : string.IsNullOrEmpty(status.Message) ? "not held, about to be applied" : status.Message;
                return new GoldenRefreshResult(GoldenRefreshState.Requested, held);
        }
    }

    public async Task<GoldenRefreshResult> ReleaseAsync(string claimUid, int revision, CancellationToken cancellationToken)
    {
        try
        {
            var status = await _client.DeleteContentRequestAsync(
                new DeleteContentRequestRequest { RequestId = RequestId(claimUid, revision) },
                context.CsiCall(cancellationToken)).ConfigureAwait(false);
            return status.Phase == ContentRequestPhase.Succeeded
                ? new GoldenRefreshResult(GoldenRefreshState.Done, null)
                : new GoldenRefreshResult(GoldenRefreshState.Requested, null);
        }
        catch (RpcException ex) when (!cancellationToken.IsCancellationRequested)
        {
            return new GoldenRefreshResult(GoldenRefreshState.Unreachable, Unreachable(ex));
        }
    }

    private static GoldenRefreshResult Refusal(RpcException ex) => ex.StatusCode switch
    {
        // Another content change of the volume (a VolumeRevert, an older refresh) is pending: not an answer about this one.
        StatusCode.Aborted => new GoldenRefreshResult(GoldenRefreshState.Refused, $"another content change of the volume is pending: {ex.Status.Detail}"),
        var code when RevertChecks.IsFinal(code) => new GoldenRefreshResult(GoldenRefreshState.Refused, $"{ex.Status.Detail} ({code})"),
        _ => new GoldenRefreshResult(GoldenRefreshState.Unreachable, Unreachable(ex)),
    };

    private static string Unreachable(RpcException ex) => "the driver cannot be reached: " + ControllerContext.Describe(ex);
}
