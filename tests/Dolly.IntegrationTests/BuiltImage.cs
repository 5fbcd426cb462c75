using System.Diagnostics;
using System.Formats.Tar;
using System.Text.Json;

namespace Dolly.IntegrationTests;

/// <summary>
/// The dolly image as deploy/kubernetes/build-image.sh builds it (or the docker-archive named by
/// <c>DOLLY_IMAGE_ARCHIVE</c>), unpacked layer by layer into a directory the tests chroot into. Containers cannot
/// start on these machines, so a command "in the image" runs under chroot with the image's environment and
/// the /proc and /dev a container runtime would give it, in a mount namespace of its own.
/// </summary>
public sealed class BuiltImage : IAsyncLifetime
{
    public const string EnableVariable = "DOLLY_IMAGE_TESTS";
    public const string ArchiveVariable = "DOLLY_IMAGE_ARCHIVE";
    public const string Tag = "dolly:image-test";

    /// <summary>What <see cref="Tag"/> means to docker load, containerd and a pod spec.</summary>
    public const string QualifiedTag = "docker.io/library/" + Tag;

    private static readonly TimeSpan BuildTimeout = TimeSpan.FromMinutes(60);

    public BuiltImage()
    {
        Root = Path.Combine(Path.GetTempPath(), "dolly-image-test-" + Guid.NewGuid().ToString("N")[..10]);
    }

    public string Root { get; }

    /// <summary>The image's root file system, all layers applied.</summary>
    public string RootFs => Path.Combine(Root, "rootfs");

    /// <summary>Why these tests cannot run here, or null.</summary>
    public string? Unavailable { get; private set; }

    /// <summary>The repository tags the archive's manifest gives the image.</summary>
    public IReadOnlyList<string> ArchiveTags { get; private set; } = [];

    /// <summary>The tag the image was built with, qualified, or null for an archive from elsewhere.</summary>
    public string? BuiltTag { get; private set; }

    /// <summary>The image configuration's <c>config</c> object (Entrypoint, Cmd, Env...).</summary>
    public JsonElement ContainerConfig { get; private set; }

    /// <summary>How long build-image.sh took, when it ran.</summary>
    public TimeSpan? BuildTime { get; private set; }

    public static string RepoRoot
    {
        get
        {
            for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            {
                if (File.Exists(Path.Combine(dir.FullName, "Dolly.slnx")))
                {
                    return dir.FullName;
                }
            }

            throw new InvalidOperationException("the tests run outside the repository: no Dolly.slnx above " + AppContext.BaseDirectory);
        }
    }

    public static string Deploy => Path.Combine(RepoRoot, "deploy", "kubernetes");

    public async ValueTask InitializeAsync()
    {
        if (Environment.GetEnvironmentVariable(EnableVariable) != "1")
        {
            Unavailable = $"the image build (deploy/kubernetes/build-image.sh: debootstrap from the Debian mirror, dotnet publish, buildah) "
                + $"takes minutes and needs the mirror: set {EnableVariable}=1 to run it ({ArchiveVariable}=path tests an archive the script built before from the same commit)";
            return;
        }

        if (!OperatingSystem.IsLinux() || Environment.UserName != "root")
        {
            Unavailable = "unpacking the image and chroot into it need root";
            return;
        }

        string? given = Environment.GetEnvironmentVariable(ArchiveVariable) is { Length: > 0 } a ? Path.GetFullPath(a) : null;
        if (given is null && new[] { "debootstrap", "buildah" }.FirstOrDefault(p => !OnPath(p)) is { } missing)
        {
            Unavailable = $"{missing} is not installed; scripts/install-test-deps.sh installs it when {EnableVariable}=1";
            return;
        }

        Directory.CreateDirectory(RootFs);
        string archive = given ?? await BuildAsync();
        await UnpackAsync(archive);
    }

    public async ValueTask DisposeAsync()
    {
        if (Directory.Exists(Root))
        {
            // --one-file-system: never follow into anything mounted under the tree (nothing should be).
            await RunAsync("rm", ["-rf", "--one-file-system", Root], TimeSpan.FromMinutes(5));
        }
    }

