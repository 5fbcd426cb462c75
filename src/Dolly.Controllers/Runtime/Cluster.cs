using System.Net;
using System.Text.Json;
using System.Text.Json.Nodes;
using Dolly.Controllers.Model;
using Dolly.Controllers.Schedules;
using k8s;
using k8s.Autorest;
using k8s.Models;
using Microsoft.Extensions.Logging;

namespace Dolly.Controllers.Runtime;

/// <summary>
/// The controllers' view of the cluster: one informer per kind they read, and the writes they make
/// (each written object goes back into its cache at once).
/// </summary>
internal sealed partial class Cluster
{
    private const string SnapshotVersion = "v1";
    private const string GrantGroup = "gateway.networking.k8s.io";
    private const string GrantVersion = "v1beta1";

    public Cluster(IKubernetes client, ILoggerFactory loggers)
    {
        Client = client;
        var log = loggers.CreateLogger("Dolly.Controllers.Informer");
        Claims = new Informer<V1PersistentVolumeClaim>(
            "PersistentVolumeClaim",
            async ct =>
            {
                var l = await client.CoreV1.ListPersistentVolumeClaimForAllNamespacesAsync(cancellationToken: ct).ConfigureAwait(false);
                return (l.Items, l.Metadata.ResourceVersion);
            },
            (rv, ct) => client.CoreV1.WatchListPersistentVolumeClaimForAllNamespacesAsync(
                allowWatchBookmarks: true, resourceVersion: rv, timeoutSeconds: 600, cancellationToken: ct),
            log);
        Volumes = new Informer<V1PersistentVolume>(
            "PersistentVolume",
            async ct =>
            {
                var l = await client.CoreV1.ListPersistentVolumeAsync(cancellationToken: ct).ConfigureAwait(false);
                return (l.Items, l.Metadata.ResourceVersion);
            },
            (rv, ct) => client.CoreV1.WatchListPersistentVolumeAsync(
                allowWatchBookmarks: true, resourceVersion: rv, timeoutSeconds: 600, cancellationToken: ct),
            log);
        StorageClasses = new Informer<V1StorageClass>(
            "StorageClass",
            async ct =>
            {
                var l = await client.StorageV1.ListStorageClassAsync(cancellationToken: ct).ConfigureAwait(false);
                return (l.Items, l.Metadata.ResourceVersion);
            },
            (rv, ct) => client.StorageV1.WatchListStorageClassAsync(
                allowWatchBookmarks: true, resourceVersion: rv, timeoutSeconds: 600, cancellationToken: ct),
            log);
        Snapshots = Custom<VolumeSnapshot>(client, "VolumeSnapshot", Names.SnapshotGroup, SnapshotVersion, "volumesnapshots", log);
        Contents = Custom<VolumeSnapshotContent>(client, "VolumeSnapshotContent", Names.SnapshotGroup, SnapshotVersion, "volumesnapshotcontents", log);
        SnapshotClasses = Custom<VolumeSnapshotClass>(client, "VolumeSnapshotClass", Names.SnapshotGroup, SnapshotVersion, "volumesnapshotclasses", log);
        Grants = Custom<ReferenceGrant>(client, "ReferenceGrant", GrantGroup, GrantVersion, "referencegrants", log);
        GroupSnapshots = Custom<VolumeGroupSnapshot>(client, "VolumeGroupSnapshot", GroupNames.Group, GroupNames.Version, GroupSnapshotsPlural, log);
        GroupContents = Custom<VolumeGroupSnapshotContent>(client, "VolumeGroupSnapshotContent", GroupNames.Group, GroupNames.Version, GroupContentsPlural, log);
        GroupClasses = Custom<VolumeGroupSnapshotClass>(client, "VolumeGroupSnapshotClass", GroupNames.Group, GroupNames.Version, "volumegroupsnapshotclasses", log);
        Namespaces = new Informer<V1Namespace>(
            "Namespace",
            async ct =>
            {
                var l = await client.CoreV1.ListNamespaceAsync(cancellationToken: ct).ConfigureAwait(false);
                return (l.Items, l.Metadata.ResourceVersion);
            },
            (rv, ct) => client.CoreV1.WatchListNamespaceAsync(
                allowWatchBookmarks: true, resourceVersion: rv, timeoutSeconds: 600, cancellationToken: ct),
            log);
        Schedules = Custom<SnapshotSchedule>(client, ScheduleNames.NamespacedKind, ScheduleNames.Group, ScheduleNames.Version, ScheduleNames.NamespacedPlural, log);
        ClusterSchedules = Custom<SnapshotSchedule>(client, ScheduleNames.ClusterKind, ScheduleNames.Group, ScheduleNames.Version, ScheduleNames.ClusterPlural, log);
        Goldens = Custom<Golden.GoldenSnapshot>(client, Golden.GoldenNames.Kind, Golden.GoldenNames.Group, Golden.GoldenNames.Version, Golden.GoldenNames.Plural, log);
        Reverts = Custom<Revert.VolumeRevert>(client, Revert.RevertNames.Kind, Revert.RevertNames.Group, Revert.RevertNames.Version, Revert.RevertNames.Plural, log);
        Repositories = Custom<Repository.SnapshotRepository>(client, Repository.RepositoryNames.Kind, Repository.RepositoryNames.Group, Repository.RepositoryNames.Version, Repository.RepositoryNames.Plural, log);
        Indexes.AddTo(this);
    }

