using System.Text;
using System.Text.Json.Nodes;

namespace Dolly.Api.Http;

/// <summary>
/// Decodes the protobuf request bodies kubectl sends for built-in kinds: its generators (`kubectl create namespace`,
/// `create deployment`, `create serviceaccount`, `create configmap`, `create secret generic`, `create service`,
/// `create role`, `create rolebinding`, `create clusterrole`, `create clusterrolebinding`) post typed objects in
/// the Kubernetes protobuf envelope ("k8s\0" + runtime.Unknown), not JSON. Each message is read through a table of
/// the k8s.io/api field numbers below. The generated Go marshallers write every non-pointer field, set or not, so a
/// field missing from the table is skipped when it holds its zero value and refused otherwise: nothing a client
/// set is dropped silently.
/// </summary>
internal static class Protobuf
{
    public const string MediaType = "application/vnd.kubernetes.protobuf";

    private static ReadOnlySpan<byte> Magic => "k8s\0"u8;

    private enum K
    {
        String,
        Int,
        Bool,
        Bytes,
        Message,
        StringMap,
        BytesMap,
        IntOrString,

        /// <summary>Set by the server or a controller (status, uid, timestamps): never read from a request.</summary>
        Ignore,
    }

    /// <summary>One field: its JSON name, kind, message type, whether repeated, whether a zero value is kept (Go pointers).</summary>
    private sealed record F(string Name, K Kind, Msg? Message = null, bool Repeated = false, bool KeepZero = false);

    private sealed class Msg(string name, params (int Number, F Field)[] fields)
    {
        public string Name { get; } = name;

        public Dictionary<int, F> Fields { get; } = fields.ToDictionary(f => f.Number, f => f.Field);
    }

    private static F S(string name) => new(name, K.String);

    private static F Strings(string name) => new(name, K.String, Repeated: true);

    private static F Int(string name, bool keepZero = false) => new(name, K.Int, KeepZero: keepZero);

    private static F Bool(string name, bool keepZero = false) => new(name, K.Bool, KeepZero: keepZero);

    private static F M(string name, Msg message, bool repeated = false) => new(name, K.Message, message, repeated);

    private static readonly F Ignored = new("", K.Ignore);

    private static readonly Msg ObjectMeta = new("ObjectMeta",
        (1, S("name")), (2, S("generateName")), (3, S("namespace")), (4, Ignored), (5, Ignored), (6, Ignored), (7, Ignored), (8, Ignored),
        (9, Ignored), (10, Ignored), (11, new("labels", K.StringMap)), (12, new("annotations", K.StringMap)), (14, Strings("finalizers")), (17, Ignored));

    private static readonly Msg Requirement = new("LabelSelectorRequirement", (1, S("key")), (2, S("operator")), (3, Strings("values")));

    private static readonly Msg LabelSelector = new("LabelSelector", (1, new("matchLabels", K.StringMap)), (2, M("matchExpressions", Requirement, repeated: true)));

    private static readonly Msg ContainerPort = new("ContainerPort", (1, S("name")), (2, Int("hostPort")), (3, Int("containerPort")), (4, S("protocol")), (5, S("hostIP")));

    private static readonly Msg EnvVar = new("EnvVar", (1, S("name")), (2, S("value")));

    private static readonly Msg Container = new("Container",
        (1, S("name")), (2, S("image")), (3, Strings("command")), (4, Strings("args")), (5, S("workingDir")), (6, M("ports", ContainerPort, repeated: true)),
        (7, M("env", EnvVar, repeated: true)), (8, M("resources", new Msg("ResourceRequirements"))), (13, S("terminationMessagePath")),
        (14, S("imagePullPolicy")), (20, S("terminationMessagePolicy")));

    private static readonly Msg PodSpec = new("PodSpec",
        (2, M("containers", Container, repeated: true)), (3, S("restartPolicy")), (6, S("dnsPolicy")), (7, new("nodeSelector", K.StringMap)),
        (8, S("serviceAccountName")), (10, S("nodeName")), (19, S("schedulerName")));

