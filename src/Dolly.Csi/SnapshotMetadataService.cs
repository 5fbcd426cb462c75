using Dolly.Csi.V1;
using Dolly.Storage;
using Grpc.Core;

namespace Dolly.Csi;

/// <summary>
/// The CSI SnapshotMetadata service (changed block tracking): the allocated ranges of a snapshot, and the
/// ranges that differ between two snapshots of one volume, streamed in ascending order and resumable from
/// any byte offset. Both come straight from the pool's block maps; no data is read.
/// </summary>
internal sealed class SnapshotMetadataService(Pool pool) : SnapshotMetadata.SnapshotMetadataBase
{
    private const int DefaultMaxResults = 256;

    // The pool is asked one window at a time, so a sparse 64 TiB snapshot never builds one huge list.
    private const long Window = 1L << 32;

    public override async Task GetMetadataAllocated(GetMetadataAllocatedRequest request, IServerStreamWriter<GetMetadataAllocatedResponse> responseStream, ServerCallContext context)
    {
        if (string.IsNullOrEmpty(request.SnapshotId))
        {
            throw CsiStatus.InvalidArgument("GetMetadataAllocated: snapshot_id is required");
        }

        var snapshot = RequireSnapshot(request.SnapshotId, "GetMetadataAllocated");
        int max = MaxResults(request.MaxResults, request.StartingOffset, snapshot, "GetMetadataAllocated");
        await StreamAsync(
            snapshot.Size,
            request.StartingOffset,
            max,
            (offset, length) => pool.GetAllocatedRanges(snapshot.Name, offset, length),
            blocks =>
            {
                var response = new GetMetadataAllocatedResponse { BlockMetadataType = BlockMetadataType.VariableLength, VolumeCapacityBytes = snapshot.Size };
                response.BlockMetadata.Add(blocks);
                return responseStream.WriteAsync(response, context.CancellationToken);
            },
            context.CancellationToken).ConfigureAwait(false);
    }

    public override async Task GetMetadataDelta(GetMetadataDeltaRequest request, IServerStreamWriter<GetMetadataDeltaResponse> responseStream, ServerCallContext context)
    {
        if (string.IsNullOrEmpty(request.BaseSnapshotId) || string.IsNullOrEmpty(request.TargetSnapshotId))
        {
            throw CsiStatus.InvalidArgument("GetMetadataDelta: base_snapshot_id and target_snapshot_id are required");
        }

        var baseSnapshot = RequireSnapshot(request.BaseSnapshotId, "GetMetadataDelta");
        var target = RequireSnapshot(request.TargetSnapshotId, "GetMetadataDelta");
        if (baseSnapshot.LineageId != target.LineageId)
        {
            throw CsiStatus.InvalidArgument($"GetMetadataDelta: snapshots '{baseSnapshot.Name}' and '{target.Name}' are not of one volume");
        }

        int max = MaxResults(request.MaxResults, request.StartingOffset, target, "GetMetadataDelta");
        await StreamAsync(
            target.Size,
            request.StartingOffset,
            max,
            (offset, length) => pool.GetChangedRanges(baseSnapshot.Name, target.Name, offset, length),
            blocks =>
            {
                var response = new GetMetadataDeltaResponse { BlockMetadataType = BlockMetadataType.VariableLength, VolumeCapacityBytes = target.Size };
                response.BlockMetadata.Add(blocks);
                return responseStream.WriteAsync(response, context.CancellationToken);
            },
            context.CancellationToken).ConfigureAwait(false);
    }

    private DeviceInfo RequireSnapshot(string id, string rpc)
    {
        var found = pool.GetDevice(id);
        if (found.IsOk && found.Value.Kind == DeviceKind.Snapshot)
        {
            return found.Value;
        }

        return found.IsOk || found.Error.Code is StorageErrorCode.NotFound or StorageErrorCode.InvalidName
            ? throw CsiStatus.NotFound($"{rpc}: snapshot '{id}' not found")
            : throw CsiStatus.From(found.Error);
    }

    private static int MaxResults(int maxResults, long startingOffset, DeviceInfo snapshot, string rpc)
    {
        if (maxResults < 0)
        {
            throw CsiStatus.InvalidArgument($"{rpc}: max_results must not be negative ({maxResults})");
        }

        if (startingOffset < 0 || startingOffset >= snapshot.Size)
        {
            throw CsiStatus.OutOfRange($"{rpc}: starting_offset {startingOffset} is outside snapshot '{snapshot.Name}' of {snapshot.Size} bytes");
        }

        return maxResults == 0 ? DefaultMaxResults : maxResults;
    }

    /// <summary>
    /// Walks [start, size) window by window, joins ranges that touch across a window edge, and sends them
    /// in messages of at most <paramref name="max"/> entries.
    /// </summary>
    private static async Task StreamAsync(
        long size,
        long start,
        int max,
        Func<long, long, Result<IReadOnlyList<ByteRange>>> ranges,
        Func<List<BlockMetadata>, Task> send,
        CancellationToken cancellationToken)
    {
        var batch = new List<BlockMetadata>(max);
        BlockMetadata? pending = null;
        for (long offset = start; offset < size; offset += Window)
        {
            cancellationToken.ThrowIfCancellationRequested();
            var found = ranges(offset, Math.Min(Window, size - offset));
            if (!found.IsOk)
            {
                throw CsiStatus.From(found.Error);
            }

            foreach (var r in found.Value)
            {
                if (pending is not null && pending.ByteOffset + pending.SizeBytes == r.Offset)
                {
                    pending.SizeBytes += r.Length;
                    continue;
                }

                if (pending is not null)
                {
                    batch.Add(pending);
                    if (batch.Count == max)
                    {
                        await send(batch).ConfigureAwait(false);
                        batch.Clear();
                    }
                }

                pending = new BlockMetadata { ByteOffset = r.Offset, SizeBytes = r.Length };
            }
        }

        if (pending is not null)
        {
            batch.Add(pending);
        }

        if (batch.Count > 0)
        {
            await send(batch).ConfigureAwait(false);
        }
    }
}
