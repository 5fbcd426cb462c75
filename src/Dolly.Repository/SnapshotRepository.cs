using System.Runtime.CompilerServices;
using System.Text;
using Dolly.Repository.Format;
using Dolly.Repository.Storage;

namespace Dolly.Repository;

/// <summary>Parameters of a new repository.</summary>
public sealed record RepositoryInitOptions
{
    /// <summary>Bytes per chunk; a power of two from 1 to 16 MiB.</summary>
    public int ChunkSize { get; init; } = RepositoryConfig.DefaultChunkSize;

    /// <summary>zstd level for chunks and manifests; 0 stores them uncompressed.</summary>
    public int ZstdLevel { get; init; } = RepositoryConfig.DefaultZstdLevel;

    /// <summary>PBKDF2 iterations turning the user's key into the key that wraps the data key.</summary>
    public int KdfIterations { get; init; } = RepositoryConfig.DefaultKdfIterations;
}

/// <summary>
/// An open snapshot repository: content-addressed, compressed, encrypted chunks and per-snapshot manifests in an
/// <see cref="IObjectStore"/>. Layout of the store:
/// <code>
/// config                    JSON: format version, id, chunking, wrapped data key (RepositoryConfig)
/// chunks/ab/abcdef…(64 hex) sealed chunk named by the keyed BLAKE3 of its plaintext (ObjectEnvelope)
/// manifests/ID (32 hex)     sealed manifest, written after all its chunks (Manifest)
/// uploads/ID                JSON marker of an upload in progress (prune keeps every chunk while one is live)
/// locks/prune               JSON marker of a prune in progress (uploads wait for it)
/// </code>
/// Upload and restore address every object by name; only maintenance (list, verify, prune) lists prefixes.
/// </summary>
public sealed class SnapshotRepository
{
    /// <summary>Where markers of uploads in progress live.</summary>
    public const string UploadsPrefix = "uploads/";

    /// <summary>The marker of a prune in progress.</summary>
    public const string PruneLockKey = "locks/prune";

    private SnapshotRepository(IObjectStore store, RepositoryConfig config)
    {
        Store = store;
        Config = config;
    }

    /// <summary>The store holding the repository.</summary>
    public IObjectStore Store { get; }

    /// <summary>The repository's config.</summary>
    public RepositoryConfig Config { get; }

    /// <summary>The repository id.</summary>
    public Guid Id => Config.Id;

    /// <summary>Bytes per chunk.</summary>
    public int ChunkSize => Config.ChunkSize;

    /// <summary>Where the repository is, for messages.</summary>
    public string Location => Store.Location;

    /// <summary>Creates a repository in an empty location; refuses a location that already has one.</summary>
    public static async Task<SnapshotRepository> InitAsync(IObjectStore store, ReadOnlyMemory<byte> userKey, RepositoryInitOptions options, TimeProvider time, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(store);
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(time);
        RequireKey(userKey, store.Location);
        if (RepositoryConfig.ValidateChunkSize(options.ChunkSize) is { } bad)
        {
            throw new RepositoryException(RepositoryError.InvalidArgument, bad);
        }

        if (options.ZstdLevel is < 0 or > 22 || options.KdfIterations < 1)
        {
            throw new RepositoryException(RepositoryError.InvalidArgument, $"zstd level {options.ZstdLevel} is not 0-22 or KDF iterations {options.KdfIterations} is not positive");
        }

        if (await store.ExistsAsync(RepositoryConfig.Key, cancellationToken).ConfigureAwait(false))
        {
            throw new RepositoryException(RepositoryError.AlreadyExists, $"{store.Location} already holds a repository ('{RepositoryConfig.Key}' exists); it was not changed");
        }

        var config = RepositoryConfig.Create(userKey.Span, options.ChunkSize, options.ZstdLevel, options.KdfIterations, time.GetUtcNow());
        await store.PutAsync(RepositoryConfig.Key, Encoding.UTF8.GetBytes(config.Json), cancellationToken).ConfigureAwait(false);
        return new SnapshotRepository(store, config);
    }

    /// <summary>Opens a repository with the user's key; a wrong key, a missing config or a newer format is a clear error.</summary>
    public static async Task<SnapshotRepository> OpenAsync(IObjectStore store, ReadOnlyMemory<byte> userKey, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(store);
        RequireKey(userKey, store.Location);
        var stored = await store.GetAsync(RepositoryConfig.Key, cancellationToken).ConfigureAwait(false)
            ?? throw new RepositoryException(RepositoryError.NotARepository, $"{store.Location} holds no repository (no '{RepositoryConfig.Key}' object); create one with `dolly repo init`");
        return new SnapshotRepository(store, RepositoryConfig.Open(stored, userKey.Span, store.Location));
    }

    /// <summary>The name of a chunk with this plaintext.</summary>
    public ChunkId ChunkIdOf(ReadOnlySpan<byte> plaintext) => Config.Keys.ChunkIdOf(plaintext);

    /// <summary>The sealed object for a chunk (compressed when it pays, encrypted).</summary>
    public byte[] SealChunk(ChunkId id, ReadOnlySpan<byte> plaintext)
    {
        Span<byte> idBytes = stackalloc byte[ChunkId.Size];
        id.Write(idBytes);
        return ObjectEnvelope.Seal(ObjectKind.Chunk, idBytes, plaintext, Config.Keys.ObjectKey, Config.ZstdLevel);
    }

