using System.Globalization;
using System.Text.Json.Nodes;
using System.Threading.Channels;

namespace Dolly.Api.Storage;

/// <summary>An object as stored: the JSON (never mutated once stored; clone before changing) and its revision.</summary>
internal sealed record StoredObject(string Resource, string Namespace, string Name, long ResourceVersion, JsonObject Object)
{
    public string Uid => Object["metadata"]?["uid"]?.GetValue<string>() ?? "";
}

/// <summary>What happened to an object; one event per write, numbered by the global revision.</summary>
internal enum StoreEventType
{
    Added,
    Modified,
    Deleted,
}

/// <summary>
/// One committed change: the new state (the last state, at the deletion's revision, for a delete) and, for a
/// modification or a delete, the state before (which keeps its own revision).
/// </summary>
internal sealed record StoreEvent(StoreEventType Type, StoredObject Stored, JsonObject? Previous = null)
{
    public long ResourceVersion => Stored.ResourceVersion;
}

/// <summary>The outcome of a conditional write.</summary>
internal enum WriteOutcome
{
    Ok,
    NotFound,
    AlreadyExists,
    Conflict,
}

/// <summary>
/// All API objects: kept in memory for reads, lists and watches, and written to SQLite before a write returns, so a
/// crash loses nothing acknowledged. One lock orders writes and revisions (a global counter, like etcd's). Writes
/// are group-committed: a writer stages its change under the lock, then waits on the commit lock; whoever holds it
/// writes every staged change in one transaction, so concurrent writers share one fsync. Watch events are published
/// only once durable, in revision order.
/// </summary>
internal sealed class ObjectStore : IDisposable
{
    private readonly Lock _sync = new();
    private readonly Lock _commitLock = new();
    private readonly SqliteLog _log;
    private List<PendingWrite> _pending = [];
    private List<PendingWrite> _committing = [];
    private long _durable;
    private Exception? _failed;
    private readonly Dictionary<string, SortedDictionary<string, StoredObject>> _byResource = new(StringComparer.Ordinal);
    private readonly Dictionary<string, StoredObject> _byUid = new(StringComparer.Ordinal);
    private readonly Dictionary<string, HashSet<(string Resource, string Namespace, string Name)>> _byOwner = new(StringComparer.Ordinal);
    private readonly StoreEvent?[] _window;
    private readonly List<WatchSubscription> _subscribers = [];
    private int _windowStart;
    private int _windowCount;
    private long _revision;
    private long _compactedThrough;

    public ObjectStore(string databasePath, int windowSize)
    {
        _window = new StoreEvent?[Math.Max(16, windowSize)];
        _log = new SqliteLog(databasePath);
        Load();
    }

    /// <summary>The revision of the newest committed write.</summary>
    public long Revision
    {
        get
        {
            lock (_sync)
            {
                return _revision;
            }
        }
    }

    /// <summary>Events with a revision above this are still in the watch window.</summary>
    public long CompactedThrough
    {
        get
        {
            lock (_sync)
            {
                return _compactedThrough;
            }
        }
    }

    private static string Key(string ns, string name) => ns + "\0" + name;

    private void Load()
    {
        _revision = _log.LoadRevision();
        foreach (var (resource, ns, name, rv, body) in _log.LoadObjects())
        {
            var obj = (JsonObject)JsonNode.Parse(body)!;
            Materialize(obj);
            var stored = new StoredObject(resource, ns, name, rv, obj);
            Bucket(resource)[Key(ns, name)] = stored;
            Index(null, stored);
        }

        // History is not persisted: a watch from before the restart must re-list, as after an etcd compaction.
        _compactedThrough = _revision;
        _durable = _revision;
    }

    private SortedDictionary<string, StoredObject> Bucket(string resource)
    {
        if (!_byResource.TryGetValue(resource, out var bucket))
        {
            bucket = new SortedDictionary<string, StoredObject>(StringComparer.Ordinal);
            _byResource[resource] = bucket;
        }

        return bucket;
    }

    public StoredObject? Get(string resource, string ns, string name)
    {
        lock (_sync)
        {
            return _byResource.TryGetValue(resource, out var b) && b.TryGetValue(Key(ns, name), out var s) ? s : null;
        }
    }

    public StoredObject? GetByUid(string uid)
    {
        lock (_sync)
        {
            return _byUid.GetValueOrDefault(uid);
        }
    }

