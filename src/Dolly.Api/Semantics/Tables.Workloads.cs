using System.Globalization;
using System.Text.Json.Nodes;

namespace Dolly.Api.Semantics;

/// <summary>
/// Printers of the kinds that are stored but not run here (pods, services, workloads, accounts, configuration,
/// role bindings), with kube-apiserver's columns and cells (pkg/printers/internalversion). Nothing writes their
/// status, so the counts read zero unless a client wrote them.
/// </summary>
internal static partial class Tables
{
    private static readonly Col ContainersCol = new("Containers", "string", "", "Names of each container in the template.", 1);
    private static readonly Col ImagesCol = new("Images", "string", "", "Images referenced by each container in the template.", 1);

    private static IReadOnlyList<Col>? WorkloadColumns(string printer) => printer switch
    {
        "Pod" =>
        [
            NameCol, new("Ready", "string", "", "The aggregate readiness state of this pod for accepting traffic."),
            new("Status", "string", "", "The aggregate status of the containers in this pod."),
            new("Restarts", "string", "", "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted."), AgeCol,
            new("IP", "string", "", "IP address allocated to the pod.", 1), new("Node", "string", "", "The node this pod is scheduled on.", 1),
            new("Nominated Node", "string", "", "The node the scheduler nominated for this pod.", 1),
            new("Readiness Gates", "string", "", "Pod conditions evaluated for pod readiness.", 1),
        ],
        "Deployment" =>
        [
            NameCol, new("Ready", "string", "", "Number of the pod with ready state"),
            new("Up-to-date", "string", "", "Total number of non-terminated pods targeted by this deployment that have the desired template spec."),
            new("Available", "string", "", "Total number of available pods (ready for at least minReadySeconds) targeted by this deployment."), AgeCol,
            ContainersCol, ImagesCol, new("Selector", "string", "", "Label selector for pods.", 1),
        ],
        "DaemonSet" =>
        [
            NameCol, new("Desired", "integer", "", "The total number of nodes that should be running the daemon pod."),
            new("Current", "integer", "", "The number of nodes that are running at least 1 daemon pod and are supposed to run the daemon pod."),
            new("Ready", "integer", "", "The number of nodes that should be running the daemon pod and have one or more of the daemon pod running and ready."),
            new("Up-to-date", "integer", "", "The total number of nodes that are running updated daemon pod."),
            new("Available", "integer", "", "The number of nodes that should be running the daemon pod and have one or more of the daemon pod running and available."),
            new("Node Selector", "string", "", "Selector which must match a node's labels for the pod to be scheduled on that node."), AgeCol,
            ContainersCol, ImagesCol, new("Selector", "string", "", "A label query over pods that are managed by the daemon set.", 1),
        ],
        "StatefulSet" => [NameCol, new("Ready", "string", "", "Number of the pod with ready state"), AgeCol, ContainersCol, ImagesCol],
        "ReplicaSet" =>
        [
            NameCol, new("Desired", "integer", "", "Replicas is the number of desired replicas."),
            new("Current", "integer", "", "Replicas is the most recently observed number of replicas."),
            new("Ready", "integer", "", "The number of ready replicas for this replica set."), AgeCol,
            ContainersCol, ImagesCol, new("Selector", "string", "", "Selector is a label query over pods that should match the replica count.", 1),
        ],
        "Service" =>
        [
            NameCol, new("Type", "string", "", "How the Service is exposed."), new("Cluster-IP", "string", "", "The IP address of the service."),
            new("External-IP", "string", "", "IP addresses for which nodes in the cluster will also accept traffic for this service."),
            new("Port(s)", "string", "", "The list of ports that are exposed by this service."), AgeCol,
            new("Selector", "string", "", "Route service traffic to pods with label keys and values matching this selector.", 1),
        ],
        "ServiceAccount" => [NameCol, new("Secrets", "string", "", "Secrets is a list of the secrets in the same namespace that pods running using this ServiceAccount are allowed to use."), AgeCol],
        "ConfigMap" => [NameCol, new("Data", "string", "", "Data contains the configuration data."), AgeCol],
        "Secret" =>
        [
            NameCol, new("Type", "string", "", "Used to facilitate programmatic handling of secret data."),
            new("Data", "string", "", "Data contains the secret data."), AgeCol,
        ],
        "RoleBinding" or "ClusterRoleBinding" =>
        [
            NameCol, new("Role", "string", "", "RoleRef can reference a Role in the current namespace or a ClusterRole in the global namespace."), AgeCol,
            new("Users", "string", "", "Users in the " + (printer == "RoleBinding" ? "roleBinding" : "clusterRoleBinding"), 1),
            new("Groups", "string", "", "Groups in the " + (printer == "RoleBinding" ? "roleBinding" : "clusterRoleBinding"), 1),
            new("ServiceAccounts", "string", "", "ServiceAccounts in the " + (printer == "RoleBinding" ? "roleBinding" : "clusterRoleBinding"), 1),
        ],
        _ => null,
    };

