using System.Globalization;
using System.Security.Cryptography;
using System.Text.Json.Nodes;
using Dolly.Api.Http;
using Dolly.Api.Resources;
using Dolly.Api.Storage;

namespace Dolly.Api.Semantics;

/// <summary>
/// The generic registry behaviour of kube-apiserver over the store: create, update, patch, delete with uid,
/// timestamps, optimistic concurrency, generation, status subresources, finalizers, defaulting, validation and
/// namespace lifecycle. Writes are compare-and-swap on the resourceVersion; unconditional writes retry on conflict.
/// </summary>
internal sealed partial class ResourceService
{
    private const int MaxRetries = 16;
    private readonly ObjectStore _store;
    private readonly ResourceRegistry _registry;
    private readonly TimeProvider _time;
    private readonly Lock _refreshLock = new();

    public ResourceService(ObjectStore store, ResourceRegistry registry, TimeProvider time)
    {
        _store = store;
        _registry = registry;
        _time = time;
    }

    public ObjectStore Store => _store;

    public ResourceRegistry Registry => _registry;

    private string Now => Json.Time(_time.GetUtcNow());

    /// <summary>A copy of the stored object as served in <paramref name="type"/>'s version.</summary>
    public static JsonObject Output(ResourceType type, JsonObject stored)
    {
        var copy = (JsonObject)stored.DeepClone();
        copy["apiVersion"] = type.ApiVersion;
        copy["kind"] = type.Kind;
        return copy;
    }

    public JsonObject Get(ResourceType type, string ns, string name)
    {
        var stored = _store.Get(type.StorageKey, ns, name) ?? throw Errors.NotFound(type.Group, type.Plural, name);
        return Output(type, stored.Object);
    }

    private static void CheckTypeMeta(ResourceType type, JsonObject body)
    {
        if (body["metadata"] is not null and not JsonObject)
        {
            throw Errors.Decode(type.Kind, type.Version, "json: cannot unmarshal " + body["metadata"]!.GetValueKind().ToString().ToLowerInvariant() +
                " into Go struct field " + type.Kind + ".metadata of type v1.ObjectMeta");
        }

        string? apiVersion = Json.Str(body["apiVersion"]);
        string? kind = Json.Str(body["kind"]);
        if (kind is not null && kind != type.Kind)
        {
            throw Errors.BadRequest("the object provided is unrecognized (must be of type " + type.Kind + "): couldn't get version/kind; json parse error (kind " + kind + ")");
        }

        if (apiVersion is not null && apiVersion != type.ApiVersion)
        {
            throw Errors.BadRequest("the API version in the data (" + apiVersion + ") does not match the expected API version (" + type.ApiVersion + ")");
        }

        body["apiVersion"] = type.ApiVersion;
        body["kind"] = type.Kind;
    }

    private static void CheckNamespace(ResourceType type, string ns, JsonObject meta)
    {
        string? bodyNs = Json.Str(meta["namespace"]);
        if (type.Namespaced)
        {
            if (!string.IsNullOrEmpty(bodyNs) && bodyNs != ns)
            {
                throw Errors.BadRequest("the namespace of the provided object does not match the namespace sent on the request");
            }

            meta["namespace"] = ns;
        }
        else
        {
            meta.Remove("namespace");
        }
    }

    /// <summary>Prunes unknown fields and collects schema errors, honouring fieldValidation.</summary>
    private static void SchemaCheck(ResourceType type, JsonObject body, WriteOptions o, List<string> warnings, List<FieldCause> errors, JsonObject? old = null)
    {
        if (body["metadata"] is not null and not JsonObject)
        {
            throw Errors.Decode(type.Kind, type.Version, "json: cannot unmarshal into Go struct field " + type.Kind + ".metadata of type v1.ObjectMeta");
        }

        var unknown = new List<string>();
        SchemaValidator.Validate(body, type.Schema, unknown, errors, old);
        if (unknown.Count == 0)
        {
            return;
        }

        switch (o.FieldValidation)
        {
            case "Strict":
                throw Errors.Decode(type.Kind, type.Version, "strict decoding error: " +
                    string.Join(", ", unknown.Select(u => "unknown field \"" + u + "\"")));
            case "Warn":
                warnings.AddRange(unknown.Select(u => "unknown field \"" + u + "\""));
                break;
        }
    }

    private static string RandomSuffix()
    {
        const string alphabet = "bcdfghjklmnpqrstvwxz2456789";
        return string.Create(5, 0, (span, _) =>
        {
            for (int i = 0; i < span.Length; i++)
            {
                span[i] = alphabet[RandomNumberGenerator.GetInt32(alphabet.Length)];
            }
        });
    }

