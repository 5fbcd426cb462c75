using Dolly.Storage;

namespace Dolly.Web;

/// <summary>One sample of the pool's space, for the chart of space over time.</summary>
internal readonly record struct SpaceSample(DateTimeOffset At, long Logical, long Allocated, long Physical, long Free);

/// <summary>A tree of the lineage: devices in depth-first order with their depth, parents before children.</summary>
internal sealed record LineageTree(IReadOnlyList<(DeviceInfo Device, int Depth)> Nodes, int Omitted);

/// <summary>
/// What the web view shows of the pool, kept in memory and brought up to date by <see cref="Refresh"/>: the
/// devices by name, the lineage as a children index changed only where devices come and go (so a page of
/// 10,000 objects never rebuilds it), the names in order for paging, and a ring of space samples. Space per
/// device is not cached: a page asks <see cref="Space"/> for its own rows, from the engine's exact counts,
/// as <c>dolly volume list</c> does. <see cref="Version"/> changes with anything shown.
/// </summary>
internal sealed class WebModel
{
    /// <summary>Samples kept: an hour at the default interval.</summary>
    public const int SampleCapacity = 720;

    /// <summary>Nodes drawn per lineage tree at most; the rest is counted, not drawn.</summary>
    public const int MaxTreeNodes = 400;

    private readonly Pool _pool;
    private readonly TimeProvider _time;
    private readonly Lock _gate = new();
    private readonly Dictionary<string, DeviceInfo> _devices = new(StringComparer.Ordinal);
    private readonly Dictionary<string, SortedSet<string>> _children = new(StringComparer.Ordinal);
    private readonly SpaceSample[] _samples = new SpaceSample[SampleCapacity];
    private int _sampleCount;
    private int _sampleNext;
    private string[] _volumes = [];
    private string[] _snapshots = [];
    private string[] _roots = [];
    private bool _ordersStale = true;
    private ulong _generation = ulong.MaxValue;
    private long _version;
    private TaskCompletionSource _changed = new(TaskCreationOptions.RunContinuationsAsynchronously);

    public WebModel(Pool pool, TimeProvider time)
    {
        _pool = pool;
        _time = time;
    }

    /// <summary>Changes whenever something the pages show may have changed.</summary>
    public long Version => Interlocked.Read(ref _version);

    /// <summary>Completes at the next change after <paramref name="known"/> (at once if there was one).</summary>
    public Task ChangedSince(long known)
    {
        lock (_gate)
        {
            return _version != known ? Task.CompletedTask : _changed.Task;
        }
    }

    /// <summary>Marks everything shown as changed (the Kubernetes names did).</summary>
    public void Touch()
    {
        TaskCompletionSource done;
        lock (_gate)
        {
            _version++;
            done = _changed;
            _changed = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        }

        done.TrySetResult();
    }

    /// <summary>
    /// Reads the pool's devices when its generation moved, and applies the difference to the indexes; records
    /// a space sample when <paramref name="sample"/>. Returns whether anything changed.
    /// </summary>
    public bool Refresh(bool sample)
    {
        var info = _pool.GetInfo();
        bool changed = false;
        if (info.Generation != _generation)
        {
            var now = _pool.ListDevices();
            lock (_gate)
            {
                _generation = info.Generation;
                Apply(now);
            }

            changed = true;
        }

        if (sample)
        {
            lock (_gate)
            {
                _samples[_sampleNext] = new SpaceSample(_time.GetUtcNow(), info.LogicalBytes, info.DataBlocksUsed * info.BlockSize, info.DataFileBytes, info.DataBlocksFree * info.BlockSize);
                _sampleNext = (_sampleNext + 1) % SampleCapacity;
                _sampleCount = Math.Min(_sampleCount + 1, SampleCapacity);
            }

            changed = true;
        }

        if (changed)
        {
            Touch();
        }

        return changed;
    }

    private void Apply(IReadOnlyList<DeviceInfo> now)
    {
        var seen = new HashSet<string>(now.Count, StringComparer.Ordinal);
        foreach (var d in now)
        {
            seen.Add(d.Name);
            if (_devices.TryGetValue(d.Name, out var old))
            {
                // A name reused by a new device, or a source deleted since (its name no longer resolves).
                if (old.Id != d.Id || old.SourceName != d.SourceName)
                {
                    Unlink(old);
                    Link(d);
                    _ordersStale = true;
                }
            }
            else
            {
                Link(d);
                _ordersStale = true;
            }

            _devices[d.Name] = d;
        }

        if (seen.Count != _devices.Count)
        {
            foreach (var gone in _devices.Values.Where(d => !seen.Contains(d.Name)).ToList())
            {
                Unlink(gone);
                _devices.Remove(gone.Name);
            }

            _ordersStale = true;
        }
    }