    /// <summary>A consistent snapshot of one resource's objects (optionally one namespace), in key order, and its revision.</summary>
    public (List<StoredObject> Items, long Revision) List(string resource, string? ns)
    {
        lock (_sync)
        {
            var items = new List<StoredObject>();
            if (_byResource.TryGetValue(resource, out var bucket))
            {
                foreach (var s in bucket.Values)
                {
                    if (ns is null || s.Namespace == ns)
                    {
                        items.Add(s);
                    }
                }
            }

            return (items, _revision);
        }
    }

    /// <summary>
    /// One resource's objects (optionally one namespace) as they were at <paramref name="revision"/>, in key order:
    /// the current state with every later change in the watch window undone. Null when changes after that revision
    /// have left the window (the caller answers 410 Gone, as kube-apiserver after an etcd compaction).
    /// </summary>
    public List<StoredObject>? ListAt(string resource, string? ns, long revision)
    {
        lock (_sync)
        {
            if (revision < _compactedThrough || revision > _revision)
            {
                return null;
            }

            var state = _byResource.TryGetValue(resource, out var bucket)
                ? new SortedDictionary<string, StoredObject>(bucket, StringComparer.Ordinal)
                : new SortedDictionary<string, StoredObject>(StringComparer.Ordinal);
            // Newest first: staged writes, the batch being committed, then the published window.
            var newerFirst = _pending.Select(w => w.Event).Reverse()
                .Concat(_committing.Select(w => w.Event).Reverse())
                .Concat(Enumerable.Range(0, _windowCount).Select(i => _window[(_windowStart + _windowCount - 1 - i) % _window.Length]!));
            foreach (var e in newerFirst)
            {
                if (e.ResourceVersion <= revision)
                {
                    break;
                }

                var s = e.Stored;
                if (s.Resource != resource)
                {
                    continue;
                }

                if (e.Previous is null)
                {
                    state.Remove(Key(s.Namespace, s.Name));
                }
                else
                {
                    long before = long.Parse(e.Previous["metadata"]!["resourceVersion"]!.GetValue<string>(), CultureInfo.InvariantCulture);
                    state[Key(s.Namespace, s.Name)] = new StoredObject(s.Resource, s.Namespace, s.Name, before, e.Previous);
                }
            }

            return [.. state.Values.Where(o => ns is null || o.Namespace == ns)];
        }
    }

    /// <summary>Every stored object of every resource (for garbage collection scans).</summary>
    public List<StoredObject> All()
    {
        lock (_sync)
        {
            return [.. _byResource.Values.SelectMany(b => b.Values)];
        }
    }

    /// <summary>Stores a new object; sets metadata.resourceVersion to the new revision.</summary>
    public (WriteOutcome Outcome, StoredObject? Stored) Create(string resource, string ns, string name, JsonObject obj)
    {
        StoredObject stored;
        lock (_sync)
        {
            ThrowIfFailed();
            var bucket = Bucket(resource);
            if (bucket.ContainsKey(Key(ns, name)))
            {
                return (WriteOutcome.AlreadyExists, null);
            }

            stored = Stage(resource, ns, name, obj, StoreEventType.Added, null);
            bucket[Key(ns, name)] = stored;
            Index(null, stored);
        }

        WaitDurable(stored.ResourceVersion);
        return (WriteOutcome.Ok, stored);
    }

    /// <summary>Replaces an object if its revision is still <paramref name="expectedRevision"/>.</summary>
    public (WriteOutcome Outcome, StoredObject? Stored) Update(string resource, string ns, string name, JsonObject obj, long expectedRevision)
    {
        StoredObject stored;
        lock (_sync)
        {
            ThrowIfFailed();
            var bucket = Bucket(resource);
            if (!bucket.TryGetValue(Key(ns, name), out var current))
            {
                return (WriteOutcome.NotFound, null);
            }

            if (current.ResourceVersion != expectedRevision)
            {
                return (WriteOutcome.Conflict, current);
            }

            stored = Stage(resource, ns, name, obj, StoreEventType.Modified, current.Object);
            bucket[Key(ns, name)] = stored;
            Index(current, stored);
        }

        WaitDurable(stored.ResourceVersion);
        return (WriteOutcome.Ok, stored);
    }

