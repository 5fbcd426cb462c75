using System.Diagnostics;
using System.Text.Json;

namespace Dolly.Csi.Tests;

/// <summary>
/// Best-effort teardown of whatever a failed Node test left under its directory: mounts (deepest first,
/// lazily), loop devices backed by files there, nbdfuse mounts. Never throws: the test's own failure is
/// the one worth reporting.
/// </summary>
internal static class NodeCleanup
{
    public static async Task ForceAsync(string dir)
    {
        string root = Path.TrimEndingDirectorySeparator(Path.GetFullPath(dir));
        var mounts = MountPoints().Where(m => m == root || m.StartsWith(root + "/", StringComparison.Ordinal)).ToList();
        var fuse = mounts.Where(m => File.Exists(Path.Combine(m, "disk"))).ToHashSet(StringComparer.Ordinal);
        foreach (string m in mounts.Where(m => !fuse.Contains(m)).OrderByDescending(m => m.Length))
        {
            await RunAsync("umount", "-l", m);
        }

        var loops = await RunAsync("losetup", "-n", "-O", "NAME,BACK-FILE", "-l");
        foreach (string line in loops.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            string[] parts = line.Split(' ', 2, StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
            if (parts.Length == 2 && parts[1].StartsWith(root + "/", StringComparison.Ordinal))
            {
                await RunAsync("losetup", "-d", parts[0]);
            }
        }

        foreach (string m in fuse)
        {
            await RunAsync("fusermount3", "-u", "-z", m);
        }

        // Kernel attachments are found through the records that name them (read as JSON: this file is shared
        // with test projects that do not see the driver's internals).
        foreach (string record in Directory.Exists(root) ? Directory.EnumerateFiles(root, "*.json", SearchOption.AllDirectories) : [])
        {
            if (NbdDevice(record) is { } device)
            {
                await RunAsync(Find("nbd-client") ?? "nbd-client", "-d", device);
            }
        }
    }

    private static string? NbdDevice(string record)
    {
        try
        {
            using var json = JsonDocument.Parse(File.ReadAllText(record));
            return json.RootElement.ValueKind == JsonValueKind.Object
                && json.RootElement.TryGetProperty("Attach", out var attach) && attach.ValueKind == JsonValueKind.String && attach.GetString() == "Kernel"
                && json.RootElement.TryGetProperty("NbdDevice", out var device) && device.ValueKind == JsonValueKind.String
                ? device.GetString()
                : null;
        }
        catch (Exception e) when (e is JsonException or IOException)
        {
            return null;
        }
    }

    /// <summary>Skips the test where the kernel NBD path cannot run: root, /dev/nbd0 (the nbd module) and nbd-client.</summary>
    public static void RequireKernelNbd()
    {
        if (Environment.UserName != "root")
        {
            Assert.Skip("nbd devices and mounts need root");
        }

        if (!File.Exists("/dev/nbd0"))
        {
            Assert.Skip("/dev/nbd0 is absent (the nbd kernel module is not loaded): the kernel NBD attach path cannot run here");
        }

        if (Find("nbd-client") is null)
        {
            Assert.Skip("nbd-client is not installed (scripts/install-test-deps.sh installs it): the kernel NBD attach path cannot run here");
        }
    }

    /// <summary>Skips the test where loop devices, FUSE or mounts are unavailable.</summary>
    public static void RequireBlockStack()
    {
        if (Environment.UserName != "root")
        {
            Assert.Skip("loop devices and mounts need root");
        }

        if (!File.Exists("/dev/fuse"))
        {
            Assert.Skip("/dev/fuse is absent: nbdfuse cannot expose a volume as a file here");
        }

        if (!File.Exists("/dev/loop-control") || !OnPath("losetup"))
        {
            Assert.Skip("losetup or /dev/loop-control is absent: no loop devices to mount a file system from");
        }
    }

    private static bool OnPath(string program) => Find(program) is not null;

    private static string? Find(string program) =>
        (Environment.GetEnvironmentVariable("PATH") ?? "/usr/sbin:/usr/bin:/sbin:/bin").Split(':').Append("/usr/sbin").Append("/sbin")
            .Where(dir => dir.Length > 0).Select(dir => Path.Combine(dir, program)).FirstOrDefault(File.Exists);

    public static IEnumerable<string> MountPoints() =>
        File.ReadLines("/proc/self/mountinfo").Select(l => l.Split(' ')).Where(f => f.Length > 4).Select(f => f[4]).ToList();

    public static async Task<string> RunAsync(string program, params string[] args)
    {
        try
        {
            var psi = new ProcessStartInfo(program) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
            foreach (string a in args)
            {
                psi.ArgumentList.Add(a);
            }

            using var p = Process.Start(psi)!;
            var stdout = p.StandardOutput.ReadToEndAsync();
            var stderr = p.StandardError.ReadToEndAsync();
            using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(20));
            await p.WaitForExitAsync(cts.Token);
            await stderr;
            return await stdout;
        }
        catch (Exception e) when (e is System.ComponentModel.Win32Exception or OperationCanceledException or InvalidOperationException)
        {
            return string.Empty;
        }
    }
}
