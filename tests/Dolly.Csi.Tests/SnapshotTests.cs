using Dolly.Csi.V1;
using Dolly.Storage;
using Grpc.Core;

namespace Dolly.Csi.Tests;

public sealed class SnapshotTests : CsiTestBase
{
    [Fact]
    public async Task CreateSnapshot_ReadyWithSizeSourceAndTime()
    {
        await CreateVolumeAsync("pvc-s", required: 4 * MiB);
        var before = DateTimeOffset.UtcNow.AddSeconds(-5);
        var s = await CreateSnapshotAsync("snapshot-1", "pvc-s");
        Assert.Equal("snapshot-1", s.SnapshotId);
        Assert.Equal("pvc-s", s.SourceVolumeId);
        Assert.Equal(4 * MiB, s.SizeBytes);
        Assert.True(s.ReadyToUse);
        Assert.NotNull(s.CreationTime);
        Assert.InRange(s.CreationTime.ToDateTimeOffset(), before, DateTimeOffset.UtcNow.AddSeconds(5));
        Assert.Equal(DeviceKind.Snapshot, Pool.GetDevice("snapshot-1").Value.Kind);
    }

    [Fact]
    public async Task CreateSnapshot_NoName_InvalidArgument()
    {
        await CreateVolumeAsync("pvc-s", required: MiB);
        await AssertStatus(StatusCode.InvalidArgument, () => Controller.CreateSnapshotAsync(new CreateSnapshotRequest { SourceVolumeId = "pvc-s" }, cancellationToken: Token).ResponseAsync, "name");
    }

    [Fact]
    public async Task CreateSnapshot_NoSource_InvalidArgument()
    {
        await AssertStatus(StatusCode.InvalidArgument, () => Controller.CreateSnapshotAsync(new CreateSnapshotRequest { Name = "snap-x" }, cancellationToken: Token).ResponseAsync, "snap-x", "source_volume_id");
    }

    [Fact]
    public async Task CreateSnapshot_MissingSource_NotFound()
    {
        await AssertStatus(StatusCode.NotFound, () => Controller.CreateSnapshotAsync(new CreateSnapshotRequest { Name = "snap-x", SourceVolumeId = "pvc-gone" }, cancellationToken: Token).ResponseAsync, "pvc-gone");
    }

    [Fact]
    public async Task CreateSnapshot_SameNameAndSource_ReturnsSameSnapshot()
    {
        await CreateVolumeAsync("pvc-s", required: MiB);
        var first = await CreateSnapshotAsync("snap-same", "pvc-s");
        var second = await CreateSnapshotAsync("snap-same", "pvc-s");
        Assert.Equal(first, second);
        Assert.Single(Pool.ListDevices(DeviceKind.Snapshot));
    }

    [Fact]
    public async Task CreateSnapshot_SameNameOtherSource_AlreadyExists()
    {
        await CreateVolumeAsync("pvc-one", required: MiB);
        await CreateVolumeAsync("pvc-two", required: MiB);
        await CreateSnapshotAsync("snap-dup", "pvc-one");
        await AssertStatus(StatusCode.AlreadyExists, () => CreateSnapshotAsync("snap-dup", "pvc-two"), "snap-dup", "pvc-two");
    }

    [Fact]
    public async Task CreateSnapshot_NameOfAVolume_AlreadyExists()
    {
        await CreateVolumeAsync("pvc-one", required: MiB);
        await CreateVolumeAsync("pvc-two", required: MiB);
        await AssertStatus(StatusCode.AlreadyExists, () => CreateSnapshotAsync("pvc-two", "pvc-one"), "pvc-two");
    }

    [Fact]
    public async Task CreateSnapshot_128CharacterName_Twice_Ok()
    {
        await CreateVolumeAsync("pvc-s", required: MiB);
        string name = "CreateSnapshot-" + new string('Z', 128 - "CreateSnapshot-".Length);
        var first = await CreateSnapshotAsync(name, "pvc-s");
        var second = await CreateSnapshotAsync(name, "pvc-s");
        Assert.Equal(first.SnapshotId, second.SnapshotId);
        Assert.Null(Names.Validate(first.SnapshotId));
    }

    [Fact]
    public async Task DeleteSnapshot_RemovesIt_UnknownOk_NoIdInvalid()
    {
        await CreateVolumeAsync("pvc-s", required: MiB);
        await CreateSnapshotAsync("snap-del", "pvc-s");
        await Controller.DeleteSnapshotAsync(new DeleteSnapshotRequest { SnapshotId = "snap-del" }, cancellationToken: Token);
        Assert.Equal(StorageErrorCode.NotFound, Pool.GetDevice("snap-del").Error?.Code);

        await Controller.DeleteSnapshotAsync(new DeleteSnapshotRequest { SnapshotId = "snap-del" }, cancellationToken: Token);
        await AssertStatus(StatusCode.InvalidArgument, () => Controller.DeleteSnapshotAsync(new DeleteSnapshotRequest(), cancellationToken: Token).ResponseAsync, "snapshot_id");
    }

