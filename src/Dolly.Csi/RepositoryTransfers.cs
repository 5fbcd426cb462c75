using Dolly.Repository;
using Dolly.Repository.Storage;
using Dolly.Repository.Transfer;
using Dolly.Storage;
using Dolly.V1;
using Microsoft.Extensions.Logging;
using RepositoryStatus = Dolly.Repository.Transfer.TransferStatus;

namespace Dolly.Csi;

/// <summary>
/// The uploads and restores this driver runs for the controllers (dolly.v1.SnapshotRepositoryService): at most one
/// per pool snapshot (uploads) and one per repository handle (restores), in the background, with their progress
/// kept in memory. Nothing here needs to survive a restart: an upload resumes from its journal in
/// <see cref="StateDirectory"/> when asked again, and a restore only becomes visible (a pool snapshot named by the
/// handle) once complete, so asking again after a restart starts it afresh.
/// </summary>
internal sealed partial class RepositoryTransfers : IAsyncDisposable
{
    /// <summary>Chunks in flight per transfer.</summary>
    private const int Parallelism = 4;

    /// <summary>How long a finished transfer is remembered for its caller to read the outcome.</summary>
    private static readonly TimeSpan KeepFinished = TimeSpan.FromHours(1);

    /// <summary>The suffix of the volume a restore writes before it becomes the handle's snapshot.</summary>
    private const string RestoringSuffix = ".restoring";

    private readonly Pool _pool;
    private readonly TimeProvider _time;
    private readonly ILogger _logger;
    private readonly Lock _gate = new();
    private readonly Dictionary<string, Run> _uploads = new(StringComparer.Ordinal);
    private readonly Dictionary<string, Run> _restores = new(StringComparer.Ordinal);
    private readonly CancellationTokenSource _stopping = new();

    public RepositoryTransfers(Pool pool, string stateDirectory, TimeProvider time, ILogger<RepositoryTransfers> logger)
    {
        _pool = pool;
        StateDirectory = stateDirectory;
        _time = time;
        _logger = logger;
    }

    /// <summary>Where upload journals and the record of uploads (per repository) are kept.</summary>
    public string StateDirectory { get; }

    /// <summary>Opens (or, with <paramref name="create"/>, creates) a repository and answers its id and, optionally, usage.</summary>
    public async Task<ProbeRepositoryResponse> ProbeAsync(RepositoryLocation location, bool create, bool usage, CancellationToken ct)
    {
        using var store = OpenStore(location, create);
        SnapshotRepository repository;
        bool created = false;
        try
        {
            repository = await SnapshotRepository.OpenAsync(store.Store, location.Key.Memory, ct).ConfigureAwait(false);
        }
        catch (RepositoryException ex) when (ex.Error == RepositoryError.NotARepository && create)
        {
            try
            {
                repository = await SnapshotRepository.InitAsync(store.Store, location.Key.Memory, new RepositoryInitOptions(), _time, ct).ConfigureAwait(false);
                created = true;
                Log.RepositoryCreated(_logger, location.Name, store.Store.Location, repository.Id);
            }
            catch (RepositoryException again) when (again.Error == RepositoryError.AlreadyExists)
            {
                // Another probe created it meanwhile.
                repository = await SnapshotRepository.OpenAsync(store.Store, location.Key.Memory, ct).ConfigureAwait(false);
            }
        }

        var response = new ProbeRepositoryResponse { RepositoryId = IdOf(repository), ChunkSize = repository.ChunkSize, Created = created, Location = repository.Location };
        if (usage)
        {
            var u = new RepositoryUsage();
            await foreach (var o in store.Store.ListAsync("chunks/", ct).ConfigureAwait(false))
            {
                u.ChunkCount++;
                u.BytesStored += o.Size;
            }

            await foreach (var _ in repository.ListManifestIdsAsync(ct).ConfigureAwait(false))
            {
                u.ManifestCount++;
            }

            response.Usage = u;
        }

        return response;
    }

    /// <summary>Starts (or resumes) the upload of a pool snapshot, or answers the one known.</summary>
    public Transfer StartUpload(RepositoryLocation location, string snapshotId, string expectedRepositoryId)
    {
        if (_pool.GetDevice(snapshotId) is not { IsOk: true, Value.Kind: DeviceKind.Snapshot })
        {
            throw new TransferRefusedException(TransferRefusal.NotFound, $"the pool has no snapshot '{snapshotId}'");
        }

        var store = OpenStore(location, create: false);
        lock (_gate)
        {
            Forget(_uploads);
            if (_uploads.TryGetValue(snapshotId, out var known) && known.Phase != TransferPhase.Failed)
            {
                store.Dispose();
                return known.Location == store.Store.Location
                    ? known.ToTransfer()
                    : throw new TransferRefusedException(TransferRefusal.Busy, $"snapshot '{snapshotId}' is being uploaded to {known.Location}, not {store.Store.Location}");
            }

            var run = new Run(snapshotId, store.Store.Location, _time);
            _uploads[snapshotId] = run;
            run.Task = Task.Run(() => UploadAsync(run, store, location, expectedRepositoryId), CancellationToken.None);
            return run.ToTransfer();
        }
    }

