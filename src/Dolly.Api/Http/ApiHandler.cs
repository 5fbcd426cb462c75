using System.Text.Json;
using System.Text.Json.Nodes;
using Dolly.Api.Resources;
using Dolly.Api.Security;
using Dolly.Api.Semantics;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.Extensions.Logging;

namespace Dolly.Api.Http;

/// <summary>
/// One resource request after routing: the type, the namespace and name (may be empty), the subresource.
/// <paramref name="NameInPath"/> is set when the path has a name segment, even an empty one, so "configmaps/" is
/// refused as an item request without a name instead of acting on the whole collection.
/// </summary>
internal sealed record ResourceRequest(ResourceType Type, string Namespace, string Name, string? Subresource, bool NamespaceInPath, bool NameInPath = false);

/// <summary>
/// The single request delegate: authentication, routing of the Kubernetes REST paths, and the mapping of
/// <see cref="ApiErrorException"/> to Status responses, once, at this boundary.
/// </summary>
internal sealed partial class ApiHandler
{
    private readonly Credentials _credentials;
    private readonly ResourceService _service;
    private readonly ResourceRegistry _registry;
    private readonly Discovery _discovery;
    private readonly OpenApi _openApi;
    private readonly ListWatch _listWatch;
    private readonly ILogger _logger;
    private readonly Func<bool> _ready;
    private readonly ApiMetrics _metrics;

    public ApiHandler(Credentials credentials, ResourceService service, ListWatch listWatch, Func<bool> ready, ApiMetrics metrics, ILogger logger)
    {
        _metrics = metrics;
        _credentials = credentials;
        _service = service;
        _registry = service.Registry;
        _discovery = new Discovery(_registry);
        _openApi = new OpenApi(_registry);
        _listWatch = listWatch;
        _ready = ready;
        _logger = logger;
    }

