using System.Security.Cryptography;
using System.Text;
using System.Text.Json.Nodes;
using Dolly.Api.Resources;
using Microsoft.AspNetCore.Http;

namespace Dolly.Api.Http;

/// <summary>
/// /openapi/v3 (index and one document per group-version) and /openapi/v2 (JSON). The documents carry what kubectl
/// reads: a PATCH operation per kind with its group-version-kind and the fieldValidation parameter (server-side
/// validation on apply), and the kind schemas with x-kubernetes-group-version-kind (kubectl explain).
/// </summary>
internal sealed class OpenApi
{
    private const string ObjectMetaName = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta";
    private readonly ResourceRegistry _registry;
    private readonly Lock _cacheLock = new();
    private IReadOnlyList<ResourceType>? _cachedFor;
    private Dictionary<(string Group, string Version), (string Json, string Hash)> _cache = [];

    public OpenApi(ResourceRegistry registry) => _registry = registry;

    /// <summary>The serialized documents and their hashes, rebuilt only when the served kinds change.</summary>
    private Dictionary<(string Group, string Version), (string Json, string Hash)> Documents()
    {
        var all = _registry.All;
        lock (_cacheLock)
        {
            if (!ReferenceEquals(all, _cachedFor))
            {
                var docs = new Dictionary<(string, string), (string, string)>();
                foreach (var gv in all.Select(t => (t.Group, t.Version)).Distinct())
                {
                    string json = Document(gv.Group, gv.Version).ToJsonString();
                    docs[gv] = (json, Hash(json));
                }

                _cache = docs;
                _cachedFor = all;
            }

            return _cache;
        }
    }

    private static string Hash(string json) => Convert.ToHexString(SHA512.HashData(Encoding.UTF8.GetBytes(json)));

    public async Task HandleAsync(HttpContext context, string[] segments, CancellationToken ct)
    {
        var response = context.Response;
        if (segments.Length == 2 && segments[1] == "v2")
        {
            string accept = context.Request.Headers.Accept.ToString();
            if (accept.Contains("protobuf", StringComparison.Ordinal))
            {
                // kubectl up to 1.28 validates and explains from this form.
                var bytes = OpenApiV2Proto.Encode(SwaggerV2());
                response.ContentType = OpenApiV2Proto.MediaType;
                response.Headers.ETag = "\"" + Convert.ToHexString(SHA512.HashData(bytes)) + "\"";
                await response.Body.WriteAsync(bytes, ct).ConfigureAwait(false);
                return;
            }

            await Wire.WriteJsonAsync(response, 200, SwaggerV2(), ct).ConfigureAwait(false);
            return;
        }

        if (segments.Length < 2 || segments[1] != "v3")
        {
            throw new ApiErrorException(404, "NotFound", "the server could not find the requested resource");
        }

        var documents = Documents();
        if (segments.Length == 2)
        {
            var paths = new JsonObject();
            foreach (var ((g, v), doc) in documents)
            {
                string key = g.Length == 0 ? "api/" + v : "apis/" + g + "/" + v;
                paths[key] = new JsonObject { ["serverRelativeURL"] = "/openapi/v3/" + key + "?hash=" + doc.Hash };
            }

            string index = new JsonObject { ["paths"] = paths }.ToJsonString();
            response.Headers.ETag = "\"" + Hash(index) + "\"";
            response.ContentType = "application/json";
            await response.WriteAsync(index, ct).ConfigureAwait(false);
            return;
        }

        string gvPath = string.Join('/', segments[2..]);
        var match = documents.FirstOrDefault(d => (d.Key.Group.Length == 0 ? "api/" + d.Key.Version : "apis/" + d.Key.Group + "/" + d.Key.Version) == gvPath);
        if (match.Value.Json is null)
        {
            throw new ApiErrorException(404, "NotFound", "the server could not find the requested resource");
        }

        var (json, hash) = match.Value;
        string requested = context.Request.Query["hash"].ToString();
        if (requested.Length > 0 && requested != hash)
        {
            response.StatusCode = 301;
            response.Headers.Location = "/openapi/v3/" + gvPath + "?hash=" + hash;
            return;
        }

        response.Headers.ETag = "\"" + hash + "\"";
        if (requested.Length > 0)
        {
            response.Headers.CacheControl = "public, immutable";
            response.Headers.Expires = DateTimeOffset.UtcNow.AddYears(1).ToString("R", System.Globalization.CultureInfo.InvariantCulture);
        }

        response.ContentType = "application/json";
        await response.WriteAsync(json, ct).ConfigureAwait(false);
    }

