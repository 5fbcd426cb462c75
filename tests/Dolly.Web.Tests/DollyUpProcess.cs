using System.Diagnostics;
using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;

namespace Dolly.Web.Tests;

/// <summary>
/// A real <c>dolly up --log-format json -v</c> on a scratch pool, with kubectl and the <c>dolly</c> CLI run as a
/// user would run them. Stdout is the start-up summary (with the web view's login link); stderr the JSON log.
/// </summary>
public sealed partial class DollyUpProcess : IAsyncDisposable
{
    private readonly StringBuilder _out = new();
    private readonly StringBuilder _err = new();
    private readonly HashSet<string> _taken = new(StringComparer.Ordinal);
    private Process? _process;

    private DollyUpProcess(string? pool)
    {
        Root = pool is null ? Path.Combine(Path.GetTempPath(), "dolly-web-" + Guid.NewGuid().ToString("N")[..10]) : Path.GetDirectoryName(pool)!;
        Pool = pool ?? Path.Combine(Root, "pool");
    }

    public string Root { get; }

    public string Pool { get; }

    public string Kubeconfig => Path.Combine(Root, "pool-api", "kubeconfig");

    /// <summary>The login link printed at start.</summary>
    public Uri FirstLogin { get; private set; } = null!;

    /// <summary>The listener of /metrics and /ui, e.g. http://127.0.0.1:40123/.</summary>
    public Uri Listener => new(FirstLogin, "/");

    public string Stdout
    {
        get
        {
            lock (_out)
            {
                return _out.ToString();
            }
        }
    }

    public string Stderr
    {
        get
        {
            lock (_err)
            {
                return _err.ToString();
            }
        }
    }

    private static string DollyDll => Path.Combine(AppContext.BaseDirectory, "dolly.dll");

    /// <summary>Starts dolly up on <paramref name="pool"/>, or on a new pool in a scratch directory.</summary>
    public static async Task<DollyUpProcess> StartAsync(string? pool = null)
    {
        var up = new DollyUpProcess(pool);
        if (pool is null)
        {
            Directory.CreateDirectory(up.Root);
            (await up.Dolly("pool", "init")).ShouldSucceed();
        }

        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (string a in new[] { DollyDll, "--pool", up.Pool, "up", "--port", "0", "--metrics", "127.0.0.1:0", "--log-format", "json", "-v" })
        {
            psi.ArgumentList.Add(a);
        }

        var ready = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        up._process = Process.Start(psi)!;
        up._process.OutputDataReceived += (_, e) =>
        {
            lock (up._out)
            {
                up._out.AppendLine(e.Data);
            }

            if (e.Data?.StartsWith("try: export KUBECONFIG", StringComparison.Ordinal) == true)
            {
                ready.TrySetResult();
            }
        };
        up._process.ErrorDataReceived += (_, e) =>
        {
            if (e.Data is not null)
            {
                lock (up._err)
                {
                    up._err.AppendLine(e.Data);
                }
            }
        };
        up._process.BeginOutputReadLine();
        up._process.BeginErrorReadLine();
        var first = await Task.WhenAny(ready.Task, up._process.WaitForExitAsync(), Task.Delay(TimeSpan.FromSeconds(90)));
        Assert.True(first == ready.Task, "dolly up did not come up:\n" + up.Stdout + up.Stderr);
        var login = LoginLine().Match(up.Stdout);
        Assert.True(login.Success, "dolly up printed no web view login link:\n" + up.Stdout);
        up.FirstLogin = new Uri(login.Groups[1].Value);
        return up;
    }

    /// <summary>
    /// The newest login link dolly up printed that no test took yet (each use prints the next one), marked
    /// taken; waits for it to be printed.
    /// </summary>
    public async Task<Uri> TakeLoginAsync()
    {
        var deadline = DateTime.UtcNow.AddSeconds(60);
        while (true)
        {
            var links = AnyLoginLine().Matches(Stdout).Select(m => m.Groups[1].Value).ToList();
            lock (_taken)
            {
                if (links.Count > 0 && _taken.Add(links[^1]))
                {
                    return new Uri(links[^1]);
                }
            }

            Assert.True(DateTime.UtcNow < deadline, "dolly up printed no new login link:\n" + Stdout);
            await Task.Delay(50);
        }
    }

