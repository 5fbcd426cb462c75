using Dolly.Csi.V1;
using Dolly.Storage;
using Grpc.Core;
using RpcType = Dolly.Csi.V1.ControllerServiceCapability.Types.RPC.Types.Type;

namespace Dolly.Csi.Tests;

public sealed class VolumeTests : CsiTestBase
{
    [Fact]
    public async Task ControllerGetCapabilities_ListsTheImplementedRpcs()
    {
        var caps = await Controller.ControllerGetCapabilitiesAsync(new ControllerGetCapabilitiesRequest(), cancellationToken: Token);
        var types = caps.Capabilities.Select(c => c.Rpc.Type).ToHashSet();
        RpcType[] expected =
        [
            RpcType.CreateDeleteVolume, RpcType.CreateDeleteSnapshot, RpcType.ListSnapshots, RpcType.ListVolumes,
            RpcType.GetCapacity, RpcType.CloneVolume, RpcType.ExpandVolume, RpcType.GetVolume,
        ];
        Assert.All(expected, t => Assert.Contains(t, types));
        Assert.DoesNotContain(RpcType.PublishUnpublishVolume, types);
    }

    [Fact]
    public async Task CreateVolume_NoCapacity_Is1GiBAndInThePool()
    {
        var v = await CreateVolumeAsync("pvc-1");
        Assert.Equal("pvc-1", v.VolumeId);
        Assert.Equal(GiB, v.CapacityBytes);
        Assert.Null(v.ContentSource);
        var device = Pool.GetDevice("pvc-1").Value;
        Assert.Equal(DeviceKind.Volume, device.Kind);
        Assert.Equal(GiB, device.Size);
    }

    [Fact]
    public async Task CreateVolume_CapacityRoundedUpTo4096()
    {
        var v = await CreateVolumeAsync("pvc-odd", required: 10 * MiB + 1);
        Assert.Equal(10 * MiB + 4096, v.CapacityBytes);
    }

    [Fact]
    public async Task CreateVolume_OnlyLimitBelowDefault_UsesLimit()
    {
        var v = (await Controller.CreateVolumeAsync(VolumeRequest("pvc-lim", limit: 8 * MiB), cancellationToken: Token)).Volume;
        Assert.Equal(8 * MiB, v.CapacityBytes);
    }

    [Fact]
    public async Task CreateVolume_RequiredAboveLimit_OutOfRange()
    {
        await AssertStatus(StatusCode.OutOfRange, () => Controller.CreateVolumeAsync(VolumeRequest("pvc-x", required: 2 * MiB, limit: MiB), cancellationToken: Token).ResponseAsync, "pvc-x");
    }

    [Fact]
    public async Task CreateVolume_NoName_InvalidArgument()
    {
        await AssertStatus(StatusCode.InvalidArgument, () => Controller.CreateVolumeAsync(VolumeRequest(""), cancellationToken: Token).ResponseAsync, "name");
    }

    [Fact]
    public async Task CreateVolume_NoCapabilities_InvalidArgument()
    {
        var request = new CreateVolumeRequest { Name = "pvc-nocaps" };
        await AssertStatus(StatusCode.InvalidArgument, () => Controller.CreateVolumeAsync(request, cancellationToken: Token).ResponseAsync, "pvc-nocaps", "volume_capabilities");
    }

    [Fact]
    public async Task CreateVolume_MultiNodeWriter_InvalidArgument()
    {
        var request = new CreateVolumeRequest { Name = "pvc-rwx" };
        request.VolumeCapabilities.Add(MountCapability(VolumeCapability.Types.AccessMode.Types.Mode.MultiNodeMultiWriter));
        await AssertStatus(StatusCode.InvalidArgument, () => Controller.CreateVolumeAsync(request, cancellationToken: Token).ResponseAsync, "pvc-rwx", "MultiNodeMultiWriter");
    }

