using System.Buffers.Binary;
using System.Security.Cryptography;
using ZstdSharp;

namespace Dolly.Repository.Format;

/// <summary>What a sealed object holds.</summary>
public enum ObjectKind : byte
{
    /// <summary>A chunk of volume data.</summary>
    Chunk = 1,

    /// <summary>A snapshot manifest.</summary>
    Manifest = 2,
}

/// <summary>How a sealed object's payload is encoded before encryption.</summary>
public enum PayloadEncoding : byte
{
    /// <summary>The plaintext as is (compression did not pay).</summary>
    Stored = 0,

    /// <summary>One zstd frame.</summary>
    Zstd = 1,
}

/// <summary>
/// Every object in a repository except <c>config</c> is one sealed envelope: a small authenticated header, then the
/// payload (compressed when that pays) encrypted with AES-256-GCM.
/// </summary>
/// <remarks>
/// <code>
/// offset  size  field (integers little-endian)
///      0     4  magic "DLYO"
///      4     2  format version (1); a reader refuses a newer one, naming it
///      6     1  kind: 1 chunk, 2 manifest
///      7     1  encoding: 0 stored, 1 zstd
///      8     4  plaintext length (before compression)
///     12    32  object id: a chunk's keyed BLAKE3 hash; a manifest's 16-byte id then 16 zero bytes
///     44    12  nonce, random per object (a chunk uploaded twice gets two nonces; no nonce is ever reused
///               with a key for different data short of a 2^-32 birthday collision after 2^32 objects)
///     56     n  ciphertext of the encoded payload
///   56+n    16  GCM tag; the additional authenticated data is bytes 0..56, so a header that was altered,
///               or an object moved under another id or kind, fails authentication like altered data
/// </code>
/// The object id in the authenticated header binds an object to its key: a valid chunk copied over another
/// chunk's key is refused. A chunk is accepted only when the tag verifies, it decodes to exactly the
/// plaintext length, and the keyed hash of that plaintext is its id.
/// </remarks>
public static class ObjectEnvelope
{
    /// <summary>The format version this build writes and the newest it reads.</summary>
    public const ushort FormatVersion = 1;

    /// <summary>Bytes before the ciphertext.</summary>
    public const int HeaderSize = 56;

    /// <summary>Bytes of the GCM tag after the ciphertext.</summary>
    public const int TagSize = 16;

    /// <summary>Largest plaintext an object may declare (a manifest of a 64 TiB volume in 1 MiB chunks fits).</summary>
    public const int MaxPlaintext = int.MaxValue - 4096;

    /// <summary>Compression is kept only when it saves at least this fraction (1/16): otherwise decoding costs more than it saves.</summary>
    public const int MinSavingShift = 4;

    private const int MagicValue = 0x4F594C44; // "DLYO" read little-endian
    private const int NonceSize = 12;

    [ThreadStatic]
    private static Compressor? t_compressor;

    /// <summary>Seals a payload under <paramref name="id"/> with the repository's object key.</summary>
    public static byte[] Seal(ObjectKind kind, ReadOnlySpan<byte> id, ReadOnlySpan<byte> plaintext, ReadOnlySpan<byte> objectKey, int zstdLevel)
    {
        byte[]? compressed = null;
        int compressedLength = 0;
        if (zstdLevel > 0)
        {
            compressed = new byte[Compressor.GetCompressBound(plaintext.Length)];
            var compressor = t_compressor ??= new Compressor(zstdLevel);
            if (compressor.Level != zstdLevel)
            {
                compressor.Level = zstdLevel;
            }

            compressedLength = compressor.Wrap(plaintext, compressed);
        }

        bool pays = compressed is not null && compressedLength <= plaintext.Length - (plaintext.Length >> MinSavingShift);
        ReadOnlySpan<byte> payload = pays ? compressed.AsSpan(0, compressedLength) : plaintext;
        var sealedObject = new byte[HeaderSize + payload.Length + TagSize];
        var header = sealedObject.AsSpan(0, HeaderSize);
        BinaryPrimitives.WriteInt32LittleEndian(header, MagicValue);
        BinaryPrimitives.WriteUInt16LittleEndian(header[4..], FormatVersion);
        header[6] = (byte)kind;
        header[7] = (byte)(pays ? PayloadEncoding.Zstd : PayloadEncoding.Stored);
        BinaryPrimitives.WriteInt32LittleEndian(header[8..], plaintext.Length);
        id.CopyTo(header.Slice(12, ChunkId.Size));
        RandomNumberGenerator.Fill(header.Slice(44, NonceSize));
        using var aes = new AesGcm(objectKey, TagSize);
        aes.Encrypt(header.Slice(44, NonceSize), payload, sealedObject.AsSpan(HeaderSize, payload.Length), sealedObject.AsSpan(HeaderSize + payload.Length), header);
        return sealedObject;
    }

