using System.Diagnostics;
using Dolly.Controllers.Hooks;
using k8s;

namespace Dolly.Controllers.Tests.Hooks;

/// <summary>
/// The exec transport (KubernetesClient's websocket, Dolly's v4/v5 decoding) against a server that speaks the
/// remote-command subprotocols, and the same server checked with the real kubectl exec: the server's framing is
/// what kubectl expects, and the client reads it as kubectl does (stdout, stderr, exit code).
/// </summary>
public sealed class ExecFramingTests
{
    private static readonly string[] Both = [ExecProtocol.V5, ExecProtocol.V4];
    private static readonly string[] V4Only = [ExecProtocol.V4];

    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    /// <summary>A scripted command and what the client must make of it.</summary>
    private sealed record Case(string Name, string Protocol, Func<ExecScript, Task> Script, int? ExitCode, string? Message, string Stdout, string Stderr, string? ProtocolError);

    private static readonly Dictionary<string, Case> Table = BuildCases().ToDictionary(c => c.Name);

    public static TheoryData<string> Cases() => [.. Table.Keys];

    private static List<Case> BuildCases()
    {
        var cases = new List<Case>();
        foreach (string p in new[] { ExecProtocol.V5, ExecProtocol.V4 })
        {
            cases.Add(new($"{p}: output on both channels, then Success", p, async s =>
            {
                // Upstream opens each channel with an empty message before any data.
                await s.SendAsync([ExecProtocol.Stdout]);
                await s.SendAsync([ExecProtocol.Stderr]);
                await s.SendAsync(ExecProtocol.Stdout, "flushed tables\n");
                await s.SendAsync(ExecProtocol.Stderr, "warning: slow\n");
                await s.SendAsync(ExecProtocol.Stdout, "locked\n");
                await s.StatusAsync(ExecScript.Success);
            }, 0, null, "flushed tables\nlocked\n", "warning: slow\n", null));
            cases.Add(new($"{p}: non-zero exit code", p, async s =>
            {
                await s.SendAsync(ExecProtocol.Stderr, "psql: connection refused\n");
                await s.StatusAsync(ExecScript.ExitCode(3));
            }, 3, "command terminated with non-zero exit code: error executing command, exit code 3", "", "psql: connection refused\n", null));
            cases.Add(new($"{p}: failure without an exit code (no such container)", p, async s =>
                await s.StatusAsync("""{"metadata":{},"status":"Failure","message":"container not found (\"db\")","reason":"BadRequest","code":400}"""),
                null, "container not found (\"db\")", "", "", null));
            cases.Add(new($"{p}: a message split over frames", p, async s =>
            {
                await s.SendFragmentedAsync(ExecProtocol.Stdout, "0123456789abcdef", 3);
                await s.SendFragmentedAsync(ExecProtocol.Error, ExecScript.Success, 5);
            }, 0, null, "0123456789abcdef", "", null));
            cases.Add(new($"{p}: closed without a status", p, s => s.SendAsync(ExecProtocol.Stdout, "partial"), null, "the exec stream ended without a status from the server", "partial", "", null));
            cases.Add(new($"{p}: data on the stdin channel", p, s => s.SendAsync(ExecProtocol.Stdin, "x"), null, null, "", "", "the server sent data on channel 0, which only the client writes"));
            cases.Add(new($"{p}: an error channel that is not a Status", p, s => s.StatusAsync("exit status 1"), null, null, "", "", "the error channel carries no Status JSON"));
        }

        cases.Add(new("v5: close signals before the status", ExecProtocol.V5, async s =>
        {
            await s.SendAsync(ExecProtocol.Stdout, "done\n");
            await s.SendAsync([ExecProtocol.Close, ExecProtocol.Stdout]);
            await s.SendAsync([ExecProtocol.Close, ExecProtocol.Stderr]);
            await s.StatusAsync(ExecScript.Success);
        }, 0, null, "done\n", "", null));
        cases.Add(new("v5: data after its channel's close signal", ExecProtocol.V5, async s =>
        {
            await s.SendAsync([ExecProtocol.Close, ExecProtocol.Stdout]);
            await s.SendAsync(ExecProtocol.Stdout, "late");
        }, null, null, "", "", "the server sent data on channel 1 after closing it"));
        cases.Add(new("v5: a close signal naming no output channel", ExecProtocol.V5, s => s.SendAsync([ExecProtocol.Close, ExecProtocol.Stdin]), null, null, "", "", "the server's close signal names channel 0"));
        cases.Add(new("v4: a close signal, which v4 does not have", ExecProtocol.V4, s => s.SendAsync([ExecProtocol.Close, ExecProtocol.Stdout]), null, null, "", "", "which v4.channel.k8s.io does not have"));
        return cases;
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public async Task Client_DecodesTheServersFraming(string name)
    {
        var c = Table[name];
        await using var server = await ExecTestServer.StartAsync(c.Protocol == ExecProtocol.V5 ? Both : V4Only, (_, s) => c.Script(s));
        using var client = new Kubernetes(new KubernetesClientConfiguration { Host = server.Url.ToString() });
        var exec = new KubernetesPodExec(client);
        var target = new ExecTarget("team-a", "db-0", "db");
        if (c.ProtocolError is { } expected)
        {
            var ex = await Assert.ThrowsAsync<ExecProtocolException>(() => exec.RunAsync(target, ["true"], Ct));
            Assert.Contains(expected, ex.Message, StringComparison.Ordinal);
            return;
        }

        var result = await exec.RunAsync(target, ["sh", "-c", "echo 'a b' >&2; exit 3"], Ct);
        Assert.Equal(c.ExitCode, result.ExitCode);
        Assert.Equal(c.Message, result.Message);
        Assert.Equal(c.Stdout, result.Stdout);
        Assert.Equal(c.Stderr, result.Stderr);

        // The request: the pod and container named, the words of the command apart, no stdin, no TTY, and the
        // newest subprotocol the server speaks (a v4-only server refused v5 once, then was asked with v4).
        var request = Assert.Single(server.Requests);
        Assert.Equal(("team-a", "db-0", "db"), (request.Namespace, request.Pod, request.Container));
        Assert.Equal(["sh", "-c", "echo 'a b' >&2; exit 3"], request.Command);
        Assert.Equal(("0", "1", "1", "0"), (request.Stdin, request.Stdout, request.Stderr, request.Tty));
        Assert.Equal(c.Protocol, request.Protocol);
        Assert.Equal(c.Protocol == ExecProtocol.V5 ? [] : [ExecProtocol.V5], server.Refused);
    }

    [Fact]
    public async Task Client_KeepsOnlyTheTailOfLongOutput()
    {
        string line = new string('x', 1000) + "\n";
        await using var server = await ExecTestServer.StartAsync(Both, async (_, s) =>
        {
            for (int i = 0; i < 20; i++)
            {
                await s.SendAsync(ExecProtocol.Stdout, line);
            }

            await s.SendAsync(ExecProtocol.Stdout, "the end\n");
            await s.StatusAsync(ExecScript.ExitCode(1));
        });
        using var client = new Kubernetes(new KubernetesClientConfiguration { Host = server.Url.ToString() });
        var result = await new KubernetesPodExec(client).RunAsync(new ExecTarget("default", "p", "c"), ["make"], Ct);
        Assert.Equal(ExecStreamDecoder.DefaultKeep, result.Stdout.Length);
        Assert.EndsWith("x\nthe end\n", result.Stdout, StringComparison.Ordinal);
        Assert.Equal("exit code 1: the end", result.Describe());
    }

    [Fact]
    public async Task Client_RefusedByTheServer_TriesV5ThenV4_ThenFails()
    {
        await using var server = await ExecTestServer.StartAsync([], (_, _) => Task.CompletedTask);
        using var client = new Kubernetes(new KubernetesClientConfiguration { Host = server.Url.ToString() });
        var ex = await Assert.ThrowsAsync<System.Net.WebSockets.WebSocketException>(() => new KubernetesPodExec(client).RunAsync(new ExecTarget("default", "p", "c"), ["true"], Ct));
        Assert.Contains("400", ex.Message, StringComparison.Ordinal);
        Assert.Equal([ExecProtocol.V5, ExecProtocol.V4], server.Refused);
        Assert.Empty(server.Requests);
    }

    [Fact]
    public async Task Client_Cancelled_ClosesTheStream()
    {
        var released = new TaskCompletionSource();
        await using var server = await ExecTestServer.StartAsync(Both, async (_, s) =>
        {
            await s.SendAsync(ExecProtocol.Stdout, "working\n");
            await s.WaitForClientAsync();
            released.SetResult();
        });
        using var client = new Kubernetes(new KubernetesClientConfiguration { Host = server.Url.ToString() });
        using var cancel = CancellationTokenSource.CreateLinkedTokenSource(Ct);
        var run = new KubernetesPodExec(client).RunAsync(new ExecTarget("default", "p", "c"), ["sleep", "3600"], cancel.Token);
        await Eventually.Until(() => Task.FromResult<bool?>(!server.Requests.IsEmpty), "the exec request");
        await cancel.CancelAsync();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => run);

        // The server sees the client go: the hook's stream does not stay open behind a timed-out hook.
        await released.Task.WaitAsync(TimeSpan.FromSeconds(60), Ct);
    }

