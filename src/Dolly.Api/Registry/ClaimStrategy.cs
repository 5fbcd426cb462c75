using System.Text.Json.Nodes;
using Dolly.Api.Http;
using Dolly.Api.Semantics;

namespace Dolly.Api.Registry;

/// <summary>
/// PersistentVolumeClaim (core/v1): kube-apiserver's pkg/registry/core/persistentvolumeclaim strategy and
/// ValidatePersistentVolumeClaimSpec/Update in pkg/apis/core/validation.
/// </summary>
internal sealed class ClaimStrategy : IKindStrategy
{
    private const string ReadWriteOncePod = "ReadWriteOncePod";

    /// <summary>supportedAccessModes, in the sorted order upstream prints them.</summary>
    private static readonly string[] AccessModes = ["ReadOnlyMany", "ReadWriteMany", "ReadWriteOnce", ReadWriteOncePod];

    /// <summary>supportedVolumeModes, sorted.</summary>
    internal static readonly string[] VolumeModes = ["Block", "Filesystem"];

    public void Default(JsonObject obj, bool create)
    {
        var spec = KindStrategies.Child(obj, "spec");
        spec["volumeMode"] ??= "Filesystem";
        if (create)
        {
            KindStrategies.Child(obj, "status")["phase"] = "Pending";
        }
    }

    public void Validate(JsonObject obj, JsonObject? old, List<FieldCause> errors)
    {
        var spec = obj["spec"] as JsonObject ?? [];
        ValidateAccessModes(spec, errors);

        var storageNode = spec["resources"]?["requests"]?["storage"];
        if (storageNode is null)
        {
            errors.Add(FieldCause.Required("spec.resources[storage]"));
        }
        else if (!Quantity.TryParse(storageNode.ToString(), out decimal storage))
        {
            errors.Add(FieldCause.Invalid("spec.resources.requests[storage]", storageNode, "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"));
        }
        else if (storage <= 0)
        {
            // kube-apiserver's ValidatePositiveQuantityValue; it prints zero in canonical form ("0").
            string shown = storage == 0 ? "0" : storageNode.ToString().Trim();
            errors.Add(FieldCause.Invalid("spec.resources.requests[storage]", JsonValue.Create(shown), "must be greater than zero"));
        }

        // Defaulting fills Filesystem when absent, so only a value someone wrote can be unsupported.
        if (spec["volumeMode"] is { } mode && (Json.Str(mode) is not { } m || !VolumeModes.Contains(m, StringComparer.Ordinal)))
        {
            errors.Add(FieldCause.Unsupported("spec.volumeMode", mode, VolumeModes));
        }

        if (old?["spec"] is JsonObject oldSpec)
        {
            ValidateImmutable(spec, oldSpec, errors);
        }
    }

    private static void ValidateAccessModes(JsonObject spec, List<FieldCause> errors)
    {
        if (spec["accessModes"] is not JsonArray { Count: > 0 })
        {
            errors.Add(FieldCause.Required("spec.accessModes", "at least 1 access mode is required"));
            return;
        }

        ValidateAccessModeValues(spec, errors);
    }

    /// <summary>Each access mode supported, and ReadWriteOncePod alone (claims and volumes share the rule).</summary>
    internal static void ValidateAccessModeValues(JsonObject spec, List<FieldCause> errors)
    {
        var modes = spec["accessModes"] as JsonArray ?? [];
        bool once = false, other = false;
        foreach (var node in modes)
        {
            string? mode = Json.Str(node);
            if (mode is null || !AccessModes.Contains(mode, StringComparer.Ordinal))
            {
                errors.Add(FieldCause.Unsupported("spec.accessModes", node, AccessModes));
            }
            else if (mode == ReadWriteOncePod)
            {
                once = true;
            }
            else
            {
                other = true;
            }
        }

        if (once && other)
        {
            errors.Add(FieldCause.Forbidden("spec.accessModes", "may not use ReadWriteOncePod with other access modes"));
        }
    }

    private static void ValidateImmutable(JsonObject spec, JsonObject oldSpec, List<FieldCause> errors)
    {
        var a = (JsonObject)spec.DeepClone();
        var b = (JsonObject)oldSpec.DeepClone();
        foreach (var s in new[] { a, b })
        {
            (s["resources"] as JsonObject)?.Remove("requests");
            s.Remove("volumeAttributesClassName");
        }

        // The binder fills volumeName once; that transition is allowed.
        if (Json.Str(b["volumeName"]) is null or "")
        {
            a.Remove("volumeName");
            b.Remove("volumeName");
        }

        if (!Json.Same(a, b))
        {
            errors.Add(FieldCause.Forbidden("spec", "spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims"));
        }
    }
}
