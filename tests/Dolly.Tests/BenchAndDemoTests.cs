namespace Dolly.Tests;

public sealed class BenchAndDemoTests : CliTestBase
{
    [Fact]
    public async Task BenchEngineQuick_RunsEndToEndAndWritesValidJson()
    {
        string json = Path.Combine(Root, "bench.json");
        string scratch = Path.Combine(Root, "scratch");
        Directory.CreateDirectory(scratch);
        var r = await Ok("bench", "engine", "--quick", "--json", json, "--dir", scratch);
        Assert.Contains("snapshot create latency", r.Out, StringComparison.Ordinal);
        Assert.Contains("target(s) met", r.Out, StringComparison.Ordinal);
        Assert.Empty(Directory.EnumerateFileSystemEntries(scratch));

        using var doc = System.Text.Json.JsonDocument.Parse(await File.ReadAllTextAsync(json, TestContext.Current.CancellationToken));
        var root = doc.RootElement;
        Assert.True(root.GetProperty("quick").GetBoolean());
        Assert.StartsWith("dolly bench engine --quick", root.GetProperty("command").GetString(), StringComparison.Ordinal);
        Assert.True(root.GetProperty("machine").GetProperty("processors").GetInt32() > 0);
        var figures = root.GetProperty("figures").EnumerateArray().ToList();
        Assert.True(figures.Count >= 15, $"{figures.Count} figures");
        foreach (var group in new[] { "snapshot create latency", "clone create latency", "sequential 1 MiB", "random 4 KiB", "snapshots in the lineage", "metadata per GiB", "snapshot delete" })
        {
            Assert.Contains(figures, f => f.GetProperty("group").GetString()!.Contains(group, StringComparison.Ordinal));
        }

        Assert.All(figures, f =>
        {
            Assert.True(double.IsFinite(f.GetProperty("value").GetDouble()) && f.GetProperty("value").GetDouble() >= 0);
            Assert.False(string.IsNullOrEmpty(f.GetProperty("unit").GetString()));
        });
        Assert.Contains(figures, f => f.GetProperty("pass").ValueKind is System.Text.Json.JsonValueKind.True or System.Text.Json.JsonValueKind.False);
    }

    [Fact]
    public async Task BenchEngine_MissingDirectory_FailsNamingIt()
    {
        string missing = Path.Combine(Root, "nope");
        await Fails(ExitCodes.NotFound, $"benchmark directory '{missing}' does not exist", "bench", "engine", "--quick", "--dir", missing);
        await Fails(ExitCodes.IoError, "cannot create a scratch directory in '/proc'", "bench", "engine", "--quick", "--dir", "/proc");
        await Fails(ExitCodes.InvalidArgument, "--only: unknown section 'nope'", "bench", "engine", "--quick", "--only", "nope");
    }

    [Fact]
    public async Task Demo_TellsTheStoryAndCleansUp()
    {
        string pool = Path.Combine(Root, "demo-pool");
        var r = await Ok("--pool", pool, "demo");
        foreach (var step in new[] { "$ dolly volume create web --size 10Gi", "$ dolly snapshot create web before-upgrade", "$ dolly volume revert web before-upgrade", "$ dolly volume list", "is clean" })
        {
            Assert.Contains(step, r.Out, StringComparison.Ordinal);
        }

        Assert.Contains("byte for byte", r.Out, StringComparison.Ordinal);
        var volumes = (await Ok("--pool", pool, "volume", "list", "-o", "json")).Json();
        Assert.Equal(2, volumes.GetArrayLength());
    }
}