    /// <summary>Removes an object if its revision is still <paramref name="expectedRevision"/>.</summary>
    public (WriteOutcome Outcome, StoredObject? Stored) Delete(string resource, string ns, string name, long expectedRevision)
    {
        StoredObject stored;
        lock (_sync)
        {
            ThrowIfFailed();
            var bucket = Bucket(resource);
            if (!bucket.TryGetValue(Key(ns, name), out var current))
            {
                return (WriteOutcome.NotFound, null);
            }

            if (current.ResourceVersion != expectedRevision)
            {
                return (WriteOutcome.Conflict, current);
            }

            // The DELETED event carries the last state with a fresh revision, as kube-apiserver's does.
            var last = (JsonObject)current.Object.DeepClone();
            stored = Stage(resource, ns, name, last, StoreEventType.Deleted, current.Object);
            bucket.Remove(Key(ns, name));
            Index(current, null);
        }

        WaitDurable(stored.ResourceVersion);
        return (WriteOutcome.Ok, stored);
    }

    private void Index(StoredObject? before, StoredObject? after)
    {
        if (before is not null)
        {
            if (before.Uid.Length > 0)
            {
                _byUid.Remove(before.Uid);
            }

            foreach (var owner in OwnerUids(before))
            {
                if (_byOwner.TryGetValue(owner, out var set) && set.Remove((before.Resource, before.Namespace, before.Name)) && set.Count == 0)
                {
                    _byOwner.Remove(owner);
                }
            }
        }

        if (after is not null)
        {
            if (after.Uid.Length > 0)
            {
                _byUid[after.Uid] = after;
            }

            foreach (var owner in OwnerUids(after))
            {
                if (!_byOwner.TryGetValue(owner, out var set))
                {
                    set = [];
                    _byOwner[owner] = set;
                }

                set.Add((after.Resource, after.Namespace, after.Name));
            }
        }
    }

    private static IEnumerable<string> OwnerUids(StoredObject s) =>
        (s.Object["metadata"]?["ownerReferences"] as JsonArray ?? []).Select(r => (r as JsonObject)?["uid"]).OfType<JsonValue>()
            .Select(v => v.TryGetValue(out string? u) ? u : null).OfType<string>();

    /// <summary>The objects whose ownerReferences name <paramref name="ownerUid"/>.</summary>
    public List<StoredObject> DependentsOf(string ownerUid)
    {
        lock (_sync)
        {
            var result = new List<StoredObject>();
            if (_byOwner.TryGetValue(ownerUid, out var keys))
            {
                foreach (var (resource, ns, name) in keys)
                {
                    if (_byResource.TryGetValue(resource, out var b) && b.TryGetValue(Key(ns, name), out var s))
                    {
                        result.Add(s);
                    }
                }
            }

            return result;
        }
    }

    /// <summary>Assigns the next revision and queues the write for the next group commit (caller holds _sync).</summary>
    private StoredObject Stage(string resource, string ns, string name, JsonObject obj, StoreEventType type, JsonObject? previous)
    {
        long rv = ++_revision;
        var meta = obj["metadata"] as JsonObject ?? new JsonObject();
        obj["metadata"] = meta;
        meta["resourceVersion"] = rv.ToString(CultureInfo.InvariantCulture);
        Materialize(obj);
        var stored = new StoredObject(resource, ns, name, rv, obj);
        string? body = type == StoreEventType.Deleted ? null : obj.ToJsonString();
        _pending.Add(new PendingWrite(resource, ns, name, rv, body, new StoreEvent(type, stored, previous)));
        return stored;
    }

    /// <summary>
    /// Returns once revision <paramref name="rv"/> is durable. The first waiter commits every staged write; writers
    /// that staged meanwhile find theirs committed by it, or commit the next batch themselves.
    /// </summary>
    private void WaitDurable(long rv)
    {
        lock (_commitLock)
        {
            if (Interlocked.Read(ref _durable) >= rv)
            {
                return;
            }

            List<PendingWrite> batch;
            lock (_sync)
            {
                ThrowIfFailed();
                batch = _pending;
                _pending = [];
                _committing = batch;
            }

            try
            {
                _log.Commit(batch);
            }
            catch (Exception e) when (e is Microsoft.Data.Sqlite.SqliteException or IOException)
            {
                // Memory is now ahead of the database: refuse every further operation; a restart reloads the truth.
                lock (_sync)
                {
                    _failed = e;
                }

                throw;
            }

            lock (_sync)
            {
                Interlocked.Exchange(ref _durable, batch[^1].Revision);
                foreach (var write in batch)
                {
                    Publish(write.Event);
                }

                _committing = [];
            }
        }
    }

