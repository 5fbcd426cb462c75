using Dolly.Csi.V1;
using Dolly.Storage;
using Google.Protobuf.Collections;
using Google.Protobuf.WellKnownTypes;
using Grpc.Core;
using Microsoft.Extensions.Logging;
using RpcType = Dolly.Csi.V1.GroupControllerServiceCapability.Types.RPC.Types.Type;

namespace Dolly.Csi;

/// <summary>
/// The CSI GroupController service: crash-consistent snapshots of several volumes at once, made in one pool
/// commit (<see cref="Pool.CreateSnapshotGroup"/>). A group snapshot is no object of its own in the pool: its
/// id is the pool name of the CSI name, and its members are snapshots named after the group and the source
/// volume (<see cref="CsiNames.ToGroupMemberName"/>), so a retry or a restart finds them again by name.
/// </summary>
internal sealed class GroupControllerService(Pool pool, ILogger<GroupControllerService> logger) : GroupController.GroupControllerBase
{
    // Check-then-create sequences must not interleave with another create of the same group.
    private readonly Lock _gate = new();

    public override Task<GroupControllerGetCapabilitiesResponse> GroupControllerGetCapabilities(GroupControllerGetCapabilitiesRequest request, ServerCallContext context)
    {
        var response = new GroupControllerGetCapabilitiesResponse();
        response.Capabilities.Add(new GroupControllerServiceCapability
        {
            Rpc = new GroupControllerServiceCapability.Types.RPC { Type = RpcType.CreateDeleteGetVolumeGroupSnapshot },
        });
        return Task.FromResult(response);
    }

    public override Task<CreateVolumeGroupSnapshotResponse> CreateVolumeGroupSnapshot(CreateVolumeGroupSnapshotRequest request, ServerCallContext context)
    {
        if (string.IsNullOrEmpty(request.Name))
        {
            throw CsiStatus.InvalidArgument("CreateVolumeGroupSnapshot: name is required");
        }

        string what = $"CreateVolumeGroupSnapshot '{request.Name}'";
        if (request.SourceVolumeIds.Count == 0)
        {
            throw CsiStatus.InvalidArgument($"{what}: source_volume_ids are required");
        }

        var sources = new List<string>(request.SourceVolumeIds.Count);
        foreach (string id in request.SourceVolumeIds)
        {
            if (string.IsNullOrEmpty(id))
            {
                throw CsiStatus.InvalidArgument($"{what}: source_volume_ids must not contain an empty id");
            }

            if (sources.Contains(id, StringComparer.Ordinal))
            {
                throw CsiStatus.InvalidArgument($"{what}: volume '{id}' appears twice in source_volume_ids");
            }

            sources.Add(id);
        }

        string group = CsiNames.ToEngineName(request.Name);
        var members = sources.Select(v => (Volume: v, Snapshot: CsiNames.ToGroupMemberName(group, v))).ToList();
        lock (_gate)
        {
            // A group made before: the same name with the same sources is a retry, anything else a conflict.
            var existing = pool.ListDevices(DeviceKind.Snapshot).Where(s => CsiNames.IsGroupMemberName(group, s.Name)).ToList();
            if (existing.Count > 0)
            {
                bool same = existing.Count == members.Count
                    && members.All(m => existing.Any(s => s.Name == m.Snapshot && s.SourceName == m.Volume));
                if (!same)
                {
                    throw CsiStatus.AlreadyExists(
                        $"group snapshot '{group}' already exists of volumes {string.Join(", ", existing.Select(s => s.SourceName is null ? "(deleted)" : $"'{s.SourceName}'"))}, not of {string.Join(", ", sources.Select(v => $"'{v}'"))}");
                }

                return Task.FromResult(new CreateVolumeGroupSnapshotResponse { GroupSnapshot = ToGroup(group, Order(existing, members)) });
            }

            foreach (string v in sources)
            {
                var found = pool.GetDevice(v);
                if (!found.IsOk && found.Error.Code is not (StorageErrorCode.NotFound or StorageErrorCode.InvalidName))
                {
                    throw CsiStatus.From(found.Error);
                }

                if (!found.IsOk || found.Value.Kind != DeviceKind.Volume)
                {
                    throw CsiStatus.NotFound($"{what}: volume '{v}' not found");
                }
            }

            var created = pool.CreateSnapshotGroup(members);
            if (!created.IsOk)
            {
                throw CsiStatus.From(created.Error);
            }

            foreach (var s in created.Value)
            {
                CsiLog.SnapshotCreated(logger, s.Name, s.SourceName ?? "");
            }

            return Task.FromResult(new CreateVolumeGroupSnapshotResponse { GroupSnapshot = ToGroup(group, created.Value) });
        }
    }

