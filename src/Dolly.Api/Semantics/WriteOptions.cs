using System.Text.Json.Nodes;

namespace Dolly.Api.Semantics;

/// <summary>Query options common to create, update and patch.</summary>
internal sealed record WriteOptions(bool DryRun, string FieldManager, string FieldValidation, bool Force)
{
    /// <summary>Set for server-side apply, whose create records an Apply entry.</summary>
    public bool Apply { get; init; }

    public static readonly WriteOptions Default = new(false, "", "Ignore", false);
}

/// <summary>The object a write produced, its HTTP status, and any warnings for the Warning header.</summary>
internal sealed record WriteResult(JsonObject Object, int StatusCode, IReadOnlyList<string> Warnings);

/// <summary>Parsed DeleteOptions (body or query).</summary>
internal sealed record DeleteOptions(bool DryRun, string? PropagationPolicy, string? PreconditionUid, string? PreconditionResourceVersion);

/// <summary>The outcome of a delete: the object (or a Success Status) and the HTTP status.</summary>
internal sealed record DeleteResult(JsonObject Body, int StatusCode);
