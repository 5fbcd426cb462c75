using Dolly.Csi.V1;
using Dolly.Storage;
using Grpc.Core;

namespace Dolly.Csi.Tests;

public sealed class GroupSnapshotTests : CsiTestBase
{
    private static readonly string[] Volumes = ["pvc-a", "pvc-b", "pvc-c"];

    private async Task CreateVolumesAsync()
    {
        foreach (string v in Volumes)
        {
            await CreateVolumeAsync(v, required: 4 * MiB);
        }
    }

    private async Task<VolumeGroupSnapshot> CreateGroupAsync(string name, params string[] sources)
    {
        var request = new CreateVolumeGroupSnapshotRequest { Name = name };
        request.SourceVolumeIds.Add(sources);
        return (await Groups.CreateVolumeGroupSnapshotAsync(request, cancellationToken: Token)).GroupSnapshot;
    }

    private async Task<VolumeGroupSnapshot> GetGroupAsync(string group, IEnumerable<string> snapshotIds)
    {
        var request = new GetVolumeGroupSnapshotRequest { GroupSnapshotId = group };
        request.SnapshotIds.Add(snapshotIds);
        return (await Groups.GetVolumeGroupSnapshotAsync(request, cancellationToken: Token)).GroupSnapshot;
    }

    private async Task DeleteGroupAsync(string group, IEnumerable<string> snapshotIds)
    {
        var request = new DeleteVolumeGroupSnapshotRequest { GroupSnapshotId = group };
        request.SnapshotIds.Add(snapshotIds);
        await Groups.DeleteVolumeGroupSnapshotAsync(request, cancellationToken: Token);
    }

    [Fact]
    public async Task GetCapabilities_OffersCreateDeleteGet()
    {
        var caps = await Groups.GroupControllerGetCapabilitiesAsync(new GroupControllerGetCapabilitiesRequest(), cancellationToken: Token);
        var only = Assert.Single(caps.Capabilities);
        Assert.Equal(GroupControllerServiceCapability.Types.RPC.Types.Type.CreateDeleteGetVolumeGroupSnapshot, only.Rpc.Type);
    }

    [Fact]
    public async Task Create_ThreeVolumes_MembersRestoreThePreOverwriteData()
    {
        await CreateVolumesAsync();
        var before = new Dictionary<string, byte[]>();
        for (int i = 0; i < Volumes.Length; i++)
        {
            before[Volumes[i]] = Pattern(128 * 1024, 10 + i);
            Pool.OpenDevice(Volumes[i]).Value.Write(MiB, before[Volumes[i]]).ThrowIfFailed();
        }

        var since = DateTimeOffset.UtcNow.AddSeconds(-5);
        var group = await CreateGroupAsync("groupsnapshot-1", Volumes);
        Assert.Equal("groupsnapshot-1", group.GroupSnapshotId);
        Assert.True(group.ReadyToUse);
        Assert.InRange(group.CreationTime.ToDateTimeOffset(), since, DateTimeOffset.UtcNow.AddSeconds(5));
        Assert.Equal(Volumes, group.Snapshots.Select(s => s.SourceVolumeId));
        Assert.Equal(3, group.Snapshots.Select(s => s.SnapshotId).Distinct().Count());
        foreach (var s in group.Snapshots)
        {
            Assert.Equal("groupsnapshot-1", s.GroupSnapshotId);
            Assert.Equal(CsiNames.ToGroupMemberName("groupsnapshot-1", s.SourceVolumeId), s.SnapshotId);
            Assert.Null(Names.Validate(s.SnapshotId));
            Assert.Equal(4 * MiB, s.SizeBytes);
            Assert.True(s.ReadyToUse);
            Assert.NotNull(s.CreationTime);
            Assert.Equal(DeviceKind.Snapshot, Pool.GetDevice(s.SnapshotId).Value.Kind);
        }

        // Written after the group snapshot: the restores must not see it.
        for (int i = 0; i < Volumes.Length; i++)
        {
            Pool.OpenDevice(Volumes[i]).Value.Write(MiB, Pattern(128 * 1024, 20 + i)).ThrowIfFailed();
        }

        foreach (var s in group.Snapshots)
        {
            string restored = "restore-" + s.SourceVolumeId;
            var volume = await CreateVolumeAsync(restored, source: FromSnapshot(s.SnapshotId));
            Assert.Equal(4 * MiB, volume.CapacityBytes);
            var read = new byte[128 * 1024];
            Pool.OpenDevice(restored).Value.Read(MiB, read).ThrowIfFailed();
            Assert.Equal(before[s.SourceVolumeId], read);
        }
    }