    private void ThrowIfFailed()
    {
        if (_failed is not null)
        {
            throw new InvalidOperationException("the object store could not write to its database and stopped: " + _failed.Message, _failed);
        }
    }

    /// <summary>
    /// Parsed nodes build their children lazily on first access; a stored object is read by many threads at once,
    /// so every container is expanded here, under the lock, before the object is shared.
    /// </summary>
    private static void Materialize(JsonNode? node)
    {
        switch (node)
        {
            case JsonObject o:
                foreach (var (_, child) in o)
                {
                    Materialize(child);
                }

                break;
            case JsonArray a:
                foreach (var child in a)
                {
                    Materialize(child);
                }

                break;
        }
    }

    private void Publish(StoreEvent e)
    {
        if (_windowCount == _window.Length)
        {
            _compactedThrough = _window[_windowStart]!.ResourceVersion;
            _window[_windowStart] = null;
            _windowStart = (_windowStart + 1) % _window.Length;
            _windowCount--;
        }

        _window[(_windowStart + _windowCount) % _window.Length] = e;
        _windowCount++;
        for (int i = _subscribers.Count - 1; i >= 0; i--)
        {
            var sub = _subscribers[i];
            if (e.ResourceVersion > sub.From && sub.Filter(e) && !sub.Writer.TryWrite(e))
            {
                // A watcher that cannot keep up is cut off, as kube-apiserver does; its client re-watches.
                sub.Writer.TryComplete();
                _subscribers.RemoveAt(i);
            }
        }
    }

    /// <summary>
    /// Subscribes to events after <paramref name="fromRevision"/>; window events after it are queued first.
    /// Returns null when that revision is older than the window (the caller answers 410 Expired).
    /// </summary>
    public WatchSubscription? Subscribe(long fromRevision, Func<StoreEvent, bool> filter, int capacity = 100_000)
    {
        lock (_sync)
        {
            if (fromRevision < _compactedThrough)
            {
                return null;
            }

            var channel = Channel.CreateBounded<StoreEvent>(new BoundedChannelOptions(capacity)
            {
                SingleReader = true,
                SingleWriter = true,
                FullMode = BoundedChannelFullMode.Wait,
            });
            var sub = new WatchSubscription(this, channel.Reader, channel.Writer, filter, fromRevision);
            for (int i = 0; i < _windowCount; i++)
            {
                var e = _window[(_windowStart + i) % _window.Length]!;
                if (e.ResourceVersion > fromRevision && filter(e) && !channel.Writer.TryWrite(e))
                {
                    channel.Writer.TryComplete();
                    return sub;
                }
            }

            _subscribers.Add(sub);
            return sub;
        }
    }

    internal void Unsubscribe(WatchSubscription sub)
    {
        lock (_sync)
        {
            _subscribers.Remove(sub);
        }

        sub.Writer.TryComplete();
    }

    public void Dispose()
    {
        lock (_sync)
        {
            foreach (var s in _subscribers)
            {
                s.Writer.TryComplete();
            }

            _subscribers.Clear();
        }

        lock (_commitLock)
        {
            _log.Dispose();
        }
    }
}

/// <summary>A live stream of store events; dispose to stop it.</summary>
internal sealed class WatchSubscription : IDisposable
{
    private readonly ObjectStore _store;

    internal WatchSubscription(ObjectStore store, ChannelReader<StoreEvent> reader, ChannelWriter<StoreEvent> writer, Func<StoreEvent, bool> filter, long from)
    {
        From = from;
        _store = store;
        Reader = reader;
        Writer = writer;
        Filter = filter;
    }

    public ChannelReader<StoreEvent> Reader { get; }

    internal ChannelWriter<StoreEvent> Writer { get; }

    internal Func<StoreEvent, bool> Filter { get; }

    /// <summary>Events up to this revision were already covered (a list, or the requested resourceVersion).</summary>
    internal long From { get; }

    public void Dispose() => _store.Unsubscribe(this);
}
