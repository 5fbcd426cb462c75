using System.Text.Json.Nodes;
using Dolly.Api.Http;

namespace Dolly.Api.Semantics;

/// <summary>
/// metadata.managedFields: which manager set which field. An Update owns the fields it changed (taking them from
/// whoever had them); an Apply owns exactly the fields in its configuration, may not change another manager's field
/// without force (409 FieldManagerConflict), and removes the fields it applied before but left out this time unless
/// someone else owns them. Lists are atomic (one field), as for schemas without list-type markers. Fields are kept
/// as paths of object keys; FieldsV1 is their tree form with "f:" prefixes.
/// </summary>
internal static class ManagedFields
{
    private const char Sep = '\u001f';

    private sealed class Entry
    {
        public required string Manager { get; init; }

        public required string Operation { get; init; }

        public string? Subresource { get; init; }

        public string ApiVersion { get; set; } = "";

        public string Time { get; set; } = "";

        public HashSet<string> Fields { get; set; } = new(StringComparer.Ordinal);

        public JsonObject ToJson()
        {
            var e = new JsonObject
            {
                ["manager"] = Manager,
                ["operation"] = Operation,
                ["apiVersion"] = ApiVersion,
                ["time"] = Time,
                ["fieldsType"] = "FieldsV1",
                ["fieldsV1"] = ToTree(Fields),
            };
            if (Subresource is not null)
            {
                e["subresource"] = Subresource;
            }

            return e;
        }
    }

    /// <summary>The leaf field paths of an object: object keys recursed, lists and scalars are leaves.</summary>
    public static HashSet<string> Leaves(JsonObject obj)
    {
        var set = new HashSet<string>(StringComparer.Ordinal);
        foreach (var (key, value) in obj)
        {
            if (key is "apiVersion" or "kind")
            {
                continue;
            }

            if (key == "metadata" && value is JsonObject meta)
            {
                foreach (var field in new[] { "labels", "annotations" })
                {
                    foreach (var (k, _) in meta[field] as JsonObject ?? [])
                    {
                        set.Add("metadata" + Sep + field + Sep + k);
                    }
                }

                foreach (var field in new[] { "finalizers", "ownerReferences" })
                {
                    if (meta[field] is JsonArray { Count: > 0 })
                    {
                        set.Add("metadata" + Sep + field);
                    }
                }

                continue;
            }

            Walk(value, key, set);
        }

        return set;
    }

    private static void Walk(JsonNode? node, string path, HashSet<string> set)
    {
        if (node is JsonObject o && o.Count > 0)
        {
            foreach (var (k, v) in o)
            {
                Walk(v, path + Sep + k, set);
            }
        }
        else
        {
            set.Add(path);
        }
    }

    private static JsonNode? At(JsonNode? node, string path)
    {
        foreach (var part in path.Split(Sep))
        {
            node = node is JsonObject o ? o[part] : null;
            if (node is null)
            {
                return null;
            }
        }

        return node;
    }

    private static void RemoveAt(JsonObject root, string path)
    {
        var parts = path.Split(Sep);
        JsonNode? node = root;
        for (int i = 0; i < parts.Length - 1; i++)
        {
            node = node is JsonObject o ? o[parts[i]] : null;
        }

        (node as JsonObject)?.Remove(parts[^1]);
    }

    private static JsonObject ToTree(HashSet<string> fields)
    {
        var tree = new JsonObject();
        foreach (var path in fields.OrderBy(f => f, StringComparer.Ordinal))
        {
            var node = tree;
            var parts = path.Split(Sep);
            for (int i = 0; i < parts.Length; i++)
            {
                string key = "f:" + parts[i];
                if (node[key] is not JsonObject child)
                {
                    child = new JsonObject();
                    node[key] = child;
                }

                if (i < parts.Length - 1 && !child.ContainsKey("."))
                {
                    child["."] = new JsonObject();
                }

                node = child;
            }
        }

        return tree;
    }

    private static void FromTree(JsonObject? tree, string prefix, HashSet<string> into)
    {
        foreach (var (key, value) in tree ?? [])
        {
            if (!key.StartsWith("f:", StringComparison.Ordinal))
            {
                continue;
            }

            string path = prefix.Length == 0 ? key[2..] : prefix + Sep + key[2..];
            var children = (value as JsonObject ?? []).Where(kv => kv.Key.StartsWith("f:", StringComparison.Ordinal)).ToList();
            if (children.Count == 0)
            {
                into.Add(path);
            }
            else
            {
                FromTree(value as JsonObject, path, into);
            }
        }
    }

    private static List<Entry> Read(JsonObject obj)
    {
        var entries = new List<Entry>();
        foreach (var node in obj["metadata"]?["managedFields"] as JsonArray ?? [])
        {
            if (node is not JsonObject e || Json.Str(e["manager"]) is not { } manager)
            {
                continue;
            }

            var entry = new Entry
            {
                Manager = manager,
                Operation = Json.Str(e["operation"]) ?? "Update",
                Subresource = Json.Str(e["subresource"]),
                ApiVersion = Json.Str(e["apiVersion"]) ?? "",
                Time = Json.Str(e["time"]) ?? "",
            };
            FromTree(e["fieldsV1"] as JsonObject, "", entry.Fields);
            entries.Add(entry);
        }

        return entries;
    }

    private static void Write(JsonObject obj, List<Entry> entries)
    {
        var meta = Json.Meta(obj);
        var kept = entries.Where(e => e.Fields.Count > 0).Select(e => (JsonNode)e.ToJson()).ToArray();
        if (kept.Length == 0)
        {
            meta.Remove("managedFields");
        }
        else
        {
            meta["managedFields"] = new JsonArray(kept);
        }
    }

