using Dolly.Repository.Format;
using Dolly.Repository.Transfer;
using Dolly.Storage;

namespace Dolly.Repository.Tests;

public sealed class UploadRestoreTests
{
    private const int Mi = 1 << 20;

    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    [Fact]
    public async Task FullUpload_ThenRestore_IsByteEqual_SparseChunksOmitted()
    {
        using var f = await RepoFixture.CreateAsync();
        f.Pool.CreateVolume("db", (16L * Mi) + (3 * 4096)).ThrowIfFailed();
        f.Write("db", 1, (0, 4096), (Mi + 100 * 4096, 3 * 4096), (5L * Mi, 2 * Mi), (16L * Mi, 3 * 4096));
        f.Pool.CreateSnapshot("db", "db-1").ThrowIfFailed();
        var up = await f.UploadAsync("db-1");
        // Chunks 0, 1, 5, 6 and the short tail chunk 16 hold data; the other 12 are never stored.
        Assert.Equal([0u, 1u, 5u, 6u, 16u], up.Manifest.Entries.Select(e => e.Index));
        Assert.Equal(5, up.ChunksPut);
        Assert.Null(up.Manifest.Info.Parent);
        Assert.Equal("db", up.Manifest.Info.Volume);
        var restored = await f.RestoreAsync(up.Manifest.Info.Id, "copy");
        Assert.Equal(f.ReadAll("db-1"), f.ReadAll("copy"));
        Assert.Equal(f.Pool.GetSpace("db-1").Value.Allocated, f.Pool.GetSpace("copy").Value.Allocated);
        Assert.Equal(restored.BytesWritten, f.Pool.GetSpace("copy").Value.Allocated);
    }

    [Fact]
    public async Task IncrementalUpload_ReadsAndSendsOnlyChangedChunks()
    {
        using var f = await RepoFixture.CreateAsync();
        f.Pool.CreateVolume("db", 32L * Mi).ThrowIfFailed();
        f.Write("db", 1, (0, 32 * Mi));
        f.Pool.CreateSnapshot("db", "s1").ThrowIfFailed();
        var first = await f.UploadAsync("s1");
        Assert.Equal(32, first.ChunksPut);

        // Three chunks change (one twice), one chunk is zeroed: only those are read, three are sent.
        f.Write("db", 2, (3L * Mi + 5, 10), (3L * Mi + 9000, 10), (17L * Mi, 4096), (31L * Mi + Mi - 4096, 4096));
        f.Pool.OpenDevice("db").Value.Trim(20L * Mi, Mi).ThrowIfFailed();
        f.Pool.CreateSnapshot("db", "s2").ThrowIfFailed();
        f.Store.ResetCounts();
        var second = await f.UploadAsync("s2");
        Assert.Equal(first.Manifest.Info.Id, second.Manifest.Info.Parent);
        Assert.Equal(3, second.ChunksPut);
        Assert.Equal(3, second.ChunksRead); // the trimmed chunk holds no block any more: left out unread
        Assert.Equal(28, second.ChunksFromParent);
        Assert.Equal(31, second.Manifest.Entries.Count);
        Assert.Equal(3, f.Store.PutKeys.Count(k => k.StartsWith(ChunkId.KeyPrefix, StringComparison.Ordinal)));

        // Nothing changed: nothing read, nothing sent, a manifest all the same.
        f.Pool.CreateSnapshot("db", "s3").ThrowIfFailed();
        f.Store.ResetCounts();
        var third = await f.UploadAsync("s3");
        Assert.Equal((0L, 0L), (third.ChunksRead, third.ChunksPut));
        Assert.Equal(second.Manifest.Entries, third.Manifest.Entries);

        foreach (var (m, snap) in new[] { (first, "s1"), (second, "s2"), (third, "s3") })
        {
            await f.RestoreAsync(m.Manifest.Info.Id, "r-" + snap);
            Assert.Equal(f.ReadAll(snap), f.ReadAll("r-" + snap));
        }
    }

