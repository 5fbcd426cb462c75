using System.Runtime.CompilerServices;
using Dolly.Repository.Storage;
using Dolly.Storage;

namespace Dolly.Repository.Tests;

/// <summary>A temporary directory removed at dispose.</summary>
internal sealed class TempDir : IDisposable
{
    public TempDir()
    {
        // tmpfs where present: these tests fsync every object, which a disk shared with other builds makes slow.
        string root = Directory.Exists("/dev/shm") ? "/dev/shm" : System.IO.Path.GetTempPath();
        Path = System.IO.Path.Combine(root, "dolly-repo-test-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(Path);
    }

    public string Path { get; }

    public string Sub(string name) => System.IO.Path.Combine(Path, name);

    public void Dispose() => Directory.Delete(Path, recursive: true);
}

/// <summary>
/// The real directory store with every request counted, and optional fault points: after a number of PUTs of chunks,
/// fail with Unreachable (a server that went away) or cancel a token (a process stopping), or block until released.
/// </summary>
internal sealed class CountingObjectStore(IObjectStore inner) : IObjectStore
{
    private int _chunkPuts;
    private int _chunkPutsStarted;
    private int _heads;
    private int _gets;

    public string Location => inner.Location;

    public int ChunkPuts => Volatile.Read(ref _chunkPuts);

    public int Heads => Volatile.Read(ref _heads);

    public int Gets => Volatile.Read(ref _gets);

    public List<string> PutKeys { get; } = [];

    /// <summary>Chunk PUTs after which every request fails as unreachable (-1: never).</summary>
    public int UnreachableAfterChunkPuts { get; set; } = -1;

    /// <summary>Cancelled when the chunk PUT count reaches <see cref="CancelAtChunkPut"/>.</summary>
    public CancellationTokenSource? CancelSource { get; set; }

    public int CancelAtChunkPut { get; set; } = -1;

    /// <summary>
    /// When set, chunk PUTs started after the first <see cref="PauseAfterChunkPuts"/> wait for it. Counted as they
    /// start, not as they finish: an upload keeps several PUTs in flight, and counting finished ones let all of them
    /// start before the count was reached, so none ever paused.
    /// </summary>
    public TaskCompletionSource? Pause { get; set; }

    public int PauseAfterChunkPuts { get; set; } = -1;

    public TaskCompletionSource Paused { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

    public async Task PutAsync(string key, ReadOnlyMemory<byte> data, CancellationToken cancellationToken)
    {
        FailIfUnreachable(key);
        bool chunk = key.StartsWith("chunks/", StringComparison.Ordinal);
        int started = chunk ? Interlocked.Increment(ref _chunkPutsStarted) : 0;
        if (chunk && Pause is not null && PauseAfterChunkPuts >= 0 && started > PauseAfterChunkPuts)
        {
            Paused.TrySetResult();
            await Pause.Task.WaitAsync(cancellationToken).ConfigureAwait(false);
        }

        await inner.PutAsync(key, data, cancellationToken).ConfigureAwait(false);
        lock (PutKeys)
        {
            PutKeys.Add(key);
        }

        if (chunk && Interlocked.Increment(ref _chunkPuts) == CancelAtChunkPut)
        {
            await CancelSource!.CancelAsync().ConfigureAwait(false);
        }
    }

    public Task<byte[]?> GetAsync(string key, CancellationToken cancellationToken)
    {
        FailIfUnreachable(key);
        Interlocked.Increment(ref _gets);
        return inner.GetAsync(key, cancellationToken);
    }

    public Task<bool> ExistsAsync(string key, CancellationToken cancellationToken)
    {
        FailIfUnreachable(key);
        Interlocked.Increment(ref _heads);
        return inner.ExistsAsync(key, cancellationToken);
    }

    public Task DeleteAsync(string key, CancellationToken cancellationToken)
    {
        FailIfUnreachable(key);
        return inner.DeleteAsync(key, cancellationToken);
    }

    public async IAsyncEnumerable<ObjectInfo> ListAsync(string prefix, [EnumeratorCancellation] CancellationToken cancellationToken)
    {
        FailIfUnreachable(prefix);
        await foreach (var o in inner.ListAsync(prefix, cancellationToken).ConfigureAwait(false))
        {
            yield return o;
        }
    }

    public void ResetCounts()
    {
        Interlocked.Exchange(ref _chunkPuts, 0);
        Interlocked.Exchange(ref _chunkPutsStarted, 0);
        Interlocked.Exchange(ref _heads, 0);
        Interlocked.Exchange(ref _gets, 0);
        lock (PutKeys)
        {
            PutKeys.Clear();
        }
    }

    private void FailIfUnreachable(string key)
    {
        if (UnreachableAfterChunkPuts >= 0 && ChunkPuts >= UnreachableAfterChunkPuts)
        {
            throw new ObjectStoreException(ObjectStoreError.Unreachable, $"test server unreachable ('{key}')");
        }
    }
}

/// <summary>A pool, a directory repository over a counting store, and the upload state directory.</summary>
internal sealed class RepoFixture : IDisposable
{
    public const int Chunk = 1 << 20;

