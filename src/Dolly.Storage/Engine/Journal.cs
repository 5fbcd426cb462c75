using System.Buffers.Binary;
using Dolly.Storage.IO;

namespace Dolly.Storage.Engine;

/// <summary>One sector of an in-place overwrite: where it goes and the checksum its bytes must have.</summary>
internal readonly record struct JournalEntry(ulong Device, long LogicalBlock, uint Block, int Sector, uint Checksum);

/// <summary>A complete batch read back from the journal: its entries and each entry's sector bytes.</summary>
internal sealed record JournalBatchRead(List<JournalEntry> Entries, List<byte[]> Sectors);

/// <summary>What replaying the journal found: the complete batches, in order, and where the next record would go.</summary>
internal sealed record JournalReplay(List<JournalBatchRead> Batches, ulong End, ulong EndSeq);

/// <summary>
/// The bytes of one batch, laid out from a ring position: at most two pieces, as a wrap splits it.
/// <see cref="Start"/> and <see cref="StartSeq"/> are where its first record sits.
/// </summary>
internal sealed record JournalBatch(ulong Start, ulong StartSeq, ulong End, IReadOnlyList<(long FileOffset, byte[] Bytes)> Pieces, int Sectors);

/// <summary>
/// The in-place overwrite journal: a ring of records in its own file. A record is a 4 KiB header page followed
/// by the sectors it carries:
/// <code>
///   0  u32 checksum   XxHash3 (low 32 bits) of header bytes 4..4095
///   4  u32 magic      "DLJR"
///   8  u64 generation the commit generation whose state the record's writes extend
///  16  u64 sequence   one more than the record before it
///  24  u32 entries    n, at most <see cref="EntriesPerRecord"/>; 0 for a wrap marker
///  28  u32 flags      1: last record of its batch (a flush); 2: wrap marker (the next record is at ring offset 0)
///  32  n entries of 32 bytes: u64 device id, u64 logical block, u32 physical block, u32 sector, u32 checksum, u32 0
///  then n sectors of 4096 bytes, in entry order
/// </code>
/// Positions are byte counts that only grow; the file offset is the position modulo the ring size. A record never
/// straddles the ring's end. A batch is the records of one flush; replay applies only complete batches, so a
/// flush lands whole or not at all.
/// </summary>
internal sealed class Journal : IDisposable
{
    public const uint Magic = 0x524A4C44; // "DLJR"
    public const int EntrySize = 32;
    public const int MaxEntriesPerRecord = (Layout.PageSize - 32) / EntrySize;
    private const uint FlagLast = 1;
    private const uint FlagWrap = 2;

    private readonly IStorageFile _file;

    public Journal(IStorageFile file, long sizeBytes, ulong start, ulong startSeq)
    {
        _file = file;
        Size = sizeBytes;
        EntriesPerRecord = (int)Math.Min(MaxEntriesPerRecord, (sizeBytes / Layout.PageSize / 8) - 1);
        Tail = start;
        NextSeq = startSeq;
        DurableStart = start;
        NeededEnd = start;
    }

    /// <summary>The ring's size in bytes.</summary>
    public long Size { get; }

    /// <summary>Sectors one record carries (fewer for small rings, so a batch never needs most of the ring).</summary>
    public int EntriesPerRecord { get; }

    /// <summary>Where the next record goes.</summary>
    public ulong Tail { get; private set; }

    /// <summary>The sequence number the next record carries.</summary>
    public ulong NextSeq { get; private set; }

    /// <summary>Where the durable superblock's replay starts: records from here on may still be needed.</summary>
    public ulong DurableStart { get; set; }

    /// <summary>The end of the last batch that became durable: what lies past it is of failed batches only.</summary>
    public ulong NeededEnd { get; private set; }

    /// <summary>A batch became durable: records up to its end may be needed.</summary>
    public void Completed(JournalBatch batch) => NeededEnd = Math.Max(NeededEnd, batch.End);

    /// <summary>
    /// A batch failed: its space is taken again by the next one. That one is of a newer generation, with higher
    /// sequence numbers, so nothing left of the failed batch can be read as part of it.
    /// </summary>
    public void Abandoned() => Tail = NeededEnd;

    /// <summary>Bytes of the ring that records still needed (or not yet known to be obsolete) occupy.</summary>
    public long Live => (long)(Tail - DurableStart);