    [Fact]
    public async Task DeleteSnapshot_VolumeId_LeavesTheVolume()
    {
        await CreateVolumeAsync("pvc-s", required: MiB);
        await Controller.DeleteSnapshotAsync(new DeleteSnapshotRequest { SnapshotId = "pvc-s" }, cancellationToken: Token);
        Assert.True(Pool.GetDevice("pvc-s").IsOk);
    }

    [Fact]
    public async Task ListSnapshots_EntriesCarryIdSourceAndTime_CountFollowsCreateAndDelete()
    {
        await CreateVolumeAsync("pvc-s", required: MiB);
        int before = (await ListAsync(new ListSnapshotsRequest())).Entries.Count;
        await CreateSnapshotAsync("snap-count", "pvc-s");
        var after = await ListAsync(new ListSnapshotsRequest());
        Assert.Equal(before + 1, after.Entries.Count);
        Assert.All(after.Entries, e =>
        {
            Assert.NotEmpty(e.Snapshot.SnapshotId);
            Assert.NotEmpty(e.Snapshot.SourceVolumeId);
            Assert.NotNull(e.Snapshot.CreationTime);
        });

        await Controller.DeleteSnapshotAsync(new DeleteSnapshotRequest { SnapshotId = "snap-count" }, cancellationToken: Token);
        Assert.Equal(before, (await ListAsync(new ListSnapshotsRequest())).Entries.Count);
    }

    [Fact]
    public async Task ListSnapshots_FilterBySnapshotId()
    {
        await CreateVolumeAsync("pvc-s", required: MiB);
        await CreateSnapshotAsync("snap-a", "pvc-s");
        await CreateSnapshotAsync("snap-b", "pvc-s");
        var one = await ListAsync(new ListSnapshotsRequest { SnapshotId = "snap-b" });
        Assert.Equal("snap-b", Assert.Single(one.Entries).Snapshot.SnapshotId);

        Assert.Empty((await ListAsync(new ListSnapshotsRequest { SnapshotId = "snap-unknown" })).Entries);
        Assert.Empty((await ListAsync(new ListSnapshotsRequest { SnapshotId = "pvc-s" })).Entries);
        Assert.Empty((await ListAsync(new ListSnapshotsRequest { SnapshotId = "snap-b", SourceVolumeId = "pvc-other" })).Entries);
    }

    [Fact]
    public async Task ListSnapshots_FilterBySourceVolume()
    {
        await CreateVolumeAsync("pvc-one", required: MiB);
        await CreateVolumeAsync("pvc-two", required: MiB);
        await CreateSnapshotAsync("snap-1", "pvc-one");
        await CreateSnapshotAsync("snap-2", "pvc-two");
        var bySource = await ListAsync(new ListSnapshotsRequest { SourceVolumeId = "pvc-two" });
        var entry = Assert.Single(bySource.Entries);
        Assert.Equal("snap-2", entry.Snapshot.SnapshotId);
        Assert.Equal("pvc-two", entry.Snapshot.SourceVolumeId);

        Assert.Empty((await ListAsync(new ListSnapshotsRequest { SourceVolumeId = "pvc-unknown" })).Entries);
    }

    [Fact]
    public async Task ListSnapshots_MaxEntries2_ReturnsTwoAndTokenForTheRest()
    {
        await CreateVolumeAsync("pvc-s", required: MiB);
        for (int i = 0; i < 5; i++)
        {
            await CreateSnapshotAsync($"snap-{i}", "pvc-s");
        }

        var first = await ListAsync(new ListSnapshotsRequest { MaxEntries = 2 });
        Assert.Equal(2, first.Entries.Count);
        Assert.NotEmpty(first.NextToken);

        var rest = await ListAsync(new ListSnapshotsRequest { StartingToken = first.NextToken });
        Assert.Equal(3, rest.Entries.Count);
        Assert.Empty(rest.NextToken);
        Assert.Equal(
            Enumerable.Range(0, 5).Select(i => $"snap-{i}"),
            first.Entries.Concat(rest.Entries).Select(e => e.Snapshot.SnapshotId));
    }

    [Fact]
    public async Task ListSnapshots_BadToken_Aborted()
    {
        await AssertStatus(StatusCode.Aborted, () => ListAsync(new ListSnapshotsRequest { StartingToken = "invalid-token" }), "invalid-token");
    }

    [Fact]
    public async Task GetSnapshot_ReturnsIt_UnknownNotFound()
    {
        await CreateVolumeAsync("pvc-s", required: MiB);
        var created = await CreateSnapshotAsync("snap-get", "pvc-s");
        var got = await Controller.GetSnapshotAsync(new GetSnapshotRequest { SnapshotId = "snap-get" }, cancellationToken: Token);
        Assert.Equal(created, got.Snapshot);
        await AssertStatus(StatusCode.NotFound, () => Controller.GetSnapshotAsync(new GetSnapshotRequest { SnapshotId = "snap-none" }, cancellationToken: Token).ResponseAsync, "snap-none");
    }