    /// <summary>kube-apiserver's namespace lifecycle admission for new namespaced objects.</summary>
    private void CheckNamespaceLifecycle(ResourceType type, string ns, string name)
    {
        if (!type.Namespaced)
        {
            return;
        }

        var nsObj = _store.Get("/namespaces", "", ns) ?? throw Errors.NotFound("", "namespaces", ns);
        if (nsObj.Object["metadata"]?["deletionTimestamp"] is not null)
        {
            var causes = new JsonArray(new JsonObject
            {
                ["reason"] = "NamespaceTerminating",
                ["message"] = "namespace " + ns + " is being terminated",
                ["field"] = "metadata.namespace",
            });
            throw Errors.Forbidden(type.Group, type.Plural, name,
                "unable to create new content in namespace " + ns + " because it is being terminated", causes);
        }
    }

    private static bool TracksGeneration(ResourceType type) => !type.Builtin || type.Plural == "customresourcedefinitions" || type.Group == "apps";

    /// <summary>apiVersion, kind and metadata first, as kube-apiserver serializes objects.</summary>
    private static JsonObject Ordered(JsonObject obj)
    {
        var props = obj.ToList();
        obj.Clear();
        var result = new JsonObject();
        foreach (var key in new[] { "apiVersion", "kind", "metadata" })
        {
            var match = props.FirstOrDefault(p => p.Key == key);
            if (match.Key is not null)
            {
                result[key] = match.Value;
            }
        }

        foreach (var (key, value) in props)
        {
            if (key is not ("apiVersion" or "kind" or "metadata"))
            {
                result[key] = value;
            }
        }

        return result;
    }

    public WriteResult Create(ResourceType type, string ns, JsonObject body, WriteOptions o)
    {
        CheckTypeMeta(type, body);
        body = Ordered(body);
        var meta = Json.Meta(body);
        CheckNamespace(type, ns, meta);
        var warnings = new List<string>();
        var errors = new List<FieldCause>();
        SchemaCheck(type, body, o, warnings, errors);
        errors.AddRange(Strategies.ValidateMeta(meta));
        string name = Json.Str(meta["name"]) ?? "";
        if (errors.Count > 0)
        {
            // Shapes are wrong: report them before defaulting and kind checks read the object.
            throw Errors.Invalid(type.Group, type.Kind, name, errors);
        }

        if (name.Length == 0)
        {
            string prefix = Json.Str(meta["generateName"]) ?? "";
            if (prefix.Length == 0)
            {
                throw Errors.Invalid(type.Group, type.Kind, "", [FieldCause.Required("metadata.name", "name or generateName is required")]);
            }

            name = prefix + RandomSuffix();
            meta["name"] = name;
        }

        errors.AddRange(Strategies.ValidateName(type, name));
        string now = Now;
        meta["uid"] = Guid.NewGuid().ToString();
        meta["creationTimestamp"] = now;
        meta.Remove("resourceVersion");
        meta.Remove("deletionTimestamp");
        meta.Remove("deletionGracePeriodSeconds");
        meta.Remove("selfLink");
        if (TracksGeneration(type))
        {
            meta["generation"] = 1;
        }
        else
        {
            meta.Remove("generation");
        }

        if (type.HasStatus)
        {
            body.Remove("status");
        }

        Strategies.Default(type, body, create: true);
        errors.AddRange(Strategies.Validate(type, body, null));
        if (errors.Count > 0)
        {
            throw Errors.Invalid(type.Group, type.Kind, name, errors);
        }

        CheckNamespaceLifecycle(type, ns, name);
        if (!type.Builtin && _store.Get("apiextensions.k8s.io/customresourcedefinitions", "", type.Plural + "." + type.Group)?.Object["metadata"]?["deletionTimestamp"] is not null)
        {
            throw new ApiErrorException(405, "MethodNotAllowed", "create not allowed while custom resource definition is terminating");
        }

        ManagedFields.OnCreate(body, Manager(o), o.Apply ? "Apply" : "Update", type.ApiVersion, now);
        if (o.DryRun)
        {
            if (_store.Get(type.StorageKey, ns, name) is not null)
            {
                throw Errors.AlreadyExists(type.Group, type.Plural, name);
            }

            return new WriteResult(body, 201, warnings);
        }

        var (outcome, stored) = _store.Create(type.StorageKey, ns, name, body);
        if (outcome == WriteOutcome.AlreadyExists)
        {
            throw Errors.AlreadyExists(type.Group, type.Plural, name);
        }

        AfterWrite(type);
        return new WriteResult(Output(type, stored!.Object), 201, warnings);
    }

