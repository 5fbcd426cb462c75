using System.Runtime.CompilerServices;
using System.Text.Json;
using System.Text.Json.Serialization;
using Dolly.Repository.Storage;

namespace Dolly.Repository.Transfer;

/// <summary>A marker object saying who is doing what since when (an upload or a prune).</summary>
/// <param name="Operation">"upload" or "prune".</param>
/// <param name="Id">The manifest id of an upload; empty for a prune.</param>
/// <param name="Host">The machine running it.</param>
/// <param name="ProcessId">Its process id.</param>
/// <param name="Subject">What it works on (a snapshot, for an upload).</param>
/// <param name="Refreshed">When the marker was last written; older than the stale limit means its owner died.</param>
public sealed record RepositoryMarker(string Operation, string Id, string Host, int ProcessId, string Subject, DateTimeOffset Refreshed)
{
    /// <inheritdoc />
    public override string ToString() =>
        FormattableString.Invariant($"{Operation} {Id} of {Subject} by {Host} (pid {ProcessId}), last refreshed {Refreshed:yyyy-MM-dd HH:mm:ss}Z");
}

/// <summary>
/// Keeps prune and uploads apart without a lock server, over any store with read-after-write consistency (S3 is):
/// an upload writes <c>uploads/ID</c> then reads <c>locks/prune</c>; a prune writes <c>locks/prune</c> then lists
/// <c>uploads/</c>. Whichever runs second sees the other (both may see each other; then both back off), so a prune
/// never deletes a chunk an upload in progress found by HEAD or reused from its parent manifest and is about to
/// reference. A marker older than the stale limit belongs to a process that died and is ignored; live owners
/// rewrite theirs well within it.
/// </summary>
internal static class RepositoryMarkers
{
    public const string UploadOperation = "upload";
    public const string PruneOperation = "prune";

    public static RepositoryMarker Create(string operation, string id, string subject, TimeProvider time) =>
        new(operation, id, Environment.MachineName, Environment.ProcessId, subject, time.GetUtcNow());

    public static Task WriteAsync(IObjectStore store, string key, RepositoryMarker marker, CancellationToken cancellationToken) =>
        store.PutAsync(key, JsonSerializer.SerializeToUtf8Bytes(marker, MarkerJson.Default.RepositoryMarker), cancellationToken);

    /// <summary>The marker at <paramref name="key"/>, or null when absent; an unreadable marker counts as live now (never ignore what cannot be read).</summary>
    public static async Task<RepositoryMarker?> ReadAsync(IObjectStore store, string key, TimeProvider time, CancellationToken cancellationToken)
    {
        var bytes = await store.GetAsync(key, cancellationToken).ConfigureAwait(false);
        if (bytes is null)
        {
            return null;
        }

        try
        {
            return JsonSerializer.Deserialize(bytes, MarkerJson.Default.RepositoryMarker)
                ?? new RepositoryMarker("unknown", key, "unknown", 0, "unreadable marker", time.GetUtcNow());
        }
        catch (JsonException)
        {
            return new RepositoryMarker("unknown", key, "unknown", 0, "unreadable marker", time.GetUtcNow());
        }
    }

    /// <summary>Markers of uploads in progress (refreshed within <paramref name="staleAfter"/>).</summary>
    public static async IAsyncEnumerable<RepositoryMarker> LiveUploadsAsync(IObjectStore store, TimeSpan staleAfter, TimeProvider time, [EnumeratorCancellation] CancellationToken cancellationToken)
    {
        var now = time.GetUtcNow();
        await foreach (var o in store.ListAsync(SnapshotRepository.UploadsPrefix, cancellationToken).ConfigureAwait(false))
        {
            var marker = await ReadAsync(store, o.Key, time, cancellationToken).ConfigureAwait(false);
            if (marker is not null && IsLive(marker, staleAfter, now))
            {
                yield return marker;
            }
        }
    }

    public static bool IsLive(RepositoryMarker marker, TimeSpan staleAfter, DateTimeOffset now) => now - marker.Refreshed < staleAfter;
}

[JsonSourceGenerationOptions(PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase)]
[JsonSerializable(typeof(RepositoryMarker))]
internal sealed partial class MarkerJson : JsonSerializerContext;