    private static JsonObject Param(string name, string inWhere, string description, bool required = false) => new()
    {
        ["name"] = name,
        ["in"] = inWhere,
        ["description"] = description,
        ["required"] = required,
        ["schema"] = new JsonObject { ["type"] = "string", ["uniqueItems"] = true },
    };

    private static JsonArray WriteParams() =>
    [
        Param("dryRun", "query", "When present, indicates that modifications should not be persisted. The only valid value is All."),
        Param("fieldManager", "query", "A name associated with the actor or entity that is making these changes."),
        Param("fieldValidation", "query", "How the server treats unknown and duplicate fields: Ignore, Warn or Strict."),
    ];

    private static JsonObject Ref(string name) => new() { ["$ref"] = "#/components/schemas/" + name };

    private static JsonObject Content(string schemaName, params string[] types)
    {
        var content = new JsonObject();
        foreach (var t in types)
        {
            content[t] = new JsonObject { ["schema"] = Ref(schemaName) };
        }

        return content;
    }

    private static JsonObject Responses(string schemaName, params string[] codes)
    {
        var r = new JsonObject();
        foreach (var c in codes)
        {
            r[c] = new JsonObject { ["description"] = "OK", ["content"] = Content(schemaName, "application/json", "application/yaml") };
        }

        return r;
    }

    /// <summary>The OpenAPI v3 document for one group-version.</summary>
    public JsonObject Document(string group, string version)
    {
        var paths = new JsonObject();
        var schemas = new JsonObject { [ObjectMetaName] = ObjectMetaSchema(), ["io.k8s.apimachinery.pkg.apis.meta.v1.Patch"] = new JsonObject { ["type"] = "object", ["description"] = "Patch is provided to give a concrete name and type to the Kubernetes PATCH request body." } };
        foreach (var t in _registry.All.Where(t => t.Group == group && t.Version == version))
        {
            var gvk = new JsonObject { ["group"] = t.Group, ["version"] = t.Version, ["kind"] = t.Kind };
            string prefix = (group.Length == 0 ? "/api/" + version : "/apis/" + group + "/" + version) + (t.Namespaced ? "/namespaces/{namespace}" : "") + "/" + t.Plural;
            string scope = t.Namespaced ? "Namespaced" : "";
            var patchTypes = t.Builtin
                ? new[] { "application/json-patch+json", "application/merge-patch+json", "application/apply-patch+yaml" }
                : new[] { "application/json-patch+json", "application/merge-patch+json", "application/apply-patch+yaml" };
            var patchParams = WriteParams();
            patchParams.Add(Param("force", "query", "Force is going to \"force\" Apply requests. It must be unset for non-apply patch requests."));
            var item = new JsonObject
            {
                ["get"] = new JsonObject { ["operationId"] = "read" + scope + t.Kind, ["x-kubernetes-action"] = "get", ["x-kubernetes-group-version-kind"] = gvk.DeepClone(), ["responses"] = Responses(t.SchemaName, "200") },
                ["put"] = new JsonObject { ["operationId"] = "replace" + scope + t.Kind, ["x-kubernetes-action"] = "put", ["x-kubernetes-group-version-kind"] = gvk.DeepClone(), ["parameters"] = WriteParams(), ["requestBody"] = new JsonObject { ["content"] = Content(t.SchemaName, "*/*"), ["required"] = true }, ["responses"] = Responses(t.SchemaName, "200", "201") },
                ["delete"] = new JsonObject { ["operationId"] = "delete" + scope + t.Kind, ["x-kubernetes-action"] = "delete", ["x-kubernetes-group-version-kind"] = gvk.DeepClone(), ["responses"] = Responses(t.SchemaName, "200", "202") },
                ["patch"] = new JsonObject
                {
                    ["operationId"] = "patch" + scope + t.Kind,
                    ["x-kubernetes-action"] = "patch",
                    ["x-kubernetes-group-version-kind"] = gvk.DeepClone(),
                    ["parameters"] = patchParams,
                    ["requestBody"] = new JsonObject { ["content"] = Content("io.k8s.apimachinery.pkg.apis.meta.v1.Patch", patchTypes), ["required"] = true },
                    ["responses"] = Responses(t.SchemaName, "200", "201"),
                },
                ["parameters"] = PathParams(t.Namespaced, withName: true),
            };
            paths[prefix + "/{name}"] = item;
            paths[prefix] = new JsonObject
            {
                ["get"] = new JsonObject { ["operationId"] = "list" + scope + t.Kind, ["x-kubernetes-action"] = "list", ["x-kubernetes-group-version-kind"] = gvk.DeepClone(), ["responses"] = new JsonObject { ["200"] = new JsonObject { ["description"] = "OK" } } },
                ["post"] = new JsonObject { ["operationId"] = "create" + scope + t.Kind, ["x-kubernetes-action"] = "post", ["x-kubernetes-group-version-kind"] = gvk.DeepClone(), ["parameters"] = WriteParams(), ["requestBody"] = new JsonObject { ["content"] = Content(t.SchemaName, "*/*"), ["required"] = true }, ["responses"] = Responses(t.SchemaName, "200", "201", "202") },
                ["parameters"] = PathParams(t.Namespaced, withName: false),
            };
            if (t.HasStatus)
            {
                paths[prefix + "/{name}/status"] = new JsonObject
                {
                    ["get"] = new JsonObject { ["operationId"] = "read" + scope + t.Kind + "Status", ["x-kubernetes-action"] = "get", ["x-kubernetes-group-version-kind"] = gvk.DeepClone(), ["responses"] = Responses(t.SchemaName, "200") },
                    ["parameters"] = PathParams(t.Namespaced, withName: true),
                };
            }

            var schema = (JsonObject)t.Schema.DeepClone();
            var props = schema["properties"] as JsonObject ?? [];
            props["metadata"] = new JsonObject
            {
                ["description"] = "Standard object's metadata.",
                ["default"] = new JsonObject(),
                ["allOf"] = new JsonArray(Ref(ObjectMetaName)),
            };
            schema["properties"] = props;
            schema["x-kubernetes-group-version-kind"] = new JsonArray(new JsonObject { ["group"] = t.Group, ["kind"] = t.Kind, ["version"] = t.Version });
            schemas[t.SchemaName] = schema;
        }

        return new JsonObject
        {
            ["openapi"] = "3.0.0",
            ["info"] = new JsonObject { ["title"] = "Kubernetes", ["version"] = "v1.32.4" },
            ["paths"] = paths,
            ["components"] = new JsonObject { ["schemas"] = schemas },
        };
    }

