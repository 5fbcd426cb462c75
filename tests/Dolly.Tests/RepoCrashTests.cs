using System.Diagnostics;

namespace Dolly.Tests;

/// <summary>
/// `dolly repo upload` as a real child process, SIGKILLed once a chosen number of chunks is stored, then run
/// again: no manifest exists until an upload completes, the local journal never lists a chunk the repository
/// lacks, and the upload that finally completes restores byte-equal. DOLLY_REPO_CRASH_ROUNDS sets the kills.
/// </summary>
public sealed class RepoCrashTests : CliTestBase
{
    private const string Key = "crash test repository key";
    private const int Chunks = 40;

    private string RepoDir => Path.Combine(Root, "repo");

    private Dictionary<string, string?> Env => new() { ["DOLLY_POOL"] = PoolDir, ["DOLLY_REPO"] = RepoDir, ["DOLLY_REPO_KEY"] = Key };

    [Fact]
    public async Task Upload_KilledAtChosenChunks_ResumesWithoutLosingOrFakingProgress()
    {
        int rounds = int.TryParse(Environment.GetEnvironmentVariable("DOLLY_REPO_CRASH_ROUNDS"), out int r) ? r : 4;
        Assert.Equal(0, (await Run(["repo", "init", "--chunk-size", "1Mi"], null, Env, null)).ExitCode);
        Assert.Equal(0, (await Run(["volume", "import", "db", "-"], RandomBytes(Chunks << 20, 11), Env, null)).ExitCode);
        Assert.Equal(0, (await Run(["snapshot", "create", "db", "s1"], null, Env, null)).ExitCode);

        var rng = new Random(Environment.GetEnvironmentVariable("DOLLY_SEED") is { } s ? int.Parse(s, System.Globalization.CultureInfo.InvariantCulture) : 5);
        bool finished = false;
        int kills = 0;
        for (int round = 0; round < rounds && !finished; round++)
        {
            int killAt = StoredChunks() + rng.Next(1, Chunks / rounds);
            finished = await RunUntilAsync(killAt);
            kills += finished ? 0 : 1;
            string context = $"round {round}, kill at {killAt} chunks, finished {finished}";
            Assert.Equal(finished, ManifestCount() == 1);
            foreach (var chunk in JournalChunks())
            {
                Assert.True(File.Exists(Path.Combine(RepoDir, "chunks", chunk[..2], chunk)), $"{context}: the journal lists chunk {chunk}, which is not stored");
            }
        }

        Assert.True(kills > 0, "no upload was killed: every kill point came too late");
        var last = await Run(["repo", "upload", "s1"], null, Env, null);
        Assert.True(last.ExitCode == 0, last.ToString());
        Assert.Contains(finished ? "(full)" : "resumed", last.Out, StringComparison.Ordinal);
        string id = last.Out.Split("manifest ")[1][..32];
        Assert.Equal(0, (await Run(["repo", "restore", id, "back"], null, Env, null)).ExitCode);
        var a = await Run(["volume", "export", "s1", "-"], null, Env, null);
        var b = await Run(["volume", "export", "back", "-"], null, Env, null);
        Assert.Equal(a.Binary, b.Binary);
        Assert.Equal(0, (await Run(["repo", "verify"], null, Env, null)).ExitCode);
        Assert.Equal(Chunks, StoredChunks());
    }

    /// <summary>Runs an upload child; kills it once <paramref name="killAt"/> chunks are stored. True when it completed instead.</summary>
    private async Task<bool> RunUntilAsync(int killAt)
    {
        string dolly = Path.Combine(AppContext.BaseDirectory, "dolly");
        var psi = new ProcessStartInfo(dolly, ["repo", "upload", "s1", "--parallel", "2"]) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var (k, v) in Env)
        {
            psi.Environment[k] = v;
        }

        using var child = Process.Start(psi)!;
        var stdout = child.StandardOutput.ReadToEndAsync(TestContext.Current.CancellationToken);
        var stderr = child.StandardError.ReadToEndAsync(TestContext.Current.CancellationToken);
        while (!child.HasExited && StoredChunks() < killAt)
        {
            await Task.Delay(5, TestContext.Current.CancellationToken);
        }

        if (!child.HasExited)
        {
            child.Kill(entireProcessTree: true);
        }

        await child.WaitForExitAsync(TestContext.Current.CancellationToken);
        string output = await stdout + await stderr;
        bool killed = child.ExitCode == 137 || child.ExitCode == -1 || (OperatingSystem.IsLinux() && child.ExitCode > 128);
        Assert.True(killed || child.ExitCode == 0, $"upload failed on its own (exit {child.ExitCode}): {output}");
        return child.ExitCode == 0 && output.Contains("uploaded snapshot", StringComparison.Ordinal);
    }

    private int StoredChunks()
    {
        string dir = Path.Combine(RepoDir, "chunks");
        return Directory.Exists(dir) ? Directory.EnumerateFiles(dir, "*", SearchOption.AllDirectories).Count(f => !Path.GetFileName(f).StartsWith('.')) : 0;
    }

    private int ManifestCount()
    {
        string dir = Path.Combine(RepoDir, "manifests");
        return Directory.Exists(dir) ? Directory.EnumerateFiles(dir).Count(f => !Path.GetFileName(f).StartsWith('.')) : 0;
    }

    private IEnumerable<string> JournalChunks()
    {
        string dir = Root + Path.DirectorySeparatorChar + "pool-uploads";
        if (!Directory.Exists(dir))
        {
            return [];
        }

        return Directory.EnumerateFiles(dir, "*.pending", SearchOption.AllDirectories)
            .SelectMany(f => File.ReadAllLines(f).Skip(1))
            .Select(l => l.Split(' '))
            .Where(p => p.Length == 2 && p[1].Length == 64)
            .Select(p => p[1]);
    }
}