    /// <summary>How far the tail moves for a batch of <paramref name="sectors"/> sectors, wrap included.</summary>
    public long Advance(int sectors)
    {
        ulong pos = Tail;
        int left = sectors;
        do
        {
            int n = Math.Min(left, EntriesPerRecord);
            pos = Place(pos, (long)(1 + n) * Layout.PageSize, out _);
            pos += (ulong)((1 + n) * Layout.PageSize);
            left -= n;
        }
        while (left > 0);
        return (long)(pos - Tail);
    }

    /// <summary>The position a record of <paramref name="bytes"/> goes to from <paramref name="pos"/>, past a wrap marker if it does not fit before the end.</summary>
    private ulong Place(ulong pos, long bytes, out bool wraps)
    {
        long offset = (long)(pos % (ulong)Size);
        wraps = offset + bytes > Size;
        return wraps ? pos + (ulong)(Size - offset) : pos;
    }

    /// <summary>
    /// Lays out one batch of records for <paramref name="generation"/> from the tail and moves the tail past it.
    /// <paramref name="fill"/> writes entry <c>i</c>'s sector bytes into the span it is given and returns the entry.
    /// </summary>
    public JournalBatch Build(ulong generation, int sectors, Func<int, Span<byte>, JournalEntry> fill)
    {
        ulong start = Tail;
        ulong startSeq = NextSeq;
        var pieces = new List<(long, byte[])>();
        long total = Advance(sectors);
        long firstOffset = (long)(start % (ulong)Size);
        long firstLength = Math.Min(total, Size - firstOffset);
        var first = new byte[firstLength];
        byte[]? second = total > firstLength ? new byte[total - firstLength] : null;
        pieces.Add((firstOffset, first));
        if (second is not null)
        {
            pieces.Add((0, second));
        }

        ulong pos = start;
        int done = 0;
        do
        {
            int n = Math.Min(sectors - done, EntriesPerRecord);
            long bytes = (long)(1 + n) * Layout.PageSize;
            ulong at = Place(pos, bytes, out bool wraps);
            if (wraps)
            {
                var marker = Slice(start, first, second, pos, Layout.PageSize);
                WriteHeader(marker, generation, NextSeq++, 0, FlagWrap);
            }

            var record = Slice(start, first, second, at, bytes);
            var header = record[..Layout.PageSize];
            for (int i = 0; i < n; i++)
            {
                var entry = fill(done + i, record.Slice((1 + i) * Layout.PageSize, Layout.PageSize));
                var e = header.Slice(32 + (i * EntrySize), EntrySize);
                BinaryPrimitives.WriteUInt64LittleEndian(e, entry.Device);
                BinaryPrimitives.WriteInt64LittleEndian(e[8..], entry.LogicalBlock);
                BinaryPrimitives.WriteUInt32LittleEndian(e[16..], entry.Block);
                BinaryPrimitives.WriteUInt32LittleEndian(e[20..], (uint)entry.Sector);
                BinaryPrimitives.WriteUInt32LittleEndian(e[24..], entry.Checksum);
            }

            done += n;
            WriteHeader(header, generation, NextSeq++, n, done == sectors ? FlagLast : 0);
            pos = at + (ulong)bytes;
        }
        while (done < sectors);

        Tail = pos;
        return new JournalBatch(start, startSeq, pos, pieces, sectors);
    }

    /// <summary>The span of a batch's buffers that holds ring positions [pos, pos + length).</summary>
    private static Span<byte> Slice(ulong start, byte[] first, byte[]? second, ulong pos, long length)
    {
        long rel = (long)(pos - start);
        return rel < first.Length ? first.AsSpan((int)rel, (int)length) : second!.AsSpan((int)(rel - first.Length), (int)length);
    }

    private static void WriteHeader(Span<byte> header, ulong generation, ulong seq, int entries, uint flags)
    {
        BinaryPrimitives.WriteUInt32LittleEndian(header[4..], Magic);
        BinaryPrimitives.WriteUInt64LittleEndian(header[8..], generation);
        BinaryPrimitives.WriteUInt64LittleEndian(header[16..], seq);
        BinaryPrimitives.WriteUInt32LittleEndian(header[24..], (uint)entries);
        BinaryPrimitives.WriteUInt32LittleEndian(header[28..], flags);
        Layout.SealPage(header[..Layout.PageSize]);
    }

    /// <summary>Zeros written ahead of the tail while the file is shorter than the ring.</summary>
    private const long GrowthStep = 512L << 10;

