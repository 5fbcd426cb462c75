using Dolly.Csi.V1;
using Dolly.Storage;
using Grpc.Core;

namespace Dolly.Csi.Tests;

public sealed class SnapshotMetadataTests : CsiTestBase
{
    // The pool's default block: allocation and change tracking are per block.
    private const int Block = 64 * 1024;

    [Fact]
    public async Task GetMetadataAllocated_ReturnsWrittenBlocksInOrder()
    {
        await CreateVolumeAsync("pvc-m", required: 16 * MiB);
        var device = Pool.OpenDevice("pvc-m").Value;
        device.Write(0, Pattern(2 * Block, 1)).ThrowIfFailed();
        device.Write(8 * MiB, Pattern(Block, 2)).ThrowIfFailed();
        await CreateSnapshotAsync("snap-m", "pvc-m");

        var responses = await AllocatedAsync(new GetMetadataAllocatedRequest { SnapshotId = "snap-m" });
        Assert.All(responses, r =>
        {
            Assert.Equal(BlockMetadataType.VariableLength, r.BlockMetadataType);
            Assert.Equal(16 * MiB, r.VolumeCapacityBytes);
        });
        Assert.Equal([(0L, 2L * Block), (8 * MiB, Block)], Flatten(responses.SelectMany(r => r.BlockMetadata)));
    }

    [Fact]
    public async Task GetMetadataAllocated_MaxResultsAndStartingOffset_PageAndResume()
    {
        await CreateVolumeAsync("pvc-m", required: 16 * MiB);
        var device = Pool.OpenDevice("pvc-m").Value;
        for (int i = 0; i < 5; i++)
        {
            device.Write(i * 2L * MiB, Pattern(Block, i)).ThrowIfFailed();
        }

        await CreateSnapshotAsync("snap-m", "pvc-m");
        var paged = await AllocatedAsync(new GetMetadataAllocatedRequest { SnapshotId = "snap-m", MaxResults = 2 });
        Assert.Equal([2, 2, 1], paged.Select(r => r.BlockMetadata.Count));

        var resumed = await AllocatedAsync(new GetMetadataAllocatedRequest { SnapshotId = "snap-m", StartingOffset = 5 * MiB });
        Assert.Equal([(6 * MiB, (long)Block), (8 * MiB, Block)], Flatten(resumed.SelectMany(r => r.BlockMetadata)));
    }

    [Fact]
    public async Task GetMetadataAllocated_BadRequests()
    {
        await CreateVolumeAsync("pvc-m", required: MiB);
        await CreateSnapshotAsync("snap-m", "pvc-m");
        await AssertStatus(StatusCode.InvalidArgument, () => AllocatedAsync(new GetMetadataAllocatedRequest()), "snapshot_id");
        await AssertStatus(StatusCode.NotFound, () => AllocatedAsync(new GetMetadataAllocatedRequest { SnapshotId = "snap-none" }), "snap-none");
        await AssertStatus(StatusCode.NotFound, () => AllocatedAsync(new GetMetadataAllocatedRequest { SnapshotId = "pvc-m" }), "pvc-m");
        await AssertStatus(StatusCode.OutOfRange, () => AllocatedAsync(new GetMetadataAllocatedRequest { SnapshotId = "snap-m", StartingOffset = MiB }), "snap-m");
        await AssertStatus(StatusCode.InvalidArgument, () => AllocatedAsync(new GetMetadataAllocatedRequest { SnapshotId = "snap-m", MaxResults = -1 }), "max_results");
    }

    [Fact]
    public async Task GetMetadataDelta_ReturnsOnlyBlocksChangedBetweenSnapshots()
    {
        await CreateVolumeAsync("pvc-d", required: 16 * MiB);
        var device = Pool.OpenDevice("pvc-d").Value;
        device.Write(0, Pattern(4 * Block, 1)).ThrowIfFailed();
        await CreateSnapshotAsync("snap-1", "pvc-d");
        device.Write(Block, Pattern(Block, 2)).ThrowIfFailed();
        device.Write(10 * MiB, Pattern(Block, 3)).ThrowIfFailed();
        await CreateSnapshotAsync("snap-2", "pvc-d");

        var responses = await DeltaAsync(new GetMetadataDeltaRequest { BaseSnapshotId = "snap-1", TargetSnapshotId = "snap-2" });
        Assert.Equal([((long)Block, (long)Block), (10 * MiB, Block)], Flatten(responses.SelectMany(r => r.BlockMetadata)));
        Assert.All(responses, r => Assert.Equal(16 * MiB, r.VolumeCapacityBytes));

        Assert.Empty((await DeltaAsync(new GetMetadataDeltaRequest { BaseSnapshotId = "snap-2", TargetSnapshotId = "snap-2" })).SelectMany(r => r.BlockMetadata));
    }

    [Fact]
    public async Task GetMetadataDelta_BadRequests()
    {
        await CreateVolumeAsync("pvc-1", required: MiB);
        await CreateVolumeAsync("pvc-2", required: MiB);
        await CreateSnapshotAsync("snap-1", "pvc-1");
        await CreateSnapshotAsync("snap-2", "pvc-2");
        await AssertStatus(StatusCode.InvalidArgument, () => DeltaAsync(new GetMetadataDeltaRequest { TargetSnapshotId = "snap-1" }), "base_snapshot_id");
        await AssertStatus(StatusCode.NotFound, () => DeltaAsync(new GetMetadataDeltaRequest { BaseSnapshotId = "snap-none", TargetSnapshotId = "snap-1" }), "snap-none");
        await AssertStatus(StatusCode.InvalidArgument, () => DeltaAsync(new GetMetadataDeltaRequest { BaseSnapshotId = "snap-1", TargetSnapshotId = "snap-2" }), "snap-1", "snap-2");
    }

    private static List<(long Offset, long Size)> Flatten(IEnumerable<BlockMetadata> blocks) =>
        blocks.Select(b => (b.ByteOffset, b.SizeBytes)).ToList();

    private async Task<List<GetMetadataAllocatedResponse>> AllocatedAsync(GetMetadataAllocatedRequest request)
    {
        using var call = Metadata.GetMetadataAllocated(request, cancellationToken: Token);
        var all = new List<GetMetadataAllocatedResponse>();
        await foreach (var r in call.ResponseStream.ReadAllAsync(Token))
        {
            all.Add(r);
        }

        return all;
    }

    private async Task<List<GetMetadataDeltaResponse>> DeltaAsync(GetMetadataDeltaRequest request)
    {
        using var call = Metadata.GetMetadataDelta(request, cancellationToken: Token);
        var all = new List<GetMetadataDeltaResponse>();
        await foreach (var r in call.ResponseStream.ReadAllAsync(Token))
        {
            all.Add(r);
        }

        return all;
    }
}
