using Dolly.Repository.Format;
using Dolly.Repository.Storage;

namespace Dolly.Repository.Transfer;

/// <summary>One problem found by verify, naming the object.</summary>
public sealed record RepositoryProblem(string Key, string Message)
{
    /// <inheritdoc />
    public override string ToString() => $"{Key}: {Message}";
}

/// <summary>What verify checked and found.</summary>
/// <param name="Manifests">Manifests read and checked.</param>
/// <param name="ChunksStored">Chunk objects listed.</param>
/// <param name="ChunksReferenced">Distinct chunks the manifests reference.</param>
/// <param name="ChunksVerified">Chunks fetched and verified (all, or the sample).</param>
/// <param name="Problems">Missing, corrupt or unreadable objects.</param>
public sealed record VerifyReport(int Manifests, long ChunksStored, long ChunksReferenced, long ChunksVerified, IReadOnlyList<RepositoryProblem> Problems)
{
    /// <summary>True when nothing is wrong.</summary>
    public bool IsClean => Problems.Count == 0;
}

/// <summary>What prune did.</summary>
/// <param name="Manifests">Manifests marked from.</param>
/// <param name="ChunksReferenced">Distinct chunks they reference.</param>
/// <param name="ChunksDeleted">Unreferenced chunks older than the grace, deleted.</param>
/// <param name="BytesDeleted">Their stored bytes.</param>
/// <param name="ChunksKeptYoung">Unreferenced chunks younger than the grace, kept (an upload may be about to reference them).</param>
/// <param name="LiveUploads">Uploads in progress that made prune skip its sweep (nothing deleted when any).</param>
public sealed record PruneReport(int Manifests, long ChunksReferenced, long ChunksDeleted, long BytesDeleted, long ChunksKeptYoung, IReadOnlyList<RepositoryMarker> LiveUploads);

/// <summary>verify and prune.</summary>
public static class RepositoryMaintenance
{
    /// <summary>
    /// Checks every manifest, that every chunk they reference exists, and fetches and verifies a sample of the stored
    /// chunks (<paramref name="samplePercent"/> of them, at random; 100 verifies all).
    /// </summary>
    public static async Task<VerifyReport> VerifyAsync(SnapshotRepository repository, double samplePercent, Random random, IProgress<TransferStatus>? progress, TimeProvider time, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(repository);
        ArgumentNullException.ThrowIfNull(random);
        if (samplePercent is <= 0 or > 100 || double.IsNaN(samplePercent))
        {
            throw new RepositoryException(RepositoryError.InvalidArgument, $"sample {samplePercent}% is not in (0, 100]");
        }

        var problems = new List<RepositoryProblem>();
        var (manifests, referenced) = await MarkAsync(repository, problems, cancellationToken).ConfigureAwait(false);
        var stored = new Dictionary<ChunkId, long>();
        await foreach (var o in repository.Store.ListAsync(ChunkId.KeyPrefix, cancellationToken).ConfigureAwait(false))
        {
            if (ChunkId.TryParseKey(o.Key, out var id))
            {
                stored[id] = o.Size;
            }
            else
            {
                problems.Add(new RepositoryProblem(o.Key, "is not a chunk key (stray object under chunks/)"));
            }
        }

        foreach (var (id, users) in referenced)
        {
            if (!stored.ContainsKey(id))
            {
                problems.Add(new RepositoryProblem(id.Key, $"is missing; manifest(s) {string.Join(", ", users.Take(5))} reference it, so they cannot be restored"));
            }
        }

        var sample = stored.Where(_ => samplePercent >= 100 || random.NextDouble() * 100 < samplePercent).ToList();
        var meter = new TransferMeter(sample.Sum(s => s.Value), progress, time);
        meter.Start();
        var lockObject = new Lock();
        await Parallel.ForEachAsync(sample, new ParallelOptions { MaxDegreeOfParallelism = 8, CancellationToken = cancellationToken }, async (s, ct) =>
        {
            try
            {
                _ = await repository.ReadChunkAsync(s.Key, ct).ConfigureAwait(false);
            }
            catch (RepositoryException ex)
            {
                lock (lockObject)
                {
                    problems.Add(new RepositoryProblem(s.Key.Key, ex.Message));
                }
            }

            meter.Add(s.Value);
        }).ConfigureAwait(false);

        problems.Sort((a, b) => string.CompareOrdinal(a.Key, b.Key));
        return new VerifyReport(manifests.Count, stored.Count, referenced.Count, sample.Count, problems);
    }

