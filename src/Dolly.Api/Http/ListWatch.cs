using System.Buffers.Text;
using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Dolly.Api.Resources;
using Dolly.Api.Semantics;
using Dolly.Api.Storage;
using Microsoft.AspNetCore.Http;

namespace Dolly.Api.Http;

/// <summary>How long watches run and how often they carry bookmarks.</summary>
internal sealed record WatchSettings(TimeSpan BookmarkInterval, TimeSpan MinRequestTimeout);

/// <summary>GET, LIST (with selectors, pagination and Table output), WATCH and DELETE-collection.</summary>
internal sealed partial class ListWatch
{
    private readonly ResourceService _service;
    private readonly ObjectStore _store;
    private readonly TimeProvider _time;
    private readonly WatchSettings _settings;
    private readonly CancellationToken _stopping;

    public ListWatch(ResourceService service, TimeProvider time, WatchSettings settings, CancellationToken stopping)
    {
        _stopping = stopping;
        _service = service;
        _store = service.Store;
        _time = time;
        _settings = settings;
    }

    /// <summary>Which representation the client asked for.</summary>
    private static (bool Table, string TableVersion) Negotiate(HttpRequest request)
    {
        string accept = request.Headers.Accept.ToString();
        if (accept.Length == 0)
        {
            return (false, "");
        }

        foreach (var part in accept.Split(','))
        {
            var p = part.Replace(" ", "", StringComparison.Ordinal);
            if (p.Contains("as=Table", StringComparison.Ordinal) && p.Contains("g=meta.k8s.io", StringComparison.Ordinal))
            {
                return (true, p.Contains("v=v1beta1", StringComparison.Ordinal) ? "meta.k8s.io/v1beta1" : "meta.k8s.io/v1");
            }

            string media = Wire.MediaType(p);
            if (media is "application/json" or "application/yaml" or "*/*" or "application/*")
            {
                return (false, "");
            }
        }

        throw Errors.NotAcceptable("only the following media types are accepted: application/json, application/yaml");
    }

    public async Task GetAsync(HttpContext context, ResourceRequest rr, CancellationToken ct)
    {
        var obj = _service.Get(rr.Type, rr.Namespace, rr.Name);
        var (table, tableVersion) = Negotiate(context.Request);
        if (table)
        {
            var t = TableOf(rr.Type, [obj], tableVersion, Json.MetaString(obj, "resourceVersion"), includeColumns: true, IncludeObject(context.Request));
            await Wire.WriteJsonAsync(context.Response, 200, t, ct).ConfigureAwait(false);
            return;
        }

        await Wire.WriteJsonAsync(context.Response, 200, obj, ct).ConfigureAwait(false);
    }

    private static string IncludeObject(HttpRequest request)
    {
        string v = request.Query["includeObject"].ToString();
        return v is "None" or "Object" ? v : "Metadata";
    }

    private JsonObject TableOf(ResourceType type, IEnumerable<JsonObject> objects, string tableVersion, string rv, bool includeColumns, string includeObject)
    {
        var now = _time.GetUtcNow();
        var rows = new JsonArray();
        foreach (var obj in objects)
        {
            var row = new JsonObject { ["cells"] = Tables.Cells(type, obj, now) };
            if (includeObject == "Object")
            {
                row["object"] = ResourceService.Output(type, obj);
            }
            else if (includeObject == "Metadata")
            {
                // managedFields are left out: printers never read them and they are most of the metadata's size.
                var meta = new JsonObject();
                foreach (var (k, v) in obj["metadata"] as JsonObject ?? [])
                {
                    if (k != "managedFields")
                    {
                        meta[k] = v?.DeepClone();
                    }
                }

                row["object"] = new JsonObject
                {
                    ["kind"] = "PartialObjectMetadata",
                    ["apiVersion"] = "meta.k8s.io/v1",
                    ["metadata"] = meta,
                };
            }

            rows.Add(row);
        }

        var table = new JsonObject
        {
            ["kind"] = "Table",
            ["apiVersion"] = tableVersion,
            ["metadata"] = new JsonObject { ["resourceVersion"] = rv },
        };
        if (includeColumns)
        {
            table["columnDefinitions"] = Tables.ColumnDefinitions(type);
        }

        table["rows"] = rows;
        return table;
    }

