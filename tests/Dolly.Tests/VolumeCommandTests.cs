using System.Text.Json;

namespace Dolly.Tests;

public sealed class VolumeCommandTests : CliTestBase
{
    private static JsonElement Row(JsonElement list, string name) =>
        list.EnumerateArray().Single(e => e.GetProperty("name").GetString() == name);

    [Fact]
    public async Task CreateListResizeDelete_HappyPath()
    {
        var created = await Ok("volume", "create", "db", "--size", "10Gi");
        Assert.Contains("created volume 'db' (10 GiB)", created.Out, StringComparison.Ordinal);

        var list = (await Ok("volume", "list", "-o", "json")).Json();
        var db = Row(list, "db");
        Assert.Equal("volume", db.GetProperty("kind").GetString());
        Assert.Equal(10L << 30, db.GetProperty("size").GetInt64());
        Assert.Equal(0, db.GetProperty("allocated").GetInt64());
        Assert.Equal(0, db.GetProperty("exclusive").GetInt64());
        Assert.Equal(JsonValueKind.Null, db.GetProperty("source").ValueKind);
        Assert.True(db.GetProperty("created").GetDateTimeOffset() > DateTimeOffset.UtcNow.AddMinutes(-5));

        var table = await Ok("volume", "list");
        foreach (var column in new[] { "NAME", "SIZE", "ALLOCATED", "EXCLUSIVE", "SOURCE", "CREATED" })
        {
            Assert.Contains(column, table.Out, StringComparison.Ordinal);
        }

        Assert.Contains("10 GiB", table.Out, StringComparison.Ordinal);

        var resized = await Ok("volume", "resize", "db", "--size", "20Gi");
        Assert.Contains("from 10 GiB to 20 GiB", resized.Out, StringComparison.Ordinal);
        Assert.Equal(20L << 30, Row((await Ok("volume", "list", "-o", "json")).Json(), "db").GetProperty("size").GetInt64());

        var deleted = await Ok("volume", "delete", "db");
        Assert.Contains("deleted volume 'db'", deleted.Out, StringComparison.Ordinal);
        Assert.Equal(0, (await Ok("volume", "list", "-o", "json")).Json().GetArrayLength());
        Assert.Contains("no volumes", (await Ok("volume", "list")).Out, StringComparison.Ordinal);
    }

    [Fact]
    public async Task CloneAndRevert_ShareBlocksAndRestoreContent()
    {
        var original = RandomBytes(512 * 1024, 1);
        Assert.Equal(0, (await Run(["volume", "import", "vol", "-", "--size", "4Mi"], original, null, null)).ExitCode);
        await Ok("snapshot", "create", "vol", "snap");
        var cloned = await Ok("volume", "clone", "snap", "copy", "--size", "8Mi");
        Assert.Contains("cloned 'snap' to volume 'copy' (8 MiB)", cloned.Out, StringComparison.Ordinal);
        await Ok("volume", "clone", "vol", "copy2");

        var list = (await Ok("volume", "list", "-o", "json")).Json();
        var copy = Row(list, "copy");
        Assert.Equal("snap", copy.GetProperty("source").GetString());
        Assert.Equal(8L << 20, copy.GetProperty("size").GetInt64());
        Assert.Equal(original.Length, copy.GetProperty("allocated").GetInt64());
        Assert.Equal(0, copy.GetProperty("exclusive").GetInt64());
        Assert.Equal("vol", Row(list, "copy2").GetProperty("source").GetString());

        // Overwrite the start of the volume, then revert it to the snapshot.
        Assert.Equal(0, (await Run(["volume", "import", "vol", "-"], RandomBytes(100_000, 9), null, null)).ExitCode);
        var reverted = await Ok("volume", "revert", "vol", "snap");
        Assert.Contains("reverted volume 'vol' to snapshot 'snap'", reverted.Out, StringComparison.Ordinal);
        var exported = await Ok("volume", "export", "vol", "-");
        Assert.Equal(4 << 20, exported.Binary.Length);
        Assert.Equal(original, exported.Binary[..original.Length]);
    }

    [Fact]
    public async Task UnknownNames_FailNotFound()
    {
        await Ok("pool", "init");
        await Fails(ExitCodes.NotFound, "no volume or snapshot named 'ghost'", "volume", "resize", "ghost", "--size", "1Gi");
        await Fails(ExitCodes.NotFound, "no volume or snapshot named 'ghost'", "volume", "delete", "ghost");
        await Fails(ExitCodes.NotFound, "no volume or snapshot named 'ghost'", "volume", "clone", "ghost", "x");
        await Fails(ExitCodes.NotFound, "no volume or snapshot named 'ghost'", "volume", "revert", "ghost", "s");
        await Fails(ExitCodes.NotFound, "no volume or snapshot named 'ghost'", "volume", "export", "ghost", "-");
    }

    [Fact]
    public async Task DuplicateNames_FailAlreadyExists()
    {
        await Ok("volume", "create", "a", "--size", "1Mi");
        await Ok("snapshot", "create", "a", "s");
        await Fails(ExitCodes.AlreadyExists, "a volume or snapshot named 'a' already exists", "volume", "create", "a", "--size", "1Mi");
        await Fails(ExitCodes.AlreadyExists, "a volume or snapshot named 's' already exists", "volume", "clone", "a", "s");
        await Fails(ExitCodes.AlreadyExists, "a volume or snapshot named 'a' already exists", "snapshot", "create", "a", "a");
    }

