using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;

namespace Dolly.Repository.Format;

/// <summary>
/// The repository's one mutable-at-init object, <c>config</c>: UTF-8 JSON, readable by hand, holding what every
/// client needs before it can read anything else.
/// </summary>
/// <remarks>
/// <code>
/// {
///   "format": 1,                      // a reader refuses a larger value before looking at anything else
///   "id": "6f1c…",                    // the repository id, part of every snapshot handle
///   "created": "2026-12-07T18:00:00Z",
///   "chunkSize": 4194304,             // bytes; a power of two, 1-16 MiB; pools with a block size dividing it can upload
///   "zstdLevel": 3,                   // 0 stores chunks uncompressed
///   "kdf": { "algorithm": "pbkdf2-sha256", "iterations": 200000, "salt": "base64 of 16 bytes" },
///   "wrappedKey": "base64 of nonce(12) | AES-256-GCM ciphertext of the 32-byte data key (32) | tag(16)"
/// }
/// </code>
/// The user's key (a passphrase or the bytes of a Kubernetes Secret) goes through the KDF to a key-encryption key
/// that unwraps the random data key; the additional authenticated data of the wrap is
/// <c>dolly-repository/{format}/{id}/{chunkSize}/{zstdLevel}</c>, so a config whose id or parameters were edited
/// fails to open like a wrong key would, and changing the user's key rewraps one object without touching the data.
/// From the data key, HKDF-SHA256 derives the object encryption key and the chunk-id hashing key (distinct infos),
/// so chunk names reveal nothing to whoever lacks the key.
/// </remarks>
public sealed class RepositoryConfig
{
    /// <summary>The object key of the config.</summary>
    public const string Key = "config";

    /// <summary>The format version this build writes and the newest it reads.</summary>
    public const int FormatVersion = ObjectEnvelope.FormatVersion;

    /// <summary>The smallest allowed chunk size.</summary>
    public const int MinChunkSize = 1 << 20;

    /// <summary>The largest allowed chunk size.</summary>
    public const int MaxChunkSize = 16 << 20;

    /// <summary>The chunk size of a new repository (see docs/ARCHITECTURE.md, "Snapshot repository", for the measurements).</summary>
    public const int DefaultChunkSize = 4 << 20;

    /// <summary>The zstd level of a new repository.</summary>
    public const int DefaultZstdLevel = 3;

    /// <summary>PBKDF2 iterations of a new repository.</summary>
    public const int DefaultKdfIterations = 200_000;

    private const string KdfAlgorithm = "pbkdf2-sha256";
    private const int KeySize = 32;
    private const int NonceSize = 12;
    private const int TagSize = 16;

    private RepositoryConfig(Guid id, DateTimeOffset created, int chunkSize, int zstdLevel, RepositoryKeys keys, string json)
    {
        Id = id;
        Created = created;
        ChunkSize = chunkSize;
        ZstdLevel = zstdLevel;
        Keys = keys;
        Json = json;
    }

    /// <summary>The repository id.</summary>
    public Guid Id { get; }

    /// <summary>When the repository was initialised.</summary>
    public DateTimeOffset Created { get; }

    /// <summary>Bytes per chunk (the last chunk of a volume may be shorter).</summary>
    public int ChunkSize { get; }

    /// <summary>The zstd level chunks are compressed with (0: none).</summary>
    public int ZstdLevel { get; }

    internal RepositoryKeys Keys { get; }

    internal string Json { get; }

    /// <summary>Why a chunk size is not allowed, or null.</summary>
    public static string? ValidateChunkSize(int chunkSize) =>
        chunkSize < MinChunkSize || chunkSize > MaxChunkSize || (chunkSize & (chunkSize - 1)) != 0
            ? $"chunk size {chunkSize} is not a power of two between {MinChunkSize >> 20} MiB and {MaxChunkSize >> 20} MiB"
            : null;

    /// <summary>A new config with a fresh id and data key, wrapped under <paramref name="userKey"/>.</summary>
    internal static RepositoryConfig Create(ReadOnlySpan<byte> userKey, int chunkSize, int zstdLevel, int kdfIterations, DateTimeOffset now)
    {
        var id = Guid.NewGuid();
        Span<byte> dataKey = stackalloc byte[KeySize];
        RandomNumberGenerator.Fill(dataKey);
        var salt = RandomNumberGenerator.GetBytes(16);
        Span<byte> kek = stackalloc byte[KeySize];
        Rfc2898DeriveBytes.Pbkdf2(userKey, salt, kek, kdfIterations, HashAlgorithmName.SHA256);
        var wrapped = new byte[NonceSize + KeySize + TagSize];
        RandomNumberGenerator.Fill(wrapped.AsSpan(0, NonceSize));
        using (var aes = new AesGcm(kek, TagSize))
        {
            aes.Encrypt(wrapped.AsSpan(0, NonceSize), dataKey, wrapped.AsSpan(NonceSize, KeySize), wrapped.AsSpan(NonceSize + KeySize), WrapData(FormatVersion, id, chunkSize, zstdLevel));
        }

        var doc = new ConfigDocument(FormatVersion, id, now, chunkSize, zstdLevel, new KdfDocument(KdfAlgorithm, kdfIterations, Convert.ToBase64String(salt)), Convert.ToBase64String(wrapped));
        string json = JsonSerializer.Serialize(doc, ConfigJson.Default.ConfigDocument);
        var keys = RepositoryKeys.Derive(dataKey);
        CryptographicOperations.ZeroMemory(dataKey);
        CryptographicOperations.ZeroMemory(kek);
        return new RepositoryConfig(id, now, chunkSize, zstdLevel, keys, json);
    }