    /// <summary>Starts (or resumes) restoring a handle into the pool snapshot named by it, or answers the one known.</summary>
    public Transfer StartRestore(RepositoryLocation location, string handle)
    {
        if (!RepositoryHandles.TryParse(handle, out string repositoryId, out string manifestId, out string problem))
        {
            throw new TransferRefusedException(TransferRefusal.Invalid, problem);
        }

        var store = OpenStore(location, create: false);
        lock (_gate)
        {
            Forget(_restores);
            if (_restores.TryGetValue(handle, out var known) && known.Phase != TransferPhase.Failed)
            {
                store.Dispose();
                return known.ToTransfer();
            }

            var run = new Run(handle, store.Store.Location, _time) { Handle = handle };
            if (_pool.GetDevice(handle) is { IsOk: true } existing)
            {
                // Restored before (by an earlier run or process): nothing to fetch.
                store.Dispose();
                run.Succeed(handle, existing.Value.Size);
                _restores[handle] = run;
                return run.ToTransfer();
            }

            _restores[handle] = run;
            run.Task = Task.Run(() => RestoreAsync(run, store, location, repositoryId, manifestId), CancellationToken.None);
            return run.ToTransfer();
        }
    }

    public Transfer? GetUpload(string snapshotId) => Get(_uploads, snapshotId);

    public Transfer? GetRestore(string handle) => Get(_restores, handle);

    public async ValueTask DisposeAsync()
    {
        await _stopping.CancelAsync().ConfigureAwait(false);
        Task[] running;
        lock (_gate)
        {
            running = [.. _uploads.Values.Concat(_restores.Values).Select(r => r.Task).OfType<Task>()];
        }

        await Task.WhenAll(running).ConfigureAwait(false);
        _stopping.Dispose();
    }

    private Transfer? Get(Dictionary<string, Run> runs, string id)
    {
        lock (_gate)
        {
            Forget(runs);
            return runs.TryGetValue(id, out var run) ? run.ToTransfer() : null;
        }
    }

    private void Forget(Dictionary<string, Run> runs)
    {
        var now = _time.GetUtcNow();
        foreach (var (id, run) in runs.Where(r => r.Value.CompletedAt is { } done && now - done > KeepFinished).ToList())
        {
            runs.Remove(id);
        }
    }

    private async Task UploadAsync(Run run, OwnedStore store, RepositoryLocation location, string expectedRepositoryId)
    {
        using (store)
        {
            try
            {
                var repository = await SnapshotRepository.OpenAsync(store.Store, location.Key.Memory, _stopping.Token).ConfigureAwait(false);
                if (expectedRepositoryId.Length > 0 && IdOf(repository) != expectedRepositoryId)
                {
                    run.Fail("WrongRepository", $"{repository.Location} holds repository {IdOf(repository)}, not {expectedRepositoryId} that SnapshotRepository {location.Name} was found to be; nothing was uploaded", _time);
                    return;
                }

                var options = new UploadOptions { StateDirectory = StateDirectory, Parallelism = Parallelism, Progress = run, Time = _time };
                var result = await SnapshotUploader.UploadAsync(repository, _pool, run.SnapshotId, options, _stopping.Token).ConfigureAwait(false);
                run.Succeed(RepositoryHandles.Format(IdOf(repository), result.Manifest.Info.Id), null);
                Log.Uploaded(_logger, run.SnapshotId, repository.Location, result.Manifest.Info.Id, result.ChunksPut, result.BytesPut);
            }
            catch (Exception ex) when (Classify(ex) is { } failure)
            {
                run.Fail(failure.Reason, failure.Message, _time);
                Log.TransferFailed(_logger, "upload", run.SnapshotId, run.Location, failure.Message);
            }
        }
    }

