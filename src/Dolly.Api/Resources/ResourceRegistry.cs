using System.Globalization;
using System.Reflection;
using System.Text.Json.Nodes;

using Dolly.Api.Semantics;

namespace Dolly.Api.Resources;

/// <summary>A served API group with its versions in preference order.</summary>
internal sealed record ApiGroupInfo(string Name, IReadOnlyList<string> Versions, IReadOnlyList<ResourceType> Resources);

/// <summary>
/// The kinds the server serves: compiled-in kinds from embedded definitions, plus one entry per served version of
/// every established CustomResourceDefinition. Readers take an immutable snapshot; CRD writes replace it.
/// </summary>
internal sealed class ResourceRegistry
{
    private readonly IReadOnlyList<ResourceType> _builtins;
    private volatile Snapshot _current;

    public ResourceRegistry()
    {
        _builtins = [.. BuiltinDefinitions.SelectMany(name => LoadEmbedded(name)).SelectMany(d => FromDefinition(d, builtin: true))];
        _current = new Snapshot(_builtins);
    }

    /// <summary>The embedded definitions of the compiled-in kinds, one file per API group family.</summary>
    public static readonly IReadOnlyList<string> BuiltinDefinitions = ["core.yaml", "storage.yaml", "apps.yaml", "rbac.yaml"];

    /// <summary>The embedded CRD files: the upstream snapshot kinds, and Dolly's own (dolly.io).</summary>
    public static readonly IReadOnlyList<string> BootstrapDefinitions = ["bootstrap-snapshot.yaml", "bootstrap-dolly.yaml"];

    /// <summary>CRDs shipped with the server and installed on first start.</summary>
    public static IReadOnlyList<JsonObject> BootstrapCrds() => [.. BootstrapDefinitions.SelectMany(LoadEmbedded)];

    private static List<JsonObject> LoadEmbedded(string name)
    {
        using var stream = Assembly.GetExecutingAssembly().GetManifestResourceStream("Dolly.Api.Definitions." + name)
            ?? throw new InvalidOperationException("missing embedded definition " + name);
        using var reader = new StreamReader(stream);
        var root = Yaml.Parse(reader.ReadToEnd()) as JsonArray ?? throw new InvalidOperationException(name + " is not a list");
        return [.. root.Select(n => (JsonObject)n!)];
    }

    public ResourceType? Find(string group, string version, string plural) =>
        _current.ByPath.GetValueOrDefault((group, version, plural));

    /// <summary>The type for a storage key in its group's preferred version (for GC and cascades).</summary>
    public ResourceType? FindPreferred(string storageKey) => _current.PreferredByStorage.GetValueOrDefault(storageKey);

    public IReadOnlyList<ApiGroupInfo> Groups => _current.Groups;

    public IReadOnlyList<ResourceType> All => _current.All;

    public bool IsBuiltinStorage(string storageKey) => _builtins.Any(b => b.StorageKey == storageKey);

    /// <summary>Rebuilds the CRD-served part from the stored CRDs.</summary>
    public void Refresh(IEnumerable<JsonObject> crds)
    {
        var types = new List<ResourceType>(_builtins);
        foreach (var crd in crds)
        {
            if (IsEstablished(crd))
            {
                types.AddRange(FromDefinition(crd, builtin: false));
            }
        }

        _current = new Snapshot(types);
    }

    private static bool IsEstablished(JsonObject crd) =>
        crd["status"]?["conditions"] is JsonArray conds &&
        conds.Any(c => c?["type"]?.GetValue<string>() == "Established" && c?["status"]?.GetValue<string>() == "True");

