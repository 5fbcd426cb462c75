using System.Text.Json;

namespace Dolly.Tests;

public sealed class BenchScaleTests : CliTestBase
{
    private static CancellationToken Token => TestContext.Current.CancellationToken;

    [Fact]
    public async Task BenchScaleQuick_MeasuresEveryPhase_AndLeavesNothingBehind()
    {
        string json = Path.Combine(Root, "scale.json");
        string scratch = Path.Combine(Root, "scratch");
        Directory.CreateDirectory(scratch);
        var r = await Ok("bench", "scale", "--quick", "--json", json, "--dir", scratch);
        Assert.Contains("target(s) met", r.Out, StringComparison.Ordinal);
        Assert.Empty(Directory.EnumerateFileSystemEntries(scratch));

        using var doc = JsonDocument.Parse(await File.ReadAllTextAsync(json, Token));
        var figures = doc.RootElement.GetProperty("figures").EnumerateArray().ToList();
        string[] names = [.. figures.Select(f => f.GetProperty("name").GetString()!)];
        Assert.Contains("p50, no unrelated snapshots", names);
        Assert.Contains("p50, 20 unrelated snapshots", names);
        Assert.Contains("p50, 200 unrelated snapshots", names);
        Assert.Contains("200 / none (p50)", names);
        Assert.Contains("200 / 20", names);

        // Every ratio is the quotient of the figures it compares (the JSON keeps four decimals).
        double Value(string group, string name) =>
            figures.Single(f => f.GetProperty("group").GetString()!.StartsWith(group, StringComparison.Ordinal) && f.GetProperty("name").GetString() == name).GetProperty("value").GetDouble();
        Assert.Equal(
            Value("VolumeSnapshot apply", "p50, 200 unrelated snapshots") / Value("VolumeSnapshot apply", "p50, no unrelated snapshots"),
            Value("VolumeSnapshot apply", "200 / none (p50)"),
            tolerance: 1e-3);
        Assert.Equal(Value("process CPU", "200 unrelated snapshots") / Value("process CPU", "20 unrelated snapshots"), Value("process CPU", "200 / 20"), tolerance: 1e-3);
        Assert.All(figures.Where(f => f.GetProperty("display").GetString() != "skipped"), f => Assert.True(f.GetProperty("value").GetDouble() > 0, f.ToString()));
    }

    [Fact]
    public async Task BenchScale_TooFewObjects_OrABadDirectory_FailsNamingIt()
    {
        await Fails(ExitCodes.InvalidArgument, "--objects must be more than 100", "bench", "scale", "--objects", "100");
        string missing = Path.Combine(Root, "nope");
        await Fails(ExitCodes.NotFound, $"benchmark directory '{missing}' does not exist", "bench", "scale", "--quick", "--dir", missing);
    }
}
