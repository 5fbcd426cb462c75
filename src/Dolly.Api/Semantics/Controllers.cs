using System.Text.Json.Nodes;
using Dolly.Api.Http;
using Dolly.Api.Storage;
using Microsoft.Extensions.Logging;

namespace Dolly.Api.Semantics;

/// <summary>
/// The in-process stand-ins for kube-controller-manager's namespace controller and garbage collector and for the
/// apiextensions CRD finalizer: they follow the store's event stream, so their work survives restarts (a full pass
/// runs at start) and stays ordered with the writes that caused it.
/// </summary>
internal sealed class Controllers
{
    private readonly ResourceService _service;
    private readonly ObjectStore _store;
    private readonly ILogger _logger;

    public Controllers(ResourceService service, ILogger logger)
    {
        _service = service;
        _store = service.Store;
        _logger = logger;
    }

    public async Task RunAsync(CancellationToken cancellationToken)
    {
        using var subscription = _store.Subscribe(_store.Revision, _ => true, capacity: int.MaxValue)
            ?? throw new InvalidOperationException("the controllers' subscription starts at the current revision");
        FullPass();
        var reader = subscription.Reader;
        var namespaces = new HashSet<string>(StringComparer.Ordinal);
        var crds = new HashSet<string>(StringComparer.Ordinal);
        var deletedUids = new List<string>();
        var owned = new List<StoredObject>();
        var foreground = new HashSet<string>(StringComparer.Ordinal);
        while (await reader.WaitToReadAsync(cancellationToken).ConfigureAwait(false))
        {
            while (reader.TryRead(out var e))
            {
                Classify(e, namespaces, crds, deletedUids, owned);
                ClassifyForeground(e, foreground);
            }

            try
            {
                foreach (var uid in deletedUids)
                {
                    CollectDependents(uid);
                }

                foreach (var obj in owned)
                {
                    CollectIfOrphaned(obj);
                }

                foreach (var ns in namespaces)
                {
                    FinalizeNamespace(ns);
                }

                foreach (var crd in crds)
                {
                    CleanupCrd(crd);
                }

                foreach (var uid in foreground)
                {
                    if (_store.GetByUid(uid) is { } owner)
                    {
                        ProcessForeground(owner);
                    }
                }
            }
            catch (ApiErrorException e)
            {
                // A write lost a race or was refused; the next event on the same object brings the work back.
                ApiServerLog.ControllerRetry(_logger, e.Message);
            }
            catch (Exception e) when (e is not OperationCanceledException)
            {
                // A bug in one batch must not stop garbage collection for good: log it and go on with the next.
                ApiServerLog.ControllersFailed(_logger, e);
            }

            namespaces.Clear();
            crds.Clear();
            foreground.Clear();
            deletedUids.Clear();
            owned.Clear();
        }
    }

    private void Classify(StoreEvent e, HashSet<string> namespaces, HashSet<string> crds, List<string> deletedUids, List<StoredObject> owned)
    {
        var s = e.Stored;
        bool deleting = s.Object["metadata"]?["deletionTimestamp"] is not null;
        if (s.Resource == "/namespaces" && deleting && e.Type != StoreEventType.Deleted)
        {
            namespaces.Add(s.Name);
        }
        else if (s.Namespace.Length > 0 && e.Type != StoreEventType.Added && IsTerminating(s.Namespace))
        {
            namespaces.Add(s.Namespace);
        }

        if (s.Resource == "apiextensions.k8s.io/customresourcedefinitions" && deleting && e.Type != StoreEventType.Deleted)
        {
            crds.Add(s.Name);
        }
        else if (e.Type == StoreEventType.Deleted && !_service.Registry.IsBuiltinStorage(s.Resource))
        {
            foreach (var crd in _store.List("apiextensions.k8s.io/customresourcedefinitions", null).Items)
            {
                if (crd.Object["metadata"]?["deletionTimestamp"] is not null && StorageKeyOf(crd.Object) == s.Resource)
                {
                    crds.Add(crd.Name);
                }
            }
        }

        if (e.Type == StoreEventType.Deleted && s.Uid.Length > 0)
        {
            deletedUids.Add(s.Uid);
        }
        else if (e.Type != StoreEventType.Deleted && s.Object["metadata"]?["ownerReferences"] is JsonArray { Count: > 0 })
        {
            owned.Add(s);
        }
    }

