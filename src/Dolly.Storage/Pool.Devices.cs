using Dolly.Storage.Engine;

namespace Dolly.Storage;

// Volume, snapshot and clone management. Every change here commits before returning, so a snapshot that
// was reported created exists after a crash. Snapshot, clone and revert touch a fixed number of pages
// whatever the size of the device: they share or swap a map root.
public sealed partial class Pool
{
    /// <summary>All volumes and snapshots, ordered by name.</summary>
    public IReadOnlyList<DeviceInfo> ListDevices(DeviceKind? kind = null)
    {
        _rw.EnterReadLock();
        try
        {
            ThrowIfDisposed();
            lock (_state)
            {
                return _devices.All.Where(d => kind is null || d.Kind == kind).OrderBy(d => d.Name, StringComparer.Ordinal).Select(ToInfo).ToList();
            }
        }
        finally
        {
            _rw.ExitReadLock();
        }
    }

    /// <summary>One volume or snapshot by name.</summary>
    public Result<DeviceInfo> GetDevice(string name) => Read<DeviceInfo>(() =>
    {
        var found = Find(name);
        return found.IsOk ? ToInfo(found.Value) : found.Error;
    });

    /// <summary>Creates an empty thin volume; nothing is allocated until written.</summary>
    public Result<DeviceInfo> CreateVolume(string name, long size) => Change<DeviceInfo>(() =>
    {
        if (Names.Validate(name, "volume name") is { } bad)
        {
            return bad;
        }

        if (CheckSize(size, $"volume '{name}'") is { } badSize)
        {
            return badSize;
        }

        if (_devices.Contains(name))
        {
            return Exists(name);
        }

        if (BeginChange() is { } notCommitted)
        {
            return notCommitted;
        }

        ulong id = _devices.TakeId();
        var d = AddDevice(name, DeviceKind.Volume, size, root: 0, _tree.MapGeometry.DepthFor(BlocksFor(size)), sourceId: 0, lineageId: id, id);
        return Committed(d);
    });

    /// <summary>Takes an immutable point-in-time snapshot of a volume.</summary>
    public Result<DeviceInfo> CreateSnapshot(string volumeName, string snapshotName) => Change<DeviceInfo>(() =>
    {
        if (Names.Validate(snapshotName, "snapshot name") is { } bad)
        {
            return bad;
        }

        var src = Find(volumeName);
        if (!src.IsOk)
        {
            return src.Error;
        }

        var v = src.Value;
        if (v.Kind != DeviceKind.Volume)
        {
            return new StorageError(StorageErrorCode.InvalidArgument, $"'{volumeName}' is a snapshot; snapshots are taken of volumes (clone it first)");
        }

        if (_devices.Contains(snapshotName))
        {
            return Exists(snapshotName);
        }

        if (v.Root != 0)
        {
            _pages.AddReference(v.Root);
        }

        var s = AddDevice(snapshotName, DeviceKind.Snapshot, v.Size, v.Root, v.Depth, v.Id, v.LineageId, _devices.TakeId());
        return CommitCreated([s]) is { } failed
            ? new StorageError(failed.Code, $"{failed.Message}; the snapshot was not created")
            : ToInfo(s);
    });

