using System.Diagnostics;
using System.Globalization;
using System.Text;
using Grpc.Core;

namespace Dolly.Csi;

/// <summary>The outcome of one external command.</summary>
internal sealed record CommandResult(string Command, int ExitCode, string StdOut, string StdErr)
{
    public bool Ok => ExitCode == 0;

    /// <summary>INTERNAL with the command and its stderr, for a command the RPC could not do without.</summary>
    public RpcException Failure(string rpc) =>
        CsiStatus.Fail(StatusCode.Internal, $"{rpc}: '{Command}' exited with {ExitCode}: {(StdErr.Trim().Length > 0 ? StdErr.Trim() : StdOut.Trim())}");

    public CommandResult Check(string rpc) => Ok ? this : throw Failure(rpc);
}

/// <summary>Runs the node's tools (nbdfuse, losetup, mkfs, mount) and reads the mount table.</summary>
internal static class NodeCommands
{
    private static readonly TimeSpan Timeout = TimeSpan.FromMinutes(2);

    private static readonly string[] SystemDirs = ["/usr/sbin", "/sbin", "/usr/local/sbin", "/usr/bin", "/bin"];

    /// <summary>The full path of a program on PATH or in the system directories, or null.</summary>
    public static string? Find(string name)
    {
        string path = Environment.GetEnvironmentVariable("PATH") ?? string.Empty;
        foreach (string dir in path.Split(':', StringSplitOptions.RemoveEmptyEntries).Concat(SystemDirs))
        {
            string candidate = Path.Combine(dir, name);
            if (File.Exists(candidate))
            {
                return candidate;
            }
        }

        return null;
    }

    public static async Task<CommandResult> RunAsync(string program, params string[] args)
    {
        string command = program + " " + string.Join(' ', args);
        var psi = new ProcessStartInfo(Find(program) ?? program)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
            UseShellExecute = false,
        };
        foreach (string a in args)
        {
            psi.ArgumentList.Add(a);
        }

        Process p;
        try
        {
            p = Process.Start(psi) ?? throw new InvalidOperationException("no process");
        }
        catch (Exception e) when (e is System.ComponentModel.Win32Exception or InvalidOperationException)
        {
            return new CommandResult(command, 127, string.Empty, $"cannot start {program}: {e.Message}");
        }

        using (p)
        {
            p.StandardInput.Close();
            var stdout = p.StandardOutput.ReadToEndAsync();
            var stderr = p.StandardError.ReadToEndAsync();
            using var cts = new CancellationTokenSource(Timeout);
            try
            {
                await p.WaitForExitAsync(cts.Token).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                p.Kill(entireProcessTree: true);
                await p.WaitForExitAsync(CancellationToken.None).ConfigureAwait(false);
                return new CommandResult(command, -1, await stdout.ConfigureAwait(false), $"timed out after {Timeout.TotalSeconds:0} s; " + await stderr.ConfigureAwait(false));
            }

            return new CommandResult(command, p.ExitCode, await stdout.ConfigureAwait(false), await stderr.ConfigureAwait(false));
        }
    }

    /// <summary>Whether <paramref name="path"/> is a mount point (listed in /proc/self/mountinfo).</summary>
    public static bool IsMountPoint(string path)
    {
        string full = Path.TrimEndingDirectorySeparator(Path.GetFullPath(path));
        foreach (string line in File.ReadLines("/proc/self/mountinfo"))
        {
            string[] fields = line.Split(' ');
            if (fields.Length > 4 && Unescape(fields[4]) == full)
            {
                return true;
            }
        }

        return false;
    }

    // mountinfo escapes space, tab, newline and backslash as \ooo.
    private static string Unescape(string field)
    {
        if (!field.Contains('\\', StringComparison.Ordinal))
        {
            return field;
        }

        var sb = new StringBuilder(field.Length);
        for (int i = 0; i < field.Length; i++)
        {
            if (field[i] == '\\' && i + 3 < field.Length &&
                int.TryParse(field.AsSpan(i + 1, 3), NumberStyles.None, CultureInfo.InvariantCulture, out _))
            {
                sb.Append((char)Convert.ToInt32(field.Substring(i + 1, 3), 8));
                i += 3;
            }
            else
            {
                sb.Append(field[i]);
            }
        }

        return sb.ToString();
    }
}
