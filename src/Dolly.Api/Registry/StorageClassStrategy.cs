using System.Text.Json.Nodes;
using Dolly.Api.Http;
using Dolly.Api.Semantics;

namespace Dolly.Api.Registry;

/// <summary>
/// StorageClass (storage.k8s.io/v1): kube-apiserver's pkg/registry/storage/storageclass strategy, which runs
/// ValidateStorageClass on every write and ValidateStorageClassUpdate on updates (pkg/apis/storage/validation).
/// </summary>
internal sealed class StorageClassStrategy : IKindStrategy
{
    /// <summary>supportedReclaimPolicy, sorted.</summary>
    private static readonly string[] ReclaimPolicies = ["Delete", "Retain"];

    /// <summary>supportedVolumeBindingModes, sorted.</summary>
    private static readonly string[] BindingModes = ["Immediate", "WaitForFirstConsumer"];

    public void Default(JsonObject obj, bool create)
    {
        obj["reclaimPolicy"] ??= "Delete";
        obj["volumeBindingMode"] ??= "Immediate";
    }

    public void Validate(JsonObject obj, JsonObject? old, List<FieldCause> errors)
    {
        var provisioner = obj["provisioner"];
        if (Json.Str(provisioner) is not { Length: > 0 } name)
        {
            errors.Add(FieldCause.Required("provisioner"));
        }
        else if (Strategies.QualifiedNameProblem(name.ToLowerInvariant()) is { } problem)
        {
            errors.Add(FieldCause.Invalid("provisioner", provisioner, problem));
        }

        // An empty reclaimPolicy passes (upstream checks membership only for a non-empty value); an empty binding mode does not.
        if (obj["reclaimPolicy"] is { } policy && Json.Str(policy) is var p && p != "" && (p is null || !ReclaimPolicies.Contains(p, StringComparer.Ordinal)))
        {
            errors.Add(FieldCause.Unsupported("reclaimPolicy", policy, ReclaimPolicies));
        }

        if (obj["volumeBindingMode"] is { } mode && (Json.Str(mode) is not { } m || !BindingModes.Contains(m, StringComparer.Ordinal)))
        {
            errors.Add(FieldCause.Unsupported("volumeBindingMode", mode, BindingModes));
        }

        if (old is null)
        {
            return;
        }

        foreach (var field in new[] { "parameters", "provisioner", "reclaimPolicy" })
        {
            if (!Json.Same(obj[field], old[field]))
            {
                errors.Add(FieldCause.Forbidden(field, "updates to " + field + " are forbidden."));
            }
        }

        // ValidateImmutableField: an Invalid naming the new value, not a Forbidden.
        if (!Json.Same(obj["volumeBindingMode"], old["volumeBindingMode"]))
        {
            errors.Add(FieldCause.Invalid("volumeBindingMode", obj["volumeBindingMode"], "field is immutable"));
        }
    }
}
