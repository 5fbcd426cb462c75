using System.Buffers;
using System.Buffers.Binary;
using Dolly.Storage.Engine;

namespace Dolly.Storage;

// The data path. Every 4 KiB sector carries a checksum in its leaf entry; a read verifies each sector it
// returns, and a sector that fails is reported, never returned. A write to a block that is shared goes to a new
// block (redirect-on-write); a block only this device references is overwritten in place (Pool.InPlace.cs).
// Callers hold the pool lock shared and the device's lock; every touch of the shared in-memory structures is in
// a short _state section, and file I/O runs outside it, so devices read and write in parallel (Pool.Io.cs).
public sealed partial class Pool
{
    private static readonly uint ZeroSectorSum = Layout.Checksum(new byte[Layout.SectorSize]);

    private bool _dataDirty;
    private byte[] _zeroSums = [];

    /// <summary>
    /// Reads into <paramref name="destination"/>; when <paramref name="holes"/> is given, appends the ranges the read
    /// found unmapped (they read as zeros), in order and merged, so a caller need not walk the map again.
    /// </summary>
    internal Result ReadCore(DeviceState d, long offset, Span<byte> destination, IList<ByteRange>? holes = null)
    {
        long pos = offset;
        int done = 0;
        byte[]? rented = null;
        Span<byte> sums = stackalloc byte[1024];
        try
        {
            while (done < destination.Length)
            {
                long lb = pos / _blockSize;
                int bo = (int)(pos % _blockSize);
                int sumBytes = _sectorsPerBlock * 4;
                int maxBlocks = (int)(((long)bo + destination.Length - done + _blockSize - 1) / _blockSize);
                if (sums.Length < maxBlocks * sumBytes)
                {
                    if (rented is not null)
                    {
                        ArrayPool<byte>.Shared.Return(rented);
                    }

                    rented = ArrayPool<byte>.Shared.Rent(maxBlocks * sumBytes);
                    sums = rented;
                }

                // No lock over the parts here: the pages reachable from this device's root are either its own (changed
                // only by its writes, which its lock keeps out) or shared and committed (never changed in place, only
                // copied), and a page array that grows meanwhile still holds the same pages.
                uint leaf = _tree.FindLeaf(d.Root, d.Depth, _tree.MapGeometry, lb, out int slot);
                uint p = leaf == 0 ? NoBlock : _tree.LeafBlock(leaf, slot);
                long runBytes = _blockSize - bo;
                if (p != NoBlock)
                {
                    // Extend the run while the next logical block is the next physical block: one read for the
                    // whole run, as sequential writes lay blocks out contiguously.
                    _tree.LeafSums(leaf, slot).CopyTo(sums);
                    int blocks = 1;
                    while (runBytes < destination.Length - done)
                    {
                        uint nextLeaf = _tree.FindLeaf(d.Root, d.Depth, _tree.MapGeometry, lb + blocks, out int nextSlot);
                        if (nextLeaf == 0 || _tree.LeafBlock(nextLeaf, nextSlot) != p + (uint)blocks)
                        {
                            break;
                        }

                        _tree.LeafSums(nextLeaf, nextSlot).CopyTo(sums[(blocks * sumBytes)..]);
                        blocks++;
                        runBytes += _blockSize;
                    }
                }

                if (p == NoBlock)
                {
                    int hole = (int)Math.Min(runBytes, destination.Length - done);
                    destination.Slice(done, hole).Clear();
                    if (holes is not null)
                    {
                        if (holes.Count > 0 && holes[^1].End == pos)
                        {
                            holes[^1] = holes[^1] with { Length = holes[^1].Length + hole };
                        }
                        else
                        {
                            holes.Add(new ByteRange(pos, hole));
                        }
                    }

                    pos += hole;
                    done += hole;
                    continue;
                }

                int n = (int)Math.Min(runBytes, destination.Length - done);
                var r = ReadVerified(d, lb, p, bo, destination.Slice(done, n), sums);
                if (!r.IsOk)
                {
                    destination.Clear();
                    holes?.Clear();
                    return r;
                }

                pos += n;
                done += n;
            }

            return Result.Ok;
        }
        finally
        {
            if (rented is not null)
            {
                ArrayPool<byte>.Shared.Return(rented);
            }
        }
    }

