using System.Buffers.Binary;
using System.Text.Json;
using System.Text.Json.Serialization;

namespace Dolly.Repository.Format;

/// <summary>What a manifest says about the snapshot it describes.</summary>
/// <param name="Id">The manifest id: 32 hex digits, random; with the repository id, the snapshot's handle.</param>
/// <param name="RepositoryId">The repository it belongs to (a manifest copied into another repository is refused).</param>
/// <param name="Volume">The volume the snapshot was taken of.</param>
/// <param name="Snapshot">The snapshot's name in its pool.</param>
/// <param name="PoolId">The pool the snapshot was uploaded from.</param>
/// <param name="LineageId">The snapshot's lineage in that pool (incremental uploads follow it).</param>
/// <param name="Size">Logical size in bytes.</param>
/// <param name="ChunkSize">Bytes per chunk: chunk i covers [i × ChunkSize, min(Size, (i + 1) × ChunkSize)).</param>
/// <param name="Parent">The manifest this upload was incremental against, or null for a full upload.</param>
/// <param name="SnapshotCreated">When the snapshot was taken.</param>
/// <param name="Uploaded">When the upload completed.</param>
public sealed record ManifestInfo(
    string Id,
    Guid RepositoryId,
    string Volume,
    string Snapshot,
    Guid PoolId,
    ulong LineageId,
    long Size,
    int ChunkSize,
    string? Parent,
    DateTimeOffset SnapshotCreated,
    DateTimeOffset Uploaded);

/// <summary>One chunk of a snapshot: chunk index <see cref="Index"/> holds the chunk <see cref="Chunk"/>.</summary>
public readonly record struct ManifestEntry(uint Index, ChunkId Chunk);

/// <summary>
/// A snapshot in the repository: its metadata and, for every chunk-sized range that holds data, the chunk holding
/// it. Ranges with no entry read as zeros (sparse and all-zero ranges are never stored). It is also the index a
/// lazy reader needs: <see cref="Find"/> maps a byte offset to the one chunk to fetch.
/// </summary>
/// <remarks>
/// A manifest is the sealed object <c>manifests/ID</c> (see <see cref="ObjectEnvelope"/>) whose plaintext is:
/// <code>
/// offset  size    field (integers little-endian)
///      0     4    m: bytes of metadata
///      4     m    metadata: UTF-8 JSON of ManifestInfo (camelCase); later versions add fields, never remove them
///    4+m     4    n: number of entries
///    8+m  36×n    entries, by strictly increasing chunk index:
///                   +0   4  chunk index
///                   +4  32  chunk id
/// </code>
/// It is written only after every chunk it lists is stored, so a snapshot whose upload did not finish has no
/// manifest and cannot be restored, listed or mistaken for complete.
/// </remarks>
public sealed class Manifest
{
    /// <summary>Where manifests live.</summary>
    public const string KeyPrefix = "manifests/";

    /// <summary>Bytes per entry.</summary>
    public const int EntrySize = 4 + ChunkId.Size;

    private readonly ManifestEntry[] _entries;

    /// <summary>A manifest over entries sorted by strictly increasing index, each inside the size.</summary>
    public Manifest(ManifestInfo info, IReadOnlyList<ManifestEntry> entries)
    {
        ArgumentNullException.ThrowIfNull(info);
        ArgumentNullException.ThrowIfNull(entries);
        if (ValidateId(info.Id) is { } bad)
        {
            throw new ArgumentException(bad, nameof(info));
        }

        _entries = [.. entries];
        if (Problem(info, _entries) is { } problem)
        {
            throw new ArgumentException(problem, nameof(entries));
        }

        Info = info;
    }

    /// <summary>The metadata.</summary>
    public ManifestInfo Info { get; }

    /// <summary>The chunks, by increasing index.</summary>
    public IReadOnlyList<ManifestEntry> Entries => _entries;

    /// <summary>Number of chunk ranges of the snapshot (stored or not).</summary>
    public long ChunkCount => (Info.Size + Info.ChunkSize - 1) / Info.ChunkSize;

    /// <summary>The object key of a manifest id.</summary>
    public static string KeyOf(string id) => KeyPrefix + id;

    /// <summary>A new random manifest id.</summary>
    public static string NewId() => Guid.NewGuid().ToString("N");

    /// <summary>Why <paramref name="id"/> is not a manifest id (32 lowercase hex digits), or null.</summary>
    public static string? ValidateId(string? id) =>
        id is { Length: 32 } && id.All(char.IsAsciiHexDigitLower) ? null : $"'{id}' is not a manifest id (32 lowercase hex digits)";

    /// <summary>The 32 bytes an envelope carries as a manifest's id.</summary>
    public static byte[] EnvelopeId(string id)
    {
        var bytes = new byte[ChunkId.Size];
        Convert.FromHexString(id).CopyTo(bytes, 0);
        return bytes;
    }

    /// <summary>The byte range of chunk <paramref name="index"/>.</summary>
    public (long Offset, int Length) RangeOf(uint index)
    {
        long offset = (long)index * Info.ChunkSize;
        return (offset, (int)Math.Min(Info.ChunkSize, Info.Size - offset));
    }

