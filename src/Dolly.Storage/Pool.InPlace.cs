using System.Buffers;
using System.Buffers.Binary;
using Dolly.Storage.Engine;

namespace Dolly.Storage;

// Overwrites of blocks only the writing device references. A block born in this transaction is written in its
// place directly (no durable state reaches it); a committed one goes through the overlay and the journal
// (docs/ARCHITECTURE.md, "In-place overwrites through the journal"). Both run with the device's lock held
// alone, which is what lets the file I/O run outside _state: no other device reads or writes such a block, and
// giving it a second reference (snapshot, clone) needs the pool lock alone.
public sealed partial class Pool
{
    /// <summary>
    /// Overwrites sectors of a committed block that only this device references: the new sectors go to the overlay
    /// and their checksums into the (copied) leaf. Sectors the write covers only in part are completed from the
    /// current bytes, which are verified first, so nothing is changed when they fail.
    /// </summary>
    private Result WriteJournaled(DeviceState d, long lb, uint leaf, int slot, uint p, int bo, ReadOnlySpan<byte> data, int s0, int s1)
    {
        bool firstPartial = bo % Layout.SectorSize != 0 || (s1 - s0 == 1 && data.Length != Layout.SectorSize);
        bool lastPartial = s1 - s0 > 1 && (bo + data.Length) % Layout.SectorSize != 0;
        int start = s0 * Layout.SectorSize;
        int length = (s1 - s0) * Layout.SectorSize;
        byte[] rented = ArrayPool<byte>.Shared.Rent(length);
        try
        {
            // The new sectors, whole: partly covered ones completed from their current, verified bytes.
            var sectors = rented.AsSpan(0, length);
            if (firstPartial || lastPartial)
            {
                Span<byte> oldSums = stackalloc byte[_sectorsPerBlock * 4];
                lock (_state)
                {
                    _tree.LeafSums(leaf, slot).CopyTo(oldSums);
                }

                if (firstPartial && CurrentSector(d, lb, p, s0, oldSums, sectors[..Layout.SectorSize]) is { } bad1)
                {
                    return bad1;
                }

                if (lastPartial && CurrentSector(d, lb, p, s1 - 1, oldSums, sectors[^Layout.SectorSize..]) is { } bad2)
                {
                    return bad2;
                }
            }

            data.CopyTo(sectors[(bo - start)..]);
            Span<byte> newSums = stackalloc byte[(s1 - s0) * 4];
            for (int s = 0; s < s1 - s0; s++)
            {
                BinaryPrimitives.WriteUInt32LittleEndian(newSums[(s * 4)..], Layout.Checksum(sectors.Slice(s * Layout.SectorSize, Layout.SectorSize)));
            }

            lock (_state)
            {
                for (int s = s0; s < s1; s++)
                {
                    _overlay.Put(p, d.Id, lb, s, sectors.Slice((s - s0) * Layout.SectorSize, Layout.SectorSize));
                }

                newSums.CopyTo(_tree.LeafSums(leaf, slot)[(s0 * 4)..]);
            }

            return Result.Ok;
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(rented);
        }
    }

    /// <summary>The current bytes of sector <paramref name="s"/> of committed block <paramref name="p"/>, verified; an error when they fail.</summary>
    private StorageError? CurrentSector(DeviceState d, long lb, uint p, int s, ReadOnlySpan<byte> sums, Span<byte> target)
    {
        lock (_state)
        {
            if (_overlay.TryGet(p, s, out var held))
            {
                held.CopyTo(target);
                return null;
            }
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
        long blockOffset = (long)p * _blockSize;
        int start = s0 * Layout.SectorSize;
        int length = (s1 - s0) * Layout.SectorSize;
        bool aligned = bo == start && data.Length == length;
        Span<byte> sums = stackalloc byte[_sectorsPerBlock * 4];
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
                lock (_state)
                {
                    _tree.LeafSums(leaf, slot).CopyTo(sums);
                }

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
                ResealFromDisk(blockOffset + start, leaf, slot, s0, s1);
                return IoFailure(d, lb, ex);
            }

            for (int s = s0; s < s1; s++)
            {
                var sector = toWrite.Slice((s - s0) * Layout.SectorSize, Layout.SectorSize);
                BinaryPrimitives.WriteUInt32LittleEndian(sums[(s * 4)..], Layout.Checksum(sector));
            }

            lock (_state)
            {
                sums[(s0 * 4)..(s1 * 4)].CopyTo(_tree.LeafSums(leaf, slot)[(s0 * 4)..]);
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

    /// <summary>Recomputes the checksums of sectors [s0, s1) of a fresh, unshared block from its bytes on disk.</summary>
    private void ResealFromDisk(long fileOffset, uint leaf, int slot, int s0, int s1)
    {
        byte[] buffer = ArrayPool<byte>.Shared.Rent((s1 - s0) * Layout.SectorSize);
        try
        {
            var span = buffer.AsSpan(0, (s1 - s0) * Layout.SectorSize);
            _data.Read(fileOffset, span);
            Span<byte> sums = stackalloc byte[(s1 - s0) * 4];
            for (int s = 0; s < s1 - s0; s++)
            {
                BinaryPrimitives.WriteUInt32LittleEndian(sums[(s * 4)..], Layout.Checksum(span.Slice(s * Layout.SectorSize, Layout.SectorSize)));
            }

            lock (_state)
            {
                sums.CopyTo(_tree.LeafSums(leaf, slot)[(s0 * 4)..]);
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
}
