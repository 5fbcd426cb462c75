using Dolly.Repository.Format;
using Dolly.Repository.Storage;

namespace Dolly.Repository.Tests;

/// <summary>Uploads interrupted at chosen points (a cancelled process, a server gone away) and resumed.</summary>
public sealed class ResumeTests
{
    private const int Mi = 1 << 20;
    private const int Chunks = 12;

    public static TheoryData<int, bool> KillPoints => new()
    {
        { 1, true }, { 5, true }, { Chunks - 1, true }, { Chunks, true },
        { 0, false }, { 3, false }, { Chunks - 3, false }, { Chunks, false },
    };

    [Theory]
    [MemberData(nameof(KillPoints))]
    public async Task Interrupted_ThenResumed_SendsEveryChunkOnce_AndRestoresEqual(int afterPuts, bool cancel)
    {
        using var f = await RepoFixture.CreateAsync();
        f.Pool.CreateVolume("db", (long)Chunks * Mi).ThrowIfFailed();
        f.Write("db", 1, (0, Chunks * Mi));
        f.Pool.CreateSnapshot("db", "s1").ThrowIfFailed();
        using var cts = CancellationTokenSource.CreateLinkedTokenSource(TestContext.Current.CancellationToken);
        if (cancel)
        {
            f.Store.CancelSource = cts;
            f.Store.CancelAtChunkPut = afterPuts;
        }
        else
        {
            f.Store.UnreachableAfterChunkPuts = afterPuts;
        }

        var interrupted = await Record.ExceptionAsync(() => Transfer.SnapshotUploader.UploadAsync(f.Repository, f.Pool, "s1", f.Upload(), cts.Token));
        Assert.True(interrupted is OperationCanceledException || (interrupted is ObjectStoreException { Error: ObjectStoreError.Unreachable }), $"got {interrupted}");
        int sentBefore = f.Store.ChunkPuts;
        // Not complete, so not restorable: no manifest exists.
        Assert.False(Directory.Exists(Path.Combine(f.RepoDir, "manifests")) && Directory.EnumerateFiles(Path.Combine(f.RepoDir, "manifests")).Any());

        f.Store.UnreachableAfterChunkPuts = -1;
        f.Store.CancelAtChunkPut = -1;
        f.Store.ResetCounts();
        var resumed = await f.UploadAsync("s1");
        // Only a server unreachable from the first request leaves nothing to resume (not even the upload's marker).
        Assert.Equal(cancel || afterPuts > 0, resumed.Resumed);
        Assert.Equal(Chunks, sentBefore + resumed.ChunksPut);
        Assert.Equal(Chunks, resumed.Manifest.Entries.Count);
        Assert.True(resumed.ChunksFromJournal <= sentBefore, $"journal says {resumed.ChunksFromJournal} done, only {sentBefore} were sent");
        await f.RestoreAsync(resumed.Manifest.Info.Id, "back");
        Assert.Equal(f.ReadAll("s1"), f.ReadAll("back"));
        Assert.Empty(Directory.EnumerateFiles(Path.Combine(f.StateDir, f.Repository.Id.ToString("N")), "*.pending"));
        Assert.False(Directory.Exists(Path.Combine(f.RepoDir, "uploads")) && Directory.EnumerateFiles(Path.Combine(f.RepoDir, "uploads")).Any());
    }

    [Fact]
    public async Task Resume_WhenJournalClaimsAChunkThatIsGone_AfterTheMarkerLapsed_SendsItAgain()
    {
        using var f = await RepoFixture.CreateAsync();
        f.Pool.CreateVolume("db", 4L * Mi).ThrowIfFailed();
        f.Write("db", 1, (0, 4 * Mi));
        f.Pool.CreateSnapshot("db", "s1").ThrowIfFailed();
        f.Store.UnreachableAfterChunkPuts = 2;
        await Assert.ThrowsAsync<ObjectStoreException>(() => f.UploadAsync("s1"));
        f.Store.UnreachableAfterChunkPuts = -1;

        // A prune ran while the marker was stale and swept what the journal lists: the resume must notice.
        foreach (var marker in Directory.EnumerateFiles(Path.Combine(f.RepoDir, "uploads")))
        {
            File.Delete(marker);
        }

        foreach (var chunk in Directory.EnumerateFiles(Path.Combine(f.RepoDir, "chunks"), "*", SearchOption.AllDirectories))
        {
            File.Delete(chunk);
        }

        f.Store.ResetCounts();
        var resumed = await f.UploadAsync("s1");
        Assert.Equal(4, resumed.ChunksPut);
        await f.RestoreAsync(resumed.Manifest.Info.Id, "back");
        Assert.Equal(f.ReadAll("s1"), f.ReadAll("back"));
    }

    [Fact]
    public async Task Journal_TornLastLine_IsIgnored()
    {
        using var f = await RepoFixture.CreateAsync();
        f.Pool.CreateVolume("db", 4L * Mi).ThrowIfFailed();
        f.Write("db", 1, (0, 4 * Mi));
        f.Pool.CreateSnapshot("db", "s1").ThrowIfFailed();
        f.Store.UnreachableAfterChunkPuts = 2;
        await Assert.ThrowsAsync<ObjectStoreException>(() => f.UploadAsync("s1"));
        f.Store.UnreachableAfterChunkPuts = -1;
        string journal = Directory.EnumerateFiles(Path.Combine(f.StateDir, f.Repository.Id.ToString("N")), "*.pending").Single();
        File.AppendAllText(journal, "3 " + new ChunkId(1, 2, 3, 4).Hex[..20]);
        var resumed = await f.UploadAsync("s1");
        Assert.Equal(4, resumed.Manifest.Entries.Count);
        await f.RestoreAsync(resumed.Manifest.Info.Id, "back");
        Assert.Equal(f.ReadAll("s1"), f.ReadAll("back"));
    }
}
