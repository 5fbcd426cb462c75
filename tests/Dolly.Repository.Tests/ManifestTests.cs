using CsCheck;
using Dolly.Repository.Format;

namespace Dolly.Repository.Tests;

public sealed class ManifestTests
{
    private static readonly Guid RepoId = Guid.NewGuid();

    private static ManifestInfo Info(long size, int chunkSize) =>
        new(Manifest.NewId(), RepoId, "db", "db-1", Guid.NewGuid(), 7, size, chunkSize, null, DateTimeOffset.UnixEpoch, DateTimeOffset.UnixEpoch.AddHours(1));

    [Fact]
    public void EncodeDecode_RandomManifests_RoundTripAndFindMatchesModel()
    {
        var gen = Gen.Select(Gen.Int[1, 300], Gen.Int[0, 2], Gen.Int[1, 4096], Gen.ULong.Array[4].Array[0, 300]);
        gen.Sample((chunks, sizeShift, tail, ids) =>
        {
            int chunkSize = (1 << 20) << sizeShift;
            long size = ((long)(chunks - 1) * chunkSize) + (tail * 512L);
            var model = new SortedDictionary<uint, ChunkId>();
            var rng = new Random(chunks ^ ids.Length);
            foreach (var w in ids)
            {
                model[(uint)rng.Next(chunks)] = new ChunkId(w[0], w[1], w[2], w[3]);
            }

            var m = new Manifest(Info(size, chunkSize), model.Select(kv => new ManifestEntry(kv.Key, kv.Value)).ToList());
            var back = Manifest.Decode(m.Encode(), m.Info.Id, RepoId, "test");
            Assert.Equal(m.Info, back.Info);
            Assert.Equal(m.Entries, back.Entries);
            for (int probe = 0; probe < 50; probe++)
            {
                long offset = (long)(rng.NextDouble() * size);
                var found = back.Find(offset);
                uint index = (uint)(offset / chunkSize);
                Assert.Equal(model.TryGetValue(index, out var id) ? new ManifestEntry(index, id) : null, found);
            }
        }, iter: 200);
    }

    [Fact]
    public void Decode_RefusesAnotherRepositoryOrIdOrTruncation()
    {
        var m = new Manifest(Info(10L << 20, 1 << 20), [new ManifestEntry(3, new ChunkId(1, 2, 3, 4))]);
        var bytes = m.Encode();
        Assert.Equal(RepositoryError.Corrupt, Assert.Throws<RepositoryException>(() => Manifest.Decode(bytes, m.Info.Id, Guid.NewGuid(), "k")).Error);
        Assert.Equal(RepositoryError.Corrupt, Assert.Throws<RepositoryException>(() => Manifest.Decode(bytes, Manifest.NewId(), RepoId, "k")).Error);
        var cut = Assert.Throws<RepositoryException>(() => Manifest.Decode(bytes.AsSpan(0, bytes.Length - 1), m.Info.Id, RepoId, "manifests/x"));
        Assert.Contains("manifests/x", cut.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Constructor_RefusesEntriesOutOfOrderOrBeyondTheSize()
    {
        var info = Info(4L << 20, 1 << 20);
        Assert.Throws<ArgumentException>(() => new Manifest(info, [new ManifestEntry(2, default), new ManifestEntry(1, default)]));
        Assert.Throws<ArgumentException>(() => new Manifest(info, [new ManifestEntry(1, default), new ManifestEntry(1, default)]));
        Assert.Throws<ArgumentException>(() => new Manifest(info, [new ManifestEntry(4, default)]));
        Assert.Throws<ArgumentException>(() => new Manifest(info with { Id = "../../etc" }, []));
    }

    [Theory]
    [InlineData("0123456789abcdef0123456789abcdef", true)]
    [InlineData("0123456789ABCDEF0123456789ABCDEF", false)]
    [InlineData("../0123456789abcdef0123456789abc", false)]
    [InlineData("0123456789abcdef", false)]
    public void ValidateId_AcceptsOnly32LowercaseHexDigits(string id, bool valid) => Assert.Equal(valid, Manifest.ValidateId(id) is null);

    [Fact]
    public void ChunkKey_FansOutByFirstByte_AndParsesBack()
    {
        var id = new ChunkId(0xab00000000000001, 2, 3, 4);
        Assert.StartsWith("chunks/ab/ab00000000000001", id.Key, StringComparison.Ordinal);
        Assert.True(ChunkId.TryParseKey(id.Key, out var back));
        Assert.Equal(id, back);
        Assert.False(ChunkId.TryParseKey("chunks/cd/" + id.Hex, out _));
    }
}
