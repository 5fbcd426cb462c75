namespace Dolly.Tests;

public sealed class BenchNbdApiTests : CliTestBase
{
    [Fact]
    public async Task BenchNbdQuick_AgainstNbdkit_WritesFiguresWithTargets()
    {
        if (!File.Exists("/usr/bin/nbdkit") || !File.Exists("/usr/bin/nbdcopy") || !File.Exists("/usr/bin/fio"))
        {
            Assert.Skip("nbdkit, nbdcopy or fio is not installed; scripts/install-test-deps.sh installs them");
        }

        string json = Path.Combine(Root, "nbd.json");
        string scratch = Path.Combine(Root, "scratch");
        Directory.CreateDirectory(scratch);
        var r = await Ok("bench", "nbd", "--quick", "--json", json, "--dir", scratch);
        Assert.Contains("dolly / nbdkit", r.Out, StringComparison.Ordinal);
        Assert.Empty(Directory.EnumerateFileSystemEntries(scratch));

        using var doc = System.Text.Json.JsonDocument.Parse(await File.ReadAllTextAsync(json, TestContext.Current.CancellationToken));
        var figures = doc.RootElement.GetProperty("figures").EnumerateArray().ToList();
        foreach (var name in new[] { "write: dolly / nbdkit", "read: dolly / nbdkit", "randread: dolly / nbdkit", "randwrite: dolly / nbdkit", "dolly: 1 vs 4 connections",
            "flush after every write, iodepth 1: dolly / nbdkit", "flush every 32 writes, iodepth 4: dolly / nbdkit", "dolly with metrics / without" })
        {
            var f = Assert.Single(figures, f => f.GetProperty("name").GetString() == name);
            double value = f.GetProperty("value").GetDouble();
            Assert.True(double.IsFinite(value) && value > 0, $"{name}: {value}");
        }
    }

    [Fact]
    public async Task BenchNbd_BadSize_FailsNamingIt()
    {
        await Fails(ExitCodes.InvalidArgument, "--size 1000 must be a positive multiple of 4096", "bench", "nbd", "--size", "1000");
        await Fails(ExitCodes.InvalidArgument, "--size", "bench", "nbd", "--size", "lots");
    }

    [Fact]
    public async Task BenchApiQuick_MeasuresCreatesKubectlAndWatches()
    {
        string json = Path.Combine(Root, "api.json");
        var r = await Ok("bench", "api", "--quick", "--json", json);
        Assert.Contains("watch event latency p50", r.Out, StringComparison.Ordinal);
        using var doc = System.Text.Json.JsonDocument.Parse(await File.ReadAllTextAsync(json, TestContext.Current.CancellationToken));
        var figures = doc.RootElement.GetProperty("figures").EnumerateArray().ToList();
        var creates = Assert.Single(figures, f => f.GetProperty("name").GetString()!.StartsWith("create 500", StringComparison.Ordinal));
        Assert.True(creates.GetProperty("value").GetDouble() > 0);
        Assert.Contains(figures, f => f.GetProperty("name").GetString() == "watch event latency p50" && f.GetProperty("value").GetDouble() > 0);
    }
}
