namespace Dolly.Storage.Engine;

/// <summary>
/// The data blocks whose whole disk space is known to be allocated in the data file: written whole, or reserved
/// (fallocate) before their first in-place overwrite. Sectors overwritten in place wait in the overlay until the
/// checkpoint writes them to their blocks; a block that a partial write into a fresh block left sparse would need
/// new disk space then, when the disk may be full and the checkpoint could not complete. Reserving the block when
/// the overwrite is accepted moves that failure to the write, which reports it and changes nothing. Kept in
/// memory only: after opening a pool every block is unknown and is reserved (a no-op where it is allocated) on its
/// first in-place overwrite. Guarded by the pool's write lock.
/// </summary>
internal sealed class ReservedBlocks
{
    private ulong[] _bits = [];

    public bool Contains(uint block) => block / 64 < (ulong)_bits.Length && (_bits[block / 64] & (1UL << (int)(block % 64))) != 0;

    /// <summary>Records that every byte of <paramref name="block"/> has disk space.</summary>
    public void Add(uint block)
    {
        long word = block / 64;
        if (word >= _bits.Length)
        {
            Array.Resize(ref _bits, (int)Math.Max(word + 1, Math.Min(int.MaxValue, _bits.Length * 2L)));
        }

        _bits[word] |= 1UL << (int)(block % 64);
    }

    /// <summary>Forgets <paramref name="block"/> (it was handed out again and may have been punched since).</summary>
    public void Remove(uint block)
    {
        if (block / 64 < (ulong)_bits.Length)
        {
            _bits[block / 64] &= ~(1UL << (int)(block % 64));
        }
    }
}
