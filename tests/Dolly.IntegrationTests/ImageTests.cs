using System.Text.Json;
using System.Text.RegularExpressions;
using YamlDotNet.RepresentationModel;

namespace Dolly.IntegrationTests;

/// <summary>
/// The image of deploy/kubernetes, built without a Docker engine by build-image.sh, unpacked and run with
/// chroot: it is the image the Dockerfile describes (base, packages, entrypoint), its <c>dolly</c> is the tree's
/// and takes the manifests' command lines, and every program the node service runs is there and runs.
/// Behind <c>DOLLY_IMAGE_TESTS=1</c>: the build takes minutes and needs the Debian mirror.
/// </summary>
public sealed partial class ImageTests(BuiltImage image) : IClassFixture<BuiltImage>
{
    /// <summary>
    /// Every program Dolly.Csi's node service and <c>dolly mount</c> run, with the flag that makes it print
    /// its version and the Debian package that must provide it.
    /// </summary>
    public static TheoryData<string, string, string> NodeTools => new()
    {
        { "nbdfuse", "--version", "libnbd-bin" },
        { "nbd-client", "-V", "nbd-client" },
        { "fusermount3", "--version", "fuse3" },
        { "losetup", "--version", "util-linux" },
        { "blockdev", "--version", "util-linux" },
        { "blkid", "-V", "util-linux" },
        { "mount", "--version", "mount" },
        { "umount", "--version", "mount" },
        { "mkfs.ext4", "-V", "e2fsprogs" },
        { "e2fsck", "-V", "e2fsprogs" },
        { "resize2fs", "--version", "e2fsprogs" },
        { "dumpe2fs", "-V", "e2fsprogs" },
        { "mkfs.xfs", "-V", "xfsprogs" },
        { "xfs_growfs", "-V", "xfsprogs" },
    };

    private void RequireImage()
    {
        if (image.Unavailable is { } why)
        {
            Assert.Skip(why);
        }

        if (image.BuildTime is { } took)
        {
            TestContext.Current.SendDiagnosticMessage($"build-image.sh took {took:m\\:ss}");
        }
    }

    [Fact]
    public async Task Image_IsWhatTheDockerfileDescribes()
    {
        RequireImage();
        string[] dockerfile = await File.ReadAllLinesAsync(Path.Combine(BuiltImage.Deploy, "Dockerfile"), TestContext.Current.CancellationToken);

        // Entrypoint and default arguments, as the Dockerfile's exec-form lines give them.
        Assert.Equal(ExecForm(dockerfile, "ENTRYPOINT"), Strings(image.ContainerConfig.GetProperty("Entrypoint")));
        Assert.Equal(ExecForm(dockerfile, "CMD"), Strings(image.ContainerConfig.GetProperty("Cmd")));
        if (image.BuiltTag is { } tag)
        {
            Assert.Equal([tag], image.ArchiveTags);
        }

        // The last stage's base: debian:<codename>-slim, and the image is that Debian release.
        string from = dockerfile.Last(l => l.StartsWith("FROM ", StringComparison.Ordinal));
        var baseImage = BaseImage().Match(from);
        Assert.True(baseImage.Success, $"the Dockerfile's runtime stage is not a Debian slim image: {from}");
        var osRelease = (await File.ReadAllLinesAsync(Path.Combine(image.RootFs, "etc", "os-release"), TestContext.Current.CancellationToken))
            .Select(l => l.Split('=', 2)).Where(p => p.Length == 2).ToDictionary(p => p[0], p => p[1].Trim('"'), StringComparer.Ordinal);
        Assert.Equal("debian", osRelease["ID"]);
        Assert.Equal(baseImage.Groups["codename"].Value, osRelease["VERSION_CODENAME"]);

        // Every package the Dockerfile installs is installed in the image.
        var installed = await InstalledPackagesAsync();
        var packages = DockerfilePackages(dockerfile);
        Assert.NotEmpty(packages);
        Assert.All(packages, p => Assert.True(installed.ContainsKey(p), $"the Dockerfile installs {p}; the image lacks it"));

        // The executable the entrypoint names is on the image's PATH.
        var path = Strings(image.ContainerConfig.GetProperty("Env")).Single(v => v.StartsWith("PATH=", StringComparison.Ordinal))["PATH=".Length..];
        string entry = ExecForm(dockerfile, "ENTRYPOINT")[0];
        Assert.Contains(path.Split(':'), dir => IsExecutableInImage(dir + "/" + entry));
    }

