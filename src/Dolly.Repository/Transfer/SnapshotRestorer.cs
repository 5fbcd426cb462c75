using Dolly.Repository.Format;
using Dolly.Storage;

namespace Dolly.Repository.Transfer;

/// <summary>How to restore.</summary>
public sealed record RestoreOptions
{
    /// <summary>Chunks fetched and verified at once.</summary>
    public int Parallelism { get; init; } = 8;

    /// <summary>Receives bytes done, total and rate after each chunk.</summary>
    public IProgress<TransferStatus>? Progress { get; init; }

    /// <summary>The clock.</summary>
    public TimeProvider Time { get; init; } = TimeProvider.System;
}

/// <summary>What a restore did.</summary>
/// <param name="Volume">The new volume.</param>
/// <param name="Manifest">The manifest restored.</param>
/// <param name="ChunksFetched">Chunks fetched and verified.</param>
/// <param name="BytesWritten">Bytes written into the volume (all-zero blocks are left unallocated).</param>
/// <param name="Elapsed">Wall time.</param>
public sealed record RestoreResult(DeviceInfo Volume, Manifest Manifest, long ChunksFetched, long BytesWritten, TimeSpan Elapsed);

/// <summary>
/// Restores a manifest into a new pool volume, in full. Every chunk goes through
/// <see cref="SnapshotRepository.ReadChunkAsync"/> (tag, length and keyed hash verified) before a byte of it is
/// written; on any failure the new volume is deleted, so a volume of that name exists only if every chunk verified.
/// A lazy restore later uses the same two parts, <see cref="Manifest.Find"/> and ReadChunkAsync, one chunk at a time.
/// </summary>
public static class SnapshotRestorer
{
    /// <summary>Restores manifest <paramref name="manifestId"/> as the new volume <paramref name="volumeName"/>.</summary>
    public static async Task<RestoreResult> RestoreAsync(SnapshotRepository repository, string manifestId, Pool pool, string volumeName, RestoreOptions options, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(repository);
        ArgumentNullException.ThrowIfNull(pool);
        ArgumentNullException.ThrowIfNull(options);
        if (options.Parallelism < 1)
        {
            throw new RepositoryException(RepositoryError.InvalidArgument, $"parallelism {options.Parallelism} is not positive");
        }

        var manifest = await repository.RequireManifestAsync(manifestId, cancellationToken).ConfigureAwait(false);
        var created = pool.CreateVolume(volumeName, manifest.Info.Size);
        if (!created.IsOk)
        {
            throw new StorageException(created.Error);
        }

        var meter = new TransferMeter(manifest.Entries.Sum(e => (long)manifest.RangeOf(e.Index).Length), options.Progress, options.Time);
        long written = 0;
        bool complete = false;
        try
        {
            var device = pool.OpenDevice(volumeName);
            if (!device.IsOk)
            {
                throw new StorageException(device.Error);
            }

            meter.Start();
            int blockSize = pool.BlockSize;
            var parallel = new ParallelOptions { MaxDegreeOfParallelism = options.Parallelism, CancellationToken = cancellationToken };
            await Parallel.ForEachAsync(manifest.Entries, parallel, async (entry, ct) =>
            {
                var (offset, length) = manifest.RangeOf(entry.Index);
                var data = await repository.ReadChunkAsync(entry.Chunk, ct).ConfigureAwait(false);
                if (data.Length != length)
                {
                    throw new RepositoryException(RepositoryError.Corrupt, $"chunk '{entry.Chunk.Key}' holds {data.Length} bytes but manifest {manifestId} needs {length} at offset {offset}");
                }

                Interlocked.Add(ref written, WriteNonZero(device.Value, offset, data, blockSize));
                meter.Add(length);
            }).ConfigureAwait(false);

            var flushed = pool.Flush();
            if (!flushed.IsOk)
            {
                throw new StorageException(flushed.Error);
            }

            complete = true;
        }
        finally
        {
            if (!complete)
            {
                // Best effort on the way out of a failure already being reported: a restore that did not finish
                // must not leave a volume that looks like the snapshot.
                _ = pool.Delete(volumeName);
            }
        }

        var volume = pool.GetDevice(volumeName);
        return new RestoreResult(volume.IsOk ? volume.Value : created.Value, manifest, manifest.Entries.Count, written, meter.Elapsed);
    }

    /// <summary>Writes the runs of blocks that are not all zeros (a new volume reads zeros elsewhere, so it stays thin).</summary>
    private static long WriteNonZero(BlockDevice device, long offset, ReadOnlySpan<byte> data, int blockSize)
    {
        long written = 0;
        int at = 0;
        while (at < data.Length)
        {
            while (at < data.Length && !data.Slice(at, Math.Min(blockSize, data.Length - at)).ContainsAnyExcept((byte)0))
            {
                at += blockSize;
            }

            int start = at;
            while (at < data.Length && data.Slice(at, Math.Min(blockSize, data.Length - at)).ContainsAnyExcept((byte)0))
            {
                at += blockSize;
            }

            at = Math.Min(at, data.Length);
            if (at > start)
            {
                var result = device.Write(offset + start, data[start..at]);
                if (!result.IsOk)
                {
                    throw new StorageException(result.Error);
                }

                written += at - start;
            }
        }

        return written;
    }
}
