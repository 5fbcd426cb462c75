using System.Buffers.Binary;
using System.Globalization;

namespace Dolly.Repository.Format;

/// <summary>
/// The name of a chunk: the 256-bit keyed BLAKE3 hash of its plaintext. The key comes from the repository's data
/// key, so equal data in one repository has one name (deduplication across volumes, clones and clusters) while the
/// name says nothing about the data to someone without the key (no confirmation of a guessed block).
/// </summary>
public readonly record struct ChunkId(ulong W0, ulong W1, ulong W2, ulong W3)
{
    /// <summary>Bytes in a chunk id.</summary>
    public const int Size = 32;

    /// <summary>Where chunk objects live.</summary>
    public const string KeyPrefix = "chunks/";

    /// <summary>Reads an id from its 32 bytes.</summary>
    public static ChunkId Read(ReadOnlySpan<byte> bytes) => new(
        BinaryPrimitives.ReadUInt64BigEndian(bytes),
        BinaryPrimitives.ReadUInt64BigEndian(bytes[8..]),
        BinaryPrimitives.ReadUInt64BigEndian(bytes[16..]),
        BinaryPrimitives.ReadUInt64BigEndian(bytes[24..]));

    /// <summary>Writes the id's 32 bytes.</summary>
    public void Write(Span<byte> destination)
    {
        BinaryPrimitives.WriteUInt64BigEndian(destination, W0);
        BinaryPrimitives.WriteUInt64BigEndian(destination[8..], W1);
        BinaryPrimitives.WriteUInt64BigEndian(destination[16..], W2);
        BinaryPrimitives.WriteUInt64BigEndian(destination[24..], W3);
    }

    /// <summary>The id as 64 lowercase hex digits.</summary>
    public string Hex => string.Create(CultureInfo.InvariantCulture, $"{W0:x16}{W1:x16}{W2:x16}{W3:x16}");

    /// <summary>
    /// The object key, <c>chunks/ab/abcd…</c>: the first byte fans chunks out over 256 prefixes, so a directory
    /// store keeps directories small and S3 spreads request load over key ranges. A chunk is found by its name
    /// alone (GET or HEAD); nothing on the upload or restore path lists the bucket.
    /// </summary>
    public string Key
    {
        get
        {
            string hex = Hex;
            return string.Concat(KeyPrefix, hex.AsSpan(0, 2), "/", hex);
        }
    }

    /// <summary>Parses 64 hex digits.</summary>
    public static bool TryParse(string text, out ChunkId id)
    {
        id = default;
        if (text.Length != Size * 2)
        {
            return false;
        }

        Span<byte> bytes = stackalloc byte[Size];
        try
        {
            Convert.FromHexString(text, bytes, out _, out int written);
            if (written != Size)
            {
                return false;
            }
        }
        catch (FormatException)
        {
            return false;
        }

        id = Read(bytes);
        return true;
    }

    /// <summary>The id a chunk key names, if <paramref name="key"/> is a well-formed chunk key.</summary>
    public static bool TryParseKey(string key, out ChunkId id)
    {
        id = default;
        const int expected = 7 + 3 + (Size * 2);
        if (key.Length != expected || !key.StartsWith(KeyPrefix, StringComparison.Ordinal) || key[9] != '/')
        {
            return false;
        }

        return TryParse(key[10..], out id) && key.AsSpan(7, 2).SequenceEqual(key.AsSpan(10, 2));
    }

    /// <inheritdoc />
    public override string ToString() => Hex;
}