    /// <summary>Turns a CRD-shaped definition into one type per served version.</summary>
    public static IEnumerable<ResourceType> FromDefinition(JsonObject def, bool builtin)
    {
        var spec = (JsonObject)def["spec"]!;
        var names = (JsonObject)spec["names"]!;
        var extra = def["builtin"] as JsonObject;
        string group = spec["group"]?.GetValue<string>() ?? "";
        string kind = names["kind"]!.GetValue<string>();
        string plural = names["plural"]!.GetValue<string>();
        foreach (var v in (JsonArray)spec["versions"]!)
        {
            if (v is not JsonObject version || Json.Bool(version["served"]) != true)
            {
                continue;
            }

            string versionName = version["name"]!.GetValue<string>();
            var schema = version["schema"]?["openAPIV3Schema"] as JsonObject ?? new JsonObject { ["type"] = "object", ["x-kubernetes-preserve-unknown-fields"] = true };
            yield return new ResourceType
            {
                Group = group,
                Version = versionName,
                Plural = plural,
                Singular = names["singular"]?.GetValue<string>() ?? kind.ToLowerInvariant(),
                Kind = kind,
                ListKind = names["listKind"]?.GetValue<string>() ?? kind + "List",
                Namespaced = spec["scope"]?.GetValue<string>() == "Namespaced",
                ShortNames = Strings(names["shortNames"]),
                Categories = Strings(names["categories"]),
                HasStatus = version["subresources"]?["status"] is JsonObject,
                Builtin = builtin,
                Printer = extra?["printer"]?.GetValue<string>(),
                Columns = Columns(version["additionalPrinterColumns"] as JsonArray),
                Schema = (JsonObject)schema.DeepClone(),
                ReturnDeletedObject = builtin && extra?["returnDeleted"]?.GetValue<bool>() == true,
                VerbsOverride = extra?["verbs"] is JsonArray verbs ? Strings(verbs) : null,
                ExtraFieldSelectors = [.. Strings(extra?["fieldSelectors"]),
                    .. (version["selectableFields"] as JsonArray ?? []).Select(f => f?["jsonPath"]?.GetValue<string>()?.TrimStart('.') ?? "")],
                SchemaName = extra?["schemaName"]?.GetValue<string>() ?? ResourceType.CustomSchemaName(group, versionName, kind),
            };
        }
    }

    private static List<string> Strings(JsonNode? node) =>
        node is JsonArray a ? [.. a.Select(x => x?.GetValue<string>() ?? "").Where(x => x.Length > 0)] : [];

    private static List<PrinterColumn> Columns(JsonArray? cols)
    {
        if (cols is null || cols.Count == 0)
        {
            return [new PrinterColumn("Age", "date", "", "", 0, ".metadata.creationTimestamp")];
        }

        return [.. cols.OfType<JsonObject>().Select(c => new PrinterColumn(
            c["name"]?.GetValue<string>() ?? "",
            c["type"]?.GetValue<string>() ?? "string",
            c["format"]?.GetValue<string>() ?? "",
            c["description"]?.GetValue<string>() ?? "",
            (int)(Json.Long(c["priority"]) ?? 0),
            c["jsonPath"]?.GetValue<string>() ?? ""))];
    }

    /// <summary>Kubernetes version order: GA over beta over alpha, then higher numbers first.</summary>
    public static int CompareVersions(string a, string b)
    {
        static (int Stability, int Major, int Minor) Parse(string v)
        {
            var m = System.Text.RegularExpressions.Regex.Match(v, "^v([0-9]+)(?:(alpha|beta)([0-9]+))?$");
            if (!m.Success)
            {
                return (-1, 0, 0);
            }

            int stability = m.Groups[2].Value switch { "" => 2, "beta" => 1, _ => 0 };
            return (stability, int.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture),
                m.Groups[3].Success ? int.Parse(m.Groups[3].Value, CultureInfo.InvariantCulture) : 0);
        }

        var (sa, ma, na) = Parse(a);
        var (sb, mb, nb) = Parse(b);
        if (sa != sb)
        {
            return sb.CompareTo(sa);
        }

        if (sa < 0)
        {
            return string.CompareOrdinal(a, b);
        }

        return ma != mb ? mb.CompareTo(ma) : nb.CompareTo(na);
    }

    private sealed class Snapshot
    {
        public Snapshot(IReadOnlyList<ResourceType> all)
        {
            All = all;
            foreach (var t in all)
            {
                ByPath[(t.Group, t.Version, t.Plural)] = t;
            }

            var groups = new List<ApiGroupInfo>();
            foreach (var g in all.GroupBy(t => t.Group))
            {
                var versions = g.Select(t => t.Version).Distinct().ToList();
                versions.Sort(CompareVersions);
                groups.Add(new ApiGroupInfo(g.Key, versions, [.. g.OrderBy(t => t.Plural, StringComparer.Ordinal)]));
                foreach (var t in g)
                {
                    if (t.Version == versions[0])
                    {
                        PreferredByStorage[t.StorageKey] = t;
                    }
                }
            }

            // The core group first, then the compiled-in groups, then CRD groups by name, as kube-apiserver orders them.
            Groups = [.. groups.OrderBy(g => g.Name.Length == 0 ? 0 : g.Resources[0].Builtin ? 1 : 2).ThenBy(g => g.Name, StringComparer.Ordinal)];
        }

        public IReadOnlyList<ResourceType> All { get; }

        public Dictionary<(string, string, string), ResourceType> ByPath { get; } = [];

        public Dictionary<string, ResourceType> PreferredByStorage { get; } = new(StringComparer.Ordinal);

        public IReadOnlyList<ApiGroupInfo> Groups { get; }
    }
}
