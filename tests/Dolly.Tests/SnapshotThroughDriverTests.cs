using Dolly.Csi;
using Dolly.Storage;

namespace Dolly.Tests;

/// <summary>
/// <c>dolly snapshot create</c> while a server holds the pool: through its CSI driver when csi.sock is there,
/// with the same meaning and errors as without one; the plain "in use" error otherwise.
/// </summary>
public sealed class SnapshotThroughDriverTests : CliTestBase
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    private async Task<(Pool Pool, CsiServer Csi)> HoldPoolAsync()
    {
        await Ok("volume", "create", "golden", "--size", "1Gi");
        var pool = Pool.Open(PoolDir).Value;
        var csi = new CsiServer(pool, new CsiServerOptions { SocketPath = Path.Combine(PoolDir, "csi.sock") });
        await csi.StartAsync(Ct);
        return (pool, csi);
    }

    [Fact]
    public async Task WhileAServerHoldsThePool_TheSnapshotIsTakenThroughItsDriver()
    {
        var (pool, csi) = await HoldPoolAsync();
        try
        {
            var created = await Ok("snapshot", "create", "golden", "golden-v1");
            Assert.Contains("created snapshot 'golden-v1' of volume 'golden' (1 GiB)", created.Out, StringComparison.Ordinal);
            Assert.Contains("through the CSI driver of the dolly up holding the pool", created.Out, StringComparison.Ordinal);
            var snapshot = pool.GetDevice("golden-v1").Value;
            Assert.Equal(DeviceKind.Snapshot, snapshot.Kind);

            await Fails(ExitCodes.AlreadyExists, "a snapshot named 'golden-v1' already exists (of volume 'golden')", "snapshot", "create", "golden", "golden-v1");
            await Fails(ExitCodes.NotFound, "the CSI driver of the dolly up holding the pool refused", "snapshot", "create", "missing", "m-1");
            await Fails(ExitCodes.InvalidName, "snapshot name", "snapshot", "create", "golden", "Not_A_Name");
        }
        finally
        {
            await csi.DisposeAsync();
            pool.Dispose();
        }

        // Without a server the pool opens again and holds the snapshot the driver took.
        Assert.Contains("golden-v1", (await Ok("snapshot", "list")).Out, StringComparison.Ordinal);
    }

    [Fact]
    public async Task WhileSomethingElseHoldsThePool_InUseIsReported()
    {
        await Ok("volume", "create", "golden", "--size", "1Gi");
        using var pool = Pool.Open(PoolDir).Value;
        await Fails(ExitCodes.InUse, "is in use by another process", "snapshot", "create", "golden", "golden-v1");
    }

    [Fact]
    public async Task AStaleDriverSocket_SaysTheDriverDoesNotAnswer()
    {
        await Ok("volume", "create", "golden", "--size", "1Gi");
        using var pool = Pool.Open(PoolDir).Value;
        await File.WriteAllTextAsync(Path.Combine(PoolDir, "csi.sock"), "", Ct);
        await Fails(ExitCodes.InUse, "does not answer", "snapshot", "create", "golden", "golden-v1");
    }
}