    [Fact]
    public async Task CreateVolume_FromSnapshot_ReadsTheSnapshotsData()
    {
        await CreateVolumeAsync("pvc-data", required: 8 * MiB);
        var device = Pool.OpenDevice("pvc-data").Value;
        var before = Pattern(256 * 1024, 1);
        device.Write(3 * MiB, before).ThrowIfFailed();
        await CreateSnapshotAsync("snap-data", "pvc-data");

        // Written after the snapshot: the restore must not see it.
        device.Write(3 * MiB, Pattern(256 * 1024, 2)).ThrowIfFailed();

        var restored = await CreateVolumeAsync("pvc-restored", source: FromSnapshot("snap-data"));
        Assert.Equal(8 * MiB, restored.CapacityBytes);
        Assert.Equal("snap-data", restored.ContentSource.Snapshot.SnapshotId);

        var read = new byte[before.Length];
        Pool.OpenDevice("pvc-restored").Value.Read(3 * MiB, read).ThrowIfFailed();
        Assert.Equal(before, read);

        // And the restore is a volume of its own: writing it leaves the snapshot alone.
        Pool.OpenDevice("pvc-restored").Value.Write(3 * MiB, Pattern(4096, 3)).ThrowIfFailed();
        Pool.OpenDevice("snap-data").Value.Read(3 * MiB, read).ThrowIfFailed();
        Assert.Equal(before, read);
    }

    [Fact]
    public async Task CreateVolume_FromSnapshotLarger_GrowsAndKeepsData()
    {
        await CreateVolumeAsync("pvc-small", required: 2 * MiB);
        var data = Pattern(4096, 9);
        Pool.OpenDevice("pvc-small").Value.Write(2 * MiB - 4096, data).ThrowIfFailed();
        await CreateSnapshotAsync("snap-small", "pvc-small");

        var big = await CreateVolumeAsync("pvc-big", required: 16 * MiB, source: FromSnapshot("snap-small"));
        Assert.Equal(16 * MiB, big.CapacityBytes);
        Assert.Equal(16 * MiB, Pool.GetDevice("pvc-big").Value.Size);
        var read = new byte[4096];
        Pool.OpenDevice("pvc-big").Value.Read(2 * MiB - 4096, read).ThrowIfFailed();
        Assert.Equal(data, read);
        Pool.OpenDevice("pvc-big").Value.Read(8 * MiB, read).ThrowIfFailed();
        Assert.All(read, b => Assert.Equal(0, b));
    }

    [Fact]
    public async Task CreateVolume_FromSnapshotSmaller_OutOfRange()
    {
        await CreateVolumeAsync("pvc-s", required: 8 * MiB);
        await CreateSnapshotAsync("snap-8", "pvc-s");
        await AssertStatus(StatusCode.OutOfRange, () => Controller.CreateVolumeAsync(VolumeRequest("pvc-r", 4 * MiB, source: FromSnapshot("snap-8")), cancellationToken: Token).ResponseAsync, "pvc-r", "snap-8");
        Assert.Equal(StorageErrorCode.NotFound, Pool.GetDevice("pvc-r").Error?.Code);
    }

    [Fact]
    public async Task CreateVolume_FromMissingSnapshot_NotFound()
    {
        await AssertStatus(StatusCode.NotFound, () => Controller.CreateVolumeAsync(VolumeRequest("pvc-r", MiB, source: FromSnapshot("snap-missing")), cancellationToken: Token).ResponseAsync, "snap-missing");
    }

    [Fact]
    public async Task CreateVolume_FromSnapshot_SameNameTwice_SameVolume()
    {
        await CreateVolumeAsync("pvc-s", required: MiB);
        await CreateSnapshotAsync("snap-i", "pvc-s");
        var first = await CreateVolumeAsync("pvc-r", source: FromSnapshot("snap-i"));
        var second = await CreateVolumeAsync("pvc-r", source: FromSnapshot("snap-i"));
        Assert.Equal(first, second);
    }

    [Fact]
    public async Task DeleteSnapshot_WithRestoredVolume_KeepsTheVolumesData()
    {
        await CreateVolumeAsync("pvc-s", required: MiB);
        var data = Pattern(8192, 4);
        Pool.OpenDevice("pvc-s").Value.Write(0, data).ThrowIfFailed();
        await CreateSnapshotAsync("snap-s", "pvc-s");
        await CreateVolumeAsync("pvc-r", source: FromSnapshot("snap-s"));
        await Controller.DeleteSnapshotAsync(new DeleteSnapshotRequest { SnapshotId = "snap-s" }, cancellationToken: Token);
        await Controller.DeleteVolumeAsync(new DeleteVolumeRequest { VolumeId = "pvc-s" }, cancellationToken: Token);

        var read = new byte[data.Length];
        Pool.OpenDevice("pvc-r").Value.Read(0, read).ThrowIfFailed();
        Assert.Equal(data, read);
    }

    private async Task<ListSnapshotsResponse> ListAsync(ListSnapshotsRequest request) =>
        await Controller.ListSnapshotsAsync(request, cancellationToken: Token);
}
