using System.Buffers;
using System.Collections.Concurrent;
using Dolly.Repository.Format;
using Dolly.Repository.Storage;
using Dolly.Storage;

namespace Dolly.Repository.Transfer;

/// <summary>How to upload.</summary>
public sealed record UploadOptions
{
    /// <summary>Where this machine keeps its upload journals and the record of completed uploads (per repository).</summary>
    public required string StateDirectory { get; init; }

    /// <summary>Chunks read, sealed and PUT at once (bounds memory to about twice this many chunks).</summary>
    public int Parallelism { get; init; } = 8;

    /// <summary>Upload every chunk with data, ignoring earlier uploads of the lineage (dedup still applies).</summary>
    public bool Full { get; init; }

    /// <summary>Receives bytes done, total and rate after each chunk.</summary>
    public IProgress<TransferStatus>? Progress { get; init; }

    /// <summary>An upload or prune marker not refreshed for this long belongs to a process that died.</summary>
    public TimeSpan MarkerStaleAfter { get; init; } = DefaultMarkerStaleAfter;

    /// <summary>The default of <see cref="MarkerStaleAfter"/>, for prune too: far longer than any gap between marker refreshes.</summary>
    public static TimeSpan DefaultMarkerStaleAfter { get; } = TimeSpan.FromHours(6);

    /// <summary>The clock.</summary>
    public TimeProvider Time { get; init; } = TimeProvider.System;
}

/// <summary>What an upload did.</summary>
/// <param name="Manifest">The manifest written.</param>
/// <param name="Resumed">True when it continued an interrupted upload of the same snapshot.</param>
/// <param name="ChunksRead">Chunks read from the pool (changed or not covered by the parent or the journal).</param>
/// <param name="ChunksPut">Chunks sent.</param>
/// <param name="BytesPut">Bytes sent for chunks (sealed: compressed and encrypted).</param>
/// <param name="ChunksDeduplicated">Chunks read whose content the repository already had (known or found by HEAD).</param>
/// <param name="ChunksFromParent">Unchanged chunks taken from the parent manifest without reading them.</param>
/// <param name="ChunksFromJournal">Chunks an interrupted attempt had already stored.</param>
/// <param name="Elapsed">Wall time.</param>
public sealed record UploadResult(
    Manifest Manifest,
    bool Resumed,
    long ChunksRead,
    long ChunksPut,
    long BytesPut,
    long ChunksDeduplicated,
    long ChunksFromParent,
    long ChunksFromJournal,
    TimeSpan Elapsed);

