namespace Dolly.Storage.CrashWorker;

/// <summary>Shape of a random workload.</summary>
public sealed record WorkloadOptions
{
    /// <summary>The pool's block size: offsets and lengths are drawn around its boundaries.</summary>
    public int BlockSize { get; init; } = 16384;

    /// <summary>Largest volume created, in bytes.</summary>
    public long MaxVolumeBytes { get; init; } = 512 * 1024;

    /// <summary>Devices kept at most (more and deletes become likely).</summary>
    public int MaxDevices { get; init; } = 10;

    /// <summary>Whether to generate <see cref="OpKind.Abandon"/> (a simulated crash; only in-process tests can run it).</summary>
    public bool Abandon { get; init; }

    /// <summary>Whether to generate <see cref="OpKind.Reopen"/>.</summary>
    public bool Reopen { get; init; } = true;

    /// <summary>Whether to generate <see cref="OpKind.Check"/>.</summary>
    public bool Check { get; init; } = true;

    /// <summary>Percentage of steps that are deliberately invalid (the engine must refuse them and change nothing).</summary>
    public int InvalidPercent { get; init; } = 4;
}

/// <summary>
/// A seeded, reproducible generator of steps. Each step is applied to <see cref="Model"/> as it is generated, so the
/// sequence depends only on the seed and the initial model, never on the engine.
/// </summary>
public sealed class Workload
{
    private static readonly string[] NamePool = Enumerable.Range(0, 24).Select(i => $"d{i}").ToArray();
    private readonly Random _rng;
    private readonly WorkloadOptions _o;

    public Workload(int seed, ReferenceModel initial, WorkloadOptions options)
    {
        _rng = new Random(seed);
        _o = options;
        Model = initial.Copy();
        Durable = initial.Copy();
    }

    /// <summary>The state after every step generated so far.</summary>
    public ReferenceModel Model { get; private set; }

    /// <summary>The state at the last commit (what an <see cref="OpKind.Abandon"/> returns to).</summary>
    public ReferenceModel Durable { get; private set; }

    public Op Next()
    {
        var op = Choose();
        var expected = Model.Apply(op);
        op = op with { ExpectedError = expected };
        if (op.Commits)
        {
            Durable = Model.Copy();
        }
        else if (op.Kind == OpKind.Abandon)
        {
            Model = Durable.Copy();
        }

        return op;
    }

    private List<ModelDevice> Of(DeviceKind? kind) =>
        Model.Devices.Values.Where(d => kind is null || d.Kind == kind).ToList();

    private T Pick<T>(List<T> items) => items[_rng.Next(items.Count)];

    private string? FreeName()
    {
        var free = NamePool.Where(n => !Model.Devices.ContainsKey(n)).ToList();
        return free.Count == 0 ? null : Pick(free);
    }

    private long RandomSize()
    {
        long sectors = _o.MaxVolumeBytes / 4096;
        // Mostly block-aligned sizes, sometimes a size that ends inside a block.
        long size = 4096 * (1 + _rng.NextInt64(sectors));
        return _rng.Next(3) == 0 ? size : Math.Max(_o.BlockSize, size / _o.BlockSize * _o.BlockSize);
    }

    private Op Choose()
    {
        var volumes = Of(DeviceKind.Volume);
        if (volumes.Count == 0)
        {
            return new Op(OpKind.CreateVolume, FreeName()!, Size: RandomSize());
        }

        if (_rng.Next(100) < _o.InvalidPercent)
        {
            return Invalid(volumes);
        }

        bool crowded = Model.Devices.Count >= _o.MaxDevices;
        int roll = _rng.Next(100);
        if (crowded && roll < 25)
        {
            return new Op(OpKind.Delete, Pick(Model.Devices.Keys.ToList()));
        }

        return roll switch
        {
            < 38 => RangeOp(OpKind.Write, Pick(volumes)),
            < 43 => RangeOp(OpKind.Trim, Pick(volumes)),
            < 48 => RangeOp(OpKind.Zero, Pick(volumes)),
            < 56 when FreeName() is { } n => new Op(OpKind.Snapshot, Pick(volumes).Name, n),
            < 62 when FreeName() is { } n => CloneOp(n),
            < 67 => RevertOp(volumes),
            < 73 => new Op(OpKind.Delete, Pick(Model.Devices.Keys.ToList())),
            < 77 => ResizeOp(Pick(volumes)),
            < 86 => new Op(OpKind.Flush, ""),
            < 90 when FreeName() is { } n => new Op(OpKind.CreateVolume, n, Size: RandomSize()),
            < 93 when _o.Reopen => new Op(OpKind.Reopen, ""),
            < 95 when _o.Abandon => new Op(OpKind.Abandon, ""),
            < 96 when _o.Check => new Op(OpKind.Check, ""),
            _ => RangeOp(OpKind.Write, Pick(volumes)),
        };
    }

