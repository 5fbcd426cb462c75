using System.Security.Cryptography;
using System.Text;
using System.Text.Json.Nodes;
using Dolly.Api.Resources;
using Microsoft.AspNetCore.Http;

namespace Dolly.Api.Http;

/// <summary>/version, legacy discovery (/api, /apis, /apis/g, /apis/g/v) and aggregated discovery (apidiscovery v2, v2beta1).</summary>
internal sealed class Discovery
{
    private readonly ResourceRegistry _registry;

    public Discovery(ResourceRegistry registry) => _registry = registry;

    /// <summary>The version kube-apiserver 1.32 reports; kubectl's dispatcher picks its kubectl by the minor.</summary>
    public static JsonObject Version() => new()
    {
        ["major"] = "1",
        ["minor"] = "32",
        ["gitVersion"] = "v1.32.4",
        ["gitCommit"] = "0000000000000000000000000000000000000000",
        ["gitTreeState"] = "clean",
        ["buildDate"] = "2025-04-22T16:00:00Z",
        ["goVersion"] = "go1.23.6",
        ["compiler"] = "gc",
        ["platform"] = "linux/amd64",
    };

    public static string StorageVersionHash(string group, string version, string kind)
    {
        var hash = SHA256.HashData(Encoding.UTF8.GetBytes(group + "/" + version + "/" + kind));
        return Convert.ToBase64String(hash, 0, 8);
    }

    public async Task HandleAsync(HttpContext context, string[] segments, CancellationToken ct)
    {
        var response = context.Response;
        bool core = segments[0] == "api";
        if (segments.Length == 1)
        {
            string? aggregated = AggregatedVersion(context.Request.Headers.Accept.ToString());
            if (aggregated is not null)
            {
                await WriteAggregatedAsync(context, core, aggregated, ct).ConfigureAwait(false);
                return;
            }

            JsonObject body = core
                ? new JsonObject
                {
                    ["kind"] = "APIVersions",
                    ["versions"] = new JsonArray("v1"),
                    ["serverAddressByClientCIDRs"] = new JsonArray(new JsonObject { ["clientCIDR"] = "0.0.0.0/0", ["serverAddress"] = context.Request.Host.Value }),
                }
                : new JsonObject
                {
                    ["kind"] = "APIGroupList",
                    ["apiVersion"] = "v1",
                    ["groups"] = new JsonArray([.. _registry.Groups.Where(g => g.Name.Length > 0).Select(GroupJson)]),
                };
            await Wire.WriteJsonAsync(response, 200, body, ct).ConfigureAwait(false);
            return;
        }

        if (!core && segments.Length == 2)
        {
            var group = _registry.Groups.FirstOrDefault(g => g.Name == segments[1] && g.Name.Length > 0);
            if (group is null)
            {
                throw new ApiErrorException(404, "NotFound", "the server could not find the requested resource");
            }

            var body = GroupJson(group);
            body["kind"] = "APIGroup";
            body["apiVersion"] = "v1";
            await Wire.WriteJsonAsync(response, 200, body, ct).ConfigureAwait(false);
            return;
        }

        string groupName = core ? "" : segments[1];
        string version = core ? segments[1] : segments[2];
        var types = _registry.All.Where(t => t.Group == groupName && t.Version == version).OrderBy(t => t.Plural, StringComparer.Ordinal).ToList();
        if (types.Count == 0)
        {
            throw new ApiErrorException(404, "NotFound", "the server could not find the requested resource");
        }

        var resources = new JsonArray();
        foreach (var t in types)
        {
            resources.Add(ResourceJson(t, t.Plural, t.Singular, t.Verbs));
            if (t.HasStatus)
            {
                resources.Add(ResourceJson(t, t.Plural + "/status", "", ["get", "patch", "update"]));
            }

            if (t.Plural == "namespaces" && t.Group.Length == 0)
            {
                resources.Add(ResourceJson(t, "namespaces/finalize", "", ["update"]));
            }
        }

        var list = new JsonObject { ["kind"] = "APIResourceList" };
        if (!core)
        {
            list["apiVersion"] = "v1";
        }

        list["groupVersion"] = core ? version : groupName + "/" + version;
        list["resources"] = resources;
        await Wire.WriteJsonAsync(response, 200, list, ct).ConfigureAwait(false);
    }

    private static JsonObject ResourceJson(ResourceType t, string name, string singular, IReadOnlyList<string> verbs)
    {
        var r = new JsonObject
        {
            ["name"] = name,
            ["singularName"] = singular,
            ["namespaced"] = t.Namespaced,
            ["kind"] = t.Kind,
            ["verbs"] = new JsonArray([.. verbs.Select(v => (JsonNode)v)]),
        };
        if (!name.Contains('/', StringComparison.Ordinal))
        {
            if (t.ShortNames.Count > 0)
            {
                r["shortNames"] = new JsonArray([.. t.ShortNames.Select(s => (JsonNode)s)]);
            }

            if (t.Categories.Count > 0)
            {
                r["categories"] = new JsonArray([.. t.Categories.Select(s => (JsonNode)s)]);
            }

            r["storageVersionHash"] = StorageVersionHash(t.Group, t.Version, t.Kind);
        }

        return r;
    }

