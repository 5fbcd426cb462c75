using System.Collections.Concurrent;
using System.Net;
using Dolly.Controllers.Hooks;
using k8s.Autorest;
using Microsoft.Extensions.Time.Testing;

namespace Dolly.Controllers.Tests.Hooks;

/// <summary>
/// Hook ordering, failure and timeout around a cut, table-driven over a scripted exec and a fake clock: pre hooks
/// pod by pod in spec order, a fatal pre hook stops the rest and the cut, and post hooks always run in every pod
/// that was entered, last pod first, whatever failed or timed out.
/// </summary>
public sealed class ExecHookRunnerTests
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    private static readonly HookPod P1 = new("app", "db-0", ["db", "sidecar"]);
    private static readonly HookPod P2 = new("app", "db-1", ["db", "sidecar"]);

    /// <summary>What a scripted command does: exit with a code, hang until cancelled, or be refused by the server.</summary>
    private abstract record Behaviour;

    private sealed record Exit(int Code) : Behaviour;

    private sealed record Hang : Behaviour;

    private sealed record Refused(HttpStatusCode Code, string Message) : Behaviour;

    /// <summary>An exec that follows a script keyed by <c>pod:command</c>; unscripted commands exit 0.</summary>
    private sealed class ScriptedExec(Dictionary<string, Behaviour> script) : IPodExec
    {
        public ConcurrentQueue<string> Log { get; } = new();

        public SemaphoreSlim Hanging { get; } = new(0);

        public async Task<ExecResult> RunAsync(ExecTarget target, IReadOnlyList<string> command, CancellationToken cancellationToken)
        {
            string key = $"{target.Pod}:{command[0]}";
            Log.Enqueue($"{key}@{target.Container}");
            switch (script.GetValueOrDefault(key))
            {
                case Exit { Code: var code }:
                    return new ExecResult(code, code == 0 ? null : "command terminated with non-zero exit code", "", code == 0 ? "" : $"{command[0]} failed\n");
                case Hang:
                    Hanging.Release();
                    await Task.Delay(Timeout.Infinite, cancellationToken);
                    throw new InvalidOperationException("unreachable");
                case Refused r:
                    throw new HttpOperationException(r.Message) { Response = new HttpResponseMessageWrapper(new HttpResponseMessage(r.Code), r.Message) };
                default:
                    return new ExecResult(0, null, "", "");
            }
        }
    }

    private static ExecHook Hook(string command, string? onError = null, string? timeout = null, string? container = null) =>
        new() { Command = [command, "--flag"], OnError = onError, Timeout = timeout, Container = container };

    /// <summary>One row: the hooks, the script, the cut's answer, and what must happen in which order.</summary>
    private sealed record Case(
        ExecHook[] Pre, ExecHook[] Post, Dictionary<string, Behaviour> Script, string? CutError, string[] Order, bool Cut, string? Abort, string? PostFailure, string[] Failures);

    private static readonly Dictionary<string, Case> Table = new()
    {
        ["all succeed"] = new(
            [Hook("quiesce"), Hook("flush")], [Hook("resume")], [], null,
            ["db-0:quiesce@db", "db-0:flush@db", "db-1:quiesce@db", "db-1:flush@db", "cut", "db-1:resume@db", "db-0:resume@db"],
            true, null, null, []),
        ["a pre hook fails in the second pod: no cut, both pods resumed"] = new(
            [Hook("quiesce"), Hook("flush")], [Hook("resume")], new() { ["db-1:flush"] = new Exit(2) }, null,
            ["db-0:quiesce@db", "db-0:flush@db", "db-1:quiesce@db", "db-1:flush@db", "db-1:resume@db", "db-0:resume@db"],
            false, "pre hook [flush --flag] in app/db-1 container db: exit code 2: flush failed", null,
            ["pre hook [flush --flag] in app/db-1 container db: exit code 2: flush failed"]),
        ["a pre hook fails in the first pod: the second is never entered"] = new(
            [Hook("quiesce")], [Hook("resume")], new() { ["db-0:quiesce"] = new Exit(1) }, null,
            ["db-0:quiesce@db", "db-0:resume@db"],
            false, "pre hook [quiesce --flag] in app/db-0 container db: exit code 1: quiesce failed", null,
            ["pre hook [quiesce --flag] in app/db-0 container db: exit code 1: quiesce failed"]),
        ["a failing pre hook with onError Continue: reported, the cut goes ahead"] = new(
            [Hook("quiesce", onError: "Continue"), Hook("flush")], [Hook("resume")], new() { ["db-0:quiesce"] = new Exit(1) }, null,
            ["db-0:quiesce@db", "db-0:flush@db", "db-1:quiesce@db", "db-1:flush@db", "cut", "db-1:resume@db", "db-0:resume@db"],
            true, null, null, ["pre hook [quiesce --flag] in app/db-0 container db: exit code 1: quiesce failed"]),
        ["a pre hook times out: no cut, the pod resumed"] = new(
            [Hook("quiesce", timeout: "5s")], [Hook("resume")], new() { ["db-0:quiesce"] = new Hang() }, null,
            ["db-0:quiesce@db", "db-0:resume@db"],
            false, "pre hook [quiesce --flag] in app/db-0 container db: timed out after 5s (the stream was closed; the command may still be running in the container)", null,
            ["pre hook [quiesce --flag] in app/db-0 container db: timed out after 5s (the stream was closed; the command may still be running in the container)"]),
        ["a post hook times out with onError Continue: the other pod still resumed"] = new(
            [Hook("quiesce")], [Hook("resume", onError: "Continue", timeout: "1m")], new() { ["db-1:resume"] = new Hang() }, null,
            ["db-0:quiesce@db", "db-1:quiesce@db", "cut", "db-1:resume@db", "db-0:resume@db"],
            true, null, null, ["post hook [resume --flag] in app/db-1 container db: timed out after 1m (the stream was closed; the command may still be running in the container)"]),
        ["the cut fails: post hooks run all the same"] = new(
            [Hook("quiesce")], [Hook("resume")], [], "the driver refused",
            ["db-0:quiesce@db", "db-1:quiesce@db", "cut", "db-1:resume@db", "db-0:resume@db"],
            true, null, null, []),
        ["a post hook fails with onError Fail: reported, the next still runs"] = new(
            [], [Hook("resume"), Hook("notify")], new() { ["db-1:resume"] = new Exit(9) }, null,
            ["cut", "db-1:resume@db", "db-1:notify@db", "db-0:resume@db", "db-0:notify@db"],
            true, null, "post hook [resume --flag] in app/db-1 container db: exit code 9: resume failed",
            ["post hook [resume --flag] in app/db-1 container db: exit code 9: resume failed"]),
        ["the pod is gone: the refusal is the failure"] = new(
            [Hook("quiesce")], [Hook("resume")], new() { ["db-1:quiesce"] = new Refused(HttpStatusCode.NotFound, "pods \"db-1\" not found") }, null,
            ["db-0:quiesce@db", "db-1:quiesce@db", "db-1:resume@db", "db-0:resume@db"],
            false, "pre hook [quiesce --flag] in app/db-1 container db: exec refused: 404 pods \"db-1\" not found", null,
            ["pre hook [quiesce --flag] in app/db-1 container db: exec refused: 404 pods \"db-1\" not found"]),
        ["a named container: used; a missing one fails without an exec"] = new(
            [Hook("quiesce", container: "sidecar"), Hook("flush", container: "cache")], [Hook("resume", container: "sidecar")], [], null,
            ["db-0:quiesce@sidecar", "db-0:resume@sidecar"],
            false, "pre hook [flush --flag] in app/db-0 container cache: the pod has no container \"cache\" (it has db, sidecar)", null,
            ["pre hook [flush --flag] in app/db-0 container cache: the pod has no container \"cache\" (it has db, sidecar)"]),
    };

    public static TheoryData<string> Rows() => [.. Table.Keys];

    [Theory]
    [MemberData(nameof(Rows))]
    public async Task Hooks_RunInOrder_AndPostHooksAlwaysUndo(string row)
    {
        var c = Table[row];
        var clock = new FakeTimeProvider(DateTimeOffset.UnixEpoch);
        var exec = new ScriptedExec(c.Script);
        var runner = new ExecHookRunner(exec, clock);
        var run = runner.AroundAsync([P1, P2], c.Pre, c.Post, _ =>
        {
            exec.Log.Enqueue("cut");
            return Task.FromResult(c.CutError);
        }, Ct);

        // Each hanging command is let go by moving the fake clock past its hook's timeout (no wall-clock wait).
        while (!run.IsCompleted)
        {
            var hanging = exec.Hanging.WaitAsync(Ct);
            if (await Task.WhenAny(hanging, run) == hanging)
            {
                clock.Advance(TimeSpan.FromHours(1));
            }
        }

        var report = await run;
        Assert.Equal(c.Order, exec.Log);
        Assert.Equal(c.Cut, report.CutAttempted);
        Assert.Equal(c.CutError, report.CutError);
        Assert.Equal(c.Abort, report.Abort?.Describe());
        Assert.Equal(c.PostFailure, report.PostFailure?.Describe());
        Assert.Equal(c.Failures, report.Runs.Where(r => r.Failure is not null).Select(r => r.Describe()));
    }

    [Fact]
    public async Task Cancelled_DuringTheCut_StillRunsPostHooks_ThenThrows()
    {
        var exec = new ScriptedExec([]);
        using var cancel = CancellationTokenSource.CreateLinkedTokenSource(Ct);
        var runner = new ExecHookRunner(exec, new FakeTimeProvider());
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => runner.AroundAsync([P1], [Hook("quiesce")], [Hook("resume")], async token =>
        {
            await cancel.CancelAsync();
            token.ThrowIfCancellationRequested();
            return null;
        }, cancel.Token));
        Assert.Equal(["db-0:quiesce@db", "db-0:resume@db"], exec.Log);
    }

    [Fact]
    public void Summary_CountsAndNamesFailures()
    {
        var report = new HookReport(
            [
                new HookRun(HookPhase.Pre, "app/db-0", "db", "quiesce", null, false),
                new HookRun(HookPhase.Pre, "app/db-1", "db", "quiesce", "exit code 1", false),
                new HookRun(HookPhase.Post, "app/db-1", "db", "resume", null, false),
                new HookRun(HookPhase.Post, "app/db-0", "db", "resume", null, false),
            ],
            true,
            null);
        Assert.Equal("exec hooks in 2 pods: 1/2 pre ok, 2/2 post ok; pre hook [quiesce] in app/db-1 container db: exit code 1", report.Summary());
    }

    [Theory]
    [InlineData("30s", 30)]
    [InlineData("2m", 120)]
    [InlineData("1m30s", 90)]
    [InlineData("1h", 3600)]
    [InlineData("0s", null)]
    [InlineData("61m", null)]
    [InlineData("30", null)]
    [InlineData("1.5s", null)]
    [InlineData("5ms", null)]
    [InlineData("", null)]
    public void Timeout_ParsesSecondsMinutesHours_Within1sTo1h(string text, int? seconds) =>
        Assert.Equal(seconds is { } s ? TimeSpan.FromSeconds(s) : null, ExecHookNames.ParseTimeout(text));

    [Theory]
    [InlineData("[{\"command\":[]}]", "spec.hooks.pre[0].command is empty: it needs the program to run and its arguments")]
    [InlineData("[{\"command\":[\"sync\"]},{\"command\":[\"x\"],\"timeout\":\"forever\"}]", "spec.hooks.pre[1].timeout \"forever\" is not a duration of 1s to 1h such as 30s, 2m or 1m30s")]
    [InlineData("[{\"command\":[\"sync\"],\"onError\":\"Ignore\"}]", "spec.hooks.pre[0].onError \"Ignore\" must be Fail or Continue")]
    [InlineData("[{\"command\":[\"sync\"],\"onError\":\"Continue\",\"timeout\":\"10s\"}]", null)]
    public void Problem_NamesTheField(string json, string? problem) =>
        Assert.Equal(problem, ExecHookNames.Problem(System.Text.Json.JsonSerializer.Deserialize<List<ExecHook>>(json), "spec.hooks.pre"));
}
