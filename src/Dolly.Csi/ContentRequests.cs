using System.Text.Json;
using System.Text.Json.Serialization;
using Dolly.Nbd;
using Dolly.Storage;
using Dolly.Storage.IO;
using Microsoft.Extensions.Logging;

namespace Dolly.Csi;

/// <summary>Where a content request stands.</summary>
[JsonConverter(typeof(JsonStringEnumConverter<ContentRequestPhase>))]
public enum ContentRequestPhase
{
    /// <summary>Waiting for the volume to be detached.</summary>
    Pending,

    /// <summary>
    /// Being applied: recorded before the engine commit, so that a crash between the commit and the outcome is
    /// finished at the next start (re-applying is harmless: nothing can write to the volume in between).
    /// </summary>
    Applying,

    /// <summary>Applied.</summary>
    Succeeded,

    /// <summary>Not applied and never will be; the volume was not changed.</summary>
    Failed,

    /// <summary>Withdrawn before it was applied.</summary>
    Withdrawn,
}

/// <summary>One request as kept on disk, and its outcome.</summary>
/// <param name="Id">The caller's id.</param>
/// <param name="Volume">The pool name of the volume.</param>
/// <param name="Snapshot">The pool name of the snapshot.</param>
/// <param name="AllowForeign">Whether a snapshot of another lineage may be used.</param>
/// <param name="UnchangedSince">A snapshot of the volume that the volume must still equal when applied; null for none.</param>
/// <param name="Phase">Where it stands.</param>
/// <param name="RequestedAt">When it was made.</param>
/// <param name="CompletedAt">When it succeeded, failed or was withdrawn.</param>
/// <param name="Message">Why it failed, or the last retryable error while pending.</param>
public sealed record ContentRequest(
    string Id,
    string Volume,
    string Snapshot,
    bool AllowForeign,
    string? UnchangedSince,
    ContentRequestPhase Phase,
    DateTimeOffset RequestedAt,
    DateTimeOffset? CompletedAt = null,
    string? Message = null)
{
    /// <summary>True once it can no longer change.</summary>
    [JsonIgnore]
    public bool IsFinished => Phase is ContentRequestPhase.Succeeded or ContentRequestPhase.Failed or ContentRequestPhase.Withdrawn;
}

/// <summary>Why a request was refused outright (nothing recorded).</summary>
public enum ContentRequestRefusal
{
    /// <summary>Malformed fields.</summary>
    Invalid,

    /// <summary>No such volume or snapshot.</summary>
    NotFound,

    /// <summary>The id is taken by a request with other fields.</summary>
    Conflict,

    /// <summary>Not allowed (a snapshot of another lineage without permission, a snapshot that is not one).</summary>
    Precondition,

    /// <summary>Another request for the volume is still pending: retry once it finished or was deleted.</summary>
    Busy,

    /// <summary>The snapshot is larger than the volume.</summary>
    TooLarge,
}

/// <summary>A request refused outright.</summary>
public sealed class ContentRequestException(ContentRequestRefusal refusal, string message) : Exception(message)
{
    /// <summary>Why.</summary>
    public ContentRequestRefusal Refusal { get; } = refusal;
}

/// <summary>
/// "Replace this volume's content with snapshot S once nobody holds it": requests kept durably as one JSON file each
/// in <c>&lt;pool&gt;/content-requests/</c>, applied through <see cref="Pool.ReplaceContent"/> (O(1)) only while
/// <see cref="ExportAttachments"/> shows no client on the volume, and never twice. A pending request is tried when
/// it is made, when the volume's last client lets go, when its status is asked for, and at start-up.
/// </summary>
public sealed partial class ContentRequests : IDisposable
{
    /// <summary>The directory in the pool that holds the requests.</summary>
    public const string DirectoryName = "content-requests";

    private const int MaxIdLength = 128;

    private readonly Pool _pool;
    private readonly ExportAttachments _attachments;
    private readonly TimeProvider _time;
    private readonly ILogger _logger;
    private readonly string _directory;
    private readonly Lock _lock = new();
    private readonly Dictionary<string, ContentRequest> _requests = new(StringComparer.Ordinal);
    private bool _disposed;

    private ContentRequests(Pool pool, ExportAttachments attachments, TimeProvider time, ILogger logger)
    {
        _pool = pool;
        _attachments = attachments;
        _time = time;
        _logger = logger;
        _directory = Path.Combine(pool.Directory, DirectoryName);
    }