    public override Task<DeleteVolumeGroupSnapshotResponse> DeleteVolumeGroupSnapshot(DeleteVolumeGroupSnapshotRequest request, ServerCallContext context)
    {
        string group = request.GroupSnapshotId;
        lock (_gate)
        {
            var members = Members(group, request.SnapshotIds, "DeleteVolumeGroupSnapshot");
            foreach (var s in members)
            {
                // Already gone: deleted by an earlier try.
                if (s is null)
                {
                    continue;
                }

                var deleted = pool.Delete(s.Name);
                if (!deleted.IsOk && deleted.Error.Code != StorageErrorCode.NotFound)
                {
                    throw CsiStatus.From(deleted.Error);
                }

                CsiLog.SnapshotDeleted(logger, s.Name);
            }
        }

        return Task.FromResult(new DeleteVolumeGroupSnapshotResponse());
    }

    public override Task<GetVolumeGroupSnapshotResponse> GetVolumeGroupSnapshot(GetVolumeGroupSnapshotRequest request, ServerCallContext context)
    {
        string group = request.GroupSnapshotId;
        var members = Members(group, request.SnapshotIds, "GetVolumeGroupSnapshot");
        if (members.Any(s => s is null))
        {
            throw CsiStatus.NotFound(
                $"GetVolumeGroupSnapshot: group snapshot '{group}' is missing {string.Join(", ", request.SnapshotIds.Where((_, i) => members[i] is null).Select(id => $"'{id}'"))}");
        }

        return Task.FromResult(new GetVolumeGroupSnapshotResponse { GroupSnapshot = ToGroup(group, members.Select(s => s!).ToList()) });
    }

    /// <summary>
    /// The member snapshots <paramref name="snapshotIds"/> of <paramref name="group"/>, null where one is
    /// gone; an id that is no member of the group is refused.
    /// </summary>
    private List<DeviceInfo?> Members(string group, RepeatedField<string> snapshotIds, string rpc)
    {
        if (string.IsNullOrEmpty(group))
        {
            throw CsiStatus.InvalidArgument($"{rpc}: group_snapshot_id is required");
        }

        if (snapshotIds.Count == 0)
        {
            throw CsiStatus.InvalidArgument($"{rpc} '{group}': snapshot_ids are required");
        }

        var members = new List<DeviceInfo?>(snapshotIds.Count);
        foreach (string id in snapshotIds)
        {
            if (!CsiNames.IsGroupMemberName(group, id))
            {
                throw CsiStatus.InvalidArgument($"{rpc} '{group}': snapshot '{id}' is not a member of the group");
            }

            var found = pool.GetDevice(id);
            if (!found.IsOk)
            {
                members.Add(found.Error.Code is StorageErrorCode.NotFound or StorageErrorCode.InvalidName ? null : throw CsiStatus.From(found.Error));
                continue;
            }

            // A member whose volume still exists must carry that volume's hash; one whose volume is gone
            // can only be judged by its shape.
            var s = found.Value;
            if (s.Kind != DeviceKind.Snapshot || (s.SourceName is not null && CsiNames.ToGroupMemberName(group, s.SourceName) != s.Name))
            {
                throw CsiStatus.InvalidArgument($"{rpc} '{group}': '{id}' is not a member of the group");
            }

            members.Add(s);
        }

        return members;
    }

    /// <summary>The existing members in the order of the request's source volumes.</summary>
    private static List<DeviceInfo> Order(List<DeviceInfo> existing, List<(string Volume, string Snapshot)> members) =>
        members.Select(m => existing.First(s => s.Name == m.Snapshot)).ToList();

    private static VolumeGroupSnapshot ToGroup(string group, IReadOnlyList<DeviceInfo> members)
    {
        // The members come from one commit and share its time; the earliest stands for the group either way.
        var result = new VolumeGroupSnapshot
        {
            GroupSnapshotId = group,
            CreationTime = Timestamp.FromDateTimeOffset(members.Min(s => s.CreatedAt)),
            ReadyToUse = true,
        };
        foreach (var s in members)
        {
            result.Snapshots.Add(new Snapshot
            {
                SnapshotId = s.Name,
                SourceVolumeId = s.SourceName ?? "",
                SizeBytes = s.Size,
                CreationTime = Timestamp.FromDateTimeOffset(s.CreatedAt),
                ReadyToUse = true,
                GroupSnapshotId = group,
            });
        }

        return result;
    }
}