    /// <summary>VolumeReverts.</summary>
    public Informer<Revert.VolumeRevert> Reverts { get; }

    public IKubernetes Client { get; }

    public Informer<V1PersistentVolumeClaim> Claims { get; }

    public Informer<V1PersistentVolume> Volumes { get; }

    public Informer<V1StorageClass> StorageClasses { get; }

    public Informer<VolumeSnapshot> Snapshots { get; }

    public Informer<VolumeSnapshotContent> Contents { get; }

    public Informer<VolumeSnapshotClass> SnapshotClasses { get; }

    public Informer<ReferenceGrant> Grants { get; }

    /// <summary>Namespaces (their labels select the claims of a ClusterSnapshotSchedule).</summary>
    public Informer<V1Namespace> Namespaces { get; }

    /// <summary>SnapshotSchedules.</summary>
    public Informer<SnapshotSchedule> Schedules { get; }

    /// <summary>ClusterSnapshotSchedules.</summary>
    public Informer<SnapshotSchedule> ClusterSchedules { get; }

    public IEnumerable<IInformer> All => [Claims, Volumes, StorageClasses, Snapshots, Contents, SnapshotClasses, Grants, GroupSnapshots, GroupContents, GroupClasses, Namespaces];

    /// <summary>
    /// Informers of Dolly's own kinds (dolly.io). Kept apart from <see cref="All"/>: on a cluster without their CRDs
    /// they never sync, and that must hold up only the controllers that read them.
    /// </summary>
    public IEnumerable<IInformer> Own => [Schedules, ClusterSchedules, Reverts, Goldens, Repositories];

    /// <summary>Resync: every handler sees every cached object again.</summary>
    public void Touch()
    {
        foreach (var informer in All.Concat(Own))
        {
            informer.Touch();
        }
    }

    private static Informer<T> Custom<T>(IKubernetes client, string kind, string group, string version, string plural, ILogger log)
        where T : class, IKubernetesObject<V1ObjectMeta>
        => new(
            kind,
            async ct =>
            {
                using var response = await client.CustomObjects.ListClusterCustomObjectWithHttpMessagesAsync<CustomObjectList<T>>(
                    group, version, plural, cancellationToken: ct).ConfigureAwait(false);
                return (response.Body.Items, response.Body.Metadata.ResourceVersion);
            },
            (rv, ct) => WatchCustom<T>(client, group, version, plural, rv, ct),
            log);