    /// <summary>A new object: its creator owns every field.</summary>
    public static void OnCreate(JsonObject obj, string manager, string operation, string apiVersion, string now)
    {
        var entry = new Entry { Manager = manager, Operation = operation, ApiVersion = apiVersion, Time = now, Fields = Leaves(obj) };
        Write(obj, [entry]);
    }

    /// <summary>An update or non-apply patch: the changed fields move to <paramref name="manager"/>.</summary>
    public static void OnUpdate(JsonObject old, JsonObject next, string manager, string? subresource, string apiVersion, string now)
    {
        var before = Leaves(old);
        var after = Leaves(next);
        var changed = new HashSet<string>(before.Union(after).Where(p => !Json.Same(At(old, p), At(next, p))), StringComparer.Ordinal);
        if (changed.Count == 0)
        {
            return;
        }

        var entries = Read(old);
        foreach (var e in entries)
        {
            e.Fields.ExceptWith(changed);
        }

        var mine = entries.FirstOrDefault(e => e.Manager == manager && e.Operation == "Update" && e.Subresource == subresource);
        if (mine is null)
        {
            mine = new Entry { Manager = manager, Operation = "Update", Subresource = subresource };
            entries.Add(mine);
        }

        mine.ApiVersion = apiVersion;
        mine.Time = now;
        mine.Fields.UnionWith(changed.Where(after.Contains));
        Write(next, entries);
    }

    /// <summary>Server-side apply of <paramref name="applied"/> onto <paramref name="live"/>; returns the merged object.</summary>
    public static JsonObject Apply(JsonObject live, JsonObject applied, string manager, bool force, string apiVersion, string now)
    {
        var appliedFields = Leaves(applied);
        var entries = Read(live);
        var conflicts = new List<(Entry Owner, string Path)>();
        foreach (var path in appliedFields.OrderBy(p => p, StringComparer.Ordinal))
        {
            var liveValue = At(live, path);
            if (liveValue is null || Json.Same(liveValue, At(applied, path)))
            {
                continue;
            }

            foreach (var e in entries)
            {
                if (!(e.Manager == manager && e.Operation == "Apply") && e.Subresource is null && e.Fields.Contains(path))
                {
                    conflicts.Add((e, path));
                }
            }
        }

        if (conflicts.Count > 0 && !force)
        {
            throw Conflict(conflicts);
        }

        foreach (var (owner, path) in conflicts)
        {
            owner.Fields.Remove(path);
        }

        var result = (JsonObject)live.DeepClone();
        var previous = entries.FirstOrDefault(e => e.Manager == manager && e.Operation == "Apply" && e.Subresource is null);
        if (previous is not null)
        {
            foreach (var path in previous.Fields.Where(p => !appliedFields.Contains(p)))
            {
                if (!entries.Any(e => e != previous && e.Fields.Contains(path)))
                {
                    RemoveAt(result, path);
                }
            }
        }

        Merge(result, applied);
        if (previous is null)
        {
            previous = new Entry { Manager = manager, Operation = "Apply" };
            entries.Add(previous);
        }

        if (!previous.Fields.SetEquals(appliedFields) || previous.ApiVersion != apiVersion)
        {
            previous.Time = now;
        }

        previous.ApiVersion = apiVersion;
        previous.Fields = appliedFields;
        Write(result, entries);
        return result;
    }

    private static void Merge(JsonObject target, JsonObject applied)
    {
        foreach (var (key, value) in applied)
        {
            if (key == "metadata" && value is JsonObject meta && target["metadata"] is JsonObject liveMeta)
            {
                foreach (var (k, v) in meta)
                {
                    if (k is "labels" or "annotations" && v is JsonObject map)
                    {
                        var liveMap = liveMeta[k] as JsonObject ?? [];
                        foreach (var (mk, mv) in map)
                        {
                            liveMap[mk] = mv?.DeepClone();
                        }

                        liveMeta[k] = liveMap;
                    }
                    else if (k is "finalizers" or "ownerReferences")
                    {
                        liveMeta[k] = v?.DeepClone();
                    }
                }

                continue;
            }

            if (value is JsonObject child && target[key] is JsonObject existing)
            {
                Merge(existing, child);
            }
            else
            {
                target[key] = value?.DeepClone();
            }
        }
    }

    private static string Dotted(string path) => "." + path.Replace(Sep, '.');

    private static ApiErrorException Conflict(List<(Entry Owner, string Path)> conflicts)
    {
        static string Who(Entry e) => "\"" + e.Manager + "\" using " + e.ApiVersion + (e.Operation == "Update" && e.Time.Length > 0 ? " at " + e.Time : "");
        string message;
        if (conflicts.Count == 1)
        {
            message = "Apply failed with 1 conflict: conflict with " + Who(conflicts[0].Owner) + ": " + Dotted(conflicts[0].Path);
        }
        else
        {
            var groups = conflicts.GroupBy(c => c.Owner).Select(g => "conflicts with " + Who(g.Key) + ":\n" + string.Join("\n", g.Select(c => "- " + Dotted(c.Path))));
            message = "Apply failed with " + conflicts.Count.ToString(System.Globalization.CultureInfo.InvariantCulture) + " conflicts: " + string.Join("\n", groups);
        }

        var causes = new JsonArray();
        foreach (var (owner, path) in conflicts)
        {
            causes.Add(new JsonObject { ["reason"] = "FieldManagerConflict", ["message"] = "conflict with " + Who(owner), ["field"] = Dotted(path) });
        }

        return new ApiErrorException(409, "Conflict", message, new JsonObject { ["causes"] = causes });
    }
}