    /// <summary>Parses a stored config and unwraps its data key with <paramref name="userKey"/>.</summary>
    internal static RepositoryConfig Open(byte[] stored, ReadOnlySpan<byte> userKey, string location)
    {
        ConfigDocument? doc;
        try
        {
            // The version first, alone: a newer format may have changed every other field.
            using (var probe = JsonDocument.Parse(stored))
            {
                if (!probe.RootElement.TryGetProperty("format", out var f) || !f.TryGetInt32(out int format) || format < 1)
                {
                    throw Corrupt(location, "has no valid \"format\" field");
                }

                if (format > FormatVersion)
                {
                    throw new RepositoryException(RepositoryError.UnsupportedFormat, $"the repository at {location} has format version {format}; this dolly reads format version {FormatVersion} and older: upgrade dolly to use it");
                }
            }

            doc = JsonSerializer.Deserialize(stored, ConfigJson.Default.ConfigDocument);
        }
        catch (JsonException ex)
        {
            throw Corrupt(location, $"is not valid JSON: {ex.Message}");
        }

        if (doc is null || doc.Kdf is null || doc.Kdf.Algorithm != KdfAlgorithm || doc.Kdf.Iterations is < 1 or > 100_000_000 || ValidateChunkSize(doc.ChunkSize) is not null || doc.ZstdLevel is < 0 or > 22)
        {
            throw Corrupt(location, "has missing or invalid fields (kdf, chunkSize or zstdLevel)");
        }

        byte[] salt, wrapped;
        try
        {
            salt = Convert.FromBase64String(doc.Kdf.Salt);
            wrapped = Convert.FromBase64String(doc.WrappedKey);
        }
        catch (FormatException)
        {
            throw Corrupt(location, "has a salt or wrapped key that is not base64");
        }

        if (wrapped.Length != NonceSize + KeySize + TagSize || salt.Length < 8)
        {
            throw Corrupt(location, $"has a wrapped key of {wrapped.Length} bytes or a salt of {salt.Length}");
        }

        Span<byte> kek = stackalloc byte[KeySize];
        Span<byte> dataKey = stackalloc byte[KeySize];
        Rfc2898DeriveBytes.Pbkdf2(userKey, salt, kek, doc.Kdf.Iterations, HashAlgorithmName.SHA256);
        try
        {
            using var aes = new AesGcm(kek, TagSize);
            aes.Decrypt(wrapped.AsSpan(0, NonceSize), wrapped.AsSpan(NonceSize, KeySize), wrapped.AsSpan(NonceSize + KeySize), dataKey, WrapData(doc.Format, doc.Id, doc.ChunkSize, doc.ZstdLevel));
        }
        catch (AuthenticationTagMismatchException)
        {
            throw new RepositoryException(RepositoryError.WrongKey, $"the key does not open the repository at {location} (id {doc.Id}): it is not the key the repository was created with, or its config was altered");
        }
        finally
        {
            CryptographicOperations.ZeroMemory(kek);
        }

        var keys = RepositoryKeys.Derive(dataKey);
        CryptographicOperations.ZeroMemory(dataKey);
        return new RepositoryConfig(doc.Id, doc.Created, doc.ChunkSize, doc.ZstdLevel, keys, Encoding.UTF8.GetString(stored));
    }

    private static byte[] WrapData(int format, Guid id, int chunkSize, int zstdLevel) =>
        Encoding.UTF8.GetBytes(FormattableString.Invariant($"dolly-repository/{format}/{id:N}/{chunkSize}/{zstdLevel}"));

    private static RepositoryException Corrupt(string location, string what) =>
        new(RepositoryError.Corrupt, $"the repository config at {location} ('{Key}') {what}");
}

/// <summary>The keys derived from a repository's data key.</summary>
internal sealed class RepositoryKeys
{
    private RepositoryKeys(byte[] objectKey, byte[] chunkIdKey)
    {
        ObjectKey = objectKey;
        ChunkIdKey = chunkIdKey;
    }

    /// <summary>AES-256-GCM key of every sealed object.</summary>
    public byte[] ObjectKey { get; }

    /// <summary>BLAKE3 key naming chunks.</summary>
    public byte[] ChunkIdKey { get; }

    public static RepositoryKeys Derive(ReadOnlySpan<byte> dataKey) => new(
        HKDF.DeriveKey(HashAlgorithmName.SHA256, dataKey.ToArray(), 32, salt: [], info: "dolly-repository v1 object encryption"u8.ToArray()),
        HKDF.DeriveKey(HashAlgorithmName.SHA256, dataKey.ToArray(), 32, salt: [], info: "dolly-repository v1 chunk id"u8.ToArray()));

    public ChunkId ChunkIdOf(ReadOnlySpan<byte> plaintext)
    {
        using var hasher = Blake3.Hasher.NewKeyed(ChunkIdKey);
        hasher.UpdateWithJoin(plaintext);
        Span<byte> hash = stackalloc byte[ChunkId.Size];
        hasher.Finalize(hash);
        return ChunkId.Read(hash);
    }
}

internal sealed record KdfDocument(string Algorithm, int Iterations, string Salt);

internal sealed record ConfigDocument(int Format, Guid Id, DateTimeOffset Created, int ChunkSize, int ZstdLevel, KdfDocument Kdf, string WrappedKey);

[JsonSourceGenerationOptions(PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase, WriteIndented = true)]
[JsonSerializable(typeof(ConfigDocument))]
internal sealed partial class ConfigJson : JsonSerializerContext;