    private RepoFixture(TempDir tmp, Pool pool, CountingObjectStore store, SnapshotRepository repository)
    {
        Tmp = tmp;
        Pool = pool;
        Store = store;
        Repository = repository;
    }

    public static byte[] Key => "correct horse battery staple"u8.ToArray();

    public TempDir Tmp { get; }

    public Pool Pool { get; }

    public CountingObjectStore Store { get; }

    public SnapshotRepository Repository { get; }

    public string RepoDir => Tmp.Sub("repo");

    public string StateDir => Tmp.Sub("state");

    public static async Task<RepoFixture> CreateAsync(int blockSize = 4096, int zstdLevel = 3)
    {
        var tmp = new TempDir();
        var pool = Pool.Create(tmp.Sub("pool"), new PoolCreateOptions { BlockSize = blockSize, JournalSize = 8L << 20 }).Value;
        var store = new CountingObjectStore(DirectoryObjectStore.Create(tmp.Sub("repo")));
        var repo = await SnapshotRepository.InitAsync(store, Key, new RepositoryInitOptions { ChunkSize = Chunk, ZstdLevel = zstdLevel, KdfIterations = 1000 }, TimeProvider.System, TestContext.Current.CancellationToken);
        return new RepoFixture(tmp, pool, store, repo);
    }

    public Transfer.UploadOptions Upload(bool full = false) => new() { StateDirectory = StateDir, Full = full, Parallelism = 4 };

    public Task<Transfer.UploadResult> UploadAsync(string snapshot, Transfer.UploadOptions? options = null) =>
        Transfer.SnapshotUploader.UploadAsync(Repository, Pool, snapshot, options ?? Upload(), TestContext.Current.CancellationToken);

    public Task<Transfer.RestoreResult> RestoreAsync(string manifestId, string volume) =>
        Transfer.SnapshotRestorer.RestoreAsync(Repository, manifestId, Pool, volume, new Transfer.RestoreOptions { Parallelism = 4 }, TestContext.Current.CancellationToken);

    public void Dispose()
    {
        Pool.Dispose();
        Tmp.Dispose();
    }

    /// <summary>Writes random data at each (offset, length), seeded.</summary>
    public void Write(string volume, int seed, params (long Offset, int Length)[] writes)
    {
        var dev = Pool.OpenDevice(volume).Value;
        var rng = new Random(seed);
        foreach (var (offset, length) in writes)
        {
            var data = new byte[length];
            rng.NextBytes(data);
            Assert.True(dev.Write(offset, data).IsOk);
        }
    }

    public byte[] ReadAll(string name)
    {
        var dev = Pool.OpenDevice(name).Value;
        var buf = new byte[dev.Size];
        Assert.True(dev.Read(0, buf).IsOk);
        return buf;
    }
}