    /// <summary>
    /// Reads bytes [bo, bo + target.Length) of the physically contiguous run starting at block
    /// <paramref name="p"/>, verifying every sector touched against <paramref name="sums"/> (the run's
    /// per-sector checksums, block after block).
    /// </summary>
    private Result ReadVerified(DeviceState d, long lb, uint p, int bo, Span<byte> target, ReadOnlySpan<byte> sums)
    {
        int s0 = bo / Layout.SectorSize;
        int s1 = (int)(((long)bo + target.Length + Layout.SectorSize - 1) / Layout.SectorSize);
        long fileOffset = ((long)p * _blockSize) + ((long)s0 * Layout.SectorSize);
        bool aligned = bo % Layout.SectorSize == 0 && target.Length % Layout.SectorSize == 0;
        byte[]? rented = null;
        try
        {
            Span<byte> buffer;
            if (aligned)
            {
                buffer = target;
            }
            else
            {
                rented = ArrayPool<byte>.Shared.Rent((s1 - s0) * Layout.SectorSize);
                buffer = rented.AsSpan(0, (s1 - s0) * Layout.SectorSize);
            }

            try
            {
                _data.Read(fileOffset, buffer);
            }
            catch (IOException ex)
            {
                return Result.Fail(StorageErrorCode.IoError, $"{Describe(d)}: reading block {lb} failed: {ex.Message}");
            }

            _overlay.Merge(p, s0, buffer);
            for (int s = s0; s < s1; s++)
            {
                var sector = buffer.Slice((s - s0) * Layout.SectorSize, Layout.SectorSize);
                uint expected = BinaryPrimitives.ReadUInt32LittleEndian(sums[(s * 4)..]);
                if (Layout.Checksum(sector) != expected)
                {
                    long block = lb + (s / _sectorsPerBlock);
                    long at = (lb * _blockSize) + ((long)s * Layout.SectorSize);
                    return Result.Fail(
                        StorageErrorCode.Corrupt,
                        $"{Describe(d)}: data at byte offset {at} (block {block}, sector {s % _sectorsPerBlock}, physical block {p + (s / _sectorsPerBlock)}) failed its checksum; the data is not returned");
                }
            }

            if (!aligned)
            {
                buffer.Slice(bo - (s0 * Layout.SectorSize), target.Length).CopyTo(target);
            }

            return Result.Ok;
        }
        finally
        {
            if (rented is not null)
            {
                ArrayPool<byte>.Shared.Return(rented);
            }
        }
    }

    internal Result WriteCore(DeviceState d, long offset, ReadOnlySpan<byte> data)
    {
        long pos = offset;
        int done = 0;
        while (done < data.Length)
        {
            long lb = pos / _blockSize;
            int bo = (int)(pos % _blockSize);
            int whole = bo == 0 ? (data.Length - done) / _blockSize : 0;
            int n = whole >= 2 ? whole * _blockSize : (int)Math.Min(_blockSize - bo, data.Length - done);
            var r = whole >= 2 ? WriteWholeBlocks(d, lb, data.Slice(done, n)) : WriteBlock(d, lb, bo, data.Slice(done, n));
            if (!r.IsOk)
            {
                return r;
            }

            pos += n;
            done += n;
        }

        return Result.Ok;
    }

    /// <summary>One block of a run being written to consecutive new physical blocks.</summary>
    private readonly record struct RunBlock(uint Leaf, int Slot, uint Old);