    private static bool InForegroundDeletion(JsonObject obj) =>
        obj["metadata"]?["deletionTimestamp"] is not null &&
        Json.StringList(obj["metadata"]?["finalizers"]).Contains(ResourceService.ForegroundFinalizer);

    /// <summary>Owners in foreground deletion to look at: the owner itself when marked, its owners when a dependent went.</summary>
    private static void ClassifyForeground(StoreEvent e, HashSet<string> owners)
    {
        var s = e.Stored;
        if (e.Type != StoreEventType.Deleted && InForegroundDeletion(s.Object))
        {
            owners.Add(s.Uid);
        }

        if (e.Type == StoreEventType.Deleted || s.Object["metadata"]?["deletionTimestamp"] is not null)
        {
            foreach (var r in s.Object["metadata"]?["ownerReferences"] as JsonArray ?? [])
            {
                if (Json.Str(r?["uid"]) is { } uid)
                {
                    owners.Add(uid);
                }
            }
        }
    }

    /// <summary>Deletes the dependents of an owner in foreground deletion; once none is left, releases the owner.</summary>
    private void ProcessForeground(StoredObject owner)
    {
        if (!InForegroundDeletion(owner.Object))
        {
            return;
        }

        var dependents = _store.DependentsOf(owner.Uid);
        foreach (var dep in dependents.Where(d => d.Object["metadata"]?["deletionTimestamp"] is null))
        {
            _service.DeleteInternal(dep, "Foreground");
        }

        if (_store.DependentsOf(owner.Uid).Count == 0)
        {
            _service.RemoveFinalizerInternal(owner, ResourceService.ForegroundFinalizer);
        }
    }

    private bool IsTerminating(string ns) =>
        _store.Get("/namespaces", "", ns)?.Object["metadata"]?["deletionTimestamp"] is not null;

    private static string StorageKeyOf(JsonObject crd) =>
        Json.Str(crd["spec"]?["group"]) + "/" + Json.Str(crd["spec"]?["names"]?["plural"]);

    private void FullPass()
    {
        foreach (var obj in _store.All())
        {
            bool deleting = obj.Object["metadata"]?["deletionTimestamp"] is not null;
            if (obj.Resource == "/namespaces" && deleting)
            {
                FinalizeNamespace(obj.Name);
            }
            else if (obj.Resource == "apiextensions.k8s.io/customresourcedefinitions" && deleting)
            {
                CleanupCrd(obj.Name);
            }
            else if (obj.Object["metadata"]?["ownerReferences"] is JsonArray { Count: > 0 })
            {
                CollectIfOrphaned(obj);
            }

            if (InForegroundDeletion(obj.Object))
            {
                ProcessForeground(obj);
            }
        }
    }

    /// <summary>Deletes every object whose owners are all gone once <paramref name="uid"/> was deleted.</summary>
    private void CollectDependents(string uid)
    {
        foreach (var obj in _store.DependentsOf(uid))
        {
            CollectIfOrphaned(obj);
        }
    }

    private void CollectIfOrphaned(StoredObject obj)
    {
        if (obj.Object["metadata"]?["ownerReferences"] is not JsonArray refs || refs.Count == 0 ||
            obj.Object["metadata"]?["deletionTimestamp"] is not null)
        {
            return;
        }

        if (refs.All(r => Json.Str(r?["uid"]) is { } u && _store.GetByUid(u) is null))
        {
            ApiServerLog.GarbageCollected(_logger, obj.Resource, obj.Namespace, obj.Name);
            _service.DeleteInternal(obj);
        }
    }

    /// <summary>Deletes a terminating namespace's content; once none is left, drops the "kubernetes" finalizer.</summary>
    private void FinalizeNamespace(string ns)
    {
        var nsObj = _store.Get("/namespaces", "", ns);
        if (nsObj is null || nsObj.Object["metadata"]?["deletionTimestamp"] is null)
        {
            return;
        }

        foreach (var obj in _store.All().Where(o => o.Namespace == ns))
        {
            if (obj.Object["metadata"]?["deletionTimestamp"] is null)
            {
                _service.DeleteInternal(obj);
            }
        }

        var type = _service.Registry.Find("", "v1", "namespaces")!;
        var left = _store.All().Where(o => o.Namespace == ns).ToList();
        if (left.Count > 0)
        {
            ReportRemaining(type, nsObj, left);
            return;
        }

        var body = (JsonObject)nsObj.Object.DeepClone();
        var finalizers = new JsonArray([.. Json.StringList(body["spec"]?["finalizers"]).Where(f => f != "kubernetes").Select(f => (JsonNode)f)]);
        (body["spec"] as JsonObject ?? [])["finalizers"] = finalizers;
        _service.Update(type, "", ns, body, "finalize", WriteOptions.Default with { FieldManager = "namespace-controller" });
    }

