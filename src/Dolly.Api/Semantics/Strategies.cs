using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using Dolly.Api.Http;
using Dolly.Api.Registry;
using Dolly.Api.Resources;

namespace Dolly.Api.Semantics;

/// <summary>Per-kind defaulting and validation, mirroring the kube-apiserver strategies for the kinds served.</summary>
internal static partial class Strategies
{
    public const string CrdCleanupFinalizer = "customresourcecleanup.apiextensions.k8s.io";

    [GeneratedRegex("^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")]
    private static partial Regex Subdomain();

    [GeneratedRegex("^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")]
    private static partial Regex Label();

    [GeneratedRegex("^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")]
    private static partial Regex LabelValue();

    [GeneratedRegex("^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")]
    private static partial Regex QualifiedName();

    private static IEnumerable<FieldCause> ValidateLabels(JsonObject labels)
    {
        foreach (var (key, value) in labels)
        {
            string v = Json.Str(value) ?? "";
            int slash = key.LastIndexOf('/');
            string prefix = slash < 0 ? "" : key[..slash], name = slash < 0 ? key : key[(slash + 1)..];
            if (name.Length is 0 or > 63 || !QualifiedName().IsMatch(name) || (slash >= 0 && (prefix.Length > 253 || !Subdomain().IsMatch(prefix))))
            {
                yield return FieldCause.Invalid("metadata.labels", JsonValue.Create(key),
                    "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')");
            }

            if (v.Length > 63 || !LabelValue().IsMatch(v))
            {
                yield return FieldCause.Invalid("metadata.labels", JsonValue.Create(v),
                    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')");
            }
        }
    }

    private const string QualifiedNameFormat = "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";

    /// <summary>
    /// What apimachinery's IsQualifiedName says is wrong with <paramref name="value"/> (an optional DNS subdomain prefix
    /// and '/', then a name of at most 63 characters), or null when nothing is.
    /// </summary>
    public static string? QualifiedNameProblem(string value)
    {
        string[] parts = value.Split('/');
        string name;
        switch (parts.Length)
        {
            case 1:
                name = parts[0];
                break;
            case 2:
                if (parts[0].Length == 0)
                {
                    return "prefix part must be non-empty";
                }

                if (parts[0].Length > 253 || !Subdomain().IsMatch(parts[0]))
                {
                    return "prefix part a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
                }

                name = parts[1];
                break;
            default:
                return "a qualified name " + QualifiedNameFormat + " with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')";
        }

        return name.Length == 0 ? "name part must be non-empty"
            : name.Length > 63 ? "name part must be no more than 63 characters"
            : !QualifiedName().IsMatch(name) ? "name part " + QualifiedNameFormat
            : null;
    }

    /// <summary>Name checks: DNS-1123 label for namespaces, DNS-1123 subdomain for everything else.</summary>
    public static IEnumerable<FieldCause> ValidateName(ResourceType type, string name, string field = "metadata.name")
    {
        if (type.Plural == "namespaces")
        {
            if (name.Length > 63 || !Label().IsMatch(name))
            {
                yield return FieldCause.Invalid(field, JsonValue.Create(name),
                    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')");
            }
        }
        else if (name.Length > 253 || !Subdomain().IsMatch(name))
        {
            yield return FieldCause.Invalid(field, JsonValue.Create(name),
                "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')");
        }
    }

    /// <summary>Checks metadata shapes the schema does not cover (labels, annotations, finalizers are string maps/lists).</summary>
    public static IEnumerable<FieldCause> ValidateMeta(JsonObject meta)
    {
        foreach (var field in new[] { "labels", "annotations" })
        {
            if (meta[field] is null)
            {
                continue;
            }

            if (meta[field] is not JsonObject map || map.Any(kv => Json.Str(kv.Value) is null))
            {
                yield return FieldCause.Invalid("metadata." + field, null, "must be a map of string keys to string values");
            }
            else if (field == "labels")
            {
                foreach (var cause in ValidateLabels(map))
                {
                    yield return cause;
                }
            }
        }

        if (meta["finalizers"] is not null && (meta["finalizers"] is not JsonArray f || f.Any(x => Json.Str(x) is null)))
        {
            yield return FieldCause.Invalid("metadata.finalizers", null, "must be a list of strings");
        }

        if (meta["generateName"] is not null && Json.Str(meta["generateName"]) is null)
        {
            yield return FieldCause.Invalid("metadata.generateName", meta["generateName"], "must be a string");
        }

        if (meta["ownerReferences"] is not null)
        {
            if (meta["ownerReferences"] is not JsonArray refs || refs.Any(r => r is not JsonObject))
            {
                yield return FieldCause.Invalid("metadata.ownerReferences", null, "must be a list of owner references");
                yield break;
            }

            foreach (var r in refs.OfType<JsonObject>())
            {
                foreach (var (field, what) in new[] { ("apiVersion", "version"), ("kind", "kind"), ("name", "name"), ("uid", "uid") })
                {
                    if (string.IsNullOrEmpty(Json.Str(r[field])))
                    {
                        yield return FieldCause.Invalid("metadata.ownerReferences." + field, JsonValue.Create(""), what + " must not be empty");
                    }
                }
            }
        }
    }

    /// <summary>Fills defaults on create (and the derived parts on every write).</summary>
    public static void Default(ResourceType type, JsonObject obj, bool create)
    {
        var meta = Json.Meta(obj);
        if (DefaultWorkload(type, obj, create))
        {
            return;
        }

        if (KindStrategies.For(type) is { } strategy)
        {
            strategy.Default(obj, create);
            return;
        }

        switch (type.Plural)
        {
            case "namespaces" when type.Group.Length == 0:
                {
                    var spec = Child(obj, "spec");
                    if (create)
                    {
                        // As kube-apiserver's namespace strategy: every new namespace carries the "kubernetes" finalizer.
                        spec["finalizers"] = new JsonArray("kubernetes");
                    }

                    var labels = Child(meta, "labels");
                    labels["kubernetes.io/metadata.name"] = Json.Name(obj);
                    var status = Child(obj, "status");
                    status["phase"] = meta["deletionTimestamp"] is null ? "Active" : "Terminating";
                    break;
                }

            case "csidrivers" when type.Group == "storage.k8s.io":
                {
                    var spec = Child(obj, "spec");
                    spec["attachRequired"] ??= true;
                    spec["podInfoOnMount"] ??= false;
                    spec["requiresRepublish"] ??= false;
                    spec["storageCapacity"] ??= false;
                    spec["fsGroupPolicy"] ??= "ReadWriteOnceWithFSType";
                    spec["volumeLifecycleModes"] ??= new JsonArray("Persistent");
                    break;
                }

            case "customresourcedefinitions" when type.Group == "apiextensions.k8s.io":
                DefaultCrd(obj, create);
                break;
        }
    }

    private static JsonObject Child(JsonObject parent, string key) => KindStrategies.Child(parent, key);

    private static void DefaultCrd(JsonObject crd, bool create)
    {
        var spec = Child(crd, "spec");
        var names = Child(spec, "names");
        string kind = Json.Str(names["kind"]) ?? "";
        names["singular"] ??= kind.ToLowerInvariant();
        names["listKind"] ??= kind + "List";
        if (create)
        {
            var meta = Json.Meta(crd);
            var list = meta["finalizers"] as JsonArray ?? [];
            if (!list.Any(f => Json.Str(f) == CrdCleanupFinalizer))
            {
                list.Add(CrdCleanupFinalizer);
            }

            meta["finalizers"] = list;
        }

        foreach (var v in spec["versions"] as JsonArray ?? [])
        {
            if (v is JsonObject version && version["schema"]?["openAPIV3Schema"] is JsonObject schema && schema["type"] is null)
            {
                schema["type"] = "object";
            }
        }

        // The naming and establishing controllers run inline: names are accepted and the CRD established at once.
        var storage = (spec["versions"] as JsonArray ?? []).OfType<JsonObject>()
            .Where(v => Json.Bool(v["storage"]) == true).Select(v => Json.Str(v["name"])).FirstOrDefault() ?? "";
        var status = Child(crd, "status");
        status["acceptedNames"] = names.DeepClone();
        var stored = Json.StringList(status["storedVersions"]);
        if (storage.Length > 0 && !stored.Contains(storage))
        {
            stored.Add(storage);
        }

        status["storedVersions"] = new JsonArray([.. stored.Select(s => (JsonNode)s)]);
        string now = Json.Str(crd["metadata"]?["creationTimestamp"]) ?? "";
        var conditions = new JsonArray
        {
            new JsonObject { ["type"] = "NamesAccepted", ["status"] = "True", ["lastTransitionTime"] = now, ["reason"] = "NoConflicts", ["message"] = "no conflicts found" },
            new JsonObject { ["type"] = "Established", ["status"] = "True", ["lastTransitionTime"] = now, ["reason"] = "InitialNamesAccepted", ["message"] = "the initial names have been accepted" },
        };
        if (crd["metadata"]?["deletionTimestamp"] is not null)
        {
            conditions.Add(new JsonObject { ["type"] = "Terminating", ["status"] = "True", ["lastTransitionTime"] = now, ["reason"] = "InstanceDeletionInProgress", ["message"] = "CustomResource deletion is in progress" });
        }

        status["conditions"] = conditions;
    }

    /// <summary>Kind-specific validation; <paramref name="old"/> is null on create.</summary>
    public static List<FieldCause> Validate(ResourceType type, JsonObject obj, JsonObject? old)
    {
        var errors = new List<FieldCause>();
        if (ValidateWorkload(type, obj, old, errors))
        {
            return errors;
        }

        if (KindStrategies.For(type) is { } strategy)
        {
            strategy.Validate(obj, old, errors);
            return errors;
        }

        switch (type.Group, type.Plural)
        {
            case ("apiextensions.k8s.io", "customresourcedefinitions"):
                ValidateCrd(obj, old, errors);
                break;
            default:
                SnapshotValidation.Validate(type, obj, old, errors);
                break;
        }

        return errors;
    }

    private static void ValidateCrd(JsonObject crd, JsonObject? old, List<FieldCause> errors)
    {
        var spec = crd["spec"] as JsonObject ?? [];
        string group = Json.Str(spec["group"]) ?? "";
        string plural = Json.Str(spec["names"]?["plural"]) ?? "";
        if (Json.Name(crd) != plural + "." + group)
        {
            errors.Add(FieldCause.Invalid("metadata.name", JsonValue.Create(Json.Name(crd)), "must be spec.names.plural+\".\"+spec.group"));
        }

        if (!group.Contains('.', StringComparison.Ordinal))
        {
            errors.Add(FieldCause.Invalid("spec.group", JsonValue.Create(group), "should be a domain with at least one dot"));
        }

        var versions = (spec["versions"] as JsonArray ?? []).OfType<JsonObject>().ToList();
        if (versions.Count(v => Json.Bool(v["storage"]) == true) != 1)
        {
            errors.Add(FieldCause.Invalid("spec.versions", null, "must have exactly one version marked as storage version"));
        }

        if (old is not null && Json.Str(old["spec"]?["group"]) != group)
        {
            errors.Add(FieldCause.Invalid("spec.group", JsonValue.Create(group), "field is immutable"));
        }

        if (old is not null && Json.Str(old["spec"]?["scope"]) != Json.Str(spec["scope"]))
        {
            errors.Add(FieldCause.Invalid("spec.scope", spec["scope"], "field is immutable"));
        }
    }
}