    /// <summary>
    /// Writes several whole blocks. Blocks that go to new physical blocks are allocated first; consecutive
    /// ones (the usual case: the allocator hands out blocks in order) are written with one call, so a 1 MiB
    /// write is one pwrite, not sixteen, and lands in the page cache as one extent.
    /// </summary>
    private Result WriteWholeBlocks(DeviceState d, long firstLb, ReadOnlySpan<byte> data)
    {
        int count = data.Length / _blockSize;
        var run = new List<RunBlock>(count);
        uint runStart = 0;
        int runFirst = 0;
        Span<byte> sums = stackalloc byte[_sectorsPerBlock * 4];
        for (int i = 0; i < count; i++)
        {
            long lb = firstLb + i;
            uint leaf, old, p = NoBlock;
            int slot;
            bool inPlace;
            lock (_state)
            {
                leaf = LeafForWrite(d, lb, out slot);
                old = _tree.LeafBlock(leaf, slot);
                inPlace = old != NoBlock && _blocks.References(old) == 1 && _blocks.IsFresh(old);
                if (!inPlace)
                {
                    p = AllocBlock();
                }
            }

            var block = data.Slice(i * _blockSize, _blockSize);
            if (inPlace)
            {
                var flushed = FlushRun(d, firstLb, data, run, runStart, runFirst, sums);
                run.Clear();
                var r = flushed.IsOk ? WriteInPlace(d, lb, leaf, slot, old, 0, block, 0, _sectorsPerBlock) : flushed;
                if (!r.IsOk)
                {
                    return r;
                }

                continue;
            }

            if (run.Count > 0 && p != runStart + (uint)run.Count)
            {
                var flushed = FlushRun(d, firstLb, data, run, runStart, runFirst, sums);
                run.Clear();
                if (!flushed.IsOk)
                {
                    lock (_state)
                    {
                        DecBlock(p);
                    }

                    return flushed;
                }
            }

            if (run.Count == 0)
            {
                runStart = p;
                runFirst = i;
            }

            run.Add(new RunBlock(leaf, slot, old));
        }

        return FlushRun(d, firstLb, data, run, runStart, runFirst, sums);
    }

    /// <summary>Writes a run of new blocks with one call, then maps them; on failure frees them and maps nothing.</summary>
    private Result FlushRun(DeviceState d, long firstLb, ReadOnlySpan<byte> data, List<RunBlock> run, uint runStart, int runFirst, Span<byte> sums)
    {
        if (run.Count == 0)
        {
            return Result.Ok;
        }

        var bytes = data.Slice(runFirst * _blockSize, run.Count * _blockSize);
        try
        {
            _data.Write((long)runStart * _blockSize, bytes);
        }
        catch (IOException ex)
        {
            lock (_state)
            {
                for (int k = 0; k < run.Count; k++)
                {
                    DecBlock(runStart + (uint)k);
                }
            }

            return IoFailure(d, firstLb + runFirst, ex);
        }

        for (int k = 0; k < run.Count; k++)
        {
            var b = run[k];
            HashSectors(bytes.Slice(k * _blockSize, _blockSize), sums, 0, _sectorsPerBlock);
            lock (_state)
            {
                _tree.SetLeafEntry(b.Leaf, b.Slot, runStart + (uint)k, sums);
                if (b.Old != NoBlock)
                {
                    DecBlock(b.Old, replaced: true);
                }
            }
        }

        return Result.Ok;
    }

