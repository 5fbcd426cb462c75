using System.Buffers;
using System.Buffers.Binary;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace Dolly.Api.Http;

/// <summary>
/// Encodes the Swagger 2.0 document in the protobuf form kubectl reads from /openapi/v2
/// (gnostic openapi_v2.Document: definitions, and paths whose PATCH operations carry the group-version-kind and
/// the fieldValidation parameter). Vendor extensions travel as YAML text; JSON is YAML, so they are written as JSON.
/// </summary>
internal static class OpenApiV2Proto
{
    // The "@" form is what clients ask for; the reply names the "." form, which Go's mime parser accepts.
    public const string MediaType = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf";

    /// <summary>Protobuf wire writing: tags, varints, fixed64 and length-delimited fields.</summary>
    private sealed class Writer
    {
        private readonly ArrayBufferWriter<byte> _buffer = new();

        public byte[] ToArray() => _buffer.WrittenSpan.ToArray();

        private void Varint(ulong value)
        {
            while (value >= 0x80)
            {
                _buffer.Write([(byte)(value | 0x80)]);
                value >>= 7;
            }

            _buffer.Write([(byte)value]);
        }

        private void Tag(int field, int wireType) => Varint(((ulong)field << 3) | (uint)wireType);

        public void String(int field, string? value)
        {
            if (string.IsNullOrEmpty(value))
            {
                return;
            }

            Bytes(field, Encoding.UTF8.GetBytes(value));
        }

        public void Bytes(int field, byte[] value)
        {
            Tag(field, 2);
            Varint((ulong)value.Length);
            _buffer.Write(value);
        }

        public void Message(int field, Writer message) => Bytes(field, message.ToArray());

        public void Bool(int field, bool value)
        {
            if (value)
            {
                Tag(field, 0);
                Varint(1);
            }
        }

        public void Int64(int field, long value)
        {
            Tag(field, 0);
            Varint((ulong)value);
        }

        public void Double(int field, double value)
        {
            Tag(field, 1);
            Span<byte> buffer = stackalloc byte[8];
            BinaryPrimitives.WriteDoubleLittleEndian(buffer, value);
            _buffer.Write(buffer);
        }
    }

    public static byte[] Encode(JsonObject swagger)
    {
        var doc = new Writer();
        doc.String(1, Json(swagger["swagger"]));
        var info = new Writer();
        info.String(1, Json(swagger["info"]?["title"]));
        info.String(2, Json(swagger["info"]?["version"]));
        doc.Message(2, info);
        var paths = new Writer();
        foreach (var (path, item) in swagger["paths"] as JsonObject ?? [])
        {
            var named = new Writer();
            named.String(1, path);
            named.Message(2, PathItem(item as JsonObject ?? []));
            paths.Message(2, named);
        }

        doc.Message(8, paths);
        var definitions = new Writer();
        foreach (var (name, schema) in swagger["definitions"] as JsonObject ?? [])
        {
            definitions.Message(1, Named(name, Schema(schema as JsonObject ?? [])));
        }

        doc.Message(9, definitions);
        return doc.ToArray();
    }

    private static string? Json(JsonNode? node) => node is JsonValue v && v.GetValueKind() == JsonValueKind.String ? v.GetValue<string>() : null;

    private static Writer Named(string name, Writer value)
    {
        var named = new Writer();
        named.String(1, name);
        named.Message(2, value);
        return named;
    }

    /// <summary>gnostic Any: the value as YAML text.</summary>
    private static Writer AnyYaml(JsonNode? value)
    {
        var any = new Writer();
        any.String(2, value?.ToJsonString() ?? "null");
        return any;
    }

    private static void Extensions(Writer target, int field, JsonObject source)
    {
        foreach (var (key, value) in source)
        {
            if (key.StartsWith("x-", StringComparison.Ordinal))
            {
                target.Message(field, Named(key, AnyYaml(value)));
            }
        }
    }

