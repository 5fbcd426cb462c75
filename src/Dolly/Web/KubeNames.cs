using System.Collections.Concurrent;
using System.Net;
using Dolly.Controllers.Model;
using k8s;
using k8s.Autorest;
using k8s.Models;
using Microsoft.Extensions.Logging;

namespace Dolly.Web;

/// <summary>A Kubernetes object's name next to an engine device: the claim or VolumeSnapshot, and the PV or content.</summary>
internal sealed record KubeName(string? Namespace, string? Name, string Binding)
{
    /// <summary>namespace/name of the claim or VolumeSnapshot, or the PV or content alone when unbound.</summary>
    public string Display => Name is null ? Binding : $"{Namespace}/{Name}";
}

/// <summary>
/// The Kubernetes names of engine devices, joined through the handles: a PersistentVolume's
/// <c>spec.csi.volumeHandle</c> names a volume and its <c>claimRef</c> the claim; a VolumeSnapshotContent's
/// snapshot handle names a snapshot and its <c>volumeSnapshotRef</c> the VolumeSnapshot. Kept by a list and
/// watch of each kind (relisting when a watch expires or fails), so the page never lists the cluster.
/// </summary>
internal sealed partial class KubeNames
{
    private readonly IKubernetes _client;
    private readonly ILogger _logger;
    private readonly Action _changed;
    private readonly ConcurrentDictionary<string, KubeName> _byHandle = new(StringComparer.Ordinal);

    // Which handle each object holds, so a deletion or a changed handle removes the right entry.
    private readonly ConcurrentDictionary<string, string> _handleOf = new(StringComparer.Ordinal);

    public KubeNames(IKubernetes client, ILogger logger, Action changed)
    {
        _client = client;
        _logger = logger;
        _changed = changed;
    }

    /// <summary>The Kubernetes names of the device with this engine name, or null.</summary>
    public KubeName? Of(string handle) => _byHandle.TryGetValue(handle, out var n) ? n : null;

    /// <summary>Follows both kinds until cancelled; a failure is logged and retried, never the end of it (the names are a side show of the view).</summary>
    public Task RunAsync(CancellationToken ct) => Task.WhenAll(
        FollowAsync<V1PersistentVolume>(
            "PersistentVolume",
            async c =>
            {
                var l = await _client.CoreV1.ListPersistentVolumeAsync(cancellationToken: c).ConfigureAwait(false);
                return (l.Items, l.Metadata.ResourceVersion);
            },
            (rv, c) => _client.CoreV1.WatchListPersistentVolumeAsync(allowWatchBookmarks: true, resourceVersion: rv, timeoutSeconds: 600, cancellationToken: c),
            pv => pv.Spec?.Csi?.VolumeHandle is { Length: > 0 } h
                ? (h, new KubeName(pv.Spec.ClaimRef?.NamespaceProperty, pv.Spec.ClaimRef?.Name, pv.Metadata.Name))
                : null,
            ct),
        FollowAsync<VolumeSnapshotContent>(
            "VolumeSnapshotContent",
            async c =>
            {
                using var r = await _client.CustomObjects.ListClusterCustomObjectWithHttpMessagesAsync<ContentList>(
                    Names.SnapshotGroup, "v1", "volumesnapshotcontents", cancellationToken: c).ConfigureAwait(false);
                return ((IList<VolumeSnapshotContent>)r.Body.Items, r.Body.Metadata.ResourceVersion);
            },
            WatchContents,
            vsc => (vsc.Status?.SnapshotHandle ?? vsc.Spec.Source.SnapshotHandle) is { Length: > 0 } h
                ? (h, new KubeName(vsc.Spec.VolumeSnapshotRef.NamespaceProperty, vsc.Spec.VolumeSnapshotRef.Name, vsc.Metadata.Name))
                : null,
            ct));

    private async IAsyncEnumerable<(WatchEventType, VolumeSnapshotContent)> WatchContents(string rv, [System.Runtime.CompilerServices.EnumeratorCancellation] CancellationToken ct)
    {
        await foreach (var (type, item) in _client.CustomObjects.WatchListClusterCustomObjectAsync(
            Names.SnapshotGroup, "v1", "volumesnapshotcontents", allowWatchBookmarks: true, resourceVersion: rv, timeoutSeconds: 600, cancellationToken: ct).ConfigureAwait(false))
        {
            yield return (type, KubernetesJson.Deserialize<VolumeSnapshotContent>(KubernetesJson.Serialize(item)));
        }
    }

