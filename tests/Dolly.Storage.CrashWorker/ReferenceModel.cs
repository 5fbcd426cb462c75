using System.Text.RegularExpressions;

namespace Dolly.Storage.CrashWorker;

/// <summary>A device in the reference model. Content arrays are shared copy-on-write between model copies.</summary>
public sealed class ModelDevice
{
    private byte[] _data;
    private bool _shared;

    public ModelDevice(string name, DeviceKind kind, byte[] data, long id, long sourceId, long lineageId, bool shared)
    {
        Name = name;
        Kind = kind;
        _data = data;
        Id = id;
        SourceId = sourceId;
        LineageId = lineageId;
        _shared = shared;
    }

    public string Name { get; }

    public DeviceKind Kind { get; }

    public long Id { get; }

    public long SourceId { get; }

    public long LineageId { get; }

    public long Size => _data.Length;

    /// <summary>Read-only view of the content.</summary>
    public ReadOnlySpan<byte> Content => _data;

    /// <summary>Shares the content with a new device (snapshot, clone, or a copy of the model).</summary>
    public byte[] ShareData()
    {
        _shared = true;
        return _data;
    }

    /// <summary>The content, made private to this device so it can be changed.</summary>
    public byte[] Writable()
    {
        if (_shared)
        {
            _data = (byte[])_data.Clone();
            _shared = false;
        }

        return _data;
    }

    public void Replace(byte[] data, bool shared)
    {
        _data = data;
        _shared = shared;
    }

    public ModelDevice Copy() => new(Name, Kind, ShareData(), Id, SourceId, LineageId, shared: true);
}

/// <summary>
/// The plain in-memory reference: name to bytes, kinds and sources. Every rule the engine promises is restated
/// here independently (names, sizes, read-only snapshots, revert to own snapshots, growth only).
/// </summary>
public sealed partial class ReferenceModel
{
    public const long MaxSize = 64L << 40;

    public SortedDictionary<string, ModelDevice> Devices { get; } = new(StringComparer.Ordinal);

    public long NextId { get; set; } = 1;

    public ReferenceModel Copy()
    {
        var m = new ReferenceModel { NextId = NextId };
        foreach (var (name, d) in Devices)
        {
            m.Devices[name] = d.Copy();
        }

        return m;
    }

    [GeneratedRegex("^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")]
    private static partial Regex NameRegex();

    public static bool ValidName(string name) => name.Length is > 0 and <= 253 && NameRegex().IsMatch(name);

    private static bool ValidSize(long size) => size > 0 && size % 4096 == 0 && size <= MaxSize;

    private StorageErrorCode? Find(string name, out ModelDevice? d)
    {
        if (Devices.TryGetValue(name, out d))
        {
            return null;
        }

        return ValidName(name) ? StorageErrorCode.NotFound : StorageErrorCode.InvalidName;
    }