    /// <summary>
    /// The entry holding the byte at <paramref name="offset"/>, or null when that chunk range reads as zeros: one
    /// binary search, so a lazy reader fetches exactly the chunk a read needs.
    /// </summary>
    public ManifestEntry? Find(long offset)
    {
        if (offset < 0 || offset >= Info.Size)
        {
            throw new ArgumentOutOfRangeException(nameof(offset), offset, $"outside the snapshot's {Info.Size} bytes");
        }

        uint index = (uint)(offset / Info.ChunkSize);
        int lo = 0, hi = _entries.Length - 1;
        while (lo <= hi)
        {
            int mid = lo + ((hi - lo) >> 1);
            uint at = _entries[mid].Index;
            if (at == index)
            {
                return _entries[mid];
            }

            if (at < index)
            {
                lo = mid + 1;
            }
            else
            {
                hi = mid - 1;
            }
        }

        return null;
    }

    /// <summary>The plaintext of the manifest object.</summary>
    public byte[] Encode()
    {
        byte[] meta = JsonSerializer.SerializeToUtf8Bytes(Info, ManifestJson.Default.ManifestInfo);
        long length = 8L + meta.Length + ((long)_entries.Length * EntrySize);
        if (length > ObjectEnvelope.MaxPlaintext)
        {
            throw new RepositoryException(RepositoryError.InvalidArgument, $"manifest {Info.Id} of {_entries.Length} chunks exceeds the largest manifest ({ObjectEnvelope.MaxPlaintext} bytes); use a repository with larger chunks");
        }

        var bytes = new byte[length];
        var span = bytes.AsSpan();
        BinaryPrimitives.WriteInt32LittleEndian(span, meta.Length);
        meta.CopyTo(span[4..]);
        int at = 4 + meta.Length;
        BinaryPrimitives.WriteInt32LittleEndian(span[at..], _entries.Length);
        at += 4;
        foreach (var e in _entries)
        {
            BinaryPrimitives.WriteUInt32LittleEndian(span[at..], e.Index);
            e.Chunk.Write(span[(at + 4)..]);
            at += EntrySize;
        }

        return bytes;
    }

    /// <summary>Parses a manifest's plaintext, checking it is the manifest <paramref name="id"/> of repository <paramref name="repositoryId"/>.</summary>
    public static Manifest Decode(ReadOnlySpan<byte> bytes, string id, Guid repositoryId, string key)
    {
        if (bytes.Length < 8)
        {
            throw Corrupt(key, $"is {bytes.Length} bytes, too short for a manifest");
        }

        int metaLength = BinaryPrimitives.ReadInt32LittleEndian(bytes);
        if (metaLength < 2 || metaLength > bytes.Length - 8)
        {
            throw Corrupt(key, $"declares {metaLength} bytes of metadata in {bytes.Length} bytes");
        }

        ManifestInfo? info;
        try
        {
            info = JsonSerializer.Deserialize(bytes.Slice(4, metaLength), ManifestJson.Default.ManifestInfo);
        }
        catch (JsonException ex)
        {
            throw Corrupt(key, $"has metadata that is not valid JSON: {ex.Message}");
        }

        if (info is null || info.Id != id || info.RepositoryId != repositoryId)
        {
            throw Corrupt(key, $"describes manifest {info?.Id} of repository {info?.RepositoryId}, not {id} of {repositoryId}");
        }

        int at = 4 + metaLength;
        int count = BinaryPrimitives.ReadInt32LittleEndian(bytes[at..]);
        at += 4;
        if (count < 0 || (long)count * EntrySize != bytes.Length - at)
        {
            throw Corrupt(key, $"declares {count} entries in {bytes.Length - at} bytes");
        }

        var entries = new ManifestEntry[count];
        for (int i = 0; i < count; i++, at += EntrySize)
        {
            entries[i] = new ManifestEntry(BinaryPrimitives.ReadUInt32LittleEndian(bytes[at..]), ChunkId.Read(bytes.Slice(at + 4, ChunkId.Size)));
        }

        if (Problem(info, entries) is { } problem)
        {
            throw Corrupt(key, problem);
        }

        return new Manifest(info, entries);
    }

    private static string? Problem(ManifestInfo info, ManifestEntry[] entries)
    {
        if (info.Size <= 0 || RepositoryConfig.ValidateChunkSize(info.ChunkSize) is not null)
        {
            return $"has size {info.Size} and chunk size {info.ChunkSize}";
        }

        long chunks = (info.Size + info.ChunkSize - 1) / info.ChunkSize;
        for (int i = 0; i < entries.Length; i++)
        {
            if (entries[i].Index >= chunks || (i > 0 && entries[i].Index <= entries[i - 1].Index))
            {
                return $"lists chunk index {entries[i].Index} out of order or beyond its {chunks} chunks";
            }
        }

        return null;
    }

    private static RepositoryException Corrupt(string key, string what) => new(RepositoryError.Corrupt, $"manifest '{key}' {what}");
}

[JsonSourceGenerationOptions(PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase)]
[JsonSerializable(typeof(ManifestInfo))]
internal sealed partial class ManifestJson : JsonSerializerContext;