    [Fact]
    public async Task CreateVolume_SameNameAndCapacity_ReturnsSameVolume()
    {
        var first = await CreateVolumeAsync("pvc-same", required: 16 * MiB);
        var second = await CreateVolumeAsync("pvc-same", required: 16 * MiB);
        Assert.Equal(first.VolumeId, second.VolumeId);
        Assert.Equal(first.CapacityBytes, second.CapacityBytes);
        Assert.Single(Pool.ListDevices(DeviceKind.Volume));
    }

    [Fact]
    public async Task CreateVolume_SameNameOtherCapacity_AlreadyExists()
    {
        await CreateVolumeAsync("pvc-cap", required: 16 * MiB);
        await AssertStatus(StatusCode.AlreadyExists, () => Controller.CreateVolumeAsync(VolumeRequest("pvc-cap", 32 * MiB, 32 * MiB), cancellationToken: Token).ResponseAsync, "pvc-cap");
    }

    [Fact]
    public async Task CreateVolume_SameNameOtherSource_AlreadyExists()
    {
        await CreateVolumeAsync("pvc-a", required: MiB);
        await CreateVolumeAsync("pvc-b", required: MiB);
        await AssertStatus(StatusCode.AlreadyExists, () => Controller.CreateVolumeAsync(VolumeRequest("pvc-b", MiB, source: FromVolume("pvc-a")), cancellationToken: Token).ResponseAsync, "pvc-b");
    }

    [Fact]
    public async Task CreateVolume_NameOfASnapshot_AlreadyExists()
    {
        await CreateVolumeAsync("pvc-src", required: MiB);
        await CreateSnapshotAsync("snap-taken", "pvc-src");
        await AssertStatus(StatusCode.AlreadyExists, () => Controller.CreateVolumeAsync(VolumeRequest("snap-taken", MiB), cancellationToken: Token).ResponseAsync, "snap-taken");
    }

    [Fact]
    public async Task CreateVolume_NameNotDns1123_GetsStableDerivedId()
    {
        var first = await CreateVolumeAsync("CreateVolume_Test-Name", required: MiB);
        Assert.NotEqual("CreateVolume_Test-Name", first.VolumeId);
        Assert.Null(Names.Validate(first.VolumeId));
        var again = await CreateVolumeAsync("CreateVolume_Test-Name", required: MiB);
        Assert.Equal(first.VolumeId, again.VolumeId);
        Assert.True(Pool.GetDevice(first.VolumeId).IsOk);
    }

    [Fact]
    public async Task CreateVolume_FromVolume_ClonesContentAndReportsSource()
    {
        await CreateVolumeAsync("pvc-origin", required: 4 * MiB);
        var data = Pattern(64 * 1024, 7);
        Pool.OpenDevice("pvc-origin").Value.Write(MiB, data).ThrowIfFailed();

        var clone = await CreateVolumeAsync("pvc-clone", source: FromVolume("pvc-origin"));
        Assert.Equal(4 * MiB, clone.CapacityBytes);
        Assert.Equal("pvc-origin", clone.ContentSource.Volume.VolumeId);

        var read = new byte[data.Length];
        Pool.OpenDevice("pvc-clone").Value.Read(MiB, read).ThrowIfFailed();
        Assert.Equal(data, read);
    }

    [Fact]
    public async Task CreateVolume_FromMissingVolume_NotFound()
    {
        await AssertStatus(StatusCode.NotFound, () => Controller.CreateVolumeAsync(VolumeRequest("pvc-c", MiB, source: FromVolume("pvc-missing")), cancellationToken: Token).ResponseAsync, "pvc-missing");
    }

    [Fact]
    public async Task CreateVolume_FromVolumeNamedBySnapshotId_NotFound()
    {
        await CreateVolumeAsync("pvc-v", required: MiB);
        await CreateSnapshotAsync("snap-v", "pvc-v");
        await AssertStatus(StatusCode.NotFound, () => Controller.CreateVolumeAsync(VolumeRequest("pvc-c", MiB, source: FromVolume("snap-v")), cancellationToken: Token).ResponseAsync, "snap-v");
    }

