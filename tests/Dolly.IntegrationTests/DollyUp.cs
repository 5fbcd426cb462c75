using System.Diagnostics;
using System.Text;
using System.Text.Json;
using Dolly.Csi.Tests;

namespace Dolly.IntegrationTests;

/// <summary>
/// A real <c>dolly up</c> process on a scratch pool, with kubectl and the <c>dolly</c> CLI (mount, unmount)
/// run as the user would run them. Before it starts, a golden volume with a file system holding
/// <c>orders.csv</c> is imported; once it runs, <c>dolly snapshot create</c> snapshots it outside Kubernetes
/// (through the running driver), which gives the golden-snapshot scenario its handle.
/// </summary>
public sealed class DollyUp : IAsyncLifetime
{
    public const string GoldenHandle = "orders-golden-v1";
    public const string GoldenText = "id,total\n1,42\n2,17\n";

    private readonly System.Collections.Concurrent.ConcurrentDictionary<string, Lazy<Task>> _steps = new(StringComparer.Ordinal);
    private Process? _process;
    private readonly StringBuilder _log = new();

    public DollyUp()
    {
        Root = Path.Combine(Path.GetTempPath(), "dolly-e2e-" + Guid.NewGuid().ToString("N")[..10]);
        Pool = Path.Combine(Root, "pool");
    }

    public string Root { get; }

    public string Pool { get; }

    public string Kubeconfig => Path.Combine(Root, "pool-api", "kubeconfig");

    /// <summary>Why these tests cannot run here, or null.</summary>
    public string? Unavailable { get; private set; }

    private static string DollyDll => Path.Combine(AppContext.BaseDirectory, "dolly.dll");

    public async ValueTask InitializeAsync()
    {
        if (!OperatingSystem.IsLinux() || Environment.UserName != "root")
        {
            Unavailable = "the node path (nbdfuse, loop devices, mounts) needs root";
            return;
        }

        if (!File.Exists("/dev/fuse") || !File.Exists("/dev/loop-control"))
        {
            Unavailable = "/dev/fuse or /dev/loop-control is absent";
            return;
        }

        Directory.CreateDirectory(Root);
        (await Dolly("pool", "init")).ShouldSucceed();

        // The golden data, made outside Kubernetes: an ext4 image with orders.csv, imported and snapshotted.
        string tree = Path.Combine(Root, "golden-tree");
        Directory.CreateDirectory(tree);
        await File.WriteAllTextAsync(Path.Combine(tree, "orders.csv"), GoldenText);
        string image = Path.Combine(Root, "golden.img");
        await using (var f = File.Create(image))
        {
            f.SetLength(1L << 30);
        }

        var mkfs = await NodeCleanup.RunAsync("mkfs.ext4", "-q", "-F", "-d", tree, image);
        Assert.True(File.Exists(image), mkfs);
        (await Dolly("volume", "import", "orders-golden", image)).ShouldSucceed();
        File.Delete(image);

        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (string a in new[] { DollyDll, "--pool", Pool, "up", "--port", "0", "--metrics", "127.0.0.1:0", "-v" })
        {
            psi.ArgumentList.Add(a);
        }

        _process = Process.Start(psi)!;
        var up = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        _process.OutputDataReceived += (_, e) =>
        {
            if (e.Data is null)
            {
                return;
            }

            lock (_log)
            {
                _log.AppendLine(e.Data);
            }

            if (e.Data.StartsWith("Dolly is up", StringComparison.Ordinal))
            {
                up.TrySetResult();
            }
        };
        _process.ErrorDataReceived += (_, e) =>
        {
            lock (_log)
            {
                _log.AppendLine(e.Data);
            }
        };
        _process.BeginOutputReadLine();
        _process.BeginErrorReadLine();
        var exited = _process.WaitForExitAsync();
        var first = await Task.WhenAny(up.Task, exited, Task.Delay(TimeSpan.FromSeconds(60)));
        Assert.True(first == up.Task, "dolly up did not come up:\n" + Log);

        // The golden snapshot is taken while dolly up holds the pool, as an operator would: through its driver.
        var snapshot = (await Dolly("snapshot", "create", "orders-golden", GoldenHandle)).ShouldSucceed();
        Assert.Contains("through the CSI driver", snapshot.Stdout, StringComparison.Ordinal);
    }

