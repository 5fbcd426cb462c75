using System.CommandLine;
using Dolly.Commands;
using Dolly.Repository.Storage;
using YamlDotNet.RepresentationModel;

namespace Dolly.Tests;

/// <summary>
/// <c>dolly repo dev-server</c> on a real radosgw: what it prints works (the keys reach the bucket it made, the
/// YAML parses and carries those keys), a second start reattaches, and --stop/--destroy end it. The command is run
/// through its own factory, as the <c>dolly repo</c> group attaches it.
/// </summary>
public sealed class RepoDevServerTests : CliTestBase
{
    private static readonly string[] CephPrograms = ["ceph-mon", "ceph-osd", "radosgw", "radosgw-admin", "monmaptool"];

    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    [Fact]
    public async Task DevServer_StartTwiceStopDestroy_PrintsWorkingKeysAndReattaches()
    {
        RequireCeph();
        var dir = Path.Combine(Root, "s3");
        try
        {
            var first = await DevServer("--dir", dir, "--bucket", "photos");
            Assert.Contains("bucket:      photos (created)", first, StringComparison.Ordinal);
            var endpoint = Field(first, "endpoint:");
            var access = Field(first, "access key:");
            var secret = Field(first, "secret key:");

            using (var store = new S3ObjectStore(new S3ObjectStoreOptions
            {
                Endpoint = new Uri(endpoint), Region = Field(first, "region:"), Bucket = "photos", AccessKey = access, SecretKey = secret,
            }))
            {
                await store.PutAsync("hello", "world"u8.ToArray(), Ct);
                Assert.Equal("world"u8.ToArray(), await store.GetAsync("hello", Ct));
            }

            var documents = Yaml(first);
            var secretData = (YamlMappingNode)documents[0]["stringData"];
            Assert.Equal(access, secretData["AWS_ACCESS_KEY_ID"].ToString());
            Assert.Equal(secret, secretData["AWS_SECRET_ACCESS_KEY"].ToString());
            var s3 = (YamlMappingNode)((YamlMappingNode)documents[1]["spec"])["s3"];
            Assert.Equal(new Uri(endpoint).GetLeftPart(UriPartial.Authority), s3["endpoint"].ToString());
            Assert.Equal("photos", s3["bucket"].ToString());
            Assert.Equal(RepoDevServer.SecretName, ((YamlMappingNode)s3["credentialsSecretRef"])["name"].ToString());

            var second = await DevServer("--dir", dir, "--bucket", "photos");
            Assert.Contains("bucket:      photos\n", second.ReplaceLineEndings("\n"), StringComparison.Ordinal);
            Assert.Equal((endpoint, access, secret), (Field(second, "endpoint:"), Field(second, "access key:"), Field(second, "secret key:")));

            Assert.Contains("stopped", await DevServer("--dir", dir, "--stop"), StringComparison.Ordinal);
            var (answering, _) = await new S3DevServer(dir).StatusAsync(Ct);
            Assert.False(answering);

            // Restarted from the stopped state: the object written before is still there.
            await DevServer("--dir", dir, "--bucket", "photos");
            using (var store = new S3ObjectStore(new S3ObjectStoreOptions { Endpoint = new Uri(endpoint), Bucket = "photos", AccessKey = access, SecretKey = secret }))
            {
                Assert.Equal("world"u8.ToArray(), await store.GetAsync("hello", Ct));
            }

            Assert.Contains("destroyed", await DevServer("--dir", dir, "--destroy"), StringComparison.Ordinal);
            Assert.False(Directory.Exists(dir));
        }
        finally
        {
            if (File.Exists(Path.Combine(dir, "ceph.conf")))
            {
                await new S3DevServer(dir).DestroyAsync(CancellationToken.None);
            }
        }
    }