    private static string Manager(WriteOptions o) => o.FieldManager.Length > 0 ? o.FieldManager : "unknown";

    /// <summary>PUT: replace the object (or its status, or a namespace's finalizers).</summary>
    public WriteResult Update(ResourceType type, string ns, string name, JsonObject body, string? subresource, WriteOptions o)
    {
        CheckTypeMeta(type, body);
        var meta = Json.Meta(body);
        CheckNamespace(type, ns, meta);
        string bodyName = Json.Str(meta["name"]) ?? "";
        if (bodyName != name)
        {
            throw Errors.BadRequest("the name of the object (" + bodyName + ") does not match the name on the URL (" + name + ")");
        }

        string? bodyRv = Json.Str(meta["resourceVersion"]);
        for (int attempt = 0; ; attempt++)
        {
            var current = _store.Get(type.StorageKey, ns, name);
            if (current is null)
            {
                if (subresource is null && type.Builtin && type.Plural is "leases" or "events")
                {
                    return Create(type, ns, body, o);
                }

                throw Errors.NotFound(type.Group, type.Plural, name);
            }

            if (string.IsNullOrEmpty(bodyRv) && !type.Builtin)
            {
                throw UnconditionalUpdate(type, name);
            }

            if (!string.IsNullOrEmpty(bodyRv) && bodyRv != current.ResourceVersion.ToString(CultureInfo.InvariantCulture))
            {
                throw Errors.Conflict(type.Group, type.Plural, name);
            }

            var result = TryCommitUpdate(type, current, (JsonObject)body.DeepClone(), subresource, o, "Update");
            if (result is not null)
            {
                return result;
            }

            if (!string.IsNullOrEmpty(bodyRv) || attempt >= MaxRetries)
            {
                throw Errors.Conflict(type.Group, type.Plural, name);
            }
        }
    }