    private void Link(DeviceInfo d)
    {
        if (d.SourceName is { } parent)
        {
            if (!_children.TryGetValue(parent, out var set))
            {
                _children[parent] = set = new SortedSet<string>(StringComparer.Ordinal);
            }

            set.Add(d.Name);
        }
    }

    private void Unlink(DeviceInfo d)
    {
        if (d.SourceName is { } parent && _children.TryGetValue(parent, out var set))
        {
            set.Remove(d.Name);
            if (set.Count == 0)
            {
                _children.Remove(parent);
            }
        }
    }

    private void Reorder()
    {
        if (!_ordersStale)
        {
            return;
        }

        var names = _devices.Keys.Order(StringComparer.Ordinal).ToArray();
        _volumes = names.Where(n => _devices[n].Kind == DeviceKind.Volume).ToArray();
        _snapshots = names.Where(n => _devices[n].Kind == DeviceKind.Snapshot).ToArray();
        _roots = names.Where(n => ParentOf(_devices[n]) is null).ToArray();
        _ordersStale = false;
    }

    private string? ParentOf(DeviceInfo d) => d.SourceName is { } p && _devices.ContainsKey(p) ? p : null;

    /// <summary>One page of volumes or snapshots, ordered by name, and how many there are in all.</summary>
    public (IReadOnlyList<DeviceInfo> Page, int Total) Page(DeviceKind kind, int offset, int count)
    {
        lock (_gate)
        {
            Reorder();
            var names = kind == DeviceKind.Volume ? _volumes : _snapshots;
            return (names.Skip(offset).Take(count).Select(n => _devices[n]).ToList(), names.Length);
        }
    }

    /// <summary>How many direct snapshots and clones (or restores) a device has.</summary>
    public (int Snapshots, int Volumes) ChildCounts(string name)
    {
        lock (_gate)
        {
            if (!_children.TryGetValue(name, out var set))
            {
                return (0, 0);
            }

            int snapshots = set.Count(c => _devices.TryGetValue(c, out var d) && d.Kind == DeviceKind.Snapshot);
            return (snapshots, set.Count - snapshots);
        }
    }

    /// <summary>A page of lineage trees (roots ordered by name), and how many trees there are.</summary>
    public (IReadOnlyList<LineageTree> Trees, int Total) Trees(int offset, int count)
    {
        lock (_gate)
        {
            Reorder();
            return (_roots.Skip(offset).Take(count).Select(TreeOf).ToList(), _roots.Length);
        }
    }

    /// <summary>The tree holding device <paramref name="name"/>; null when there is no such device.</summary>
    public LineageTree? TreeContaining(string name)
    {
        lock (_gate)
        {
            if (!_devices.TryGetValue(name, out var d))
            {
                return null;
            }

            // Sources form a forest (a device is made from one that existed before it), so this walk ends.
            while (ParentOf(d) is { } parent)
            {
                d = _devices[parent];
            }

            return TreeOf(d.Name);
        }
    }

    private LineageTree TreeOf(string root)
    {
        var nodes = new List<(DeviceInfo, int)>();
        int omitted = 0;
        var stack = new Stack<(string Name, int Depth)>();
        stack.Push((root, 0));
        while (stack.Count > 0)
        {
            var (name, depth) = stack.Pop();
            if (nodes.Count >= MaxTreeNodes)
            {
                omitted++;
            }
            else
            {
                nodes.Add((_devices[name], depth));
            }

            if (_children.TryGetValue(name, out var set))
            {
                foreach (var child in set.Reverse())
                {
                    stack.Push((child, depth + 1));
                }
            }
        }

        return new LineageTree(nodes, omitted);
    }

    /// <summary>The engine's exact space of a device, or null when it was deleted meanwhile.</summary>
    public SpaceUsage? Space(string name)
    {
        var r = _pool.GetSpace(name);
        return r.IsOk ? r.Value : null;
    }

    /// <summary>The pool's figures now.</summary>
    public PoolInfo PoolInfo() => _pool.GetInfo();

    /// <summary>The space samples, oldest first.</summary>
    public IReadOnlyList<SpaceSample> Samples()
    {
        lock (_gate)
        {
            var list = new List<SpaceSample>(_sampleCount);
            int start = (_sampleNext - _sampleCount + SampleCapacity) % SampleCapacity;
            for (int i = 0; i < _sampleCount; i++)
            {
                list.Add(_samples[(start + i) % SampleCapacity]);
            }

            return list;
        }
    }
}
