using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using Dolly.Api.Http;
using Dolly.Api.Resources;
using Dolly.Api.Storage;

namespace Dolly.Api.Semantics;

/// <summary>Patch, server-side apply and delete.</summary>
internal sealed partial class ResourceService
{
    /// <summary>Namespaces the lifecycle admission plugin refuses to delete.</summary>
    public static readonly IReadOnlySet<string> ImmortalNamespaces = new HashSet<string>(StringComparer.Ordinal) { "default", "kube-system", "kube-public" };

    /// <summary>The finalizer that holds an owner deleted with propagationPolicy=Foreground until its dependents are gone.</summary>
    public const string ForegroundFinalizer = "foregroundDeletion";

    public static readonly IReadOnlyList<string> CustomPatchTypes =
        ["application/json-patch+json", "application/merge-patch+json", "application/apply-patch+yaml"];

    public static readonly IReadOnlyList<string> BuiltinPatchTypes =
        ["application/json-patch+json", "application/merge-patch+json", "application/strategic-merge-patch+json", "application/apply-patch+yaml"];

    public WriteResult Patch(ResourceType type, string ns, string name, string contentType, string body, string? subresource, WriteOptions o)
    {
        bool apply = contentType == "application/apply-patch+yaml";
        bool strategic = contentType == "application/strategic-merge-patch+json";
        if (!(type.Builtin ? BuiltinPatchTypes : CustomPatchTypes).Contains(contentType))
        {
            throw Errors.UnsupportedMediaType(type.Builtin ? BuiltinPatchTypes : CustomPatchTypes);
        }

        if (o.Force && !apply)
        {
            throw Errors.InvalidOptions("PatchOptions", FieldCause.Forbidden("force", "may not be specified for non-apply patch"));
        }

        if (apply && o.FieldManager.Length == 0)
        {
            throw Errors.InvalidOptions("PatchOptions", FieldCause.Required("fieldManager", "is required for apply patch"));
        }

        JsonNode? patch;
        try
        {
            patch = apply ? Yaml.Parse(body) : JsonNode.Parse(body);
        }
        catch (Exception e) when (e is JsonException or YamlDotNet.Core.YamlException)
        {
            throw Errors.BadRequest("error decoding patch: " + e.Message);
        }

        if (!apply && !strategic && contentType != "application/json-patch+json" && patch is not JsonObject)
        {
            throw Errors.BadRequest("error decoding patch: patch is not a JSON object");
        }

        string? patchRv = null;
        if (patch is JsonObject patchObject && patchObject["metadata"] is JsonObject patchMeta)
        {
            patchRv = Json.Str(patchMeta["resourceVersion"]);
        }

        for (int attempt = 0; ; attempt++)
        {
            var current = _store.Get(type.StorageKey, ns, name);
            if (current is null)
            {
                if (apply && patch is JsonObject applied && subresource is null)
                {
                    CheckApplyIdentity(type, applied, name);
                    var meta = Json.Meta(applied);
                    meta["name"] = name;
                    return Create(type, ns, applied, o with { Apply = true });
                }

                throw Errors.NotFound(type.Group, type.Plural, name);
            }

            JsonNode? patched = contentType switch
            {
                "application/json-patch+json" => Patches.ApplyJsonPatch(current.Object, patch),
                "application/merge-patch+json" => Patches.MergePatch(current.Object, patch),
                "application/strategic-merge-patch+json" => Patches.StrategicMerge(current.Object, patch),
                _ => ApplyMerge(type, current.Object, patch as JsonObject ?? throw Errors.BadRequest("apply patch must be an object"), name, o, Now),
            };
            if (patched is not JsonObject next)
            {
                throw Errors.BadRequest("the patch produced an object that is not a JSON object");
            }

            if (next["metadata"] is not JsonObject)
            {
                // kube-apiserver cannot decode the patched object and answers 422 on the field "patch".
                throw Errors.Invalid("", "", "", [FieldCause.Invalid("patch", JsonValue.Create(next.ToJsonString()),
                    next["metadata"] is null ? "metadata is required"
                    : "json: cannot unmarshal " + next["metadata"]!.GetValueKind().ToString().ToLowerInvariant() +
                      " into Go struct field " + type.Kind + ".metadata of type v1.ObjectMeta")]);
            }

            string currentRv = current.ResourceVersion.ToString(CultureInfo.InvariantCulture);
            string? resultRv = Json.Str(next["metadata"]?["resourceVersion"]);
            bool explicitRv = patchRv is not null || (contentType == "application/json-patch+json" && resultRv != currentRv);
            if (explicitRv && (patchRv ?? resultRv) != currentRv)
            {
                throw Errors.Conflict(type.Group, type.Plural, name);
            }

            if (Json.Str(next["metadata"]?["name"]) is { } n && n != name)
            {
                throw Errors.BadRequest("the name of the object (" + n + ") does not match the name on the URL (" + name + ")");
            }

            var result = TryCommitUpdate(type, current, next, subresource, o, apply ? "Apply" : "Update");
            if (result is not null)
            {
                return result;
            }

            if (explicitRv || attempt >= MaxRetries)
            {
                throw Errors.Conflict(type.Group, type.Plural, name);
            }
        }
    }

