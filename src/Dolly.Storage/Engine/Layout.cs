using System.Buffers.Binary;
using System.IO.Hashing;

namespace Dolly.Storage.Engine;

/// <summary>
/// On-disk layout of a pool directory.
/// <code>
/// meta.dolly   4 KiB pages. Pages 0 and 1 are superblocks, written alternately (the valid one with the higher
///              generation wins, as in LMDB). Every other page is a node of a copy-on-write radix tree:
///              a block map (one per volume or snapshot, shared between them) or the device table.
///              Committed pages are never overwritten while the newest committed superblock reaches them.
/// data.dolly   data blocks (64 KiB by default), block p at byte p * blockSize; freed blocks are hole-punched.
/// journal.dolly  a ring of records holding in-place overwrites of committed blocks until a commit seals them
///              (see <see cref="Journal"/>).
/// pool.lock    flock'ed by the process that has the pool open.
///
/// Tree page (4096 bytes), little-endian:
///   0  u32 checksum   XxHash3 (low 32 bits) of bytes 4..4095
///   4  u32 magic      MapInterior | MapLeaf | DeviceInterior | DeviceLeaf
///   8  u32 page id    the page's own number (catches misdirected writes)
///  12  u32 level      0 for leaves
///  16  entries        interior: u32 child page ids (0 = empty subtree), 1020 of them
///                     map leaf: entries of { u32 physical block + 1 (0 = unmapped), u32 checksum per 4 KiB sector }
///                     device leaf: 512-byte device records (see DeviceRecord)
///
/// Superblock (page 0 or 1):
///   0  u32 checksum   4 u64 "DOLLYSB1"   12 u32 format version   16 u32 block size   20 u32 reserved
///  24  16 bytes pool id   40 u64 generation   48 u32 device table root   52 u32 device table depth
///  56  u64 next device id   64 u32 metadata page high water   68 u32 data block high water
///  72  u64 journal start     the ring position (a byte count that only grows; the file offset is it modulo the
///                            ring size) of the first record this state replays at open
///  80  u64 journal start seq the sequence number that record must carry
///  88  u32 journal pages     the ring's size in 4 KiB pages
///  Version 1 (no journal, bytes 72..91 zero) is migrated at the first open: a journal is created and the next
///  superblock is version 2. A version this build does not know is refused with its number.
/// </code>
/// </summary>
internal static class Layout
{
    public const int PageSize = 4096;
    public const int HeaderSize = 16;
    public const int InteriorFanout = (PageSize - HeaderSize) / 4;
    public const int SectorSize = 4096;
    public const int DeviceRecordSize = 512;
    public const int DevicesPerLeaf = (PageSize - HeaderSize) / DeviceRecordSize;
    public const int FormatVersion = 2;

    /// <summary>The oldest format this build opens (and migrates).</summary>
    public const int OldestFormatVersion = 1;
    public const int DefaultBlockSize = 64 * 1024;
    public const int MaxDepth = 6;

    public const uint MagicMapInterior = 0x494D4C44; // "DLMI"
    public const uint MagicMapLeaf = 0x4C4D4C44;     // "DLML"
    public const uint MagicDevInterior = 0x49444C44; // "DLDI"
    public const uint MagicDevLeaf = 0x4C444C44;     // "DLDL"
    public const ulong SuperMagic = 0x314253594C4C4F44; // "DOLLYSB1" little-endian

    public const string MetaFile = "meta.dolly";
    public const string DataFile = "data.dolly";
    public const string LockFile = "pool.lock";
    public const string JournalFile = "journal.dolly";

    /// <summary>The journal ring's size unless the pool was created with another.</summary>
    public const long DefaultJournalBytes = 64L << 20;

    public const long MinJournalBytes = 128L << 10;
    public const long MaxJournalBytes = 1L << 30;

    public static uint Checksum(ReadOnlySpan<byte> data) => (uint)XxHash3.HashToUInt64(data);

    public static uint PageChecksum(ReadOnlySpan<byte> page) => Checksum(page[4..]);

    public static void SealPage(Span<byte> page) => BinaryPrimitives.WriteUInt32LittleEndian(page, PageChecksum(page));

    public static bool PageChecksumOk(ReadOnlySpan<byte> page) =>
        BinaryPrimitives.ReadUInt32LittleEndian(page) == PageChecksum(page);

    public static uint Magic(ReadOnlySpan<byte> page) => BinaryPrimitives.ReadUInt32LittleEndian(page[4..]);

    public static uint PageId(ReadOnlySpan<byte> page) => BinaryPrimitives.ReadUInt32LittleEndian(page[8..]);

    public static int Level(ReadOnlySpan<byte> page) => (int)BinaryPrimitives.ReadUInt32LittleEndian(page[12..]);

    public static void WriteHeader(Span<byte> page, uint magic, uint id, int level)
    {
        BinaryPrimitives.WriteUInt32LittleEndian(page[4..], magic);
        BinaryPrimitives.WriteUInt32LittleEndian(page[8..], id);
        BinaryPrimitives.WriteUInt32LittleEndian(page[12..], (uint)level);
    }

    public static bool IsInterior(uint magic) => magic is MagicMapInterior or MagicDevInterior;
}