    private async Task RestoreAsync(Run run, OwnedStore store, RepositoryLocation location, string repositoryId, string manifestId)
    {
        string handle = run.SnapshotId;
        string volume = handle + RestoringSuffix;
        using (store)
        {
            try
            {
                var repository = await SnapshotRepository.OpenAsync(store.Store, location.Key.Memory, _stopping.Token).ConfigureAwait(false);
                if (IdOf(repository) != repositoryId)
                {
                    run.Fail("WrongRepository", $"{repository.Location} (SnapshotRepository {location.Name}) holds repository {IdOf(repository)}, but handle {handle} names repository {repositoryId}; nothing was restored", _time);
                    return;
                }

                // A restore a crash or a failure cut short left its volume: it is incomplete, start again.
                if (_pool.GetDevice(volume).IsOk)
                {
                    Check(_pool.Delete(volume));
                }

                var options = new RestoreOptions { Parallelism = Parallelism, Progress = run, Time = _time };
                var restored = await SnapshotRestorer.RestoreAsync(repository, manifestId, _pool, volume, options, _stopping.Token).ConfigureAwait(false);

                // Only a complete, verified copy gets the handle's name; then the working volume goes.
                var snapshot = Check(_pool.CreateSnapshot(volume, handle));
                Check(_pool.Delete(volume));
                run.Succeed(handle, snapshot.Size);
                Log.Restored(_logger, handle, repository.Location, restored.ChunksFetched, restored.BytesWritten);
            }
            catch (Exception ex) when (Classify(ex) is { } failure)
            {
                run.Fail(failure.Reason, failure.Message, _time);
                Log.TransferFailed(_logger, "restore", handle, run.Location, failure.Message);
            }
        }
    }

    private static T Check<T>(Result<T> result) => result.IsOk ? result.Value : throw new StorageException(result.Error);

    private static void Check(Result result)
    {
        if (!result.IsOk)
        {
            throw new StorageException(result.Error);
        }
    }

    private static string IdOf(SnapshotRepository repository) => repository.Id.ToString("N");

    /// <summary>
    /// The reason word and message of a transfer's failure. Anything unforeseen is reported too (as Other, and
    /// logged with its stack): a transfer must end as Failed rather than stay Running with nobody to tell.
    /// </summary>
    private (string Reason, string Message)? Classify(Exception ex) => ex switch
    {
        OperationCanceledException when _stopping.IsCancellationRequested => ("Stopped", "the driver stopped before the transfer finished; ask again to resume"),
        RepositoryException r => (r.Error.ToString(), r.Message),
        ObjectStoreException o => (o.Error == ObjectStoreError.Other ? "ObjectStore" : o.Error.ToString(), o.Message),
        StorageException s => ("Storage", s.Message),
        IOException io => ("Storage", io.Message),
        OperationCanceledException => ("Unreachable", "the object store did not answer in time"),
        _ => Unforeseen(ex),
    };

    private (string Reason, string Message) Unforeseen(Exception ex)
    {
        Log.Unforeseen(_logger, ex);
        return ("Other", $"{ex.GetType().Name}: {ex.Message}");
    }

    /// <summary>The store named by <paramref name="location"/>; a malformed location is refused (InvalidArgument).</summary>
    internal static OwnedStore OpenStore(RepositoryLocation location, bool create)
    {
        string name = location.Name.Length > 0 ? $"SnapshotRepository {location.Name}: " : string.Empty;
        if (location.Key.Length < 8)
        {
            throw new TransferRefusedException(TransferRefusal.Invalid, $"{name}the key is {location.Key.Length} bytes; a repository key needs at least 8 (32 random bytes are best)");
        }

        switch (location.StoreCase)
        {
            case RepositoryLocation.StoreOneofCase.Directory:
                string path = location.Directory.Path;
                if (!Path.IsPathFullyQualified(path))
                {
                    throw new TransferRefusedException(TransferRefusal.Invalid, $"{name}directory '{path}' is not an absolute path");
                }

                return new OwnedStore(create ? DirectoryObjectStore.Create(path) : new DirectoryObjectStore(path), null);
            case RepositoryLocation.StoreOneofCase.S3:
                var s3 = location.S3;
                if (!Uri.TryCreate(s3.Endpoint, UriKind.Absolute, out var endpoint))
                {
                    throw new TransferRefusedException(TransferRefusal.Invalid, $"{name}endpoint '{s3.Endpoint}' is not an absolute http:// or https:// URL");
                }

                var options = new S3ObjectStoreOptions
                {
                    Endpoint = endpoint,
                    Region = s3.Region.Length > 0 ? s3.Region : "us-east-1",
                    Bucket = s3.Bucket,
                    Prefix = s3.Prefix,
                    AccessKey = s3.AccessKeyId,
                    SecretKey = s3.SecretAccessKey,
                    ForcePathStyle = s3.PathStyle,
                };
                if (options.Validate() is { Count: > 0 } problems)
                {
                    throw new TransferRefusedException(TransferRefusal.Invalid, name + string.Join("; ", problems));
                }

                var store = new S3ObjectStore(options);
                return new OwnedStore(store, store);
            default:
                throw new TransferRefusedException(TransferRefusal.Invalid, $"{name}no store: give a directory or an S3 bucket");
        }
    }

