using Dolly.Api.Bench;

namespace Dolly.Api.Tests;

/// <summary>The benchmark behind `dolly bench api` runs end to end (at a small size).</summary>
public sealed class BenchmarkTests
{
    [Fact]
    public async Task RunAsync_SmallRun_ReportsEveryFigure()
    {
        var result = await ApiBenchmark.RunAsync(new ApiBenchmarkOptions(Objects: 200, Parallelism: 4, WatchSamples: 50), TestContext.Current.CancellationToken);
        Assert.Equal(200, result.Objects);
        Assert.True(result.CreatesPerSecond > 0);
        Assert.NotNull(result.KubectlGetAllSeconds);
        Assert.True(result.WatchLatencyP50Milliseconds > 0 && result.WatchLatencyP99Milliseconds >= result.WatchLatencyP50Milliseconds);
        Assert.True(result.ResidentBytes > 0);
    }
}