/// <summary>Fan-out arithmetic of a radix tree whose leaves hold <see cref="LeafFanout"/> entries.</summary>
internal readonly struct TreeGeometry
{
    private readonly long[] _covered;

    public TreeGeometry(int leafFanout)
    {
        LeafFanout = leafFanout;
        _covered = new long[Layout.MaxDepth];
        long c = leafFanout;
        for (int i = 0; i < _covered.Length; i++)
        {
            _covered[i] = c;
            c = c > long.MaxValue / Layout.InteriorFanout ? long.MaxValue : c * Layout.InteriorFanout;
        }
    }

    public int LeafFanout { get; }

    /// <summary>Entries (blocks or records) covered by a node at <paramref name="level"/>.</summary>
    public long Covered(int level) => _covered[level];

    /// <summary>The smallest depth whose tree covers <paramref name="entries"/> entries.</summary>
    public int DepthFor(long entries)
    {
        int depth = 1;
        while (depth < Layout.MaxDepth && Covered(depth - 1) < entries)
        {
            depth++;
        }

        return depth;
    }
}

/// <summary>The superblock, the root of a committed state.</summary>
internal sealed record Superblock(
    int BlockSize,
    Guid PoolId,
    ulong Generation,
    uint DeviceRoot,
    int DeviceDepth,
    ulong NextDeviceId,
    uint MetaHighWater,
    uint DataHighWater,
    ulong JournalStart = 0,
    ulong JournalStartSeq = 0,
    uint JournalPages = 0,
    int Version = Layout.FormatVersion)
{
    public void WriteTo(Span<byte> page)
    {
        page.Clear();
        BinaryPrimitives.WriteUInt64LittleEndian(page[4..], Layout.SuperMagic);
        BinaryPrimitives.WriteUInt32LittleEndian(page[12..], (uint)Version);
        BinaryPrimitives.WriteUInt32LittleEndian(page[16..], (uint)BlockSize);
        PoolId.TryWriteBytes(page[24..40]);
        BinaryPrimitives.WriteUInt64LittleEndian(page[40..], Generation);
        BinaryPrimitives.WriteUInt32LittleEndian(page[48..], DeviceRoot);
        BinaryPrimitives.WriteUInt32LittleEndian(page[52..], (uint)DeviceDepth);
        BinaryPrimitives.WriteUInt64LittleEndian(page[56..], NextDeviceId);
        BinaryPrimitives.WriteUInt32LittleEndian(page[64..], MetaHighWater);
        BinaryPrimitives.WriteUInt32LittleEndian(page[68..], DataHighWater);
        BinaryPrimitives.WriteUInt64LittleEndian(page[72..], JournalStart);
        BinaryPrimitives.WriteUInt64LittleEndian(page[80..], JournalStartSeq);
        BinaryPrimitives.WriteUInt32LittleEndian(page[88..], JournalPages);
        Layout.SealPage(page);
    }

    /// <summary>Parses a superblock; null with a reason when the page is not a valid one.</summary>
    public static Superblock? Parse(ReadOnlySpan<byte> page, out string? problem, out bool hasMagic)
    {
        hasMagic = BinaryPrimitives.ReadUInt64LittleEndian(page[4..]) == Layout.SuperMagic;
        if (!hasMagic)
        {
            problem = "no Dolly superblock magic";
            return null;
        }

        if (!Layout.PageChecksumOk(page))
        {
            problem = "superblock checksum mismatch";
            return null;
        }

        uint version = BinaryPrimitives.ReadUInt32LittleEndian(page[12..]);
        if (version is < Layout.OldestFormatVersion or > Layout.FormatVersion)
        {
            problem = $"unsupported pool format version {version} (this dolly reads versions {Layout.OldestFormatVersion} to {Layout.FormatVersion}; a newer pool needs a newer dolly)";
            return null;
        }

        uint journalPages = version >= 2 ? BinaryPrimitives.ReadUInt32LittleEndian(page[88..]) : 0;
        if (version >= 2 && ((long)journalPages * Layout.PageSize < Layout.MinJournalBytes || (long)journalPages * Layout.PageSize > Layout.MaxJournalBytes))
        {
            problem = $"invalid journal size of {journalPages} pages";
            return null;
        }

        int blockSize = (int)BinaryPrimitives.ReadUInt32LittleEndian(page[16..]);
        if (blockSize < Layout.SectorSize || blockSize > 1 << 20 || (blockSize & (blockSize - 1)) != 0)
        {
            problem = $"invalid block size {blockSize}";
            return null;
        }

        problem = null;
        return new Superblock(
            blockSize,
            new Guid(page[24..40]),
            BinaryPrimitives.ReadUInt64LittleEndian(page[40..]),
            BinaryPrimitives.ReadUInt32LittleEndian(page[48..]),
            (int)BinaryPrimitives.ReadUInt32LittleEndian(page[52..]),
            BinaryPrimitives.ReadUInt64LittleEndian(page[56..]),
            BinaryPrimitives.ReadUInt32LittleEndian(page[64..]),
            BinaryPrimitives.ReadUInt32LittleEndian(page[68..]),
            version >= 2 ? BinaryPrimitives.ReadUInt64LittleEndian(page[72..]) : 0,
            version >= 2 ? BinaryPrimitives.ReadUInt64LittleEndian(page[80..]) : 0,
            journalPages,
            (int)version);
    }
}