    /// <summary>
    /// Deletes chunks no manifest references. Safe while uploads run: it marks a prune in progress and sweeps nothing
    /// while any upload is live (see <see cref="RepositoryMarkers"/>); it keeps unreferenced chunks younger than
    /// <paramref name="grace"/>; and it re-reads the manifest list just before deleting, so a manifest completed
    /// during the mark protects its chunks. A manifest that cannot be read stops the prune (its chunks are unknown).
    /// </summary>
    public static async Task<PruneReport> PruneAsync(SnapshotRepository repository, TimeSpan grace, TimeSpan markerStaleAfter, TimeProvider time, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(repository);
        ArgumentNullException.ThrowIfNull(time);
        if (grace < TimeSpan.Zero)
        {
            throw new RepositoryException(RepositoryError.InvalidArgument, $"grace {grace} is negative");
        }

        var store = repository.Store;
        var started = time.GetUtcNow();
        var existing = await RepositoryMarkers.ReadAsync(store, SnapshotRepository.PruneLockKey, time, cancellationToken).ConfigureAwait(false);
        if (existing is not null && RepositoryMarkers.IsLive(existing, markerStaleAfter, started))
        {
            throw new RepositoryException(RepositoryError.Busy, $"another prune is running on the repository at {store.Location} ({existing})");
        }

        await RepositoryMarkers.WriteAsync(store, SnapshotRepository.PruneLockKey, RepositoryMarkers.Create(RepositoryMarkers.PruneOperation, string.Empty, store.Location, time), cancellationToken).ConfigureAwait(false);
        try
        {
            var live = new List<RepositoryMarker>();
            await foreach (var m in RepositoryMarkers.LiveUploadsAsync(store, markerStaleAfter, time, cancellationToken).ConfigureAwait(false))
            {
                live.Add(m);
            }

            var problems = new List<RepositoryProblem>();
            var (manifests, referenced) = await MarkAsync(repository, problems, cancellationToken).ConfigureAwait(false);
            if (problems.Count > 0)
            {
                throw new RepositoryException(RepositoryError.Corrupt, $"prune stopped before deleting anything: {problems[0]}");
            }

            if (live.Count > 0)
            {
                return new PruneReport(manifests.Count, referenced.Count, 0, 0, 0, live);
            }

            var candidates = new List<ObjectInfo>();
            long young = 0;
            await foreach (var o in store.ListAsync(ChunkId.KeyPrefix, cancellationToken).ConfigureAwait(false))
            {
                if (!ChunkId.TryParseKey(o.Key, out var id) || referenced.ContainsKey(id))
                {
                    continue;
                }

                if (started - o.LastModified < grace)
                {
                    young++;
                }
                else
                {
                    candidates.Add(o);
                }
            }

            // Manifests that appeared since the mark (an upload that finished meanwhile) protect their chunks too.
            await foreach (var id in repository.ListManifestIdsAsync(cancellationToken).ConfigureAwait(false))
            {
                if (!manifests.Contains(id))
                {
                    var m = await repository.RequireManifestAsync(id, cancellationToken).ConfigureAwait(false);
                    manifests.Add(id);
                    foreach (var e in m.Entries)
                    {
                        referenced.TryAdd(e.Chunk, [id]);
                    }
                }
            }

            long deleted = 0, bytes = 0;
            foreach (var o in candidates)
            {
                if (ChunkId.TryParseKey(o.Key, out var id) && !referenced.ContainsKey(id))
                {
                    await store.DeleteAsync(o.Key, cancellationToken).ConfigureAwait(false);
                    deleted++;
                    bytes += o.Size;
                }
            }

            return new PruneReport(manifests.Count, referenced.Count, deleted, bytes, young, []);
        }
        finally
        {
            await store.DeleteAsync(SnapshotRepository.PruneLockKey, CancellationToken.None).ConfigureAwait(false);
        }
    }

    /// <summary>Every manifest id and, for each referenced chunk, the manifests using it; unreadable manifests become problems.</summary>
    private static async Task<(HashSet<string> Manifests, Dictionary<ChunkId, List<string>> Referenced)> MarkAsync(SnapshotRepository repository, List<RepositoryProblem> problems, CancellationToken cancellationToken)
    {
        var manifests = new HashSet<string>(StringComparer.Ordinal);
        var referenced = new Dictionary<ChunkId, List<string>>();
        await foreach (var id in repository.ListManifestIdsAsync(cancellationToken).ConfigureAwait(false))
        {
            Manifest? m;
            try
            {
                m = await repository.GetManifestAsync(id, cancellationToken).ConfigureAwait(false);
            }
            catch (RepositoryException ex)
            {
                problems.Add(new RepositoryProblem(Manifest.KeyOf(id), ex.Message));
                continue;
            }

            if (m is null)
            {
                continue; // deleted between the listing and the read
            }

            manifests.Add(id);
            foreach (var e in m.Entries)
            {
                if (!referenced.TryGetValue(e.Chunk, out var users))
                {
                    referenced[e.Chunk] = users = [];
                }

                if (users.Count == 0 || users[^1] != id)
                {
                    users.Add(id);
                }
            }
        }

        return (manifests, referenced);
    }
}