    /// <summary>
    /// Fetches and verifies one chunk: authentication tag, decoded length and keyed hash. A chunk that fails any
    /// check throws <see cref="RepositoryException"/> (Corrupt) and none of its bytes are returned; a missing chunk
    /// throws NotFound. This is the one read path of restore, verify and (later) lazy hydration.
    /// </summary>
    public async Task<byte[]> ReadChunkAsync(ChunkId id, CancellationToken cancellationToken)
    {
        string key = id.Key;
        var stored = await Store.GetAsync(key, cancellationToken).ConfigureAwait(false)
            ?? throw new RepositoryException(RepositoryError.NotFound, $"chunk '{key}' is missing from the repository at {Location}");
        return OpenChunk(id, stored);
    }

    /// <summary>Verifies a sealed chunk read from the store and returns its plaintext.</summary>
    public byte[] OpenChunk(ChunkId id, ReadOnlySpan<byte> stored)
    {
        Span<byte> idBytes = stackalloc byte[ChunkId.Size];
        id.Write(idBytes);
        var plain = ObjectEnvelope.Open(stored, ObjectKind.Chunk, idBytes, Config.Keys.ObjectKey, id.Key, RepositoryConfig.MaxChunkSize);
        return ChunkIdOf(plain) == id
            ? plain
            : throw new RepositoryException(RepositoryError.Corrupt, $"object '{id.Key}' decrypts to data whose hash is not its name");
    }

    /// <summary>Stores a manifest (after all its chunks: the caller's duty).</summary>
    public Task PutManifestAsync(Manifest manifest, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(manifest);
        if (manifest.Info.RepositoryId != Id || manifest.Info.ChunkSize != ChunkSize)
        {
            throw new RepositoryException(RepositoryError.InvalidArgument, $"manifest {manifest.Info.Id} is for repository {manifest.Info.RepositoryId} with {manifest.Info.ChunkSize}-byte chunks, not this one ({Id}, {ChunkSize})");
        }

        var sealedManifest = ObjectEnvelope.Seal(ObjectKind.Manifest, Manifest.EnvelopeId(manifest.Info.Id), manifest.Encode(), Config.Keys.ObjectKey, Config.ZstdLevel);
        return Store.PutAsync(Manifest.KeyOf(manifest.Info.Id), sealedManifest, cancellationToken);
    }

    /// <summary>A manifest by id, verified, or null when there is none with that id.</summary>
    public async Task<Manifest?> GetManifestAsync(string id, CancellationToken cancellationToken)
    {
        RequireManifestId(id);
        string key = Manifest.KeyOf(id);
        var stored = await Store.GetAsync(key, cancellationToken).ConfigureAwait(false);
        if (stored is null)
        {
            return null;
        }

        var plain = ObjectEnvelope.Open(stored, ObjectKind.Manifest, Manifest.EnvelopeId(id), Config.Keys.ObjectKey, key, ObjectEnvelope.MaxPlaintext);
        return Manifest.Decode(plain, id, Id, key);
    }

    /// <summary>A manifest by id; NotFound naming the repository when there is none.</summary>
    public async Task<Manifest> RequireManifestAsync(string id, CancellationToken cancellationToken) =>
        await GetManifestAsync(id, cancellationToken).ConfigureAwait(false)
            ?? throw new RepositoryException(RepositoryError.NotFound, $"no manifest '{id}' in the repository at {Location}");

    /// <summary>Ids of every manifest (a listing: maintenance and <c>repo list</c> only).</summary>
    public async IAsyncEnumerable<string> ListManifestIdsAsync([EnumeratorCancellation] CancellationToken cancellationToken)
    {
        await foreach (var o in Store.ListAsync(Manifest.KeyPrefix, cancellationToken).ConfigureAwait(false))
        {
            string id = o.Key[Manifest.KeyPrefix.Length..];
            if (Manifest.ValidateId(id) is null)
            {
                yield return id;
            }
        }
    }

    /// <summary>Deletes a manifest; its chunks go at the next prune. NotFound when there is none.</summary>
    public async Task DeleteManifestAsync(string id, CancellationToken cancellationToken)
    {
        RequireManifestId(id);
        string key = Manifest.KeyOf(id);
        if (!await Store.ExistsAsync(key, cancellationToken).ConfigureAwait(false))
        {
            throw new RepositoryException(RepositoryError.NotFound, $"no manifest '{id}' in the repository at {Location}");
        }

        await Store.DeleteAsync(key, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>Throws InvalidArgument unless <paramref name="id"/> is a well-formed manifest id (never a path).</summary>
    public static void RequireManifestId(string id)
    {
        if (Manifest.ValidateId(id) is { } bad)
        {
            throw new RepositoryException(RepositoryError.InvalidArgument, bad);
        }
    }

    private static void RequireKey(ReadOnlyMemory<byte> userKey, string location)
    {
        if (userKey.Length < 8)
        {
            throw new RepositoryException(RepositoryError.InvalidArgument, $"the key for the repository at {location} is {userKey.Length} bytes; a repository key needs at least 8 (32 random bytes are best)");
        }
    }
}
