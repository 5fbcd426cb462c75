namespace Dolly.IntegrationTests;

/// <summary>
/// deploy/kubernetes/build-image.sh refuses bad arguments before it builds or writes anything, naming the
/// argument. Quick, and needs only bash: the build itself is <see cref="ImageTests"/>' (behind DOLLY_IMAGE_TESTS).
/// </summary>
public sealed class BuildImageScriptTests : IDisposable
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "dolly-build-image-args-" + Guid.NewGuid().ToString("N")[..10]);

    public BuildImageScriptTests()
    {
        Directory.CreateDirectory(_dir);
    }

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    /// <summary>Arguments (with {dir} for a scratch directory that exists), and the text the error must name.</summary>
    public static TheoryData<string[], string> BadArguments => new()
    {
        { ["--tag", "Dolly"], "'Dolly'" },
        { ["--tag", "dolly:"], "'dolly:'" },
        { ["--tag", "dolly latest"], "'dolly latest'" },
        { ["--tag", "dolly@sha256:0"], "'dolly@sha256:0'" },
        { ["--tag"], "--tag" },
        { ["--archive"], "--archive" },
        { ["--mirror", "ftp://mirror.example/debian"], "ftp://mirror.example/debian" },
        { ["--security-mirror", "mirror.example"], "mirror.example" },
        { ["--archive", "{dir}/absent/dolly.tar"], "{dir}/absent" },
        { ["--archive", "{dir}"], "{dir}" },
        { ["--rootfs", "{dir}"], "{dir}" },
        { ["--bogus"], "--bogus" },
    };

    [Theory]
    [MemberData(nameof(BadArguments))]
    public async Task BadArgument_IsRefusedByName_BeforeAnythingIsWritten(string[] args, string named)
    {
        var run = await BuiltImage.RunAsync(
            "bash",
            [Path.Combine(BuiltImage.Deploy, "build-image.sh"), "--archive", Path.Combine(_dir, "dolly.tar"), .. args.Select(a => a.Replace("{dir}", _dir, StringComparison.Ordinal))],
            TimeSpan.FromMinutes(1));

        Assert.Equal(1, run.ExitCode);
        Assert.Empty(run.Stdout);
        Assert.StartsWith("build-image.sh: error: ", run.Stderr, StringComparison.Ordinal);
        Assert.Contains(named.Replace("{dir}", _dir, StringComparison.Ordinal), run.Stderr, StringComparison.Ordinal);
        Assert.Empty(Directory.EnumerateFileSystemEntries(_dir));
    }

    [Fact]
    public async Task Help_PrintsTheUsage_AndBuildsNothing()
    {
        var run = (await BuiltImage.RunAsync("bash", [Path.Combine(BuiltImage.Deploy, "build-image.sh"), "--help"], TimeSpan.FromMinutes(1))).ShouldSucceed();
        Assert.Contains("build-image.sh [--tag", run.Stdout, StringComparison.Ordinal);
        Assert.Empty(run.Stderr);
    }
}