    /// <summary>Explains on the namespace, as the namespace controller's conditions do, what keeps it Terminating.</summary>
    private void ReportRemaining(Resources.ResourceType type, StoredObject nsObj, List<StoredObject> left)
    {
        static string GroupResource(string storageKey)
        {
            int slash = storageKey.IndexOf('/', StringComparison.Ordinal);
            string group = storageKey[..slash], plural = storageKey[(slash + 1)..];
            return group.Length == 0 ? plural : plural + "." + group;
        }

        string content = string.Join(", ", left.GroupBy(o => o.Resource).OrderBy(g => g.Key, StringComparer.Ordinal)
            .Select(g => GroupResource(g.Key) + " has " + g.Count().ToString(System.Globalization.CultureInfo.InvariantCulture) + " resource instances"));
        var byFinalizer = left.SelectMany(o => Json.StringList(o.Object["metadata"]?["finalizers"])).GroupBy(f => f).OrderBy(g => g.Key, StringComparer.Ordinal)
            .Select(g => g.Key + " in " + g.Count().ToString(System.Globalization.CultureInfo.InvariantCulture) + " resource instances").ToList();
        string now = Json.Str(nsObj.Object["metadata"]?["deletionTimestamp"]) ?? "";
        var conditions = new JsonArray
        {
            new JsonObject { ["type"] = "NamespaceContentRemaining", ["status"] = "True", ["lastTransitionTime"] = now, ["reason"] = "SomeResourcesRemain", ["message"] = "Some resources are remaining: " + content },
            new JsonObject
            {
                ["type"] = "NamespaceFinalizersRemaining",
                ["status"] = byFinalizer.Count > 0 ? "True" : "False",
                ["lastTransitionTime"] = now,
                ["reason"] = byFinalizer.Count > 0 ? "SomeFinalizersRemain" : "ContentHasNoFinalizers",
                ["message"] = byFinalizer.Count > 0 ? "Some content in the namespace has finalizers remaining: " + string.Join(", ", byFinalizer) : "All content-preserving finalizers finished",
            },
        };
        if (Json.Same(nsObj.Object["status"]?["conditions"], conditions))
        {
            return;
        }

        var body = (JsonObject)nsObj.Object.DeepClone();
        (body["status"] as JsonObject ?? [])["conditions"] = conditions;
        _service.Update(type, "", nsObj.Name, body, "status", WriteOptions.Default with { FieldManager = "namespace-controller" });
    }

    /// <summary>Deletes every instance of a terminating CRD, then removes its cleanup finalizer.</summary>
    private void CleanupCrd(string name)
    {
        var crd = _store.Get("apiextensions.k8s.io/customresourcedefinitions", "", name);
        if (crd is null || crd.Object["metadata"]?["deletionTimestamp"] is null)
        {
            return;
        }

        string key = StorageKeyOf(crd.Object);
        var (items, _) = _store.List(key, null);
        foreach (var item in items)
        {
            if (item.Object["metadata"]?["deletionTimestamp"] is null)
            {
                _service.DeleteInternal(item);
            }
        }

        if (_store.List(key, null).Items.Count > 0)
        {
            return;
        }

        var type = _service.Registry.Find("apiextensions.k8s.io", "v1", "customresourcedefinitions")!;
        var body = (JsonObject)crd.Object.DeepClone();
        var meta = Json.Meta(body);
        meta["finalizers"] = new JsonArray([.. Json.StringList(meta["finalizers"]).Where(f => f != Strategies.CrdCleanupFinalizer).Select(f => (JsonNode)f)]);
        _service.Update(type, "", name, body, null, WriteOptions.Default with { FieldManager = "apiextensions-controller" });
    }
}