    [Fact]
    public async Task RepoOnS3_WithTheKeysItPrints_UploadsIncrementallyAndRestoresEqual()
    {
        RequireCeph();
        var dir = Path.Combine(Root, "s3");
        try
        {
            var started = await DevServer("--dir", dir, "--bucket", "backups");
            var env = new Dictionary<string, string?>
            {
                ["DOLLY_POOL"] = PoolDir, ["DOLLY_REPO"] = "s3://backups/team-a", ["DOLLY_REPO_KEY"] = "a key for the S3 test",
                ["AWS_ENDPOINT_URL"] = Field(started, "endpoint:"), ["AWS_ACCESS_KEY_ID"] = Field(started, "access key:"),
                ["AWS_SECRET_ACCESS_KEY"] = Field(started, "secret key:"), ["AWS_DEFAULT_REGION"] = Field(started, "region:"),
            };
            async Task<CliRun> Dolly(byte[]? input, params string[] args)
            {
                var r = await Run(args, input, env, null);
                Assert.True(r.ExitCode == 0, $"dolly {string.Join(' ', args)} failed: {r}");
                return r;
            }

            await Dolly(null, "repo", "init", "--chunk-size", "1Mi");
            await Dolly(RandomBytes(3 << 20, 11), "volume", "import", "db", "-", "--size", "8Mi");
            await Dolly(null, "snapshot", "create", "db", "db-1");
            var first = await Dolly(null, "repo", "upload", "db-1");
            Assert.Contains("3 sent", first.Out, StringComparison.Ordinal);
            using (var pool = global::Dolly.Storage.Pool.Open(PoolDir).Value)
            {
                Assert.True(pool.OpenDevice("db").Value.Write((1 << 20) + 8192, RandomBytes(4096, 12)).IsOk);
            }

            await Dolly(null, "snapshot", "create", "db", "db-2");
            var second = await Dolly(null, "repo", "upload", "db-2");
            Assert.Contains("1 sent", second.Out, StringComparison.Ordinal);
            string id = second.Out.Split("manifest ")[1][..32];

            await Dolly(null, "repo", "restore", id, "copy");
            Assert.Equal((await Dolly(null, "volume", "export", "db-2", "-")).Binary, (await Dolly(null, "volume", "export", "copy", "-")).Binary);

            // The same bucket with a wrong secret: refused, naming the repository, nothing printed as success.
            env["AWS_SECRET_ACCESS_KEY"] = "not-the-secret";
            var refused = await Run(["repo", "list"], null, env, null);
            Assert.NotEqual(0, refused.ExitCode);
            Assert.Contains("backups", refused.Err, StringComparison.Ordinal);
        }
        finally
        {
            if (File.Exists(Path.Combine(dir, "ceph.conf")))
            {
                await new S3DevServer(dir).DestroyAsync(CancellationToken.None);
            }
        }
    }

    [Theory]
    [InlineData("--stop")]
    [InlineData("--destroy")]
    public async Task DevServer_StopWhereNoneRuns_NotFoundNamingTheDirectory(string flag)
    {
        var dir = Path.Combine(Root, "none");

        var ex = await Assert.ThrowsAsync<CliFailureException>(() => DevServer("--dir", dir, flag));

        Assert.Equal(ExitCodes.NotFound, ex.ExitCode);
        Assert.Contains(dir, ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task DevServer_InvalidBucketName_InvalidArgumentBeforeStartingAnything()
    {
        var dir = Path.Combine(Root, "bad");

        var ex = await Assert.ThrowsAsync<CliFailureException>(() => DevServer("--dir", dir, "--bucket", "Not_A_Bucket"));

        Assert.Equal(ExitCodes.InvalidArgument, ex.ExitCode);
        Assert.Contains("bucket 'Not_A_Bucket'", ex.Message, StringComparison.Ordinal);
        Assert.False(Directory.Exists(dir));
    }

    [Fact]
    public void DevServer_StopAndDestroyTogether_UsageError()
    {
        var output = new StringWriter();
        var context = new CliContext(CliHost.ForWriters(output, output), []);
        var root = new RootCommand { RepoDevServer.Build(context) };

        var parsed = root.Parse(["dev-server", "--stop", "--destroy"]);

        Assert.Contains(parsed.Errors, e => e.Message.Contains("cannot be combined", StringComparison.Ordinal));
    }

    private static async Task<string> DevServer(params string[] args)
    {
        var output = new StringWriter();
        var context = new CliContext(CliHost.ForWriters(output, output), args);
        var root = new RootCommand { RepoDevServer.Build(context) };
        var parsed = root.Parse(["dev-server", .. args]);
        Assert.Empty(parsed.Errors);
        var code = await parsed.InvokeAsync(new InvocationConfiguration { Output = output, Error = output, EnableDefaultExceptionHandler = false }, Ct);
        Assert.True(code == ExitCodes.Ok, $"dev-server {string.Join(' ', args)} exited {code}: {output}");
        return output.ToString();
    }

    private static string Field(string output, string label) =>
        output.Split('\n').Select(l => l.Trim()).First(l => l.StartsWith(label, StringComparison.Ordinal))[label.Length..].Trim();

    private static List<YamlMappingNode> Yaml(string output)
    {
        var lines = output.ReplaceLineEndings("\n").Split('\n');
        var start = Array.FindIndex(lines, l => l.StartsWith("apiVersion: v1", StringComparison.Ordinal));
        var end = Array.FindIndex(lines, start, l => l.StartsWith("and the encryption key", StringComparison.Ordinal));
        var stream = new YamlStream();
        stream.Load(new StringReader(string.Join('\n', lines[start..end])));
        var documents = stream.Documents.Select(d => (YamlMappingNode)d.RootNode).ToList();
        Assert.Equal(["Secret", "SnapshotRepository"], documents.Select(d => d["kind"].ToString()));
        return documents;
    }

    private static void RequireCeph()
    {
        var path = (Environment.GetEnvironmentVariable("PATH") ?? string.Empty).Split(':').Concat(["/usr/sbin", "/sbin"]);
        foreach (var program in CephPrograms)
        {
            if (!path.Any(d => File.Exists(Path.Combine(d, program))))
            {
                Assert.Skip($"'{program}' is not installed; scripts/install-test-deps.sh installs Ceph's radosgw");
            }
        }
    }
}
