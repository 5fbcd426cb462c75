using Dolly.Storage;
using Grpc.Core;

namespace Dolly.Csi.Tests;

public sealed class StatusMappingTests
{
    [Theory]
    [InlineData(StorageErrorCode.NotFound, StatusCode.NotFound)]
    [InlineData(StorageErrorCode.AlreadyExists, StatusCode.AlreadyExists)]
    [InlineData(StorageErrorCode.InvalidName, StatusCode.InvalidArgument)]
    [InlineData(StorageErrorCode.InvalidArgument, StatusCode.InvalidArgument)]
    [InlineData(StorageErrorCode.NoSpace, StatusCode.ResourceExhausted)]
    [InlineData(StorageErrorCode.ReadOnly, StatusCode.FailedPrecondition)]
    [InlineData(StorageErrorCode.Corrupt, StatusCode.DataLoss)]
    [InlineData(StorageErrorCode.IoError, StatusCode.Internal)]
    public void From_StorageError_MapsToCsiCodeKeepingTheMessage(StorageErrorCode storage, StatusCode expected)
    {
        var e = CsiStatus.From(new StorageError(storage, "volume 'pvc-1': what happened"));
        Assert.Equal(expected, e.StatusCode);
        Assert.Equal("volume 'pvc-1': what happened", e.Status.Detail);
    }
}

public sealed class RestartTests : IDisposable
{
    private readonly string _dir = Path.Combine(Directory.Exists("/dev/shm") ? "/dev/shm" : Path.GetTempPath(), "dolly-csi-" + Guid.NewGuid().ToString("N"));

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public async Task IdsSurviveARestart_RetriedCreatesReturnTheSameObjects()
    {
        var token = TestContext.Current.CancellationToken;
        string poolDir = Path.Combine(_dir, "pool");
        string socket = Path.Combine(_dir, "csi.sock");
        V1.Volume volume;
        V1.Snapshot snapshot;
        using (var pool = Pool.Create(poolDir).Value)
        {
            await using var server = new CsiServer(pool, new CsiServerOptions { SocketPath = socket });
            await server.StartAsync(token);
            using var channel = CsiTestBase.Connect(socket);
            var controller = new V1.Controller.ControllerClient(channel);
            volume = (await controller.CreateVolumeAsync(Request("My_Volume"), cancellationToken: token)).Volume;
            snapshot = (await controller.CreateSnapshotAsync(new V1.CreateSnapshotRequest { Name = "My_Snapshot", SourceVolumeId = volume.VolumeId }, cancellationToken: token)).Snapshot;
        }

        using (var pool = Pool.Open(poolDir).Value)
        {
            await using var server = new CsiServer(pool, new CsiServerOptions { SocketPath = socket });
            await server.StartAsync(token);
            using var channel = CsiTestBase.Connect(socket);
            var controller = new V1.Controller.ControllerClient(channel);
            Assert.Equal(volume, (await controller.CreateVolumeAsync(Request("My_Volume"), cancellationToken: token)).Volume);
            Assert.Equal(snapshot, (await controller.CreateSnapshotAsync(new V1.CreateSnapshotRequest { Name = "My_Snapshot", SourceVolumeId = volume.VolumeId }, cancellationToken: token)).Snapshot);
        }
    }

    private static V1.CreateVolumeRequest Request(string name)
    {
        var request = new V1.CreateVolumeRequest { Name = name, CapacityRange = new V1.CapacityRange { RequiredBytes = 1 << 20 } };
        request.VolumeCapabilities.Add(new V1.VolumeCapability
        {
            Block = new V1.VolumeCapability.Types.BlockVolume(),
            AccessMode = new V1.VolumeCapability.Types.AccessMode { Mode = V1.VolumeCapability.Types.AccessMode.Types.Mode.SingleNodeWriter },
        });
        return request;
    }
}
