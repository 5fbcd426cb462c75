using System.Buffers;
using System.Globalization;
using System.Security.Cryptography;
using System.Text.Json;
using System.Text.Json.Nodes;
using Dolly.Api.Resources;
using Dolly.Api.Semantics;
using Dolly.Api.Storage;
using Microsoft.AspNetCore.Http;

namespace Dolly.Api.Http;

/// <summary>WATCH: chunked, one JSON event per line, resumable from a resourceVersion within the window.</summary>
internal sealed partial class ListWatch
{
    public async Task WatchAsync(HttpContext context, ResourceRequest rr, CancellationToken ct)
    {
        var request = context.Request;
        var type = rr.Type;
        ValidateListOptions(request, watch: true);
        var (labels, fields) = Selectors(request, type);
        var (table, tableVersion) = Negotiate(request);
        bool bookmarks = request.Query["allowWatchBookmarks"].ToString() is "true" or "1";
        string? ns = rr.NamespaceInPath ? rr.Namespace : null;
        string rvParam = request.Query["resourceVersion"].ToString();
        TimeSpan timeout = int.TryParse(request.Query["timeoutSeconds"].ToString(), NumberStyles.None, CultureInfo.InvariantCulture, out int seconds) && seconds > 0
            ? TimeSpan.FromSeconds(seconds)
            : _settings.MinRequestTimeout * (1 + RandomNumberGenerator.GetInt32(1000) / 1000.0);

        bool Matches(JsonObject o) => labels.Matches(o) && fields.Matches(o);

        // An object that starts or stops matching the selectors arrives as ADDED or DELETED, as from kube-apiserver.
        bool Filter(StoreEvent e) =>
            e.Stored.Resource == type.StorageKey && (ns is null || e.Stored.Namespace == ns) &&
            (Matches(e.Stored.Object) || (e.Previous is not null && Matches(e.Previous)));

        var initial = new List<JsonObject>();
        long from;
        if (rvParam is "" or "0")
        {
            var (items, revision) = _store.List(type.StorageKey, ns);
            initial.AddRange(items.Where(i => labels.Matches(i.Object) && fields.Matches(i.Object)).Select(i => i.Object));
            from = revision;
        }
        else
        {
            from = long.Parse(rvParam, CultureInfo.InvariantCulture);
        }

        var response = context.Response;
        response.StatusCode = 200;
        response.ContentType = "application/json";
        response.Headers.CacheControl = "no-cache, private";
        using var subscription = _store.Subscribe(from, Filter);
        await response.StartAsync(ct).ConfigureAwait(false);
        await response.Body.FlushAsync(ct).ConfigureAwait(false);
        var encoder = new WatchEncoder(type, table, tableVersion, this);
        if (subscription is null)
        {
            long oldest = _store.CompactedThrough;
            var status = Errors.Expired("too old resource version: " + rvParam + " (" + oldest.ToString(CultureInfo.InvariantCulture) + ")").ToStatus();
            await WriteLineAsync(response, new JsonObject { ["type"] = "ERROR", ["object"] = status }, ct).ConfigureAwait(false);
            return;
        }

        using var deadline = CancellationTokenSource.CreateLinkedTokenSource(ct, _stopping);
        deadline.CancelAfter(timeout);
        long lastRv = from;
        foreach (var obj in initial)
        {
            await WriteEventAsync(response, encoder.Encode("ADDED", obj), ct).ConfigureAwait(false);
        }

        if (bookmarks)
        {
            await WriteEventAsync(response, encoder.Bookmark(lastRv), ct).ConfigureAwait(false);
        }

        await response.Body.FlushAsync(ct).ConfigureAwait(false);
        var reader = subscription.Reader;
        try
        {
            while (true)
            {
                var wait = reader.WaitToReadAsync(deadline.Token).AsTask();
                if (bookmarks)
                {
                    using var tick = CancellationTokenSource.CreateLinkedTokenSource(deadline.Token);
                    var delay = Task.Delay(_settings.BookmarkInterval, _time, tick.Token);
                    var first = await Task.WhenAny(wait, delay).ConfigureAwait(false);
                    await tick.CancelAsync().ConfigureAwait(false);
                    if (first == delay && !wait.IsCompleted)
                    {
                        await WriteEventAsync(response, encoder.Bookmark(lastRv), ct).ConfigureAwait(false);
                        await response.Body.FlushAsync(ct).ConfigureAwait(false);
                        continue;
                    }
                }

                if (!await wait.ConfigureAwait(false))
                {
                    return;
                }

                while (reader.TryRead(out var e))
                {
                    string kind = e.Type switch
                    {
                        StoreEventType.Added => "ADDED",
                        StoreEventType.Deleted => "DELETED",
                        _ when e.Previous is not null && !Matches(e.Previous) => "ADDED",
                        _ when !Matches(e.Stored.Object) => "DELETED",
                        _ => "MODIFIED",
                    };
                    await WriteEventAsync(response, encoder.Encode(kind, e.Stored.Object), ct).ConfigureAwait(false);
                    lastRv = e.ResourceVersion;
                }

                await response.Body.FlushAsync(ct).ConfigureAwait(false);
            }
        }
        catch (OperationCanceledException) when (deadline.IsCancellationRequested && !ct.IsCancellationRequested)
        {
            // timeoutSeconds elapsed or the server is stopping: end the stream normally; the client re-watches from its last resourceVersion.
        }
    }

    private static async Task WriteLineAsync(HttpResponse response, JsonObject line, CancellationToken ct)
    {
        await WriteEventAsync(response, line, ct).ConfigureAwait(false);
        await response.Body.FlushAsync(ct).ConfigureAwait(false);
    }

    private static async Task WriteEventAsync(HttpResponse response, JsonObject line, CancellationToken ct)
    {
        var writer = new Utf8JsonWriter(response.BodyWriter, Wire.WriterOptions);
        await using (writer.ConfigureAwait(false))
        {
            line.WriteTo(writer);
            await writer.FlushAsync(ct).ConfigureAwait(false);
        }

        response.BodyWriter.Write("\n"u8);
        await response.BodyWriter.FlushAsync(ct).ConfigureAwait(false);
    }

    /// <summary>Encodes watch events as full objects or as one-row Tables (headers on the first only).</summary>
    private sealed class WatchEncoder(ResourceType type, bool table, string tableVersion, ListWatch owner)
    {
        private bool _sentColumns;

        public JsonObject Encode(string eventType, JsonObject obj)
        {
            JsonObject payload;
            if (table)
            {
                payload = owner.TableOf(type, [obj], tableVersion, Json.MetaString(obj, "resourceVersion"), !_sentColumns, "Metadata");
                _sentColumns = true;
            }
            else
            {
                payload = ResourceService.Output(type, obj);
            }

            return new JsonObject { ["type"] = eventType, ["object"] = payload };
        }

        public JsonObject Bookmark(long rv) => new()
        {
            ["type"] = "BOOKMARK",
            ["object"] = new JsonObject
            {
                ["kind"] = type.Kind,
                ["apiVersion"] = type.ApiVersion,
                ["metadata"] = new JsonObject { ["resourceVersion"] = rv.ToString(CultureInfo.InvariantCulture), ["creationTimestamp"] = null },
            },
        };
    }
}
