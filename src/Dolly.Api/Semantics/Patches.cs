using System.Globalization;
using System.Text.Json.Nodes;
using Dolly.Api.Http;

namespace Dolly.Api.Semantics;

/// <summary>JSON Patch (RFC 6902), JSON Merge Patch (RFC 7386) and Kubernetes strategic merge patch.</summary>
internal static class Patches
{
    /// <summary>
    /// Applies an RFC 6902 patch document to a copy of <paramref name="target"/>. A document that is not a list of
    /// operation objects cannot be decoded (400); an operation that cannot apply to this object is 422.
    /// </summary>
    public static JsonNode? ApplyJsonPatch(JsonNode target, JsonNode? patch)
    {
        if (patch is not JsonArray ops)
        {
            throw Errors.BadRequest("json: cannot unmarshal object into Go value of type jsonpatch.Patch");
        }

        JsonNode? doc = target.DeepClone();
        foreach (var opNode in ops)
        {
            if (opNode is not JsonObject op)
            {
                throw Errors.BadRequest("json: cannot unmarshal into Go value of type jsonpatch.Operation");
            }

            string kind = Json.Str(op["op"]) ?? throw Errors.JsonPatchFailed("Unexpected kind: unknown");
            string path = Json.Str(op["path"]) ?? throw Errors.JsonPatchFailed("missing path");
            switch (kind)
            {
                case "add":
                    doc = Add(doc, path, Value(op));
                    break;
                case "remove":
                    doc = Remove(doc, path, out _);
                    break;
                case "replace":
                    doc = Remove(doc, path, out _);
                    doc = Add(doc, path, Value(op));
                    break;
                case "move":
                    {
                        string from = Json.Str(op["from"]) ?? throw Errors.JsonPatchFailed("move operation missing from");
                        doc = Remove(doc, from, out var moved);
                        doc = Add(doc, path, moved);
                        break;
                    }

                case "copy":
                    {
                        string from = Json.Str(op["from"]) ?? throw Errors.JsonPatchFailed("copy operation missing from");
                        doc = Add(doc, path, Get(doc, from)?.DeepClone());
                        break;
                    }

                case "test":
                    if (!Json.Same(Get(doc, path), op["value"]))
                    {
                        throw Errors.JsonPatchFailed("testing value " + path + " failed: test failed");
                    }

                    break;
                default:
                    throw Errors.JsonPatchFailed("Unexpected kind: " + kind);
            }
        }

        return doc;
    }

    private static JsonNode? Value(JsonObject op) =>
        op.ContainsKey("value") ? op["value"]?.DeepClone() : throw Errors.JsonPatchFailed("missing value for " + Json.Str(op["op"]) + " operation");

    private static List<string> Pointer(string path)
    {
        if (path.Length == 0)
        {
            return [];
        }

        if (path[0] != '/')
        {
            throw Errors.JsonPatchFailed("invalid JSON pointer \"" + path + "\"");
        }

        return [.. path[1..].Split('/').Select(p => p.Replace("~1", "/", StringComparison.Ordinal).Replace("~0", "~", StringComparison.Ordinal))];
    }

    private static ApiErrorException Missing(string path) =>
        Errors.JsonPatchFailed("doc is missing path: \"" + path + "\"");

    private static JsonNode? Get(JsonNode? doc, string path)
    {
        JsonNode? node = doc;
        foreach (var part in Pointer(path))
        {
            node = node switch
            {
                JsonObject o when o.TryGetPropertyValue(part, out var child) => child,
                JsonArray a when int.TryParse(part, NumberStyles.None, CultureInfo.InvariantCulture, out int i) && i < a.Count => a[i],
                _ => throw Missing(path),
            };
        }

        return node;
    }

    private static (JsonNode Parent, string Last) Parent(JsonNode? doc, string path)
    {
        var parts = Pointer(path);
        if (parts.Count == 0)
        {
            throw Errors.JsonPatchFailed("the root document cannot be replaced");
        }

        var parent = parts.Count == 1 ? doc
            : Get(doc, "/" + string.Join('/', parts.Take(parts.Count - 1).Select(p => p.Replace("~", "~0", StringComparison.Ordinal).Replace("/", "~1", StringComparison.Ordinal))));

        return (parent ?? throw Missing(path), parts[^1]);
    }

    private static JsonNode? Add(JsonNode? doc, string path, JsonNode? value)
    {
        var (parent, last) = Parent(doc, path);
        switch (parent)
        {
            case JsonObject o:
                o[last] = value;
                break;
            case JsonArray a when last == "-":
                a.Add(value);
                break;
            case JsonArray a when int.TryParse(last, NumberStyles.None, CultureInfo.InvariantCulture, out int i) && i <= a.Count:
                a.Insert(i, value);
                break;
            default:
                throw Missing(path);
        }

        return doc;
    }

    private static JsonNode? Remove(JsonNode? doc, string path, out JsonNode? removed)
    {
        var (parent, last) = Parent(doc, path);
        switch (parent)
        {
            case JsonObject o when o.TryGetPropertyValue(last, out removed):
                o.Remove(last);
                break;
            case JsonArray a when int.TryParse(last, NumberStyles.None, CultureInfo.InvariantCulture, out int i) && i < a.Count:
                removed = a[i];
                a.RemoveAt(i);
                break;
            default:
                throw Missing(path);
        }

        return doc;
    }

