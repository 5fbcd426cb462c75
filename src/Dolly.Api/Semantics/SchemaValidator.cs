using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using Dolly.Api.Http;

namespace Dolly.Api.Semantics;

/// <summary>
/// Structural-schema validation and pruning (the subset of OpenAPI v3 that CRDs use): types, required, enum,
/// bounds, int-or-string, nullable, preserve-unknown-fields. Unknown fields are removed and reported, so the caller
/// can refuse them (Strict), warn about them (Warn) or drop them silently (Ignore), as kube-apiserver does.
/// </summary>
internal static class SchemaValidator
{
    /// <summary>Validates and prunes <paramref name="obj"/>; <paramref name="old"/> is the stored object on update (CEL transition rules compare against it).</summary>
    public static void Validate(JsonObject obj, JsonObject schema, List<string> unknown, List<FieldCause> errors, JsonObject? old = null)
    {
        // metadata, apiVersion and kind are checked by the server, not the schema; metadata's own fields are fixed.
        Walk(obj, old, old is not null, schema, "", unknown, errors, root: true);
        if (obj["metadata"] is JsonObject meta)
        {
            foreach (var key in meta.Select(kv => kv.Key).Where(k => !ObjectMetaFields.Contains(k)).ToList())
            {
                unknown.Add("metadata." + key);
                meta.Remove(key);
            }
        }
    }

    private static readonly HashSet<string> ObjectMetaFields = new(StringComparer.Ordinal)
    {
        "name", "generateName", "namespace", "selfLink", "uid", "resourceVersion", "generation", "creationTimestamp",
        "deletionTimestamp", "deletionGracePeriodSeconds", "labels", "annotations", "ownerReferences", "finalizers", "managedFields",
    };

    private static string Join(string path, string key) => path.Length == 0 ? key : path + "." + key;

    private static void Walk(JsonNode? node, JsonNode? old, bool hasOld, JsonObject schema, string path, List<string> unknown, List<FieldCause> errors, bool root = false)
    {
        if (node is null)
        {
            return;
        }

        bool intOrString = Json.Bool(schema["x-kubernetes-int-or-string"]) == true;
        bool preserve = Json.Bool(schema["x-kubernetes-preserve-unknown-fields"]) == true;
        string? type = Json.Str(schema["type"]);
        if (intOrString)
        {
            if (node is not JsonValue v || v.GetValueKind() is not (JsonValueKind.String or JsonValueKind.Number))
            {
                errors.Add(FieldCause.Invalid(path, JsonValue.Create(TypeName(node)), path + " in body must be of type integer or string: \"" + TypeName(node) + "\""));
            }

            return;
        }

        if (type is not null && !TypeMatches(node, type))
        {
            errors.Add(FieldCause.InvalidTyped(path, TypeName(node), path + " in body must be of type " + type + ": \"" + TypeName(node) + "\""));
            return;
        }

        if (schema["enum"] is JsonArray allowed && !allowed.Any(a => Json.Same(a, node)))
        {
            errors.Add(FieldCause.Unsupported(path, node, allowed.Select(a => Json.Str(a) ?? a?.ToJsonString() ?? "null")));
        }

        switch (node)
        {
            case JsonObject o:
                WalkObject(o, old, hasOld, schema, path, preserve, root, unknown, errors);
                break;
            case JsonArray a:
                WalkArray(a, schema, path, unknown, errors);
                break;
            case JsonValue v:
                CheckScalar(v, schema, path, errors);
                break;
        }

        if (schema["x-kubernetes-validations"] is JsonArray rules)
        {
            CheckRules(node, old, hasOld, rules, path, errors);
        }
    }

    /// <summary>CRD validation rules (CEL) on this node; transition rules only when an old value exists.</summary>
    private static void CheckRules(JsonNode node, JsonNode? old, bool hasOld, JsonArray rules, string path, List<FieldCause> errors)
    {
        foreach (var r in rules.OfType<JsonObject>())
        {
            if (Json.Str(r["rule"]) is not { } rule || (Cel.IsTransitionRule(rule) && !hasOld))
            {
                continue;
            }

            string field = path;
            if (Json.Str(r["fieldPath"]) is { Length: > 0 } fieldPath)
            {
                field = (path.Length == 0 ? "" : path) + (fieldPath.StartsWith('.') ? fieldPath : "." + fieldPath);
                field = field.TrimStart('.');
            }

            field = field.Length == 0 ? "<nil>" : field;
            string? message;
            try
            {
                message = Cel.Check(rule, node, old) ? null : Json.Str(r["message"]) ?? "failed rule: " + rule;
            }
            catch (CelException e)
            {
                message = e.Message + " evaluating rule: " + rule;
            }

            if (message is null)
            {
                continue;
            }

            errors.Add(Json.Str(r["reason"]) switch
            {
                "FieldValueForbidden" => FieldCause.Forbidden(field, message),
                "FieldValueRequired" => FieldCause.Required(field, message),
                "FieldValueDuplicate" => new FieldCause("FieldValueDuplicate", field, "Duplicate value: \"" + TypeName(node) + "\": " + message),
                _ => FieldCause.InvalidTyped(field, TypeName(node), message),
            });
        }
    }

