using System.Buffers.Binary;
using System.Text;

namespace Dolly.Storage.Engine;

/// <summary>
/// A volume or snapshot in memory. Its record in a device-table leaf (512 bytes, little-endian):
/// <code>
///   0 u64 id (0 = free slot)   8 u8 kind   9 u8 map depth   10 u16 name length   12 u32 map root page
///  16 u64 size   24 i64 created (unix ms)   32 u64 source id   40 u64 lineage id   48..63 reserved
///  64 name (UTF-8, at most 253 bytes)   317..511 reserved, zero
/// </code>
/// </summary>
internal sealed class DeviceState
{
    public const int NameOffset = 64;

    public required ulong Id { get; init; }

    public required string Name { get; init; }

    public required DeviceKind Kind { get; init; }

    public required int Slot { get; init; }

    public required long CreatedUnixMs { get; init; }

    public required ulong SourceId { get; init; }

    public required ulong LineageId { get; init; }

    public long Size { get; set; }

    public uint Root { get; set; }

    public int Depth { get; set; }

    public bool Deleted { get; set; }

    /// <summary>
    /// Orders the data path on this device: reads share it, writes hold it alone, so a read never sees a block
    /// between its new bytes and its new checksums. Taken inside the pool's lock (shared), never across devices.
    /// </summary>
    public ReaderWriterLockSlim Io { get; } = new(LockRecursionPolicy.NoRecursion);

    public void WriteRecord(Span<byte> record)
    {
        record[..Layout.DeviceRecordSize].Clear();
        if (Deleted)
        {
            return;
        }

        BinaryPrimitives.WriteUInt64LittleEndian(record, Id);
        record[8] = (byte)Kind;
        record[9] = (byte)Depth;
        int n = Encoding.UTF8.GetBytes(Name, record[NameOffset..(NameOffset + Names.MaxLength)]);
        BinaryPrimitives.WriteUInt16LittleEndian(record[10..], (ushort)n);
        BinaryPrimitives.WriteUInt32LittleEndian(record[12..], Root);
        BinaryPrimitives.WriteInt64LittleEndian(record[16..], Size);
        BinaryPrimitives.WriteInt64LittleEndian(record[24..], CreatedUnixMs);
        BinaryPrimitives.WriteUInt64LittleEndian(record[32..], SourceId);
        BinaryPrimitives.WriteUInt64LittleEndian(record[40..], LineageId);
    }

    /// <summary>Parses a record; returns null for a free slot. Structural problems go to <paramref name="problem"/>.</summary>
    public static DeviceState? ReadRecord(ReadOnlySpan<byte> record, int slot, out string? problem)
    {
        problem = null;
        ulong id = BinaryPrimitives.ReadUInt64LittleEndian(record);
        if (id == 0)
        {
            return null;
        }

        int kind = record[8];
        int nameLength = BinaryPrimitives.ReadUInt16LittleEndian(record[10..]);
        if (kind is not (1 or 2))
        {
            problem = $"device slot {slot} (id {id}) has unknown kind {kind}";
            return null;
        }

        if (nameLength is 0 or > Names.MaxLength)
        {
            problem = $"device slot {slot} (id {id}) has a name length of {nameLength}";
            return null;
        }

        string name;
        try
        {
            name = new UTF8Encoding(false, true).GetString(record.Slice(NameOffset, nameLength));
        }
        catch (DecoderFallbackException)
        {
            problem = $"device slot {slot} (id {id}) has a name that is not UTF-8";
            return null;
        }

        return new DeviceState
        {
            Id = id,
            Name = name,
            Kind = (DeviceKind)kind,
            Slot = slot,
            Depth = record[9],
            Root = BinaryPrimitives.ReadUInt32LittleEndian(record[12..]),
            Size = BinaryPrimitives.ReadInt64LittleEndian(record[16..]),
            CreatedUnixMs = BinaryPrimitives.ReadInt64LittleEndian(record[24..]),
            SourceId = BinaryPrimitives.ReadUInt64LittleEndian(record[32..]),
            LineageId = BinaryPrimitives.ReadUInt64LittleEndian(record[40..]),
        };
    }
}