    private static void CheckApplyIdentity(ResourceType type, JsonObject applied, string name)
    {
        if (applied["metadata"] is not (null or JsonObject))
        {
            throw Errors.Decode(type.Kind, type.Version, "json: cannot unmarshal into Go struct field " + type.Kind + ".metadata of type v1.ObjectMeta");
        }

        if (Json.Str(applied["apiVersion"]) is null || Json.Str(applied["kind"]) is null)
        {
            throw Errors.BadRequest("error decoding patch: apiVersion and kind must be set in an apply patch");
        }

        if (Json.Str(applied["metadata"]?["name"]) is { } n && n != name)
        {
            throw Errors.BadRequest("the name of the object (" + n + ") does not match the name on the URL (" + name + ")");
        }

        _ = type;
    }

    /// <summary>Server-side apply onto a live object, with field ownership and conflicts (see <see cref="ManagedFields"/>).</summary>
    private static JsonObject ApplyMerge(ResourceType type, JsonObject live, JsonObject applied, string name, WriteOptions o, string now)
    {
        CheckApplyIdentity(type, applied, name);
        if (Json.Str(applied["apiVersion"]) != type.ApiVersion || Json.Str(applied["kind"]) != type.Kind)
        {
            throw Errors.BadRequest("the apply patch's apiVersion and kind (" + Json.Str(applied["apiVersion"]) + ", " + Json.Str(applied["kind"]) +
                ") do not match the resource (" + type.ApiVersion + ", " + type.Kind + ")");
        }

        var meta = applied["metadata"] as JsonObject;
        meta?.Remove("resourceVersion");
        meta?.Remove("managedFields");
        return ManagedFields.Apply(live, applied, o.FieldManager, o.Force, type.ApiVersion, now);
    }

    public DeleteResult Delete(ResourceType type, string ns, string name, DeleteOptions d)
    {
        if (d.PropagationPolicy is not (null or "Orphan" or "Background" or "Foreground"))
        {
            throw Errors.InvalidOptions("DeleteOptions", FieldCause.Unsupported("propagationPolicy", JsonValue.Create(d.PropagationPolicy), ["Foreground", "Background", "Orphan", "nil"]));
        }

        bool isNamespace = type.Group.Length == 0 && type.Plural == "namespaces";
        if (isNamespace && ImmortalNamespaces.Contains(name))
        {
            throw Errors.Forbidden("", "namespaces", name, "this namespace may not be deleted");
        }

        for (int attempt = 0; attempt < MaxRetries; attempt++)
        {
            var current = _store.Get(type.StorageKey, ns, name) ?? throw Errors.NotFound(type.Group, type.Plural, name);
            CheckPreconditions(type, current, d);
            var meta = (JsonObject)current.Object["metadata"]!;
            // Foreground deletion keeps the owner, marked with the foregroundDeletion finalizer, until the garbage
            // collector has deleted its dependents (the controllers remove the finalizer then).
            bool foreground = d.PropagationPolicy == "Foreground" && !isNamespace && meta["deletionTimestamp"] is null;
            bool blocked = foreground || Json.StringList(meta["finalizers"]).Count > 0 ||
                           (isNamespace && Json.StringList(current.Object["spec"]?["finalizers"]).Count > 0);
            if (blocked)
            {
                if (meta["deletionTimestamp"] is not null)
                {
                    if (isNamespace)
                    {
                        throw Errors.Conflict("", "namespaces", name,
                            "The system is ensuring all content is removed from this namespace.  Upon completion, this namespace will automatically be purged by the system.");
                    }

                    return new DeleteResult(Output(type, current.Object), 200);
                }

                var next = (JsonObject)current.Object.DeepClone();
                var nextMeta = Json.Meta(next);
                nextMeta["deletionTimestamp"] = Now;
                nextMeta["deletionGracePeriodSeconds"] = 0;
                if (foreground && !Json.StringList(nextMeta["finalizers"]).Contains(ForegroundFinalizer))
                {
                    var finalizers = nextMeta["finalizers"] as JsonArray ?? [];
                    finalizers.Add(ForegroundFinalizer);
                    nextMeta["finalizers"] = finalizers;
                }

                if (Json.Long(nextMeta["generation"]) is long g && g > 0)
                {
                    nextMeta["generation"] = g + 1;
                }

                Strategies.Default(type, next, create: false);
                if (d.DryRun)
                {
                    return new DeleteResult(Output(type, next), 200);
                }

                if (d.PropagationPolicy == "Orphan")
                {
                    OrphanDependents(current.Uid);
                }

                var (outcome, stored) = _store.Update(type.StorageKey, ns, name, next, current.ResourceVersion);
                if (outcome == WriteOutcome.Ok)
                {
                    AfterWrite(type);
                    return new DeleteResult(Output(type, stored!.Object), 200);
                }

                continue;
            }

            if (d.DryRun)
            {
                return DeletedResponse(type, current.Object);
            }

            if (d.PropagationPolicy == "Orphan")
            {
                OrphanDependents(current.Uid);
            }

            var (o2, deleted) = _store.Delete(type.StorageKey, ns, name, current.ResourceVersion);
            if (o2 == WriteOutcome.Ok)
            {
                AfterWrite(type);
                return DeletedResponse(type, deleted!.Object);
            }
        }

        throw Errors.Conflict(type.Group, type.Plural, name);
    }

