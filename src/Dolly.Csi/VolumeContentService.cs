using Dolly.Nbd;
using Google.Protobuf.WellKnownTypes;
using Grpc.Core;
using P = Dolly.V1;

namespace Dolly.Csi;

/// <summary>
/// dolly.v1.VolumeContentService over <see cref="ContentRequests"/>: volume and snapshot ids are the CSI ids, which
/// are the pool names.
/// </summary>
internal sealed class VolumeContentService(ContentRequests requests) : P.VolumeContentService.VolumeContentServiceBase
{
    public override Task<P.ContentRequestStatus> ReplaceContent(P.ReplaceContentRequest request, ServerCallContext context)
    {
        Require(request.RequestId, "request_id");
        Require(request.VolumeId, "volume_id");
        Require(request.SnapshotId, "snapshot_id");
        try
        {
            if (request.DryRun)
            {
                requests.Validate(request.RequestId, request.VolumeId, request.SnapshotId, request.AllowForeignSnapshot, request.UnchangedSinceSnapshotId);
                return Task.FromResult(new P.ContentRequestStatus { RequestId = request.RequestId, VolumeId = request.VolumeId, SnapshotId = request.SnapshotId });
            }

            var r = requests.Submit(request.RequestId, request.VolumeId, request.SnapshotId, request.AllowForeignSnapshot, request.UnchangedSinceSnapshotId);
            return Task.FromResult(ToStatus(r));
        }
        catch (ContentRequestException ex)
        {
            throw CsiStatus.Fail(
                ex.Refusal switch
                {
                    ContentRequestRefusal.Invalid => StatusCode.InvalidArgument,
                    ContentRequestRefusal.NotFound => StatusCode.NotFound,
                    ContentRequestRefusal.Conflict => StatusCode.AlreadyExists,
                    ContentRequestRefusal.TooLarge => StatusCode.OutOfRange,
                    ContentRequestRefusal.Busy => StatusCode.Aborted,
                    _ => StatusCode.FailedPrecondition,
                },
                $"ReplaceContent: {ex.Message}");
        }
    }

    public override Task<P.ContentRequestStatus> GetContentRequest(P.GetContentRequestRequest request, ServerCallContext context)
    {
        Require(request.RequestId, "request_id");
        var r = requests.Get(request.RequestId) ?? throw CsiStatus.NotFound($"GetContentRequest: no content request '{request.RequestId}'");
        return Task.FromResult(ToStatus(r));
    }

    public override Task<P.ContentRequestStatus> DeleteContentRequest(P.DeleteContentRequestRequest request, ServerCallContext context)
    {
        Require(request.RequestId, "request_id");
        var r = requests.Delete(request.RequestId);
        return Task.FromResult(r is null ? new P.ContentRequestStatus { RequestId = request.RequestId } : ToStatus(r, withHolders: false));
    }

    public override Task<P.GetVolumeHoldersResponse> GetVolumeHolders(P.GetVolumeHoldersRequest request, ServerCallContext context)
    {
        Require(request.VolumeId, "volume_id");
        if (!requests.VolumeExists(request.VolumeId))
        {
            throw CsiStatus.NotFound($"GetVolumeHolders: no volume '{request.VolumeId}'");
        }

        var response = new P.GetVolumeHoldersResponse();
        response.Holders.Add(requests.HoldersOf(request.VolumeId).Select(ToHolder));
        return Task.FromResult(response);
    }

    private static void Require(string value, string field)
    {
        if (string.IsNullOrEmpty(value))
        {
            throw CsiStatus.InvalidArgument($"{field} is required");
        }
    }

    private P.ContentRequestStatus ToStatus(ContentRequest r, bool withHolders = true)
    {
        var status = new P.ContentRequestStatus
        {
            RequestId = r.Id,
            VolumeId = r.Volume,
            SnapshotId = r.Snapshot,
            AllowForeignSnapshot = r.AllowForeign,
            UnchangedSinceSnapshotId = r.UnchangedSince ?? string.Empty,
            Phase = r.Phase switch
            {
                ContentRequestPhase.Succeeded => P.ContentRequestPhase.Succeeded,
                ContentRequestPhase.Failed => P.ContentRequestPhase.Failed,
                ContentRequestPhase.Withdrawn => P.ContentRequestPhase.Withdrawn,
                _ => P.ContentRequestPhase.Pending,
            },
            RequestedAt = Timestamp.FromDateTimeOffset(r.RequestedAt),
            Message = r.Message ?? string.Empty,
        };
        if (r.CompletedAt is { } done)
        {
            status.CompletedAt = Timestamp.FromDateTimeOffset(done);
        }

        if (withHolders && !r.IsFinished)
        {
            status.Holders.Add(requests.HoldersOf(r.Volume).Select(ToHolder));
        }

        return status;
    }

    private static P.VolumeHolder ToHolder(ExportHolder h) => new() { Client = h.ToString(), Since = Timestamp.FromDateTimeOffset(h.Since) };
}
