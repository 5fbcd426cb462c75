using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Text;

namespace Dolly.Bench;

/// <summary>The outcome of one child process: its exit code and what it printed.</summary>
internal sealed record ProcessOutcome(int ExitCode, string Out, string Err)
{
    public bool Ok => ExitCode == 0;
}

/// <summary>
/// Child processes of the benchmarks that mount things: a cancelled run kills the child it waits for (a
/// pgbench left running would keep the file system busy and block the unmount), and teardown steps run with
/// their own deadline so one hung step cannot stop the rest of the cleanup.
/// </summary>
internal static partial class BenchProcess
{
    /// <summary>Runs a program to its end; a non-zero exit is an I/O failure naming the command and its stderr.</summary>
    public static async Task<string> RunAsync(string file, IReadOnlyList<string> args, CancellationToken ct)
    {
        var r = await TryAsync(file, args, ct).ConfigureAwait(false);
        if (!r.Ok)
        {
            // Ctrl-C in a terminal also signals the child; its death is then the cancellation, not a failure.
            ct.ThrowIfCancellationRequested();
            string why = string.IsNullOrWhiteSpace(r.Err) ? r.Out.Trim() : r.Err.Trim();
            throw new CliFailureException(ExitCodes.IoError, $"{Path.GetFileName(file)} {string.Join(' ', args)} failed (exit {r.ExitCode}): {why}");
        }

        return r.Out;
    }

    /// <summary>Runs a program to its end and returns its exit code; on cancellation the process tree is killed first.</summary>
    public static async Task<ProcessOutcome> TryAsync(string file, IReadOnlyList<string> args, CancellationToken ct)
    {
        using var p = Start(file, args, redirectOutput: true);
        var stdout = p.StandardOutput.ReadToEndAsync(CancellationToken.None);
        var stderr = p.StandardError.ReadToEndAsync(CancellationToken.None);
        try
        {
            await p.WaitForExitAsync(ct).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            Kill(p);
            throw;
        }

        return new ProcessOutcome(p.ExitCode, await stdout.ConfigureAwait(false), await stderr.ConfigureAwait(false));
    }

    /// <summary>A teardown step: never throws; a step that outlives <paramref name="timeout"/> is killed and counts as failed.</summary>
    public static async Task<ProcessOutcome> TryWithinAsync(string file, IReadOnlyList<string> args, TimeSpan timeout)
    {
        using var cts = new CancellationTokenSource(timeout);
        try
        {
            return await TryAsync(file, args, cts.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            return new ProcessOutcome(-1, string.Empty, $"did not finish within {timeout.TotalSeconds:0} s");
        }
        catch (Exception ex) when (ex is System.ComponentModel.Win32Exception or InvalidOperationException or IOException)
        {
            return new ProcessOutcome(-1, string.Empty, ex.Message);
        }
    }

    /// <summary>Starts a long-running child whose stderr is collected into <paramref name="stderr"/> as it comes.</summary>
    public static Process StartBackground(string file, IReadOnlyList<string> args, StringBuilder stderr)
    {
        var p = Start(file, args, redirectOutput: false);
        p.ErrorDataReceived += (_, e) =>
        {
            if (e.Data is not null)
            {
                lock (stderr)
                {
                    stderr.AppendLine(e.Data);
                }
            }
        };
        p.BeginErrorReadLine();
        return p;
    }

    /// <summary>Kills a child and everything it started, and waits a little for it to be gone.</summary>
    public static void Kill(Process p)
    {
        try
        {
            if (!p.HasExited)
            {
                p.Kill(entireProcessTree: true);
                p.WaitForExit(TimeSpan.FromSeconds(10));
            }
        }
        catch (InvalidOperationException)
        {
            // Already gone (or never started): nothing left to stop.
        }
    }

    /// <summary>Whether this process runs as root (effective uid 0): loop devices and mounts need it.</summary>
    public static bool IsRoot() => OperatingSystem.IsLinux() && GetEffectiveUserId() == 0;

    /// <summary>
    /// The full path of a program: in <paramref name="path"/> (a $PATH value), then in the sbin directories
    /// that a non-login root shell may lack (losetup, mkfs.ext4 and runuser live there on Debian).
    /// </summary>
    public static string? Find(string tool, string? path) =>
        (path ?? string.Empty).Split(':', StringSplitOptions.RemoveEmptyEntries)
            .Concat(["/usr/sbin", "/sbin"])
            .Select(d => Path.Combine(d, tool))
            .FirstOrDefault(File.Exists);

    private static Process Start(string file, IReadOnlyList<string> args, bool redirectOutput)
    {
        // Every path given is absolute; "/" keeps tools run as the postgres user from failing to enter root's cwd.
        var psi = new ProcessStartInfo(file) { RedirectStandardOutput = redirectOutput, RedirectStandardError = true, UseShellExecute = false, WorkingDirectory = "/" };
        foreach (var a in args)
        {
            psi.ArgumentList.Add(a);
        }

        return Process.Start(psi) ?? throw new CliFailureException(ExitCodes.IoError, $"cannot start {file}");
    }

    [LibraryImport("libc", EntryPoint = "geteuid")]
    private static partial uint GetEffectiveUserId();
}
