using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using Dolly.Api.Resources;

namespace Dolly.Api.Semantics;

/// <summary>Server-side Table rendering (what `kubectl get` prints), with the upstream columns per kind.</summary>
internal static partial class Tables
{
    private sealed record Col(string Name, string Type, string Format, string Description, int Priority = 0);

    private const string NameDescription = "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated.";

    private static readonly Col NameCol = new("Name", "string", "name", NameDescription);

    private static readonly Col AgeCol = new("Age", "string", "", "CreationTimestamp is a timestamp representing the server time when this object was created.");

    private static IReadOnlyList<Col> BuiltinColumns(string printer) => printer switch
    {
        "Namespace" => [NameCol, new("Status", "string", "", "The status of the namespace"), AgeCol],
        "PersistentVolumeClaim" =>
        [
            NameCol, new("Status", "string", "", "The phase of the claim."), new("Volume", "string", "", "The volume bound to this claim."),
            new("Capacity", "string", "", "The actual resources of the underlying volume."), new("Access Modes", "string", "", "The access modes of the volume."),
            new("StorageClass", "string", "", "The storage class of the claim."), new("VolumeAttributesClass", "string", "", "The volume attributes class of the claim."),
            AgeCol, new("VolumeMode", "string", "", "Whether the volume is a filesystem or a raw block device.", 1),
        ],
        "PersistentVolume" =>
        [
            NameCol, new("Capacity", "string", "", "The capacity of the volume."), new("Access Modes", "string", "", "The access modes of the volume."),
            new("Reclaim Policy", "string", "", "What happens to the volume when released."), new("Status", "string", "", "The phase of the volume."),
            new("Claim", "string", "", "The claim bound to this volume."), new("StorageClass", "string", "", "The storage class of the volume."),
            new("VolumeAttributesClass", "string", "", "The volume attributes class of the volume."), new("Reason", "string", "", "Why the volume is in this phase."),
            AgeCol, new("VolumeMode", "string", "", "Whether the volume is a filesystem or a raw block device.", 1),
        ],
        "StorageClass" =>
        [
            NameCol, new("Provisioner", "string", "", "The provisioner of the class."), new("ReclaimPolicy", "string", "", "Reclaim policy of provisioned volumes."),
            new("VolumeBindingMode", "string", "", "When volumes are bound."), new("AllowVolumeExpansion", "string", "", "Whether claims may be expanded."), AgeCol,
        ],
        "CSIDriver" =>
        [
            NameCol, new("AttachRequired", "boolean", "", "Whether the driver needs an attach operation."), new("PodInfoOnMount", "boolean", "", "Whether pod info is passed on mount."),
            new("StorageCapacity", "boolean", "", "Whether capacity is reported."), new("TokenRequests", "string", "", "Service account tokens passed to the driver."),
            new("RequiresRepublish", "boolean", "", "Whether volumes are republished periodically."), new("Modes", "string", "", "Volume lifecycle modes."), AgeCol,
        ],
        "Lease" => [NameCol, new("Holder", "string", "", "The holder of the lease."), AgeCol],
        "Event" =>
        [
            new("Last Seen", "string", "", "The time the event was last seen."), new("Type", "string", "", "Normal or Warning."),
            new("Reason", "string", "", "Why the event happened."), new("Object", "string", "", "The object the event is about."),
            new("Subobject", "string", "", "The part of the object the event is about.", 1), new("Source", "string", "", "Who reported the event.", 1),
            new("Message", "string", "", "A description of the event."), new("First Seen", "string", "", "The time the event was first seen.", 1),
            new("Count", "string", "", "How often the event happened.", 1), new("Name", "string", "", "The name of the event.", 1),
        ],
        _ => WorkloadColumns(printer) ?? [NameCol, new("Created At", "date", "", "The time the object was created.")],
    };

    public static JsonArray ColumnDefinitions(ResourceType type)
    {
        var cols = new JsonArray();
        if (type.Printer is { } printer)
        {
            foreach (var c in BuiltinColumns(printer))
            {
                cols.Add(Definition(c.Name, c.Type, c.Format, c.Description, c.Priority));
            }

            return cols;
        }

        cols.Add(Definition("Name", "string", "name", NameDescription, 0));
        foreach (var c in type.Columns)
        {
            string description = c.Description.Length > 0 ? c.Description : "Custom resource definition column (in JSONPath format): " + c.JsonPath;
            cols.Add(Definition(c.Name, c.Type, c.Format, description, c.Priority));
        }

        return cols;
    }

    private static JsonObject Definition(string name, string type, string format, string description, int priority) =>
        new() { ["name"] = name, ["type"] = type, ["format"] = format, ["description"] = description, ["priority"] = priority };