    /// <summary>
    /// Opens a sealed object read from <paramref name="key"/>, checking it is of <paramref name="kind"/> under
    /// <paramref name="id"/>, and returns its plaintext. Throws <see cref="RepositoryException"/> naming the object when
    /// anything does not verify; nothing unverified is ever returned.
    /// </summary>
    public static byte[] Open(ReadOnlySpan<byte> sealedObject, ObjectKind kind, ReadOnlySpan<byte> id, ReadOnlySpan<byte> objectKey, string key, int maxPlaintext)
    {
        if (sealedObject.Length < HeaderSize + TagSize || BinaryPrimitives.ReadInt32LittleEndian(sealedObject) != MagicValue)
        {
            throw Corrupt(key, $"is not a Dolly repository object ({sealedObject.Length} bytes, no valid header)");
        }

        var header = sealedObject[..HeaderSize];
        ushort version = BinaryPrimitives.ReadUInt16LittleEndian(header[4..]);
        if (version > FormatVersion)
        {
            throw new RepositoryException(RepositoryError.UnsupportedFormat, $"object '{key}' has format version {version}; this dolly reads format version {FormatVersion} and older: upgrade dolly to read it");
        }

        if (version == 0 || header[6] != (byte)kind || !header.Slice(12, ChunkId.Size).SequenceEqual(id))
        {
            throw Corrupt(key, $"has a header for another object (version {version}, kind {header[6]}); it was altered or stored under the wrong key");
        }

        int plainLength = BinaryPrimitives.ReadInt32LittleEndian(header[8..]);
        var encoding = (PayloadEncoding)header[7];
        int payloadLength = sealedObject.Length - HeaderSize - TagSize;
        if (plainLength < 0 || plainLength > maxPlaintext || encoding is not (PayloadEncoding.Stored or PayloadEncoding.Zstd) ||
            (encoding == PayloadEncoding.Stored && payloadLength != plainLength))
        {
            throw Corrupt(key, $"declares {plainLength} bytes with encoding {(byte)encoding} in {payloadLength} bytes of payload");
        }

        var payload = new byte[payloadLength];
        try
        {
            using var aes = new AesGcm(objectKey, TagSize);
            aes.Decrypt(header.Slice(44, NonceSize), sealedObject.Slice(HeaderSize, payloadLength), sealedObject[(HeaderSize + payloadLength)..], payload, header);
        }
        catch (AuthenticationTagMismatchException)
        {
            throw Corrupt(key, "failed authentication (its data or header was altered, or it was written with another repository key)");
        }

        if (encoding == PayloadEncoding.Stored)
        {
            return payload;
        }

        var plain = new byte[plainLength];
        int written;
        try
        {
            using var decompressor = new Decompressor();
            written = decompressor.Unwrap(payload, plain);
        }
        catch (ZstdException ex)
        {
            throw Corrupt(key, $"does not decompress: {ex.Message}");
        }

        return written == plainLength ? plain : throw Corrupt(key, $"decompresses to {written} bytes, not the {plainLength} its header declares");
    }

    private static RepositoryException Corrupt(string key, string what) => new(RepositoryError.Corrupt, $"object '{key}' {what}");
}