    private static async IAsyncEnumerable<(WatchEventType, T)> WatchCustom<T>(
        IKubernetes client, string group, string version, string plural, string rv, [System.Runtime.CompilerServices.EnumeratorCancellation] CancellationToken ct)
    {
        await foreach (var (type, item) in client.CustomObjects.WatchListClusterCustomObjectAsync(
            group, version, plural, allowWatchBookmarks: true, resourceVersion: rv, timeoutSeconds: 600, cancellationToken: ct).ConfigureAwait(false))
        {
            yield return (type, Convert<T>(item));
        }
    }

    // ---- snapshots and contents --------------------------------------------------------------------

    public Task<VolumeSnapshot> PatchSnapshotAsync(VolumeSnapshot snapshot, JsonObject patch, bool status, CancellationToken ct) =>
        PatchCustomAsync(Snapshots, snapshot, Names.SnapshotGroup, SnapshotVersion, "volumesnapshots", patch, status, ct);

    public Task<VolumeSnapshotContent> PatchContentAsync(VolumeSnapshotContent content, JsonObject patch, bool status, CancellationToken ct) =>
        PatchCustomAsync(Contents, content, Names.SnapshotGroup, SnapshotVersion, "volumesnapshotcontents", patch, status, ct);

    /// <summary>
    /// A merge patch of a custom object (of its status with <paramref name="status"/>) carrying the cached
    /// resourceVersion, so it is a compare-and-set; the object written goes into <paramref name="cache"/> at once. An
    /// object without a namespace is cluster-scoped.
    /// </summary>
    public Task<T> PatchCustomAsync<T>(Informer<T> cache, T item, string group, string version, string plural, JsonObject patch, bool status, CancellationToken ct)
        where T : class, IKubernetesObject<V1ObjectMeta>
    {
        Precondition(patch, item.Metadata.ResourceVersion);
        return SendPatchAsync(cache, item, group, version, plural, patch, status, ct);
    }

    /// <summary>
    /// Sets or (with a null value) removes annotations of a custom object by a merge patch without a
    /// resourceVersion: only for keys the caller alone writes, where a compare-and-set would fail for nothing
    /// whenever another controller has written the object since the cache saw it.
    /// </summary>
    public Task<T> PatchOwnAnnotationsAsync<T>(Informer<T> cache, T item, string group, string version, string plural, JsonObject annotations, CancellationToken ct)
        where T : class, IKubernetesObject<V1ObjectMeta> =>
        SendPatchAsync(cache, item, group, version, plural, new JsonObject { ["metadata"] = new JsonObject { ["annotations"] = annotations } }, status: false, ct);

    private async Task<T> SendPatchAsync<T>(Informer<T> cache, T item, string group, string version, string plural, JsonObject patch, bool status, CancellationToken ct)
        where T : class, IKubernetesObject<V1ObjectMeta>
    {
        var body = new V1Patch(patch.ToJsonString(), V1Patch.PatchType.MergePatch);
        var api = Client.CustomObjects;
        string name = item.Metadata.Name;
        string? ns = item.Metadata.NamespaceProperty;
        object result = (string.IsNullOrEmpty(ns), status) switch
        {
            (true, true) => await api.PatchClusterCustomObjectStatusAsync(body, group, version, plural, name, cancellationToken: ct).ConfigureAwait(false),
            (true, false) => await api.PatchClusterCustomObjectAsync(body, group, version, plural, name, cancellationToken: ct).ConfigureAwait(false),
            (false, true) => await api.PatchNamespacedCustomObjectStatusAsync(body, group, version, ns, plural, name, cancellationToken: ct).ConfigureAwait(false),
            (false, false) => await api.PatchNamespacedCustomObjectAsync(body, group, version, ns, plural, name, cancellationToken: ct).ConfigureAwait(false),
        };
        var written = Convert<T>(result);
        cache.Remember(written);
        return written;
    }

