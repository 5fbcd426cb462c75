using System.Globalization;
using System.Text.Json.Nodes;
using System.Threading.Channels;
using Microsoft.Data.Sqlite;

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

/// <summary>One committed change: the new state (the last state for a delete) and, for a modification, the state before.</summary>
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
/// All API objects: kept in memory for reads, lists and watches, written through to SQLite (WAL, synchronous=FULL)
/// before a write is acknowledged, so a crash loses nothing acknowledged. A single lock orders writes, revisions and
/// watch events: the revision counter is global like etcd's, and events reach subscribers in revision order.
/// </summary>
internal sealed class ObjectStore : IDisposable
{
    private readonly Lock _sync = new();
    private readonly SqliteConnection _db;
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
        _db = new SqliteConnection(new SqliteConnectionStringBuilder { DataSource = databasePath, Pooling = false }.ToString());
        _db.Open();
        Execute("PRAGMA journal_mode=WAL;");
        Execute("PRAGMA synchronous=FULL;");
        Execute("CREATE TABLE IF NOT EXISTS objects (resource TEXT NOT NULL, namespace TEXT NOT NULL, name TEXT NOT NULL, " +
                "rv INTEGER NOT NULL, body TEXT NOT NULL, PRIMARY KEY (resource, namespace, name)) WITHOUT ROWID;");
        Execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);");
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

    private void Execute(string sql)
    {
        using var cmd = _db.CreateCommand();
        cmd.CommandText = sql;
        cmd.ExecuteNonQuery();
    }

    private void Load()
    {
        using (var cmd = _db.CreateCommand())
        {
            cmd.CommandText = "SELECT value FROM meta WHERE key = 'rv'";
            _revision = cmd.ExecuteScalar() is long rv ? rv : 0;
        }

        using (var cmd = _db.CreateCommand())
        {
            cmd.CommandText = "SELECT resource, namespace, name, rv, body FROM objects";
            using var reader = cmd.ExecuteReader();
            while (reader.Read())
            {
                var obj = (JsonObject)JsonNode.Parse(reader.GetString(4))!;
                Materialize(obj);
                var stored = new StoredObject(reader.GetString(0), reader.GetString(1), reader.GetString(2), reader.GetInt64(3), obj);
                Bucket(stored.Resource)[Key(stored.Namespace, stored.Name)] = stored;
                Index(null, stored);
            }
        }

        // History is not persisted: a watch from before the restart must re-list, as after an etcd compaction.
        _compactedThrough = _revision;
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
        lock (_sync)
        {
            var bucket = Bucket(resource);
            if (bucket.ContainsKey(Key(ns, name)))
            {
                return (WriteOutcome.AlreadyExists, null);
            }

            var stored = Commit(resource, ns, name, obj, delete: false);
            bucket[Key(ns, name)] = stored;
            Index(null, stored);
            Publish(new StoreEvent(StoreEventType.Added, stored));
            return (WriteOutcome.Ok, stored);
        }
    }

    /// <summary>Replaces an object if its revision is still <paramref name="expectedRevision"/>.</summary>
    public (WriteOutcome Outcome, StoredObject? Stored) Update(string resource, string ns, string name, JsonObject obj, long expectedRevision)
    {
        lock (_sync)
        {
            var bucket = Bucket(resource);
            if (!bucket.TryGetValue(Key(ns, name), out var current))
            {
                return (WriteOutcome.NotFound, null);
            }

            if (current.ResourceVersion != expectedRevision)
            {
                return (WriteOutcome.Conflict, current);
            }

            var stored = Commit(resource, ns, name, obj, delete: false);
            bucket[Key(ns, name)] = stored;
            Index(current, stored);
            Publish(new StoreEvent(StoreEventType.Modified, stored, current.Object));
            return (WriteOutcome.Ok, stored);
        }
    }

    /// <summary>Removes an object if its revision is still <paramref name="expectedRevision"/>.</summary>
    public (WriteOutcome Outcome, StoredObject? Stored) Delete(string resource, string ns, string name, long expectedRevision)
    {
        lock (_sync)
        {
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
            var stored = Commit(resource, ns, name, last, delete: true);
            bucket.Remove(Key(ns, name));
            Index(current, null);
            Publish(new StoreEvent(StoreEventType.Deleted, stored));
            return (WriteOutcome.Ok, stored);
        }
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

    private StoredObject Commit(string resource, string ns, string name, JsonObject obj, bool delete)
    {
        long rv = _revision + 1;
        var meta = obj["metadata"] as JsonObject ?? new JsonObject();
        obj["metadata"] = meta;
        meta["resourceVersion"] = rv.ToString(CultureInfo.InvariantCulture);
        using (var tx = _db.BeginTransaction())
        {
            using (var cmd = _db.CreateCommand())
            {
                cmd.Transaction = tx;
                if (delete)
                {
                    cmd.CommandText = "DELETE FROM objects WHERE resource = $r AND namespace = $n AND name = $m";
                }
                else
                {
                    cmd.CommandText = "INSERT INTO objects (resource, namespace, name, rv, body) VALUES ($r, $n, $m, $v, $b) " +
                                      "ON CONFLICT (resource, namespace, name) DO UPDATE SET rv = $v, body = $b";
                    cmd.Parameters.AddWithValue("$v", rv);
                    cmd.Parameters.AddWithValue("$b", obj.ToJsonString());
                }

                cmd.Parameters.AddWithValue("$r", resource);
                cmd.Parameters.AddWithValue("$n", ns);
                cmd.Parameters.AddWithValue("$m", name);
                cmd.ExecuteNonQuery();
            }

            using (var cmd = _db.CreateCommand())
            {
                cmd.Transaction = tx;
                cmd.CommandText = "INSERT INTO meta (key, value) VALUES ('rv', $v) ON CONFLICT (key) DO UPDATE SET value = $v";
                cmd.Parameters.AddWithValue("$v", rv);
                cmd.ExecuteNonQuery();
            }

            tx.Commit();
        }

        _revision = rv;
        Materialize(obj);
        return new StoredObject(resource, ns, name, rv, obj);
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
            if (sub.Filter(e) && !sub.Writer.TryWrite(e))
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
            var sub = new WatchSubscription(this, channel.Reader, channel.Writer, filter);
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

        _db.Dispose();
    }
}

/// <summary>A live stream of store events; dispose to stop it.</summary>
internal sealed class WatchSubscription : IDisposable
{
    private readonly ObjectStore _store;

    internal WatchSubscription(ObjectStore store, ChannelReader<StoreEvent> reader, ChannelWriter<StoreEvent> writer, Func<StoreEvent, bool> filter)
    {
        _store = store;
        Reader = reader;
        Writer = writer;
        Filter = filter;
    }

    public ChannelReader<StoreEvent> Reader { get; }

    internal ChannelWriter<StoreEvent> Writer { get; }

    internal Func<StoreEvent, bool> Filter { get; }

    public void Dispose() => _store.Unsubscribe(this);
}