/// <summary>
/// Uploads a pool snapshot into a repository: incremental against the last snapshot of its lineage that this
/// machine uploaded (the engine's changed-block diff says which chunks to read; unchanged chunks are taken from
/// the parent manifest unread), deduplicated by chunk name, with a bounded number of chunks in flight, resumable
/// from a local journal, and the manifest written last.
/// </summary>
public static class SnapshotUploader
{
    /// <summary>Uploads <paramref name="snapshotName"/> from <paramref name="pool"/>.</summary>
    public static async Task<UploadResult> UploadAsync(SnapshotRepository repository, Pool pool, string snapshotName, UploadOptions options, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(repository);
        ArgumentNullException.ThrowIfNull(pool);
        ArgumentNullException.ThrowIfNull(options);
        var time = options.Time;
        var snapshot = Unwrap(pool.GetDevice(snapshotName));
        if (snapshot.Kind != DeviceKind.Snapshot)
        {
            throw new RepositoryException(RepositoryError.InvalidArgument, $"'{snapshotName}' is a volume; upload a snapshot of it (a volume changes while it is read)");
        }

        int chunkSize = repository.ChunkSize;
        if (chunkSize % pool.BlockSize != 0)
        {
            throw new RepositoryException(RepositoryError.InvalidArgument, $"the repository's {chunkSize}-byte chunks are not a multiple of the pool's {pool.BlockSize}-byte blocks");
        }

        if ((snapshot.Size + chunkSize - 1) / chunkSize > uint.MaxValue)
        {
            throw new RepositoryException(RepositoryError.InvalidArgument, $"snapshot '{snapshotName}' of {snapshot.Size} bytes has more chunks than a manifest indexes");
        }

        if (options.Parallelism < 1)
        {
            throw new RepositoryException(RepositoryError.InvalidArgument, $"parallelism {options.Parallelism} is not positive");
        }

        var state = new UploadState(options.StateDirectory, repository.Id);
        var pending = state.FindPending(pool.Id, snapshot.Id, chunkSize);
        bool resumed = pending is not null;
        string manifestId = pending?.Header.ManifestId ?? Manifest.NewId();
        var done = pending?.Done ?? [];
        var header = pending?.Header ?? new PendingHeader(manifestId, pool.Id, snapshot.Name, snapshot.Id, snapshot.Size, chunkSize, time.GetUtcNow());

        var store = repository.Store;
        string markerKey = SnapshotRepository.UploadsPrefix + manifestId;
        var previousMarker = resumed ? await RepositoryMarkers.ReadAsync(store, markerKey, time, cancellationToken).ConfigureAwait(false) : null;
        await BeginAsync(store, markerKey, manifestId, snapshot, options, cancellationToken).ConfigureAwait(false);
        bool completed = false;
        try
        {
            if (resumed && (previousMarker is null || !RepositoryMarkers.IsLive(previousMarker, options.MarkerStaleAfter, time.GetUtcNow())))
            {
                // The interrupted attempt's marker lapsed or was removed as it stopped, so a prune may have swept
                // chunks its journal lists: trust only those still there (HEAD, not a re-send).
                await DropMissingAsync(store, done, cancellationToken).ConfigureAwait(false);
            }

            var parent = options.Full ? null : await FindParentAsync(repository, pool, snapshot, state, cancellationToken).ConfigureAwait(false);
            var known = new ConcurrentDictionary<ChunkId, byte>();
            foreach (var e in parent?.Manifest.Entries ?? [])
            {
                known.TryAdd(e.Chunk, 0);
            }

            foreach (var id in done.Values)
            {
                if (id is { } chunk)
                {
                    known.TryAdd(chunk, 0);
                }
            }

            var plan = Plan(pool, snapshot, chunkSize, parent, done);
            var meter = new TransferMeter(plan.Work.Sum(i => (long)LengthOf(snapshot.Size, chunkSize, i)), options.Progress, time);
            meter.Start();
            long read = 0, put = 0, bytesPut = 0, deduplicated = 0;
            var results = new ConcurrentDictionary<uint, ChunkId?>();
            using (var journal = state.StartPending(header))
            {
                var device = Unwrap(pool.OpenDevice(snapshot.Name));
                var parallel = new ParallelOptions { MaxDegreeOfParallelism = options.Parallelism, CancellationToken = cancellationToken };
                var refresher = new MarkerRefresher(store, markerKey, () => RepositoryMarkers.Create(RepositoryMarkers.UploadOperation, manifestId, snapshot.Name, time), options.MarkerStaleAfter / 4, time);
                await Parallel.ForEachAsync(plan.Work, parallel, async (index, ct) =>
                {
                    int length = LengthOf(snapshot.Size, chunkSize, index);
                    var buffer = ArrayPool<byte>.Shared.Rent(length);
                    try
                    {
                        var data = buffer.AsMemory(0, length);
                        var readResult = device.Read((long)index * chunkSize, data.Span);
                        if (!readResult.IsOk)
                        {
                            throw new StorageException(readResult.Error);
                        }

                        Interlocked.Increment(ref read);
                        ChunkId? stored = null;
                        if (data.Span.ContainsAnyExcept((byte)0))
                        {
                            var id = repository.ChunkIdOf(data.Span);
                            if (known.ContainsKey(id) || await store.ExistsAsync(id.Key, ct).ConfigureAwait(false))
                            {
                                Interlocked.Increment(ref deduplicated);
                            }
                            else
                            {
                                var sealedChunk = repository.SealChunk(id, data.Span);
                                await store.PutAsync(id.Key, sealedChunk, ct).ConfigureAwait(false);
                                Interlocked.Increment(ref put);
                                Interlocked.Add(ref bytesPut, sealedChunk.Length);
                            }

                            known.TryAdd(id, 0);
                            stored = id;
                        }

                        // Only now, with the chunk stored, is it marked done.
                        journal.Record(index, stored);
                        results[index] = stored;
                        meter.Add(length);
                        await refresher.MaybeRefreshAsync(ct).ConfigureAwait(false);
                    }
                    finally
                    {
                        ArrayPool<byte>.Shared.Return(buffer);
                    }
                }).ConfigureAwait(false);
            }

            var entries = new List<ManifestEntry>(plan.Reused.Count + done.Count + results.Count);
            entries.AddRange(plan.Reused);
            foreach (var (index, id) in done.Concat(results))
            {
                if (id is { } chunk && plan.Wanted.Contains(index))
                {
                    entries.Add(new ManifestEntry(index, chunk));
                }
            }

            entries.Sort((a, b) => a.Index.CompareTo(b.Index));
            var info = new ManifestInfo(
                manifestId, repository.Id, snapshot.SourceName ?? string.Empty, snapshot.Name, pool.Id, snapshot.LineageId, snapshot.Size, chunkSize,
                parent?.Manifest.Info.Id, snapshot.CreatedAt, time.GetUtcNow());
            var manifest = new Manifest(info, entries);
            await repository.PutManifestAsync(manifest, cancellationToken).ConfigureAwait(false);

            state.AddCompleted(new CompletedUpload(manifestId, pool.Id, snapshot.LineageId, snapshot.Name, snapshot.Id, snapshot.CreatedAt, info.Uploaded));
            state.DeletePending(manifestId);
            await store.DeleteAsync(markerKey, cancellationToken).ConfigureAwait(false);
            long fromJournal = done.Count(d => d.Value is not null && plan.Wanted.Contains(d.Key));
            completed = true;
            return new UploadResult(manifest, resumed, read, put, bytesPut, deduplicated, plan.Reused.Count, fromJournal, meter.Elapsed);
        }
        finally
        {
            if (!completed)
            {
                // Let prunes run while this upload is stopped: a rerun finds no live marker and HEADs what its
                // journal lists before trusting it.
                await TryDeleteAsync(store, markerKey).ConfigureAwait(false);
            }
        }
    }