    /// <summary>Writes bytes [bo, bo + data.Length) of logical block <paramref name="lb"/>.</summary>
    private Result WriteBlock(DeviceState d, long lb, int bo, ReadOnlySpan<byte> data)
    {
        int s0 = bo / Layout.SectorSize;
        int s1 = (bo + data.Length + Layout.SectorSize - 1) / Layout.SectorSize;
        uint leaf, old;
        int slot;
        bool fresh = false, journaled = false;
        lock (_state)
        {
            leaf = LeafForWrite(d, lb, out slot);
            old = _tree.LeafBlock(leaf, slot);
            if (old != NoBlock && _blocks.References(old) == 1)
            {
                // Committed and referenced by this device alone: overwrite in place through the journal, unless
                // the overlay is at twice its flush point (a flush that keeps failing), when copying bounds the memory.
                fresh = _blocks.IsFresh(old);
                journaled = !fresh && data.Length < _blockSize && _overlay.Sectors + (s1 - s0) <= 2 * _overlayFlushSectors;
            }
        }

        if (fresh)
        {
            return WriteInPlace(d, lb, leaf, slot, old, bo, data, s0, s1);
        }

        if (journaled)
        {
            return WriteJournaled(d, lb, leaf, slot, old, bo, data, s0, s1);
        }

        if (data.Length == _blockSize)
        {
            return WriteWholeBlock(d, lb, leaf, slot, old, data);
        }

        if (old == NoBlock)
        {
            return WriteIntoNewBlock(d, lb, leaf, slot, bo, data, s0, s1);
        }

        // Redirect-on-write: assemble the whole new block, then write it once.
        byte[] buffer = ArrayPool<byte>.Shared.Rent(_blockSize);
        byte[] sums = ArrayPool<byte>.Shared.Rent(_sectorsPerBlock * 4);
        try
        {
            var block = buffer.AsSpan(0, _blockSize);
            var newSums = sums.AsSpan(0, _sectorsPerBlock * 4);
            // A partial write (whole blocks took the direct path): start from the old block.
            lock (_state)
            {
                _tree.LeafSums(leaf, slot).CopyTo(newSums);
            }

            try
            {
                _data.Read((long)old * _blockSize, block);
            }
            catch (IOException ex)
            {
                return Result.Fail(StorageErrorCode.IoError, $"{Describe(d)}: reading block {lb} failed: {ex.Message}");
            }

            lock (_state)
            {
                _overlay.Merge(old, 0, block);
            }

            // Sectors only partly overwritten merge old bytes: verify those first, so corruption is reported
            // instead of being sealed under a fresh checksum. Untouched sectors keep their old checksum and
            // stay detectable.
            var bad = VerifyPartialSectors(d, lb, old, block, newSums, bo, data.Length, s0, s1);
            if (!bad.IsOk)
            {
                return bad;
            }

            data.CopyTo(block[bo..]);
            HashSectors(block, newSums, s0, s1);
            return PlaceBlock(d, lb, leaf, slot, old, block, newSums);
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
            ArrayPool<byte>.Shared.Return(sums);
        }
    }

