using Dolly.Csi.V1;
using Dolly.Storage;
using Grpc.Core;

namespace Dolly.Csi;

// Snapshot RPCs of the Controller service.
internal sealed partial class ControllerService
{
    public override Task<CreateSnapshotResponse> CreateSnapshot(CreateSnapshotRequest request, ServerCallContext context)
    {
        if (string.IsNullOrEmpty(request.Name))
        {
            throw CsiStatus.InvalidArgument("CreateSnapshot: name is required");
        }

        if (string.IsNullOrEmpty(request.SourceVolumeId))
        {
            throw CsiStatus.InvalidArgument($"CreateSnapshot '{request.Name}': source_volume_id is required");
        }

        string name = CsiNames.ToEngineName(request.Name);
        lock (_gate)
        {
            if (Lookup(name) is { } existing)
            {
                if (existing.Kind == DeviceKind.Snapshot && existing.SourceName == request.SourceVolumeId)
                {
                    return Task.FromResult(new CreateSnapshotResponse { Snapshot = ToSnapshot(existing) });
                }

                throw CsiStatus.AlreadyExists(existing.Kind == DeviceKind.Snapshot
                    ? $"snapshot '{name}' already exists of {Describe(existing.SourceName, existing.SourceId)}, not of volume '{request.SourceVolumeId}'"
                    : $"CreateSnapshot '{request.Name}': the name '{name}' is taken by a volume");
            }

            var source = RequireVolume(request.SourceVolumeId, $"CreateSnapshot '{request.Name}'");
            var created = pool.CreateSnapshot(source.Name, name);
            if (!created.IsOk)
            {
                throw CsiStatus.From(created.Error);
            }

            CsiLog.SnapshotCreated(logger, name, source.Name);
            return Task.FromResult(new CreateSnapshotResponse { Snapshot = ToSnapshot(created.Value) });
        }
    }

    public override Task<DeleteSnapshotResponse> DeleteSnapshot(DeleteSnapshotRequest request, ServerCallContext context)
    {
        if (string.IsNullOrEmpty(request.SnapshotId))
        {
            throw CsiStatus.InvalidArgument("DeleteSnapshot: snapshot_id is required");
        }

        // Volumes restored or cloned from the snapshot keep their blocks (reference counted), so a snapshot
        // in use can go too.
        if (DeleteIfKind(request.SnapshotId, DeviceKind.Snapshot))
        {
            CsiLog.SnapshotDeleted(logger, request.SnapshotId);
        }

        return Task.FromResult(new DeleteSnapshotResponse());
    }

    public override Task<ListSnapshotsResponse> ListSnapshots(ListSnapshotsRequest request, ServerCallContext context)
    {
        IReadOnlyList<DeviceInfo> snapshots;
        if (!string.IsNullOrEmpty(request.SnapshotId))
        {
            snapshots = Lookup(request.SnapshotId) is { Kind: DeviceKind.Snapshot } s
                && (string.IsNullOrEmpty(request.SourceVolumeId) || s.SourceName == request.SourceVolumeId)
                ? [s]
                : [];
        }
        else
        {
            snapshots = pool.ListDevices(DeviceKind.Snapshot)
                .Where(s => string.IsNullOrEmpty(request.SourceVolumeId) || s.SourceName == request.SourceVolumeId)
                .ToList();
        }

        var (page, next) = Paging.Page(snapshots, request.MaxEntries, request.StartingToken, "ListSnapshots");
        var response = new ListSnapshotsResponse { NextToken = next };
        foreach (var s in page)
        {
            response.Entries.Add(new ListSnapshotsResponse.Types.Entry { Snapshot = ToSnapshot(s) });
        }

        return Task.FromResult(response);
    }

    public override Task<GetSnapshotResponse> GetSnapshot(GetSnapshotRequest request, ServerCallContext context)
    {
        if (string.IsNullOrEmpty(request.SnapshotId))
        {
            throw CsiStatus.InvalidArgument("GetSnapshot: snapshot_id is required");
        }

        return Lookup(request.SnapshotId) is { Kind: DeviceKind.Snapshot } s
            ? Task.FromResult(new GetSnapshotResponse { Snapshot = ToSnapshot(s) })
            : throw CsiStatus.NotFound($"GetSnapshot: snapshot '{request.SnapshotId}' not found");
    }
}
