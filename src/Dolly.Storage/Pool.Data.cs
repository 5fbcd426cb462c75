using System.Buffers;
using System.Buffers.Binary;
using Dolly.Storage.Engine;

namespace Dolly.Storage;

// The data path. Every 4 KiB sector carries a checksum in its leaf entry; a read verifies each sector it
// returns, and a sector that fails is reported, never returned. A write to a block that is committed or
// shared goes to a new block (redirect-on-write), so committed data is never overwritten and a crash can
// only lose what no flush acknowledged.
public sealed partial class Pool
{
    private static readonly uint ZeroSectorSum = Layout.Checksum(new byte[Layout.SectorSize]);

    private bool _dataDirty;
    private byte[] _zeroSums = [];

    internal Result ReadCore(DeviceState d, long offset, Span<byte> destination)
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
                uint leaf = _tree.FindLeaf(d.Root, d.Depth, _tree.MapGeometry, lb, out int slot);
                uint p = leaf == 0 ? NoBlock : _tree.LeafBlock(leaf, slot);
                if (p == NoBlock)
                {
                    int hole = (int)Math.Min(_blockSize - bo, destination.Length - done);
                    destination.Slice(done, hole).Clear();
                    pos += hole;
                    done += hole;
                    continue;
                }

                // Extend the run while the next logical block is the next physical block: one read for the
                // whole run, as sequential writes lay blocks out contiguously.
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

                _tree.LeafSums(leaf, slot).CopyTo(sums);
                int blocks = 1;
                long runBytes = _blockSize - bo;
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

