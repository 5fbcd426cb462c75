using Dolly.Storage;

namespace Dolly.Csi.Tests;

public sealed class ConcurrencyTests : CsiTestBase
{
    [Fact]
    public async Task CreateVolume_SameNameInParallel_OneVolumeSameAnswer()
    {
        var results = await Task.WhenAll(Enumerable.Range(0, 16).Select(_ => Task.Run(() => CreateVolumeAsync("pvc-race", required: 4 * MiB), Token)));
        Assert.All(results, v => Assert.Equal(results[0], v));
        Assert.Single(Pool.ListDevices(DeviceKind.Volume));
    }

    [Fact]
    public async Task CreateSnapshot_SameNameInParallel_OneSnapshotSameAnswer()
    {
        await CreateVolumeAsync("pvc-src", required: 4 * MiB);
        var results = await Task.WhenAll(Enumerable.Range(0, 16).Select(_ => Task.Run(() => CreateSnapshotAsync("snap-race", "pvc-src"), Token)));
        Assert.All(results, s => Assert.Equal(results[0], s));
        Assert.Single(Pool.ListDevices(DeviceKind.Snapshot));
    }

    [Fact]
    public async Task RestoresOfOneSnapshot_InParallel_AllCreated()
    {
        await CreateVolumeAsync("pvc-gold", required: 4 * MiB);
        Pool.OpenDevice("pvc-gold").Value.Write(0, Pattern(4096, 5)).ThrowIfFailed();
        await CreateSnapshotAsync("snap-gold", "pvc-gold");
        var restored = await Task.WhenAll(Enumerable.Range(0, 32).Select(i => Task.Run(() => CreateVolumeAsync($"pvc-r{i}", source: FromSnapshot("snap-gold")), Token)));
        Assert.Equal(32, restored.Select(v => v.VolumeId).Distinct().Count());
        var read = new byte[4096];
        Pool.OpenDevice("pvc-r31").Value.Read(0, read).ThrowIfFailed();
        Assert.Equal(Pattern(4096, 5), read);
    }
}
