using System.Text;
using System.Text.Json.Nodes;

namespace Dolly.Api.Http;

/// <summary>
/// Decodes the one protobuf request body kubectl sends for the kinds served here: `kubectl create namespace` posts a
/// Namespace in the Kubernetes protobuf envelope ("k8s\0" + runtime.Unknown). Only the fields a new namespace can
/// carry are read (name, generateName, labels, annotations, finalizers, spec.finalizers).
/// </summary>
internal static class Protobuf
{
    public const string MediaType = "application/vnd.kubernetes.protobuf";

    private static ReadOnlySpan<byte> Magic => "k8s\0"u8;

    public static JsonObject? DecodeNamespace(byte[] body)
    {
        if (!body.AsSpan().StartsWith(Magic))
        {
            return null;
        }

        string kind = "", apiVersion = "";
        byte[]? raw = null;
        foreach (var (field, value) in Fields(body.AsMemory(Magic.Length)))
        {
            if (field == 1)
            {
                foreach (var (f, v) in Fields(value))
                {
                    if (f == 1)
                    {
                        apiVersion = Encoding.UTF8.GetString(v.Span);
                    }
                    else if (f == 2)
                    {
                        kind = Encoding.UTF8.GetString(v.Span);
                    }
                }
            }
            else if (field == 2)
            {
                raw = value.ToArray();
            }
        }

        if (kind != "Namespace" || apiVersion != "v1" || raw is null)
        {
            return null;
        }

        var obj = new JsonObject { ["apiVersion"] = "v1", ["kind"] = "Namespace" };
        foreach (var (field, value) in Fields(raw))
        {
            if (field == 1)
            {
                obj["metadata"] = DecodeMeta(value);
            }
            else if (field == 2)
            {
                var finalizers = new JsonArray();
                foreach (var (f, v) in Fields(value))
                {
                    if (f == 1)
                    {
                        finalizers.Add(Encoding.UTF8.GetString(v.Span));
                    }
                }

                obj["spec"] = new JsonObject { ["finalizers"] = finalizers };
            }
        }

        return obj;
    }

    private static JsonObject DecodeMeta(ReadOnlyMemory<byte> data)
    {
        var meta = new JsonObject();
        foreach (var (field, value) in Fields(data))
        {
            string Text() => Encoding.UTF8.GetString(value.Span);
            switch (field)
            {
                case 1:
                    meta["name"] = Text();
                    break;
                case 2:
                    meta["generateName"] = Text();
                    break;
                case 11 or 12:
                    {
                        string key = field == 11 ? "labels" : "annotations";
                        var map = meta[key] as JsonObject ?? [];
                        string k = "", v = "";
                        foreach (var (f, e) in Fields(value))
                        {
                            if (f == 1)
                            {
                                k = Encoding.UTF8.GetString(e.Span);
                            }
                            else if (f == 2)
                            {
                                v = Encoding.UTF8.GetString(e.Span);
                            }
                        }

                        map[k] = v;
                        meta[key] = map;
                        break;
                    }

                case 14:
                    {
                        var list = meta["finalizers"] as JsonArray ?? [];
                        list.Add(Text());
                        meta["finalizers"] = list;
                        break;
                    }
            }
        }

        return meta;
    }

    /// <summary>The length-delimited fields of a message (varint and fixed fields are skipped).</summary>
    private static List<(int Field, ReadOnlyMemory<byte> Value)> Fields(ReadOnlyMemory<byte> data)
    {
        var result = new List<(int, ReadOnlyMemory<byte>)>();
        var span = data.Span;
        int pos = 0;
        while (pos < span.Length)
        {
            ulong key = Varint(span, ref pos);
            int field = (int)(key >> 3);
            switch ((int)(key & 7))
            {
                case 0:
                    Varint(span, ref pos);
                    break;
                case 1:
                    pos += 8;
                    break;
                case 2:
                    {
                        int len = checked((int)Varint(span, ref pos));
                        if (len < 0 || pos + len > span.Length)
                        {
                            throw Errors.BadRequest("the protobuf body is truncated");
                        }

                        result.Add((field, data.Slice(pos, len)));
                        pos += len;
                        break;
                    }

                case 5:
                    pos += 4;
                    break;
                default:
                    throw Errors.BadRequest("the protobuf body has an unsupported wire type");
            }
        }

        return result;
    }

    private static ulong Varint(ReadOnlySpan<byte> span, ref int pos)
    {
        ulong value = 0;
        for (int shift = 0; shift < 64; shift += 7)
        {
            if (pos >= span.Length)
            {
                throw Errors.BadRequest("the protobuf body is truncated");
            }

            byte b = span[pos++];
            value |= (ulong)(b & 0x7F) << shift;
            if ((b & 0x80) == 0)
            {
                return value;
            }
        }

        throw Errors.BadRequest("the protobuf body has an invalid varint");
    }
}