    /// <summary>
    /// The real kubectl against the same server: the framing this suite decodes is the framing kubectl reads. kubectl
    /// 1.32 offers only v5 over websockets (it falls back to SPDY, not to v4), so v4 is checked with the client alone.
    /// </summary>
    [Fact]
    public async Task Kubectl_ReadsTheServersFraming_AsTheClientDoes()
    {
        var protocols = Both;
        async Task Script(ExecRequest r, ExecScript s)
        {
            await s.SendAsync(ExecProtocol.Stdout, "out:" + string.Join('|', r.Command) + "\n");
            await s.SendAsync(ExecProtocol.Stderr, "err:" + r.Container + "\n");
            await s.StatusAsync(ExecScript.ExitCode(7));
        }

        await using var server = await ExecTestServer.StartAsync(protocols, Script);
        var (code, stdout, stderr) = await KubectlAsync(server.Url, "exec", "-n", "team-a", "db-0", "-c", "sidecar", "--", "pg_ctl", "checkpoint", "--wait");
        Assert.Equal(7, code);
        Assert.Equal("out:pg_ctl|checkpoint|--wait\n", stdout);
        Assert.StartsWith("err:sidecar\n", stderr, StringComparison.Ordinal);
        var kubectlRequest = Assert.Single(server.Requests);
        Assert.Equal(ExecProtocol.V5, kubectlRequest.Protocol);

        // Dolly's client on the same server and script: the same output and exit code, over the same subprotocol.
        using var client = new Kubernetes(new KubernetesClientConfiguration { Host = server.Url.ToString() });
        var result = await new KubernetesPodExec(client).RunAsync(new ExecTarget("team-a", "db-0", "sidecar"), ["pg_ctl", "checkpoint", "--wait"], Ct);
        Assert.Equal((7, stdout, "err:sidecar\n"), (result.ExitCode!.Value, result.Stdout, result.Stderr));
        var ours = server.Requests.Last();
        Assert.Equal((kubectlRequest.Namespace, kubectlRequest.Pod, kubectlRequest.Container, kubectlRequest.Protocol), (ours.Namespace, ours.Pod, ours.Container, ours.Protocol));
        Assert.Equal(kubectlRequest.Command, ours.Command);
    }

    private static async Task<(int Code, string Stdout, string Stderr)> KubectlAsync(Uri server, params string[] args)
    {
        var psi = new ProcessStartInfo("kubectl") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        string cache = Directory.CreateTempSubdirectory("dolly-exec-kubectl-").FullName;
        psi.Environment["KUBECONFIG"] = Path.Combine(cache, "none");
        foreach (string a in (string[])["--server", server.ToString(), "--cache-dir", cache, .. args])
        {
            psi.ArgumentList.Add(a);
        }

        try
        {
            using var p = Process.Start(psi)!;
            var stdout = p.StandardOutput.ReadToEndAsync(Ct);
            var stderr = p.StandardError.ReadToEndAsync(Ct);
            await p.WaitForExitAsync(Ct).WaitAsync(TimeSpan.FromSeconds(120), Ct);
            return (p.ExitCode, await stdout, await stderr);
        }
        finally
        {
            Directory.Delete(cache, recursive: true);
        }
    }
}
