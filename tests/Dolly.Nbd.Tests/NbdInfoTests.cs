using System.Text.Json;
using Dolly.Nbd.Tests.Support;

namespace Dolly.Nbd.Tests;

/// <summary>libnbd's nbdinfo against the server: export listing, export details and both metadata contexts.</summary>
public sealed class NbdInfoTests
{
    private const long Mib = 1 << 20;

    /// <summary>
    /// vol: data at [0, 1 MiB) and [8 MiB, 8 MiB + 192 KiB); snapshot snap1; then [16 MiB, +64 KiB) written and
    /// [0, 64 KiB) overwritten, so the delta against snap1 is exactly those two blocks.
    /// </summary>
    private static TestServer Populate()
    {
        var server = TestServer.Start();
        var vol = server.CreateVolume("vol", 64 * Mib);
        vol.Write(0, Data.Random((int)Mib, 1)).ThrowIfFailed();
        vol.Write(8 * Mib, Data.Random(192 << 10, 2)).ThrowIfFailed();
        server.Pool.CreateSnapshot("vol", "snap1").ThrowIfFailed();
        vol.Write(16 * Mib, Data.Random(64 << 10, 3)).ThrowIfFailed();
        vol.Write(0, Data.Random(64 << 10, 4)).ThrowIfFailed();
        server.Pool.CreateVolume("other", 4 * Mib).ThrowIfFailed();
        return server;
    }

    [Fact]
    public async Task List_Json_NamesDescriptionsAndReadOnlyFlags()
    {
        Tools.Require("nbdinfo");
        await using var server = Populate();

        var r = (await Tools.RunAsync("nbdinfo", "--list", "--json", $"nbd+unix:///?socket={server.SocketPath}")).EnsureSuccess();
        using var doc = JsonDocument.Parse(r.StdOut);
        var exports = doc.RootElement.GetProperty("exports").EnumerateArray().ToDictionary(e => e.GetProperty("export-name").GetString()!);

        Assert.Equal(["other", "snap1", "vol"], exports.Keys.Order());
        Assert.False(exports["vol"].GetProperty("is_read_only").GetBoolean());
        Assert.True(exports["snap1"].GetProperty("is_read_only").GetBoolean());
        Assert.Equal(64 * Mib, exports["vol"].GetProperty("export-size").GetInt64());
        Assert.Equal(4 * Mib, exports["other"].GetProperty("export-size").GetInt64());
        Assert.Contains("volume", exports["vol"].GetProperty("description").GetString(), StringComparison.Ordinal);
        var snapDescription = exports["snap1"].GetProperty("description").GetString()!;
        Assert.Contains("snapshot of vol", snapDescription, StringComparison.Ordinal);
        Assert.Contains("read-only", snapDescription, StringComparison.Ordinal);
    }