    /// <summary>Applies a step; returns the error the engine must report (and changes nothing then), or null.</summary>
    public StorageErrorCode? Apply(Op op)
    {
        switch (op.Kind)
        {
            case OpKind.CreateVolume:
                if (!ValidName(op.Name))
                {
                    return StorageErrorCode.InvalidName;
                }

                if (!ValidSize(op.Size))
                {
                    return StorageErrorCode.InvalidArgument;
                }

                if (Devices.ContainsKey(op.Name))
                {
                    return StorageErrorCode.AlreadyExists;
                }

                long id = NextId++;
                Devices[op.Name] = new ModelDevice(op.Name, DeviceKind.Volume, new byte[op.Size], id, 0, id, shared: false);
                return null;

            case OpKind.Snapshot:
            {
                string snap = op.Name2!;
                if (!ValidName(snap))
                {
                    return StorageErrorCode.InvalidName;
                }

                if (Find(op.Name, out var v) is { } err)
                {
                    return err;
                }

                if (v!.Kind != DeviceKind.Volume)
                {
                    return StorageErrorCode.InvalidArgument;
                }

                if (Devices.ContainsKey(snap))
                {
                    return StorageErrorCode.AlreadyExists;
                }

                Devices[snap] = new ModelDevice(snap, DeviceKind.Snapshot, v.ShareData(), NextId++, v.Id, v.LineageId, shared: true);
                return null;
            }

            case OpKind.Clone:
            {
                string clone = op.Name2!;
                if (!ValidName(clone))
                {
                    return StorageErrorCode.InvalidName;
                }

                if (Find(op.Name, out var s) is { } err)
                {
                    return err;
                }

                long size = op.Size == 0 ? s!.Size : op.Size;
                if (!ValidSize(size) || size < s!.Size)
                {
                    return StorageErrorCode.InvalidArgument;
                }

                if (Devices.ContainsKey(clone))
                {
                    return StorageErrorCode.AlreadyExists;
                }

                byte[] data = size == s.Size ? s.ShareData() : Grown(s.Content, size);
                Devices[clone] = new ModelDevice(clone, DeviceKind.Volume, data, NextId++, s.Id, s.LineageId, shared: size == s.Size);
                return null;
            }

            case OpKind.Revert:
            {
                if (Find(op.Name, out var v) is { } err1)
                {
                    return err1;
                }

                if (Find(op.Name2!, out var s) is { } err2)
                {
                    return err2;
                }

                if (v!.Kind != DeviceKind.Volume)
                {
                    return StorageErrorCode.ReadOnly;
                }

                if (s!.Kind != DeviceKind.Snapshot || s.SourceId != v.Id)
                {
                    return StorageErrorCode.InvalidArgument;
                }

                long size = Math.Max(v.Size, s.Size);
                if (size == s.Size)
                {
                    v.Replace(s.ShareData(), shared: true);
                }
                else
                {
                    v.Replace(Grown(s.Content, size), shared: false);
                }

                return null;
            }

            case OpKind.Resize:
            {
                if (Find(op.Name, out var v) is { } err)
                {
                    return err;
                }

                if (v!.Kind != DeviceKind.Volume)
                {
                    return StorageErrorCode.ReadOnly;
                }

                if (!ValidSize(op.Size) || op.Size < v.Size)
                {
                    return StorageErrorCode.InvalidArgument;
                }

                if (op.Size != v.Size)
                {
                    v.Replace(Grown(v.Content, op.Size), shared: false);
                }

                return null;
            }

            case OpKind.Delete:
                if (Find(op.Name, out _) is { } delErr)
                {
                    return delErr;
                }

                Devices.Remove(op.Name);
                return null;

            case OpKind.Write:
            case OpKind.Trim:
            case OpKind.Zero:
            {
                if (Find(op.Name, out var d) is { } err)
                {
                    return err;
                }

                if (d!.Kind == DeviceKind.Snapshot)
                {
                    return StorageErrorCode.ReadOnly;
                }

                if (op.Offset < 0 || op.Length < 0 || op.Offset > d.Size || op.Length > d.Size - op.Offset)
                {
                    return StorageErrorCode.InvalidArgument;
                }

                var target = d.Writable().AsSpan((int)op.Offset, (int)op.Length);
                if (op.Kind == OpKind.Write)
                {
                    op.Data().CopyTo(target);
                }
                else
                {
                    target.Clear();
                }

                return null;
            }

            default:
                return null;
        }
    }

    private static byte[] Grown(ReadOnlySpan<byte> content, long size)
    {
        var data = new byte[size];
        content.CopyTo(data);
        return data;
    }

    /// <summary>Builds the model of an open pool's current content (ids are the engine's).</summary>
    public static ReferenceModel FromPool(Pool pool)
    {
        var m = new ReferenceModel();
        long maxId = 0;
        foreach (var info in pool.ListDevices())
        {
            var dev = pool.OpenDevice(info.Name).Value;
            var data = new byte[info.Size];
            dev.Read(0, data).ThrowIfFailed();
            m.Devices[info.Name] = new ModelDevice(info.Name, info.Kind, data, (long)info.Id, (long)info.SourceId, (long)info.LineageId, shared: false);
            maxId = Math.Max(maxId, (long)info.Id);
        }

        m.NextId = maxId + 1;
        return m;
    }

    /// <summary>The first difference between the pool and this model, or null when they match.</summary>
    public string? Difference(Pool pool)
    {
        var devices = pool.ListDevices();
        var names = devices.Select(d => d.Name).ToList();
        if (!names.SequenceEqual(Devices.Keys))
        {
            return $"devices differ: pool has [{string.Join(", ", names)}], model has [{string.Join(", ", Devices.Keys)}]";
        }

        foreach (var info in devices)
        {
            var d = Devices[info.Name];
            if (info.Kind != d.Kind || info.Size != d.Size)
            {
                return $"'{info.Name}': pool has {info.Kind} of {info.Size} bytes, model has {d.Kind} of {d.Size} bytes";
            }

            var dev = pool.OpenDevice(info.Name).Value;
            var buf = new byte[info.Size];
            var r = dev.Read(0, buf);
            if (!r.IsOk)
            {
                return $"'{info.Name}': read failed: {r.Error}";
            }

            int at = buf.AsSpan().CommonPrefixLength(d.Content);
            if (at < buf.Length)
            {
                return $"'{info.Name}': content differs first at byte {at} (pool {buf[at]}, model {d.Content[at]})";
            }
        }

        return null;
    }
}