    private static (LabelSelector Labels, FieldSelector Fields) Selectors(HttpRequest request, ResourceType type) =>
        (LabelSelector.Parse(request.Query["labelSelector"].ToString()),
         FieldSelector.Parse(request.Query["fieldSelector"].ToString(), type.ExtraFieldSelectors.ToHashSet(StringComparer.Ordinal), !type.Builtin));

    private sealed record ContinueToken(long Rv, string Start);

    private static string EncodeContinue(long rv, string key) =>
        Base64Url.EncodeToString(Encoding.UTF8.GetBytes(new JsonObject { ["rv"] = rv, ["start"] = key }.ToJsonString()));

    private ContinueToken DecodeContinue(string token)
    {
        try
        {
            var node = JsonNode.Parse(Base64Url.DecodeFromChars(token));
            var t = new ContinueToken(Json.Long(node!["rv"]) ?? throw new FormatException("no revision"), node["start"]!.GetValue<string>());
            if (t.Rv < _store.CompactedThrough)
            {
                throw Errors.Expired("The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.");
            }

            return t;
        }
        catch (Exception e) when (e is FormatException or JsonException or InvalidOperationException or NullReferenceException or KeyNotFoundException)
        {
            throw Errors.BadRequest("continue key is not valid: " + e.Message);
        }
    }

    private static void ValidateListOptions(HttpRequest request, bool watch)
    {
        var q = request.Query;
        string rv = q["resourceVersion"].ToString();
        string match = q["resourceVersionMatch"].ToString();
        if (q["sendInitialEvents"].Count > 0)
        {
            throw Errors.InvalidOptions("ListOptions", FieldCause.Forbidden("sendInitialEvents",
                watch ? "sendInitialEvents is forbidden for watch unless the WatchList feature gate is enabled" : "sendInitialEvents is forbidden for list"));
        }

        if (match.Length > 0)
        {
            if (watch)
            {
                throw Errors.InvalidOptions("ListOptions", FieldCause.Forbidden("resourceVersionMatch", "resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided"));
            }

            if (rv.Length == 0)
            {
                throw Errors.InvalidOptions("ListOptions", FieldCause.Forbidden("resourceVersionMatch", "resourceVersionMatch is forbidden unless resourceVersion is provided"));
            }

            if (q["continue"].ToString().Length > 0)
            {
                throw Errors.InvalidOptions("ListOptions", FieldCause.Forbidden("resourceVersionMatch", "resourceVersionMatch is forbidden when continue is provided"));
            }

            if (match is not ("Exact" or "NotOlderThan"))
            {
                throw Errors.InvalidOptions("ListOptions", FieldCause.Unsupported("resourceVersionMatch", JsonValue.Create(match), ["Exact", "NotOlderThan"]));
            }

            if (match == "Exact" && rv == "0")
            {
                throw Errors.InvalidOptions("ListOptions", FieldCause.Forbidden("resourceVersionMatch", "resourceVersionMatch \"exact\" is forbidden for resourceVersion \"0\""));
            }
        }

        if (rv.Length > 0 && !long.TryParse(rv, NumberStyles.None, CultureInfo.InvariantCulture, out _))
        {
            throw Errors.BadRequest("invalid resource version: " + rv);
        }

        if (!watch && rv.Length > 0 && q["continue"].ToString().Length > 0)
        {
            throw Errors.BadRequest("specifying resource version is not allowed when using continue");
        }
    }