    private static JsonArray PathParams(bool namespaced, bool withName)
    {
        var list = new JsonArray();
        if (withName)
        {
            list.Add(Param("name", "path", "name of the object", required: true));
        }

        if (namespaced)
        {
            list.Add(Param("namespace", "path", "object name and auth scope, such as for teams and projects", required: true));
        }

        return list;
    }

    private static JsonObject ObjectMetaSchema()
    {
        JsonObject S(string type, string description) => new() { ["type"] = type, ["description"] = description };
        JsonObject StringMap(string description) => new() { ["type"] = "object", ["description"] = description, ["additionalProperties"] = new JsonObject { ["type"] = "string", ["default"] = "" } };
        return new JsonObject
        {
            ["type"] = "object",
            ["description"] = "ObjectMeta is metadata that all persisted resources must have, which includes all objects users must create.",
            ["properties"] = new JsonObject
            {
                ["name"] = S("string", "Name must be unique within a namespace. Cannot be updated."),
                ["generateName"] = S("string", "An optional prefix used by the server to generate a unique name when name is not provided."),
                ["namespace"] = S("string", "The namespace the object lives in. Empty for cluster-scoped objects."),
                ["uid"] = S("string", "The unique in time and space value for this object, set by the server on creation."),
                ["resourceVersion"] = S("string", "An opaque value for the internal version of this object, used for optimistic concurrency and watches."),
                ["generation"] = new JsonObject { ["type"] = "integer", ["format"] = "int64", ["description"] = "A sequence number for a specific generation of the desired state." },
                ["creationTimestamp"] = S("string", "The server time when this object was created."),
                ["deletionTimestamp"] = S("string", "The time after which this object will be deleted; set when deletion is requested."),
                ["deletionGracePeriodSeconds"] = new JsonObject { ["type"] = "integer", ["format"] = "int64", ["description"] = "Seconds allowed for graceful termination." },
                ["labels"] = StringMap("Map of string keys and values used to organize and select objects."),
                ["annotations"] = StringMap("Unstructured key value map set by external tools to store arbitrary metadata."),
                ["finalizers"] = new JsonObject { ["type"] = "array", ["description"] = "Must be empty before the object is deleted from the registry.", ["items"] = new JsonObject { ["type"] = "string", ["default"] = "" } },
                ["ownerReferences"] = new JsonObject
                {
                    ["type"] = "array",
                    ["description"] = "Objects this object depends on; when all owners are deleted, this object is garbage collected.",
                    ["items"] = new JsonObject
                    {
                        ["type"] = "object",
                        ["required"] = new JsonArray("apiVersion", "kind", "name", "uid"),
                        ["properties"] = new JsonObject
                        {
                            ["apiVersion"] = S("string", "API version of the referent."),
                            ["kind"] = S("string", "Kind of the referent."),
                            ["name"] = S("string", "Name of the referent."),
                            ["uid"] = S("string", "UID of the referent."),
                            ["controller"] = S("boolean", "If true, this reference points to the managing controller."),
                            ["blockOwnerDeletion"] = S("boolean", "If true, the owner cannot be deleted (foreground) until this reference is removed."),
                        },
                    },
                },
                ["managedFields"] = new JsonObject { ["type"] = "array", ["description"] = "Which manager owns which fields.", ["items"] = new JsonObject { ["type"] = "object", ["x-kubernetes-preserve-unknown-fields"] = true } },
                ["selfLink"] = S("string", "Deprecated; not set by the server."),
            },
        };
    }