    /// <summary>
    /// Snapshots several volumes at one point in time, in one commit: after a crash either every snapshot of
    /// the group exists or none does, and all of them hold the volumes' contents as of the same instant
    /// (crash-consistent across the group, as CSI group snapshots require). Either all are created or, on
    /// any error, none.
    /// </summary>
    public Result<IReadOnlyList<DeviceInfo>> CreateSnapshotGroup(IReadOnlyList<(string Volume, string Snapshot)> members) => Change<IReadOnlyList<DeviceInfo>>(() =>
    {
        if (members.Count == 0)
        {
            return new StorageError(StorageErrorCode.InvalidArgument, "a snapshot group needs at least one volume");
        }

        var seenVolumes = new HashSet<string>(StringComparer.Ordinal);
        var seenSnapshots = new HashSet<string>(StringComparer.Ordinal);
        var sources = new List<DeviceState>(members.Count);
        foreach (var (volume, snapshot) in members)
        {
            if (Names.Validate(snapshot, "snapshot name") is { } bad)
            {
                return bad;
            }

            var src = Find(volume);
            if (!src.IsOk)
            {
                return src.Error;
            }

            if (src.Value.Kind != DeviceKind.Volume)
            {
                return new StorageError(StorageErrorCode.InvalidArgument, $"'{volume}' is a snapshot; snapshots are taken of volumes");
            }

            if (!seenVolumes.Add(volume))
            {
                return new StorageError(StorageErrorCode.InvalidArgument, $"volume '{volume}' appears twice in the snapshot group");
            }

            if (_devices.Contains(snapshot) || !seenSnapshots.Add(snapshot))
            {
                return Exists(snapshot);
            }

            sources.Add(src.Value);
        }

        var created = new List<DeviceState>(members.Count);
        for (int i = 0; i < members.Count; i++)
        {
            var v = sources[i];
            if (v.Root != 0)
            {
                _pages.AddReference(v.Root);
            }

            created.Add(AddDevice(members[i].Snapshot, DeviceKind.Snapshot, v.Size, v.Root, v.Depth, v.Id, v.LineageId, _devices.TakeId()));
        }

        if (CommitCreated(created) is { } failed)
        {
            return new StorageError(failed.Code, $"{failed.Message}; no snapshot of the group was created");
        }

        return Result<IReadOnlyList<DeviceInfo>>.Ok(created.Select(ToInfo).ToList());
    });

    /// <summary>
    /// Creates a writable volume whose content is that of a snapshot or volume, sharing every block until
    /// written. A larger <paramref name="size"/> grows the clone; a smaller one is refused.
    /// </summary>
    public Result<DeviceInfo> Clone(string sourceName, string cloneName, long? size = null) => Change<DeviceInfo>(() =>
    {
        if (Names.Validate(cloneName, "volume name") is { } bad)
        {
            return bad;
        }

        var src = Find(sourceName);
        if (!src.IsOk)
        {
            return src.Error;
        }

        var s = src.Value;
        long newSize = size ?? s.Size;
        if (CheckSize(newSize, $"clone '{cloneName}'") is { } badSize)
        {
            return badSize;
        }

        if (newSize < s.Size)
        {
            return new StorageError(StorageErrorCode.InvalidArgument, $"clone '{cloneName}' cannot be smaller ({newSize} bytes) than its source {Describe(s)} ({s.Size} bytes)");
        }

        if (_devices.Contains(cloneName))
        {
            return Exists(cloneName);
        }

        if (BeginChange() is { } notCommitted)
        {
            return notCommitted;
        }

        if (s.Root != 0)
        {
            _pages.AddReference(s.Root);
        }

        var c = AddDevice(cloneName, DeviceKind.Volume, s.Size, s.Root, s.Depth, s.Id, s.LineageId, _devices.TakeId());
        GrowTo(c, newSize);
        return Committed(c);
    });

    /// <summary>
    /// Reverts a volume in place to one of its snapshots. The snapshot is kept. A volume that grew since the
    /// snapshot keeps its size; the added range reads as zeros.
    /// </summary>
    public Result<DeviceInfo> Revert(string volumeName, string snapshotName) => Change<DeviceInfo>(() =>
    {
        var vr = Find(volumeName);
        if (!vr.IsOk)
        {
            return vr.Error;
        }

        var sr = Find(snapshotName);
        if (!sr.IsOk)
        {
            return sr.Error;
        }

        var v = vr.Value;
        var s = sr.Value;
        if (v.Kind != DeviceKind.Volume)
        {
            return new StorageError(StorageErrorCode.ReadOnly, $"'{volumeName}' is a snapshot and cannot be reverted");
        }

        if (s.Kind != DeviceKind.Snapshot)
        {
            return new StorageError(StorageErrorCode.InvalidArgument, $"'{snapshotName}' is a volume, not a snapshot");
        }

        if (s.SourceId != v.Id)
        {
            return new StorageError(StorageErrorCode.InvalidArgument, $"snapshot '{snapshotName}' was not taken of volume '{volumeName}'; a volume can only be reverted to its own snapshots");
        }

        if (BeginChange() is { } notCommitted)
        {
            return notCommitted;
        }

        if (s.Root != 0)
        {
            _pages.AddReference(s.Root);
        }

        if (v.Root != 0)
        {
            _tree.DecPage(v.Root);
        }

        long size = Math.Max(v.Size, s.Size);
        v.Root = s.Root;
        v.Depth = s.Depth;
        v.Size = s.Size;
        GrowTo(v, size);
        MarkDirty(v);
        return Committed(v);
    });

