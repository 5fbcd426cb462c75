using Dolly.Repository.Format;
using Dolly.Repository.Transfer;
using Microsoft.Extensions.Time.Testing;

namespace Dolly.Repository.Tests;

public sealed class MaintenanceTests
{
    private const int Mi = 1 << 20;

    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    private static readonly TimeSpan Stale = TimeSpan.FromHours(6);

    [Fact]
    public async Task Prune_AfterManifestDeleted_DeletesOnlyUnreferencedChunksOlderThanTheGrace()
    {
        using var f = await RepoFixture.CreateAsync();
        f.Pool.CreateVolume("db", 8L * Mi).ThrowIfFailed();
        f.Write("db", 1, (0, 8 * Mi));
        f.Pool.CreateSnapshot("db", "s1").ThrowIfFailed();
        var s1 = await f.UploadAsync("s1");
        f.Write("db", 2, (0, 2 * Mi));
        f.Pool.CreateSnapshot("db", "s2").ThrowIfFailed();
        var s2 = await f.UploadAsync("s2");

        await f.Repository.DeleteManifestAsync(s1.Manifest.Info.Id, Ct);
        Assert.Equal(RepositoryError.NotFound, (await Assert.ThrowsAsync<RepositoryException>(() => f.Repository.DeleteManifestAsync(s1.Manifest.Info.Id, Ct))).Error);

        // Everything is younger than an hour: nothing goes.
        var clock = new FakeTimeProvider(DateTimeOffset.UtcNow);
        var kept = await RepositoryMaintenance.PruneAsync(f.Repository, TimeSpan.FromHours(1), Stale, clock, Ct);
        Assert.Equal((0L, 2L), (kept.ChunksDeleted, kept.ChunksKeptYoung));

        clock.Advance(TimeSpan.FromHours(2));
        var pruned = await RepositoryMaintenance.PruneAsync(f.Repository, TimeSpan.FromHours(1), Stale, clock, Ct);
        Assert.Equal(2, pruned.ChunksDeleted);
        Assert.Equal(8, pruned.ChunksReferenced);
        var verify = await RepositoryMaintenance.VerifyAsync(f.Repository, 100, new Random(1), null, clock, Ct);
        Assert.True(verify.IsClean, string.Join("\n", verify.Problems));
        Assert.Equal((8L, 8L), (verify.ChunksStored, verify.ChunksVerified));
        await f.RestoreAsync(s2.Manifest.Info.Id, "back");
        Assert.Equal(f.ReadAll("s2"), f.ReadAll("back"));
    }

    [Fact]
    public async Task Prune_DuringAnUpload_SweepsNothing_AndTheUploadCompletesRestorable()
    {
        using var f = await RepoFixture.CreateAsync();
        f.Pool.CreateVolume("old", 4L * Mi).ThrowIfFailed();
        f.Write("old", 5, (0, 4 * Mi));
        f.Pool.CreateSnapshot("old", "old1").ThrowIfFailed();
        var old = await f.UploadAsync("old1");
        // Garbage that equals the new volume's data: the upload will find these chunks by HEAD and reuse them.
        await f.Repository.DeleteManifestAsync(old.Manifest.Info.Id, Ct);
        f.Pool.CreateVolume("db", 8L * Mi).ThrowIfFailed();
        f.Write("db", 5, (0, 4 * Mi));
        f.Write("db", 6, (4L * Mi, 4 * Mi));
        f.Pool.CreateSnapshot("db", "s1").ThrowIfFailed();

        f.Store.Pause = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        f.Store.PauseAfterChunkPuts = 6;
        var upload = f.UploadAsync("s1");
        await f.Store.Paused.Task.WaitAsync(TimeSpan.FromSeconds(60), Ct);

        // A minute on: everything unreferenced is past the zero grace, but the upload's marker is fresh.
        var clock = new FakeTimeProvider(DateTimeOffset.UtcNow.AddMinutes(1));
        var during = await RepositoryMaintenance.PruneAsync(f.Repository, TimeSpan.Zero, Stale, clock, Ct);
        Assert.Single(during.LiveUploads);
        Assert.Equal(0, during.ChunksDeleted);

        f.Store.Pause.SetResult();
        var up = await upload;
        Assert.Equal(4, up.ChunksDeduplicated);
        var after = await RepositoryMaintenance.PruneAsync(f.Repository, TimeSpan.Zero, Stale, clock, Ct);
        Assert.Empty(after.LiveUploads);
        Assert.Equal(0, after.ChunksDeleted);
        await f.RestoreAsync(up.Manifest.Info.Id, "back");
        Assert.Equal(f.ReadAll("s1"), f.ReadAll("back"));
    }

