namespace Dolly.Storage.Tests;

public sealed class PoolBasicsTests : IDisposable
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "dolly-test-" + Guid.NewGuid().ToString("N"));

    public void Dispose()
    {
        if (Directory.Exists(_dir))
        {
            Directory.Delete(_dir, recursive: true);
        }
    }

    private static byte[] Pattern(int length, int seed)
    {
        var data = new byte[length];
        new Random(seed).NextBytes(data);
        return data;
    }

    [Fact]
    public void WriteSnapshotCloneReopen_ReadsBackEachPointInTime()
    {
        using (var pool = Pool.Create(_dir).Value)
        {
            pool.CreateVolume("vol", 1 << 20).Value.Kind.ShouldBe(DeviceKind.Volume);
            var dev = pool.OpenDevice("vol").Value;
            var first = Pattern(200_000, 1);
            dev.Write(12_345, first).ThrowIfFailed();
            pool.CreateSnapshot("vol", "snap").Value.Kind.ShouldBe(DeviceKind.Snapshot);
            var second = Pattern(100_000, 2);
            dev.Write(50_000, second).ThrowIfFailed();
            pool.Clone("snap", "clone").Value.SourceName.ShouldBe("snap");

            var buf = new byte[first.Length];
            pool.OpenDevice("snap").Value.Read(12_345, buf).ThrowIfFailed();
            Assert.Equal(first, buf);
            pool.OpenDevice("clone").Value.Read(12_345, buf).ThrowIfFailed();
            Assert.Equal(first, buf);
            var report = pool.Check();
            Assert.True(report.IsClean, string.Join("\n", report.Problems));
        }

        using (var pool = Pool.Open(_dir).Value)
        {
            var buf = new byte[100_000];
            pool.OpenDevice("vol").Value.Read(50_000, buf).ThrowIfFailed();
            Assert.Equal(Pattern(100_000, 2), buf);
            var report = pool.Check();
            Assert.True(report.IsClean, string.Join("\n", report.Problems));
            Assert.True(report.DataBlocksVerified > 0);
        }

        var again = Pool.CheckDirectory(_dir);
        Assert.True(again.IsClean, string.Join("\n", again.Problems));
    }
}

internal static class ShouldExtensions
{
    public static void ShouldBe<T>(this T actual, T expected) => Assert.Equal(expected, actual);
}