    /// <summary>Grows a volume. Shrinking is refused: it would destroy data.</summary>
    public Result<DeviceInfo> Resize(string volumeName, long newSize) => Change<DeviceInfo>(() =>
    {
        var vr = Find(volumeName);
        if (!vr.IsOk)
        {
            return vr.Error;
        }

        var v = vr.Value;
        if (v.Kind != DeviceKind.Volume)
        {
            return new StorageError(StorageErrorCode.ReadOnly, $"'{volumeName}' is a snapshot; snapshots cannot be resized");
        }

        if (CheckSize(newSize, $"volume '{volumeName}'") is { } badSize)
        {
            return badSize;
        }

        if (newSize < v.Size)
        {
            return new StorageError(StorageErrorCode.InvalidArgument, $"volume '{volumeName}' is {v.Size} bytes; shrinking it to {newSize} bytes would destroy data and is refused");
        }

        if (BeginChange() is { } notCommitted)
        {
            return notCommitted;
        }

        GrowTo(v, newSize);
        return Committed(v);
    });

    /// <summary>Deletes a volume or snapshot; blocks no other device references are freed.</summary>
    public Result Delete(string name)
    {
        var r = Change<DeviceInfo>(() =>
        {
            var found = Find(name);
            if (!found.IsOk)
            {
                return found.Error;
            }

            if (BeginChange() is { } notCommitted)
            {
                return notCommitted;
            }

            var d = found.Value;
            RemoveDevice(d);
            return Committed(d);
        });
        return r.IsOk ? Result.Ok : Result.Fail(r.Error);
    }

    /// <summary>Drops a device: its tree loses a reference (freeing what nobody else holds) and its slot is free.</summary>
    private void RemoveDevice(DeviceState d)
    {
        if (d.Root != 0)
        {
            _tree.DecPage(d.Root);
        }

        _devices.Remove(d);
        Touch();
    }

    /// <summary>
    /// Commits new snapshots together with every write before them, in one commit whose durable part runs without
    /// the pool lock (so I/O goes on; the snapshots hold what the volumes held when it was prepared). Called with the
    /// commit gate and the write lock held. When the commit fails the snapshots are removed again, leaving the
    /// writes pending as they were, and the error is returned.
    /// </summary>
    private StorageError? CommitCreated(List<DeviceState> created)
    {
        var plan = Prepare(journalOnlyAllowed: false);
        var r = Result.Ok;
        if (plan is not null)
        {
            _rw.ExitWriteLock();
            try
            {
                r = MakeDurable(plan);
            }
            finally
            {
                _rw.EnterWriteLock();
            }

            Finish(plan, r);
        }

        if (r.IsOk)
        {
            return null;
        }

        foreach (var d in created)
        {
            RemoveDevice(d);
        }

        return r.Error;
    }

    /// <summary>Logical, allocated and exclusive bytes of a device.</summary>
    public Result<SpaceUsage> GetSpace(string name) => Read<SpaceUsage>(() =>
    {
        var found = Find(name);
        if (!found.IsOk)
        {
            return found.Error;
        }

        var d = found.Value;
        long allocated = 0, exclusive = 0;
        if (d.Root != 0)
        {
            CountSpace(d.Root, d.Depth - 1, shared: false, ref allocated, ref exclusive);
        }

        return Result<SpaceUsage>.Ok(new SpaceUsage(d.Size, allocated * _blockSize, exclusive * _blockSize));
    });

    private void CountSpace(uint id, int level, bool shared, ref long allocated, ref long exclusive)
    {
        shared |= _pages.References(id) > 1;
        if (level == 0)
        {
            for (int i = 0; i < _tree.MapGeometry.LeafFanout; i++)
            {
                uint p = _tree.LeafBlock(id, i);
                if (p != NoBlock)
                {
                    allocated++;
                    if (!shared && _blocks.References(p) == 1)
                    {
                        exclusive++;
                    }
                }
            }

            return;
        }

        for (int ci = 0; ci < Layout.InteriorFanout; ci++)
        {
            uint child = _tree.GetU32(id, ci);
            if (child != 0)
            {
                CountSpace(child, level - 1, shared, ref allocated, ref exclusive);
            }
        }
    }