    private static DeleteResult DeletedResponse(ResourceType type, JsonObject obj)
    {
        if (type.ReturnDeletedObject)
        {
            return new DeleteResult(Output(type, obj), 200);
        }

        var details = new JsonObject { ["name"] = Json.Name(obj) };
        if (type.Group.Length > 0)
        {
            details["group"] = type.Group;
        }

        details["kind"] = type.Plural;
        details["uid"] = Json.MetaString(obj, "uid");
        return new DeleteResult(new JsonObject
        {
            ["kind"] = "Status",
            ["apiVersion"] = "v1",
            ["metadata"] = new JsonObject(),
            ["status"] = "Success",
            ["details"] = details,
        }, 200);
    }

    private static void CheckPreconditions(ResourceType type, StoredObject current, DeleteOptions d)
    {
        string gk = Errors.GroupKind(type.Group, type.Kind);
        if (d.PreconditionUid is { Length: > 0 } uid && uid != current.Uid)
        {
            throw new ApiErrorException(409, "Conflict", "Operation cannot be fulfilled on " + gk + " \"" + current.Name +
                "\": the UID in the precondition (" + uid + ") does not match the UID in record (" + current.Uid +
                "). The object might have been deleted and then recreated",
                new JsonObject { ["name"] = current.Name, ["group"] = type.Group, ["kind"] = type.Kind });
        }

        string rv = current.ResourceVersion.ToString(CultureInfo.InvariantCulture);
        if (d.PreconditionResourceVersion is { Length: > 0 } prv && prv != rv)
        {
            throw new ApiErrorException(409, "Conflict", "Operation cannot be fulfilled on " + gk + " \"" + current.Name +
                "\": the ResourceVersion in the precondition (" + prv + ") does not match the ResourceVersion in record (" + rv +
                "). The object might have been modified",
                new JsonObject { ["name"] = current.Name, ["group"] = type.Group, ["kind"] = type.Kind });
        }
    }

    /// <summary>Removes a finalizer on behalf of the server's controllers; the object goes if it was the last.</summary>
    public void RemoveFinalizerInternal(StoredObject target, string finalizer)
    {
        var type = _registry.FindPreferred(target.Resource);
        if (type is null || !Json.StringList(target.Object["metadata"]?["finalizers"]).Contains(finalizer))
        {
            return;
        }

        var body = (JsonObject)target.Object.DeepClone();
        var meta = Json.Meta(body);
        meta["finalizers"] = new JsonArray([.. Json.StringList(meta["finalizers"]).Where(f => f != finalizer).Select(f => (JsonNode)f)]);
        try
        {
            Update(type, target.Namespace, target.Name, body, null, WriteOptions.Default with { FieldManager = "garbage-collector" });
        }
        catch (ApiErrorException e) when (e.Code is 404 or 409)
        {
            // Gone or changed meanwhile; the next event brings the object back to the controller.
        }
    }

    /// <summary>Removes ownerReferences to <paramref name="ownerUid"/> from every dependent (propagationPolicy=Orphan).</summary>
    private void OrphanDependents(string ownerUid)
    {
        foreach (var dep in _store.DependentsOf(ownerUid))
        {
            for (int attempt = 0; attempt < MaxRetries; attempt++)
            {
                var live = _store.Get(dep.Resource, dep.Namespace, dep.Name);
                if (live is null)
                {
                    break;
                }

                var next = (JsonObject)live.Object.DeepClone();
                var meta = Json.Meta(next);
                var kept = new JsonArray([.. (meta["ownerReferences"] as JsonArray ?? []).Where(r => Json.Str(r?["uid"]) != ownerUid).Select(r => r?.DeepClone())]);
                if (kept.Count == 0)
                {
                    meta.Remove("ownerReferences");
                }
                else
                {
                    meta["ownerReferences"] = kept;
                }

                if (_store.Update(live.Resource, live.Namespace, live.Name, next, live.ResourceVersion).Outcome != WriteOutcome.Conflict)
                {
                    break;
                }
            }
        }
    }

    /// <summary>Deletes one stored object on behalf of the server's own controllers (namespace cascade, GC).</summary>
    public void DeleteInternal(StoredObject target, string policy = "Background")
    {
        var type = _registry.FindPreferred(target.Resource);
        if (type is null)
        {
            // The kind is no longer served (its CRD went away): drop the object directly.
            _store.Delete(target.Resource, target.Namespace, target.Name, target.ResourceVersion);
            return;
        }

        try
        {
            Delete(type, target.Namespace, target.Name, new DeleteOptions(false, policy, null, null));
        }
        catch (ApiErrorException e) when (e.Code is 404 or 409)
        {
            // Already gone, or a concurrent writer got there first; the controller sees the next event.
        }
    }
}