    /// <summary>Creates a content; an existing one of that name is returned instead (from the server, not the cache).</summary>
    public async Task<(VolumeSnapshotContent Content, bool Created)> CreateContentAsync(VolumeSnapshotContent content, CancellationToken ct)
    {
        try
        {
            object result = await Client.CustomObjects.CreateClusterCustomObjectAsync(content, Names.SnapshotGroup, SnapshotVersion, "volumesnapshotcontents", cancellationToken: ct).ConfigureAwait(false);
            var written = Convert<VolumeSnapshotContent>(result);
            Contents.Remember(written);
            return (written, true);
        }
        catch (HttpOperationException ex) when (ex.Response.StatusCode == HttpStatusCode.Conflict)
        {
            object existing = await Client.CustomObjects.GetClusterCustomObjectAsync(Names.SnapshotGroup, SnapshotVersion, "volumesnapshotcontents", content.Metadata.Name, ct).ConfigureAwait(false);
            return (Convert<VolumeSnapshotContent>(existing), false);
        }
    }

    /// <summary>A content read from the API server (not the cache), or null when there is none.</summary>
    public async Task<VolumeSnapshotContent?> ReadContentAsync(string name, CancellationToken ct)
    {
        try
        {
            object found = await Client.CustomObjects.GetClusterCustomObjectAsync(Names.SnapshotGroup, SnapshotVersion, "volumesnapshotcontents", name, ct).ConfigureAwait(false);
            var content = Convert<VolumeSnapshotContent>(found);
            Contents.Remember(content);
            return content;
        }
        catch (HttpOperationException ex) when (ex.Response.StatusCode == HttpStatusCode.NotFound)
        {
            return null;
        }
    }

    /// <summary>A snapshot read from the API server (not the cache), or null when there is none.</summary>
    public async Task<VolumeSnapshot?> ReadSnapshotAsync(string ns, string name, CancellationToken ct)
    {
        try
        {
            object found = await Client.CustomObjects.GetNamespacedCustomObjectAsync(Names.SnapshotGroup, SnapshotVersion, ns, "volumesnapshots", name, ct).ConfigureAwait(false);
            var snapshot = Convert<VolumeSnapshot>(found);
            Snapshots.Remember(snapshot);
            return snapshot;
        }
        catch (HttpOperationException ex) when (ex.Response.StatusCode == HttpStatusCode.NotFound)
        {
            return null;
        }
    }

    /// <summary>
    /// The ReferenceGrants of one namespace, read from the API server (not the cache, which may not hold one made a
    /// moment ago); none when the cluster does not serve the kind.
    /// </summary>
    public async Task<IList<ReferenceGrant>> ReadGrantsAsync(string ns, CancellationToken ct)
    {
        try
        {
            using var response = await Client.CustomObjects.ListNamespacedCustomObjectWithHttpMessagesAsync<CustomObjectList<ReferenceGrant>>(
                GrantGroup, GrantVersion, ns, "referencegrants", cancellationToken: ct).ConfigureAwait(false);
            return response.Body.Items;
        }
        catch (HttpOperationException ex) when (ex.Response.StatusCode == HttpStatusCode.NotFound)
        {
            return [];
        }
    }

    public async Task DeleteContentAsync(VolumeSnapshotContent content, CancellationToken ct)
    {
        try
        {
            await Client.CustomObjects.DeleteClusterCustomObjectAsync(
                Names.SnapshotGroup, SnapshotVersion, "volumesnapshotcontents", content.Metadata.Name,
                new V1DeleteOptions { Preconditions = new V1Preconditions { Uid = content.Metadata.Uid } },
                cancellationToken: ct).ConfigureAwait(false);
        }
        catch (HttpOperationException ex) when (ex.Response.StatusCode == HttpStatusCode.NotFound)
        {
            // Already gone.
        }
    }

    // ---- claims and volumes ------------------------------------------------------------------------