    /// <summary>RFC 7386: objects merge key by key, null deletes, anything else replaces.</summary>
    public static JsonNode? MergePatch(JsonNode? target, JsonNode? patch)
    {
        if (patch is not JsonObject p)
        {
            return patch?.DeepClone();
        }

        var result = target is JsonObject t ? (JsonObject)t.DeepClone() : new JsonObject();
        foreach (var (key, value) in p)
        {
            if (value is null)
            {
                result.Remove(key);
            }
            else
            {
                result[key] = MergePatch(result[key], value);
            }
        }

        return result;
    }

    /// <summary>
    /// Strategic merge patch for the compiled-in kinds: like a merge patch, except that lists named in
    /// <see cref="MergeKeys"/> merge item by item, primitive "merge" lists union, and the $patch,
    /// $retainKeys, $deleteFromPrimitiveList and $setElementOrder directives are honoured.
    /// </summary>
    public static JsonNode? StrategicMerge(JsonNode? target, JsonNode? patch, string path = "")
    {
        if (patch is not JsonObject p)
        {
            return patch?.DeepClone();
        }

        if (Json.Str(p["$patch"]) == "replace")
        {
            var copy = (JsonObject)p.DeepClone();
            copy.Remove("$patch");
            return copy;
        }

        if (Json.Str(p["$patch"]) == "delete")
        {
            return null;
        }

        var result = target is JsonObject t ? (JsonObject)t.DeepClone() : new JsonObject();
        if (p["$retainKeys"] is JsonArray retain)
        {
            var keep = Json.StringList(retain).ToHashSet(StringComparer.Ordinal);
            foreach (var key in result.Select(kv => kv.Key).Where(k => !keep.Contains(k)).ToList())
            {
                result.Remove(key);
            }
        }

        foreach (var (key, value) in p)
        {
            if (key.StartsWith("$setElementOrder/", StringComparison.Ordinal) || key is "$retainKeys" or "$patch")
            {
                continue;
            }

            if (key.StartsWith("$deleteFromPrimitiveList/", StringComparison.Ordinal))
            {
                string field = key["$deleteFromPrimitiveList/".Length..];
                if (result[field] is JsonArray list && value is JsonArray drop)
                {
                    result[field] = new JsonArray([.. list.Where(x => !drop.Any(d => Json.Same(d, x))).Select(x => x?.DeepClone())]);
                }

                continue;
            }

            string childPath = path + "." + key;
            if (value is null)
            {
                result.Remove(key);
            }
            else if (value is JsonArray items && MergeKeys.TryGetValue(LastSegments(childPath), out string? mergeKey))
            {
                result[key] = MergeList(result[key] as JsonArray, items, mergeKey, childPath);
            }
            else
            {
                result[key] = StrategicMerge(result[key], value, childPath);
            }
        }

        return result;
    }

    private static string LastSegments(string path)
    {
        // Keys are matched on the last two path segments, e.g. "metadata.finalizers" or "status.conditions".
        var parts = path.TrimStart('.').Split('.');
        return parts.Length >= 2 ? parts[^2] + "." + parts[^1] : parts[^1];
    }

    /// <summary>Lists that merge rather than replace; "" marks a primitive list merged as a set.</summary>
    private static readonly Dictionary<string, string> MergeKeys = new(StringComparer.Ordinal)
    {
        ["metadata.finalizers"] = "",
        ["metadata.ownerReferences"] = "uid",
        ["status.conditions"] = "type",

        // Pod specs (pods and the templates of workloads), services and service accounts, as their Go types tag them.
        ["spec.containers"] = "name",
        ["spec.initContainers"] = "name",
        ["spec.ephemeralContainers"] = "name",
        ["spec.volumes"] = "name",
        ["spec.imagePullSecrets"] = "name",
        ["spec.hostAliases"] = "ip",
        ["spec.topologySpreadConstraints"] = "topologyKey",
        ["containers.ports"] = "containerPort",
        ["containers.env"] = "name",
        ["containers.volumeMounts"] = "mountPath",
        ["containers.volumeDevices"] = "devicePath",
        ["initContainers.ports"] = "containerPort",
        ["initContainers.env"] = "name",
        ["initContainers.volumeMounts"] = "mountPath",
        ["initContainers.volumeDevices"] = "devicePath",
        ["spec.ports"] = "port",
        ["secrets"] = "name",
    };

    private static JsonArray MergeList(JsonArray? live, JsonArray patch, string mergeKey, string path)
    {
        var result = live is null ? [] : (JsonArray)live.DeepClone();
        foreach (var item in patch)
        {
            if (mergeKey.Length == 0)
            {
                if (!result.Any(x => Json.Same(x, item)))
                {
                    result.Add(item?.DeepClone());
                }

                continue;
            }

            if (item is not JsonObject patchItem)
            {
                continue;
            }

            var keyValue = patchItem[mergeKey];
            int index = -1;
            for (int i = 0; i < result.Count; i++)
            {
                if (result[i] is JsonObject o && Json.Same(o[mergeKey], keyValue))
                {
                    index = i;
                    break;
                }
            }

            if (Json.Str(patchItem["$patch"]) == "delete")
            {
                if (index >= 0)
                {
                    result.RemoveAt(index);
                }
            }
            else if (index >= 0)
            {
                result[index] = StrategicMerge(result[index], patchItem, path);
            }
            else
            {
                result.Add(StrategicMerge(null, patchItem, path));
            }
        }

        return result;
    }
}
