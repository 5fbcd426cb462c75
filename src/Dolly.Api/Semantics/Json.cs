using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace Dolly.Api.Semantics;

/// <summary>Small helpers over System.Text.Json.Nodes for the object shapes the API serves.</summary>
internal static class Json
{
    public static JsonObject Meta(JsonObject obj)
    {
        if (obj["metadata"] is not JsonObject meta)
        {
            meta = new JsonObject();
            obj["metadata"] = meta;
        }

        return meta;
    }

    public static string? Str(JsonNode? node) =>
        node is JsonValue v && v.GetValueKind() == JsonValueKind.String ? v.GetValue<string>() : null;

    /// <summary>Follows a dotted path (".spec.source.name" or "spec.source.name").</summary>
    public static JsonNode? At(JsonNode? node, string path)
    {
        foreach (var part in path.TrimStart('.').Split('.', StringSplitOptions.RemoveEmptyEntries))
        {
            node = node is JsonObject o ? o[part] : null;
            if (node is null)
            {
                return null;
            }
        }

        return node;
    }

    /// <summary>A JSON boolean, or null for anything else.</summary>
    public static bool? Bool(JsonNode? node) => node is JsonValue v && v.GetValueKind() is JsonValueKind.True or JsonValueKind.False
        ? v.GetValueKind() == JsonValueKind.True : null;

    /// <summary>An integral number whatever CLR type backs the node (parsed, int, long or integral double).</summary>
    public static long? Long(JsonNode? node)
    {
        if (node is not JsonValue v || v.GetValueKind() != JsonValueKind.Number)
        {
            return null;
        }

        if (v.TryGetValue(out long l))
        {
            return l;
        }

        if (v.TryGetValue(out int i))
        {
            return i;
        }

        return Double(v) is double d && Math.Floor(d) == d && Math.Abs(d) < 9.2e18 ? (long)d : null;
    }

    /// <summary>A number whatever CLR type backs the node.</summary>
    public static double? Double(JsonNode? node)
    {
        if (node is not JsonValue v || v.GetValueKind() != JsonValueKind.Number)
        {
            return null;
        }

        if (v.TryGetValue(out double d))
        {
            return d;
        }

        if (v.TryGetValue(out long l))
        {
            return l;
        }

        if (v.TryGetValue(out int i))
        {
            return i;
        }

        return v.TryGetValue(out decimal m) ? (double)m : null;
    }

    public static string MetaString(JsonObject obj, string field) => Str(obj["metadata"]?[field]) ?? "";

    public static string Name(JsonObject obj) => MetaString(obj, "name");

    public static string Namespace(JsonObject obj) => MetaString(obj, "namespace");

    public static string Time(DateTimeOffset t) => t.UtcDateTime.ToString("yyyy-MM-dd'T'HH:mm:ss'Z'", CultureInfo.InvariantCulture);

    public static string MicroTime(DateTimeOffset t) => t.UtcDateTime.ToString("yyyy-MM-dd'T'HH:mm:ss.ffffff'Z'", CultureInfo.InvariantCulture);

    public static JsonObject Labels(JsonObject obj) => obj["metadata"]?["labels"] as JsonObject ?? [];

    public static List<string> StringList(JsonNode? node) =>
        node is JsonArray a ? [.. a.Select(Str).OfType<string>()] : [];

    /// <summary>Deep equality of two JSON values; objects compare key-order independently.</summary>
    public static bool Same(JsonNode? a, JsonNode? b) => JsonNode.DeepEquals(a, b);

    /// <summary>Returns an object with keys sorted recursively (for last-applied and stable output).</summary>
    public static JsonNode? Sorted(JsonNode? node) => node switch
    {
        JsonObject o => new JsonObject(o.OrderBy(p => p.Key, StringComparer.Ordinal)
            .Select(p => KeyValuePair.Create(p.Key, Sorted(p.Value)))),
        JsonArray a => new JsonArray([.. a.Select(Sorted)]),
        null => null,
        _ => node.DeepClone(),
    };
}
