using System.Text.Json.Nodes;

namespace Dolly.Api.Semantics;

/// <summary>Maintains metadata.managedFields: one entry per manager, operation and subresource.</summary>
internal static class ManagedFields
{
    /// <summary>The FieldsV1 set of an object: every object key as f:key, lists and scalars as leaves.</summary>
    public static JsonObject FieldSet(JsonObject obj, bool root = true)
    {
        var set = new JsonObject();
        foreach (var (key, value) in obj)
        {
            if (root && key is "apiVersion" or "kind")
            {
                continue;
            }

            if (root && key == "metadata" && value is JsonObject meta)
            {
                var m = new JsonObject();
                foreach (var field in new[] { "labels", "annotations" })
                {
                    if (meta[field] is JsonObject map && map.Count > 0)
                    {
                        var inner = new JsonObject { ["."] = new JsonObject() };
                        foreach (var (k, _) in map)
                        {
                            inner["f:" + k] = new JsonObject();
                        }

                        m["f:" + field] = inner;
                    }
                }

                if (meta["finalizers"] is JsonArray { Count: > 0 } fin)
                {
                    var inner = new JsonObject { ["."] = new JsonObject() };
                    foreach (var f in Json.StringList(fin))
                    {
                        inner["v:\"" + f + "\""] = new JsonObject();
                    }

                    m["f:finalizers"] = inner;
                }

                if (m.Count > 0)
                {
                    set["f:metadata"] = m;
                }

                continue;
            }

            set["f:" + key] = value is JsonObject child && child.Count > 0 ? FieldSet(child, root: false) : new JsonObject();
        }

        return set;
    }

    /// <summary>Records that <paramref name="manager"/> wrote <paramref name="obj"/> now.</summary>
    public static void Record(JsonObject obj, string manager, string operation, string? subresource, string apiVersion, string now)
    {
        var meta = Json.Meta(obj);
        var list = meta["managedFields"] as JsonArray ?? [];
        for (int i = list.Count - 1; i >= 0; i--)
        {
            if (list[i] is JsonObject e && Json.Str(e["manager"]) == manager && Json.Str(e["operation"]) == operation &&
                Json.Str(e["subresource"]) == subresource)
            {
                list.RemoveAt(i);
            }
        }

        var copy = (JsonObject)obj.DeepClone();
        Json.Meta(copy).Remove("managedFields");
        JsonObject fields;
        if (subresource == "status")
        {
            fields = copy["status"] is JsonObject st ? new JsonObject { ["f:status"] = FieldSet(st, root: false) } : [];
        }
        else
        {
            if (copy.ContainsKey("status") && subresource is null && operation == "Update")
            {
                copy.Remove("status");
            }

            fields = FieldSet(copy);
        }

        var entry = new JsonObject
        {
            ["manager"] = manager,
            ["operation"] = operation,
            ["apiVersion"] = apiVersion,
            ["time"] = now,
            ["fieldsType"] = "FieldsV1",
            ["fieldsV1"] = fields,
        };
        if (subresource is not null)
        {
            entry["subresource"] = subresource;
        }

        list.Add(entry);
        meta["managedFields"] = list;
    }
}
