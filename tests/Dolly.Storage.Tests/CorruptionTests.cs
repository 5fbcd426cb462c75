using System.Buffers.Binary;

namespace Dolly.Storage.Tests;

/// <summary>
/// Bytes flipped on disk: a corrupted data sector is reported (never returned), named by volume and offset, and
/// check names it; a corrupted metadata page is refused and named.
/// </summary>
public sealed class CorruptionTests : IDisposable
{
    private const int Bs = 65536; // the default block size
    private readonly TempDir _tmp = new();
    private readonly string _dir;

    public CorruptionTests() => _dir = _tmp.Sub("pool");

    public void Dispose() => _tmp.Dispose();

    private string DataFile => Path.Combine(_dir, "data.dolly");

    private string MetaFile => Path.Combine(_dir, "meta.dolly");

    /// <summary>Volume "vol" with three blocks of distinct data and a snapshot "snap" sharing them.</summary>
    private byte[] Setup()
    {
        var data = Support.Pattern(3 * Bs, 42);
        using var pool = Pool.Create(_dir).Value;
        Assert.Equal(Bs, pool.BlockSize);
        pool.CreateVolume("vol", 16L * Bs).ThrowIfFailed();
        pool.OpenDevice("vol").Value.Write(0, data).ThrowIfFailed();
        pool.CreateSnapshot("vol", "snap").ThrowIfFailed();
        return data;
    }

    /// <summary>The byte offset in data.dolly where <paramref name="needle"/> is stored.</summary>
    private long FindInDataFile(ReadOnlySpan<byte> needle)
    {
        var file = File.ReadAllBytes(DataFile);
        int at = file.AsSpan().IndexOf(needle);
        Assert.True(at >= 0, "written pattern not found in the data file");
        return at;
    }

    private static void FlipByte(string path, long offset)
    {
        using var f = new FileStream(path, FileMode.Open, FileAccess.ReadWrite);
        f.Position = offset;
        int b = f.ReadByte();
        f.Position = offset;
        f.WriteByte((byte)(b ^ 0x5A));
    }

    [Fact]
    public void DataSectorFlipped_ReadsOfItFailCorruptNamingVolumeAndOffset_OthersStillWork()
    {
        var data = Setup();
        // Sector 1 of logical block 1: bytes [Bs + 4096, Bs + 8192).
        long sectorStart = Bs + 4096;
        long physical = FindInDataFile(data.AsSpan((int)sectorStart, 64));
        FlipByte(DataFile, physical + 1000);
        var corrupted = data.AsSpan((int)sectorStart, 4096).ToArray();
        corrupted[1000] ^= 0x5A;

        using var pool = Pool.Open(_dir).Value; // data corruption does not stop the pool from opening
        foreach (var name in new[] { "vol", "snap" })
        {
            var dev = pool.OpenDevice(name).Value;
            var whole = new byte[3 * Bs];
            Array.Fill(whole, (byte)0xEE);
            var r = dev.Read(0, whole);
            Support.AssertError(r.Error, StorageErrorCode.Corrupt, $"'{name}'", sectorStart.ToString(System.Globalization.CultureInfo.InvariantCulture));
            Assert.True(whole.AsSpan().IndexOf(corrupted.AsSpan(900, 200)) < 0, "the corrupted bytes were returned in the buffer");

            // Just the bad sector, a piece of it, and a read that spans into it.
            Assert.Equal(StorageErrorCode.Corrupt, dev.Read(sectorStart, new byte[4096]).Error?.Code);
            Assert.Equal(StorageErrorCode.Corrupt, dev.Read(sectorStart + 999, new byte[3]).Error?.Code);
            Assert.Equal(StorageErrorCode.Corrupt, dev.Read(Bs - 100, new byte[8000]).Error?.Code);

            // Everything else reads back, including the other sectors of the same block.
            var buf = new byte[Bs];
            dev.Read(0, buf).ThrowIfFailed();
            Assert.Equal(data[..Bs], buf);
            dev.Read(2L * Bs, buf).ThrowIfFailed();
            Assert.Equal(data[(2 * Bs)..], buf);
            var sector0 = new byte[4096];
            dev.Read(Bs, sector0).ThrowIfFailed();
            Assert.Equal(data[Bs..(Bs + 4096)], sector0);
            var rest = new byte[Bs - 8192];
            dev.Read(Bs + 8192, rest).ThrowIfFailed();
            Assert.Equal(data[(Bs + 8192)..(2 * Bs)], rest);
        }

        var report = pool.Check();
        Assert.False(report.IsClean);
        Assert.Contains(report.Problems, p => p.ToString().Contains("block 1", StringComparison.Ordinal) && p.ToString().Contains("sector 1", StringComparison.Ordinal));
    }

    [Fact]
    public void DataSectorFlipped_CheckDirectoryNamesBlock()
    {
        var data = Setup();
        long physical = FindInDataFile(data.AsSpan((2 * Bs) + 8192, 64));
        FlipByte(DataFile, physical + 17);
        var report = Pool.CheckDirectory(_dir);
        Assert.False(report.IsClean);
        var problem = Assert.Single(report.Problems);
        var text = problem.ToString();
        Assert.Contains("block 2", text, StringComparison.Ordinal);
        Assert.Contains("sector 2", text, StringComparison.Ordinal);
        Assert.Contains(((2L * Bs) + 8192).ToString(System.Globalization.CultureInfo.InvariantCulture), text, StringComparison.Ordinal);
        Assert.True(text.Contains("'vol'", StringComparison.Ordinal) || text.Contains("'snap'", StringComparison.Ordinal), text);
    }