    public async Task HandleAsync(HttpContext context)
    {
        var ct = context.RequestAborted;
        long started = _metrics.Time.GetTimestamp();
        try
        {
            await RouteAsync(context, ct).ConfigureAwait(false);
        }
        catch (ApiErrorException e) when (!context.Response.HasStarted)
        {
            await Wire.WriteStatusAsync(context.Response, e, ct).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (ct.IsCancellationRequested)
        {
            // The client went away; nothing to answer.
        }
        catch (Exception e) when (e is not OperationCanceledException && !context.Response.HasStarted)
        {
            // A bug, not an expected outcome: log it and answer 500 as kube-apiserver does, keeping the server up.
            ApiServerLog.RequestFailed(_logger, e, context.Request.Method, context.Features.Get<IHttpRequestFeature>()?.RawTarget ?? context.Request.Path.Value ?? "");
            var error = new ApiErrorException(500, "InternalError", "Internal error occurred: " + e.Message);
            await Wire.WriteStatusAsync(context.Response, error, ct).ConfigureAwait(false);
        }
        finally
        {
            _metrics.Answered(context, started);
        }
    }

    private async Task RouteAsync(HttpContext context, CancellationToken ct)
    {
        var request = context.Request;
        // Routing works on the raw segments, never on Kestrel's decoded and dot-collapsed Request.Path.
        var target = RequestPath.Of(context);
        string[] segments = target.Segments;
        switch (segments.Length == 1 ? segments[0] : "")
        {
            case "healthz" or "readyz" or "livez":
                context.Response.ContentType = "text/plain; charset=utf-8";
                context.Response.StatusCode = _ready() ? 200 : 500;
                await context.Response.WriteAsync(_ready() ? "ok" : "not ready", ct).ConfigureAwait(false);
                return;
            case "version":
                await Wire.WriteJsonAsync(context.Response, 200, Discovery.Version(), ct).ConfigureAwait(false);
                return;
        }

        if (!_credentials.IsAuthorized(request.Headers.Authorization))
        {
            throw new ApiErrorException(401, "Unauthorized", "Unauthorized");
        }

        if (segments.Length >= 1 && segments[0] == "openapi" && !target.HasEmptySegment)
        {
            await _openApi.HandleAsync(context, segments, ct).ConfigureAwait(false);
            return;
        }

        bool core = segments.Length > 0 && segments[0] == "api";
        int gvLength = core ? 2 : 3;
        if (segments.Length == 0 || segments[0] is not ("api" or "apis") || segments[..Math.Min(gvLength, segments.Length)].Any(s => s.Length == 0))
        {
            await NotFoundPlainAsync(context, ct).ConfigureAwait(false);
            return;
        }

        if (segments.Length < gvLength)
        {
            if (request.Method != "GET")
            {
                throw Errors.RouteMethodNotAllowed();
            }

            await _discovery.HandleAsync(context, segments, ct).ConfigureAwait(false);
            return;
        }

        string group = core ? "" : segments[1];
        string version = core ? segments[1] : segments[2];
        var rest = segments[gvLength..];
        if (rest.Length > 0 && target.TrailingSlash)
        {
            // A trailing '/' after a resource path is an empty name (or subresource) segment, refused as such.
            rest = [.. rest, ""];
        }

        if (rest.Length == 0)
        {
            await _discovery.HandleAsync(context, segments, ct).ConfigureAwait(false);
            return;
        }

        var rr = Resolve(group, version, rest);
        if (rr is null && core && version == "v1" && await TryServeAbsentKindAsync(context, rest, ct).ConfigureAwait(false))
        {
            return;
        }

        if (rr is null)
        {
            await NotFoundPlainAsync(context, ct).ConfigureAwait(false);
            return;
        }

        await DispatchAsync(context, rr, ct).ConfigureAwait(false);
    }

    private static Task NotFoundPlainAsync(HttpContext context, CancellationToken ct)
    {
        context.Response.StatusCode = 404;
        context.Response.ContentType = "text/plain; charset=utf-8";
        return context.Response.WriteAsync("404 page not found\n", ct);
    }

    /// <summary>
    /// Kinds kubectl describe looks up beside the served ones (quotas and limit ranges for namespaces). None can
    /// exist here, so lists are empty and objects are not found, as on a cluster without them.
    /// </summary>
    private static readonly Dictionary<string, string> AbsentKinds = new(StringComparer.Ordinal)
    {
        ["resourcequotas"] = "ResourceQuotaList",
        ["limitranges"] = "LimitRangeList",
    };

    private async Task<bool> TryServeAbsentKindAsync(HttpContext context, string[] rest, CancellationToken ct)
    {
        bool namespaced = rest.Length >= 3 && rest[0] == "namespaces";
        var tail = namespaced ? rest[2..] : rest;
        if (tail.Length == 0 || !AbsentKinds.TryGetValue(tail[0], out var listKind) || context.Request.Method != "GET" || tail.Length > 2)
        {
            return false;
        }

        if (namespaced)
        {
            RequestPath.CheckNamespace(rest[1]);
        }

        if (tail.Length == 2)
        {
            RequestPath.CheckName(tail[1]);
            throw Errors.NotFound("", tail[0], tail[1]);
        }

        var list = new JsonObject
        {
            ["kind"] = listKind,
            ["apiVersion"] = "v1",
            ["metadata"] = new JsonObject { ["resourceVersion"] = _service.Store.Revision.ToString(System.Globalization.CultureInfo.InvariantCulture) },
            ["items"] = new JsonArray(),
        };
        await Wire.WriteJsonAsync(context.Response, 200, list, ct).ConfigureAwait(false);
        return true;
    }

    private ResourceRequest? Resolve(string group, string version, string[] rest)
    {
        string ns = "";
        bool nsInPath = false;
        if (rest[0] == "namespaces" && rest.Length >= 3 && rest[2] is not ("status" or "finalize"))
        {
            ns = rest[1];
            nsInPath = true;
            rest = rest[2..];
        }

        var type = _registry.Find(group, version, rest[0]);
        if (type is null || rest.Length > 3 || (nsInPath && !type.Namespaced))
        {
            return null;
        }

        string? sub = rest.Length == 3 ? rest[2] : null;
        if (sub is not null && !(sub == "status" && type.HasStatus) && !(sub == "finalize" && type.Plural == "namespaces" && type.Group.Length == 0))
        {
            return null;
        }

        return new ResourceRequest(type, ns, rest.Length >= 2 ? rest[1] : "", sub, nsInPath, NameInPath: rest.Length >= 2);
    }

    private async Task DispatchAsync(HttpContext context, ResourceRequest rr, CancellationToken ct)
    {
        var request = context.Request;
        var type = rr.Type;
        bool collection = !rr.NameInPath;
        if (type.Namespaced && !rr.NamespaceInPath && !(collection && request.Method == "GET"))
        {
            // Namespaced objects are only addressable inside a namespace; the all-namespaces path is list/watch
            // only, and kube-apiserver has no route at all for an item without its namespace.
            if (!collection)
            {
                await NotFoundPlainAsync(context, ct).ConfigureAwait(false);
                return;
            }

            throw Errors.RouteMethodNotAllowed();
        }

        string verb = (request.Method, collection) switch
        {
            ("GET", true) => IsWatch(request) ? "watch" : "list",
            ("GET", false) => "get",
            ("POST", _) => "create",
            ("PUT", _) => "update",
            ("PATCH", _) => "patch",
            ("DELETE", true) => "deletecollection",
            _ => "delete",
        };
        ApiMetrics.Resolved(context, rr, verb);
        if (!type.Verbs.Contains(verb) && !(verb is "update" or "patch" or "get" && rr.Subresource is not null))
        {
            throw Errors.RouteMethodNotAllowed();
        }

        bool routed = (request.Method, collection) switch
        {
            ("GET", _) or ("POST", true) or ("PUT", false) => true,
            ("PATCH", false) => rr.Subresource != "finalize",
            ("DELETE", false) => rr.Subresource is null,
            ("DELETE", true) => type.Verbs.Contains("deletecollection"),
            _ => false,
        };
        if (routed)
        {
            // As kube-apiserver: a route that exists refuses a namespace or name that is empty or not a valid
            // path segment (".", "..", containing "/" or "%") before touching storage; others answer 405 below.
            if (rr.NamespaceInPath)
            {
                RequestPath.CheckNamespace(rr.Namespace);
            }

            if (rr.NameInPath)
            {
                RequestPath.CheckName(rr.Name);
            }
        }

        switch (request.Method, collection)
        {
            case ("GET", true):
                if (IsWatch(request))
                {
                    using var open = _metrics.Watching(context);
                    await _listWatch.WatchAsync(context, rr, ct).ConfigureAwait(false);
                }
                else
                {
                    await _listWatch.ListAsync(context, rr, ct).ConfigureAwait(false);
                }

                return;
            case ("GET", false):
                await _listWatch.GetAsync(context, rr, ct).ConfigureAwait(false);
                return;
            case ("POST", true):
                {
                    var body = await ReadObjectAsync(request, type, ct).ConfigureAwait(false);
                    var result = _service.Create(type, rr.Namespace, body, WriteOptionsFrom(request));
                    await WriteResultAsync(context, result, ct).ConfigureAwait(false);
                    return;
                }

            case ("PUT", false):
                {
                    var body = await ReadObjectAsync(request, type, ct).ConfigureAwait(false);
                    var result = _service.Update(type, rr.Namespace, rr.Name, body, rr.Subresource, WriteOptionsFrom(request));
                    await WriteResultAsync(context, result, ct).ConfigureAwait(false);
                    return;
                }

            case ("PATCH", false):
                {
                    if (rr.Subresource == "finalize")
                    {
                        throw Errors.RouteMethodNotAllowed();
                    }

                    string text = await Wire.ReadBodyAsync(request, ct).ConfigureAwait(false);
                    var result = _service.Patch(type, rr.Namespace, rr.Name, Wire.MediaType(request.ContentType), text, rr.Subresource, WriteOptionsFrom(request));
                    await WriteResultAsync(context, result, ct).ConfigureAwait(false);
                    return;
                }

            case ("DELETE", false) when rr.Subresource is null:
                {
                    var options = await DeleteOptionsFromAsync(request, ct).ConfigureAwait(false);
                    var result = _service.Delete(type, rr.Namespace, rr.Name, options);
                    await Wire.WriteJsonAsync(context.Response, result.StatusCode, result.Body, ct).ConfigureAwait(false);
                    return;
                }

            case ("DELETE", true) when type.Verbs.Contains("deletecollection"):
                {
                    var options = await DeleteOptionsFromAsync(request, ct).ConfigureAwait(false);
                    await _listWatch.DeleteCollectionAsync(context, rr, options, ct).ConfigureAwait(false);
                    return;
                }

            default:
                throw Errors.RouteMethodNotAllowed();
        }
    }

    private const string ApplyPatchMediaType = "application/apply-patch+yaml";

    private static bool IsWatch(HttpRequest request) =>
        request.Query["watch"].ToString() is "true" or "1" or "True";

    private static async Task WriteResultAsync(HttpContext context, WriteResult result, CancellationToken ct)
    {
        foreach (var w in result.Warnings)
        {
            context.Response.Headers.Append("Warning", Wire.WarningHeader(w));
        }

        await Wire.WriteJsonAsync(context.Response, result.StatusCode, result.Object, ct).ConfigureAwait(false);
    }

    private static async Task<JsonObject> ReadObjectAsync(HttpRequest request, ResourceType type, CancellationToken ct)
    {
        string media = Wire.MediaType(request.ContentType);
        if (media == Protobuf.MediaType && type.Builtin && Protobuf.Supports(type.ApiVersion, type.Kind))
        {
            var bytes = await Wire.ReadBytesAsync(request, ct).ConfigureAwait(false);
            return Protobuf.Decode(bytes, type.ApiVersion, type.Kind) ?? throw Errors.Decode(type.Kind, type.Version, "the protobuf body is not a " + type.ApiVersion + " " + type.Kind);
        }

        // No Content-Type means JSON, as kube-apiserver assumes; any other type it cannot decode is 415.
        if (media is not ("application/json" or "application/yaml" or ""))
        {
            throw Errors.UnsupportedMediaType(type.Builtin && Protobuf.Supports(type.ApiVersion, type.Kind)
                ? ["application/json", "application/yaml", Protobuf.MediaType]
                : ["application/json", "application/yaml"]);
        }

        string text = await Wire.ReadBodyAsync(request, ct).ConfigureAwait(false);
        JsonNode? node;
        try
        {
            node = media == "application/yaml" ? Yaml.Parse(text) : JsonNode.Parse(text, documentOptions: new JsonDocumentOptions { AllowDuplicateProperties = false });
        }
        catch (Exception e) when (e is JsonException or YamlDotNet.Core.YamlException)
        {
            throw Errors.Decode(type.Kind, type.Version, "couldn't get version/kind; json parse error: " + e.Message);
        }

        return node as JsonObject ?? throw Errors.Decode(type.Kind, type.Version, "the request body must be a JSON object");
    }

    private static WriteOptions WriteOptionsFrom(HttpRequest request)
    {
        var q = request.Query;
        // Invalid options are 422 on the options kind of the verb, as kube-apiserver's ValidateCreateOptions & co.
        string optionsKind = request.Method switch { "POST" => "CreateOptions", "PUT" => "UpdateOptions", _ => "PatchOptions" };
        var dryRunValues = q["dryRun"].Select(v => v ?? "").ToList();
        if (dryRunValues.Any(v => v != "All"))
        {
            // Go's %#v of the []string value, as field.NotSupported prints it.
            string shown = "[]string{" + string.Join(", ", dryRunValues.Select(v => "\"" + v + "\"")) + "}";
            throw Errors.InvalidOptions(optionsKind, new FieldCause("FieldValueNotSupported", "dryRun", "Unsupported value: " + shown + ": supported values: \"All\""));
        }

        string dryRun = dryRunValues.Count > 0 ? "All" : "";
        string validation = q["fieldValidation"].ToString();
        if (validation.Length > 0 && validation is not ("Strict" or "Warn" or "Ignore"))
        {
            throw Errors.InvalidOptions(optionsKind, FieldCause.Unsupported("fieldValidation", JsonValue.Create(validation), ["", "Ignore", "Strict", "Warn"]));
        }

        string manager = q["fieldManager"].ToString();
        bool apply = request.Method == "PATCH" && Wire.MediaType(request.ContentType) == ApplyPatchMediaType;
        if (manager.Length == 0 && !apply)
        {
            // kube-apiserver names the manager after the User-Agent's program when the client gives none, except
            // for server-side apply, whose manager must be explicit (the patch is then refused with 422).
            manager = request.Headers.UserAgent.ToString().Split('/')[0];
        }

        if (manager.Length > 128)
        {
            throw Errors.InvalidOptions(optionsKind, new FieldCause("FieldValueTooLong", "fieldManager", "Too long: may not be longer than 128"));
        }

        return new WriteOptions(dryRun == "All", manager, validation.Length == 0 ? "Warn" : validation, q["force"].ToString() is "true" or "1");
    }

    private static async Task<DeleteOptions> DeleteOptionsFromAsync(HttpRequest request, CancellationToken ct)
    {
        var q = request.Query;
        string? policy = q["propagationPolicy"].Count > 0 ? q["propagationPolicy"].ToString() : null;
        bool dryRun = q["dryRun"].ToString() == "All";
        string? uid = null, rv = null;
        string text = await Wire.ReadBodyAsync(request, ct).ConfigureAwait(false);
        if (text.Trim().Length > 0)
        {
            string media = Wire.MediaType(request.ContentType);
            if (media is not ("application/json" or "application/yaml" or ""))
            {
                throw Errors.UnsupportedMediaType(["application/json", "application/yaml"]);
            }

            JsonNode? body;
            try
            {
                body = media == "application/yaml" ? Yaml.Parse(text) : JsonNode.Parse(text);
            }
            catch (Exception e) when (e is JsonException or YamlDotNet.Core.YamlException)
            {
                throw Errors.BadRequest("error decoding DeleteOptions: " + e.Message);
            }

            if (body is not JsonObject)
            {
                throw Errors.BadRequest("error decoding DeleteOptions: the body must be a JSON object");
            }

            if (body["propagationPolicy"] is { } p && Json.Str(p) is null)
            {
                throw Errors.BadRequest("error decoding DeleteOptions: propagationPolicy must be a string");
            }

            policy = Json.Str(body["propagationPolicy"]) ?? policy;
            if (body?["orphanDependents"] is JsonValue orphan)
            {
                if (body["propagationPolicy"] is not null)
                {
                    throw Errors.InvalidOptions("DeleteOptions", FieldCause.Invalid("propagationPolicy", body["propagationPolicy"], "orphanDependents and deletionPropagation cannot be both set"));
                }

                policy = Json.Bool(orphan) == true ? "Orphan" : "Background";
            }

            dryRun |= body?["dryRun"] is JsonArray d && d.Any(x => Json.Str(x) == "All");
            uid = Json.Str(body?["preconditions"]?["uid"]);
            rv = Json.Str(body?["preconditions"]?["resourceVersion"]);
        }

        return new DeleteOptions(dryRun, policy, uid, rv);
    }
}
