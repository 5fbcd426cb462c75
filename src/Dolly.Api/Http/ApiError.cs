using System.Globalization;
using System.Text.Json.Nodes;

namespace Dolly.Api.Http;

/// <summary>One field problem inside an Invalid (422) Status, shaped like apimachinery's field.Error.</summary>
internal sealed record FieldCause(string Reason, string Field, string Message)
{
    public static FieldCause Required(string field, string detail = "") =>
        new("FieldValueRequired", field, detail.Length == 0 ? "Required value" : "Required value: " + detail);

    public static FieldCause Invalid(string field, JsonNode? value, string detail) =>
        new("FieldValueInvalid", field, "Invalid value: " + Render(value) + (detail.Length == 0 ? "" : ": " + detail));

    public static FieldCause InvalidTyped(string field, string typeName, string detail) =>
        new("FieldValueInvalid", field, "Invalid value: \"" + typeName + "\": " + detail);

    public static FieldCause Unsupported(string field, JsonNode? value, IEnumerable<string> allowed) =>
        new("FieldValueNotSupported", field, "Unsupported value: " + Render(value) + ": supported values: " +
            string.Join(", ", allowed.Select(a => "\"" + a + "\"")));

    public static FieldCause Forbidden(string field, string detail) =>
        new("FieldValueForbidden", field, "Forbidden: " + detail);

    public static FieldCause TypeInvalid(string field, JsonNode? value, string detail) =>
        new("FieldValueTypeInvalid", field, "Invalid value: " + Render(value) + ": " + detail);

    private static string Render(JsonNode? value) => value switch
    {
        null => "null",
        JsonValue v when v.TryGetValue(out string? s) => "\"" + s + "\"",
        JsonValue v when v.TryGetValue(out bool b) => b ? "true" : "false",
        JsonValue v => v.ToJsonString(),
        JsonObject => "\"object\"",
        JsonArray => "\"array\"",
        _ => value.ToJsonString(),
    };

    /// <summary>The text apimachinery prints for this error: "path: body".</summary>
    public string Text => Field + ": " + Message;
}

/// <summary>
/// A Kubernetes Status failure raised inside request handling and turned into a response once, at the HTTP
/// boundary. Request code is deep and mostly synchronous (patch, validation, storage preconditions), so an
/// exception that carries the finished Status is the simplest way to unwind it; nothing else catches it.
/// </summary>
internal sealed class ApiErrorException : Exception
{
    public ApiErrorException(int code, string reason, string message, JsonObject? details = null)
        : base(message)
    {
        Code = code;
        Reason = reason;
        Details = details;
    }

    public int Code { get; }

    public string Reason { get; }

    public JsonObject? Details { get; }

    /// <summary>Extra response headers (e.g. nothing today, kept for Retry-After).</summary>
    public JsonObject ToStatus()
    {
        var status = new JsonObject
        {
            ["kind"] = "Status",
            ["apiVersion"] = "v1",
            ["metadata"] = new JsonObject(),
            ["status"] = "Failure",
            ["message"] = Message,
            ["reason"] = Reason,
        };
        if (Details is not null)
        {
            status["details"] = Details.DeepClone();
        }

        status["code"] = Code;
        return status;
    }
}

/// <summary>Factories for the Status errors kube-apiserver returns, with its exact message formats.</summary>
internal static class Errors
{
    public const string ConflictMessage =
        "the object has been modified; please apply your changes to the latest version and try again";

    private static JsonObject Details(string? name, string group, string kind, string? uid = null)
    {
        var d = new JsonObject();
        if (!string.IsNullOrEmpty(name))
        {
            d["name"] = name;
        }

        if (group.Length > 0)
        {
            d["group"] = group;
        }

        if (kind.Length > 0)
        {
            d["kind"] = kind;
        }

        if (!string.IsNullOrEmpty(uid))
        {
            d["uid"] = uid;
        }

        return d;
    }

    public static string GroupResource(string group, string plural) => group.Length == 0 ? plural : plural + "." + group;

    public static string GroupKind(string group, string kind) => group.Length == 0 ? kind : kind + "." + group;

    public static ApiErrorException NotFound(string group, string plural, string name) =>
        new(404, "NotFound", GroupResource(group, plural) + " \"" + name + "\" not found", Details(name, group, plural));