    public async Task<V1PersistentVolumeClaim> PatchClaimAsync(V1PersistentVolumeClaim claim, JsonObject patch, bool status, CancellationToken ct)
    {
        Precondition(patch, claim.Metadata.ResourceVersion);
        var body = new V1Patch(patch.ToJsonString(), V1Patch.PatchType.MergePatch);
        var written = status
            ? await Client.CoreV1.PatchNamespacedPersistentVolumeClaimStatusAsync(body, claim.Metadata.Name, claim.Metadata.NamespaceProperty, cancellationToken: ct).ConfigureAwait(false)
            : await Client.CoreV1.PatchNamespacedPersistentVolumeClaimAsync(body, claim.Metadata.Name, claim.Metadata.NamespaceProperty, cancellationToken: ct).ConfigureAwait(false);
        Claims.Remember(written);
        return written;
    }

    public async Task<V1PersistentVolume> PatchVolumeAsync(V1PersistentVolume volume, JsonObject patch, bool status, CancellationToken ct)
    {
        Precondition(patch, volume.Metadata.ResourceVersion);
        var body = new V1Patch(patch.ToJsonString(), V1Patch.PatchType.MergePatch);
        var written = status
            ? await Client.CoreV1.PatchPersistentVolumeStatusAsync(body, volume.Metadata.Name, cancellationToken: ct).ConfigureAwait(false)
            : await Client.CoreV1.PatchPersistentVolumeAsync(body, volume.Metadata.Name, cancellationToken: ct).ConfigureAwait(false);
        Volumes.Remember(written);
        return written;
    }

    /// <summary>Creates a PV; an existing one of that name is returned instead.</summary>
    public async Task<(V1PersistentVolume Volume, bool Created)> CreateVolumeAsync(V1PersistentVolume volume, CancellationToken ct)
    {
        try
        {
            var written = await Client.CoreV1.CreatePersistentVolumeAsync(volume, cancellationToken: ct).ConfigureAwait(false);
            Volumes.Remember(written);
            return (written, true);
        }
        catch (HttpOperationException ex) when (ex.Response.StatusCode == HttpStatusCode.Conflict)
        {
            return (await Client.CoreV1.ReadPersistentVolumeAsync(volume.Metadata.Name, cancellationToken: ct).ConfigureAwait(false), false);
        }
    }

    public async Task DeleteVolumeAsync(V1PersistentVolume volume, CancellationToken ct)
    {
        try
        {
            await Client.CoreV1.DeletePersistentVolumeAsync(
                volume.Metadata.Name,
                new V1DeleteOptions { Preconditions = new V1Preconditions { Uid = volume.Metadata.Uid } },
                cancellationToken: ct).ConfigureAwait(false);
        }
        catch (HttpOperationException ex) when (ex.Response.StatusCode == HttpStatusCode.NotFound)
        {
            // Already gone.
        }
    }

    // ---- helpers -----------------------------------------------------------------------------------

    /// <summary>A merge patch of the finalizer list: adds or removes one, keeping the rest.</summary>
    public static JsonObject? FinalizerPatch(V1ObjectMeta meta, string finalizer, bool present)
    {
        var current = meta.Finalizers ?? [];
        bool has = current.Contains(finalizer);
        if (has == present)
        {
            return null;
        }

        var next = present ? [.. current, finalizer] : current.Where(f => f != finalizer).ToList();
        var list = new JsonArray([.. next.Select(f => (JsonNode)JsonValue.Create(f))]);
        return new JsonObject { ["metadata"] = new JsonObject { ["finalizers"] = list } };
    }

    public static bool HasFinalizer(V1ObjectMeta meta, string finalizer) => meta.Finalizers?.Contains(finalizer) == true;

    public static string? Annotation(V1ObjectMeta meta, string name) =>
        meta.Annotations is { } a && a.TryGetValue(name, out var v) ? v : null;

    private static void Precondition(JsonObject patch, string resourceVersion)
    {
        if (patch["metadata"] is not JsonObject meta)
        {
            meta = [];
            patch["metadata"] = meta;
        }

        meta["resourceVersion"] = resourceVersion;
    }

    private static T Convert<T>(object result) =>
        result is JsonElement element
            ? KubernetesJson.Deserialize<T>(element.GetRawText())
            : KubernetesJson.Deserialize<T>(KubernetesJson.Serialize(result));
}