    private static readonly Msg PodTemplateSpec = new("PodTemplateSpec", (1, M("metadata", ObjectMeta)), (2, M("spec", PodSpec)));

    private static readonly Msg DeploymentSpec = new("DeploymentSpec",
        (1, Int("replicas", keepZero: true)), (2, M("selector", LabelSelector)), (3, M("template", PodTemplateSpec)),
        (4, M("strategy", new Msg("DeploymentStrategy", (1, S("type"))))), (5, Int("minReadySeconds")), (6, Int("revisionHistoryLimit", keepZero: true)),
        (7, Bool("paused")), (9, Int("progressDeadlineSeconds", keepZero: true)));

    private static readonly Msg ServicePort = new("ServicePort",
        (1, S("name")), (2, S("protocol")), (3, Int("port")), (4, new("targetPort", K.IntOrString)), (5, Int("nodePort")), (6, S("appProtocol")));

    private static readonly Msg ServiceSpec = new("ServiceSpec",
        (1, M("ports", ServicePort, repeated: true)), (2, new("selector", K.StringMap)), (3, S("clusterIP")), (4, S("type")), (5, Strings("externalIPs")),
        (7, S("sessionAffinity")), (8, S("loadBalancerIP")), (10, S("externalName")), (18, Strings("clusterIPs")));

    private static readonly Msg PolicyRule = new("PolicyRule",
        (1, Strings("verbs")), (2, Strings("apiGroups")), (3, Strings("resources")), (4, Strings("resourceNames")), (5, Strings("nonResourceURLs")));

    private static readonly Msg Subject = new("Subject", (1, S("kind")), (2, S("apiGroup")), (3, S("name")), (4, S("namespace")));

    private static readonly Msg RoleRef = new("RoleRef", (1, S("apiGroup")), (2, S("kind")), (3, S("name")));

    private static readonly Msg Binding = new("RoleBinding", (1, M("metadata", ObjectMeta)), (2, M("subjects", Subject, repeated: true)), (3, M("roleRef", RoleRef)));

    /// <summary>The top-level messages by apiVersion and kind.</summary>
    private static readonly Dictionary<(string ApiVersion, string Kind), Msg> Kinds = new()
    {
        [("v1", "Namespace")] = new("Namespace", (1, M("metadata", ObjectMeta)), (2, M("spec", new Msg("NamespaceSpec", (1, Strings("finalizers"))))), (3, Ignored)),
        [("v1", "ServiceAccount")] = new("ServiceAccount",
            (1, M("metadata", ObjectMeta)), (3, M("imagePullSecrets", new Msg("LocalObjectReference", (1, S("name"))), repeated: true)), (4, Bool("automountServiceAccountToken", keepZero: true))),
        [("v1", "ConfigMap")] = new("ConfigMap", (1, M("metadata", ObjectMeta)), (2, new("data", K.StringMap)), (3, new("binaryData", K.BytesMap)), (4, Bool("immutable", keepZero: true))),
        [("v1", "Secret")] = new("Secret",
            (1, M("metadata", ObjectMeta)), (2, new("data", K.BytesMap)), (3, S("type")), (4, new("stringData", K.StringMap)), (5, Bool("immutable", keepZero: true))),
        [("v1", "Service")] = new("Service", (1, M("metadata", ObjectMeta)), (2, M("spec", ServiceSpec)), (3, Ignored)),
        [("apps/v1", "Deployment")] = new("Deployment", (1, M("metadata", ObjectMeta)), (2, M("spec", DeploymentSpec)), (3, Ignored)),
        [("rbac.authorization.k8s.io/v1", "Role")] = new("Role", (1, M("metadata", ObjectMeta)), (2, M("rules", PolicyRule, repeated: true))),
        [("rbac.authorization.k8s.io/v1", "ClusterRole")] = new("ClusterRole",
            (1, M("metadata", ObjectMeta)), (2, M("rules", PolicyRule, repeated: true)),
            (3, M("aggregationRule", new Msg("AggregationRule", (1, M("clusterRoleSelectors", LabelSelector, repeated: true)))))),
        [("rbac.authorization.k8s.io/v1", "RoleBinding")] = Binding,
        [("rbac.authorization.k8s.io/v1", "ClusterRoleBinding")] = Binding,
    };

