using Dolly.Bench;

namespace Dolly.Tests;

/// <summary>
/// <c>dolly bench db</c>: its prerequisites and arguments are checked before anything is mounted, the quick
/// run brings the whole stack (PostgreSQL on ext4 over nbdfuse and a loop device, over Dolly and nbdkit) up
/// and takes it down again, and a cancelled run leaves no mount, loop device or directory behind.
/// </summary>
public sealed class BenchDbTests : CliTestBase
{
    [Fact]
    public async Task WithoutPostgreSql_SaysWhatIsMissing_AsAUsageError()
    {
        string nowhere = Path.Combine(Root, "no-postgresql");
        var r = await Fails(ExitCodes.Usage, "PostgreSQL (initdb, pg_ctl, postgres, pgbench, psql not in " + nowhere, "bench", "db", "--pg-bin", nowhere);
        Assert.Contains("install-test-deps.sh", r.Err, StringComparison.Ordinal);
    }

    [Fact]
    public async Task WithoutNbdfuseAndNbdkit_NamesEachMissingProgram_AsAUsageError()
    {
        var env = new Dictionary<string, string?> { ["DOLLY_POOL"] = PoolDir, ["PATH"] = Path.Combine(Root, "empty-path") };
        var r = await Run(["bench", "db", "--quick"], stdin: null, env, fileSystem: null);
        Assert.True(r.ExitCode == ExitCodes.Usage, r.ToString());
        foreach (var missing in new[] { "nbdfuse (libnbd-bin)", "fusermount3 (fuse3)", "nbdkit (nbdkit)" })
        {
            Assert.Contains(missing, r.Err, StringComparison.Ordinal);
        }
    }

    [Theory]
    [InlineData("--size 1000 must be a multiple of 4096 and at least 256 MiB", "--size", "1000")]
    [InlineData("must be a multiple of 4096 and at least 256 MiB", "--size", "128Mi")]
    [InlineData("--scale, --rounds, --seconds and --snapshot-interval must be at least 1", "--rounds", "0")]
    [InlineData("--scale, --rounds, --seconds and --snapshot-interval must be at least 1", "--snapshot-interval", "0")]
    public async Task BadArguments_FailBeforeAnythingIsMounted(string message, string option, string value) =>
        await Fails(ExitCodes.InvalidArgument, message, "bench", "db", option, value);

    [Fact]
    public async Task Quick_RunsPgbenchOnBothStacks_AndCleansUp()
    {
        SkipUnlessRunnable();
        string json = Path.Combine(Root, "db.json");
        string scratch = Path.Combine(Root, "scratch");
        Directory.CreateDirectory(scratch);
        var r = await Run(["bench", "db", "--quick", "--json", json, "--dir", scratch], stdin: null, Environment(), fileSystem: null);
        Assert.True(r.ExitCode == 0, r.ToString());
        AssertNothingLeftIn(scratch);

        using var doc = System.Text.Json.JsonDocument.Parse(await File.ReadAllTextAsync(json, TestContext.Current.CancellationToken));
        var figures = doc.RootElement.GetProperty("figures").EnumerateArray().ToList();
        foreach (var name in new[] { "TPS: dolly / nbdkit", "TPS with a snapshot every 1 s / without (dolly)", "pgbench -i time: dolly / nbdkit" })
        {
            var f = Assert.Single(figures, f => f.GetProperty("name").GetString() == name);
            double value = f.GetProperty("value").GetDouble();
            Assert.True(double.IsFinite(value) && value > 0, $"{name}: {value}");
        }

        var tps = Assert.Single(figures, f => f.GetProperty("name").GetString() == "TPS: dolly / nbdkit").GetProperty("details");
        Assert.True(tps.GetProperty("dolly_tps_round1").GetDouble() > 0 && tps.GetProperty("nbdkit_tps_round1").GetDouble() > 0, tps.ToString());
        Assert.Contains(figures, f => f.GetProperty("name").GetString() == "snapshot create during pgbench, p50");
    }

    [Fact]
    public async Task Cancelled_WhilePgbenchRuns_UnmountsDetachesAndRemovesEverything()
    {
        SkipUnlessRunnable();
        string scratch = Path.Combine(Root, "scratch");
        Directory.CreateDirectory(scratch);
        using var cancel = CancellationTokenSource.CreateLinkedTokenSource(TestContext.Current.CancellationToken);
        var err = new SignallingWriter("round 1/1: pgbench on dolly", cancel);
        var host = new CliHost(new StringWriter(), err, () => Stream.Null, () => Stream.Null, false, false, name => Environment().GetValueOrDefault(name));
        int code = await Cli.RunAsync(["bench", "db", "--quick", "--dir", scratch], host, cancel.Token);

        Assert.True(err.Signalled, err.ToString());
        Assert.True(code == 130, $"exit {code}: {err}");
        AssertNothingLeftIn(scratch);
    }

    private Dictionary<string, string?> Environment() =>
        new() { ["DOLLY_POOL"] = PoolDir, ["PATH"] = System.Environment.GetEnvironmentVariable("PATH") };

    private static void SkipUnlessRunnable()
    {
        try
        {
            DbTools.Locate(null, System.Environment.GetEnvironmentVariable("PATH"));
        }
        catch (CliFailureException ex)
        {
            Assert.Skip(ex.Message);
        }
    }

    /// <summary>The scratch directory is empty: no mount below it, no loop device over a file in it.</summary>
    private static void AssertNothingLeftIn(string scratch)
    {
        Assert.DoesNotContain(File.ReadAllLines("/proc/mounts"), line => line.Split(' ')[1].StartsWith(scratch, StringComparison.Ordinal));
        foreach (var loop in Directory.EnumerateDirectories("/sys/block", "loop*"))
        {
            string backing = Path.Combine(loop, "loop", "backing_file");
            Assert.False(File.Exists(backing) && File.ReadAllText(backing).StartsWith(scratch, StringComparison.Ordinal), $"{loop} still backed by a file in {scratch}");
        }

        Assert.Empty(Directory.EnumerateFileSystemEntries(scratch));
    }

    /// <summary>Stderr that cancels the run once a given progress line has been written.</summary>
    private sealed class SignallingWriter(string trigger, CancellationTokenSource cancel) : StringWriter
    {
        public bool Signalled { get; private set; }

        public override void WriteLine(string? value)
        {
            base.WriteLine(value);
            if (!Signalled && value is not null && value.Contains(trigger, StringComparison.Ordinal))
            {
                Signalled = true;
                cancel.CancelAfter(TimeSpan.FromSeconds(1));
            }
        }
    }
}
