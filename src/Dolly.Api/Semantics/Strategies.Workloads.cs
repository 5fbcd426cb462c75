using System.Text;
using System.Text.Json.Nodes;
using Dolly.Api.Http;
using Dolly.Api.Resources;

namespace Dolly.Api.Semantics;

/// <summary>
/// Defaults and validation of the kinds that are stored but not run here: pods, services, the apps/v1 workloads,
/// service accounts, config maps, secrets and RBAC bindings. Only what kube-apiserver itself does on a write is
/// mirrored (defaulting, the API validation rules a manifest most often trips); nothing that a controller, the
/// scheduler or the kubelet would add later (a cluster IP, a node, container statuses) is invented.
/// </summary>
internal static partial class Strategies
{
    private static readonly string[] PodTemplateKinds = ["deployments", "daemonsets", "statefulsets", "replicasets"];

    /// <returns>Whether the kind is one of these; the caller's switch handles the rest.</returns>
    private static bool DefaultWorkload(ResourceType type, JsonObject obj, bool create)
    {
        switch (type.Group, type.Plural)
        {
            case ("", "pods"):
                DefaultPodSpec(Child(obj, "spec"));
                if (create)
                {
                    // The pod strategy's PrepareForCreate: a new pod is Pending until a kubelet reports otherwise.
                    Child(obj, "status")["phase"] = "Pending";
                }

                return true;
            case ("", "services"):
                {
                    var spec = Child(obj, "spec");
                    spec["type"] ??= "ClusterIP";
                    spec["sessionAffinity"] ??= "None";
                    if (Json.Str(spec["type"]) != "ExternalName")
                    {
                        spec["internalTrafficPolicy"] ??= "Cluster";
                    }

                    foreach (var port in (spec["ports"] as JsonArray ?? []).OfType<JsonObject>())
                    {
                        port["protocol"] ??= "TCP";
                        port["targetPort"] ??= port["port"]?.DeepClone();
                    }

                    return true;
                }

            case ("", "secrets"):
                obj["type"] ??= "Opaque";
                if (obj["stringData"] is JsonObject plain)
                {
                    // stringData is write-only: kube-apiserver folds it into data, stringData winning, and drops it.
                    var data = Child(obj, "data");
                    foreach (var (key, value) in plain)
                    {
                        data[key] = Convert.ToBase64String(Encoding.UTF8.GetBytes(Json.Str(value) ?? ""));
                    }
                }

                obj.Remove("stringData");
                return true;
            case ("apps", "deployments"):
                {
                    var spec = Child(obj, "spec");
                    spec["replicas"] ??= 1;
                    var strategy = Child(spec, "strategy");
                    strategy["type"] ??= "RollingUpdate";
                    if (Json.Str(strategy["type"]) == "RollingUpdate")
                    {
                        var rolling = Child(strategy, "rollingUpdate");
                        rolling["maxUnavailable"] ??= "25%";
                        rolling["maxSurge"] ??= "25%";
                    }

                    spec["revisionHistoryLimit"] ??= 10;
                    spec["progressDeadlineSeconds"] ??= 600;
                    DefaultPodSpec(Child(Child(spec, "template"), "spec"));
                    return true;
                }

            case ("apps", "daemonsets"):
                {
                    var spec = Child(obj, "spec");
                    var strategy = Child(spec, "updateStrategy");
                    strategy["type"] ??= "RollingUpdate";
                    if (Json.Str(strategy["type"]) == "RollingUpdate")
                    {
                        var rolling = Child(strategy, "rollingUpdate");
                        rolling["maxUnavailable"] ??= 1;
                        rolling["maxSurge"] ??= 0;
                    }

                    spec["revisionHistoryLimit"] ??= 10;
                    DefaultPodSpec(Child(Child(spec, "template"), "spec"));
                    return true;
                }

            case ("apps", "statefulsets"):
                {
                    var spec = Child(obj, "spec");
                    spec["replicas"] ??= 1;
                    spec["podManagementPolicy"] ??= "OrderedReady";
                    var strategy = Child(spec, "updateStrategy");
                    strategy["type"] ??= "RollingUpdate";
                    if (Json.Str(strategy["type"]) == "RollingUpdate")
                    {
                        Child(strategy, "rollingUpdate")["partition"] ??= 0;
                    }

                    spec["revisionHistoryLimit"] ??= 10;
                    var retention = Child(spec, "persistentVolumeClaimRetentionPolicy");
                    retention["whenDeleted"] ??= "Retain";
                    retention["whenScaled"] ??= "Retain";
                    DefaultPodSpec(Child(Child(spec, "template"), "spec"));
                    return true;
                }

            case ("apps", "replicasets"):
                {
                    var spec = Child(obj, "spec");
                    spec["replicas"] ??= 1;
                    DefaultPodSpec(Child(Child(spec, "template"), "spec"));
                    return true;
                }

            default:
                return false;
        }
    }