    private static JsonArray? WorkloadCells(string? printer, JsonObject obj, string age)
    {
        string name = Json.Name(obj);
        var spec = obj["spec"] as JsonObject ?? [];
        var status = obj["status"] as JsonObject ?? [];
        var template = spec["template"]?["spec"];
        long Count(JsonObject o, string field) => Json.Long(o[field]) ?? 0;
        switch (printer)
        {
            case "Pod":
                return PodCells(obj, spec, status, age);
            case "Deployment":
                {
                    var (names, images) = ContainerCells(template);
                    return [name, Ratio(Count(status, "readyReplicas"), Json.Long(spec["replicas"]) ?? 1), Count(status, "updatedReplicas"),
                        Count(status, "availableReplicas"), age, names, images, LabelSelector(spec["selector"])];
                }

            case "DaemonSet":
                {
                    var (names, images) = ContainerCells(template);
                    return [name, Count(status, "desiredNumberScheduled"), Count(status, "currentNumberScheduled"), Count(status, "numberReady"),
                        Count(status, "updatedNumberScheduled"), Count(status, "numberAvailable"), FormatLabels(template?["nodeSelector"]), age,
                        names, images, LabelSelector(spec["selector"])];
                }

            case "StatefulSet":
                {
                    var (names, images) = ContainerCells(template);
                    return [name, Ratio(Count(status, "readyReplicas"), Json.Long(spec["replicas"]) ?? 1), age, names, images];
                }

            case "ReplicaSet":
                {
                    var (names, images) = ContainerCells(template);
                    return [name, Json.Long(spec["replicas"]) ?? 1, Count(status, "replicas"), Count(status, "readyReplicas"), age,
                        names, images, LabelSelector(spec["selector"])];
                }

            case "Service":
                {
                    var ips = Json.StringList(spec["clusterIPs"]);
                    string ports = string.Join(",", (spec["ports"] as JsonArray ?? []).OfType<JsonObject>().Select(p =>
                        Json.Long(p["nodePort"]) is > 0 and long node
                            ? $"{Json.Long(p["port"]) ?? 0}:{node}/{Json.Str(p["protocol"]) ?? "TCP"}"
                            : $"{Json.Long(p["port"]) ?? 0}/{Json.Str(p["protocol"]) ?? "TCP"}"));
                    string type = Json.Str(spec["type"]) ?? "";
                    return [name, type, ips.Count > 0 ? ips[0] : Json.Str(spec["clusterIP"]) is { Length: > 0 } ip ? ip : "<none>",
                        ExternalIp(type, spec, status), ports.Length == 0 ? "<none>" : ports, age, FormatLabels(spec["selector"])];
                }

            case "ServiceAccount":
                return [name, (long)(obj["secrets"] as JsonArray ?? []).Count, age];
            case "ConfigMap":
                return [name, (long)((obj["data"] as JsonObject ?? []).Count + (obj["binaryData"] as JsonObject ?? []).Count), age];
            case "Secret":
                return [name, Json.Str(obj["type"]) ?? "", (long)(obj["data"] as JsonObject ?? []).Count, age];
            case "RoleBinding" or "ClusterRoleBinding":
                {
                    var subjects = (obj["subjects"] as JsonArray ?? []).OfType<JsonObject>().ToList();
                    string Join(string kind, Func<JsonObject, string> show) =>
                        string.Join(", ", subjects.Where(s => Json.Str(s["kind"]) == kind).Select(show));
                    var roleRef = obj["roleRef"] as JsonObject ?? [];
                    return [name, Json.Str(roleRef["kind"]) + "/" + Json.Str(roleRef["name"]), age,
                        Join("User", s => Json.Str(s["name"]) ?? ""), Join("Group", s => Json.Str(s["name"]) ?? ""),
                        Join("ServiceAccount", s => Json.Str(s["namespace"]) + "/" + Json.Str(s["name"]))];
                }

            default:
                return null;
        }
    }