    [Fact]
    public void DataSectorFlipped_PartialOverwriteRefused_FullSectorOverwriteRepairs()
    {
        var data = Setup();
        long sectorStart = Bs + 4096;
        long physical = FindInDataFile(data.AsSpan((int)sectorStart, 64));
        FlipByte(DataFile, physical + 1000);

        using var pool = Pool.Open(_dir).Value;
        pool.Delete("snap").ThrowIfFailed();
        var dev = pool.OpenDevice("vol").Value;

        // A write that would merge new bytes with the corrupted sector must not seal the damage under a new checksum.
        Support.AssertError(dev.Write(sectorStart + 10, new byte[100]).Error, StorageErrorCode.Corrupt, "'vol'");
        Support.AssertError(dev.Write(sectorStart - 10, new byte[100]).Error, StorageErrorCode.Corrupt, "'vol'");
        Assert.Equal(StorageErrorCode.Corrupt, dev.Read(sectorStart, new byte[4096]).Error?.Code);
        pool.Flush().ThrowIfFailed();
        Assert.Equal(StorageErrorCode.Corrupt, dev.Read(sectorStart, new byte[4096]).Error?.Code);

        // Overwriting the whole sector replaces the bad data; the rest of the block is intact.
        var fresh = Support.Pattern(4096, 7);
        dev.Write(sectorStart, fresh).ThrowIfFailed();
        var block = new byte[Bs];
        dev.Read(Bs, block).ThrowIfFailed();
        var expected = data[Bs..(2 * Bs)];
        fresh.CopyTo(expected, 4096);
        Assert.Equal(expected, block);
        pool.Flush().ThrowIfFailed();
        Support.AssertClean(pool.Check());
    }

    [Fact]
    public void MapPageFlipped_OpenRefusedAndCheckNamesPage()
    {
        // Small blocks so the map has leaves: find the leaf holding vol's entries by its magic.
        using (var pool = Pool.Create(_dir, new PoolCreateOptions { BlockSize = 4096 }).Value)
        {
            pool.CreateVolume("vol", 8L << 20).ThrowIfFailed();
            pool.CreateVolume("bystander", 1 << 20).ThrowIfFailed();
            pool.OpenDevice("vol").Value.Write(0, Support.Pattern(1 << 20, 1)).ThrowIfFailed();
        }

        var meta = File.ReadAllBytes(MetaFile);
        int leafPage = -1;
        for (int p = 2; p < meta.Length / 4096; p++)
        {
            var page = meta.AsSpan(p * 4096, 4096);
            if (BinaryPrimitives.ReadUInt32LittleEndian(page[4..]) == 0x4C4D4C44 && BinaryPrimitives.ReadUInt32LittleEndian(page[8..]) == p)
            {
                leafPage = p; // the first map leaf: vol's first blocks
                break;
            }
        }

        Assert.True(leafPage >= 2, "no map leaf page found");
        FlipByte(MetaFile, (leafPage * 4096L) + 100);

        var opened = Pool.Open(_dir);
        Support.AssertError(opened.Error, StorageErrorCode.Corrupt, _dir, $"page {leafPage}");
        var report = Pool.CheckDirectory(_dir);
        Assert.Contains(report.Problems, p => p.ToString().Contains($"page {leafPage}", StringComparison.Ordinal) && p.ToString().Contains("'vol'", StringComparison.Ordinal));
    }

    [Fact]
    public void NewestSuperblockFlipped_OpensPreviousCommit()
    {
        string dir = _dir;
        using (var pool = Pool.Create(dir, new PoolCreateOptions { BlockSize = 4096 }).Value)
        {
            pool.CreateVolume("vol", 1 << 20).ThrowIfFailed();
            pool.OpenDevice("vol").Value.Write(0, Support.Pattern(10_000, 1), fua: true).ThrowIfFailed();
        }

        ulong Generation(int slot) => BinaryPrimitives.ReadUInt64LittleEndian(File.ReadAllBytes(MetaFile).AsSpan((slot * 4096) + 40));
        int newest = Generation(0) > Generation(1) ? 0 : 1;
        FlipByte(MetaFile, (newest * 4096L) + 48);
        using (var pool = Pool.Open(dir).Value)
        {
            Support.AssertClean(pool.Check());
            Assert.Contains(pool.ListDevices(), d => d.Name == "vol");
        }

        // Both superblocks gone: refused, naming the pool.
        FlipByte(MetaFile, ((1 - newest) * 4096L) + 48);
        FlipByte(MetaFile, (newest * 4096L) + 60);
        var opened = Pool.Open(dir);
        Assert.True(opened.Error?.Code is StorageErrorCode.Corrupt or StorageErrorCode.NotAPool, opened.Error?.Message);
        Assert.Contains(dir, opened.Error!.Message, StringComparison.Ordinal);
        Assert.False(Pool.CheckDirectory(dir).IsClean);
    }
}