    private async Task FollowAsync<T>(
        string kind,
        Func<CancellationToken, Task<(IList<T> Items, string ResourceVersion)>> list,
        Func<string, CancellationToken, IAsyncEnumerable<(WatchEventType, T)>> watch,
        Func<T, (string Handle, KubeName Name)?> join,
        CancellationToken ct)
        where T : IKubernetesObject<V1ObjectMeta>
    {
        int failures = 0;
        while (!ct.IsCancellationRequested)
        {
            string rv;
            try
            {
                var (items, listRv) = await list(ct).ConfigureAwait(false);
                var keys = new HashSet<string>(StringComparer.Ordinal);
                foreach (var item in items)
                {
                    keys.Add(kind + "/" + item.Metadata.Name);
                    Set(kind, item, join(item));
                }

                foreach (var stale in _handleOf.Keys.Where(k => k.StartsWith(kind + "/", StringComparison.Ordinal) && !keys.Contains(k)).ToList())
                {
                    Remove(stale);
                }

                _changed();
                rv = listRv;
                failures = 0;
            }
            catch (Exception) when (ct.IsCancellationRequested)
            {
                return;
            }
            catch (Exception ex) when (!ct.IsCancellationRequested)
            {
                failures++;
                KubeNamesLog.ListFailed(_logger, kind, ex.Message);
                await Backoff(failures, ct).ConfigureAwait(false);
                continue;
            }

            try
            {
                await foreach (var (type, item) in watch(rv, ct).ConfigureAwait(false))
                {
                    if (type == WatchEventType.Error)
                    {
                        break;
                    }

                    if (type == WatchEventType.Deleted)
                    {
                        Remove(kind + "/" + item.Metadata.Name);
                        _changed();
                    }
                    else if (type is WatchEventType.Added or WatchEventType.Modified)
                    {
                        if (Set(kind, item, join(item)))
                        {
                            _changed();
                        }
                    }
                }
            }
            catch (Exception) when (ct.IsCancellationRequested)
            {
                return;
            }
            catch (Exception ex) when (!ct.IsCancellationRequested)
            {
                if (!(ex is HttpOperationException { Response.StatusCode: HttpStatusCode.Gone } or KubernetesException { Status.Code: 410 }))
                {
                    KubeNamesLog.WatchFailed(_logger, kind, ex.Message);
                    await Backoff(1, ct).ConfigureAwait(false);
                }
            }

            // The watch ended (its timeout, an expired version, a failure): list again, which also drops
            // whatever was deleted while nobody watched.
        }
    }

    private bool Set<T>(string kind, T item, (string Handle, KubeName Name)? joined)
        where T : IKubernetesObject<V1ObjectMeta>
    {
        string key = kind + "/" + item.Metadata.Name;
        if (joined is not { } j)
        {
            return Remove(key);
        }

        if (_handleOf.TryGetValue(key, out var old) && old != j.Handle)
        {
            _byHandle.TryRemove(old, out _);
        }

        _handleOf[key] = j.Handle;
        bool same = _byHandle.TryGetValue(j.Handle, out var existing) && existing == j.Name;
        _byHandle[j.Handle] = j.Name;
        return !same;
    }

    private bool Remove(string key)
    {
        if (_handleOf.TryRemove(key, out var handle))
        {
            _byHandle.TryRemove(handle, out _);
            return true;
        }

        return false;
    }

    private static async Task Backoff(int failures, CancellationToken ct)
    {
        try
        {
            await Task.Delay(TimeSpan.FromMilliseconds(Math.Min(200 * Math.Pow(2, Math.Min(failures, 8)), 30_000)), ct).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
        }
    }

    private static partial class KubeNamesLog
    {
        [LoggerMessage(1, LogLevel.Warning, "web view: listing {Kind} failed: {Message}; retrying")]
        public static partial void ListFailed(ILogger logger, string kind, string message);

        [LoggerMessage(2, LogLevel.Information, "web view: watching {Kind} failed: {Message}; listing again")]
        public static partial void WatchFailed(ILogger logger, string kind, string message);
    }

    /// <summary>The list of VolumeSnapshotContents the API server answers a list with.</summary>
    private sealed class ContentList
    {
        [System.Text.Json.Serialization.JsonPropertyName("metadata")]
        public V1ListMeta Metadata { get; set; } = new();

        [System.Text.Json.Serialization.JsonPropertyName("items")]
        public List<VolumeSnapshotContent> Items { get; set; } = [];
    }
}