    [Fact]
    public async Task Incremental_AfterParentSnapshotDeleted_FallsBackToFull_ButDedupSendsNothing()
    {
        using var f = await RepoFixture.CreateAsync();
        f.Pool.CreateVolume("db", 8L * Mi).ThrowIfFailed();
        f.Write("db", 1, (0, 8 * Mi));
        f.Pool.CreateSnapshot("db", "s1").ThrowIfFailed();
        await f.UploadAsync("s1");
        f.Pool.CreateSnapshot("db", "s2").ThrowIfFailed();
        f.Pool.Delete("s1").ThrowIfFailed();
        f.Store.ResetCounts();
        var second = await f.UploadAsync("s2");
        Assert.Null(second.Manifest.Info.Parent);
        Assert.Equal((8L, 0L, 8L), (second.ChunksRead, second.ChunksPut, second.ChunksDeduplicated));
    }

    [Fact]
    public async Task Clones_OfOneGoldenVolume_UploadOnlyTheirChanges()
    {
        using var f = await RepoFixture.CreateAsync();
        f.Pool.CreateVolume("golden", 16L * Mi).ThrowIfFailed();
        f.Write("golden", 1, (0, 16 * Mi));
        f.Pool.CreateSnapshot("golden", "golden-snap").ThrowIfFailed();
        var golden = await f.UploadAsync("golden-snap");
        long stored = golden.BytesPut;
        for (int i = 0; i < 4; i++)
        {
            // A clone keeps its source's lineage, so its snapshot is incremental against the lineage's last upload;
            // chunks that differ from that parent but not from the golden image are found by name (HEAD).
            f.Pool.Clone("golden-snap", $"vm{i}").ThrowIfFailed();
            f.Write($"vm{i}", 100 + i, ((long)i * Mi, 4096));
            f.Pool.CreateSnapshot($"vm{i}", $"vm{i}-snap").ThrowIfFailed();
            var up = await f.UploadAsync($"vm{i}-snap");
            Assert.NotNull(up.Manifest.Info.Parent);
            Assert.Equal(1, up.ChunksPut);
            Assert.True(up.ChunksRead <= 2, $"vm{i} read {up.ChunksRead} chunks");
            stored += up.BytesPut;
            await f.RestoreAsync(up.Manifest.Info.Id, $"vm{i}-back");
            Assert.Equal(f.ReadAll($"vm{i}-snap"), f.ReadAll($"vm{i}-back"));
        }

        Assert.True(stored <= golden.BytesPut * 1.3, $"stored {stored} for 5 volumes of {golden.BytesPut}");
    }

    [Fact]
    public async Task IndependentVolumes_WithEqualData_AreDeduplicatedByName()
    {
        using var f = await RepoFixture.CreateAsync();
        f.Pool.CreateVolume("a", 8L * Mi).ThrowIfFailed();
        f.Pool.CreateVolume("b", 8L * Mi).ThrowIfFailed();
        f.Write("a", 7, (0, 8 * Mi));
        f.Write("b", 7, (0, 8 * Mi));
        f.Write("b", 8, (3L * Mi, 512));
        f.Pool.CreateSnapshot("a", "a1").ThrowIfFailed();
        f.Pool.CreateSnapshot("b", "b1").ThrowIfFailed();
        await f.UploadAsync("a1");
        f.Store.ResetCounts();
        var b = await f.UploadAsync("b1");
        Assert.Null(b.Manifest.Info.Parent);
        Assert.Equal((8L, 1L, 7L), (b.ChunksRead, b.ChunksPut, b.ChunksDeduplicated));
        Assert.Equal(8, f.Store.Heads);
    }

    [Fact]
    public async Task Upload_OfAVolumeOrMissingSnapshot_IsRefused()
    {
        using var f = await RepoFixture.CreateAsync();
        f.Pool.CreateVolume("db", 4L * Mi).ThrowIfFailed();
        var volume = await Assert.ThrowsAsync<RepositoryException>(() => f.UploadAsync("db"));
        Assert.Equal(RepositoryError.InvalidArgument, volume.Error);
        var missing = await Assert.ThrowsAsync<StorageException>(() => f.UploadAsync("nope"));
        Assert.Equal(StorageErrorCode.NotFound, missing.Error.Code);
        Assert.DoesNotContain(Directory.GetFileSystemEntries(f.RepoDir, "*", SearchOption.AllDirectories), p => p.Contains("/manifests/", StringComparison.Ordinal));
    }