    [Fact]
    public async Task CreateVolume_EmptySourceId_InvalidArgument()
    {
        await AssertStatus(StatusCode.InvalidArgument, () => Controller.CreateVolumeAsync(VolumeRequest("pvc-c", MiB, source: FromSnapshot("")), cancellationToken: Token).ResponseAsync, "pvc-c", "snapshot");
    }

    [Fact]
    public async Task DeleteVolume_RemovesIt_AndUnknownIdIsOk()
    {
        await CreateVolumeAsync("pvc-del", required: MiB);
        await Controller.DeleteVolumeAsync(new DeleteVolumeRequest { VolumeId = "pvc-del" }, cancellationToken: Token);
        Assert.Equal(StorageErrorCode.NotFound, Pool.GetDevice("pvc-del").Error?.Code);

        await Controller.DeleteVolumeAsync(new DeleteVolumeRequest { VolumeId = "pvc-del" }, cancellationToken: Token);
        await Controller.DeleteVolumeAsync(new DeleteVolumeRequest { VolumeId = "Not_A_Valid/Name" }, cancellationToken: Token);
    }

    [Fact]
    public async Task DeleteVolume_SnapshotId_LeavesTheSnapshot()
    {
        await CreateVolumeAsync("pvc-keep", required: MiB);
        await CreateSnapshotAsync("snap-keep", "pvc-keep");
        await Controller.DeleteVolumeAsync(new DeleteVolumeRequest { VolumeId = "snap-keep" }, cancellationToken: Token);
        Assert.True(Pool.GetDevice("snap-keep").IsOk);
    }

    [Fact]
    public async Task DeleteVolume_NoId_InvalidArgument()
    {
        await AssertStatus(StatusCode.InvalidArgument, () => Controller.DeleteVolumeAsync(new DeleteVolumeRequest(), cancellationToken: Token).ResponseAsync, "volume_id");
    }

