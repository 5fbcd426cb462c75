using System.Text.Json.Nodes;
using Dolly.Api.Http;
using Dolly.Api.Semantics;

namespace Dolly.Api.Registry;

/// <summary>
/// PersistentVolume (core/v1): kube-apiserver's pkg/registry/core/persistentvolume strategy with
/// ValidatePersistentVolumeSpec/Update (pkg/apis/core/validation): access modes, capacity, reclaim policy, exactly
/// one volume source, volume mode; the source and the volume mode immutable.
/// </summary>
internal sealed class VolumeStrategy : IKindStrategy
{
    /// <summary>supportedReclaimPolicy of a PersistentVolume, sorted (Recycle is still accepted for volumes).</summary>
    private static readonly string[] ReclaimPolicies = ["Delete", "Recycle", "Retain"];

    /// <summary>The PersistentVolumeSource fields, in the order upstream counts them (a second one is the one refused).</summary>
    private static readonly string[] Sources =
    [
        "hostPath", "gcePersistentDisk", "awsElasticBlockStore", "glusterfs", "flocker", "nfs", "rbd", "quobyte", "cephfs", "iscsi",
        "cinder", "fc", "flexVolume", "azureFile", "vsphereVolume", "photonPersistentDisk", "portworxVolume", "azureDisk", "scaleIO",
        "local", "storageos", "csi",
    ];

    public void Default(JsonObject obj, bool create)
    {
        var spec = KindStrategies.Child(obj, "spec");
        spec["persistentVolumeReclaimPolicy"] ??= "Retain";
        spec["volumeMode"] ??= "Filesystem";
        if (create)
        {
            KindStrategies.Child(obj, "status")["phase"] = "Available";
        }
    }

    public void Validate(JsonObject obj, JsonObject? old, List<FieldCause> errors)
    {
        var spec = obj["spec"] as JsonObject ?? [];
        if (spec["accessModes"] is JsonArray { Count: > 0 })
        {
            ClaimStrategy.ValidateAccessModeValues(spec, errors);
        }
        else
        {
            errors.Add(FieldCause.Required("spec.accessModes"));
        }

        if (spec["capacity"] is not JsonObject { Count: > 0 })
        {
            errors.Add(FieldCause.Required("spec.capacity"));
        }

        if (spec["persistentVolumeReclaimPolicy"] is { } policy && Json.Str(policy) is var p && p != ""
            && (p is null || !ReclaimPolicies.Contains(p, StringComparer.Ordinal)))
        {
            errors.Add(FieldCause.Unsupported("spec.persistentVolumeReclaimPolicy", policy, ReclaimPolicies));
        }

        int sources = 0;
        foreach (string source in Sources)
        {
            if (spec[source] is null)
            {
                continue;
            }

            if (++sources > 1)
            {
                errors.Add(FieldCause.Forbidden("spec." + source, "may not specify more than 1 volume type"));
            }
        }

        if (sources == 0)
        {
            errors.Add(FieldCause.Required("spec", "must specify a volume type"));
        }

        if (spec["volumeMode"] is { } mode && (Json.Str(mode) is not { } m || !ClaimStrategy.VolumeModes.Contains(m, StringComparer.Ordinal)))
        {
            errors.Add(FieldCause.Unsupported("spec.volumeMode", mode, ClaimStrategy.VolumeModes));
        }

        if (old?["spec"] is not JsonObject oldSpec)
        {
            return;
        }

        if (Sources.Any(s => !Json.Same(spec[s], oldSpec[s])))
        {
            errors.Add(FieldCause.Forbidden("spec.persistentvolumesource", "is immutable after creation"));
        }

        if (!Json.Same(spec["volumeMode"], oldSpec["volumeMode"]))
        {
            errors.Add(FieldCause.Invalid("volumeMode", spec["volumeMode"], "field is immutable"));
        }
    }
}