    [Fact]
    public async Task Upload_WhilePruneRuns_IsRefusedAsBusy_AndAStalePruneLockIsIgnored()
    {
        using var f = await RepoFixture.CreateAsync();
        f.Pool.CreateVolume("db", 2L * Mi).ThrowIfFailed();
        f.Write("db", 1, (0, 2 * Mi));
        f.Pool.CreateSnapshot("db", "s1").ThrowIfFailed();
        var clock = new FakeTimeProvider(DateTimeOffset.UtcNow);
        await RepositoryMarkers.WriteAsync(f.Store, SnapshotRepository.PruneLockKey, RepositoryMarkers.Create(RepositoryMarkers.PruneOperation, "", "test", clock), Ct);
        var busy = await Assert.ThrowsAsync<RepositoryException>(() => f.UploadAsync("s1", f.Upload() with { Time = clock }));
        Assert.Equal(RepositoryError.Busy, busy.Error);
        Assert.Contains("prune", busy.Message, StringComparison.Ordinal);
        Assert.Equal(0, f.Store.ChunkPuts);

        clock.Advance(Stale + TimeSpan.FromMinutes(1));
        var up = await f.UploadAsync("s1", f.Upload() with { Time = clock });
        Assert.Equal(2, up.ChunksPut);
    }

    [Fact]
    public async Task Verify_FindsCorruptAndMissingChunks_NamingThemAndTheirManifest()
    {
        using var f = await RepoFixture.CreateAsync();
        f.Pool.CreateVolume("db", 6L * Mi).ThrowIfFailed();
        f.Write("db", 1, (0, 6 * Mi));
        f.Pool.CreateSnapshot("db", "s1").ThrowIfFailed();
        var up = await f.UploadAsync("s1");
        var corrupt = up.Manifest.Entries[1].Chunk;
        var missing = up.Manifest.Entries[4].Chunk;
        string path = Path.Combine(f.RepoDir, corrupt.Key);
        var bytes = File.ReadAllBytes(path);
        bytes[^3] ^= 1;
        File.WriteAllBytes(path, bytes);
        File.Delete(Path.Combine(f.RepoDir, missing.Key));

        var report = await RepositoryMaintenance.VerifyAsync(f.Repository, 100, new Random(1), null, TimeProvider.System, Ct);
        Assert.Equal(2, report.Problems.Count);
        Assert.Contains(report.Problems, p => p.Key == corrupt.Key && p.Message.Contains("failed authentication", StringComparison.Ordinal));
        Assert.Contains(report.Problems, p => p.Key == missing.Key && p.Message.Contains(up.Manifest.Info.Id, StringComparison.Ordinal));

        // A sample checks about that share of the chunks, and never fewer than none.
        var sample = await RepositoryMaintenance.VerifyAsync(f.Repository, 50, new Random(3), null, TimeProvider.System, Ct);
        Assert.InRange(sample.ChunksVerified, 1, 4);
        await Assert.ThrowsAsync<RepositoryException>(() => RepositoryMaintenance.VerifyAsync(f.Repository, 0, new Random(1), null, TimeProvider.System, Ct));
    }

    [Fact]
    public async Task Prune_WithAnUnreadableManifest_DeletesNothing()
    {
        using var f = await RepoFixture.CreateAsync();
        f.Pool.CreateVolume("db", 2L * Mi).ThrowIfFailed();
        f.Write("db", 1, (0, 2 * Mi));
        f.Pool.CreateSnapshot("db", "s1").ThrowIfFailed();
        var up = await f.UploadAsync("s1");
        string manifest = Path.Combine(f.RepoDir, Manifest.KeyOf(up.Manifest.Info.Id));
        var bytes = File.ReadAllBytes(manifest);
        bytes[70] ^= 1;
        File.WriteAllBytes(manifest, bytes);
        var clock = new FakeTimeProvider(DateTimeOffset.UtcNow.AddDays(1));
        var ex = await Assert.ThrowsAsync<RepositoryException>(() => RepositoryMaintenance.PruneAsync(f.Repository, TimeSpan.Zero, Stale, clock, Ct));
        Assert.Contains(up.Manifest.Info.Id, ex.Message, StringComparison.Ordinal);
        Assert.Equal(2, Directory.EnumerateFiles(Path.Combine(f.RepoDir, "chunks"), "*", SearchOption.AllDirectories).Count());
        Assert.False(File.Exists(Path.Combine(f.RepoDir, SnapshotRepository.PruneLockKey)));
    }
}
