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

    // Secondary indexes (guarded by _gate): each maps an index value to the keys of the cached objects that have it,
    // so a handler finds the objects related to an event without walking the cache.
    private readonly Dictionary<string, CacheIndex> _indexes = new(StringComparer.Ordinal);
    private readonly ILogger _logger;
    private readonly TaskCompletionSource _synced = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private long _walks;

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
        _indexes.Add(NamespaceIndex, new CacheIndex(o => ((T)o).Metadata.NamespaceProperty is { Length: > 0 } ns ? [ns] : []));
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

    /// <summary>
    /// Every cached object: a walk of the whole cache, so its cost grows with the cluster. Event handlers and
    /// reconciles ask an index instead (<see cref="ByIndex"/>, <see cref="InNamespace"/>); <see cref="Walks"/> counts
    /// the calls so tests can prove a path never walks.
    /// </summary>
    public IEnumerable<T> List()
    {
        Interlocked.Increment(ref _walks);
        return _items.Values;
    }

    /// <summary>How many times <see cref="List"/> has walked this cache.</summary>
    public long Walks => Interlocked.Read(ref _walks);

    /// <summary>
    /// Adds a secondary index: <paramref name="values"/> gives the index values of an object (none, one or several;
    /// it must depend on the object alone). Objects already cached are indexed at once, later changes as they come.
    /// Adding an index of a name that exists is an error.
    /// </summary>
    public void AddIndex(string name, Func<T, IEnumerable<string>> values)
    {
        ArgumentException.ThrowIfNullOrEmpty(name);
        ArgumentNullException.ThrowIfNull(values);
        lock (_gate)
        {
            if (_indexes.ContainsKey(name))
            {
                throw new ArgumentException($"the {Kind} informer already has an index named {name}", nameof(name));
            }

            var index = new CacheIndex(o => values((T)o));
            foreach (var (key, item) in _items)
            {
                index.Update(key, null, item);
            }

            _indexes.Add(name, index);
        }
    }

    /// <summary>Whether an index of this name exists.</summary>
    public bool HasIndex(string name)
    {
        lock (_gate)
        {
            return _indexes.ContainsKey(name);
        }
    }

    /// <summary>The cached objects whose index <paramref name="name"/> has <paramref name="value"/> (a copy, in no set order).</summary>
    public IReadOnlyList<T> ByIndex(string name, string value)
    {
        lock (_gate)
        {
            if (!_indexes.TryGetValue(name, out var index))
            {
                throw new ArgumentException($"the {Kind} informer has no index named {name}", nameof(name));
            }

            var keys = index.Keys(value);
            var found = new List<T>(keys.Count);
            foreach (var key in keys)
            {
                if (_items.TryGetValue(key, out var item))
                {
                    found.Add(item);
                }
            }

            return found;
        }
    }

    /// <summary>The cached objects of one namespace (the built-in namespace index).</summary>
    public IReadOnlyList<T> InNamespace(string ns) => ByIndex(NamespaceIndex, ns);

    /// <summary>The name of the index every informer has: by namespace (cluster-scoped objects have none).</summary>
    public const string NamespaceIndex = "namespace";

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

            _items.TryGetValue(key, out var previous);
            _items[key] = item;
            Reindex(key, previous, item);
        }
    }

    /// <summary>
    /// Takes one watch event as the watch does (cache, indexes, then the handlers): the fake-cluster seam through
    /// which handler tests feed a cache without an API server.
    /// </summary>
    public void Deliver(WatchEventType type, T item)
    {
        ArgumentNullException.ThrowIfNull(item);
        if (type == WatchEventType.Deleted)
        {
            Remove(item);
        }
        else if (type is WatchEventType.Added or WatchEventType.Modified)
        {
            Apply(item);
        }
        else
        {
            throw new ArgumentException($"a {type} event carries no object to deliver", nameof(type));
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

                Reindex(key, old, null);

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
            Reindex(key, old, item);
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

            string key = Key(item);
            if (_items.TryRemove(key, out old))
            {
                Reindex(key, old, null);
            }
        }

        Fire(old ?? item, null);
    }

    // Called under _gate with the cached object before and after a change.
    private void Reindex(string key, T? before, T? after)
    {
        foreach (var index in _indexes.Values)
        {
            index.Update(key, before, after);
        }
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

/// <summary>One secondary index of an informer: index value to the keys of the objects that have it. Not thread-safe.</summary>
internal sealed class CacheIndex(Func<object, IEnumerable<string>> values)
{
    private static readonly IReadOnlyCollection<string> None = [];
    private readonly Dictionary<string, HashSet<string>> _keys = new(StringComparer.Ordinal);

    public IReadOnlyCollection<string> Keys(string value) => _keys.TryGetValue(value, out var keys) ? keys : None;

    /// <summary>Moves <paramref name="key"/> from the values of <paramref name="before"/> to those of <paramref name="after"/>.</summary>
    public void Update(string key, object? before, object? after)
    {
        var old = before is null ? [] : values(before).ToHashSet(StringComparer.Ordinal);
        var now = after is null ? [] : values(after).ToHashSet(StringComparer.Ordinal);
        foreach (string value in old)
        {
            if (!now.Contains(value) && _keys.TryGetValue(value, out var set))
            {
                set.Remove(key);
                if (set.Count == 0)
                {
                    _keys.Remove(value);
                }
            }
        }

        foreach (string value in now)
        {
            if (!_keys.TryGetValue(value, out var set))
            {
                set = new HashSet<string>(StringComparer.Ordinal);
                _keys.Add(value, set);
            }

            set.Add(key);
        }
    }
}