    public static JsonArray Cells(ResourceType type, JsonObject obj, DateTimeOffset now)
    {
        string name = Json.Name(obj);
        string age = Age(Json.Str(obj["metadata"]?["creationTimestamp"]), now);
        var spec = obj["spec"] as JsonObject ?? [];
        var status = obj["status"] as JsonObject ?? [];
        bool deleting = obj["metadata"]?["deletionTimestamp"] is not null;
        switch (type.Printer)
        {
            case "Namespace":
                return [name, Json.Str(status["phase"]) ?? "", age];
            case "PersistentVolumeClaim":
                {
                    bool bound = !string.IsNullOrEmpty(Json.Str(spec["volumeName"]));
                    string sc = Json.Str(obj["metadata"]?["annotations"]?["volume.beta.kubernetes.io/storage-class"]) ?? Json.Str(spec["storageClassName"]) ?? "";
                    return [name, deleting ? "Terminating" : Json.Str(status["phase"]) ?? "", Json.Str(spec["volumeName"]) ?? "",
                        bound ? status["capacity"]?["storage"]?.ToString() ?? "" : "", bound ? Modes(status["accessModes"]) : "", sc,
                        Json.Str(spec["volumeAttributesClassName"]) ?? "<unset>", age, Json.Str(spec["volumeMode"]) ?? "<unset>"];
                }

            case "PersistentVolume":
                {
                    string claim = spec["claimRef"] is JsonObject cr ? Json.Str(cr["namespace"]) + "/" + Json.Str(cr["name"]) : "";
                    return [name, spec["capacity"]?["storage"]?.ToString() ?? "", Modes(spec["accessModes"]), Json.Str(spec["persistentVolumeReclaimPolicy"]) ?? "",
                        deleting ? "Terminating" : Json.Str(status["phase"]) ?? "", claim, Json.Str(spec["storageClassName"]) ?? "",
                        Json.Str(spec["volumeAttributesClassName"]) ?? "<unset>", Json.Str(status["reason"]) ?? "", age, Json.Str(spec["volumeMode"]) ?? "<unset>"];
                }

            case "StorageClass":
                {
                    var ann = obj["metadata"]?["annotations"];
                    bool isDefault = Json.Str(ann?["storageclass.kubernetes.io/is-default-class"]) == "true" ||
                                     Json.Str(ann?["storageclass.beta.kubernetes.io/is-default-class"]) == "true";
                    return [isDefault ? name + " (default)" : name, Json.Str(obj["provisioner"]) ?? "", Json.Str(obj["reclaimPolicy"]) ?? "Delete",
                        Json.Str(obj["volumeBindingMode"]) ?? "Immediate", (Json.Bool(obj["allowVolumeExpansion"]) ?? false) ? "true" : "false", age];
                }

            case "CSIDriver":
                {
                    var modes = Json.StringList(spec["volumeLifecycleModes"]);
                    var tokens = spec["tokenRequests"] is JsonArray t ? string.Join(",", t.Select(x => Json.Str(x?["audience"]) ?? "")) : "<unset>";
                    return [name, Json.Bool(spec["attachRequired"]) ?? true, Json.Bool(spec["podInfoOnMount"]) ?? false,
                        Json.Bool(spec["storageCapacity"]) ?? false, tokens, Json.Bool(spec["requiresRepublish"]) ?? false,
                        modes.Count == 0 ? "<none>" : string.Join(",", modes), age];
                }

            case "Lease":
                return [name, Json.Str(spec["holderIdentity"]) ?? "", age];
            case "Event":
                {
                    var io = obj["involvedObject"] as JsonObject ?? [];
                    string first = Json.Str(obj["firstTimestamp"]) ?? Json.Str(obj["eventTime"]) ?? Json.Str(obj["metadata"]?["creationTimestamp"]) ?? "";
                    string last = Json.Str(obj["lastTimestamp"]) ?? first;
                    string source = Json.Str(obj["source"]?["component"]) ?? Json.Str(obj["reportingComponent"]) ?? "";
                    return [Age(last, now), Json.Str(obj["type"]) ?? "", Json.Str(obj["reason"]) ?? "",
                        (Json.Str(io["kind"]) ?? "").ToLowerInvariant() + "/" + Json.Str(io["name"]), Json.Str(io["fieldPath"]) ?? "", source,
                        Json.Str(obj["message"]) ?? "", Age(first, now), (Json.Long(obj["count"]) ?? 1).ToString(CultureInfo.InvariantCulture), name];
                }

            case "Default":
                return [name, Json.Str(obj["metadata"]?["creationTimestamp"]) ?? ""];
        }

        if (WorkloadCells(type.Printer, obj, age) is { } workload)
        {
            return workload;
        }

        var cells = new JsonArray { name };
        foreach (var c in type.Columns)
        {
            cells.Add(CustomCell(c, JsonPath(obj, c.JsonPath), now));
        }

        return cells;
    }