    private static JsonObject GroupJson(ApiGroupInfo g)
    {
        JsonObject Gv(string v) => new() { ["groupVersion"] = g.Name + "/" + v, ["version"] = v };
        return new JsonObject
        {
            ["name"] = g.Name,
            ["versions"] = new JsonArray([.. g.Versions.Select(Gv)]),
            ["preferredVersion"] = Gv(g.Versions[0]),
        };
    }

    /// <summary>Picks v2 or v2beta1 aggregated discovery if the Accept header allows it, else null (legacy).</summary>
    private static string? AggregatedVersion(string accept)
    {
        foreach (var part in accept.Split(','))
        {
            var p = part.Replace(" ", "", StringComparison.Ordinal);
            if (!p.Contains("g=apidiscovery.k8s.io", StringComparison.Ordinal) || !p.Contains("as=APIGroupDiscoveryList", StringComparison.Ordinal))
            {
                if (Wire.MediaType(p) is "application/json" or "*/*")
                {
                    return null;
                }

                continue;
            }

            if (p.Contains(";v=v2;", StringComparison.Ordinal) || p.EndsWith(";v=v2", StringComparison.Ordinal))
            {
                return "v2";
            }

            if (p.Contains("v=v2beta1", StringComparison.Ordinal))
            {
                return "v2beta1";
            }
        }

        return null;
    }

    private async Task WriteAggregatedAsync(HttpContext context, bool core, string version, CancellationToken ct)
    {
        var items = new JsonArray();
        foreach (var g in _registry.Groups.Where(g => (g.Name.Length == 0) == core))
        {
            var versions = new JsonArray();
            foreach (var v in g.Versions)
            {
                var resources = new JsonArray();
                foreach (var t in g.Resources.Where(t => t.Version == v))
                {
                    var gvk = new JsonObject { ["group"] = t.Group, ["version"] = t.Version, ["kind"] = t.Kind };
                    var r = new JsonObject
                    {
                        ["resource"] = t.Plural,
                        ["responseKind"] = gvk,
                        ["scope"] = t.Namespaced ? "Namespaced" : "Cluster",
                        ["singularResource"] = t.Singular,
                        ["verbs"] = new JsonArray([.. t.Verbs.Select(x => (JsonNode)x)]),
                    };
                    if (t.ShortNames.Count > 0)
                    {
                        r["shortNames"] = new JsonArray([.. t.ShortNames.Select(x => (JsonNode)x)]);
                    }

                    if (t.Categories.Count > 0)
                    {
                        r["categories"] = new JsonArray([.. t.Categories.Select(x => (JsonNode)x)]);
                    }

                    var subs = new JsonArray();
                    if (t.HasStatus)
                    {
                        subs.Add(new JsonObject { ["subresource"] = "status", ["responseKind"] = gvk.DeepClone(), ["verbs"] = new JsonArray("get", "patch", "update") });
                    }

                    if (t.Plural == "namespaces" && t.Group.Length == 0)
                    {
                        subs.Add(new JsonObject { ["subresource"] = "finalize", ["responseKind"] = gvk.DeepClone(), ["verbs"] = new JsonArray("update") });
                    }

                    if (subs.Count > 0)
                    {
                        r["subresources"] = subs;
                    }

                    resources.Add(r);
                }

                versions.Add(new JsonObject { ["version"] = v, ["resources"] = resources, ["freshness"] = "Current" });
            }

            var meta = new JsonObject { ["creationTimestamp"] = null };
            if (g.Name.Length > 0)
            {
                meta = new JsonObject { ["name"] = g.Name, ["creationTimestamp"] = null };
            }

            items.Add(new JsonObject { ["metadata"] = meta, ["versions"] = versions });
        }

        var body = new JsonObject
        {
            ["kind"] = "APIGroupDiscoveryList",
            ["apiVersion"] = "apidiscovery.k8s.io/" + version,
            ["metadata"] = new JsonObject(),
            ["items"] = items,
        };
        string json = body.ToJsonString();
        string etag = "\"" + Convert.ToHexString(SHA512.HashData(Encoding.UTF8.GetBytes(json))) + "\"";
        var response = context.Response;
        response.Headers.ETag = etag;
        response.Headers.Vary = "Accept";
        response.Headers.CacheControl = "public";
        response.ContentType = "application/json;g=apidiscovery.k8s.io;v=" + version + ";as=APIGroupDiscoveryList";
        if (context.Request.Headers.IfNoneMatch.ToString() == etag)
        {
            response.StatusCode = 304;
            return;
        }

        response.StatusCode = 200;
        await response.WriteAsync(json, ct).ConfigureAwait(false);
    }
}
