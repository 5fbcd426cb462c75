namespace Dolly.Storage.Engine;

/// <summary>
/// The volumes and snapshots of a pool in memory: lookup by name and id, the slots their records occupy in the
/// device-table tree, the next device id, and which records the next commit must write.
/// <para>
/// Invariants: names and ids are unique among the devices held; every id is below <see cref="NextId"/>, which only
/// grows (ids are never reused); each device holds a slot no other holds, and the free slots are exactly the slots
/// below the high-water mark that no device holds; a new device takes the lowest free slot. A removed device is
/// flagged deleted (open handles see it) and its record is written cleared before any record that reuses its slot.
/// </para>
/// <para>Pure in-memory state, no I/O and no lock of its own: the pool's locks guard it (Pool.Io.cs).</para>
/// </summary>
internal sealed class DeviceTable
{
    private readonly Dictionary<string, DeviceState> _byName = new(StringComparer.Ordinal);
    private readonly Dictionary<ulong, DeviceState> _byId = [];
    private readonly SortedSet<int> _freeSlots = [];
    private readonly HashSet<DeviceState> _dirty = [];
    private int _slotHighWater;

    /// <summary>The id the next device gets.</summary>
    public ulong NextId { get; private set; } = 1;

    public int Count => _byId.Count;

    /// <summary>Every device held, in no particular order.</summary>
    public IEnumerable<DeviceState> All => _byId.Values;

    /// <summary>Slots below this number have held a record.</summary>
    public int SlotHighWater => _slotHighWater;

    /// <summary>Devices whose records changed since the last commit was prepared.</summary>
    public int DirtyCount => _dirty.Count;

    public bool Contains(string name) => _byName.ContainsKey(name);

    public bool Contains(ulong id) => _byId.ContainsKey(id);

    public bool TryGet(string name, [System.Diagnostics.CodeAnalysis.MaybeNullWhen(false)] out DeviceState device) => _byName.TryGetValue(name, out device);

    public bool TryGet(ulong id, [System.Diagnostics.CodeAnalysis.MaybeNullWhen(false)] out DeviceState device) => _byId.TryGetValue(id, out device);

    /// <summary>Takes the next device id.</summary>
    public ulong TakeId() => NextId++;

    /// <summary>Forgets every device (before a load); ids continue from <paramref name="nextId"/>.</summary>
    public void Reset(ulong nextId)
    {
        _byName.Clear();
        _byId.Clear();
        _freeSlots.Clear();
        _dirty.Clear();
        _slotHighWater = 0;
        NextId = nextId;
    }

    /// <summary>
    /// Adds a device read from its record during a load; the caller checked that its name and id are unique and its
    /// id below <see cref="NextId"/>. <see cref="FinishLoad"/> then works out the free slots.
    /// </summary>
    public void Load(DeviceState device)
    {
        if (_byName.ContainsKey(device.Name) || _byId.ContainsKey(device.Id) || device.Id >= NextId)
        {
            throw new InvalidOperationException($"device '{device.Name}' (id {device.Id}) duplicates another or is not below the next id {NextId}");
        }

        _byName[device.Name] = device;
        _byId[device.Id] = device;
        _slotHighWater = Math.Max(_slotHighWater, device.Slot + 1);
    }

    /// <summary>After the last <see cref="Load"/>: every slot below the high-water mark that no device holds is free.</summary>
    public void FinishLoad()
    {
        var used = new HashSet<int>(_byId.Values.Select(d => d.Slot));
        for (int slot = 0; slot < _slotHighWater; slot++)
        {
            if (!used.Contains(slot))
            {
                _freeSlots.Add(slot);
            }
        }
    }

    /// <summary>
    /// Puts <paramref name="keep"/>, an object that open handles hold, back in place of the device with its id that a
    /// reload created, so that handles stay valid across a rollback.
    /// </summary>
    public void Rebind(DeviceState keep)
    {
        _byId[keep.Id] = keep;
        _byName[keep.Name] = keep;
    }

    /// <summary>A new device in the lowest free slot, its record to be written by the next commit.</summary>
    public DeviceState Add(string name, DeviceKind kind, long size, uint root, int depth, ulong sourceId, ulong lineageId, ulong id, long createdUnixMs)
    {
        if (_byName.ContainsKey(name) || _byId.ContainsKey(id) || id >= NextId)
        {
            throw new InvalidOperationException($"device '{name}' (id {id}) duplicates another or is not below the next id {NextId}");
        }

        int slot;
        if (_freeSlots.Count > 0)
        {
            slot = _freeSlots.Min;
            _freeSlots.Remove(slot);
        }
        else
        {
            slot = _slotHighWater++;
        }

        var d = new DeviceState
        {
            Id = id,
            Name = name,
            Kind = kind,
            Slot = slot,
            CreatedUnixMs = createdUnixMs,
            SourceId = sourceId,
            LineageId = lineageId,
            Size = size,
            Root = root,
            Depth = depth,
        };
        _byName[name] = d;
        _byId[id] = d;
        _dirty.Add(d);
        return d;
    }

    /// <summary>
    /// Removes a device (its tree's reference is the caller's to drop first): it is flagged deleted, its slot is free
    /// and the next commit clears its record.
    /// </summary>
    public void Remove(DeviceState device)
    {
        if (!_byId.TryGetValue(device.Id, out var held) || held != device)
        {
            throw new InvalidOperationException($"device '{device.Name}' (id {device.Id}) is not in the table");
        }

        device.Deleted = true;
        device.Root = 0;
        _byName.Remove(device.Name);
        _byId.Remove(device.Id);
        _freeSlots.Add(device.Slot);
        _dirty.Add(device);
    }

    /// <summary>The record of <paramref name="device"/> changed (root, size, depth): the next commit writes it.</summary>
    public void MarkDirty(DeviceState device) => _dirty.Add(device);

    /// <summary>
    /// The records the next commit writes, deleted devices first: a slot freed by one may already be taken by a new
    /// device, whose record must win.
    /// </summary>
    public List<DeviceState> TakeDirty()
    {
        var list = _dirty.OrderBy(d => !d.Deleted).ToList();
        _dirty.Clear();
        return list;
    }
}
