using System.Text.Json.Nodes;
using Dolly.Api.Http;
using Dolly.Api.Resources;

namespace Dolly.Api.Semantics;

/// <summary>
/// The validation the upstream snapshot and group snapshot CRDs express as CEL rules and oneOf constraints: exactly
/// one source, immutable sources that stay set once set, no empty class names, and a complete VolumeSnapshotRef.
/// Messages and field paths are those the rules carry, so errors read as they do on a real cluster.
/// </summary>
internal static class SnapshotValidation
{
    public static void Validate(ResourceType type, JsonObject obj, JsonObject? old, List<FieldCause> errors)
    {
        switch (type.Group, type.Kind)
        {
            case ("snapshot.storage.k8s.io", "VolumeSnapshot"):
                ValidateSource(obj, old, errors, "spec.source", "persistentVolumeClaimName", "volumeSnapshotContentName");
                EmptyClassName(obj, errors, "volumeSnapshotClassName");
                break;
            case ("snapshot.storage.k8s.io", "VolumeSnapshotContent"):
                ValidateSource(obj, old, errors, "spec.source", "volumeHandle", "snapshotHandle");
                Immutable(obj, old, errors, "spec", "sourceVolumeMode");
                var reference = obj["spec"]?["volumeSnapshotRef"];
                if (reference is JsonObject r && (string.IsNullOrEmpty(Json.Str(r["name"])) || string.IsNullOrEmpty(Json.Str(r["namespace"]))))
                {
                    errors.Add(FieldCause.InvalidTyped("spec.volumeSnapshotRef", "object",
                        "both spec.volumeSnapshotRef.name and spec.volumeSnapshotRef.namespace must be set"));
                }

                break;
            case ("groupsnapshot.storage.k8s.io", "VolumeGroupSnapshot"):
                ValidateSource(obj, old, errors, "spec.source", "selector", "volumeGroupSnapshotContentName");
                EmptyClassName(obj, errors, "volumeGroupSnapshotClassName");
                break;
            case ("groupsnapshot.storage.k8s.io", "VolumeGroupSnapshotContent"):
                ValidateSource(obj, old, errors, "spec.source", "volumeHandles", "groupSnapshotHandles");
                break;
        }
    }

    private static void EmptyClassName(JsonObject obj, List<FieldCause> errors, string field)
    {
        if (obj["spec"] is JsonObject spec && spec.ContainsKey(field) && Json.Str(spec[field]) == "")
        {
            errors.Add(FieldCause.InvalidTyped("spec." + field, "string", field + " must not be the empty string when set"));
        }
    }

    private static void ValidateSource(JsonObject obj, JsonObject? old, List<FieldCause> errors, string path, string a, string b)
    {
        var source = Json.At(obj, path) as JsonObject;
        if (source is null)
        {
            return;
        }

        bool hasA = IsSet(source[a]), hasB = IsSet(source[b]);
        if (hasA == hasB)
        {
            errors.Add(FieldCause.InvalidTyped(path, "object", "exactly one of " + a + " and " + b + " must be set"));
        }

        if (old is null || Json.At(old, path) is not JsonObject oldSource)
        {
            return;
        }

        foreach (var field in new[] { a, b })
        {
            if (IsSet(oldSource[field]) && !IsSet(source[field]))
            {
                errors.Add(FieldCause.InvalidTyped(path, "object", field + " is required once set"));
            }
            else if (IsSet(oldSource[field]) && !Json.Same(oldSource[field], source[field]))
            {
                errors.Add(FieldCause.InvalidTyped(path + "." + field, TypeName(source[field]), field + " is immutable"));
            }
        }
    }

    private static void Immutable(JsonObject obj, JsonObject? old, List<FieldCause> errors, string path, string field)
    {
        if (old is null || Json.At(old, path) is not JsonObject oldParent || !IsSet(oldParent[field]))
        {
            return;
        }

        var now = (Json.At(obj, path) as JsonObject)?[field];
        if (!IsSet(now))
        {
            errors.Add(FieldCause.InvalidTyped(path, "object", field + " is required once set"));
        }
        else if (!Json.Same(now, oldParent[field]))
        {
            errors.Add(FieldCause.InvalidTyped(path + "." + field, "string", field + " is immutable"));
        }
    }

    private static bool IsSet(JsonNode? node) => node is not null;

    private static string TypeName(JsonNode? node) => node switch
    {
        JsonObject => "object",
        JsonArray => "array",
        _ => "string",
    };
}