    /// <summary>The ranges of a device that hold data (everything else reads as zeros), within an optional window.</summary>
    public Result<IReadOnlyList<ByteRange>> GetAllocatedRanges(string name, long offset = 0, long? length = null) => Read<IReadOnlyList<ByteRange>>(() =>
    {
        var found = Find(name);
        return found.IsOk ? AllocatedRanges(found.Value, offset, length) : found.Error;
    });

    internal Result<IReadOnlyList<ByteRange>> AllocatedRanges(DeviceState d, long offset, long? length)
    {
        long end = length is null ? d.Size : Math.Min(d.Size, offset + length.Value);
        if (offset < 0 || offset > d.Size || end < offset)
        {
            return new StorageError(StorageErrorCode.InvalidArgument, $"range {offset}+{length} is outside {Describe(d)} of {d.Size} bytes");
        }

        var ranges = new RangeBuilder(offset, end);
        _tree.WalkMapped(d.Root, d.Depth, offset / _blockSize, (end + _blockSize - 1) / _blockSize, (lb, _, _) => ranges.Add(lb * _blockSize, _blockSize));
        return ranges.Build();
    }

    /// <summary>
    /// The ranges whose content may differ between <paramref name="baseName"/> and <paramref name="targetName"/>
    /// (two snapshots, or a snapshot and a volume, of one lineage): what an incremental backup must copy.
    /// </summary>
    public Result<IReadOnlyList<ByteRange>> GetChangedRanges(string baseName, string targetName, long offset = 0, long? length = null) => Read<IReadOnlyList<ByteRange>>(() =>
    {
        var a = Find(baseName);
        if (!a.IsOk)
        {
            return a.Error;
        }

        var b = Find(targetName);
        return b.IsOk ? ChangedRanges(a.Value, b.Value, offset, length) : b.Error;
    });

    internal Result<IReadOnlyList<ByteRange>> ChangedRanges(DeviceState a, DeviceState b, long offset, long? length)
    {
        if (a.LineageId != b.LineageId)
        {
            return new StorageError(StorageErrorCode.InvalidArgument, $"{Describe(a)} and {Describe(b)} are not of one lineage; a changed-block diff needs a common origin");
        }

        long size = Math.Max(a.Size, b.Size);
        long end = length is null ? b.Size : Math.Min(b.Size, offset + length.Value);
        if (offset < 0 || offset > b.Size || end < offset)
        {
            return new StorageError(StorageErrorCode.InvalidArgument, $"range {offset}+{length} is outside {Describe(b)} of {b.Size} bytes");
        }

        var ranges = new RangeBuilder(offset, Math.Min(end, size));
        _tree.WalkChanged(a, b, offset / _blockSize, (end + _blockSize - 1) / _blockSize, lb => ranges.Add(lb * _blockSize, _blockSize));
        return ranges.Build();
    }

    /// <summary>Pool-wide figures.</summary>
    public PoolInfo GetInfo()
    {
        _rw.EnterReadLock();
        try
        {
            ThrowIfDisposed();
            long used, highWater, pages;
            lock (_state)
            {
                used = _blocks.CountLive();
                highWater = _blocks.HighWater;
                pages = _pages.CountInUse();
            }

            return new PoolInfo(
                _directory,
                _poolId,
                _blockSize,
                _generation,
                _devices.All.Count(d => d.Kind == DeviceKind.Volume),
                _devices.All.Count(d => d.Kind == DeviceKind.Snapshot),
                used,
                highWater - used,
                _data.AllocatedBytes,
                pages,
                pages * Layout.PageSize,
                _devices.All.Sum(d => d.Size));
        }
        finally
        {
            _rw.ExitReadLock();
        }
    }

    /// <summary>Opens a volume (read-write) or snapshot (read-only) for I/O.</summary>
    public Result<BlockDevice> OpenDevice(string name) => Read<BlockDevice>(() =>
    {
        var found = Find(name);
        return found.IsOk ? Result<BlockDevice>.Ok(new BlockDevice(this, found.Value, found.Value.Name, found.Value.Kind)) : found.Error;
    });

    private DeviceState AddDevice(string name, DeviceKind kind, long size, uint root, int depth, ulong sourceId, ulong lineageId, ulong id)
    {
        var d = _devices.Add(name, kind, size, root, depth, sourceId, lineageId, id, _time.GetUtcNow().ToUnixTimeMilliseconds());
        Touch();
        return d;
    }