    private async Task<string> BuildAsync()
    {
        string archive = Path.Combine(Root, "dolly-image.tar");
        var clock = Stopwatch.StartNew();
        var build = await RunAsync("bash", [Path.Combine(Deploy, "build-image.sh"), "--tag", Tag, "--archive", archive], BuildTimeout);
        BuildTime = clock.Elapsed;
        build.ShouldSucceed();
        Assert.Equal(archive, build.Stdout.Trim());
        BuiltTag = QualifiedTag;
        return archive;
    }

    /// <summary>A docker-archive: manifest.json names the config and the layers, applied in order.</summary>
    private async Task UnpackAsync(string archive)
    {
        string parts = Path.Combine(Root, "archive");
        Directory.CreateDirectory(parts);
        await TarFile.ExtractToDirectoryAsync(archive, parts, overwriteFiles: false, TestContext.Current.CancellationToken);
        using var manifest = JsonDocument.Parse(await File.ReadAllTextAsync(Path.Combine(parts, "manifest.json")));
        var image = Assert.Single(manifest.RootElement.EnumerateArray().ToList());
        ArchiveTags = [.. image.GetProperty("RepoTags").EnumerateArray().Select(t => t.GetString()!)];
        using var config = JsonDocument.Parse(await File.ReadAllTextAsync(Path.Combine(parts, image.GetProperty("Config").GetString()!)));
        ContainerConfig = config.RootElement.GetProperty("config").Clone();
        foreach (var layer in image.GetProperty("Layers").EnumerateArray())
        {
            string file = Path.Combine(parts, layer.GetString()!);

            // One layer from scratch has nothing to delete; a whiteout would mean a base image was mixed in.
            (await RunAsync("tar", ["--numeric-owner", "--same-permissions", "-xf", file, "-C", RootFs], TimeSpan.FromMinutes(10))).ShouldSucceed();
        }

        Assert.Empty(Directory.EnumerateFiles(RootFs, ".wh.*", new EnumerationOptions { RecurseSubdirectories = true, AttributesToSkip = 0 }));
        Directory.Delete(parts, recursive: true);
    }

    private static bool OnPath(string program) =>
        (Environment.GetEnvironmentVariable("PATH") ?? "").Split(':').Append("/usr/sbin").Append("/sbin")
            .Any(dir => dir.Length > 0 && File.Exists(Path.Combine(dir, program)));

    /// <summary>Runs a program inside the image, with the image's environment, as its container would.</summary>
    public Task<Run> InImageAsync(params string[] command)
    {
        var env = ContainerConfig.TryGetProperty("Env", out var e) ? e.EnumerateArray().Select(v => v.GetString()!).ToList() : [];
        const string Script = """
            root=$1; shift
            mount -t proc proc "$root/proc"
            mount -t tmpfs dev "$root/dev"
            for d in null zero full random urandom tty fuse loop-control; do
              if [ -e "/dev/$d" ]; then touch "$root/dev/$d"; mount --bind "/dev/$d" "$root/dev/$d"; fi
            done
            exec chroot "$root" /usr/bin/env -i "$@"
            """;
        return RunAsync("unshare", ["--mount", "--propagation", "private", "--", "sh", "-ec", Script, "sh", RootFs, .. env, .. command], TimeSpan.FromMinutes(2));
    }

    /// <summary>Runs the <c>dolly</c> the tests were built with (the tree's own build), outside the image.</summary>
    public static Task<Run> HostDollyAsync(params string[] args) =>
        RunAsync("dotnet", [Path.Combine(AppContext.BaseDirectory, "dolly.dll"), .. args], TimeSpan.FromMinutes(2));

    public static async Task<Run> RunAsync(string program, IReadOnlyList<string> args, TimeSpan timeout)
    {
        var psi = new ProcessStartInfo(program) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (string a in args)
        {
            psi.ArgumentList.Add(a);
        }

        using var process = Process.Start(psi)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        using var cts = new CancellationTokenSource(timeout);
        try
        {
            await process.WaitForExitAsync(cts.Token);
        }
        catch (OperationCanceledException)
        {
            process.Kill(entireProcessTree: true);
            throw new TimeoutException($"{program} {string.Join(' ', args)} ran longer than {timeout}");
        }

        return new Run($"{program} {string.Join(' ', args)}", process.ExitCode, await stdout, await stderr);
    }
}
