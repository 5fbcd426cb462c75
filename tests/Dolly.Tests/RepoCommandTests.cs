namespace Dolly.Tests;

public sealed class RepoCommandTests : CliTestBase
{
    private const string Key = "a repository key for the tests";

    private string RepoDir => Path.Combine(Root, "repo");

    private Dictionary<string, string?> Env => new() { ["DOLLY_POOL"] = PoolDir, ["DOLLY_REPO"] = RepoDir, ["DOLLY_REPO_KEY"] = Key };

    private async Task<CliRun> Repo(params string[] args)
    {
        var r = await Run(["repo", .. args], null, Env, null);
        Assert.True(r.ExitCode == 0, $"dolly repo {string.Join(' ', args)} failed: {r}");
        return r;
    }

    private async Task<CliRun> RepoFails(int exitCode, string messagePart, Dictionary<string, string?>? env, params string[] args)
    {
        var r = await Run(["repo", .. args], null, env ?? Env, null);
        Assert.True(r.ExitCode == exitCode, $"dolly repo {string.Join(' ', args)}: expected exit {exitCode}: {r}");
        Assert.Contains(messagePart, r.Err.Split('\n').First(l => l.StartsWith("error: ", StringComparison.Ordinal)), StringComparison.Ordinal);
        Assert.DoesNotContain("   at ", r.Err, StringComparison.Ordinal);
        return r;
    }

    private async Task<byte[]> Export(string name) => (await Run(["volume", "export", name, "-"], null, Env, null)).Binary;

    [Fact]
    public async Task InitUploadListRestoreVerifyDeletePrune_HappyPath()
    {
        var created = await Repo("init", "--chunk-size", "1Mi");
        Assert.Contains("created repository", created.Out, StringComparison.Ordinal);
        Assert.Equal(0, (await Run(["volume", "import", "db", "-", "--size", "8Mi"], RandomBytes(3 << 20, 1), Env, null)).ExitCode);
        Assert.Equal(0, (await Run(["snapshot", "create", "db", "db-1"], null, Env, null)).ExitCode);

        var up = await Repo("upload", "db-1");
        Assert.Contains("(full)", up.Out, StringComparison.Ordinal);
        Assert.Contains("3 sent", up.Out, StringComparison.Ordinal);
        string id = up.Out.Split("manifest ")[1][..32];

        using (var pool = global::Dolly.Storage.Pool.Open(PoolDir).Value)
        {
            Assert.True(pool.OpenDevice("db").Value.Write((1 << 20) + 8192, RandomBytes(4096, 2)).IsOk);
        }

        Assert.Equal(0, (await Run(["snapshot", "create", "db", "db-2"], null, Env, null)).ExitCode);
        var up2 = await Repo("upload", "db-2");
        Assert.Contains($"incremental on {id}", up2.Out, StringComparison.Ordinal);
        Assert.Contains("1 sent", up2.Out, StringComparison.Ordinal);
        string id2 = up2.Out.Split("manifest ")[1][..32];

        var list = (await Repo("list", "-o", "json")).Json();
        var snaps = list.GetProperty("snapshots");
        Assert.Equal([id, id2], snaps.EnumerateArray().Select(s => s.GetProperty("id").GetString()));
        Assert.Equal("db-2", snaps[1].GetProperty("snapshot").GetString());
        Assert.Equal(id, snaps[1].GetProperty("parent").GetString());
        Assert.Contains("db-1", (await Repo("list")).Out, StringComparison.Ordinal);

        var restored = await Repo("restore", id, "copy");
        Assert.Contains("as volume 'copy'", restored.Out, StringComparison.Ordinal);
        Assert.Equal(await Export("db-1"), await Export("copy"));

        Assert.Contains("4 fetched and checked", (await Repo("verify")).Out, StringComparison.Ordinal);
        await Repo("delete", id);
        var prune = await Repo("prune", "--grace", "00:00:00");
        Assert.Contains("deleted 1 unreferenced chunk(s)", prune.Out, StringComparison.Ordinal);
        await Repo("restore", id2, "copy2");
        Assert.Equal(await Export("db-2"), await Export("copy2"));
    }

