using System.Buffers.Binary;
using Dolly.Storage.Engine;

namespace Dolly.Storage;

// In-place overwrites of committed blocks. A partial write into a block that only one device references and that
// a durable state already holds does not copy the block: its sectors go to the overlay (memory) and the leaf
// takes their new checksums in memory. A flush writes them to the journal and syncs it, and only then writes them
// into the block, so the data file never holds bytes that neither the durable state's checksums nor a durable
// journal record vouch for. Opening the pool replays the complete batches after the superblock's journal start.
public sealed partial class Pool
{
    private void SetUpJournal(Superblock sb)
    {
        long size = sb.JournalPages == 0 ? Layout.DefaultJournalBytes : (long)sb.JournalPages * Layout.PageSize;
        _journal = new Journal(_journalFile!, size, sb.JournalStart, sb.JournalStartSeq);
        _overlayFlushSectors = (int)(size / Layout.SectorSize / 8);
    }

    /// <summary>
    /// Applies the journal's complete batches of the durable generation: the checksums go into the maps (in memory)
    /// and the sectors into their blocks, or into the overlay when <paramref name="applyInPlace"/> is false (check,
    /// which writes nothing). Records that name a device or block the state does not have are problems.
    /// </summary>
    private void ReplayJournal(Superblock sb, LoadContext ctx, bool applyInPlace)
    {
        if (sb.JournalPages == 0)
        {
            return;
        }

        JournalReplay replay;
        try
        {
            replay = _journal.Replay(sb.JournalStart, sb.JournalStartSeq, sb.Generation);
        }
        catch (IOException ex)
        {
            ctx.Problems.Add(new CheckProblem("journal", $"cannot be read: {ex.Message}"));
            return;
        }

        foreach (var batch in replay.Batches)
        {
            for (int i = 0; i < batch.Entries.Count; i++)
            {
                var e = batch.Entries[i];
                if (ReplayEntry(e, batch.Sectors[i], applyInPlace) is { } problem)
                {
                    ctx.Problems.Add(new CheckProblem("journal", problem));
                }
            }
        }

        _journal.Resume(replay.End, replay.EndSeq);
    }

    private string? ReplayEntry(JournalEntry e, byte[] sector, bool applyInPlace)
    {
        if (!_devices.TryGet(e.Device, out var d))
        {
            return $"a record for device id {e.Device}, which does not exist";
        }

        if (e.LogicalBlock < 0 || e.LogicalBlock >= (d.Size + _blockSize - 1) / _blockSize || e.Sector < 0 || e.Sector >= _sectorsPerBlock)
        {
            return $"a record for block {e.LogicalBlock} sector {e.Sector} of {Describe(d)}, outside it";
        }

        uint leaf = _tree.FindLeaf(d.Root, d.Depth, _tree.MapGeometry, e.LogicalBlock, out int slot);
        if (leaf == 0 || _tree.LeafBlock(leaf, slot) != e.Block)
        {
            return $"a record for block {e.LogicalBlock} of {Describe(d)} at physical block {e.Block}, which the map does not hold there";
        }

        if (BinaryPrimitives.ReadUInt32LittleEndian(_tree.LeafSums(leaf, slot)[(e.Sector * 4)..]) != e.Checksum)
        {
            uint root = d.Root;
            leaf = _tree.LeafForWrite(ref root, d.Depth, _tree.MapGeometry, map: true, e.LogicalBlock, out slot);
            if (root != d.Root)
            {
                d.Root = root;
                MarkDirty(d);
            }

            if (_blocks.References(e.Block) != 1)
            {
                return $"a record for block {e.LogicalBlock} of {Describe(d)} changes physical block {e.Block}, which is shared";
            }

            BinaryPrimitives.WriteUInt32LittleEndian(_tree.LeafSums(leaf, slot)[(e.Sector * 4)..], e.Checksum);
            Touch();
        }

        if (applyInPlace && WriteSectorsInPlace(e.Block, e.Sector, sector))
        {
            Touch();
        }
        else
        {
            // Check writes nothing; and a sector that cannot be written into its block now (a full disk under
            // a sector that was a hole) is served from memory until a commit writes it again.
            _overlay.Put(e.Block, e.Device, e.LogicalBlock, e.Sector, sector);
        }

        return null;
    }
}
