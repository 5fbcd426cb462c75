using Grpc.Core;
using P = Dolly.V1;

namespace Dolly.Csi.Tests;

/// <summary>dolly.v1.VolumeContentService over the driver's socket: the status codes its proto promises, dry runs, idempotence.</summary>
public sealed class VolumeContentServiceTests : CsiTestBase
{
    private void Arrange()
    {
        _ = Pool.CreateVolume("vol", 4 * MiB).Value;
        _ = Pool.CreateSnapshot("vol", "snap").Value;
        _ = Pool.CreateVolume("other", 2 * MiB).Value;
        _ = Pool.CreateSnapshot("other", "other-snap").Value;
        _ = Pool.CreateVolume("large", 8 * MiB).Value;
        _ = Pool.CreateSnapshot("large", "large-snap").Value;
    }

    public static TheoryData<string, string, string, bool, StatusCode> Refusals() => new()
    {
        { "", "vol", "snap", false, StatusCode.InvalidArgument },
        { "r1", "", "snap", false, StatusCode.InvalidArgument },
        { "r1", "vol", "", false, StatusCode.InvalidArgument },
        { "no/slash", "vol", "snap", false, StatusCode.InvalidArgument },
        { "r1", "missing", "snap", false, StatusCode.NotFound },
        { "r1", "vol", "missing", false, StatusCode.NotFound },
        { "r1", "vol", "other-snap", false, StatusCode.FailedPrecondition },
        { "r1", "vol", "large-snap", true, StatusCode.OutOfRange },
    };

    [Theory]
    [MemberData(nameof(Refusals))]
    public async Task ReplaceContent_Refused_WithTheDocumentedCode_DryRunToo_NothingRecorded(string id, string volume, string snapshot, bool allowForeign, StatusCode code)
    {
        using var channel = Connect(SocketPath);
        var content = new P.VolumeContentService.VolumeContentServiceClient(channel);
        Arrange();
        foreach (bool dryRun in new[] { true, false })
        {
            var ex = await Assert.ThrowsAsync<RpcException>(() => content.ReplaceContentAsync(
                new P.ReplaceContentRequest { RequestId = id, VolumeId = volume, SnapshotId = snapshot, AllowForeignSnapshot = allowForeign, DryRun = dryRun },
                cancellationToken: Token).ResponseAsync);
            Assert.Equal(code, ex.StatusCode);
        }

        if (id.Length > 0 && !id.Contains('/', StringComparison.Ordinal))
        {
            Assert.Equal(StatusCode.NotFound, (await Assert.ThrowsAsync<RpcException>(() => content.GetContentRequestAsync(new P.GetContentRequestRequest { RequestId = id }, cancellationToken: Token).ResponseAsync)).StatusCode);
        }
    }

    [Fact]
    public async Task ReplaceContent_DryRunChangesNothing_RealRunSucceeds_RepeatIsIdempotent_OtherFieldsConflict_DeleteForgets()
    {
        using var channel = Connect(SocketPath);
        var content = new P.VolumeContentService.VolumeContentServiceClient(channel);
        Arrange();
        var data = new byte[4096];
        new Random(1).NextBytes(data);
        Pool.OpenDevice("vol").Value.Write(0, data).ThrowIfFailed();

        var dry = await content.ReplaceContentAsync(new P.ReplaceContentRequest { RequestId = "r1", VolumeId = "vol", SnapshotId = "snap", DryRun = true }, cancellationToken: Token);
        Assert.Equal(P.ContentRequestPhase.Unspecified, dry.Phase);
        Assert.Equal(StatusCode.NotFound, (await Assert.ThrowsAsync<RpcException>(() => content.GetContentRequestAsync(new P.GetContentRequestRequest { RequestId = "r1" }, cancellationToken: Token).ResponseAsync)).StatusCode);

        var done = await content.ReplaceContentAsync(new P.ReplaceContentRequest { RequestId = "r1", VolumeId = "vol", SnapshotId = "snap" }, cancellationToken: Token);
        Assert.Equal(P.ContentRequestPhase.Succeeded, done.Phase);
        Assert.NotNull(done.CompletedAt);
        var read = new byte[4096];
        Pool.OpenDevice("vol").Value.Read(0, read).ThrowIfFailed();
        Assert.All(read, b => Assert.Equal(0, b));

        var again = await content.ReplaceContentAsync(new P.ReplaceContentRequest { RequestId = "r1", VolumeId = "vol", SnapshotId = "snap" }, cancellationToken: Token);
        Assert.Equal((P.ContentRequestPhase.Succeeded, done.CompletedAt), (again.Phase, again.CompletedAt));
        var conflict = await Assert.ThrowsAsync<RpcException>(() => content.ReplaceContentAsync(new P.ReplaceContentRequest { RequestId = "r1", VolumeId = "vol", SnapshotId = "snap", AllowForeignSnapshot = true }, cancellationToken: Token).ResponseAsync);
        Assert.Equal(StatusCode.AlreadyExists, conflict.StatusCode);

        Assert.Equal(P.ContentRequestPhase.Succeeded, (await content.DeleteContentRequestAsync(new P.DeleteContentRequestRequest { RequestId = "r1" }, cancellationToken: Token)).Phase);
        Assert.Equal(P.ContentRequestPhase.Unspecified, (await content.DeleteContentRequestAsync(new P.DeleteContentRequestRequest { RequestId = "r1" }, cancellationToken: Token)).Phase);
    }

    [Fact]
    public async Task GetVolumeHolders_EmptyForADetachedVolume_NotFoundForAnUnknownOne()
    {
        using var channel = Connect(SocketPath);
        var content = new P.VolumeContentService.VolumeContentServiceClient(channel);
        Arrange();
        Assert.Empty((await content.GetVolumeHoldersAsync(new P.GetVolumeHoldersRequest { VolumeId = "vol" }, cancellationToken: Token)).Holders);
        Assert.Equal(StatusCode.NotFound, (await Assert.ThrowsAsync<RpcException>(() => content.GetVolumeHoldersAsync(new P.GetVolumeHoldersRequest { VolumeId = "snap" }, cancellationToken: Token).ResponseAsync)).StatusCode);
        Assert.Equal(StatusCode.InvalidArgument, (await Assert.ThrowsAsync<RpcException>(() => content.GetVolumeHoldersAsync(new P.GetVolumeHoldersRequest(), cancellationToken: Token).ResponseAsync)).StatusCode);
    }
}
