using System.Collections.Concurrent;
using System.Net;
using k8s;
using k8s.Autorest;
using k8s.Models;
using Microsoft.Extensions.Logging;

namespace Dolly.Controllers.Runtime;

/// <summary>
/// A list-and-watch cache of one kind: lists everything, then watches from the list's resourceVersion,
/// relisting when the watch expires or fails. Handlers see every change as (old, new); either may be null.
/// Controllers read from the cache and write to the API server.
/// </summary>
internal sealed class Informer<T> : IInformer
    where T : class, IKubernetesObject<V1ObjectMeta>
{
    private readonly ConcurrentDictionary<string, T> _items = new(StringComparer.Ordinal);

    // UIDs the watch reported deleted; UIDs are never reused, so a late write-through of one is stale.
    private readonly ConcurrentDictionary<string, byte> _deleted = new(StringComparer.Ordinal);

    // Serialises changes to the cache (the watch on one side, write-throughs from workers on the other), so a
    // write-through can never slip in between the watch's deletion and its record of the UID.
    private readonly Lock _gate = new();
    private readonly Func<CancellationToken, Task<(IList<T> Items, string ResourceVersion)>> _list;
    private readonly Func<string, CancellationToken, IAsyncEnumerable<(WatchEventType, T)>> _watch;
    private readonly List<Action<T?, T?>> _handlers = [];
    private readonly ILogger _logger;
    private readonly TaskCompletionSource _synced = new(TaskCreationOptions.RunContinuationsAsynchronously);

    public Informer(
        string kind,
        Func<CancellationToken, Task<(IList<T> Items, string ResourceVersion)>> list,
        Func<string, CancellationToken, IAsyncEnumerable<(WatchEventType, T)>> watch,
        ILogger logger)
    {
        Kind = kind;
        _list = list;
        _watch = watch;
        _logger = logger;
    }

    public string Kind { get; }

    /// <summary>Completes once the first list is in the cache.</summary>
    public Task Synced => _synced.Task;

    /// <summary>Adds a handler; call before <see cref="RunAsync"/>.</summary>
    public void OnChange(Action<T?, T?> handler) => _handlers.Add(handler);

    /// <summary>The cached object with this key (<c>namespace/name</c>, or <c>name</c> when cluster-scoped).</summary>
    public T? Get(string key) => _items.TryGetValue(key, out var item) ? item : null;

    /// <summary>The cached object.</summary>
    public T? Get(string? ns, string name) => Get(Key(ns, name));

    /// <summary>Every cached object.</summary>
    public IEnumerable<T> List() => _items.Values;

    /// <summary>Puts an object the controller just wrote into the cache, so the next reconcile sees it before the watch does.</summary>
    public void Remember(T item)
    {
        // A write that removed the last finalizer of a deleted object returns it one last time; the watch may
        // already have reported it gone. Either way it must not come back into the cache as a ghost.
        if (item.Metadata.DeletionTimestamp is not null && (item.Metadata.Finalizers is null || item.Metadata.Finalizers.Count == 0))
        {
            return;
        }

        string key = Key(item);
        lock (_gate)
        {
            if ((item.Metadata.Uid is { } uid && _deleted.ContainsKey(uid))
                || (_items.TryGetValue(key, out var old) && IsNewer(old, item)))
            {
                return;
            }

            _items[key] = item;
        }
    }

    /// <summary>Tells the handlers about every cached object again (a resync).</summary>
    public void Touch()
    {
        foreach (var item in _items.Values)
        {
            Fire(item, item);
        }
    }

    public static string Key(T item) => Key(item.Metadata.NamespaceProperty, item.Metadata.Name);

    public static string Key(string? ns, string name) => string.IsNullOrEmpty(ns) ? name : ns + "/" + name;

    public async Task RunAsync(CancellationToken cancellationToken)
    {
        int failures = 0;
        while (!cancellationToken.IsCancellationRequested)
        {
            string rv;
            try
            {
                var (items, listRv) = await _list(cancellationToken).ConfigureAwait(false);
                Replace(items);
                rv = listRv;
                _synced.TrySetResult();
                failures = 0;
            }
            catch (Exception) when (cancellationToken.IsCancellationRequested)
            {
                return;
            }
            catch (Exception ex) when (!cancellationToken.IsCancellationRequested)
            {
                // The API server may be restarting or unreachable: keep trying, with backoff.
                failures++;
                ControllerLog.ListFailed(_logger, Kind, ex.Message);
                await Delay(failures, cancellationToken).ConfigureAwait(false);
                continue;
            }

            // Watch until the server ends the stream (then resume from the last version) or it fails
            // (then list again).
            while (!cancellationToken.IsCancellationRequested)
            {
                bool gone = false;
                try
                {
                    await foreach (var (type, item) in _watch(rv, cancellationToken).ConfigureAwait(false))
                    {
                        if (item?.Metadata?.ResourceVersion is { Length: > 0 } itemRv)
                        {
                            rv = itemRv;
                        }

                        switch (type)
                        {
                            case WatchEventType.Added:
                            case WatchEventType.Modified:
                                Apply(item!);
                                break;
                            case WatchEventType.Deleted:
                                Remove(item!);
                                break;
                            case WatchEventType.Error:
                                gone = true;
                                break;
                            default:
                                break;
                        }

                        if (gone)
                        {
                            break;
                        }
                    }
                }
                catch (Exception) when (cancellationToken.IsCancellationRequested)
                {
                    return;
                }
                catch (Exception ex) when (!cancellationToken.IsCancellationRequested)
                {
                    if (!(ex is HttpOperationException { Response.StatusCode: HttpStatusCode.Gone } || ex is KubernetesException { Status.Code: 410 }))
                    {
                        ControllerLog.WatchFailed(_logger, Kind, ex.Message);
                        await Delay(1, cancellationToken).ConfigureAwait(false);
                    }

                    gone = true;
                }

                if (gone)
                {
                    break;
                }
            }
        }
    }

    private static Task Delay(int failures, CancellationToken cancellationToken)
    {
        double ms = Math.Min(200 * Math.Pow(2, Math.Min(failures, 8)), 30_000);
        return Task.Delay(TimeSpan.FromMilliseconds(ms), cancellationToken).ContinueWith(_ => { }, TaskScheduler.Default);
    }

    private void Replace(IList<T> items)
    {
        var seen = new HashSet<string>(StringComparer.Ordinal);
        foreach (var item in items)
        {
            seen.Add(Key(item));
            Apply(item);
        }

        foreach (var key in _items.Keys)
        {
            T? old;
            lock (_gate)
            {
                if (seen.Contains(key) || !_items.TryRemove(key, out old))
                {
                    continue;
                }

                if (old.Metadata?.Uid is { } uid)
                {
                    _deleted[uid] = 0;
                }
            }

            Fire(old, null);
        }
    }

    private void Apply(T item)
    {
        string key = Key(item);
        T? old;
        lock (_gate)
        {
            // A write-through already holds a newer version: this event is stale, and the watch will bring
            // the newer one (and tell the handlers) in its turn.
            if (_items.TryGetValue(key, out old) && IsNewer(old, item))
            {
                return;
            }

            _items[key] = item;
        }

        Fire(old, item);
    }

    private void Remove(T item)
    {
        T? old;
        lock (_gate)
        {
            if (item.Metadata?.Uid is { } uid)
            {
                if (_deleted.Count > 100_000)
                {
                    _deleted.Clear();
                }

                _deleted[uid] = 0;
            }

            _items.TryRemove(Key(item), out old);
        }

        Fire(old ?? item, null);
    }

    private void Fire(T? old, T? current)
    {
        foreach (var handler in _handlers)
        {
            try
            {
                handler(old, current);
            }
            catch (Exception ex) when (ex is InvalidOperationException or ArgumentException)
            {
                ControllerLog.HandlerFailed(_logger, Kind, ex.Message);
            }
        }
    }

    private static bool IsNewer(T cached, T written) =>
        long.TryParse(cached.Metadata.ResourceVersion, out long a) && long.TryParse(written.Metadata.ResourceVersion, out long b) && a > b;
}

/// <summary>The part of an informer the host runs.</summary>
internal interface IInformer
{
    string Kind { get; }

    Task Synced { get; }

    void Touch();

    Task RunAsync(CancellationToken cancellationToken);
}
