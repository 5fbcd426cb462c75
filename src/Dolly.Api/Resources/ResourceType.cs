using System.Text.Json.Nodes;

namespace Dolly.Api.Resources;

/// <summary>One additional printer column of a kind (CRD additionalPrinterColumns).</summary>
internal sealed record PrinterColumn(string Name, string Type, string Format, string Description, int Priority, string JsonPath);

/// <summary>Everything the server knows about one served resource in one version.</summary>
internal sealed class ResourceType
{
    public required string Group { get; init; }

    public required string Version { get; init; }

    public required string Plural { get; init; }

    public required string Singular { get; init; }

    public required string Kind { get; init; }

    public required string ListKind { get; init; }

    public required bool Namespaced { get; init; }

    public IReadOnlyList<string> ShortNames { get; init; } = [];

    public IReadOnlyList<string> Categories { get; init; } = [];

    public bool HasStatus { get; init; }

    /// <summary>Compiled-in kinds: strategic merge patch, printer in code, Update may omit resourceVersion.</summary>
    public bool Builtin { get; init; }

    /// <summary>Name of the compiled-in printer, or null to use <see cref="Columns"/>.</summary>
    public string? Printer { get; init; }

    public IReadOnlyList<PrinterColumn> Columns { get; init; } = [];

    public required JsonObject Schema { get; init; }

    public bool ReturnDeletedObject { get; init; }

    public IReadOnlyList<string> ExtraFieldSelectors { get; init; } = [];

    /// <summary>The OpenAPI component name, e.g. io.k8s.storage.snapshot.v1.VolumeSnapshot.</summary>
    public required string SchemaName { get; init; }

    public string ApiVersion => Group.Length == 0 ? Version : Group + "/" + Version;

    /// <summary>Storage is shared by all versions of a resource.</summary>
    public string StorageKey => Group + "/" + Plural;

    public string GroupResource => Group.Length == 0 ? Plural : Plural + "." + Group;

    /// <summary>Verbs of a compiled-in kind that serves fewer than the usual eight (read-only kinds).</summary>
    public IReadOnlyList<string>? VerbsOverride { get; init; }

    public IReadOnlyList<string> Verbs => VerbsOverride ?? (Builtin
        ? (Plural == "namespaces"
            ? ["create", "delete", "get", "list", "patch", "update", "watch"]
            : ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"])
        : ["delete", "deletecollection", "get", "list", "patch", "create", "update", "watch"]);

    /// <summary>The OpenAPI name kube-apiserver gives a CRD kind: the group's domain parts reversed.</summary>
    public static string CustomSchemaName(string group, string version, string kind) =>
        string.Join('.', group.Split('.').Reverse()) + "." + version + "." + kind;
}