    /// <summary>
    /// Loads the pool's requests, finishes one a crash interrupted while it was being applied, tries the pending
    /// ones, and from then on tries a volume's pending request whenever its last client lets go.
    /// </summary>
    public static ContentRequests Open(Pool pool, ExportAttachments attachments, ILogger logger, TimeProvider? time = null)
    {
        ArgumentNullException.ThrowIfNull(pool);
        ArgumentNullException.ThrowIfNull(attachments);
        ArgumentNullException.ThrowIfNull(logger);
        var requests = new ContentRequests(pool, attachments, time ?? TimeProvider.System, logger);
        requests.Load();
        attachments.Released += requests.OnReleased;
        foreach (var r in requests.Unfinished())
        {
            requests.TryApply(r.Id);
        }

        return requests;
    }

    /// <summary>Every request kept, oldest first.</summary>
    public IReadOnlyList<ContentRequest> List()
    {
        lock (_lock)
        {
            return [.. _requests.Values.OrderBy(r => r.RequestedAt).ThenBy(r => r.Id, StringComparer.Ordinal)];
        }
    }

    /// <summary>
    /// Records a request and tries it at once. The same id with the same fields returns the request as it stands.
    /// Throws <see cref="ContentRequestException"/> when it is refused; nothing is recorded then.
    /// </summary>
    public ContentRequest Submit(string id, string volume, string snapshot, bool allowForeign, string? unchangedSince)
    {
        CheckId(id);
        unchangedSince = string.IsNullOrEmpty(unchangedSince) ? null : unchangedSince;
        lock (_lock)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            if (_requests.TryGetValue(id, out var existing))
            {
                if (existing.Volume != volume || existing.Snapshot != snapshot || existing.AllowForeign != allowForeign || existing.UnchangedSince != unchangedSince)
                {
                    throw new ContentRequestException(ContentRequestRefusal.Conflict, $"request '{id}' exists with other fields (volume '{existing.Volume}', snapshot '{existing.Snapshot}')");
                }
            }
            else
            {
                Check(id, volume, snapshot, allowForeign, unchangedSince);
                var request = new ContentRequest(id, volume, snapshot, allowForeign, unchangedSince, ContentRequestPhase.Pending, _time.GetUtcNow());
                Save(request);
                ContentRequestLog.Recorded(_logger, id, volume, snapshot);
            }
        }