    [Fact]
    public async Task Create_Retried_ReturnsTheSameGroup()
    {
        await CreateVolumesAsync();
        var first = await CreateGroupAsync("group-retry", Volumes);
        var second = await CreateGroupAsync("group-retry", Volumes);
        Assert.Equal(first, second);

        // The order of the sources does not make it another group.
        var reordered = await CreateGroupAsync("group-retry", [.. Volumes.AsEnumerable().Reverse()]);
        Assert.Equal(first.Snapshots.OrderBy(s => s.SnapshotId, StringComparer.Ordinal), reordered.Snapshots.OrderBy(s => s.SnapshotId, StringComparer.Ordinal));
        Assert.Equal(3, Pool.ListDevices(DeviceKind.Snapshot).Count);
    }

    [Fact]
    public async Task Create_LongCsiName_MapsToAValidGroupAndMembers()
    {
        await CreateVolumesAsync();
        string name = "Group_" + new string('Z', 250);
        var first = await CreateGroupAsync(name, Volumes);
        var second = await CreateGroupAsync(name, Volumes);
        Assert.Equal(first, second);
        Assert.Equal(CsiNames.ToEngineName(name), first.GroupSnapshotId);
        Assert.All(first.Snapshots, s => Assert.Null(Names.Validate(s.SnapshotId)));
    }

    [Fact]
    public async Task Create_SameNameOtherSources_AlreadyExists()
    {
        await CreateVolumesAsync();
        await CreateGroupAsync("group-dup", "pvc-a", "pvc-b");
        await AssertStatus(StatusCode.AlreadyExists, () => CreateGroupAsync("group-dup", "pvc-a", "pvc-c"), "group-dup", "pvc-c");
        await AssertStatus(StatusCode.AlreadyExists, () => CreateGroupAsync("group-dup", "pvc-c"), "group-dup");
        await AssertStatus(StatusCode.AlreadyExists, () => CreateGroupAsync("group-dup", Volumes), "group-dup");
        Assert.Equal(2, Pool.ListDevices(DeviceKind.Snapshot).Count);
    }

    [Fact]
    public async Task Create_InvalidArguments_InvalidArgument()
    {
        await CreateVolumesAsync();
        await AssertStatus(StatusCode.InvalidArgument, () => CreateGroupAsync("", "pvc-a"), "name");
        await AssertStatus(StatusCode.InvalidArgument, () => CreateGroupAsync("group-x"), "group-x", "source_volume_ids");
        await AssertStatus(StatusCode.InvalidArgument, () => CreateGroupAsync("group-x", "pvc-a", "pvc-a"), "pvc-a");
        await AssertStatus(StatusCode.InvalidArgument, () => CreateGroupAsync("group-x", "pvc-a", ""), "group-x");
        Assert.Empty(Pool.ListDevices(DeviceKind.Snapshot));
    }

    [Fact]
    public async Task Create_UnknownSource_NotFoundAndNothingMade()
    {
        await CreateVolumesAsync();
        await AssertStatus(StatusCode.NotFound, () => CreateGroupAsync("group-x", "pvc-a", "pvc-gone"), "pvc-gone");
        await CreateSnapshotAsync("snap-plain", "pvc-a");
        await AssertStatus(StatusCode.NotFound, () => CreateGroupAsync("group-x", "pvc-a", "snap-plain"), "snap-plain");
        Assert.Single(Pool.ListDevices(DeviceKind.Snapshot));
    }