    public static TheoryData<string, Dictionary<string, string?>, int, string> S3Locations => new()
    {
        { "s3:///prefix", S3Env(), ExitCodes.InvalidArgument, "no bucket" },
        { "s3://Bad_Bucket/p", S3Env(), ExitCodes.InvalidArgument, "Bad_Bucket" },
        { "gs://bucket/p", S3Env(), ExitCodes.InvalidArgument, "unknown scheme 'gs://'" },
        { "s3://bucket/p", S3Env(without: "AWS_ENDPOINT_URL"), ExitCodes.Usage, "$AWS_ENDPOINT_URL is not set" },
        { "s3://bucket/p", S3Env(without: "AWS_SECRET_ACCESS_KEY"), ExitCodes.Usage, "$AWS_SECRET_ACCESS_KEY is not set" },
        { "s3://bucket/p", S3Env(endpoint: "ftp://127.0.0.1:1"), ExitCodes.InvalidArgument, "is not an http:// or https:// URL" },
        { "s3://bucket/p", S3Env(endpoint: "http://127.0.0.1:1/path"), ExitCodes.InvalidArgument, "has a path or query" },
    };

    [Theory]
    [MemberData(nameof(S3Locations))]
    public async Task S3Location_BadUrlOrMissingVariable_NamesTheProblem(string location, Dictionary<string, string?> s3, int exitCode, string message)
    {
        var env = new Dictionary<string, string?>(s3) { ["DOLLY_POOL"] = PoolDir, ["DOLLY_REPO"] = location, ["DOLLY_REPO_KEY"] = Key };

        await RepoFails(exitCode, message, env, "list");
    }

    private static Dictionary<string, string?> S3Env(string? without = null, string endpoint = "http://127.0.0.1:1")
    {
        var env = new Dictionary<string, string?>
        {
            ["AWS_ENDPOINT_URL"] = endpoint, ["AWS_ACCESS_KEY_ID"] = "key", ["AWS_SECRET_ACCESS_KEY"] = "secret",
        };
        if (without is not null)
        {
            env[without] = null;
        }

        return env;
    }

    [Fact]
    public async Task BadInput_GivesClearErrorsAndExitCodes()
    {
        await RepoFails(ExitCodes.NotFound, "does not exist", null, "list");
        Directory.CreateDirectory(RepoDir);
        await RepoFails(ExitCodes.NotFound, "holds no repository", null, "list");
        await Repo("init");
        await RepoFails(ExitCodes.AlreadyExists, "already holds a repository", null, "init");
        var wrongKey = Env;
        wrongKey["DOLLY_REPO_KEY"] = "not the key at all";
        await RepoFails(ExitCodes.InvalidArgument, "the key does not open the repository", wrongKey, "list");
        var noKey = Env;
        noKey.Remove("DOLLY_REPO_KEY");
        await RepoFails(ExitCodes.Usage, "no repository key", noKey, "list");
        var noRepo = Env;
        noRepo.Remove("DOLLY_REPO");
        await RepoFails(ExitCodes.Usage, "no repository", noRepo, "list");
        await RepoFails(ExitCodes.InvalidArgument, "is not a manifest id", null, "restore", "../../etc", "v");
        await RepoFails(ExitCodes.NotFound, "no manifest '0123456789abcdef0123456789abcdef'", null, "delete", "0123456789abcdef0123456789abcdef");
        await RepoFails(ExitCodes.InvalidArgument, "--grace", null, "prune", "--grace", "soon");
        Assert.Equal(0, (await Run(["volume", "create", "v", "--size", "1Mi"], null, Env, null)).ExitCode);
        await RepoFails(ExitCodes.InvalidArgument, "'v' is a volume", null, "upload", "v");
        await RepoFails(ExitCodes.NotFound, "'nope'", null, "upload", "nope");
        await RepoFails(ExitCodes.NotFound, "no manifest", null, "restore", "0123456789abcdef0123456789abcdef", "w");
        await RepoFails(ExitCodes.InvalidArgument, "chunk size", null, "init", "--repo", Path.Combine(Root, "r2"), "--chunk-size", "3Mi");
        File.WriteAllText(Path.Combine(RepoDir, "config"), """{"format": 9}""");
        await RepoFails(ExitCodes.InvalidArgument, "format version 9", null, "list");
    }

    [Fact]
    public async Task KeyFile_TrailingNewlineIgnored()
    {
        string keyFile = Path.Combine(Root, "key");
        File.WriteAllText(keyFile, Key + "\n");
        var env = Env;
        env.Remove("DOLLY_REPO_KEY");
        Assert.Equal(0, (await Run(["repo", "init", "--key-file", keyFile], null, env, null)).ExitCode);
        // The same key from the environment opens it.
        await Repo("list");
    }
}