    private Op RangeOp(OpKind kind, ModelDevice v)
    {
        long size = v.Size;
        int bs = _o.BlockSize;
        long offset, length;
        switch (_rng.Next(6))
        {
            case 0:
                // Whole blocks.
                long blocks = (size + bs - 1) / bs;
                offset = _rng.NextInt64(blocks) * bs;
                length = Math.Min(size - offset, (1 + _rng.Next(3)) * (long)bs);
                break;
            case 1:
                // Whole sectors.
                offset = _rng.NextInt64(size / 4096) * 4096;
                length = Math.Min(size - offset, (1 + _rng.Next(8)) * 4096L);
                break;
            case 2:
                // Around a block boundary.
                long boundary = _rng.NextInt64(1 + (size / bs)) * bs;
                offset = Math.Clamp(boundary - _rng.Next(1, 5000), 0, size - 1);
                length = Math.Min(size - offset, _rng.Next(1, 10000));
                break;
            case 3 when kind != OpKind.Write:
                // To the end of the device, or all of it.
                offset = _rng.Next(2) == 0 ? 0 : _rng.NextInt64(size);
                length = size - offset;
                break;
            default:
                offset = _rng.NextInt64(size);
                length = Math.Min(size - offset, _rng.Next(1, 3 * bs));
                break;
        }

        bool fua = _rng.Next(10) == 0;
        return kind switch
        {
            OpKind.Write => new Op(kind, v.Name, Offset: offset, Length: length, DataSeed: _rng.Next(8) == 0 ? 0 : _rng.Next(1, int.MaxValue), Fua: fua),
            OpKind.Zero => new Op(kind, v.Name, Offset: offset, Length: length, Fua: fua, MayUnmap: _rng.Next(2) == 0),
            _ => new Op(kind, v.Name, Offset: offset, Length: length, Fua: fua),
        };
    }

    private Op CloneOp(string name)
    {
        var source = Pick(Model.Devices.Values.ToList());
        long size = _rng.Next(4) == 0 ? Math.Min(ReferenceModel.MaxSize, source.Size + (4096 * _rng.Next(1, 40))) : 0;
        return new Op(OpKind.Clone, source.Name, name, Size: size);
    }

    private Op RevertOp(List<ModelDevice> volumes)
    {
        var pairs = volumes
            .SelectMany(v => Of(DeviceKind.Snapshot).Where(s => s.SourceId == v.Id).Select(s => (v, s)))
            .ToList();
        if (pairs.Count == 0)
        {
            return new Op(OpKind.Flush, "");
        }

        var (vol, snap) = Pick(pairs);
        return new Op(OpKind.Revert, vol.Name, snap.Name);
    }

    private Op ResizeOp(ModelDevice v)
    {
        long grow = _rng.Next(3) == 0 ? 0 : 4096L * _rng.Next(1, 48);
        return new Op(OpKind.Resize, v.Name, Size: v.Size + grow);
    }

    private Op Invalid(List<ModelDevice> volumes)
    {
        var v = Pick(volumes);
        var snapshots = Of(DeviceKind.Snapshot);
        switch (_rng.Next(9))
        {
            case 0 when snapshots.Count > 0:
                return new Op(OpKind.Write, Pick(snapshots).Name, Offset: 0, Length: 100, DataSeed: 7);
            case 1 when v.Size > 4096:
                return new Op(OpKind.Resize, v.Name, Size: v.Size - 4096);
            case 2:
                return new Op(OpKind.CreateVolume, Pick(Model.Devices.Keys.ToList()), Size: 4096);
            case 3:
                return new Op(OpKind.Snapshot, v.Name, Pick(Model.Devices.Keys.ToList()));
            case 4:
                var foreign = snapshots.Where(s => s.SourceId != v.Id).ToList();
                if (foreign.Count > 0)
                {
                    return new Op(OpKind.Revert, v.Name, Pick(foreign).Name);
                }

                return new Op(OpKind.Delete, "no-such-device");
            case 5:
                return new Op(OpKind.Write, v.Name, Offset: v.Size - 10, Length: 11, DataSeed: 3);
            case 6:
                return new Op(OpKind.Clone, v.Name, "Bad_Name");
            case 7:
                return new Op(OpKind.Trim, "../" + v.Name, Offset: 0, Length: 1);
            default:
                return new Op(OpKind.Resize, v.Name, Size: v.Size + 100);
        }
    }
}
