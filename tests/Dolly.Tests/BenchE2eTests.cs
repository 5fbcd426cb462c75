using System.Runtime.CompilerServices;
using System.Text.Json;
using Dolly.Bench;
using k8s;
using k8s.Models;

namespace Dolly.Tests;

public sealed class BenchE2eTests : CliTestBase
{
    private static CancellationToken Token => TestContext.Current.CancellationToken;

    [Fact]
    public async Task BenchE2eQuick_RunsDollyUpAndWritesEveryFigure()
    {
        string json = Path.Combine(Root, "e2e.json");
        string scratch = Path.Combine(Root, "scratch");
        Directory.CreateDirectory(scratch);
        var r = await Ok("bench", "e2e", "--quick", "--json", json, "--dir", scratch);
        Assert.Contains("first apply -> last Bound", r.Out, StringComparison.Ordinal);
        Assert.Contains("target(s) met", r.Out, StringComparison.Ordinal);
        Assert.Empty(Directory.EnumerateFileSystemEntries(scratch));

        using var doc = JsonDocument.Parse(await File.ReadAllTextAsync(json, Token));
        var root = doc.RootElement;
        Assert.True(root.GetProperty("quick").GetBoolean());
        Assert.StartsWith("dolly bench e2e --quick", root.GetProperty("command").GetString(), StringComparison.Ordinal);
        Assert.True(root.GetProperty("machine").GetProperty("processors").GetInt32() > 0);
        var figures = root.GetProperty("figures").EnumerateArray().ToList();

        var snapshot = Assert.Single(figures, f => f.GetProperty("group").GetString()!.StartsWith("VolumeSnapshot apply -> readyToUse", StringComparison.Ordinal));
        AssertLatency(snapshot, rounds: 5, target: "<= 100 ms");
        foreach (var what in new[] { "1 GiB", "1 TiB" })
        {
            var restore = Assert.Single(figures, f => f.GetProperty("name").GetString()!.StartsWith($"p50, snapshot of a {what} volume", StringComparison.Ordinal));
            AssertLatency(restore, rounds: 5, target: "<= 200 ms");
            Assert.True(restore.GetProperty("details").GetProperty("pvCreatedP50").GetDouble() > 0);
        }

        var ratio = Assert.Single(figures, f => f.GetProperty("name").GetString() == "1 TiB / 1 GiB (p50)");
        Assert.True(ratio.GetProperty("value").GetDouble() > 0);
        Assert.Equal("within 1.50x", ratio.GetProperty("target").GetString());

        var fanOut = Assert.Single(figures, f => f.GetProperty("name").GetString() == "first apply -> last Bound");
        Assert.Equal("10 restores of one snapshot in 10 namespaces, applied concurrently", fanOut.GetProperty("group").GetString());
        var details = fanOut.GetProperty("details");
        Assert.Equal(10, details.GetProperty("bound").GetDouble());
        Assert.Equal(10, details.GetProperty("claims").GetDouble());
        double seconds = fanOut.GetProperty("value").GetDouble();
        Assert.True(seconds > 0 && seconds * 1000 >= details.GetProperty("p50BoundMs").GetDouble(), $"{seconds} s");
        Assert.True(details.GetProperty("p50BoundMs").GetDouble() >= details.GetProperty("firstBoundMs").GetDouble());

        Assert.All(figures, f => Assert.True(double.IsFinite(f.GetProperty("value").GetDouble()) && f.GetProperty("value").GetDouble() > 0, f.ToString()));
    }

    private static void AssertLatency(JsonElement figure, int rounds, string target)
    {
        Assert.Equal("ms", figure.GetProperty("unit").GetString());
        Assert.Equal(target, figure.GetProperty("target").GetString());
        Assert.True(figure.GetProperty("pass").ValueKind is JsonValueKind.True or JsonValueKind.False);
        var d = figure.GetProperty("details");
        double p50 = d.GetProperty("p50").GetDouble(), p99 = d.GetProperty("p99").GetDouble();
        Assert.True(p50 > 0 && p99 >= p50, $"p50 {p50}, p99 {p99}");
        Assert.Equal(p50, figure.GetProperty("value").GetDouble());
        Assert.Equal(rounds, d.GetProperty("rounds").GetDouble());
    }