    /// <summary>Stops the process as a service manager would (SIGTERM) and waits for it to exit cleanly.</summary>
    public async Task StopAsync()
    {
        var p = _process!;
        if (!p.HasExited)
        {
            using var kill = Process.Start("kill", ["-TERM", p.Id.ToString(System.Globalization.CultureInfo.InvariantCulture)]);
            await kill.WaitForExitAsync();
            using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(60));
            await p.WaitForExitAsync(timeout.Token);
        }

        Assert.True(p.ExitCode == 0, $"dolly up exited with {p.ExitCode}:\n{Stdout}");
    }

    public Task<Run> Dolly(params string[] args) => RunAsync("dotnet", [DollyDll, "--pool", Pool, .. args], null);

    public Task<Run> Kubectl(params string[] args) => RunAsync("kubectl", args, null);

    public Task<Run> Apply(string yaml) => RunAsync("kubectl", ["apply", "-f", "-"], yaml);

    /// <summary>Waits until a field has a value (kubectl wait --for=jsonpath).</summary>
    public async Task WaitFor(string kindAndName, string ns, string jsonPath, string value)
    {
        var run = await Kubectl("wait", kindAndName, "-n", ns, $"--for=jsonpath={{{jsonPath}}}={value}", "--timeout=90s");
        Assert.True(run.ExitCode == 0, $"{kindAndName} never got {jsonPath}={value}: {run}\n--- dolly up stderr (tail)\n{string.Join('\n', Stderr.Split('\n').TakeLast(30))}");
    }

    public async Task<string> Field(string kindAndName, string ns, string jsonPath) =>
        (await Kubectl("get", kindAndName, "-n", ns, "-o", "jsonpath={" + jsonPath + "}")).ShouldSucceed().Stdout;

    public async Task<Run> RunAsync(string program, IReadOnlyList<string> args, string? stdin)
    {
        var psi = new ProcessStartInfo(program)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = stdin is not null,
            UseShellExecute = false,
        };
        psi.Environment["KUBECONFIG"] = Kubeconfig;
        foreach (string a in args)
        {
            psi.ArgumentList.Add(a);
        }

        using var process = Process.Start(psi)!;
        if (stdin is not null)
        {
            await process.StandardInput.WriteAsync(stdin);
            process.StandardInput.Close();
        }

        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(120));
        await process.WaitForExitAsync(timeout.Token);
        return new Run($"{program} {string.Join(' ', args)}", process.ExitCode, await stdout, await stderr);
    }

    /// <summary>The JSON log objects written so far, one per stderr line; a line that is not one fails the test.</summary>
    public IReadOnlyList<JsonElement> LogObjects() =>
        Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Select(line =>
        {
            try
            {
                var e = JsonDocument.Parse(line).RootElement.Clone();
                Assert.Equal(JsonValueKind.Object, e.ValueKind);
                return e;
            }
            catch (JsonException ex)
            {
                Assert.Fail($"a stderr line is not a JSON object ({ex.Message}): {line}");
                throw;
            }
        }).ToList();

    public async ValueTask DisposeAsync()
    {
        if (_process is not null)
        {
            if (!_process.HasExited)
            {
                _process.Kill(entireProcessTree: false);
                await _process.WaitForExitAsync();
            }

            _process.Dispose();
        }

        try
        {
            Directory.Delete(Root, recursive: true);
        }
        catch (IOException)
        {
        }
    }

    [GeneratedRegex(@"(?:^  web view     |^web view: that login link is used up; the next one is )(http://\S+/ui/login\?token=[A-Za-z0-9_-]+)", RegexOptions.Multiline)]
    private static partial Regex AnyLoginLine();

    [GeneratedRegex(@"^  web view     (http://\S+/ui/login\?token=\S+) \(one-time login link\)$", RegexOptions.Multiline)]
    private static partial Regex LoginLine();
}

/// <summary>The outcome of one command.</summary>
public sealed record Run(string Command, int ExitCode, string Stdout, string Stderr)
{
    public Run ShouldSucceed()
    {
        Assert.True(ExitCode == 0, $"failed: {this}");
        return this;
    }

    public override string ToString() => $"{Command} -> exit {ExitCode}\n--- stdout\n{Stdout}\n--- stderr\n{Stderr}";
}