    /// <summary>printPod: phase (or reason), container readiness and restarts from whatever status a client wrote.</summary>
    private static JsonArray PodCells(JsonObject obj, JsonObject spec, JsonObject status, string age)
    {
        string reason = Json.Str(status["reason"]) is { Length: > 0 } r ? r : Json.Str(status["phase"]) ?? "";
        long restarts = 0, ready = 0;
        foreach (var c in (status["containerStatuses"] as JsonArray ?? []).OfType<JsonObject>())
        {
            restarts += Json.Long(c["restartCount"]) ?? 0;
            if (Json.Str(c["state"]?["waiting"]?["reason"]) is { Length: > 0 } waiting)
            {
                reason = waiting;
            }
            else if (Json.Str(c["state"]?["terminated"]?["reason"]) is { Length: > 0 } terminated)
            {
                reason = terminated;
            }
            else if (Json.Bool(c["ready"]) == true && c["state"]?["running"] is JsonObject)
            {
                ready++;
            }
        }

        if (obj["metadata"]?["deletionTimestamp"] is not null)
        {
            reason = Json.Str(status["reason"]) == "NodeLost" ? "Unknown" : "Terminating";
        }

        string podIp = (status["podIPs"] as JsonArray)?.FirstOrDefault() is JsonObject first && Json.Str(first["ip"]) is { Length: > 0 } ip ? ip : "<none>";
        var gates = spec["readinessGates"] as JsonArray ?? [];
        var conditions = (status["conditions"] as JsonArray ?? []).OfType<JsonObject>().ToList();
        string readinessGates = gates.Count == 0 ? "<none>"
            : Ratio(gates.Count(g => conditions.FirstOrDefault(c => Json.Str(c["type"]) == Json.Str(g?["conditionType"]))?["status"] is JsonNode s && Json.Str(s) == "True"), gates.Count);
        return [Json.Name(obj), Ratio(ready, (spec["containers"] as JsonArray ?? []).Count), reason, restarts.ToString(CultureInfo.InvariantCulture), age,
            podIp, Json.Str(spec["nodeName"]) is { Length: > 0 } node ? node : "<none>",
            Json.Str(status["nominatedNodeName"]) is { Length: > 0 } nominated ? nominated : "<none>", readinessGates];
    }

    private static string Ratio(long a, long b) => a.ToString(CultureInfo.InvariantCulture) + "/" + b.ToString(CultureInfo.InvariantCulture);

    private static (string Names, string Images) ContainerCells(JsonNode? podSpec)
    {
        var containers = (podSpec?["containers"] as JsonArray ?? []).OfType<JsonObject>().ToList();
        return (string.Join(",", containers.Select(c => Json.Str(c["name"]) ?? "")), string.Join(",", containers.Select(c => Json.Str(c["image"]) ?? "")));
    }

    private static string ExternalIp(string type, JsonObject spec, JsonObject status)
    {
        var external = Json.StringList(spec["externalIPs"]);
        switch (type)
        {
            case "ClusterIP" or "NodePort":
                return external.Count > 0 ? string.Join(",", external) : "<none>";
            case "LoadBalancer":
                {
                    var ingress = (status["loadBalancer"]?["ingress"] as JsonArray ?? []).OfType<JsonObject>()
                        .Select(i => Json.Str(i["ip"]) is { Length: > 0 } ip ? ip : Json.Str(i["hostname"]) ?? "")
                        .Where(s => s.Length > 0).Distinct().Order(StringComparer.Ordinal).ToList();
                    var all = ingress.Concat(external).ToList();
                    return all.Count > 0 ? string.Join(",", all) : "<pending>";
                }

            case "ExternalName":
                return Json.Str(spec["externalName"]) ?? "";
            default:
                return "<unknown>";
        }
    }

    /// <summary>labels.FormatLabels: k=v pairs sorted by key, or &lt;none&gt;.</summary>
    private static string FormatLabels(JsonNode? map)
    {
        var pairs = (map as JsonObject ?? []).OrderBy(kv => kv.Key, StringComparer.Ordinal).Select(kv => kv.Key + "=" + Json.Str(kv.Value)).ToList();
        return pairs.Count == 0 ? "<none>" : string.Join(",", pairs);
    }

    /// <summary>metav1.FormatLabelSelector: requirements sorted by key, or &lt;none&gt; for a missing or empty selector.</summary>
    private static string LabelSelector(JsonNode? selector)
    {
        var requirements = new List<(string Key, string Text)>();
        foreach (var (key, value) in selector?["matchLabels"] as JsonObject ?? [])
        {
            requirements.Add((key, key + "=" + Json.Str(value)));
        }

        foreach (var e in (selector?["matchExpressions"] as JsonArray ?? []).OfType<JsonObject>())
        {
            string key = Json.Str(e["key"]) ?? "";
            string values = string.Join(",", Json.StringList(e["values"]).Order(StringComparer.Ordinal));
            requirements.Add((key, Json.Str(e["operator"]) switch
            {
                "In" => key + " in (" + values + ")",
                "NotIn" => key + " notin (" + values + ")",
                "Exists" => key,
                "DoesNotExist" => "!" + key,
                var op => key + " " + op,
            }));
        }

        return requirements.Count == 0 ? "<none>" : string.Join(",", requirements.OrderBy(r => r.Key, StringComparer.Ordinal).Select(r => r.Text));
    }
}