    /// <summary>Whether a protobuf body of this kind can be decoded.</summary>
    public static bool Supports(string apiVersion, string kind) => Kinds.ContainsKey((apiVersion, kind));

    /// <summary>
    /// The object in a protobuf envelope as JSON, or null when the body is not an envelope of the expected kind.
    /// A field this decoder cannot represent is a 415 naming it.
    /// </summary>
    public static JsonObject? Decode(byte[] body, string apiVersion, string kind)
    {
        if (!body.AsSpan().StartsWith(Magic) || !Kinds.TryGetValue((apiVersion, kind), out var message))
        {
            return null;
        }

        string sentKind = "", sentVersion = "";
        ReadOnlyMemory<byte>? raw = null;
        foreach (var (field, _, value) in Fields(body.AsMemory(Magic.Length)))
        {
            if (field == 1)
            {
                foreach (var (f, _, v) in Fields(value))
                {
                    if (f == 1)
                    {
                        sentVersion = Encoding.UTF8.GetString(v.Span);
                    }
                    else if (f == 2)
                    {
                        sentKind = Encoding.UTF8.GetString(v.Span);
                    }
                }
            }
            else if (field == 2)
            {
                raw = value;
            }
        }

        if (sentKind != kind || sentVersion != apiVersion || raw is null)
        {
            return null;
        }

        var obj = new JsonObject { ["apiVersion"] = apiVersion, ["kind"] = kind };
        var decoded = DecodeMessage(message, raw.Value);
        foreach (var (name, value) in decoded.ToList())
        {
            decoded.Remove(name);
            obj[name] = value;
        }

        return obj;
    }

    private static JsonObject DecodeMessage(Msg message, ReadOnlyMemory<byte> data)
    {
        var obj = new JsonObject();
        foreach (var (number, wire, value) in Fields(data))
        {
            if (!message.Fields.TryGetValue(number, out var f))
            {
                if (!IsZero(wire, value))
                {
                    throw new ApiErrorException(415, "UnsupportedMediaType",
                        $"field {number} of {message.Name} is not decoded from protobuf by this server; send the object as JSON (kubectl create -f or apply)");
                }

                continue;
            }

            if (f.Kind == K.Ignore || (!f.KeepZero && !f.Repeated && f.Kind is not (K.StringMap or K.BytesMap) && IsZero(wire, value)))
            {
                continue;
            }

            switch (f.Kind)
            {
                case K.StringMap or K.BytesMap:
                    {
                        var map = obj[f.Name] as JsonObject ?? [];
                        string key = "", text = "";
                        foreach (var (n, _, v) in Fields(value))
                        {
                            if (n == 1)
                            {
                                key = Encoding.UTF8.GetString(v.Span);
                            }
                            else if (n == 2)
                            {
                                text = f.Kind == K.StringMap ? Encoding.UTF8.GetString(v.Span) : Convert.ToBase64String(v.Span);
                            }
                        }

                        map[key] = text;
                        obj[f.Name] = map;
                        break;
                    }

                default:
                    {
                        JsonNode? node = Scalar(f, wire, value);
                        if (f.Repeated)
                        {
                            var list = obj[f.Name] as JsonArray ?? [];
                            list.Add(node);
                            obj[f.Name] = list;
                        }
                        else
                        {
                            obj[f.Name] = node;
                        }

                        break;
                    }
            }
        }

        return obj;
    }