    /// <summary>
    /// Builds the new state from <paramref name="incoming"/> and writes it if the object is still at
    /// <paramref name="current"/>'s revision; returns null when it moved on (the caller retries or reports 409).
    /// </summary>
    private WriteResult? TryCommitUpdate(ResourceType type, StoredObject current, JsonObject incoming, string? subresource, WriteOptions o, string operation)
    {
        var old = current.Object;
        var warnings = new List<string>();
        var errors = new List<FieldCause>();
        JsonObject next;
        switch (subresource)
        {
            case "status":
                next = (JsonObject)old.DeepClone();
                if (incoming["status"] is { } st)
                {
                    next["status"] = st.DeepClone();
                }
                else
                {
                    next.Remove("status");
                }

                SchemaCheck(type, next, o, warnings, errors, old);
                break;
            case "finalize":
                next = (JsonObject)old.DeepClone();
                var spec = next["spec"] as JsonObject ?? [];
                spec["finalizers"] = incoming["spec"]?["finalizers"]?.DeepClone() ?? new JsonArray();
                next["spec"] = spec;
                break;
            default:
                next = incoming;
                SchemaCheck(type, next, o, warnings, errors, old);
                if (type.Group.Length == 0 && type.Plural == "namespaces" && next["spec"] is null or JsonObject)
                {
                    // A namespace's spec.finalizers change only through /finalize, as in kube-apiserver.
                    var nsSpec = next["spec"] as JsonObject ?? [];
                    nsSpec["finalizers"] = old["spec"]?["finalizers"]?.DeepClone();
                    next["spec"] = nsSpec;
                }

                if (type.HasStatus)
                {
                    if (old["status"] is { } oldStatus)
                    {
                        next["status"] = oldStatus.DeepClone();
                    }
                    else
                    {
                        next.Remove("status");
                    }
                }

                break;
        }

        next["apiVersion"] = type.ApiVersion;
        next["kind"] = type.Kind;
        next = Ordered(next);
        var meta = Json.Meta(next);
        var oldMeta = Json.Meta(old);
        foreach (var field in new[] { "uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "generation", "name", "namespace" })
        {
            if (oldMeta[field] is { } v)
            {
                meta[field] = v.DeepClone();
            }
            else
            {
                meta.Remove(field);
            }
        }

        if (operation != "Apply")
        {
            // Clients cannot rewrite ownership through a write; an apply has computed it already.
            meta["managedFields"] = oldMeta["managedFields"]?.DeepClone();
            if (meta["managedFields"] is null)
            {
                meta.Remove("managedFields");
            }
        }

        meta["resourceVersion"] = current.ResourceVersion.ToString(CultureInfo.InvariantCulture);
        errors.AddRange(Strategies.ValidateMeta(meta));
        if (errors.Count > 0)
        {
            throw Errors.Invalid(type.Group, type.Kind, current.Name, errors);
        }

        Strategies.Default(type, next, create: false);
        errors.AddRange(Strategies.Validate(type, next, old));
        if (oldMeta["deletionTimestamp"] is not null)
        {
            var added = Json.StringList(meta["finalizers"]).Except(Json.StringList(oldMeta["finalizers"])).ToList();
            if (added.Count > 0)
            {
                errors.Add(FieldCause.Forbidden("metadata.finalizers",
                    "no new finalizers can be added if the object is being deleted, found new finalizers []string{" +
                    string.Join(", ", added.Select(a => "\"" + a + "\"")) + "}"));
            }
        }

        if (errors.Count > 0)
        {
            throw Errors.Invalid(type.Group, type.Kind, current.Name, errors);
        }

        if (TracksGeneration(type) && !Json.Same(WithoutMetaAndStatus(next), WithoutMetaAndStatus(old)))
        {
            meta["generation"] = (Json.Long(oldMeta["generation"]) ?? 0) + 1;
        }

        if (Json.Same(next, old))
        {
            // A no-op write changes nothing and keeps the resourceVersion, as kube-apiserver does.
            return new WriteResult(Output(type, old), 200, warnings);
        }

        if (operation != "Apply")
        {
            ManagedFields.OnUpdate(old, next, Manager(o), subresource, type.ApiVersion, Now);
        }

        if (o.DryRun)
        {
            return new WriteResult(next, 200, warnings);
        }

        var (outcome, stored) = _store.Update(type.StorageKey, current.Namespace, current.Name, next, current.ResourceVersion);
        if (outcome == WriteOutcome.NotFound)
        {
            throw Errors.NotFound(type.Group, type.Plural, current.Name);
        }

        if (outcome == WriteOutcome.Conflict)
        {
            return null;
        }

        FinishIfReleased(type, stored!);
        AfterWrite(type);
        return new WriteResult(Output(type, stored!.Object), 200, warnings);
    }

    private static JsonObject WithoutMetaAndStatus(JsonObject obj)
    {
        var copy = new JsonObject();
        foreach (var (k, v) in obj)
        {
            if (k is not ("metadata" or "status" or "apiVersion" or "kind"))
            {
                copy[k] = v?.DeepClone();
            }
        }

        return copy;
    }

    /// <summary>An object being deleted whose last finalizer went away is removed now.</summary>
    private void FinishIfReleased(ResourceType type, StoredObject stored)
    {
        var meta = stored.Object["metadata"] as JsonObject;
        if (meta?["deletionTimestamp"] is null || Json.StringList(meta["finalizers"]).Count > 0)
        {
            return;
        }

        if (type.Plural == "namespaces" && type.Group.Length == 0 && Json.StringList(stored.Object["spec"]?["finalizers"]).Count > 0)
        {
            return;
        }

        _store.Delete(type.StorageKey, stored.Namespace, stored.Name, stored.ResourceVersion);
    }

    /// <summary>Keeps the served CRD kinds in step with the stored CRDs.</summary>
    private void AfterWrite(ResourceType type)
    {
        if (type.Group == "apiextensions.k8s.io" && type.Plural == "customresourcedefinitions")
        {
            RefreshCrds();
        }
    }

    /// <summary>Rebuilds the served CRD kinds; serialized so a slower refresh never replaces a newer one.</summary>
    public void RefreshCrds()
    {
        lock (_refreshLock)
        {
            _registry.Refresh(_store.List("apiextensions.k8s.io/customresourcedefinitions", null).Items.Select(s => s.Object));
        }
    }

    /// <summary>CRs refuse updates without a resourceVersion; this error names the resource plural, not the Kind.</summary>
    private static ApiErrorException UnconditionalUpdate(ResourceType type, string name)
    {
        const string body = "Invalid value: 0x0: must be specified for an update";
        var details = new JsonObject
        {
            ["name"] = name,
            ["group"] = type.Group,
            ["kind"] = type.Plural,
            ["causes"] = new JsonArray(new JsonObject { ["reason"] = "FieldValueInvalid", ["message"] = body, ["field"] = "metadata.resourceVersion" }),
        };
        return new ApiErrorException(422, "Invalid", type.GroupResource + " \"" + name + "\" is invalid: metadata.resourceVersion: " + body, details);
    }
}