    private static async Task TryDeleteAsync(IObjectStore store, string key)
    {
        try
        {
            await store.DeleteAsync(key, CancellationToken.None).ConfigureAwait(false);
        }
        catch (ObjectStoreException)
        {
            // The store is why the upload stopped; the marker then lapses after the stale limit instead.
        }
    }

    private static async Task BeginAsync(IObjectStore store, string markerKey, string manifestId, DeviceInfo snapshot, UploadOptions options, CancellationToken cancellationToken)
    {
        // Marker first, then look for a prune: see RepositoryMarkers for why this order keeps the two apart.
        await RepositoryMarkers.WriteAsync(store, markerKey, RepositoryMarkers.Create(RepositoryMarkers.UploadOperation, manifestId, snapshot.Name, options.Time), cancellationToken).ConfigureAwait(false);
        var prune = await RepositoryMarkers.ReadAsync(store, SnapshotRepository.PruneLockKey, options.Time, cancellationToken).ConfigureAwait(false);
        if (prune is not null && RepositoryMarkers.IsLive(prune, options.MarkerStaleAfter, options.Time.GetUtcNow()))
        {
            await store.DeleteAsync(markerKey, cancellationToken).ConfigureAwait(false);
            throw new RepositoryException(RepositoryError.Busy, $"a prune is running on the repository at {store.Location} ({prune}); upload again when it ends (nothing was uploaded)");
        }
    }

    /// <summary>Rewrites an upload's marker now and then, so a long upload never looks dead to a prune.</summary>
    private sealed class MarkerRefresher(IObjectStore store, string key, Func<RepositoryMarker> marker, TimeSpan every, TimeProvider time)
    {
        private long _last = time.GetTimestamp();

        public async Task MaybeRefreshAsync(CancellationToken cancellationToken)
        {
            long seen = Volatile.Read(ref _last);
            if (time.GetElapsedTime(seen) < every || Interlocked.CompareExchange(ref _last, time.GetTimestamp(), seen) != seen)
            {
                return;
            }

            await RepositoryMarkers.WriteAsync(store, key, marker(), cancellationToken).ConfigureAwait(false);
        }
    }