    private static JsonNode? Scalar(F f, int wire, ReadOnlyMemory<byte> value)
    {
        switch (f.Kind)
        {
            case K.String:
                return Encoding.UTF8.GetString(value.Span);
            case K.Bytes:
                return Convert.ToBase64String(value.Span);
            case K.Int:
                return wire == 0 ? (long)VarintValue(value) : throw Errors.BadRequest("the protobuf field " + f.Name + " is not a varint");
            case K.Bool:
                return wire == 0 ? VarintValue(value) != 0 : throw Errors.BadRequest("the protobuf field " + f.Name + " is not a varint");
            case K.Message:
                return DecodeMessage(f.Message!, value);
            case K.IntOrString:
                {
                    long type = 0, intVal = 0;
                    string strVal = "";
                    foreach (var (n, w, v) in Fields(value))
                    {
                        switch (n)
                        {
                            case 1 when w == 0:
                                type = (long)VarintValue(v);
                                break;
                            case 2 when w == 0:
                                intVal = (long)VarintValue(v);
                                break;
                            case 3:
                                strVal = Encoding.UTF8.GetString(v.Span);
                                break;
                        }
                    }

                    return type == 1 ? strVal : intVal;
                }

            default:
                return null;
        }
    }

    /// <summary>A zero value as the Go marshallers write an unset non-pointer field: 0, false, "" or an empty message.</summary>
    private static bool IsZero(int wire, ReadOnlyMemory<byte> value) => wire switch
    {
        0 => VarintValue(value) == 0,
        2 => value.Length == 0,
        _ => value.Span.IndexOfAnyExcept((byte)0) < 0,
    };

    private static ulong VarintValue(ReadOnlyMemory<byte> value)
    {
        int pos = 0;
        return Varint(value.Span, ref pos);
    }

    /// <summary>The fields of a message: number, wire type and raw value (a varint's bytes, or a length-delimited payload).</summary>
    private static List<(int Field, int Wire, ReadOnlyMemory<byte> Value)> Fields(ReadOnlyMemory<byte> data)
    {
        var result = new List<(int, int, ReadOnlyMemory<byte>)>();
        var span = data.Span;
        int pos = 0;
        while (pos < span.Length)
        {
            ulong key = Varint(span, ref pos);
            int field = (int)(key >> 3);
            int wire = (int)(key & 7);
            switch (wire)
            {
                case 0:
                    {
                        int start = pos;
                        Varint(span, ref pos);
                        result.Add((field, wire, data[start..pos]));
                        break;
                    }

                case 1 or 5:
                    {
                        int len = wire == 1 ? 8 : 4;
                        if (pos + len > span.Length)
                        {
                            throw Errors.BadRequest("the protobuf body is truncated");
                        }

                        result.Add((field, wire, data.Slice(pos, len)));
                        pos += len;
                        break;
                    }

                case 2:
                    {
                        int len = checked((int)Varint(span, ref pos));
                        if (len < 0 || pos + len > span.Length)
                        {
                            throw Errors.BadRequest("the protobuf body is truncated");
                        }

                        result.Add((field, wire, data.Slice(pos, len)));
                        pos += len;
                        break;
                    }

                default:
                    throw Errors.BadRequest("the protobuf body has an unsupported wire type");
            }
        }

        return result;
    }

    private static ulong Varint(ReadOnlySpan<byte> span, ref int pos)
    {
        ulong value = 0;
        for (int shift = 0; shift < 64; shift += 7)
        {
            if (pos >= span.Length)
            {
                throw Errors.BadRequest("the protobuf body is truncated");
            }

            byte b = span[pos++];
            value |= (ulong)(b & 0x7F) << shift;
            if ((b & 0x80) == 0)
            {
                return value;
            }
        }

        throw Errors.BadRequest("the protobuf body has an invalid varint");
    }
}