    [Fact]
    public async Task Get_ReturnsTheGroup_NotFoundOnceMembersAreGone()
    {
        await CreateVolumesAsync();
        var created = await CreateGroupAsync("group-get", Volumes);
        var ids = created.Snapshots.Select(s => s.SnapshotId).ToList();
        Assert.Equal(created, await GetGroupAsync("group-get", ids));

        // Members are snapshots the Controller service sees too.
        var single = await Controller.GetSnapshotAsync(new GetSnapshotRequest { SnapshotId = ids[0] }, cancellationToken: Token);
        Assert.Equal("pvc-a", single.Snapshot.SourceVolumeId);

        await AssertStatus(StatusCode.InvalidArgument, () => GetGroupAsync("", ids), "group_snapshot_id");
        await AssertStatus(StatusCode.InvalidArgument, () => GetGroupAsync("group-get", []), "snapshot_ids");
        await AssertStatus(StatusCode.NotFound, () => GetGroupAsync("group-other", ids), "group-other");
        await AssertStatus(StatusCode.InvalidArgument, () => GetGroupAsync("group-get", ids.Take(2)), "do not match", ids[2]);

        Pool.Delete(ids[1]).ThrowIfFailed();
        await AssertStatus(StatusCode.NotFound, () => GetGroupAsync("group-get", ids), "group-get", ids[1]);
    }

    [Fact]
    public async Task Delete_RemovesMembers_AndIsIdempotent()
    {
        await CreateVolumesAsync();
        var group = await CreateGroupAsync("group-del", Volumes);
        var other = await CreateGroupAsync("group-keep", "pvc-a");
        await CreateSnapshotAsync("snap-plain", "pvc-b");
        var ids = group.Snapshots.Select(s => s.SnapshotId).ToList();

        // Ids that are not members of the group are refused, and nothing is deleted.
        await AssertStatus(StatusCode.InvalidArgument, () => DeleteGroupAsync("group-del", [.. ids, "snap-plain"]), "snap-plain");
        await AssertStatus(StatusCode.InvalidArgument, () => DeleteGroupAsync("group-del", [other.Snapshots[0].SnapshotId]), other.Snapshots[0].SnapshotId);
        await AssertStatus(StatusCode.InvalidArgument, () => DeleteGroupAsync("", ids), "group_snapshot_id");
        Assert.Equal(5, Pool.ListDevices(DeviceKind.Snapshot).Count);

        await DeleteGroupAsync("group-del", ids);
        Assert.All(ids, id => Assert.Equal(StorageErrorCode.NotFound, Pool.GetDevice(id).Error?.Code));
        Assert.Equal(new[] { "snap-plain", other.Snapshots[0].SnapshotId }.Order(StringComparer.Ordinal), Pool.ListDevices(DeviceKind.Snapshot).Select(s => s.Name).Order(StringComparer.Ordinal));

        // Again: already gone is fine.
        await DeleteGroupAsync("group-del", ids);
        await AssertStatus(StatusCode.NotFound, () => GetGroupAsync("group-del", ids), "group-del");

        // The name is free again for a new group.
        var again = await CreateGroupAsync("group-del", "pvc-c");
        Assert.Single(again.Snapshots);
    }

    [Fact]
    public async Task Delete_MemberWhoseVolumeIsGone_Deletes()
    {
        await CreateVolumesAsync();
        var group = await CreateGroupAsync("group-orphan", Volumes);
        await Controller.DeleteVolumeAsync(new DeleteVolumeRequest { VolumeId = "pvc-b" }, cancellationToken: Token);
        var ids = group.Snapshots.Select(s => s.SnapshotId).ToList();
        await DeleteGroupAsync("group-orphan", ids);
        Assert.Empty(Pool.ListDevices(DeviceKind.Snapshot));
    }