    private static Writer PathItem(JsonObject item)
    {
        var w = new Writer();
        foreach (var (verb, field) in new[] { ("get", 2), ("put", 3), ("post", 4), ("delete", 5), ("patch", 8) })
        {
            if (item[verb] is JsonObject op)
            {
                w.Message(field, Operation(op));
            }
        }

        return w;
    }

    private static Writer Operation(JsonObject op)
    {
        var w = new Writer();
        w.String(3, Json(op["description"]));
        w.String(5, Json(op["operationId"]));
        foreach (var p in op["parameters"] as JsonArray ?? [])
        {
            if (p is not JsonObject parameter)
            {
                continue;
            }

            // ParametersItem.parameter -> Parameter.non_body_parameter -> NonBodyParameter.query/path sub-schema.
            var sub = new Writer();
            bool path = Json(parameter["in"]) == "path";
            sub.Bool(1, Semantics.Json.Bool(parameter["required"]) == true);
            sub.String(2, Json(parameter["in"]));
            sub.String(3, Json(parameter["description"]));
            sub.String(4, Json(parameter["name"]));
            sub.String(path ? 5 : 6, Json(parameter["type"]) ?? "string");
            var nonBody = new Writer();
            nonBody.Message(path ? 4 : 3, sub);
            var param = new Writer();
            param.Message(2, nonBody);
            var itemWriter = new Writer();
            itemWriter.Message(1, param);
            w.Message(8, itemWriter);
        }

        var responses = new Writer();
        var ok = new Writer();
        ok.String(1, "OK");
        var value = new Writer();
        value.Message(1, ok);
        responses.Message(1, Named("200", value));
        w.Message(9, responses);
        Extensions(w, 13, op);
        return w;
    }

    private static Writer Schema(JsonObject s)
    {
        var w = new Writer();
        w.String(1, Json(s["$ref"]));
        w.String(2, Json(s["format"]));
        w.String(3, Json(s["title"]));
        w.String(4, Json(s["description"]));
        if (s["default"] is { } def)
        {
            w.Message(5, AnyYaml(def));
        }

        if (Semantics.Json.Double(s["maximum"]) is double max)
        {
            w.Double(7, max);
        }

        if (Semantics.Json.Double(s["minimum"]) is double min)
        {
            w.Double(9, min);
        }

        foreach (var (key, field) in new[] { ("maxLength", 11), ("minLength", 12), ("maxItems", 14), ("minItems", 15) })
        {
            if (Semantics.Json.Long(s[key]) is long n)
            {
                w.Int64(field, n);
            }
        }

        w.String(13, Json(s["pattern"]));
        foreach (var r in s["required"] as JsonArray ?? [])
        {
            w.String(19, Json(r));
        }

        foreach (var e in s["enum"] as JsonArray ?? [])
        {
            w.Message(20, AnyYaml(e));
        }

        if (s["additionalProperties"] is JsonObject additional)
        {
            var item = new Writer();
            item.Message(1, Schema(additional));
            w.Message(21, item);
        }
        else if (Semantics.Json.Bool(s["additionalProperties"]) is bool allowed)
        {
            var item = new Writer();
            item.Bool(2, allowed);
            w.Message(21, item);
        }

        if (Json(s["type"]) is { } type)
        {
            var t = new Writer();
            t.String(1, type);
            w.Message(22, t);
        }

        if (s["items"] is JsonObject items)
        {
            var i = new Writer();
            i.Message(1, Schema(items));
            w.Message(23, i);
        }

        foreach (var a in s["allOf"] as JsonArray ?? [])
        {
            w.Message(24, Schema(a as JsonObject ?? []));
        }

        if (s["properties"] is JsonObject props)
        {
            var p = new Writer();
            foreach (var (name, schema) in props)
            {
                p.Message(1, Named(name, Schema(schema as JsonObject ?? [])));
            }

            w.Message(25, p);
        }

        Extensions(w, 31, s);
        return w;
    }
}