    /// <summary>SetDefaults_PodSpec and SetDefaults_Container (core/v1 defaults.go), the parts a manifest shows.</summary>
    private static void DefaultPodSpec(JsonObject spec)
    {
        spec["restartPolicy"] ??= "Always";
        spec["dnsPolicy"] ??= "ClusterFirst";
        spec["schedulerName"] ??= "default-scheduler";
        spec["terminationGracePeriodSeconds"] ??= 30;
        spec["securityContext"] ??= new JsonObject();
        foreach (var list in new[] { "initContainers", "containers" })
        {
            foreach (var c in (spec[list] as JsonArray ?? []).OfType<JsonObject>())
            {
                c["terminationMessagePath"] ??= "/dev/termination-log";
                c["terminationMessagePolicy"] ??= "File";
                c["imagePullPolicy"] ??= ImageTag(Json.Str(c["image"]) ?? "") == "latest" ? "Always" : "IfNotPresent";
                foreach (var port in (c["ports"] as JsonArray ?? []).OfType<JsonObject>())
                {
                    port["protocol"] ??= "TCP";
                }
            }
        }
    }

    /// <summary>The tag of an image reference: "latest" when it names neither tag nor digest, "" with a digest only.</summary>
    private static string ImageTag(string image)
    {
        if (image.Contains('@', StringComparison.Ordinal))
        {
            string name = image[..image.IndexOf('@', StringComparison.Ordinal)];
            int colon = name.LastIndexOf(':');
            return colon > name.LastIndexOf('/') ? name[(colon + 1)..] : "";
        }

        int c = image.LastIndexOf(':');
        return c > image.LastIndexOf('/') ? image[(c + 1)..] : "latest";
    }

    /// <returns>Whether the kind is one of these.</returns>
    private static bool ValidateWorkload(ResourceType type, JsonObject obj, JsonObject? old, List<FieldCause> errors)
    {
        switch (type.Group, type.Plural)
        {
            case ("", "pods"):
                ValidatePodSpec(obj["spec"] as JsonObject, "spec", errors);
                if (old is not null && !Json.Same(MutablePodFieldsRemoved(obj["spec"]), MutablePodFieldsRemoved(old["spec"])))
                {
                    errors.Add(FieldCause.Forbidden("spec",
                        "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)"));
                }

                return true;
            case ("apps", var plural) when PodTemplateKinds.Contains(plural):
                ValidatePodTemplateOwner(type, obj, old, errors);
                return true;
            case ("", "configmaps" or "secrets"):
                if (old is not null && Json.Bool(old["immutable"]) == true)
                {
                    if (Json.Bool(obj["immutable"]) != true)
                    {
                        errors.Add(FieldCause.Forbidden("immutable", "field is immutable when `immutable` is set"));
                    }

                    foreach (var field in type.Plural == "secrets" ? new[] { "data" } : ["data", "binaryData"])
                    {
                        if (!Json.Same(obj[field], old[field]))
                        {
                            errors.Add(FieldCause.Forbidden(field, "field is immutable when `immutable` is set"));
                        }
                    }
                }

                if (type.Plural == "secrets" && old is not null && Json.Str(obj["type"]) != Json.Str(old["type"]))
                {
                    errors.Add(FieldCause.Invalid("type", obj["type"]?.DeepClone(), "field is immutable"));
                }

                return true;
            case ("rbac.authorization.k8s.io", "rolebindings" or "clusterrolebindings"):
                if (old is not null && !Json.Same(obj["roleRef"], old["roleRef"]))
                {
                    errors.Add(FieldCause.Invalid("roleRef", obj["roleRef"]?.DeepClone(), "cannot change roleRef"));
                }

                return true;
            default:
                return false;
        }
    }