    /// <summary>
    /// A Swagger 2.0 rendering of the same kinds: definitions (allOf references become plain $ref, as v2 writes them)
    /// and a PATCH operation per kind with its group-version-kind and the fieldValidation parameter.
    /// </summary>
    private JsonObject SwaggerV2()
    {
        var definitions = new JsonObject();
        var paths = new JsonObject();
        foreach (var (g, v) in _registry.All.Select(t => (t.Group, t.Version)).Distinct())
        {
            var doc = Document(g, v);
            foreach (var (name, schema) in (JsonObject)doc["components"]!["schemas"]!)
            {
                string text = schema!.ToJsonString().Replace("#/components/schemas/", "#/definitions/", StringComparison.Ordinal);
                var converted = (JsonObject)JsonNode.Parse(text)!;
                if (converted["properties"]?["metadata"] is JsonObject meta && meta["allOf"] is JsonArray { Count: 1 } all)
                {
                    meta["$ref"] = all[0]?["$ref"]?.DeepClone();
                    meta.Remove("allOf");
                    meta.Remove("default");
                }

                definitions[name] = converted;
            }

            foreach (var (path, item) in (JsonObject)doc["paths"]!)
            {
                if (item?["patch"] is not JsonObject patch)
                {
                    continue;
                }

                var parameters = new JsonArray();
                foreach (var p in patch["parameters"] as JsonArray ?? [])
                {
                    parameters.Add(new JsonObject { ["name"] = p?["name"]?.DeepClone(), ["in"] = "query", ["type"] = "string", ["uniqueItems"] = true });
                }

                paths[path] = new JsonObject
                {
                    ["patch"] = new JsonObject
                    {
                        ["operationId"] = patch["operationId"]?.DeepClone(),
                        ["consumes"] = new JsonArray("application/json-patch+json", "application/merge-patch+json", "application/apply-patch+yaml"),
                        ["parameters"] = parameters,
                        ["responses"] = new JsonObject { ["200"] = new JsonObject { ["description"] = "OK" } },
                        ["x-kubernetes-action"] = "patch",
                        ["x-kubernetes-group-version-kind"] = patch["x-kubernetes-group-version-kind"]?.DeepClone(),
                    },
                };
            }
        }

        return new JsonObject
        {
            ["swagger"] = "2.0",
            ["info"] = new JsonObject { ["title"] = "Kubernetes", ["version"] = "v1.32.4" },
            ["paths"] = paths,
            ["definitions"] = definitions,
        };
    }
}