    public async ValueTask DisposeAsync()
    {
        if (_process is not null)
        {
            await NodeCleanup.ForceAsync(Root);
            if (!_process.HasExited)
            {
                _process.Kill(entireProcessTree: false);
                try
                {
                    // SIGKILL: the pool is crash-safe; a graceful stop is tested elsewhere.
                    await _process.WaitForExitAsync(new CancellationTokenSource(TimeSpan.FromSeconds(30)).Token);
                }
                catch (OperationCanceledException)
                {
                }
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

    public string Log
    {
        get
        {
            lock (_log)
            {
                return _log.ToString();
            }
        }
    }

    /// <summary>Runs a setup step once for the whole run, however many tests need it (a failed step fails them all alike).</summary>
    public Task OnceAsync(string step, Func<Task> action) => _steps.GetOrAdd(step, _ => new Lazy<Task>(action)).Value;

    public Task<Run> Dolly(params string[] args) => RunAsync("dotnet", [DollyDll, "--pool", Pool, .. args], null);

    public Task<Run> Kubectl(params string[] args) => RunAsync("kubectl", args, null);

    public Task<Run> Apply(string yaml) => RunAsync("kubectl", ["apply", "-f", "-"], yaml);

    /// <summary>The YAML documents of an acceptance file, in order.</summary>
    public static IReadOnlyList<string> Documents(string file)
    {
        string text = File.ReadAllText(Path.Combine(AppContext.BaseDirectory, "acceptance", file));
        return text.Split("\n---", StringSplitOptions.RemoveEmptyEntries).Select(d => d.Trim()).Where(d => d.Length > 0 && d.Contains("kind:", StringComparison.Ordinal)).ToList();
    }

    /// <summary>A field of an object (kubectl jsonpath), or "" when it is empty.</summary>
    public async Task<string> Field(string kindAndName, string? ns, string jsonPath)
    {
        var args = new List<string> { "get", kindAndName, "-o", "jsonpath={" + jsonPath + "}" };
        if (ns is not null)
        {
            args.Add("-n");
            args.Add(ns);
        }

        return (await Kubectl([.. args])).ShouldSucceed().Stdout;
    }

    /// <summary>Waits until a field has a value (kubectl wait --for=jsonpath).</summary>
    public async Task WaitFor(string kindAndName, string? ns, string jsonPath, string value, int seconds = 60)
    {
        var args = new List<string> { "wait", kindAndName, $"--for=jsonpath={{{jsonPath}}}={value}", $"--timeout={seconds}s" };
        if (ns is not null)
        {
            args.Add("-n");
            args.Add(ns);
        }

        var run = await Kubectl([.. args]);
        Assert.True(run.ExitCode == 0, $"{kindAndName} never got {jsonPath}={value}: {run}\n--- dolly up log (tail)\n{Tail(Log, 40)}");
    }

    /// <summary>Waits until an object is gone (kubectl wait --for=delete).</summary>
    public async Task WaitForDeleted(string kindAndName, string? ns, int seconds = 60)
    {
        var args = new List<string> { "wait", "--for=delete", kindAndName, $"--timeout={seconds}s" };
        if (ns is not null)
        {
            args.Add("-n");
            args.Add(ns);
        }

        var run = await Kubectl([.. args]);
        Assert.True(run.ExitCode == 0, $"{kindAndName} was never deleted: {run}\n--- dolly up log (tail)\n{Tail(Log, 60)}");
    }

    /// <summary>Polls until the condition holds or the time is up; returns whether it held.</summary>
    public static async Task<bool> Eventually(Func<Task<bool>> condition, int seconds = 60)
    {
        var deadline = DateTime.UtcNow.AddSeconds(seconds);
        while (DateTime.UtcNow < deadline)
        {
            if (await condition())
            {
                return true;
            }

            await Task.Delay(200);
        }

        return await condition();
    }

    /// <summary>Mounts a claim with <c>dolly mount</c>, runs the action on the directory, and unmounts.</summary>
    public async Task WithMounted(string ns, string claim, Func<string, Task> action, bool readOnly = false)
    {
        string dir = Path.Combine(Root, "mnt", ns + "-" + claim + "-" + Guid.NewGuid().ToString("N")[..6]);
        var args = new List<string> { "mount", $"{ns}/{claim}", dir };
        if (readOnly)
        {
            args.Add("--read-only");
        }

        (await Dolly([.. args])).ShouldSucceed();
        try
        {
            await action(dir);
        }
        finally
        {
            (await Dolly("unmount", dir)).ShouldSucceed();
        }
    }

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

    public static JsonElement Json(string text) => JsonDocument.Parse(text).RootElement.Clone();

    private static string Tail(string text, int lines) => string.Join('\n', text.Split('\n').TakeLast(lines));
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