    public static ApiErrorException AlreadyExists(string group, string plural, string name) =>
        new(409, "AlreadyExists", GroupResource(group, plural) + " \"" + name + "\" already exists", Details(name, group, plural));

    public static ApiErrorException Conflict(string group, string plural, string name, string why = ConflictMessage) =>
        new(409, "Conflict", "Operation cannot be fulfilled on " + GroupResource(group, plural) + " \"" + name + "\": " + why,
            Details(name, group, plural));

    public static ApiErrorException Invalid(string group, string kind, string name, IReadOnlyList<FieldCause> causes)
    {
        var distinct = causes.DistinctBy(c => c.Text).ToList();
        string body = distinct.Count == 1 ? distinct[0].Text : "[" + string.Join(", ", distinct.Select(c => c.Text)) + "]";
        var details = Details(name, group, kind);
        var arr = new JsonArray();
        foreach (var c in distinct)
        {
            arr.Add(new JsonObject { ["reason"] = c.Reason, ["message"] = c.Message, ["field"] = c.Field });
        }

        details["causes"] = arr;
        return new ApiErrorException(422, "Invalid", GroupKind(group, kind) + " \"" + name + "\" is invalid: " + body, details);
    }

    /// <summary>422 on an options kind, e.g. ListOptions.meta.k8s.io.</summary>
    public static ApiErrorException InvalidOptions(string optionsKind, FieldCause cause) =>
        Invalid("meta.k8s.io", optionsKind, "", [cause]);

    public static ApiErrorException BadRequest(string message) => new(400, "BadRequest", message);

    public static ApiErrorException Forbidden(string group, string plural, string name, string why, JsonArray? causes = null)
    {
        var details = Details(name, group, plural);
        if (causes is not null)
        {
            details["causes"] = causes;
        }

        string subject = GroupResource(group, plural) + (name.Length == 0 ? "" : " \"" + name + "\"");
        return new ApiErrorException(403, "Forbidden", subject + " is forbidden: " + why, details);
    }

    /// <summary>
    /// A path that exists without the request's method (POST on an item, PUT on a collection, a verb the kind does
    /// not serve): kube-apiserver's router answers 405 with this fixed message and empty details.
    /// </summary>
    public static ApiErrorException RouteMethodNotAllowed() =>
        new(405, "MethodNotAllowed", "the server does not allow this method on the requested resource", []);

    public static ApiErrorException UnsupportedMediaType(IEnumerable<string> accepted) =>
        new(415, "UnsupportedMediaType",
            "the body of the request was in an unknown format - accepted media types include: " + string.Join(", ", accepted));

    public static ApiErrorException Expired(string message) => new(410, "Expired", message);

    /// <summary>A resourceVersion newer than the store's: kube-apiserver's 504 Timeout with a ResourceVersionTooLarge cause.</summary>
    public static ApiErrorException TooLargeResourceVersion(long wanted, long current) =>
        new(504, "Timeout", "Timeout: Too large resource version: " + wanted.ToString(CultureInfo.InvariantCulture) + ", current: " +
            current.ToString(CultureInfo.InvariantCulture),
            new JsonObject
            {
                ["causes"] = new JsonArray(new JsonObject { ["reason"] = "ResourceVersionTooLarge", ["message"] = "Too large resource version" }),
                ["retryAfterSeconds"] = 1,
            });

    public static ApiErrorException TooLarge(long limit) =>
        new(413, "RequestEntityTooLarge", "Request entity too large: limit is " + limit.ToString(CultureInfo.InvariantCulture));

    public static ApiErrorException NotAcceptable(string message) => new(406, "NotAcceptable", message);

    /// <summary>
    /// A JSON patch that decoded but cannot apply (a missing path, a failed test, an unknown op). kube-apiserver
    /// answers 422 Invalid with this fixed message and empty details; here the reason the patch failed goes in one
    /// cause on the field "patch", so the client can tell what to fix (kubectl prints "The request is invalid:
    /// patch: doc is missing path: ...").
    /// </summary>
    public static ApiErrorException JsonPatchFailed(string detail) =>
        new(422, "Invalid", "the server rejected our request due to an error in our request",
            new JsonObject { ["causes"] = new JsonArray(new JsonObject { ["message"] = detail, ["field"] = "patch" }) });

    public static ApiErrorException Decode(string kind, string version, string detail) =>
        BadRequest(kind + " in version \"" + version + "\" cannot be handled as a " + kind + ": " + detail);
}