    /// <summary>
    /// Writes a batch's records (not yet durable). During the ring's first lap the file is first extended with
    /// zeros well past the batch, so that most syncs write only records, not also a new file size.
    /// </summary>
    public void Write(JournalBatch batch)
    {
        long end = batch.Pieces.Max(p => p.FileOffset + p.Bytes.Length);
        long length = _file.Length;
        if (end > length && length < Size)
        {
            long target = Math.Min(Size, Math.Max(end, length + Math.Min(GrowthStep, Size / 16)));
            var zeros = new byte[Math.Min(target - length, 1L << 20)];
            try
            {
                for (long at = length; at < target; at += zeros.Length)
                {
                    _file.Write(at, zeros.AsSpan(0, (int)Math.Min(zeros.Length, target - at)));
                }
            }
            catch (IOException)
            {
                // Growing ahead only saves later syncs some work; the records themselves are written below (and
                // fail there, with the real error, if they do not fit either).
            }
        }

        foreach (var (offset, bytes) in batch.Pieces)
        {
            _file.Write(offset, bytes);
        }
    }

    /// <summary>Makes every record written so far durable.</summary>
    public void Sync() => _file.Sync();

    /// <summary>
    /// Continues after the records a replay found: the next record goes at <paramref name="tail"/> with
    /// <paramref name="seq"/>, unless the tail is already past it (positions and sequence numbers never go back).
    /// </summary>
    public void Resume(ulong tail, ulong seq)
    {
        Tail = Math.Max(Tail, tail);
        NeededEnd = Math.Max(NeededEnd, tail);
        NextSeq = Math.Max(NextSeq, seq);
    }

    /// <summary>
    /// Reads the complete batches of <paramref name="generation"/> from <paramref name="start"/>: records must carry
    /// that generation and consecutive sequence numbers from <paramref name="startSeq"/>, and every sector its
    /// checksum. Reading stops at the first record that does not; a batch cut short there is not returned.
    /// </summary>
    public JournalReplay Replay(ulong start, ulong startSeq, ulong generation)
    {
        var batches = new List<JournalBatchRead>();
        var header = new byte[Layout.PageSize];
        ulong pos = start;
        ulong seq = startSeq;
        ulong end = start;
        ulong endSeq = startSeq;
        var entries = new List<JournalEntry>();
        var sectors = new List<byte[]>();
        while ((long)(pos - start) < Size)
        {
            long offset = (long)(pos % (ulong)Size);
            if (offset + Layout.PageSize > _file.Length)
            {
                break;
            }

            _file.Read(offset, header);
            if (!Layout.PageChecksumOk(header)
                || BinaryPrimitives.ReadUInt32LittleEndian(header.AsSpan(4)) != Magic
                || BinaryPrimitives.ReadUInt64LittleEndian(header.AsSpan(8)) != generation
                || BinaryPrimitives.ReadUInt64LittleEndian(header.AsSpan(16)) != seq)
            {
                break;
            }

            int n = (int)BinaryPrimitives.ReadUInt32LittleEndian(header.AsSpan(24));
            uint flags = BinaryPrimitives.ReadUInt32LittleEndian(header.AsSpan(28));
            if ((flags & FlagWrap) != 0)
            {
                pos += (ulong)(Size - offset);
                seq++;
                continue;
            }

            long bytes = (long)(1 + n) * Layout.PageSize;
            if (n is < 1 or > MaxEntriesPerRecord || offset + bytes > Size)
            {
                break;
            }

            bool intact = true;
            var recordEntries = new List<JournalEntry>(n);
            var recordSectors = new List<byte[]>(n);
            for (int i = 0; i < n && intact; i++)
            {
                var e = header.AsSpan(32 + (i * EntrySize), EntrySize);
                var entry = new JournalEntry(
                    BinaryPrimitives.ReadUInt64LittleEndian(e),
                    BinaryPrimitives.ReadInt64LittleEndian(e[8..]),
                    BinaryPrimitives.ReadUInt32LittleEndian(e[16..]),
                    (int)BinaryPrimitives.ReadUInt32LittleEndian(e[20..]),
                    BinaryPrimitives.ReadUInt32LittleEndian(e[24..]));
                var sector = new byte[Layout.SectorSize];
                _file.Read(offset + ((1 + i) * Layout.PageSize), sector);
                intact = Layout.Checksum(sector) == entry.Checksum;
                recordEntries.Add(entry);
                recordSectors.Add(sector);
            }

            if (!intact)
            {
                break;
            }

            entries.AddRange(recordEntries);
            sectors.AddRange(recordSectors);
            pos += (ulong)bytes;
            seq++;
            if ((flags & FlagLast) != 0)
            {
                batches.Add(new JournalBatchRead(entries, sectors));
                entries = [];
                sectors = [];
                end = pos;
                endSeq = seq;
            }
        }

        return new JournalReplay(batches, end, endSeq);
    }

    public void Dispose() => _file.Dispose();
}