    [Fact]
    public async Task List_PlainText_OverTcp()
    {
        Tools.Require("nbdinfo");
        await using var server = Populate();

        var r = (await Tools.RunAsync("nbdinfo", "--list", $"nbd://127.0.0.1:{server.Port}")).EnsureSuccess();
        Assert.Contains("export=\"vol\"", r.StdOut, StringComparison.Ordinal);
        Assert.Contains("export=\"snap1\"", r.StdOut, StringComparison.Ordinal);
        Assert.Contains("export=\"other\"", r.StdOut, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Info_Json_SizeFlagsBlockSizesAndContexts()
    {
        Tools.Require("nbdinfo");
        await using var server = Populate();

        var r = (await Tools.RunAsync("nbdinfo", "--json", server.UnixUri("vol"))).EnsureSuccess();
        using var doc = JsonDocument.Parse(r.StdOut);
        var export = doc.RootElement.GetProperty("exports")[0];
        Assert.Equal("vol", export.GetProperty("export-name").GetString());
        Assert.Equal(64 * Mib, export.GetProperty("export-size").GetInt64());
        Assert.False(export.GetProperty("is_read_only").GetBoolean());
        Assert.True(export.GetProperty("can_flush").GetBoolean());
        Assert.True(export.GetProperty("can_fua").GetBoolean());
        Assert.True(export.GetProperty("can_trim").GetBoolean());
        Assert.True(export.GetProperty("can_zero").GetBoolean());
        Assert.True(export.GetProperty("can_fast_zero").GetBoolean());
        Assert.True(export.GetProperty("can_multi_conn").GetBoolean());
        Assert.True(export.GetProperty("can_cache").GetBoolean());
        Assert.True(export.GetProperty("can_df").GetBoolean());
        Assert.Equal(1, export.GetProperty("block_size_minimum").GetInt64());
        Assert.Equal(4096, export.GetProperty("block_size_preferred").GetInt64());
        Assert.Equal(32 * Mib, export.GetProperty("block_size_maximum").GetInt64());
        var contexts = export.GetProperty("contexts").EnumerateArray().Select(c => c.GetString()).ToList();
        Assert.Contains("base:allocation", contexts);
        Assert.Contains("dolly:delta:snap1", contexts);

        var snap = (await Tools.RunAsync("nbdinfo", "--json", server.UnixUri("snap1"))).EnsureSuccess();
        using var snapDoc = JsonDocument.Parse(snap.StdOut);
        var s = snapDoc.RootElement.GetProperty("exports")[0];
        Assert.True(s.GetProperty("is_read_only").GetBoolean());
        Assert.False(s.GetProperty("can_trim").GetBoolean());
        Assert.False(s.GetProperty("can_zero").GetBoolean());
    }

    [Fact]
    public async Task Map_BaseAllocation_MatchesWrittenBlocks()
    {
        Tools.Require("nbdinfo");
        await using var server = Populate();

        var map = await MapAsync(server.UnixUri("vol"), null);
        AssertCovers(map, 64 * Mib);

        // Data (type 0) exactly where written (64 KiB blocks), hole+zero (type 3) everywhere else.
        var data = Merge(map.Where(e => e.Type == 0));
        Assert.Equal([(0L, Mib), (8 * Mib, 192L << 10), (16 * Mib, 64L << 10)], data);
        Assert.All(map.Where(e => e.Type != 0), e => Assert.Equal(3, e.Type));

        var snapMap = await MapAsync(server.UnixUri("snap1"), null);
        Assert.Equal([(0L, Mib), (8 * Mib, 192L << 10)], Merge(snapMap.Where(e => e.Type == 0)));
    }

    [Fact]
    public async Task Map_DeltaContext_MarksExactlyTheBlocksChangedSinceTheSnapshot()
    {
        Tools.Require("nbdinfo");
        await using var server = Populate();

        var map = await MapAsync(server.UnixUri("vol"), "dolly:delta:snap1");
        AssertCovers(map, 64 * Mib);
        Assert.Equal([(0L, 64L << 10), (16 * Mib, 64L << 10)], Merge(map.Where(e => e.Type == 1)));

        // A second snapshot and one more write: the delta against it is just that write, against snap1 it grows.
        server.Pool.CreateSnapshot("vol", "snap2").ThrowIfFailed();
        server.Pool.OpenDevice("vol").Value.Write(32 * Mib, Data.Random(4096, 5)).ThrowIfFailed();
        var since2 = await MapAsync(server.UnixUri("vol"), "dolly:delta:snap2");
        Assert.Equal([(32 * Mib, 64L << 10)], Merge(since2.Where(e => e.Type == 1)));
        var since1 = await MapAsync(server.UnixUri("vol"), "dolly:delta:snap1");
        Assert.Equal([(0L, 64L << 10), (16 * Mib, 64L << 10), (32 * Mib, 64L << 10)], Merge(since1.Where(e => e.Type == 1)));

        // Between the two snapshots themselves (snap2 against snap1).
        var between = await MapAsync(server.UnixUri("snap2"), "dolly:delta:snap1");
        Assert.Equal([(0L, 64L << 10), (16 * Mib, 64L << 10)], Merge(between.Where(e => e.Type == 1)));
    }

    [Fact]
    public async Task Map_DeltaOfAClone_AgainstTheSnapshotItWasClonedFrom()
    {
        Tools.Require("nbdinfo");
        await using var server = Populate();
        server.Pool.Clone("snap1", "clone").ThrowIfFailed();
        server.Pool.OpenDevice("clone").Value.Write(40 * Mib, Data.Random(100, 6)).ThrowIfFailed();

        var map = await MapAsync(server.UnixUri("clone"), "dolly:delta:snap1");
        AssertCovers(map, 64 * Mib);
        Assert.Equal([(40 * Mib, 64L << 10)], Merge(map.Where(e => e.Type == 1)));
    }

    [Fact]
    public async Task Map_DeltaOfAnotherLineage_IsNotOffered()
    {
        Tools.Require("nbdinfo");
        await using var server = Populate();

        var r = await Tools.RunAsync("nbdinfo", "--map=dolly:delta:snap1", server.UnixUri("other"));
        Assert.NotEqual(0, r.ExitCode);
    }

    internal sealed record Extent(long Offset, long Length, int Type);

    private static async Task<List<Extent>> MapAsync(string uri, string? context)
    {
        var r = (await Tools.RunAsync("nbdinfo", context is null ? "--map" : $"--map={context}", "--json", uri)).EnsureSuccess();
        using var doc = JsonDocument.Parse(r.StdOut);
        return doc.RootElement.EnumerateArray()
            .Select(e => new Extent(e.GetProperty("offset").GetInt64(), e.GetProperty("length").GetInt64(), e.GetProperty("type").GetInt32()))
            .ToList();
    }

    private static void AssertCovers(List<Extent> map, long size)
    {
        long pos = 0;
        foreach (var e in map)
        {
            Assert.Equal(pos, e.Offset);
            pos += e.Length;
        }

        Assert.Equal(size, pos);
    }

    private static List<(long Offset, long Length)> Merge(IEnumerable<Extent> extents)
    {
        var result = new List<(long Offset, long Length)>();
        foreach (var e in extents.OrderBy(e => e.Offset))
        {
            if (result.Count > 0 && result[^1].Offset + result[^1].Length == e.Offset)
            {
                result[^1] = (result[^1].Offset, result[^1].Length + e.Length);
            }
            else
            {
                result.Add((e.Offset, e.Length));
            }
        }

        return result;
    }
}