    public async Task ListAsync(HttpContext context, ResourceRequest rr, CancellationToken ct)
    {
        var request = context.Request;
        var type = rr.Type;
        ValidateListOptions(request, watch: false);
        var (labels, fields) = Selectors(request, type);
        var (table, tableVersion) = Negotiate(request);
        string cont = request.Query["continue"].ToString();
        var token = cont.Length > 0 ? DecodeContinue(cont) : null;
        long limit = long.TryParse(request.Query["limit"].ToString(), NumberStyles.None, CultureInfo.InvariantCulture, out long l) && l > 0 ? l : long.MaxValue;
        if (table && cont.Length == 0)
        {
            // Tables are for printing: kubectl asks for 500 rows a page but throttles itself to 5 requests a second
            // after the first 10, so 10,000 rows would take seconds of client-side waiting. The API lets a server
            // ignore limit, and one page of rows is cheap to render, so tables come whole.
            limit = long.MaxValue;
        }

        string? rvParam = request.Query["resourceVersion"].ToString() is { Length: > 0 } s ? s : null;
        long wanted = rvParam is null ? 0 : long.Parse(rvParam, CultureInfo.InvariantCulture);
        long current = _store.Revision;
        if (wanted > current)
        {
            // Neither that exact state nor one at least as new exists yet (kube-apiserver: 504 after waiting).
            throw Errors.TooLargeResourceVersion(wanted, current);
        }

        string? ns = rr.NamespaceInPath ? rr.Namespace : null;
        List<StoredObject> items;
        long revision;
        if (rvParam is not null && request.Query["resourceVersionMatch"].ToString() == "Exact")
        {
            // The list as it was at that revision, while the changes since are still kept; 410 Gone after.
            items = _store.ListAt(type.StorageKey, ns, wanted) ?? throw Errors.Expired("The resourceVersion for the provided list is too old.");
            revision = wanted;
        }
        else
        {
            (items, revision) = _store.List(type.StorageKey, ns);
        }
        long listRv = token?.Rv ?? revision;
        var page = new List<JsonObject>();
        string? next = null;
        long remaining = 0;
        bool filtered = labels != LabelSelector.Everything && request.Query["labelSelector"].ToString().Length > 0 ||
                        request.Query["fieldSelector"].ToString().Length > 0;
        foreach (var item in items)
        {
            if (token is not null && string.CompareOrdinal(item.Namespace + "\0" + item.Name, token.Start) <= 0)
            {
                continue;
            }

            if (!labels.Matches(item.Object) || !fields.Matches(item.Object))
            {
                continue;
            }

            if (page.Count >= limit)
            {
                next ??= EncodeContinue(listRv, Key(page[^1]));
                remaining++;
                if (filtered)
                {
                    break;
                }

                continue;
            }

            page.Add(item.Object);
        }

        var meta = new JsonObject { ["resourceVersion"] = listRv.ToString(CultureInfo.InvariantCulture) };
        if (next is not null)
        {
            meta["continue"] = next;
            if (!filtered)
            {
                meta["remainingItemCount"] = remaining;
            }
        }

        if (table)
        {
            await WriteTableAsync(context.Response, type, page, tableVersion, meta, IncludeObject(request), ct).ConfigureAwait(false);
            return;
        }

        await WriteListAsync(context.Response, type, page, meta, ct).ConfigureAwait(false);
    }

    /// <summary>
    /// Streams a list Table row by row from the stored objects (no copies), so kubectl starts decoding while the
    /// server is still writing; the same shape as <see cref="TableOf"/>.
    /// </summary>
    private async Task WriteTableAsync(HttpResponse response, ResourceType type, List<JsonObject> items, string tableVersion, JsonObject meta, string includeObject, CancellationToken ct)
    {
        var now = _time.GetUtcNow();
        response.StatusCode = 200;
        response.ContentType = "application/json";
        var writer = new Utf8JsonWriter(response.BodyWriter, Wire.WriterOptions);
        await using (writer.ConfigureAwait(false))
        {
            writer.WriteStartObject();
            writer.WriteString("kind", "Table");
            writer.WriteString("apiVersion", tableVersion);
            writer.WritePropertyName("metadata");
            meta.WriteTo(writer);
            writer.WritePropertyName("columnDefinitions");
            Tables.ColumnDefinitions(type).WriteTo(writer);
            writer.WriteStartArray("rows");
            foreach (var obj in items)
            {
                writer.WriteStartObject();
                writer.WritePropertyName("cells");
                Tables.Cells(type, obj, now).WriteTo(writer);
                if (includeObject == "Object")
                {
                    writer.WritePropertyName("object");
                    ResourceService.Output(type, obj).WriteTo(writer);
                }
                else if (includeObject == "Metadata")
                {
                    writer.WriteStartObject("object");
                    writer.WriteString("kind", "PartialObjectMetadata");
                    writer.WriteString("apiVersion", "meta.k8s.io/v1");
                    writer.WriteStartObject("metadata");
                    foreach (var (k, v) in obj["metadata"] as JsonObject ?? [])
                    {
                        // managedFields are left out: printers never read them and they are most of the metadata.
                        if (k == "managedFields")
                        {
                            continue;
                        }

                        writer.WritePropertyName(k);
                        if (v is null)
                        {
                            writer.WriteNullValue();
                        }
                        else
                        {
                            v.WriteTo(writer);
                        }
                    }

                    writer.WriteEndObject();
                    writer.WriteEndObject();
                }

                writer.WriteEndObject();
                if (writer.BytesPending > 64 * 1024)
                {
                    await writer.FlushAsync(ct).ConfigureAwait(false);
                }
            }

            writer.WriteEndArray();
            writer.WriteEndObject();
            await writer.FlushAsync(ct).ConfigureAwait(false);
        }
    }