    /// <summary>A store and what to dispose with it (the S3 client).</summary>
    internal sealed class OwnedStore(IObjectStore store, IDisposable? owned) : IDisposable
    {
        public IObjectStore Store => store;

        public void Dispose() => owned?.Dispose();
    }

    /// <summary>One transfer; it is also the progress sink of the uploader or restorer running it.</summary>
    private sealed class Run(string snapshotId, string location, TimeProvider time) : IProgress<RepositoryStatus>
    {
        private readonly Lock _gate = new();
        private RepositoryStatus _progress;

        public string SnapshotId => snapshotId;

        public string Location => location;

        public Task? Task { get; set; }

        public string? Handle { get; set; }

        public TransferPhase Phase { get; private set; } = TransferPhase.Running;

        public DateTimeOffset StartedAt { get; } = time.GetUtcNow();

        public DateTimeOffset? CompletedAt { get; private set; }

        private string _message = string.Empty;
        private string _reason = string.Empty;

        public void Report(RepositoryStatus value)
        {
            lock (_gate)
            {
                _progress = value;
            }
        }

        public void Succeed(string handle, long? size)
        {
            lock (_gate)
            {
                Handle = handle;
                Phase = TransferPhase.Succeeded;
                CompletedAt = time.GetUtcNow();
                if (size is { } s && _progress.BytesTotal == 0)
                {
                    _progress = new RepositoryStatus(s, s, 0);
                }
            }
        }

        public void Fail(string reason, string message, TimeProvider clock)
        {
            lock (_gate)
            {
                Phase = TransferPhase.Failed;
                _reason = reason;
                _message = message;
                CompletedAt = clock.GetUtcNow();
            }
        }

        public Transfer ToTransfer()
        {
            lock (_gate)
            {
                var t = new Transfer
                {
                    SnapshotId = snapshotId,
                    Phase = Phase,
                    BytesDone = _progress.BytesDone,
                    BytesTotal = _progress.BytesTotal,
                    BytesPerSecond = _progress.BytesPerSecond,
                    RepositoryHandle = Handle ?? string.Empty,
                    Message = _message,
                    Reason = _reason,
                    StartedAt = Google.Protobuf.WellKnownTypes.Timestamp.FromDateTimeOffset(StartedAt),
                    Location = location,
                };
                if (CompletedAt is { } done)
                {
                    t.CompletedAt = Google.Protobuf.WellKnownTypes.Timestamp.FromDateTimeOffset(done);
                }

                return t;
            }
        }
    }

    private static partial class Log
    {
        [LoggerMessage(Level = LogLevel.Information, Message = "created repository {Id} for SnapshotRepository {Name} at {Location}")]
        public static partial void RepositoryCreated(ILogger logger, string name, string location, Guid id);

        [LoggerMessage(Level = LogLevel.Information, Message = "uploaded snapshot {Snapshot} to {Location} as manifest {Manifest}: {Chunks} chunk(s), {Bytes} byte(s) sent")]
        public static partial void Uploaded(ILogger logger, string snapshot, string location, string manifest, long chunks, long bytes);

        [LoggerMessage(Level = LogLevel.Information, Message = "restored {Handle} from {Location}: {Chunks} chunk(s), {Bytes} byte(s) written")]
        public static partial void Restored(ILogger logger, string handle, string location, long chunks, long bytes);

        [LoggerMessage(Level = LogLevel.Warning, Message = "{Operation} of {Snapshot} with {Location} failed: {Message}")]
        public static partial void TransferFailed(ILogger logger, string operation, string snapshot, string location, string message);

        [LoggerMessage(Level = LogLevel.Error, Message = "a transfer failed unexpectedly")]
        public static partial void Unforeseen(ILogger logger, Exception exception);
    }
}

/// <summary>Why a transfer request was refused before anything started.</summary>
internal enum TransferRefusal
{
    Invalid,
    NotFound,
    Busy,
}

/// <summary>A transfer request refused before anything started.</summary>
internal sealed class TransferRefusedException(TransferRefusal refusal, string message) : Exception(message)
{
    public TransferRefusal Refusal => refusal;
}
