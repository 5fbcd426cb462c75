namespace Dolly.Tests;

public sealed class SnapshotCommandTests : CliTestBase
{
    [Fact]
    public async Task CreateListDelete_HappyPath()
    {
        await Ok("volume", "create", "v", "--size", "1Gi");
        await Ok("volume", "create", "w", "--size", "1Gi");
        var created = await Ok("snapshot", "create", "v", "v-1");
        Assert.Contains("created snapshot 'v-1' of volume 'v' (1 GiB)", created.Out, StringComparison.Ordinal);
        await Ok("snapshot", "create", "w", "w-1");

        var all = (await Ok("snapshot", "list", "-o", "json")).Json();
        Assert.Equal(2, all.GetArrayLength());
        var v1 = all[0];
        Assert.Equal("v-1", v1.GetProperty("name").GetString());
        Assert.Equal("snapshot", v1.GetProperty("kind").GetString());
        Assert.Equal("v", v1.GetProperty("source").GetString());
        Assert.Equal(1L << 30, v1.GetProperty("size").GetInt64());

        var only = (await Ok("snapshot", "list", "--volume", "w", "-o", "json")).Json();
        Assert.Equal("w-1", Assert.Single(only.EnumerateArray()).GetProperty("name").GetString());
        await Fails(ExitCodes.NotFound, "'nope'", "snapshot", "list", "--volume", "nope");

        var table = await Ok("snapshot", "list");
        Assert.Contains("v-1", table.Out, StringComparison.Ordinal);
        Assert.Contains("EXCLUSIVE", table.Out, StringComparison.Ordinal);

        var deleted = await Ok("snapshot", "delete", "v-1");
        Assert.Contains("deleted snapshot 'v-1'", deleted.Out, StringComparison.Ordinal);
        Assert.Equal(1, (await Ok("snapshot", "list", "-o", "json")).Json().GetArrayLength());
        await Fails(ExitCodes.NotFound, "no volume or snapshot named 'v-1'", "snapshot", "delete", "v-1");
    }

    [Fact]
    public async Task Create_OfASnapshot_IsRefused()
    {
        await Ok("volume", "create", "v", "--size", "1Mi");
        await Ok("snapshot", "create", "v", "s");
        await Fails(ExitCodes.InvalidArgument, "'s' is a snapshot; snapshots are taken of volumes", "snapshot", "create", "s", "s2");
        await Fails(ExitCodes.NotFound, "no volume or snapshot named 'nope'", "snapshot", "create", "nope", "s3");
        await Fails(ExitCodes.InvalidName, "snapshot name 'S3' is not valid", "snapshot", "create", "v", "S3");
    }

    [Fact]
    public async Task Diff_ListsChangedRangesAsTableAndJson()
    {
        Assert.Equal(0, (await Run(["volume", "import", "v", "-", "--size", "4Mi"], RandomBytes(1 << 20, 1), null, null)).ExitCode);
        await Ok("snapshot", "create", "v", "s1");

        // Rewrite the first MiB with the same bytes (new blocks: counted as changed) and 4 KiB at 2 MiB.
        var patch = new byte[(2 << 20) + 4096];
        RandomBytes(1 << 20, 1).CopyTo(patch, 0);
        RandomBytes(4096, 7).CopyTo(patch, 2 << 20);
        Assert.Equal(0, (await Run(["volume", "import", "v", "-"], patch, null, null)).ExitCode);
        await Ok("snapshot", "create", "v", "s2");

        var json = (await Ok("snapshot", "diff", "s1", "s2", "-o", "json")).Json();
        Assert.Equal("s1", json.GetProperty("base").GetString());
        Assert.Equal("s2", json.GetProperty("target").GetString());
        var ranges = json.GetProperty("ranges");
        Assert.Contains(ranges.EnumerateArray(), r => r.GetProperty("offset").GetInt64() <= 2 << 20 && r.GetProperty("offset").GetInt64() + r.GetProperty("length").GetInt64() > 2 << 20);
        Assert.Equal(ranges.EnumerateArray().Sum(r => r.GetProperty("length").GetInt64()), json.GetProperty("changedBytes").GetInt64());
        Assert.True(json.GetProperty("changedBytes").GetInt64() <= (1 << 20) + 65536, "the rewritten identical megabyte counts as changed at most");

        var table = await Ok("snapshot", "diff", "s1", "v");
        Assert.Contains("OFFSET", table.Out, StringComparison.Ordinal);
        Assert.Contains("changed range(s)", table.Out, StringComparison.Ordinal);

        var none = (await Ok("snapshot", "diff", "s2", "v", "-o", "json")).Json();
        Assert.Equal(0, none.GetProperty("changedBytes").GetInt64());
    }

    [Fact]
    public async Task Diff_Errors_NameTheObjects()
    {
        await Ok("volume", "create", "a", "--size", "1Mi");
        await Ok("volume", "create", "b", "--size", "1Mi");
        await Ok("snapshot", "create", "a", "sa");
        await Ok("snapshot", "create", "b", "sb");
        await Fails(ExitCodes.InvalidArgument, "are not of one lineage", "snapshot", "diff", "sa", "sb");
        await Fails(ExitCodes.InvalidArgument, "base 'a' is a volume", "snapshot", "diff", "a", "sa");
        await Fails(ExitCodes.NotFound, "'nope'", "snapshot", "diff", "sa", "nope");
    }
}