    [Fact]
    public async Task Dolly_InTheImage_IsTheTreesBuild()
    {
        RequireImage();
        string[][] commands = [["--version"], ["node", "--help"], ["up", "--help"]];
        foreach (string[] args in commands)
        {
            var inImage = (await image.InImageAsync(["dolly", .. args])).ShouldSucceed();
            var host = (await BuiltImage.HostDollyAsync(args)).ShouldSucceed();
            Assert.NotEmpty(inImage.Stdout.Trim());
            Assert.Equal(host.Stdout, inImage.Stdout);
        }
    }

    /// <summary>
    /// The command lines of node.yaml and controller.yaml parse in the image's dolly and get as far as the
    /// mounted TLS files (absent here): exactly as far as the tree's build gets with them.
    /// </summary>
    [Theory]
    [InlineData("node.yaml")]
    [InlineData("controller.yaml")]
    public async Task ManifestCommandLine_InTheImage_BehavesAsTheTreesBuild(string manifest)
    {
        RequireImage();
        string[] args = DollyArgs(manifest);
        var inImage = await image.InImageAsync(["dolly", .. args]);
        var host = await BuiltImage.HostDollyAsync(args);
        Assert.Equal(host.ExitCode, inImage.ExitCode);
        Assert.Equal(host.Stderr, inImage.Stderr);
        Assert.NotEqual(0, inImage.ExitCode);
        Assert.Contains(args, a => a.StartsWith('/') && inImage.Stderr.Contains(a, StringComparison.Ordinal));
    }

