using Dolly.Repository;
using Dolly.Repository.Storage;
using Grpc.Core;
using P = Dolly.V1;

namespace Dolly.Csi;

/// <summary>dolly.v1.SnapshotRepositoryService over <see cref="RepositoryTransfers"/>: snapshot ids are pool names.</summary>
internal sealed class SnapshotRepositoryService(RepositoryTransfers transfers) : P.SnapshotRepositoryService.SnapshotRepositoryServiceBase
{
    public override async Task<P.ProbeRepositoryResponse> ProbeRepository(P.ProbeRepositoryRequest request, ServerCallContext context)
    {
        if (request.Repository is null)
        {
            throw CsiStatus.InvalidArgument("ProbeRepository: repository is required");
        }

        try
        {
            return await transfers.ProbeAsync(request.Repository, request.CreateIfMissing, request.IncludeUsage, context.CancellationToken).ConfigureAwait(false);
        }
        catch (TransferRefusedException ex)
        {
            throw Refused("ProbeRepository", ex);
        }
        catch (RepositoryException ex)
        {
            throw CsiStatus.Fail(
                ex.Error switch
                {
                    RepositoryError.NotARepository or RepositoryError.NotFound => StatusCode.NotFound,
                    RepositoryError.WrongKey => StatusCode.PermissionDenied,
                    RepositoryError.UnsupportedFormat => StatusCode.FailedPrecondition,
                    RepositoryError.Corrupt => StatusCode.DataLoss,
                    RepositoryError.Busy => StatusCode.Aborted,
                    _ => StatusCode.InvalidArgument,
                },
                $"ProbeRepository: {ex.Message}");
        }
        catch (ObjectStoreException ex)
        {
            throw CsiStatus.Fail(
                ex.Error switch
                {
                    ObjectStoreError.Unreachable => StatusCode.Unavailable,
                    ObjectStoreError.AccessDenied => StatusCode.PermissionDenied,
                    ObjectStoreError.NoSuchBucket => StatusCode.NotFound,
                    _ => StatusCode.Internal,
                },
                $"ProbeRepository: {ex.Message}");
        }
    }

    public override Task<P.Transfer> UploadSnapshot(P.UploadSnapshotRequest request, ServerCallContext context)
    {
        Require(request.Repository, request.SnapshotId, "UploadSnapshot", "snapshot_id");
        try
        {
            return Task.FromResult(transfers.StartUpload(request.Repository, request.SnapshotId, request.ExpectedRepositoryId));
        }
        catch (TransferRefusedException ex)
        {
            throw Refused("UploadSnapshot", ex);
        }
    }

    public override Task<P.Transfer> GetUpload(P.GetUploadRequest request, ServerCallContext context) =>
        string.IsNullOrEmpty(request.SnapshotId)
            ? throw CsiStatus.InvalidArgument("GetUpload: snapshot_id is required")
            : Task.FromResult(transfers.GetUpload(request.SnapshotId) ?? throw CsiStatus.NotFound($"GetUpload: no upload of snapshot '{request.SnapshotId}' since the driver started"));

    public override Task<P.Transfer> RestoreSnapshot(P.RestoreSnapshotRequest request, ServerCallContext context)
    {
        Require(request.Repository, request.SnapshotHandle, "RestoreSnapshot", "snapshot_handle");
        try
        {
            return Task.FromResult(transfers.StartRestore(request.Repository, request.SnapshotHandle));
        }
        catch (TransferRefusedException ex)
        {
            throw Refused("RestoreSnapshot", ex);
        }
    }

    public override Task<P.Transfer> GetRestore(P.GetRestoreRequest request, ServerCallContext context) =>
        string.IsNullOrEmpty(request.SnapshotHandle)
            ? throw CsiStatus.InvalidArgument("GetRestore: snapshot_handle is required")
            : Task.FromResult(transfers.GetRestore(request.SnapshotHandle) ?? throw CsiStatus.NotFound($"GetRestore: no restore of '{request.SnapshotHandle}' since the driver started"));

    private static void Require(P.RepositoryLocation? repository, string id, string rpc, string field)
    {
        if (repository is null)
        {
            throw CsiStatus.InvalidArgument($"{rpc}: repository is required");
        }

        if (string.IsNullOrEmpty(id))
        {
            throw CsiStatus.InvalidArgument($"{rpc}: {field} is required");
        }
    }

    private static RpcException Refused(string rpc, TransferRefusedException ex) => CsiStatus.Fail(
        ex.Refusal switch
        {
            TransferRefusal.NotFound => StatusCode.NotFound,
            TransferRefusal.Busy => StatusCode.Aborted,
            _ => StatusCode.InvalidArgument,
        },
        $"{rpc}: {ex.Message}");
}