    /// <summary>What csi-sanity's GroupController cases send for a group the plugin never made: ids it generates as invalid, and no snapshot_ids.</summary>
    public static TheoryData<string> UnknownGroups() => ["fake-volume-id", "group-never-made", "Not_A_Pool_Name", new string('x', 300)];

    [Theory]
    [MemberData(nameof(UnknownGroups))]
    public async Task UnknownGroup_GetNotFound_DeleteOk_WithOrWithoutSnapshotIds(string group)
    {
        await CreateVolumesAsync();
        var kept = await CreateGroupAsync("group-kept", Volumes);
        await AssertStatus(StatusCode.NotFound, () => GetGroupAsync(group, []), group);
        await AssertStatus(StatusCode.NotFound, () => GetGroupAsync(group, kept.Snapshots.Select(s => s.SnapshotId)), group);
        await DeleteGroupAsync(group, []);
        await DeleteGroupAsync(group, kept.Snapshots.Select(s => s.SnapshotId));
        Assert.Equal(3, Pool.ListDevices(DeviceKind.Snapshot).Count);
    }

    [Fact]
    public async Task NoGroupId_InvalidArgument_ForGetAndDelete()
    {
        await AssertStatus(StatusCode.InvalidArgument, () => GetGroupAsync("", []), "group_snapshot_id");
        await AssertStatus(StatusCode.InvalidArgument, () => DeleteGroupAsync("", []), "group_snapshot_id");
    }

    [Fact]
    public async Task ExistingGroup_MissingOrMismatchedSnapshotIds_InvalidArgument_NothingDeleted()
    {
        await CreateVolumesAsync();
        var group = await CreateGroupAsync("group-m", Volumes);
        var ids = group.Snapshots.Select(s => s.SnapshotId).ToList();
        string lookAlike = CsiNames.ToGroupMemberName("group-m", "pvc-other");
        var cases = new (IEnumerable<string> Ids, string[] Named)[]
        {
            ([], ["snapshot_ids are required", ids[0]]),
            (ids.Take(1), ["do not match", ids[1], ids[2]]),
            ([.. ids, ""], ["''", "not a member"]),
            ([.. ids, "snap-plain"], ["snap-plain"]),
        };
        foreach (var (list, named) in cases)
        {
            await AssertStatus(StatusCode.InvalidArgument, () => GetGroupAsync("group-m", list), named);
            await AssertStatus(StatusCode.InvalidArgument, () => DeleteGroupAsync("group-m", list), named);
        }

        // A listed member-shaped id that is gone is no mismatch (a retried delete lists what it took), and a
        // device with a look-alike name that is not a member is refused, not deleted.
        Assert.Equal(group, await GetGroupAsync("group-m", [.. ids, ids[0]]));
        await CreateSnapshotAsync(lookAlike, "pvc-a");
        await AssertStatus(StatusCode.InvalidArgument, () => DeleteGroupAsync("group-m", [.. ids, lookAlike]), lookAlike);
        Assert.Equal(4, Pool.ListDevices(DeviceKind.Snapshot).Count);
    }

    [Fact]
    public async Task Delete_RetriedAfterAPartialDelete_RemovesTheRest()
    {
        await CreateVolumesAsync();
        var group = await CreateGroupAsync("group-partial", Volumes);
        var ids = group.Snapshots.Select(s => s.SnapshotId).ToList();
        Pool.Delete(ids[0]).ThrowIfFailed();
        await AssertStatus(StatusCode.NotFound, () => GetGroupAsync("group-partial", ids), ids[0]);
        await DeleteGroupAsync("group-partial", ids);
        Assert.Empty(Pool.ListDevices(DeviceKind.Snapshot));
        await DeleteGroupAsync("group-partial", ids);
        await DeleteGroupAsync("group-partial", []);
    }
}