        TryApply(id);
        return Get(id)!;
    }

    /// <summary>
    /// What <see cref="Submit"/> would refuse the request with (a <see cref="ContentRequestException"/>), checked
    /// without recording anything; returns normally when it would be accepted.
    /// </summary>
    public void Validate(string id, string volume, string snapshot, bool allowForeign, string? unchangedSince)
    {
        CheckId(id);
        unchangedSince = string.IsNullOrEmpty(unchangedSince) ? null : unchangedSince;
        lock (_lock)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            if (!_requests.ContainsKey(id))
            {
                Check(id, volume, snapshot, allowForeign, unchangedSince);
            }
        }
    }

    private static void CheckId(string id)
    {
        if (string.IsNullOrEmpty(id) || id.Length > MaxIdLength || !id.All(c => char.IsAsciiLetterOrDigit(c) || c is '.' or '_' or '-') || id is "." or "..")
        {
            throw new ContentRequestException(ContentRequestRefusal.Invalid, $"request id '{id}' must be 1 to {MaxIdLength} characters of A-Z, a-z, 0-9, '.', '_' and '-'");
        }
    }

    /// <summary>A request as it stands (a pending one is tried first), or null when none has that id.</summary>
    public ContentRequest? Get(string id)
    {
        ContentRequest? r;
        lock (_lock)
        {
            _requests.TryGetValue(id, out r);
        }

        if (r is { IsFinished: false })
        {
            TryApply(id);
            lock (_lock)
            {
                _requests.TryGetValue(id, out r);
            }
        }

        return r;
    }

    /// <summary>
    /// Withdraws a pending request or forgets a finished one; returns what became of it (null when there was none).
    /// A request being applied right now is waited for: the answer then says it succeeded or failed.
    /// </summary>
    public ContentRequest? Delete(string id)
    {
        // Applying holds the lock from its first record to its outcome, so a request is never withdrawn half-way.
        lock (_lock)
        {
            if (!_requests.TryGetValue(id, out var r))
            {
                return null;
            }

            var final = r.IsFinished ? r : r with { Phase = ContentRequestPhase.Withdrawn, CompletedAt = _time.GetUtcNow(), Message = "withdrawn before it was applied" };
            Forget(id);
            if (!r.IsFinished)
            {
                ContentRequestLog.Withdrawn(_logger, id, r.Volume);
            }

            return final;
        }
    }

    /// <summary>Whether the pool has a volume of that name.</summary>
    public bool VolumeExists(string volume) => _pool.GetDevice(volume) is { IsOk: true, Value.Kind: DeviceKind.Volume };

    /// <summary>Who holds a volume now.</summary>
    public IReadOnlyList<ExportHolder> HoldersOf(string volume) => _attachments.HoldersOf(volume);

    /// <inheritdoc />
    public void Dispose()
    {
        lock (_lock)
        {
            _disposed = true;
        }

        _attachments.Released -= OnReleased;
    }

    private void OnReleased(string export)
    {
        // On the thread of the connection that closed: the work goes elsewhere.
        List<string> ids;
        lock (_lock)
        {
            if (_disposed)
            {
                return;
            }

            ids = [.. _requests.Values.Where(r => !r.IsFinished && r.Volume == export).Select(r => r.Id)];
        }

        if (ids.Count > 0)
        {
            _ = Task.Run(() =>
            {
                foreach (var id in ids)
                {
                    TryApply(id);
                }
            });
        }
    }

    private List<ContentRequest> Unfinished()
    {
        lock (_lock)
        {
            return [.. _requests.Values.Where(r => !r.IsFinished).OrderBy(r => r.RequestedAt)];
        }
    }

    /// <summary>Refuses, with nothing recorded, a request that cannot succeed now.</summary>
    private void Check(string id, string volume, string snapshot, bool allowForeign, string? unchangedSince)
    {
        var other = _requests.Values.FirstOrDefault(r => !r.IsFinished && r.Volume == volume);
        if (other is not null)
        {
            throw new ContentRequestException(ContentRequestRefusal.Busy, $"volume '{volume}' already has a pending content request '{other.Id}' (to snapshot '{other.Snapshot}'); delete it first");
        }

        var v = _pool.GetDevice(volume);
        if (!v.IsOk || v.Value.Kind != DeviceKind.Volume)
        {
            throw new ContentRequestException(ContentRequestRefusal.NotFound, $"request '{id}': no volume '{volume}'");
        }

        var s = _pool.GetDevice(snapshot);
        if (!s.IsOk || s.Value.Kind != DeviceKind.Snapshot)
        {
            throw new ContentRequestException(ContentRequestRefusal.NotFound, $"request '{id}': no snapshot '{snapshot}'");
        }

        if (unchangedSince is not null)
        {
            var g = _pool.GetDevice(unchangedSince);
            if (!g.IsOk || g.Value.Kind != DeviceKind.Snapshot || g.Value.SourceId != v.Value.Id)
            {
                throw new ContentRequestException(ContentRequestRefusal.NotFound, $"request '{id}': no snapshot '{unchangedSince}' of volume '{volume}'");
            }
        }

        if (s.Value.Size > v.Value.Size)
        {
            throw new ContentRequestException(ContentRequestRefusal.TooLarge, $"snapshot '{snapshot}' ({s.Value.Size} bytes) is larger than volume '{volume}' ({v.Value.Size} bytes); grow the volume first");
        }

        var check = _pool.CheckReplaceContent(volume, snapshot, allowForeign);
        if (!check.IsOk)
        {
            throw new ContentRequestException(ContentRequestRefusal.Precondition, check.Error.Message);
        }
    }

    /// <summary>Applies a pending request if its volume is detached; does nothing otherwise.</summary>
    private void TryApply(string id)
    {
        ContentRequest? r;
        lock (_lock)
        {
            if (_disposed || !_requests.TryGetValue(id, out r) || r.IsFinished)
            {
                return;
            }
        }

        _attachments.RunDetached(r.Volume, () =>
        {
            lock (_lock)
            {
                // Looked at again under the gate: it may have been applied, withdrawn or forgotten meanwhile.
                if (_disposed || !_requests.TryGetValue(id, out var current) || current.IsFinished)
                {
                    return 0;
                }

                Apply(current);
                return 0;
            }
        });
    }

    /// <summary>Called with the volume's gate and the lock held.</summary>
    private void Apply(ContentRequest r)
    {
        if (r.Phase != ContentRequestPhase.Applying)
        {
            r = r with { Phase = ContentRequestPhase.Applying };
            Save(r);
        }

        if (r.UnchangedSince is { } guard)
        {
            var unchanged = _pool.IsUnchangedSince(r.Volume, guard);
            if (!unchanged.IsOk || !unchanged.Value)
            {
                Finish(r, ContentRequestPhase.Failed, unchanged.IsOk
                    ? $"volume '{r.Volume}' was written after snapshot '{guard}' was taken; its content was not replaced, so nothing written since is lost"
                    : $"cannot tell whether volume '{r.Volume}' changed since snapshot '{guard}': {unchanged.Error.Message}; its content was not replaced");
                return;
            }
        }

        var result = _pool.ReplaceContent(r.Volume, r.Snapshot, r.AllowForeign);
        if (result.IsOk)
        {
            Finish(r, ContentRequestPhase.Succeeded, null);
            ContentRequestLog.Applied(_logger, r.Id, r.Volume, r.Snapshot);
            return;
        }

        if (result.Error.Code is StorageErrorCode.NoSpace or StorageErrorCode.IoError or StorageErrorCode.InUse)
        {
            // Nothing was changed and it may work later: back to pending, with the reason.
            Save(r with { Phase = ContentRequestPhase.Pending, Message = result.Error.Message });
            ContentRequestLog.Retry(_logger, r.Id, result.Error.Message);
            return;
        }

        Finish(r, ContentRequestPhase.Failed, result.Error.Message);
    }

    private void Finish(ContentRequest r, ContentRequestPhase phase, string? message)
    {
        Save(r with { Phase = phase, CompletedAt = _time.GetUtcNow(), Message = message });
        if (phase == ContentRequestPhase.Failed)
        {
            ContentRequestLog.Failed(_logger, r.Id, r.Volume, message ?? string.Empty);
        }
    }

    private string PathOf(string id) => Path.Combine(_directory, id + ".json");

    private void Load()
    {
        if (!Directory.Exists(_directory))
        {
            return;
        }

        foreach (string path in Directory.EnumerateFiles(_directory, "*.json"))
        {
            ContentRequest? r;
            try
            {
                r = JsonSerializer.Deserialize(File.ReadAllText(path), ContentRequestJson.Default.ContentRequest);
            }
            catch (JsonException ex)
            {
                throw new InvalidDataException($"content request file '{path}' is damaged: {ex.Message}", ex);
            }

            if (r is null || Path.GetFileNameWithoutExtension(path) != r.Id)
            {
                throw new InvalidDataException($"content request file '{path}' does not hold the request it is named after");
            }

            _requests[r.Id] = r;
        }
    }

    /// <summary>Writes a request durably (temporary file synced, renamed over the old one, directory synced), then caches it.</summary>
    private void Save(ContentRequest r)
    {
        Directory.CreateDirectory(_directory);
        string path = PathOf(r.Id);
        string temp = path + ".tmp";
        using (var f = new FileStream(temp, FileMode.Create, FileAccess.Write, FileShare.None))
        {
            JsonSerializer.Serialize(f, r, ContentRequestJson.Default.ContentRequest);
            f.Flush(flushToDisk: true);
        }

        File.Move(temp, path, overwrite: true);
        PhysicalFileSystem.Instance.SyncDirectory(_directory);
        _requests[r.Id] = r;
    }

    private void Forget(string id)
    {
        File.Delete(PathOf(id));
        PhysicalFileSystem.Instance.SyncDirectory(_directory);
        _requests.Remove(id);
    }
}

[JsonSerializable(typeof(ContentRequest))]
[JsonSourceGenerationOptions(WriteIndented = true, DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull)]
internal sealed partial class ContentRequestJson : JsonSerializerContext;

internal static partial class ContentRequestLog
{
    [LoggerMessage(1, LogLevel.Information, "content request {Id}: replace volume {Volume} with snapshot {Snapshot} once detached")]
    public static partial void Recorded(ILogger logger, string id, string volume, string snapshot);

    [LoggerMessage(2, LogLevel.Information, "content request {Id}: volume {Volume} now holds the content of snapshot {Snapshot}")]
    public static partial void Applied(ILogger logger, string id, string volume, string snapshot);

    [LoggerMessage(3, LogLevel.Warning, "content request {Id} failed for volume {Volume}: {Message}")]
    public static partial void Failed(ILogger logger, string id, string volume, string message);

    [LoggerMessage(4, LogLevel.Warning, "content request {Id} stays pending: {Message}")]
    public static partial void Retry(ILogger logger, string id, string message);

    [LoggerMessage(5, LogLevel.Information, "content request {Id} for volume {Volume} withdrawn before it was applied")]
    public static partial void Withdrawn(ILogger logger, string id, string volume);
}