    private static async Task DropMissingAsync(IObjectStore store, Dictionary<uint, ChunkId?> done, CancellationToken cancellationToken)
    {
        var verified = new HashSet<ChunkId>();
        foreach (var (index, id) in done.ToList())
        {
            if (id is not { } chunk || verified.Contains(chunk))
            {
                continue;
            }

            if (await store.ExistsAsync(chunk.Key, cancellationToken).ConfigureAwait(false))
            {
                verified.Add(chunk);
            }
            else
            {
                done.Remove(index);
            }
        }
    }

    private sealed record Parent(Manifest Manifest, string Snapshot);

    /// <summary>
    /// The newest snapshot of the lineage this machine uploaded to this repository that still exists in the pool
    /// (same device id: a name reused by another snapshot is not it) and whose manifest is still in the repository.
    /// </summary>
    private static async Task<Parent?> FindParentAsync(SnapshotRepository repository, Pool pool, DeviceInfo snapshot, UploadState state, CancellationToken cancellationToken)
    {
        var candidates = state.LoadCompleted()
            .Where(u => u.PoolId == pool.Id && u.LineageId == snapshot.LineageId && u.SnapshotId != snapshot.Id)
            .OrderByDescending(u => u.SnapshotCreated);
        foreach (var c in candidates)
        {
            var device = pool.GetDevice(c.Snapshot);
            if (!device.IsOk || device.Value.Id != c.SnapshotId || device.Value.Kind != DeviceKind.Snapshot)
            {
                continue;
            }

            var manifest = await repository.GetManifestAsync(c.ManifestId, cancellationToken).ConfigureAwait(false);
            if (manifest is not null && manifest.Info.ChunkSize == repository.ChunkSize)
            {
                return new Parent(manifest, c.Snapshot);
            }
        }

        return null;
    }

    private sealed record UploadPlan(List<uint> Work, List<ManifestEntry> Reused, HashSet<uint> Wanted);

    /// <summary>
    /// Which chunks to read: those with data that neither the journal (done by an interrupted attempt) nor the parent
    /// (unchanged since the parent snapshot, same length) accounts for. Chunks with no allocated block read as zeros
    /// and are left out of the manifest without being read.
    /// </summary>
    private static UploadPlan Plan(Pool pool, DeviceInfo snapshot, int chunkSize, Parent? parent, Dictionary<uint, ChunkId?> done)
    {
        var wanted = ChunkIndexes(Unwrap(pool.GetAllocatedRanges(snapshot.Name)), chunkSize);
        var changed = parent is null ? null : ChunkIndexes(Unwrap(pool.GetChangedRanges(parent.Snapshot, snapshot.Name)), chunkSize);
        var work = new List<uint>();
        var reused = new List<ManifestEntry>();
        foreach (uint index in wanted.Order())
        {
            if (done.ContainsKey(index))
            {
                continue;
            }

            if (parent is not null && !changed!.Contains(index) &&
                parent.Manifest.Info.Size > (long)index * chunkSize &&
                parent.Manifest.RangeOf(index).Length == LengthOf(snapshot.Size, chunkSize, index))
            {
                // Same content as in the parent: its entry, or none when the parent held zeros there.
                if (parent.Manifest.Find((long)index * chunkSize) is { } entry)
                {
                    reused.Add(entry);
                }

                continue;
            }

            work.Add(index);
        }

        return new UploadPlan(work, reused, wanted);
    }

    private static HashSet<uint> ChunkIndexes(IReadOnlyList<ByteRange> ranges, int chunkSize)
    {
        var set = new HashSet<uint>();
        foreach (var r in ranges)
        {
            for (long i = r.Offset / chunkSize; i <= (r.End - 1) / chunkSize; i++)
            {
                set.Add((uint)i);
            }
        }

        return set;
    }

    private static int LengthOf(long size, int chunkSize, uint index) => (int)Math.Min(chunkSize, size - ((long)index * chunkSize));

    private static T Unwrap<T>(Result<T> result) => result.IsOk ? result.Value : throw new StorageException(result.Error);
}