    [Fact]
    public async Task Restore_CorruptedChunk_FailsNamingIt_AndLeavesNoVolume()
    {
        using var f = await RepoFixture.CreateAsync();
        f.Pool.CreateVolume("db", 8L * Mi).ThrowIfFailed();
        f.Write("db", 1, (0, 8 * Mi));
        f.Pool.CreateSnapshot("db", "s1").ThrowIfFailed();
        var up = await f.UploadAsync("s1");
        var victim = up.Manifest.Entries[5].Chunk;
        string path = Path.Combine(f.RepoDir, victim.Key);
        var bytes = File.ReadAllBytes(path);
        bytes[bytes.Length / 2] ^= 0x40;
        File.WriteAllBytes(path, bytes);
        var ex = await Assert.ThrowsAsync<RepositoryException>(() => f.RestoreAsync(up.Manifest.Info.Id, "copy"));
        Assert.Equal(RepositoryError.Corrupt, ex.Error);
        Assert.Contains(victim.Key, ex.Message, StringComparison.Ordinal);
        Assert.Equal(StorageErrorCode.NotFound, f.Pool.GetDevice("copy").Error?.Code);

        File.Delete(path);
        var gone = await Assert.ThrowsAsync<RepositoryException>(() => f.RestoreAsync(up.Manifest.Info.Id, "copy"));
        Assert.Equal(RepositoryError.NotFound, gone.Error);
        Assert.Contains(victim.Key, gone.Message, StringComparison.Ordinal);
        Assert.False(f.Pool.GetDevice("copy").IsOk);
    }

    [Fact]
    public async Task Restore_UnknownManifestOrExistingVolume_IsRefused()
    {
        using var f = await RepoFixture.CreateAsync();
        f.Pool.CreateVolume("db", 4L * Mi).ThrowIfFailed();
        f.Write("db", 1, (0, 4096));
        f.Pool.CreateSnapshot("db", "s1").ThrowIfFailed();
        var up = await f.UploadAsync("s1");
        Assert.Equal(RepositoryError.NotFound, (await Assert.ThrowsAsync<RepositoryException>(() => f.RestoreAsync(Manifest.NewId(), "x"))).Error);
        Assert.Equal(RepositoryError.InvalidArgument, (await Assert.ThrowsAsync<RepositoryException>(() => f.RestoreAsync("../config", "x"))).Error);
        var exists = await Assert.ThrowsAsync<StorageException>(() => f.RestoreAsync(up.Manifest.Info.Id, "db"));
        Assert.Equal(StorageErrorCode.AlreadyExists, exists.Error.Code);
        Assert.Equal(f.ReadAll("s1"), f.ReadAll("db"));
    }

    [Fact]
    public async Task Restore_WithWrongKey_NeverStarts()
    {
        using var f = await RepoFixture.CreateAsync();
        var ex = await Assert.ThrowsAsync<RepositoryException>(() => SnapshotRepository.OpenAsync(f.Store, "a wrong key, long enough"u8.ToArray(), Ct));
        Assert.Equal(RepositoryError.WrongKey, ex.Error);
    }

    [Fact]
    public async Task Progress_ReportsBytesUpToTheTotal()
    {
        using var f = await RepoFixture.CreateAsync();
        f.Pool.CreateVolume("db", 6L * Mi).ThrowIfFailed();
        f.Write("db", 1, (0, 6 * Mi));
        f.Pool.CreateSnapshot("db", "s1").ThrowIfFailed();
        var seen = new List<TransferStatus>();
        var progress = new SyncProgress(s =>
        {
            lock (seen)
            {
                seen.Add(s);
            }
        });
        await f.UploadAsync("s1", f.Upload() with { Progress = progress });
        Assert.All(seen, s => Assert.Equal(6L * Mi, s.BytesTotal));
        Assert.Equal(6L * Mi, seen.Max(s => s.BytesDone));
        Assert.Equal(7, seen.Count);
    }

    private sealed class SyncProgress(Action<TransferStatus> report) : IProgress<TransferStatus>
    {
        public void Report(TransferStatus value) => report(value);
    }
}

internal static class ResultAssertions
{
    public static void ThrowIfFailed<T>(this Result<T> result) => _ = result.Value;

    public static void ThrowIfFailed(this Result result) => result.ThrowIfFailed();
}