    [Fact]
    public async Task ValidateVolumeCapabilities_SupportedConfirmed_UnsupportedNot()
    {
        await CreateVolumeAsync("pvc-val", required: MiB);
        var ok = new ValidateVolumeCapabilitiesRequest { VolumeId = "pvc-val" };
        ok.VolumeCapabilities.Add(MountCapability());
        ok.VolumeCapabilities.Add(BlockCapability());
        var confirmed = await Controller.ValidateVolumeCapabilitiesAsync(ok, cancellationToken: Token);
        Assert.NotNull(confirmed.Confirmed);
        Assert.Equal(2, confirmed.Confirmed.VolumeCapabilities.Count);

        var rwx = new ValidateVolumeCapabilitiesRequest { VolumeId = "pvc-val" };
        rwx.VolumeCapabilities.Add(MountCapability(VolumeCapability.Types.AccessMode.Types.Mode.MultiNodeMultiWriter));
        var refused = await Controller.ValidateVolumeCapabilitiesAsync(rwx, cancellationToken: Token);
        Assert.Null(refused.Confirmed);
        Assert.Contains("MultiNodeMultiWriter", refused.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task ValidateVolumeCapabilities_BadRequests_InvalidArgumentOrNotFound()
    {
        var noId = new ValidateVolumeCapabilitiesRequest();
        noId.VolumeCapabilities.Add(MountCapability());
        await AssertStatus(StatusCode.InvalidArgument, () => Controller.ValidateVolumeCapabilitiesAsync(noId, cancellationToken: Token).ResponseAsync, "volume_id");

        await CreateVolumeAsync("pvc-val2", required: MiB);
        await AssertStatus(StatusCode.InvalidArgument, () => Controller.ValidateVolumeCapabilitiesAsync(new ValidateVolumeCapabilitiesRequest { VolumeId = "pvc-val2" }, cancellationToken: Token).ResponseAsync, "pvc-val2");

        var missing = new ValidateVolumeCapabilitiesRequest { VolumeId = "pvc-missing" };
        missing.VolumeCapabilities.Add(MountCapability());
        await AssertStatus(StatusCode.NotFound, () => Controller.ValidateVolumeCapabilitiesAsync(missing, cancellationToken: Token).ResponseAsync, "pvc-missing");
    }

    [Fact]
    public async Task ListVolumes_PaginatesInNameOrder()
    {
        for (int i = 0; i < 5; i++)
        {
            await CreateVolumeAsync($"pvc-{i}", required: MiB);
        }

        var first = await Controller.ListVolumesAsync(new ListVolumesRequest { MaxEntries = 2 }, cancellationToken: Token);
        Assert.Equal(["pvc-0", "pvc-1"], first.Entries.Select(e => e.Volume.VolumeId));
        Assert.NotEmpty(first.NextToken);

        var second = await Controller.ListVolumesAsync(new ListVolumesRequest { MaxEntries = 2, StartingToken = first.NextToken }, cancellationToken: Token);
        Assert.Equal(["pvc-2", "pvc-3"], second.Entries.Select(e => e.Volume.VolumeId));

        var rest = await Controller.ListVolumesAsync(new ListVolumesRequest { StartingToken = second.NextToken }, cancellationToken: Token);
        Assert.Equal(["pvc-4"], rest.Entries.Select(e => e.Volume.VolumeId));
        Assert.Empty(rest.NextToken);

        var all = await Controller.ListVolumesAsync(new ListVolumesRequest(), cancellationToken: Token);
        Assert.Equal(5, all.Entries.Count);
        Assert.Empty(all.NextToken);
        Assert.All(all.Entries, e => Assert.Equal(MiB, e.Volume.CapacityBytes));
    }

    [Fact]
    public async Task ListVolumes_ExcludesSnapshots_AndReportsCloneSource()
    {
        await CreateVolumeAsync("pvc-l", required: MiB);
        await CreateSnapshotAsync("snap-l", "pvc-l");
        await CreateVolumeAsync("pvc-r", source: FromSnapshot("snap-l"));
        var all = await Controller.ListVolumesAsync(new ListVolumesRequest(), cancellationToken: Token);
        Assert.Equal(["pvc-l", "pvc-r"], all.Entries.Select(e => e.Volume.VolumeId));
        Assert.Equal("snap-l", all.Entries[1].Volume.ContentSource.Snapshot.SnapshotId);
    }

    [Fact]
    public async Task ListVolumes_LastOfAPageDeletedAndOthersAdded_NextPageNeitherRepeatsNorSkips()
    {
        for (int i = 0; i < 4; i++)
        {
            await CreateVolumeAsync($"pvc-{i}", required: MiB);
        }

        var first = await Controller.ListVolumesAsync(new ListVolumesRequest { MaxEntries = 2 }, cancellationToken: Token);
        Assert.Equal(["pvc-0", "pvc-1"], first.Entries.Select(e => e.Volume.VolumeId));
        await Controller.DeleteVolumeAsync(new DeleteVolumeRequest { VolumeId = "pvc-1" }, cancellationToken: Token);
        await CreateVolumeAsync("pvc-00", required: MiB);
        await CreateVolumeAsync("pvc-5", required: MiB);

        var rest = await Controller.ListVolumesAsync(new ListVolumesRequest { StartingToken = first.NextToken }, cancellationToken: Token);
        Assert.Equal(["pvc-2", "pvc-3", "pvc-5"], rest.Entries.Select(e => e.Volume.VolumeId));
    }

    [Theory]
    [InlineData("invalid-token")]
    [InlineData("~Not_A_Name")]
    [InlineData("-1")]
    [InlineData("99")]
    public async Task ListVolumes_BadToken_Aborted(string token)
    {
        await CreateVolumeAsync("pvc-t", required: MiB);
        await AssertStatus(StatusCode.Aborted, () => Controller.ListVolumesAsync(new ListVolumesRequest { StartingToken = token }, cancellationToken: Token).ResponseAsync, token);
    }

    [Fact]
    public async Task ListVolumes_NegativeMaxEntries_InvalidArgument()
    {
        await AssertStatus(StatusCode.InvalidArgument, () => Controller.ListVolumesAsync(new ListVolumesRequest { MaxEntries = -1 }, cancellationToken: Token).ResponseAsync, "max_entries");
    }

    [Fact]
    public async Task GetCapacity_ReportsFreeSpaceAndLimits()
    {
        var capacity = await Controller.GetCapacityAsync(new GetCapacityRequest(), cancellationToken: Token);
        Assert.True(capacity.AvailableCapacity > 0);
        Assert.Equal(ByteSize.MaxVolumeSize, capacity.MaximumVolumeSize);
        Assert.Equal(4096, capacity.MinimumVolumeSize);
    }

    [Fact]
    public async Task ControllerGetVolume_ReturnsVolume_UnknownNotFound()
    {
        await CreateVolumeAsync("pvc-get", required: 2 * MiB);
        var got = await Controller.ControllerGetVolumeAsync(new ControllerGetVolumeRequest { VolumeId = "pvc-get" }, cancellationToken: Token);
        Assert.Equal("pvc-get", got.Volume.VolumeId);
        Assert.Equal(2 * MiB, got.Volume.CapacityBytes);
        Assert.NotNull(got.Status);

        await AssertStatus(StatusCode.NotFound, () => Controller.ControllerGetVolumeAsync(new ControllerGetVolumeRequest { VolumeId = "pvc-nope" }, cancellationToken: Token).ResponseAsync, "pvc-nope");
        await AssertStatus(StatusCode.InvalidArgument, () => Controller.ControllerGetVolumeAsync(new ControllerGetVolumeRequest(), cancellationToken: Token).ResponseAsync, "volume_id");
    }

    [Fact]
    public async Task ControllerExpandVolume_Grows_IsIdempotent_RefusesShrink()
    {
        await CreateVolumeAsync("pvc-grow", required: 4 * MiB);
        var grown = await Controller.ControllerExpandVolumeAsync(Expand("pvc-grow", 8 * MiB), cancellationToken: Token);
        Assert.Equal(8 * MiB, grown.CapacityBytes);
        Assert.True(grown.NodeExpansionRequired);
        Assert.Equal(8 * MiB, Pool.GetDevice("pvc-grow").Value.Size);

        var again = await Controller.ControllerExpandVolumeAsync(Expand("pvc-grow", 8 * MiB), cancellationToken: Token);
        Assert.Equal(8 * MiB, again.CapacityBytes);

        await AssertStatus(StatusCode.OutOfRange, () => Controller.ControllerExpandVolumeAsync(Expand("pvc-grow", 4 * MiB), cancellationToken: Token).ResponseAsync, "pvc-grow");
        Assert.Equal(8 * MiB, Pool.GetDevice("pvc-grow").Value.Size);
    }

    [Fact]
    public async Task ControllerExpandVolume_BlockVolume_NeedsNoNodeExpansion()
    {
        await CreateVolumeAsync("pvc-blk", required: 4 * MiB);
        var request = Expand("pvc-blk", 6 * MiB);
        request.VolumeCapability = BlockCapability();
        var grown = await Controller.ControllerExpandVolumeAsync(request, cancellationToken: Token);
        Assert.False(grown.NodeExpansionRequired);
    }

    [Fact]
    public async Task ControllerExpandVolume_BadRequests()
    {
        await AssertStatus(StatusCode.InvalidArgument, () => Controller.ControllerExpandVolumeAsync(new ControllerExpandVolumeRequest { CapacityRange = new CapacityRange { RequiredBytes = MiB } }, cancellationToken: Token).ResponseAsync, "volume_id");
        await CreateVolumeAsync("pvc-e", required: MiB);
        await AssertStatus(StatusCode.InvalidArgument, () => Controller.ControllerExpandVolumeAsync(new ControllerExpandVolumeRequest { VolumeId = "pvc-e" }, cancellationToken: Token).ResponseAsync, "capacity_range");
        await AssertStatus(StatusCode.NotFound, () => Controller.ControllerExpandVolumeAsync(Expand("pvc-unknown", 2 * MiB), cancellationToken: Token).ResponseAsync, "pvc-unknown");
    }

    private static ControllerExpandVolumeRequest Expand(string id, long bytes) =>
        new() { VolumeId = id, CapacityRange = new CapacityRange { RequiredBytes = bytes } };
}