    [Theory]
    [InlineData("../etc")]
    [InlineData("Upper")]
    [InlineData("a/b")]
    [InlineData("trailing-")]
    [InlineData("tab\tname")]
    public async Task InvalidNames_FailInvalidName(string name)
    {
        var r = await Fails(ExitCodes.InvalidName, "is not valid", "volume", "create", name, "--size", "1Mi");
        Assert.Contains("Kubernetes", r.Err, StringComparison.Ordinal);
        Assert.DoesNotContain("\t", r.Err, StringComparison.Ordinal);
        await Fails(ExitCodes.InvalidName, "is not valid", "volume", "import", name, "-");
        Assert.False(Directory.Exists(Path.Combine(Root, "etc")));
    }

    [Fact]
    public async Task Sizes_Unparseable_Zero_Unaligned_TooLarge_FailInvalidArgument()
    {
        await Fails(ExitCodes.InvalidArgument, "size 'ten' is not a number", "volume", "create", "a", "--size", "ten");
        await Fails(ExitCodes.InvalidArgument, "size must be positive", "volume", "create", "a", "--size", "0");
        await Fails(ExitCodes.InvalidArgument, "is not a multiple of 4096", "volume", "create", "a", "--size", "1000");
        await Fails(ExitCodes.InvalidArgument, "exceeds the maximum of 64 TiB", "volume", "create", "a", "--size", "65Ti");
        await Fails(ExitCodes.InvalidArgument, "is too large", "volume", "create", "a", "--size", "99999999999999Pi");
    }

    [Fact]
    public async Task Resize_Shrink_IsRefusedAndNothingChanges()
    {
        await Ok("volume", "create", "a", "--size", "2Gi");
        await Fails(ExitCodes.InvalidArgument, "volume 'a' is 2 GiB; shrinking it to 1 GiB would destroy data", "volume", "resize", "a", "--size", "1Gi");
        await Fails(ExitCodes.InvalidArgument, "cannot be smaller", "volume", "clone", "a", "b", "--size", "1Gi");
        Assert.Equal(2L << 30, (await Ok("volume", "list", "-o", "json")).Json()[0].GetProperty("size").GetInt64());
    }

    [Fact]
    public async Task WrongKinds_AreRefusedWithAHint()
    {
        await Ok("volume", "create", "v", "--size", "1Mi");
        await Ok("volume", "create", "w", "--size", "1Mi");
        await Ok("snapshot", "create", "v", "s");
        await Ok("snapshot", "create", "w", "t");
        await Fails(ExitCodes.InvalidArgument, "'s' is a snapshot, not a volume; use 'dolly snapshot delete s'", "volume", "delete", "s");
        await Fails(ExitCodes.InvalidArgument, "'v' is a volume, not a snapshot", "snapshot", "delete", "v");
        await Fails(ExitCodes.ReadOnly, "'s' is a snapshot; snapshots cannot be resized", "volume", "resize", "s", "--size", "2Mi");
        await Fails(ExitCodes.InvalidArgument, "snapshot 't' was not taken of volume 'v'", "volume", "revert", "v", "t");
        await Fails(ExitCodes.InvalidArgument, "'w' is a volume, not a snapshot", "volume", "revert", "v", "w");
        await Fails(ExitCodes.ReadOnly, "'s' is a snapshot and cannot be written", "volume", "import", "s", "-");
    }

    [Fact]
    public async Task UsageErrors_ExitTwoWithHint()
    {
        var r = await Dolly("volume", "create", "a");
        Assert.Equal(ExitCodes.Usage, r.ExitCode);
        Assert.Contains("error: Option '--size' is required", r.Err, StringComparison.Ordinal);
        Assert.Contains("dolly volume create --help", r.Err, StringComparison.Ordinal);

        r = await Dolly("volume", "list", "-o", "yaml");
        Assert.Equal(ExitCodes.Usage, r.ExitCode);
        Assert.StartsWith("error: ", r.Err, StringComparison.Ordinal);

        r = await Dolly("frobnicate");
        Assert.Equal(ExitCodes.Usage, r.ExitCode);
        Assert.Contains("'frobnicate'", r.Err, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Help_ListsExitCodesAndJsonShapes()
    {
        Assert.Contains("Exit codes:", (await Ok()).Out, StringComparison.Ordinal);
        var root = await Ok("--help");
        Assert.Contains("Exit codes:", root.Out, StringComparison.Ordinal);
        Assert.Contains("3  not found", root.Out, StringComparison.Ordinal);
        Assert.Contains("$DOLLY_POOL", root.Out, StringComparison.Ordinal);

        var list = await Ok("volume", "list", "--help");
        Assert.Contains("\"allocated\":", list.Out, StringComparison.Ordinal);
        Assert.DoesNotContain("Exit codes:", list.Out, StringComparison.Ordinal);
        Assert.Contains("\"changedBytes\":", (await Ok("snapshot", "diff", "--help")).Out, StringComparison.Ordinal);
    }
}