                int n = (int)Math.Min(runBytes, destination.Length - done);
                var r = ReadVerified(d, lb, p, bo, destination.Slice(done, n), sums);
                if (!r.IsOk)
                {
                    destination.Clear();
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
            uint root = d.Root;
            uint leaf = _tree.LeafForWrite(ref root, d.Depth, _tree.MapGeometry, map: true, lb, out int slot);
            if (root != d.Root)
            {
                d.Root = root;
                MarkDirty(d);
            }

            Touch();
            uint old = _tree.LeafBlock(leaf, slot);
            var block = data.Slice(i * _blockSize, _blockSize);
            if (old != NoBlock && _blocks.References(old) == 1 && _blocks.IsFresh(old))
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

            uint p = AllocBlock();
            if (run.Count > 0 && p != runStart + (uint)run.Count)
            {
                var flushed = FlushRun(d, firstLb, data, run, runStart, runFirst, sums);
                run.Clear();
                if (!flushed.IsOk)
                {
                    DecBlock(p);
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
            for (int k = 0; k < run.Count; k++)
            {
                DecBlock(runStart + (uint)k);
            }

            return IoFailure(d, firstLb + runFirst, ex);
        }

        for (int k = 0; k < run.Count; k++)
        {
            var b = run[k];
            HashSectors(bytes.Slice(k * _blockSize, _blockSize), sums, 0, _sectorsPerBlock);
            _tree.SetLeafEntry(b.Leaf, b.Slot, runStart + (uint)k, sums);
            if (b.Old != NoBlock)
            {
                DecBlock(b.Old, replaced: true);
            }
        }

        return Result.Ok;
    }

    /// <summary>Writes bytes [bo, bo + data.Length) of logical block <paramref name="lb"/>.</summary>
    private Result WriteBlock(DeviceState d, long lb, int bo, ReadOnlySpan<byte> data)
    {
        uint root = d.Root;
        uint leaf = _tree.LeafForWrite(ref root, d.Depth, _tree.MapGeometry, map: true, lb, out int slot);
        if (root != d.Root)
        {
            d.Root = root;
            MarkDirty(d);
        }

        Touch();
        uint old = _tree.LeafBlock(leaf, slot);
        int s0 = bo / Layout.SectorSize;
        int s1 = (bo + data.Length + Layout.SectorSize - 1) / Layout.SectorSize;

        if (old != NoBlock && _blocks.References(old) == 1)
        {
            if (_blocks.IsFresh(old))
            {
                return WriteInPlace(d, lb, leaf, slot, old, bo, data, s0, s1);
            }

            // Committed and referenced by this device alone: overwrite in place through the journal, unless the
            // overlay is at twice its flush point (a flush that keeps failing), when copying bounds the memory.
            if (data.Length < _blockSize && _overlay.Sectors + (s1 - s0) <= 2 * _overlayFlushSectors)
            {
                return WriteJournaled(d, lb, leaf, slot, old, bo, data, s0, s1);
            }
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
            _tree.LeafSums(leaf, slot).CopyTo(newSums);
            try
            {
                _data.Read((long)old * _blockSize, block);
                _overlay.Merge(old, 0, block);
            }
            catch (IOException ex)
            {
                return Result.Fail(StorageErrorCode.IoError, $"{Describe(d)}: reading block {lb} failed: {ex.Message}");
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
        uint p = AllocBlock(out bool zeroed);
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
                DecBlock(p);
                return IoFailure(d, lb, ex);
            }

            _tree.SetLeafEntry(leaf, slot, p, sums);
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
        uint p = AllocBlock();
        try
        {
            _data.Write((long)p * _blockSize, block);
        }
        catch (IOException ex)
        {
            DecBlock(p);
            return IoFailure(d, lb, ex);
        }

        _tree.SetLeafEntry(leaf, slot, p, sums);
        if (old != NoBlock)
        {
            DecBlock(old, replaced: true);
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

    /// <summary>
    /// Overwrites sectors of a committed block that only this device references: the new sectors go to the overlay
    /// and their checksums into the (copied) leaf. Sectors the write covers only in part are completed from the
    /// current bytes, which are verified first, so nothing is changed when they fail.
    /// </summary>
    private Result WriteJournaled(DeviceState d, long lb, uint leaf, int slot, uint p, int bo, ReadOnlySpan<byte> data, int s0, int s1)
    {
        var sums = _tree.LeafSums(leaf, slot);
        Span<byte> first = stackalloc byte[Layout.SectorSize];
        Span<byte> last = stackalloc byte[Layout.SectorSize];
        bool firstPartial = bo % Layout.SectorSize != 0 || (s1 - s0 == 1 && data.Length != Layout.SectorSize);
        bool lastPartial = s1 - s0 > 1 && (bo + data.Length) % Layout.SectorSize != 0;
        if (firstPartial && CurrentSector(d, lb, p, s0, sums, first) is { } bad1)
        {
            return bad1;
        }

        if (lastPartial && CurrentSector(d, lb, p, s1 - 1, sums, last) is { } bad2)
        {
            return bad2;
        }

        Span<byte> sector = stackalloc byte[Layout.SectorSize];
        for (int s = s0; s < s1; s++)
        {
            int start = s * Layout.SectorSize;
            int from = Math.Max(bo, start);
            int to = Math.Min(bo + data.Length, start + Layout.SectorSize);
            if (s == s0 && firstPartial)
            {
                first.CopyTo(sector);
            }
            else if (s == s1 - 1 && lastPartial)
            {
                last.CopyTo(sector);
            }

            data.Slice(from - bo, to - from).CopyTo(sector[(from - start)..]);
            _overlay.Put(p, d.Id, lb, s, sector);
            BinaryPrimitives.WriteUInt32LittleEndian(sums[(s * 4)..], Layout.Checksum(sector));
        }

        return Result.Ok;
    }

    /// <summary>The current bytes of sector <paramref name="s"/> of committed block <paramref name="p"/>, verified; an error when they fail.</summary>
    private StorageError? CurrentSector(DeviceState d, long lb, uint p, int s, ReadOnlySpan<byte> sums, Span<byte> target)
    {
        if (_overlay.TryGet(p, s, out var held))
        {
            held.CopyTo(target);
            return null;
        }

        try
        {
            _data.Read(((long)p * _blockSize) + ((long)s * Layout.SectorSize), target);
        }
        catch (IOException ex)
        {
            return new StorageError(StorageErrorCode.IoError, $"{Describe(d)}: reading block {lb} failed: {ex.Message}");
        }

        return Layout.Checksum(target) == BinaryPrimitives.ReadUInt32LittleEndian(sums[(s * 4)..])
            ? null
            : new StorageError(
                StorageErrorCode.Corrupt,
                $"{Describe(d)}: data at byte offset {(lb * _blockSize) + ((long)s * Layout.SectorSize)} (block {lb}, sector {s}, physical block {p}) failed its checksum; the write that would merge with it was refused");
    }

    /// <summary>Overwrites part of a block allocated in this transaction and referenced only here.</summary>
    private Result WriteInPlace(DeviceState d, long lb, uint leaf, int slot, uint p, int bo, ReadOnlySpan<byte> data, int s0, int s1)
    {
        var sums = _tree.LeafSums(leaf, slot);
        long blockOffset = (long)p * _blockSize;
        int start = s0 * Layout.SectorSize;
        int length = (s1 - s0) * Layout.SectorSize;
        bool aligned = bo == start && data.Length == length;
        byte[]? rented = null;
        try
        {
            ReadOnlySpan<byte> toWrite;
            if (aligned)
            {
                toWrite = data;
            }
            else
            {
                rented = ArrayPool<byte>.Shared.Rent(length);
                var buffer = rented.AsSpan(0, length);
                try
                {
                    _data.Read(blockOffset + start, buffer);
                }
                catch (IOException ex)
                {
                    return Result.Fail(StorageErrorCode.IoError, $"{Describe(d)}: reading block {lb} failed: {ex.Message}");
                }

                var bad = VerifyPartialSectors(d, lb, p, buffer, sums, bo, data.Length, s0, s1, bufferStart: start);
                if (!bad.IsOk)
                {
                    return bad;
                }

                data.CopyTo(buffer[(bo - start)..]);
                toWrite = buffer;
            }

            try
            {
                _data.Write(blockOffset + start, toWrite);
            }
            catch (IOException ex)
            {
                // Part of an in-place write may have landed (a short write at ENOSPC, e.g. into sectors a fresh
                // block left as a hole): re-seal the touched sectors from what is on disk now, so the block reads
                // back (old or new bytes, as after any failed write) instead of failing its checksums for good.
                ResealFromDisk(blockOffset + start, sums, s0, s1);
                return IoFailure(d, lb, ex);
            }

            for (int s = s0; s < s1; s++)
            {
                var sector = toWrite.Slice((s - s0) * Layout.SectorSize, Layout.SectorSize);
                BinaryPrimitives.WriteUInt32LittleEndian(sums[(s * 4)..], Layout.Checksum(sector));
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
    /// Makes [offset, offset + length) read as zeros: whole blocks are unmapped (their space is freed once no
    /// snapshot holds them), partial blocks get zeros written.
    /// </summary>
    internal Result ZeroCore(DeviceState d, long offset, long length)
    {
        if (length == 0)
        {
            return Result.Ok;
        }

        long end = offset + length;
        long firstFull = (offset + _blockSize - 1) / _blockSize;
        long endFull = end / _blockSize;
        if (end == d.Size)
        {
            endFull = (end + _blockSize - 1) / _blockSize;
        }

        if (firstFull < endFull)
        {
            if (d.Root != 0)
            {
                uint root = _tree.UnmapRange(d.Root, d.Depth - 1, 0, firstFull, endFull);
                if (root != d.Root)
                {
                    d.Root = root;
                    MarkDirty(d);
                }

                Touch();
            }

            var head = WriteZeroBytes(d, offset, (firstFull * _blockSize) - offset);
            return head.IsOk ? WriteZeroBytes(d, endFull * _blockSize, Math.Max(0, end - (endFull * _blockSize))) : head;
        }

        return WriteZeroBytes(d, offset, length);
    }

    /// <summary>Writes zeros into a range inside mapped blocks; unmapped blocks already read as zeros.</summary>
    private Result WriteZeroBytes(DeviceState d, long offset, long length)
    {
        if (length <= 0)
        {
            return Result.Ok;
        }

        byte[] zeros = ArrayPool<byte>.Shared.Rent(_blockSize);
        try
        {
            Array.Clear(zeros, 0, _blockSize);
            long pos = offset;
            long end = offset + length;
            while (pos < end)
            {
                long lb = pos / _blockSize;
                int bo = (int)(pos % _blockSize);
                int n = (int)Math.Min(_blockSize - bo, end - pos);
                uint leaf = _tree.FindLeaf(d.Root, d.Depth, _tree.MapGeometry, lb, out int slot);
                if (leaf != 0 && _tree.LeafBlock(leaf, slot) != NoBlock)
                {
                    var r = WriteBlock(d, lb, bo, zeros.AsSpan(0, n));
                    if (!r.IsOk)
                    {
                        return r;
                    }
                }

                pos += n;
            }

            return Result.Ok;
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(zeros);
        }
    }

    /// <summary>Recomputes the checksums of sectors [s0, s1) of a fresh, unshared block from its bytes on disk.</summary>
    private void ResealFromDisk(long fileOffset, Span<byte> sums, int s0, int s1)
    {
        byte[] buffer = ArrayPool<byte>.Shared.Rent((s1 - s0) * Layout.SectorSize);
        try
        {
            var span = buffer.AsSpan(0, (s1 - s0) * Layout.SectorSize);
            _data.Read(fileOffset, span);
            for (int s = s0; s < s1; s++)
            {
                BinaryPrimitives.WriteUInt32LittleEndian(sums[(s * 4)..], Layout.Checksum(span.Slice((s - s0) * Layout.SectorSize, Layout.SectorSize)));
            }
        }
        catch (IOException)
        {
            // Unreadable too: the sectors keep their old checksums and reads report them, as for any media error.
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }

    private Result IoFailure(DeviceState d, long lb, IOException ex) =>
        IsNoSpace(ex)
            ? Result.Fail(StorageErrorCode.NoSpace, $"{Describe(d)}: no space left on the disk under pool '{_directory}' while writing block {lb}; data flushed before is intact, the failed write's range may hold old or new bytes")
            : Result.Fail(StorageErrorCode.IoError, $"{Describe(d)}: writing block {lb} failed: {ex.Message}");

    internal static bool IsNoSpace(IOException ex) =>
        (ex.HResult & 0xFFFF) == 28 || ex.HResult == unchecked((int)0x80070070) || ex.Message.Contains("No space left", StringComparison.OrdinalIgnoreCase);

    private static string Describe(DeviceState d) => $"{(d.Kind == DeviceKind.Snapshot ? "snapshot" : "volume")} '{d.Name}'";
}