    [Theory]
    [MemberData(nameof(NodeTools))]
    public async Task NodeTool_RunsInTheImage_FromItsPackage(string tool, string versionFlag, string package)
    {
        RequireImage();
        var installed = await InstalledPackagesAsync();
        Assert.True(installed.TryGetValue(package, out string? version), $"{package} is not installed in the image");

        var run = await image.InImageAsync(tool, versionFlag);

        // resize2fs has no version flag: it prints its version and usage, and exits 1.
        Assert.True(run.ExitCode == 0 || (tool == "resize2fs" && run.ExitCode == 1), run.ToString());
        Assert.Contains(Upstream(version), run.Stdout + run.Stderr, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Ext4_MadeAndCheckedInTheImage()
    {
        RequireImage();
        string disk = "/tmp/image-test-" + Guid.NewGuid().ToString("N")[..8] + ".img";
        try
        {
            await using (var f = File.Create(image.RootFs + disk))
            {
                f.SetLength(32L << 20);
            }

            (await image.InImageAsync("mkfs.ext4", "-q", "-F", disk)).ShouldSucceed();
            (await image.InImageAsync("e2fsck", "-f", "-n", disk)).ShouldSucceed();
            var type = (await image.InImageAsync("blkid", "-o", "value", "-s", "TYPE", disk)).ShouldSucceed();
            Assert.Equal("ext4", type.Stdout.Trim());
        }
        finally
        {
            File.Delete(image.RootFs + disk);
        }
    }

    [Fact]
    public async Task OpenSsl_IsWhereTheRuntimeLoadsIt()
    {
        RequireImage();

        // .NET's System.Security.Cryptography.Native loads libssl.so.3 by name (TLS for NBD and the API).
        var cache = (await image.InImageAsync("ldconfig", "-p")).ShouldSucceed();
        Assert.Contains("libssl.so.3 ", cache.Stdout, StringComparison.Ordinal);
        Assert.Contains("libcrypto.so.3 ", cache.Stdout, StringComparison.Ordinal);
    }

    /// <summary>Package name to version, from the image's own dpkg database.</summary>
    private async Task<Dictionary<string, string>> InstalledPackagesAsync()
    {
        var query = (await image.InImageAsync("dpkg-query", "-W", "-f", "${Package} ${Version} ${db:Status-Status}\n")).ShouldSucceed();
        return query.Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries)
            .Select(l => l.Split(' '))
            .Where(p => p.Length == 3 && p[2] == "installed")
            .ToDictionary(p => p[0], p => p[1], StringComparer.Ordinal);
    }

    /// <summary>The upstream part of a Debian version: no epoch, no Debian revision (1:3.24-1.1 is 3.24).</summary>
    private static string Upstream(string version)
    {
        string v = version.Contains(':', StringComparison.Ordinal) ? version[(version.IndexOf(':', StringComparison.Ordinal) + 1)..] : version;
        return v.Contains('-', StringComparison.Ordinal) ? v[..v.LastIndexOf('-')] : v;
    }

    private static List<string> ExecForm(string[] dockerfile, string instruction)
    {
        string line = dockerfile.Single(l => l.StartsWith(instruction + " ", StringComparison.Ordinal));
        using var json = JsonDocument.Parse(line[(instruction.Length + 1)..]);
        return Strings(json.RootElement);
    }

    private static List<string> Strings(JsonElement array) => [.. array.EnumerateArray().Select(e => e.GetString()!)];

    /// <summary>The package names of the Dockerfile's <c>apt-get install</c> (its continuation lines included).</summary>
    private static List<string> DockerfilePackages(string[] dockerfile)
    {
        string text = string.Join('\n', dockerfile).Replace("\\\n", " ", StringComparison.Ordinal);
        string install = text.Split('\n').Single(l => l.Contains("apt-get install", StringComparison.Ordinal));
        string after = install[(install.IndexOf("apt-get install", StringComparison.Ordinal) + "apt-get install".Length)..];
        return [.. after.Split("&&")[0].Split(' ', StringSplitOptions.RemoveEmptyEntries).Where(w => !w.StartsWith('-'))];
    }

    /// <summary>The arguments of the <c>dolly</c> container in a manifest under deploy/kubernetes.</summary>
    private static string[] DollyArgs(string manifest)
    {
        var yaml = new YamlStream();
        using (var reader = new StringReader(File.ReadAllText(Path.Combine(BuiltImage.Deploy, manifest))))
        {
            yaml.Load(reader);
        }

        var workload = (YamlMappingNode)yaml.Documents.Single().RootNode;
        var pod = Map(Map(Map(workload, "spec"), "template"), "spec");
        var container = ((YamlSequenceNode)pod.Children[new YamlScalarNode("containers")]).Children.Cast<YamlMappingNode>()
            .Single(c => c.Children[new YamlScalarNode("name")].ToString() == "dolly");
        return [.. ((YamlSequenceNode)container.Children[new YamlScalarNode("args")]).Children.Select(a => a.ToString())];
    }

    private static YamlMappingNode Map(YamlMappingNode node, string key) => (YamlMappingNode)node.Children[new YamlScalarNode(key)];

    /// <summary>Whether a path of the image is an executable file, following links inside the image.</summary>
    private bool IsExecutableInImage(string path)
    {
        for (int hops = 0; hops < 16; hops++)
        {
            var file = new FileInfo(image.RootFs + path);
            if (file.LinkTarget is not { } target)
            {
                return file.Exists && (file.UnixFileMode & UnixFileMode.UserExecute) != 0;
            }

            path = target.StartsWith('/') ? target : Path.GetDirectoryName(path) + "/" + target;
        }

        return false;
    }

    [GeneratedRegex(@"^FROM debian:(?<codename>[a-z]+)-slim$")]
    private static partial Regex BaseImage();
}