    private void GrowTo(DeviceState d, long size)
    {
        if (size == d.Size)
        {
            return;
        }

        uint root = d.Root;
        int depth = d.Depth;
        _tree.DeepenTo(ref root, ref depth, _tree.MapGeometry, map: true, BlocksFor(size));
        d.Root = root;
        d.Depth = depth;
        d.Size = size;
        MarkDirty(d);
    }

    private long BlocksFor(long size) => (size + _blockSize - 1) / _blockSize;

    private static StorageError? CheckSize(long size, string what)
    {
        if (size <= 0)
        {
            return new StorageError(StorageErrorCode.InvalidArgument, $"{what}: size must be positive, not {size}");
        }

        if (size % Layout.SectorSize != 0)
        {
            return new StorageError(StorageErrorCode.InvalidArgument, $"{what}: size {size} is not a multiple of {Layout.SectorSize} bytes");
        }

        if (size > ByteSize.MaxVolumeSize)
        {
            return new StorageError(StorageErrorCode.InvalidArgument, $"{what}: size {size} exceeds the maximum of 64 TiB");
        }

        return null;
    }

    private static StorageError Exists(string name) =>
        new(StorageErrorCode.AlreadyExists, $"a volume or snapshot named '{name}' already exists");

    private Result<DeviceState> Find(string name)
    {
        if (_devices.TryGet(name, out var d))
        {
            return d;
        }

        return Names.Validate(name) is { } bad
            ? bad
            : new StorageError(StorageErrorCode.NotFound, $"no volume or snapshot named '{name}' in pool '{_directory}'");
    }

    internal DeviceInfo ToInfo(DeviceState d) => new(
        d.Id,
        d.Name,
        d.Kind,
        d.Size,
        DateTimeOffset.FromUnixTimeMilliseconds(d.CreatedUnixMs),
        d.SourceId,
        _devices.TryGet(d.SourceId, out var s) ? s.Name : null,
        d.LineageId);

    /// <summary>
    /// Commits a management change. When the commit fails (a full disk) the pool rolls back to the state
    /// committed just before the change, so a failed operation changes nothing.
    /// </summary>
    private Result<DeviceInfo> Committed(DeviceState d)
    {
        var r = CommitCore();
        if (r.IsOk)
        {
            return ToInfo(d);
        }

        RollBackToCommitted(_devicesBeforeChange);
        return new StorageError(r.Error.Code, $"{r.Error.Message}; nothing was changed");
    }

    private Result<T> Read<T>(Func<Result<T>> body)
    {
        _rw.EnterReadLock();
        try
        {
            ThrowIfDisposed();
            lock (_state)
            {
                return body();
            }
        }
        finally
        {
            _rw.ExitReadLock();
        }
    }

    private Result<T> Change<T>(Func<Result<T>> body)
    {
        _commitGate.Wait();
        _rw.EnterWriteLock();
        try
        {
            ThrowIfDisposed();
            return body();
        }
        finally
        {
            _rw.ExitWriteLock();
            _commitGate.Release();
            DrainPunches();
        }
    }

    /// <summary>
    /// Called by a management operation once its checks passed, right before it changes anything: commits
    /// pending writes so that the change is a transaction of its own, which can be rolled back to the
    /// committed state if its commit fails. Returns the error when even the pending writes cannot commit.
    /// </summary>
    private StorageError? BeginChange()
    {
        var pending = CommitCore();
        if (!pending.IsOk)
        {
            return new StorageError(pending.Error.Code, $"nothing was changed: earlier writes could not be committed first: {pending.Error.Message}");
        }

        _devicesBeforeChange = [.. _devices.All];
        return null;
    }

    private void ThrowIfDisposed() => ObjectDisposedException.ThrowIf(_disposed, this);

    /// <summary>Merges block-sized pieces into ranges clipped to a window.</summary>
    private sealed class RangeBuilder(long from, long to)
    {
        private readonly List<ByteRange> _ranges = [];

        public void Add(long offset, long length)
        {
            long start = Math.Max(offset, from);
            long end = Math.Min(offset + length, to);
            if (end <= start)
            {
                return;
            }

            if (_ranges.Count > 0 && _ranges[^1].End == start)
            {
                _ranges[^1] = _ranges[^1] with { Length = end - _ranges[^1].Offset };
            }
            else
            {
                _ranges.Add(new ByteRange(start, end - start));
            }
        }

        public Result<IReadOnlyList<ByteRange>> Build() => _ranges;
    }
}
