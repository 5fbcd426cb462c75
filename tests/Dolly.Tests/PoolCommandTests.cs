using Dolly.Storage;

namespace Dolly.Tests;

public sealed class PoolCommandTests : CliTestBase
{
    [Fact]
    public async Task Init_ExplicitDirectory_CreatesPoolThatInfoDescribes()
    {
        string dir = Path.Combine(Root, "mine");
        var init = await Ok("--pool", dir, "pool", "init", "--block-size", "16Ki");
        Assert.Contains($"created pool '{dir}'", init.Out, StringComparison.Ordinal);

        var json = (await Ok("--pool", dir, "pool", "info", "-o", "json")).Json();
        Assert.Equal(dir, json.GetProperty("directory").GetString());
        Assert.Equal(16384, json.GetProperty("blockSize").GetInt32());
        Assert.Equal(0, json.GetProperty("volumes").GetInt32());
        Assert.True(json.GetProperty("metadataBytes").GetInt64() > 0);

        var table = await Ok("--pool", dir, "pool", "info");
        Assert.Contains("block size", table.Out, StringComparison.Ordinal);
        Assert.Contains("16 KiB", table.Out, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Init_Twice_FailsAlreadyExists()
    {
        await Ok("pool", "init");
        await Fails(ExitCodes.AlreadyExists, $"a Dolly pool already exists in '{PoolDir}'", "pool", "init");
    }

    [Fact]
    public async Task Init_BadBlockSize_FailsInvalidArgument()
    {
        await Fails(ExitCodes.InvalidArgument, "--block-size", "pool", "init", "--block-size", "lots");
        await Fails(ExitCodes.InvalidArgument, "block size 3000 is not a power of two", "pool", "init", "--block-size", "3000");
    }

    [Fact]
    public async Task DefaultPool_FirstUse_IsCreated()
    {
        var r = await Ok("volume", "list");
        Assert.Contains($"created the default pool in '{PoolDir}'", r.Err, StringComparison.Ordinal);
        Assert.True(File.Exists(Path.Combine(PoolDir, "meta.dolly")));
        var again = await Ok("volume", "list");
        Assert.DoesNotContain("created", again.Err, StringComparison.Ordinal);
    }

    [Fact]
    public async Task DefaultPool_WithoutDollyPool_UsesXdgDataHomeThenHome()
    {
        string xdg = Path.Combine(Root, "xdg");
        var r = await Run(["volume", "list"], null, new Dictionary<string, string?> { ["XDG_DATA_HOME"] = xdg, ["HOME"] = Path.Combine(Root, "home") }, null);
        Assert.Equal(0, r.ExitCode);
        Assert.True(File.Exists(Path.Combine(xdg, "dolly", "pool", "meta.dolly")), r.ToString());

        string home = Path.Combine(Root, "home");
        r = await Run(["pool", "info", "-o", "json"], null, new Dictionary<string, string?> { ["HOME"] = home }, null);
        Assert.Equal(0, r.ExitCode);
        Assert.Equal(Path.Combine(home, ".local", "share", "dolly", "pool"), r.Json().GetProperty("directory").GetString());
    }

    [Fact]
    public async Task ExplicitPool_Missing_FailsNamingItAndCreatesNothing()
    {
        string dir = Path.Combine(Root, "typo");
        await Fails(ExitCodes.NotAPool, $"pool directory '{dir}' does not exist", "--pool", dir, "volume", "list");
        Assert.False(Directory.Exists(dir));
    }

    [Fact]
    public async Task ExplicitPool_ForeignDirectory_FailsNotAPool()
    {
        string dir = Path.Combine(Root, "photos");
        Directory.CreateDirectory(dir);
        await File.WriteAllTextAsync(Path.Combine(dir, "cat.jpg"), "meow", TestContext.Current.CancellationToken);
        await Fails(ExitCodes.NotAPool, $"'{dir}' is not a Dolly pool", "--pool", dir, "volume", "list");
        await Fails(ExitCodes.NotAPool, $"directory '{dir}' is not empty", "--pool", dir, "pool", "init");
        await Fails(ExitCodes.NotAPool, $"'{dir}' is not a Dolly pool", "--pool", dir, "pool", "check");
    }

    [Fact]
    public async Task DefaultPool_ForeignNonEmptyDirectory_IsNotTakenOver()
    {
        Directory.CreateDirectory(PoolDir);
        await File.WriteAllTextAsync(Path.Combine(PoolDir, "notes.txt"), "mine", TestContext.Current.CancellationToken);
        await Fails(ExitCodes.NotAPool, $"'{PoolDir}' is not a Dolly pool", "volume", "list");
        Assert.False(File.Exists(Path.Combine(PoolDir, "meta.dolly")));
    }

    [Fact]
    public async Task Pool_GarbageMetadata_FailsNotAPool()
    {
        Directory.CreateDirectory(PoolDir);
        await File.WriteAllBytesAsync(Path.Combine(PoolDir, "meta.dolly"), RandomBytes(8192, 1), TestContext.Current.CancellationToken);
        await File.WriteAllBytesAsync(Path.Combine(PoolDir, "data.dolly"), [], TestContext.Current.CancellationToken);
        await Fails(ExitCodes.NotAPool, "has no Dolly superblock", "volume", "list");
    }

    [Fact]
    public async Task Pool_UnreadableDirectory_FailsNamingIt()
    {
        // A pool path that is a regular file cannot be read as a directory, whoever runs the test.
        string file = Path.Combine(Root, "file");
        await File.WriteAllTextAsync(file, "x", TestContext.Current.CancellationToken);
        await Fails(ExitCodes.NotAPool, $"'{file}' is a file, not a pool directory", "--pool", file, "volume", "list");
        var r = await Run(["volume", "list"], null, new Dictionary<string, string?> { ["DOLLY_POOL"] = file }, null);
        Assert.Equal(ExitCodes.NotAPool, r.ExitCode);
        Assert.Contains($"error: '{file}' is a file, not a pool directory", r.Err, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Pool_InUse_FailsInUse()
    {
        await Ok("pool", "init");
        using var held = Pool.Open(PoolDir).Value;
        await Fails(ExitCodes.InUse, $"pool '{PoolDir}' is in use by another process", "volume", "list");
    }

    [Fact]
    public async Task Check_CleanPool_ReportsJson()
    {
        await Ok("volume", "create", "a", "--size", "1Mi");
        var imported = await Run(["volume", "import", "a", "-"], RandomBytes(300_000, 2), null, null);
        Assert.Equal(0, imported.ExitCode);
        var text = await Ok("pool", "check");
        Assert.Contains("is clean", text.Out, StringComparison.Ordinal);
        var json = (await Ok("pool", "check", "-o", "json")).Json();
        Assert.True(json.GetProperty("clean").GetBoolean());
        Assert.Equal(1, json.GetProperty("devices").GetInt32());
        Assert.Equal(0, json.GetProperty("problems").GetArrayLength());
    }

    [Fact]
    public async Task Check_CorruptedDataBlock_NamesItAndExitsCorrupt()
    {
        string image = Path.Combine(Root, "img");
        await File.WriteAllBytesAsync(image, RandomBytes(256 * 1024, 5), TestContext.Current.CancellationToken);
        await Ok("volume", "import", "disk", image);
        CorruptFirstDataBlock(PoolDir);

        var r = await Dolly("pool", "check", "-o", "json");
        Assert.Equal(ExitCodes.Corrupt, r.ExitCode);
        var json = r.Json();
        Assert.False(json.GetProperty("clean").GetBoolean());
        var problem = json.GetProperty("problems")[0];
        Assert.Contains("volume 'disk'", problem.GetProperty("subject").GetString(), StringComparison.Ordinal);
        Assert.Contains("failed its checksum", problem.GetProperty("message").GetString(), StringComparison.Ordinal);
        Assert.Contains("error: pool", r.Err, StringComparison.Ordinal);

        var table = await Dolly("pool", "check");
        Assert.Equal(ExitCodes.Corrupt, table.ExitCode);
        Assert.Contains("failed its checksum", table.Out, StringComparison.Ordinal);
    }

    internal static void CorruptFirstDataBlock(string poolDir)
    {
        using var data = File.OpenHandle(Path.Combine(poolDir, "data.dolly"), FileMode.Open, FileAccess.ReadWrite);
        var b = new byte[16];
        RandomAccess.Read(data, b, 100);
        for (int i = 0; i < b.Length; i++)
        {
            b[i] ^= 0x5A;
        }

        RandomAccess.Write(data, b, 100);
    }
}
