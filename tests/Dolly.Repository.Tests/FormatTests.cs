using System.Text;
using System.Text.Json.Nodes;
using Dolly.Repository.Format;
using Dolly.Repository.Storage;

namespace Dolly.Repository.Tests;

public sealed class FormatTests
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    private static readonly RepositoryInitOptions Fast = new() { KdfIterations = 1000, ChunkSize = 1 << 20 };

    [Fact]
    public async Task Chunk_SealAndRead_RoundTrips_CompressingOnlyWhenItPays()
    {
        using var tmp = new TempDir();
        var store = DirectoryObjectStore.Create(tmp.Path);
        var repo = await SnapshotRepository.InitAsync(store, RepoFixture.Key, Fast, TimeProvider.System, Ct);
        var random = new byte[1 << 20];
        new Random(1).NextBytes(random);
        var text = Encoding.ASCII.GetBytes(string.Concat(Enumerable.Repeat("the quick brown fox jumps over the lazy dog ", 24000)))[..(1 << 20)];
        foreach (var plain in new[] { random, text })
        {
            var id = repo.ChunkIdOf(plain);
            var sealedChunk = repo.SealChunk(id, plain);
            await store.PutAsync(id.Key, sealedChunk, Ct);
            Assert.Equal(plain, await repo.ReadChunkAsync(id, Ct));
            bool compressed = sealedChunk[7] == (byte)PayloadEncoding.Zstd;
            Assert.Equal(plain == text, compressed);
            Assert.True(compressed ? sealedChunk.Length < plain.Length / 10 : sealedChunk.Length == plain.Length + ObjectEnvelope.HeaderSize + ObjectEnvelope.TagSize);
        }

        // Reopened with the key, the same data has the same name (dedup); the name is not an unkeyed hash.
        var reopened = await SnapshotRepository.OpenAsync(store, RepoFixture.Key, Ct);
        Assert.Equal(repo.ChunkIdOf(text), reopened.ChunkIdOf(text));
        var other = await SnapshotRepository.InitAsync(DirectoryObjectStore.Create(tmp.Sub("other")), RepoFixture.Key, Fast, TimeProvider.System, Ct);
        Assert.NotEqual(repo.ChunkIdOf(text), other.ChunkIdOf(text));
        Assert.NotEqual(ChunkId.Read(Blake3.Hasher.Hash(text).AsSpan()), repo.ChunkIdOf(text));
    }

    [Fact]
    public async Task Open_WithWrongKey_IsRefusedNamingTheRepository()
    {
        using var tmp = new TempDir();
        var store = DirectoryObjectStore.Create(tmp.Path);
        await SnapshotRepository.InitAsync(store, RepoFixture.Key, Fast, TimeProvider.System, Ct);
        var ex = await Assert.ThrowsAsync<RepositoryException>(() => SnapshotRepository.OpenAsync(store, "another key entirely"u8.ToArray(), Ct));
        Assert.Equal(RepositoryError.WrongKey, ex.Error);
        Assert.Contains(tmp.Path, ex.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("chunkSize", 2097152)]
    [InlineData("id", "00000000-0000-0000-0000-000000000001")]
    [InlineData("zstdLevel", 0)]
    public async Task Open_ConfigWithEditedParameters_FailsAsWrongKey(string field, object value)
    {
        using var tmp = new TempDir();
        var store = DirectoryObjectStore.Create(tmp.Path);
        await SnapshotRepository.InitAsync(store, RepoFixture.Key, Fast, TimeProvider.System, Ct);
        var json = JsonNode.Parse(await store.GetAsync(RepositoryConfig.Key, Ct))!;
        json[field] = value is int i ? JsonValue.Create(i) : JsonValue.Create((string)value);
        await store.PutAsync(RepositoryConfig.Key, Encoding.UTF8.GetBytes(json.ToJsonString()), Ct);
        Assert.Equal(RepositoryError.WrongKey, (await Assert.ThrowsAsync<RepositoryException>(() => SnapshotRepository.OpenAsync(store, RepoFixture.Key, Ct))).Error);
    }

    [Fact]
    public async Task Open_NewerFormatConfig_IsRefusedNamingTheVersion()
    {
        using var tmp = new TempDir();
        var store = DirectoryObjectStore.Create(tmp.Path);
        await store.PutAsync(RepositoryConfig.Key, """{"format": 2, "somethingNew": true}"""u8.ToArray(), Ct);
        var ex = await Assert.ThrowsAsync<RepositoryException>(() => SnapshotRepository.OpenAsync(store, RepoFixture.Key, Ct));
        Assert.Equal(RepositoryError.UnsupportedFormat, ex.Error);
        Assert.Contains("format version 2", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Open_MissingOrGarbageConfig_IsClear()
    {
        using var tmp = new TempDir();
        var store = DirectoryObjectStore.Create(tmp.Path);
        Assert.Equal(RepositoryError.NotARepository, (await Assert.ThrowsAsync<RepositoryException>(() => SnapshotRepository.OpenAsync(store, RepoFixture.Key, Ct))).Error);
        await store.PutAsync(RepositoryConfig.Key, "not json"u8.ToArray(), Ct);
        Assert.Equal(RepositoryError.Corrupt, (await Assert.ThrowsAsync<RepositoryException>(() => SnapshotRepository.OpenAsync(store, RepoFixture.Key, Ct))).Error);
    }

    [Fact]
    public async Task Init_Twice_IsRefusedAndKeepsTheFirst()
    {
        using var tmp = new TempDir();
        var store = DirectoryObjectStore.Create(tmp.Path);
        var first = await SnapshotRepository.InitAsync(store, RepoFixture.Key, Fast, TimeProvider.System, Ct);
        var ex = await Assert.ThrowsAsync<RepositoryException>(() => SnapshotRepository.InitAsync(store, "other key!"u8.ToArray(), Fast, TimeProvider.System, Ct));
        Assert.Equal(RepositoryError.AlreadyExists, ex.Error);
        Assert.Equal(first.Id, (await SnapshotRepository.OpenAsync(store, RepoFixture.Key, Ct)).Id);
    }

    [Theory]
    [InlineData(1 << 19)]
    [InlineData(3 << 20)]
    [InlineData(32 << 20)]
    public async Task Init_BadChunkSize_IsRefused(int chunkSize)
    {
        using var tmp = new TempDir();
        var store = DirectoryObjectStore.Create(tmp.Path);
        var ex = await Assert.ThrowsAsync<RepositoryException>(() => SnapshotRepository.InitAsync(store, RepoFixture.Key, Fast with { ChunkSize = chunkSize }, TimeProvider.System, Ct));
        Assert.Equal(RepositoryError.InvalidArgument, ex.Error);
        Assert.False(await store.ExistsAsync(RepositoryConfig.Key, Ct));
    }

    public static TheoryData<string, int> Damages => new()
    {
        { "flip a ciphertext byte", 100 },
        { "flip a tag byte", -1 },
        { "flip the encoding byte", 7 },
        { "flip the length", 9 },
        { "flip the nonce", 50 },
        { "truncate", -2 },
        { "newer version", 5 },
    };

    [Theory]
    [MemberData(nameof(Damages))]
    public async Task ReadChunk_DamagedObject_IsNeverReturned(string damage, int at)
    {
        using var tmp = new TempDir();
        var store = DirectoryObjectStore.Create(tmp.Path);
        var repo = await SnapshotRepository.InitAsync(store, RepoFixture.Key, Fast, TimeProvider.System, Ct);
        var plain = new byte[200_000];
        new Random(2).NextBytes(plain);
        var id = repo.ChunkIdOf(plain);
        var bytes = repo.SealChunk(id, plain);
        if (at == -2)
        {
            bytes = bytes[..^1];
        }
        else
        {
            bytes[at < 0 ? bytes.Length + at : at] ^= 0x01;
        }

        await store.PutAsync(id.Key, bytes, Ct);
        var ex = await Assert.ThrowsAsync<RepositoryException>(() => repo.ReadChunkAsync(id, Ct));
        Assert.True(ex.Error is RepositoryError.Corrupt or RepositoryError.UnsupportedFormat, $"{damage}: {ex.Error}");
        Assert.Contains(id.Key, ex.Message, StringComparison.Ordinal);
        if (damage == "newer version")
        {
            Assert.Equal(RepositoryError.UnsupportedFormat, ex.Error);
            Assert.Contains("format version 257", ex.Message, StringComparison.Ordinal);
        }
    }

    [Fact]
    public async Task ReadChunk_ValidChunkStoredUnderAnotherName_IsRefused()
    {
        using var tmp = new TempDir();
        var store = DirectoryObjectStore.Create(tmp.Path);
        var repo = await SnapshotRepository.InitAsync(store, RepoFixture.Key, Fast, TimeProvider.System, Ct);
        byte[] a = [1, 2, 3], b = [4, 5, 6];
        var idA = repo.ChunkIdOf(a);
        var idB = repo.ChunkIdOf(b);
        await store.PutAsync(idB.Key, repo.SealChunk(idA, a), Ct);
        Assert.Equal(RepositoryError.Corrupt, (await Assert.ThrowsAsync<RepositoryException>(() => repo.ReadChunkAsync(idB, Ct))).Error);
        Assert.Equal(RepositoryError.NotFound, (await Assert.ThrowsAsync<RepositoryException>(() => repo.ReadChunkAsync(idA, Ct))).Error);
    }

    [Fact]
    public async Task ChunkFromAnotherRepository_FailsAuthentication()
    {
        using var tmp = new TempDir();
        var one = await SnapshotRepository.InitAsync(DirectoryObjectStore.Create(tmp.Sub("one")), RepoFixture.Key, Fast, TimeProvider.System, Ct);
        var two = await SnapshotRepository.InitAsync(DirectoryObjectStore.Create(tmp.Sub("two")), RepoFixture.Key, Fast, TimeProvider.System, Ct);
        byte[] data = [9, 9, 9, 9];
        var id = two.ChunkIdOf(data);
        await two.Store.PutAsync(id.Key, one.SealChunk(id, data), Ct);
        var ex = await Assert.ThrowsAsync<RepositoryException>(() => two.ReadChunkAsync(id, Ct));
        Assert.Contains("failed authentication", ex.Message, StringComparison.Ordinal);
    }
}
