using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;
using Dolly.Repository.Format;
using Dolly.Storage.IO;

namespace Dolly.Repository.Transfer;

/// <summary>The first line of a pending upload's journal: which upload of which snapshot it is.</summary>
internal sealed record PendingHeader(string ManifestId, Guid PoolId, string Snapshot, ulong SnapshotId, long Size, int ChunkSize, DateTimeOffset Started);

/// <summary>A completed upload, the candidates for the base of the next incremental upload of a lineage.</summary>
internal sealed record CompletedUpload(string ManifestId, Guid PoolId, ulong LineageId, string Snapshot, ulong SnapshotId, DateTimeOffset SnapshotCreated, DateTimeOffset Uploaded);

/// <summary>
/// What a machine remembers about its uploads to one repository, in <c>STATE/REPOSITORY-ID/</c>:
/// <code>
/// MANIFEST-ID.pending   journal of an upload in progress, append-only text:
///                         line 1   JSON PendingHeader (manifest id, pool id, snapshot name and id, size, chunk size)
///                         then     "INDEX HEX64\n" (chunk INDEX is stored as chunk HEX64) or "INDEX zero\n"
///                       a line is appended and fsynced only after its chunk's PUT (or HEAD) succeeded, so
///                       nothing is marked done that is not stored; a torn last line is ignored on resume.
/// uploaded.json         JSON array of CompletedUpload, replaced atomically (temp, fsync, rename, fsync dir)
/// </code>
/// Losing this directory costs only efficiency: the next upload is full (or re-reads chunks the journal would
/// have skipped) and its HEAD checks still avoid re-sending stored chunks.
/// </summary>
internal sealed class UploadState
{
    private const string PendingSuffix = ".pending";
    private const string CompletedFile = "uploaded.json";
    private const string ZeroMark = "zero";

    private readonly string _directory;

    public UploadState(string stateDirectory, Guid repositoryId)
    {
        _directory = Path.Combine(stateDirectory, repositoryId.ToString("N"));
    }

    public string Directory => _directory;

    public IReadOnlyList<CompletedUpload> LoadCompleted()
    {
        string path = Path.Combine(_directory, CompletedFile);
        if (!File.Exists(path))
        {
            return [];
        }

        try
        {
            return JsonSerializer.Deserialize(File.ReadAllBytes(path), StateJson.Default.ListCompletedUpload) ?? [];
        }
        catch (JsonException ex)
        {
            throw new RepositoryException(RepositoryError.Corrupt, $"the upload record '{path}' is not valid JSON ({ex.Message}); delete it to make the next upload full");
        }
    }

    public void AddCompleted(CompletedUpload upload)
    {
        var all = LoadCompleted().Where(u => u.ManifestId != upload.ManifestId).Append(upload).ToList();
        System.IO.Directory.CreateDirectory(_directory);
        string path = Path.Combine(_directory, CompletedFile);
        string temp = path + ".tmp";
        using (var f = new FileStream(temp, FileMode.Create, FileAccess.Write))
        {
            f.Write(JsonSerializer.SerializeToUtf8Bytes(all, StateJson.Default.ListCompletedUpload));
            f.Flush(flushToDisk: true);
        }

        File.Move(temp, path, overwrite: true);
        PhysicalFileSystem.Instance.SyncDirectory(_directory);
    }

    /// <summary>The pending upload of a snapshot (by pool and snapshot id), with the chunks it finished.</summary>
    public (PendingHeader Header, Dictionary<uint, ChunkId?> Done)? FindPending(Guid poolId, ulong snapshotId, int chunkSize)
    {
        if (!System.IO.Directory.Exists(_directory))
        {
            return null;
        }

        foreach (var path in System.IO.Directory.EnumerateFiles(_directory, "*" + PendingSuffix))
        {
            var text = File.ReadAllText(path, Encoding.UTF8);
            int firstNewline = text.IndexOf('\n', StringComparison.Ordinal);
            if (firstNewline < 0)
            {
                continue;
            }

            PendingHeader? header;
            try
            {
                header = JsonSerializer.Deserialize(text.AsSpan(0, firstNewline), StateJson.Default.PendingHeader);
            }
            catch (JsonException)
            {
                continue;
            }

            if (header is null || header.PoolId != poolId || header.SnapshotId != snapshotId || header.ChunkSize != chunkSize || Manifest.ValidateId(header.ManifestId) is not null)
            {
                continue;
            }

            var done = new Dictionary<uint, ChunkId?>();
            int at = firstNewline + 1;
            while (at < text.Length)
            {
                int end = text.IndexOf('\n', at);
                if (end < 0)
                {
                    break; // torn last line: its chunk is simply done again
                }

                if (ParseLine(text.AsSpan(at, end - at)) is { } entry)
                {
                    done[entry.Index] = entry.Chunk;
                }

                at = end + 1;
            }

            return (header, done);
        }

        return null;
    }

    public PendingJournal StartPending(PendingHeader header)
    {
        System.IO.Directory.CreateDirectory(_directory);
        string path = PendingPath(header.ManifestId);
        bool exists = File.Exists(path);
        var stream = new FileStream(path, FileMode.Append, FileAccess.Write, FileShare.Read);
        if (!exists)
        {
            stream.Write(JsonSerializer.SerializeToUtf8Bytes(header, StateJson.Default.PendingHeader));
            stream.WriteByte((byte)'\n');
            stream.Flush(flushToDisk: true);
            PhysicalFileSystem.Instance.SyncDirectory(_directory);
        }

        return new PendingJournal(stream);
    }

    public void DeletePending(string manifestId) => File.Delete(PendingPath(manifestId));

    private string PendingPath(string manifestId) => Path.Combine(_directory, manifestId + PendingSuffix);

    private static (uint Index, ChunkId? Chunk)? ParseLine(ReadOnlySpan<char> line)
    {
        int space = line.IndexOf(' ');
        if (space <= 0 || !uint.TryParse(line[..space], NumberStyles.None, CultureInfo.InvariantCulture, out uint index))
        {
            return null;
        }

        var rest = line[(space + 1)..];
        if (rest.SequenceEqual(ZeroMark))
        {
            return (index, null);
        }

        return ChunkId.TryParse(rest.ToString(), out var id) ? (index, id) : null;
    }

    /// <summary>The open journal of an upload in progress.</summary>
    internal sealed class PendingJournal(FileStream stream) : IDisposable
    {
        private readonly Lock _lock = new();

        /// <summary>Records chunk <paramref name="index"/> as stored under <paramref name="chunk"/> (null: all zeros), durably.</summary>
        public void Record(uint index, ChunkId? chunk)
        {
            string line = chunk is { } id
                ? string.Create(CultureInfo.InvariantCulture, $"{index} {id.Hex}\n")
                : string.Create(CultureInfo.InvariantCulture, $"{index} {ZeroMark}\n");
            var bytes = Encoding.ASCII.GetBytes(line);
            lock (_lock)
            {
                stream.Write(bytes);
                stream.Flush(flushToDisk: true);
            }
        }

        public void Dispose() => stream.Dispose();
    }
}

[JsonSourceGenerationOptions(PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase)]
[JsonSerializable(typeof(PendingHeader))]
[JsonSerializable(typeof(List<CompletedUpload>))]
internal sealed partial class StateJson : JsonSerializerContext;
