using System.Collections.Concurrent;

namespace Dolly.Storage.Engine;

/// <summary>
/// Sectors overwritten in place in committed blocks, held in memory until the journal has them durably and they
/// are written to their blocks. Until then the data file still holds the committed bytes, which is what makes a
/// crash before the flush read back the old content. Reads and partial writes of such a block see these sectors
/// instead of the file's. Guarded by the pool's locks (Pool.Io.cs: the pool lock held alone, or shared together with the parts' lock).
/// </summary>
internal sealed class Overlay
{
    // Concurrent so that reads (TryGet, Merge) need no lock: a block's sectors are only changed by the one device
    // that references it, whose lock the reader holds, or with the pool lock held alone; the map itself may change
    // under them for other devices' blocks.
    private readonly ConcurrentDictionary<uint, Block> _blocks = new();
    private readonly Stack<byte[]> _spare = new();
    private readonly int _sectorsPerBlock;

    public Overlay(int sectorsPerBlock) => _sectorsPerBlock = sectorsPerBlock;

    /// <summary>Sectors held.</summary>
    public int Sectors { get; private set; }

    /// <summary>Sectors held that no batch is carrying yet.</summary>
    public int DirtySectors { get; private set; }

    public bool IsEmpty => _blocks.IsEmpty;

    public bool Contains(uint block) => _blocks.ContainsKey(block);

    /// <summary>
    /// The bytes of a sector written in place, or false. <paramref name="sector"/> counts from the block's start.
    /// </summary>
    public bool TryGet(uint block, int sector, out byte[] bytes)
    {
        if (_blocks.TryGetValue(block, out var b) && b.Data[sector] is { } data)
        {
            bytes = data;
            return true;
        }

        bytes = [];
        return false;
    }

    /// <summary>
    /// Replaces sectors of <paramref name="buffer"/> with the ones held here. The buffer holds sectors
    /// [<paramref name="firstSector"/>, ...) of the physically contiguous run starting at <paramref name="block"/>
    /// (sector numbers run on into the following blocks).
    /// </summary>
    public void Merge(uint block, int firstSector, Span<byte> buffer)
    {
        int count = buffer.Length / Layout.SectorSize;
        int firstBlock = firstSector / _sectorsPerBlock;
        int lastBlock = (firstSector + count - 1) / _sectorsPerBlock;
        for (int bi = firstBlock; bi <= lastBlock; bi++)
        {
            if (!_blocks.TryGetValue(block + (uint)bi, out var b))
            {
                continue;
            }

            int from = Math.Max(firstSector, bi * _sectorsPerBlock);
            int to = Math.Min(firstSector + count, (bi + 1) * _sectorsPerBlock);
            for (int s = from; s < to; s++)
            {
                if (b.Data[s - (bi * _sectorsPerBlock)] is { } data)
                {
                    data.CopyTo(buffer.Slice((s - firstSector) * Layout.SectorSize, Layout.SectorSize));
                }
            }
        }
    }

    /// <summary>Holds new bytes for a sector of a committed block that (device, logical block) maps.</summary>
    public void Put(uint block, ulong device, long logicalBlock, int sector, ReadOnlySpan<byte> bytes)
    {
        if (!_blocks.TryGetValue(block, out var b))
        {
            b = new Block(device, logicalBlock, _sectorsPerBlock);
            _blocks[block] = b;
        }

        if (b.Data[sector] is null)
        {
            b.Data[sector] = _spare.Count > 0 ? _spare.Pop() : new byte[Layout.SectorSize];
            Sectors++;
            DirtySectors++;
        }
        else if (b.Batch[sector] != 0)
        {
            b.Batch[sector] = 0;
            DirtySectors++;
        }

        bytes.CopyTo(b.Data[sector]);
    }

    /// <summary>Forgets a block (it was unmapped or replaced; its committed copy stays until a commit frees it).</summary>
    public void Remove(uint block)
    {
        if (!_blocks.TryRemove(block, out var b))
        {
            return;
        }

        for (int s = 0; s < _sectorsPerBlock; s++)
        {
            if (b.Data[s] is { } data)
            {
                Sectors--;
                if (b.Batch[s] == 0)
                {
                    DirtySectors--;
                }

                Recycle(data);
            }
        }
    }

    // Sector buffers are reused, up to what a full overlay needs, instead of one allocation per overwrite.
    private void Recycle(byte[] data)
    {
        if (_spare.Count < 4096)
        {
            _spare.Push(data);
        }
    }

    /// <summary>The sectors no batch carries yet, ordered by block and sector; each is marked as carried by <paramref name="batch"/>.</summary>
    public List<(uint Block, int Sector, ulong Device, long LogicalBlock, byte[] Bytes)> TakeDirty(ulong batch)
    {
        var list = new List<(uint, int, ulong, long, byte[])>(DirtySectors);
        var keys = _blocks.Keys.ToArray();
        Array.Sort(keys);
        foreach (uint p in keys)
        {
            var b = _blocks[p];
            for (int s = 0; s < _sectorsPerBlock; s++)
            {
                if (b.Data[s] is { } data && b.Batch[s] == 0)
                {
                    b.Batch[s] = batch;
                    list.Add((p, s, b.Device, b.LogicalBlock, data));
                }
            }
        }

        DirtySectors = 0;
        return list;
    }

    /// <summary>
    /// After <paramref name="batch"/> became durable: each sector it carried that was not written again since is
    /// handed to <paramref name="write"/> (block, sector, bytes) and, when that succeeds, dropped. A sector whose
    /// write fails stays, dirty, for the next batch.
    /// </summary>
    public void Complete(ulong batch, Func<uint, int, byte[], bool> write)
    {
        var emptied = new List<uint>();
        foreach (var (p, b) in _blocks)
        {
            for (int s = 0; s < _sectorsPerBlock; s++)
            {
                if (b.Batch[s] != batch || b.Data[s] is not { } data)
                {
                    continue;
                }

                b.Batch[s] = 0;
                if (write(p, s, data))
                {
                    b.Data[s] = null;
                    Sectors--;
                    Recycle(data);
                }
                else
                {
                    DirtySectors++;
                }
            }

            if (Array.TrueForAll(b.Data, d => d is null))
            {
                emptied.Add(p);
            }
        }

        foreach (uint p in emptied)
        {
            _blocks.TryRemove(p, out _);
        }
    }

    /// <summary>A batch failed: the sectors it carried are dirty again.</summary>
    public void Abort(ulong batch)
    {
        foreach (var b in _blocks.Values)
        {
            for (int s = 0; s < _sectorsPerBlock; s++)
            {
                if (b.Batch[s] == batch && b.Data[s] is not null)
                {
                    b.Batch[s] = 0;
                    DirtySectors++;
                }
            }
        }
    }

    public void Clear()
    {
        _blocks.Clear();
        _spare.Clear();
        Sectors = 0;
        DirtySectors = 0;
    }

    private sealed class Block(ulong device, long logicalBlock, int sectors)
    {
        public ulong Device { get; } = device;

        public long LogicalBlock { get; } = logicalBlock;

        public byte[]?[] Data { get; } = new byte[]?[sectors];

        /// <summary>Per sector: the batch carrying its current bytes, or 0 when none does yet.</summary>
        public ulong[] Batch { get; } = new ulong[sectors];
    }
}