    private static void ValidatePodSpec(JsonObject? spec, string path, List<FieldCause> errors)
    {
        if (spec?["containers"] is not JsonArray { Count: > 0 } containers)
        {
            errors.Add(FieldCause.Required(path + ".containers"));
            return;
        }

        for (int i = 0; i < containers.Count; i++)
        {
            if (string.IsNullOrEmpty(Json.Str(containers[i]?["name"])))
            {
                errors.Add(FieldCause.Required($"{path}.containers[{i}].name"));
            }

            if (string.IsNullOrEmpty(Json.Str(containers[i]?["image"])))
            {
                errors.Add(FieldCause.Required($"{path}.containers[{i}].image"));
            }
        }
    }

    private static JsonObject? MutablePodFieldsRemoved(JsonNode? spec)
    {
        if (spec?.DeepClone() is not JsonObject copy)
        {
            return null;
        }

        copy.Remove("activeDeadlineSeconds");
        copy.Remove("tolerations");
        copy.Remove("terminationGracePeriodSeconds");
        foreach (var list in new[] { "initContainers", "containers" })
        {
            foreach (var c in (copy[list] as JsonArray ?? []).OfType<JsonObject>())
            {
                c.Remove("image");
            }
        }

        return copy;
    }

    /// <summary>The apps/v1 rules every workload shares: a non-empty selector that matches the template, fixed once set.</summary>
    private static void ValidatePodTemplateOwner(ResourceType type, JsonObject obj, JsonObject? old, List<FieldCause> errors)
    {
        var spec = obj["spec"] as JsonObject ?? [];
        var selector = spec["selector"] as JsonObject;
        if (selector is null)
        {
            errors.Add(FieldCause.Required("spec.selector"));
        }
        else if (selector["matchLabels"] is not JsonObject { Count: > 0 } && selector["matchExpressions"] is not JsonArray { Count: > 0 })
        {
            errors.Add(FieldCause.Invalid("spec.selector", selector.DeepClone(), "empty selector is invalid for " + type.Singular));
        }
        else
        {
            var labels = spec["template"]?["metadata"]?["labels"] as JsonObject ?? [];
            if (!SelectorMatches(selector, labels))
            {
                errors.Add(FieldCause.Invalid("spec.template.metadata.labels", labels.DeepClone(), "`selector` does not match template `labels`"));
            }
        }

        ValidatePodSpec(spec["template"]?["spec"] as JsonObject, "spec.template.spec", errors);
        if (old is null)
        {
            return;
        }

        if (!Json.Same(selector, old["spec"]?["selector"]))
        {
            errors.Add(FieldCause.Invalid("spec.selector", selector?.DeepClone(), "field is immutable"));
        }

        if (type.Plural == "statefulsets" && old["spec"] is JsonObject oldSpec)
        {
            // Only these StatefulSet fields may change (apps validation ValidateStatefulSetUpdate).
            string[] mutable = ["replicas", "ordinals", "template", "updateStrategy", "persistentVolumeClaimRetentionPolicy", "minReadySeconds"];
            var a = (JsonObject)spec.DeepClone();
            var b = (JsonObject)oldSpec.DeepClone();
            foreach (var field in mutable)
            {
                a.Remove(field);
                b.Remove(field);
            }

            if (!Json.Same(a, b))
            {
                errors.Add(FieldCause.Forbidden("spec",
                    "updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden"));
            }
        }
    }

    /// <summary>metav1.LabelSelector matching (matchLabels and matchExpressions) against a label map.</summary>
    private static bool SelectorMatches(JsonObject selector, JsonObject labels)
    {
        foreach (var (key, value) in selector["matchLabels"] as JsonObject ?? [])
        {
            if (Json.Str(labels[key]) != Json.Str(value))
            {
                return false;
            }
        }

        foreach (var e in (selector["matchExpressions"] as JsonArray ?? []).OfType<JsonObject>())
        {
            string key = Json.Str(e["key"]) ?? "";
            var values = Json.StringList(e["values"]);
            bool has = labels.ContainsKey(key);
            bool ok = Json.Str(e["operator"]) switch
            {
                "In" => has && values.Contains(Json.Str(labels[key]) ?? ""),
                "NotIn" => !has || !values.Contains(Json.Str(labels[key]) ?? ""),
                "Exists" => has,
                "DoesNotExist" => !has,
                _ => false,
            };
            if (!ok)
            {
                return false;
            }
        }

        return true;
    }
}