    /// <summary>
    /// A partial write where nothing was mapped. Into a block known to read as zeros only the touched sectors
    /// are written (a 4 KiB write costs 4 KiB, not a block); otherwise the whole block, zero-filled.
    /// </summary>
    private Result WriteIntoNewBlock(DeviceState d, long lb, uint leaf, int slot, int bo, ReadOnlySpan<byte> data, int s0, int s1)
    {
        uint p;
        bool zeroed;
        lock (_state)
        {
            p = AllocBlock(out zeroed);
        }

        int start = zeroed ? s0 * Layout.SectorSize : 0;
        int length = zeroed ? (s1 - s0) * Layout.SectorSize : _blockSize;
        byte[] buffer = ArrayPool<byte>.Shared.Rent(length);
        try
        {
            var span = buffer.AsSpan(0, length);
            span.Clear();
            data.CopyTo(span[(bo - start)..]);
            Span<byte> sums = stackalloc byte[_sectorsPerBlock * 4];
            _zeroSums.CopyTo(sums);
            for (int s = s0; s < s1; s++)
            {
                BinaryPrimitives.WriteUInt32LittleEndian(sums[(s * 4)..], Layout.Checksum(span.Slice((s * Layout.SectorSize) - start, Layout.SectorSize)));
            }

            try
            {
                _data.Write(((long)p * _blockSize) + start, span);
            }
            catch (IOException ex)
            {
                lock (_state)
                {
                    DecBlock(p);
                }

                return IoFailure(d, lb, ex);
            }

            lock (_state)
            {
                _tree.SetLeafEntry(leaf, slot, p, sums);
            }

            return Result.Ok;
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }

    /// <summary>A write that covers a whole block needs no old data: checksum and write it as it is.</summary>
    private Result WriteWholeBlock(DeviceState d, long lb, uint leaf, int slot, uint old, ReadOnlySpan<byte> data)
    {
        Span<byte> newSums = stackalloc byte[_sectorsPerBlock * 4];
        HashSectors(data, newSums, 0, _sectorsPerBlock);
        return PlaceBlock(d, lb, leaf, slot, old, data, newSums);
    }

    /// <summary>
    /// The leaf holding logical block <paramref name="lb"/> of <paramref name="d"/>, copied first when shared or
    /// committed, so the caller may change its entry; records the change. Holds <see cref="_state"/>.
    /// </summary>
    private uint LeafForWrite(DeviceState d, long lb, out int slot)
    {
        uint root = d.Root;
        uint leaf = _tree.LeafForWrite(ref root, d.Depth, _tree.MapGeometry, map: true, lb, out slot);
        if (root != d.Root)
        {
            d.Root = root;
            MarkDirty(d);
        }

        Touch();
        return leaf;
    }

    /// <summary>Sets the checksums of sectors [s0, s1) of <paramref name="block"/> (which starts at sector 0).</summary>
    private static void HashSectors(ReadOnlySpan<byte> block, Span<byte> sums, int s0, int s1)
    {
        for (int s = s0; s < s1; s++)
        {
            BinaryPrimitives.WriteUInt32LittleEndian(sums[(s * 4)..], Layout.Checksum(block.Slice(s * Layout.SectorSize, Layout.SectorSize)));
        }
    }

    /// <summary>
    /// Writes a complete block to a newly allocated physical block and maps it in place of <paramref name="old"/>,
    /// which is released as replaced. On failure nothing is mapped and the new block is freed.
    /// </summary>
    private Result PlaceBlock(DeviceState d, long lb, uint leaf, int slot, uint old, ReadOnlySpan<byte> block, ReadOnlySpan<byte> sums)
    {
        uint p;
        lock (_state)
        {
            p = AllocBlock();
        }

        try
        {
            _data.Write((long)p * _blockSize, block);
        }
        catch (IOException ex)
        {
            lock (_state)
            {
                DecBlock(p);
            }

            return IoFailure(d, lb, ex);
        }

        lock (_state)
        {
            _tree.SetLeafEntry(leaf, slot, p, sums);
            if (old != NoBlock)
            {
                DecBlock(old, replaced: true);
            }
        }

        return Result.Ok;
    }

    /// <summary>
    /// Verifies the sectors in [s0, s1) that a write of [bo, bo + length) covers only partly; <paramref name="block"/>
    /// holds the block's bytes from offset <paramref name="bufferStart"/>.
    /// </summary>
    private Result VerifyPartialSectors(DeviceState d, long lb, uint p, ReadOnlySpan<byte> block, ReadOnlySpan<byte> sums, int bo, int length, int s0, int s1, int bufferStart = 0)
    {
        for (int s = s0; s < s1; s++)
        {
            int start = s * Layout.SectorSize;
            bool covered = bo <= start && bo + length >= start + Layout.SectorSize;
            if (!covered && Layout.Checksum(block.Slice(start - bufferStart, Layout.SectorSize)) != BinaryPrimitives.ReadUInt32LittleEndian(sums[(s * 4)..]))
            {
                return Result.Fail(
                    StorageErrorCode.Corrupt,
                    $"{Describe(d)}: data at byte offset {(lb * _blockSize) + start} (block {lb}, sector {s}, physical block {p}) failed its checksum; the write that would merge with it was refused");
            }
        }

        return Result.Ok;
    }

    private Result IoFailure(DeviceState d, long lb, IOException ex) =>
        IsNoSpace(ex)
            ? Result.Fail(StorageErrorCode.NoSpace, $"{Describe(d)}: no space left on the disk under pool '{_directory}' while writing block {lb}; data flushed before is intact, the failed write's range may hold old or new bytes")
            : Result.Fail(StorageErrorCode.IoError, $"{Describe(d)}: writing block {lb} failed: {ex.Message}");

    internal static bool IsNoSpace(IOException ex) =>
        (ex.HResult & 0xFFFF) == 28 || ex.HResult == unchecked((int)0x80070070) || ex.Message.Contains("No space left", StringComparison.OrdinalIgnoreCase);

    private static string Describe(DeviceState d) => $"{(d.Kind == DeviceKind.Snapshot ? "snapshot" : "volume")} '{d.Name}'";
}
