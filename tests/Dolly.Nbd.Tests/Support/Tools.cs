using System.Diagnostics;
using System.Text;

namespace Dolly.Nbd.Tests.Support;

internal sealed record ProcessResult(string Command, int ExitCode, string StdOut, string StdErr)
{
    public ProcessResult EnsureSuccess()
    {
        Assert.True(ExitCode == 0, $"{Command} exited with {ExitCode}\nstdout:\n{StdOut}\nstderr:\n{StdErr}");
        return this;
    }

    public override string ToString() => $"{Command} -> {ExitCode}\nstdout:\n{StdOut}\nstderr:\n{StdErr}";
}

/// <summary>Runs the real peers (nbdinfo, nbdcopy, qemu-img, ...) as child processes with timeouts.</summary>
internal static class Tools
{
    public static readonly TimeSpan DefaultTimeout = TimeSpan.FromSeconds(60);

    private static readonly string[] ExtraDirs = ["/usr/sbin", "/sbin", "/usr/local/sbin"];

    public static string? Find(string name)
    {
        var path = Environment.GetEnvironmentVariable("PATH") ?? string.Empty;
        foreach (var dir in path.Split(':', StringSplitOptions.RemoveEmptyEntries).Concat(ExtraDirs))
        {
            var candidate = Path.Combine(dir, name);
            if (File.Exists(candidate))
            {
                return candidate;
            }
        }

        return null;
    }

    /// <summary>Skips the test when a program is missing (scripts/install-test-deps.sh installs them all).</summary>
    public static void Require(params string[] names)
    {
        foreach (var n in names)
        {
            if (Find(n) is null)
            {
                Assert.Skip($"'{n}' is not installed; scripts/install-test-deps.sh installs the real NBD peers");
            }
        }
    }

    public static async Task<ProcessResult> RunAsync(string program, IEnumerable<string> args, TimeSpan? timeout = null, IDictionary<string, string>? env = null)
    {
        var psi = new ProcessStartInfo(Find(program) ?? program)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
            UseShellExecute = false,
        };
        foreach (var a in args)
        {
            psi.ArgumentList.Add(a);
        }

        if (env is not null)
        {
            foreach (var (k, v) in env)
            {
                psi.Environment[k] = v;
            }
        }

        string command = program + " " + string.Join(' ', psi.ArgumentList);
        using var p = Process.Start(psi) ?? throw new InvalidOperationException($"cannot start {program}");
        p.StandardInput.Close();
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        var limit = timeout ?? DefaultTimeout;
        using var cts = CancellationTokenSource.CreateLinkedTokenSource(TestContext.Current.CancellationToken);
        cts.CancelAfter(limit);
        try
        {
            await p.WaitForExitAsync(cts.Token);
        }
        catch (OperationCanceledException)
        {
            p.Kill(entireProcessTree: true);
            await p.WaitForExitAsync(CancellationToken.None);
            throw new TimeoutException($"{command} did not finish within {limit.TotalSeconds:0} s\nstdout:\n{await stdout}\nstderr:\n{await stderr}");
        }

        return new ProcessResult(command, p.ExitCode, await stdout, await stderr);
    }

    public static Task<ProcessResult> RunAsync(string program, params string[] args) => RunAsync(program, (IEnumerable<string>)args);

    /// <summary>Starts a long-running program (nbdfuse); its output is collected for failure messages.</summary>
    public static BackgroundProcess Start(string program, params string[] args)
    {
        var psi = new ProcessStartInfo(Find(program) ?? program)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (var a in args)
        {
            psi.ArgumentList.Add(a);
        }

        var p = Process.Start(psi) ?? throw new InvalidOperationException($"cannot start {program}");
        return new BackgroundProcess(p, program + " " + string.Join(' ', args));
    }
}

internal sealed class BackgroundProcess : IDisposable
{
    private readonly StringBuilder _output = new();

    public BackgroundProcess(Process process, string command)
    {
        Process = process;
        Command = command;
        process.OutputDataReceived += (_, e) => Append(e.Data);
        process.ErrorDataReceived += (_, e) => Append(e.Data);
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
    }

    public Process Process { get; }

    public string Command { get; }

    public string Output
    {
        get
        {
            lock (_output)
            {
                return _output.ToString();
            }
        }
    }

    private void Append(string? line)
    {
        if (line is null)
        {
            return;
        }

        lock (_output)
        {
            _output.AppendLine(line);
        }
    }

    public async Task<bool> WaitForExitAsync(TimeSpan timeout)
    {
        using var cts = new CancellationTokenSource(timeout);
        try
        {
            await Process.WaitForExitAsync(cts.Token);
            return true;
        }
        catch (OperationCanceledException)
        {
            return false;
        }
    }

    public void Dispose()
    {
        try
        {
            if (!Process.HasExited)
            {
                Process.Kill(entireProcessTree: true);
                Process.WaitForExit(5000);
            }
        }
        catch (InvalidOperationException)
        {
        }

        Process.Dispose();
    }
}