    private static string Modes(JsonNode? modes) => string.Join(",", Json.StringList(modes).Select(m => m switch
    {
        "ReadWriteOnce" => "RWO",
        "ReadOnlyMany" => "ROX",
        "ReadWriteMany" => "RWX",
        "ReadWriteOncePod" => "RWOP",
        _ => m,
    }));

    private static JsonNode? CustomCell(PrinterColumn c, JsonNode? value, DateTimeOffset now)
    {
        if (value is null)
        {
            return null;
        }

        var kind = value is JsonValue v ? v.GetValueKind() : value is JsonObject ? JsonValueKind.Object : JsonValueKind.Array;
        return c.Type switch
        {
            "integer" when Json.Long(value) is long l => l,
            "number" when Json.Double(value) is double d => d,
            "boolean" when Json.Bool(value) is bool b => b,
            "date" when kind == JsonValueKind.String => DateTimeOffset.TryParse(value.GetValue<string>(), CultureInfo.InvariantCulture, DateTimeStyles.AssumeUniversal, out var t)
                ? HumanDuration(now - t) : "<invalid>",
            "string" => kind == JsonValueKind.String ? value.GetValue<string>() : value.ToJsonString(),
            _ => null,
        };
    }

    /// <summary>Evaluates the simple JSONPath forms printer columns use: .a.b, .a[0].b, .a['x.y'].</summary>
    public static JsonNode? JsonPath(JsonNode? node, string path)
    {
        int i = 0;
        path = path.Trim();
        if (path.StartsWith('{') && path.EndsWith('}'))
        {
            path = path[1..^1];
        }

        while (i < path.Length && node is not null)
        {
            if (path[i] == '.')
            {
                int end = i + 1;
                while (end < path.Length && path[end] != '.' && path[end] != '[')
                {
                    end++;
                }

                node = node is JsonObject o ? o[path[(i + 1)..end]] : null;
                i = end;
            }
            else if (path[i] == '[')
            {
                int end = path.IndexOf(']', i);
                if (end < 0)
                {
                    return null;
                }

                string inner = path[(i + 1)..end].Trim('\'', '"');
                node = node switch
                {
                    JsonArray a when int.TryParse(inner, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out int idx) =>
                        (idx < 0 ? idx + a.Count : idx) is var k && k >= 0 && k < a.Count ? a[k] : null,
                    JsonObject o => o[inner],
                    _ => null,
                };
                i = end + 1;
            }
            else
            {
                return null;
            }
        }

        return node;
    }

    private static string Age(string? timestamp, DateTimeOffset now) =>
        timestamp is not null && DateTimeOffset.TryParse(timestamp, CultureInfo.InvariantCulture, DateTimeStyles.AssumeUniversal, out var t)
            ? HumanDuration(now - t) : "<unknown>";

    /// <summary>apimachinery's duration.HumanDuration.</summary>
    public static string HumanDuration(TimeSpan d)
    {
        if (d < TimeSpan.FromSeconds(-1))
        {
            return "<invalid>";
        }

        if (d < TimeSpan.Zero)
        {
            return "0s";
        }

        long s = (long)d.TotalSeconds;
        static string F(long v) => v.ToString(CultureInfo.InvariantCulture);
        if (s < 120)
        {
            return F(s) + "s";
        }

        long m = s / 60;
        if (m < 10)
        {
            return s % 60 == 0 ? F(m) + "m" : F(m) + "m" + F(s % 60) + "s";
        }

        if (m < 180)
        {
            return F(m) + "m";
        }

        long h = m / 60;
        if (h < 8)
        {
            return m % 60 == 0 ? F(h) + "h" : F(h) + "h" + F(m % 60) + "m";
        }

        if (h < 48)
        {
            return F(h) + "h";
        }

        long days = h / 24;
        if (h < 192)
        {
            return h % 24 == 0 ? F(days) + "d" : F(days) + "d" + F(h % 24) + "h";
        }

        if (days < 365 * 2)
        {
            return F(days) + "d";
        }

        long y = days / 365;
        if (y < 8)
        {
            return days % 365 == 0 ? F(y) + "y" : F(y) + "y" + F(days % 365) + "d";
        }

        return F(y) + "y";
    }
}
