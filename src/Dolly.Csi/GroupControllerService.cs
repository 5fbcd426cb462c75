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
            var existing = ExistingMembers(group);
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
        const string Rpc = "DeleteVolumeGroupSnapshot";
        string group = RequireGroupId(request.GroupSnapshotId, Rpc);
        lock (_gate)
        {
            // A group that is gone (or never was) is deleted: the spec wants OK, whatever snapshot_ids says, so
            // a retry after a lost reply or a partial delete never wedges the content.
            var existing = ExistingMembers(group);
            if (existing.Count == 0)
            {
                return Task.FromResult(new DeleteVolumeGroupSnapshotResponse());
            }

            // Every member is listed once Listed returns, so deleting what exists deletes what was asked for.
            Listed(group, request.SnapshotIds, existing, Rpc);
            foreach (var s in existing)
            {
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
        const string Rpc = "GetVolumeGroupSnapshot";
        string group = RequireGroupId(request.GroupSnapshotId, Rpc);
        var existing = ExistingMembers(group);
        if (existing.Count == 0)
        {
            throw CsiStatus.NotFound($"{Rpc}: group snapshot '{group}' not found");
        }

        var listed = Listed(group, request.SnapshotIds, existing, Rpc);
        var missing = listed.Where(id => !existing.Any(s => s.Name == id)).ToList();
        if (missing.Count > 0)
        {
            // Some members were deleted behind the group's back: the group as asked for no longer exists.
            throw CsiStatus.NotFound($"{Rpc}: group snapshot '{group}' is missing {string.Join(", ", missing.Select(id => $"'{id}'"))}");
        }

        return Task.FromResult(new GetVolumeGroupSnapshotResponse { GroupSnapshot = ToGroup(group, listed.Select(id => existing.First(s => s.Name == id)).ToList()) });
    }

    private static string RequireGroupId(string group, string rpc) =>
        string.IsNullOrEmpty(group) ? throw CsiStatus.InvalidArgument($"{rpc}: group_snapshot_id is required") : group;

    /// <summary>
    /// The member snapshots of <paramref name="group"/> in the pool: snapshots with its member name whose source
    /// volume, where it still exists, hashes to that name (a member whose volume is gone is judged by its name).
    /// </summary>
    private List<DeviceInfo> ExistingMembers(string group) =>
        [.. pool.ListDevices(DeviceKind.Snapshot).Where(s =>
            CsiNames.IsGroupMemberName(group, s.Name) && (s.SourceName is null || CsiNames.ToGroupMemberName(group, s.SourceName) == s.Name))];

    /// <summary>
    /// <paramref name="snapshotIds"/> checked against the members the pool holds, as the spec asks of a plugin that
    /// can detect a mismatch: required, no id that is no member of the group, and every existing member listed.
    /// An id listed but gone is no mismatch (an earlier delete took it).
    /// </summary>
    private List<string> Listed(string group, RepeatedField<string> snapshotIds, List<DeviceInfo> existing, string rpc)
    {
        if (snapshotIds.Count == 0)
        {
            throw CsiStatus.InvalidArgument($"{rpc} '{group}': snapshot_ids are required (the group has {string.Join(", ", existing.Select(s => $"'{s.Name}'"))})");
        }

        var listed = new List<string>(snapshotIds.Count);
        foreach (string id in snapshotIds)
        {
            if (string.IsNullOrEmpty(id) || !CsiNames.IsGroupMemberName(group, id))
            {
                throw CsiStatus.InvalidArgument($"{rpc} '{group}': snapshot '{id}' is not a member of the group");
            }

            if (listed.Contains(id, StringComparer.Ordinal))
            {
                continue;
            }

            // A device by that name that is not among the members is another object with a look-alike name.
            if (!existing.Any(s => s.Name == id) && pool.GetDevice(id).IsOk)
            {
                throw CsiStatus.InvalidArgument($"{rpc} '{group}': '{id}' is not a member of the group");
            }

            listed.Add(id);
        }

        var unlisted = existing.Where(s => !listed.Contains(s.Name, StringComparer.Ordinal)).ToList();
        if (unlisted.Count > 0)
        {
            throw CsiStatus.InvalidArgument(
                $"{rpc} '{group}': snapshot_ids do not match the group: it also has {string.Join(", ", unlisted.Select(s => $"'{s.Name}'"))}");
        }

        return listed;
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