    private static void WalkObject(JsonObject o, JsonNode? old, bool hasOld, JsonObject schema, string path, bool preserve, bool root, List<string> unknown, List<FieldCause> errors)
    {
        var oldObject = hasOld ? old as JsonObject : null;
        var props = schema["properties"] as JsonObject;
        var additional = schema["additionalProperties"];
        foreach (var (key, propSchema) in props ?? [])
        {
            // Structural defaulting: a missing field with a schema default gets it, as the apiserver does on decode.
            if (!o.ContainsKey(key) && propSchema is JsonObject ps && ps.ContainsKey("default") && !(root && key == "metadata"))
            {
                o[key] = ps["default"]?.DeepClone();
            }
        }

        foreach (var key in o.Select(kv => kv.Key).ToList())
        {
            if (root && key is "metadata" or "apiVersion" or "kind")
            {
                continue;
            }

            string child = Join(path, key);
            var value = o[key];
            if (props?[key] is JsonObject propSchema)
            {
                if (value is null && Json.Bool(propSchema["nullable"]) != true)
                {
                    // A null for a non-nullable field means "unset", as the apiserver's defaulting treats it.
                    o.Remove(key);
                    continue;
                }

                Walk(value, oldObject?[key], oldObject?.ContainsKey(key) == true, propSchema, child, unknown, errors);
            }
            else if (additional is JsonObject addSchema)
            {
                Walk(value, oldObject?[key], oldObject?.ContainsKey(key) == true, addSchema, child, unknown, errors);
            }
            else if (!preserve && !(Json.Bool(additional) == true))
            {
                unknown.Add(child);
                o.Remove(key);
            }
        }

        if (schema["required"] is JsonArray required)
        {
            foreach (var r in Json.StringList(required))
            {
                if (o[r] is null)
                {
                    errors.Add(FieldCause.Required(Join(path, r)));
                }
            }
        }
    }

    private static void WalkArray(JsonArray a, JsonObject schema, string path, List<string> unknown, List<FieldCause> errors)
    {
        if (schema["minItems"] is JsonValue min && a.Count < Json.Long(min))
        {
            errors.Add(FieldCause.Invalid(path, JsonValue.Create(a.Count), "must have at least " + min.ToJsonString() + " items"));
        }

        if (schema["maxItems"] is JsonValue max && a.Count > Json.Long(max))
        {
            errors.Add(new FieldCause("FieldValueTooMany", path, "Too many: " + a.Count.ToString(CultureInfo.InvariantCulture) + ": must have at most " + max.ToJsonString() + " items"));
        }

        if (schema["items"] is JsonObject items)
        {
            for (int i = 0; i < a.Count; i++)
            {
                Walk(a[i], null, false, items, path + "[" + i.ToString(CultureInfo.InvariantCulture) + "]", unknown, errors);
            }
        }
    }

    private static void CheckScalar(JsonValue v, JsonObject schema, string path, List<FieldCause> errors)
    {
        if (v.GetValueKind() == JsonValueKind.Number && schema["minimum"] is JsonValue min && Json.Double(v) < Json.Double(min))
        {
            errors.Add(FieldCause.Invalid(path, v, "should be greater than or equal to " + min.ToJsonString()));
        }

        if (v.GetValueKind() == JsonValueKind.Number && schema["maximum"] is JsonValue max && Json.Double(v) > Json.Double(max))
        {
            errors.Add(FieldCause.Invalid(path, v, "should be less than or equal to " + max.ToJsonString()));
        }

        if (Json.Str(v) is { } s)
        {
            if (schema["minLength"] is JsonValue minLen && s.Length < Json.Long(minLen))
            {
                errors.Add(FieldCause.Invalid(path, v, "should be at least " + minLen.ToJsonString() + " chars long"));
            }

            if (schema["maxLength"] is JsonValue maxLen && s.Length > Json.Long(maxLen))
            {
                errors.Add(new FieldCause("FieldValueTooLong", path, "Too long: may not be longer than " + maxLen.ToJsonString()));
            }

            if (Json.Str(schema["pattern"]) is { } pattern &&
                !System.Text.RegularExpressions.Regex.IsMatch(s, pattern, System.Text.RegularExpressions.RegexOptions.None, TimeSpan.FromMilliseconds(100)))
            {
                errors.Add(FieldCause.Invalid(path, v, "should match '" + pattern + "'"));
            }
        }
    }

    private static bool TypeMatches(JsonNode node, string type) => type switch
    {
        "object" => node is JsonObject,
        "array" => node is JsonArray,
        "string" => node is JsonValue v && v.GetValueKind() == JsonValueKind.String,
        "boolean" => node is JsonValue v && v.GetValueKind() is JsonValueKind.True or JsonValueKind.False,
        "integer" => node is JsonValue v && v.GetValueKind() == JsonValueKind.Number && IsInteger(v),
        "number" => node is JsonValue v && v.GetValueKind() == JsonValueKind.Number,
        _ => true,
    };

    private static bool IsInteger(JsonValue v) => Json.Long(v) is not null;

    private static string TypeName(JsonNode? node) => node switch
    {
        JsonObject => "object",
        JsonArray => "array",
        JsonValue v => v.GetValueKind() switch
        {
            JsonValueKind.String => "string",
            JsonValueKind.True or JsonValueKind.False => "boolean",
            JsonValueKind.Number => IsInteger(v) ? "integer" : "number",
            _ => "null",
        },
        _ => "null",
    };
}
