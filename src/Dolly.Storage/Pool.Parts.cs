using Dolly.Storage.Engine;

namespace Dolly.Storage;

// The parts the pool delegates its state to (src/Dolly.Storage/Engine, see docs/ARCHITECTURE.md "Parts"): the
// PageStore holds tree pages and their counts, the BlockAllocator data blocks, the MapTree walks and copies the
// trees over both, the DeviceTable holds the devices; the TxnClock they share says what is fresh (born in the
// transaction being built, so no durable state reaches it). None does I/O or locks: the pool's locks guard them (Pool.Io.cs).
public sealed partial class Pool
{
    private readonly TxnClock _clock = new();

    // Guards the parts below (and the overlay, the device table's dirty set and the change counters) while the data
    // path holds the pool lock shared; see Pool.Io.cs for the order of the locks.
    private readonly Lock _state = new();
    private readonly PageStore _pages;
    private readonly BlockAllocator _blocks;
    private MapTree _tree = null!;
    private int _sectorsPerBlock;

    /// <summary>A map entry that maps nothing.</summary>
    private const uint NoBlock = MapTree.NoBlock;

    // Free blocks whose disk space is kept for reuse at least (see BlockAllocator.Reclaim), at 64 KiB blocks.
    private const int MinKeptBlocks = 4096;

    private uint AllocBlock() => AllocBlock(out _);

    /// <summary>Allocates a data block; <paramref name="zeroed"/> tells whether its bytes are known to be zero.</summary>
    private uint AllocBlock(out bool zeroed)
    {
        uint p = _blocks.Allocate(out zeroed);
        _dataDirty = true;
        return p;
    }

    /// <summary>
    /// Drops a reference to a data block (see <see cref="BlockAllocator.Release"/>); a block nobody references any
    /// more leaves the overlay (<see cref="BlockDropped"/>), whose sectors would otherwise outlive it.
    /// </summary>
    private void DecBlock(uint p, bool replaced = false) => _tree.DropBlock(p, replaced);

    private void BlockDropped(uint p) => _overlay.Remove(p);
}