    [Fact]
    public async Task BenchE2e_BadDirectory_FailsNamingIt()
    {
        string missing = Path.Combine(Root, "nope");
        await Fails(ExitCodes.NotFound, $"benchmark directory '{missing}' does not exist", "bench", "e2e", "--quick", "--dir", missing);
        await Fails(ExitCodes.IoError, "cannot create a scratch directory in '/proc'", "bench", "e2e", "--quick", "--dir", "/proc");
    }

    [Fact]
    public async Task E2eStack_UpFailsToStart_ReportsWhatUpSaid()
    {
        // A file where the pool should be: dolly up refuses it and ends before it is ready.
        string notAPool = Path.Combine(Root, "pool-file");
        await File.WriteAllTextAsync(notAPool, "x", Token);
        var messages = new List<string>();
        var ex = await Assert.ThrowsAsync<CliFailureException>(() => E2eStack.StartAsync(notAPool, verbose: false, messages.Add, Token));
        Assert.Equal(ExitCodes.Unexpected, ex.ExitCode);
        Assert.Contains($"dolly up ended during the benchmark (exit code {ExitCodes.NotAPool})", ex.Message, StringComparison.Ordinal);
        Assert.Contains($"'{notAPool}' is a file, not a pool directory", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task E2eWatch_ResolvesOnTheEventThatSatisfiesAndOnWhatWasListed()
    {
        var events = System.Threading.Channels.Channel.CreateUnbounded<(WatchEventType, V1ConfigMap)>();
        var listed = new List<V1ConfigMap> { Map("early", "done") };
        await using var watch = new E2eWatch<V1ConfigMap>(
            "ConfigMap",
            _ => Task.FromResult<(IList<V1ConfigMap>, string)>((listed, "1")),
            (_, ct) => events.Reader.ReadAllAsync(ct));
        await watch.StartAsync();

        // Already listed and satisfied: resolved at once.
        Assert.True(watch.Expect("ns", "early", m => m.Data?["state"] == "done").IsCompletedSuccessfully);

        var done = watch.Expect("ns", "late", m => m.Data?["state"] == "done");
        await events.Writer.WriteAsync((WatchEventType.Added, Map("late", "pending")), Token);
        await events.Writer.WriteAsync((WatchEventType.Modified, Map("late", "done")), Token);
        long t = await done.WaitAsync(TimeSpan.FromSeconds(60), Token);
        Assert.NotNull(watch.FirstSeen("ns", "late"));
        Assert.True(t >= watch.FirstSeen("ns", "late"));
        Assert.Equal("done", watch.Last("ns", "late")!.Data["state"]);
        Assert.Throws<InvalidOperationException>(() =>
        {
            _ = watch.Expect("ns", "again", _ => false);
            _ = watch.Expect("ns", "again", _ => false);
        });
    }

    [Fact]
    public async Task E2eWatch_WatchKeepsBreaking_FailsWaitersNamingTheKind()
    {
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var watch = new E2eWatch<V1ConfigMap>(
            "ConfigMap",
            _ => Task.FromResult<(IList<V1ConfigMap>, string)>(([], "1")),
            (_, ct) => Broken(release.Task, ct));
        await watch.StartAsync();
        var waiting = watch.Expect("ns", "never", _ => true);
        release.SetResult();
        var ex = await Assert.ThrowsAsync<IOException>(() => waiting.WaitAsync(TimeSpan.FromSeconds(60), Token));
        Assert.Contains("the watch on ConfigMap failed 3 times in a row: connection reset", ex.Message, StringComparison.Ordinal);

        // Later waiters fail at once too.
        await Assert.ThrowsAsync<IOException>(() => watch.Expect("ns", "later", _ => true));
    }

    /// <summary>A watch whose connection breaks as soon as it is released, every time it is opened.</summary>
    private static async IAsyncEnumerable<(WatchEventType, V1ConfigMap)> Broken(Task release, [EnumeratorCancellation] CancellationToken ct)
    {
        await release.WaitAsync(ct);
        if (release.IsCompleted)
        {
            throw new HttpRequestException("connection reset");
        }

        yield break;
    }

    private static V1ConfigMap Map(string name, string state) => new()
    {
        Metadata = new V1ObjectMeta { Name = name, NamespaceProperty = "ns", ResourceVersion = "2" },
        Data = new Dictionary<string, string> { ["state"] = state },
    };
}