    private static string Key(JsonObject obj) => Json.Namespace(obj) + "\0" + Json.Name(obj);

    /// <summary>Streams a list without copying the items: each stored object is written as is, apiVersion adjusted.</summary>
    private static async Task WriteListAsync(HttpResponse response, ResourceType type, List<JsonObject> items, JsonObject meta, CancellationToken ct)
    {
        response.StatusCode = 200;
        response.ContentType = "application/json";
        var writer = new Utf8JsonWriter(response.BodyWriter, Wire.WriterOptions);
        await using (writer.ConfigureAwait(false))
        {
            writer.WriteStartObject();
            writer.WriteString("kind", type.ListKind);
            writer.WriteString("apiVersion", type.ApiVersion);
            writer.WritePropertyName("metadata");
            meta.WriteTo(writer);
            writer.WriteStartArray("items");
            foreach (var item in items)
            {
                writer.WriteStartObject();
                if (!type.Builtin)
                {
                    // Items of custom resource lists carry kind and apiVersion; built-in list items do not.
                    writer.WriteString("apiVersion", type.ApiVersion);
                    writer.WriteString("kind", type.Kind);
                }

                foreach (var (k, v) in item)
                {
                    if (k is "apiVersion" or "kind")
                    {
                        continue;
                    }

                    writer.WritePropertyName(k);
                    if (v is null)
                    {
                        writer.WriteNullValue();
                    }
                    else
                    {
                        v.WriteTo(writer);
                    }
                }

                writer.WriteEndObject();
                if (writer.BytesPending > 64 * 1024)
                {
                    await writer.FlushAsync(ct).ConfigureAwait(false);
                }
            }

            writer.WriteEndArray();
            writer.WriteEndObject();
            await writer.FlushAsync(ct).ConfigureAwait(false);
        }
    }

    public async Task DeleteCollectionAsync(HttpContext context, ResourceRequest rr, DeleteOptions options, CancellationToken ct)
    {
        var (labels, fields) = Selectors(context.Request, rr.Type);
        var (items, _) = _store.List(rr.Type.StorageKey, rr.NamespaceInPath ? rr.Namespace : null);
        var deleted = new List<JsonObject>();
        foreach (var item in items.Where(i => labels.Matches(i.Object) && fields.Matches(i.Object)))
        {
            try
            {
                var result = _service.Delete(rr.Type, item.Namespace, item.Name, options);
                deleted.Add(result.Body["kind"]?.GetValue<string>() == "Status" ? item.Object : result.Body);
            }
            catch (ApiErrorException e) when (e.Code == 404)
            {
                // Deleted concurrently: nothing left to do for this one.
            }
        }

        var meta = new JsonObject { ["resourceVersion"] = _store.Revision.ToString(CultureInfo.InvariantCulture) };
        await WriteListAsync(context.Response, rr.Type, deleted, meta, ct).ConfigureAwait(false);
    }
}
