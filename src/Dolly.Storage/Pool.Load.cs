using Dolly.Storage.Engine;
using Dolly.Storage.IO;

namespace Dolly.Storage;

// Opening a pool: pick the newest valid superblock, read the device table, then walk every block map once
// (shared pages are visited once) to rebuild reference counts and free lists. Problems are collected rather
// than thrown so that `check` can name all of them; Open refuses a pool with any.
public sealed partial class Pool
{
    private sealed class LoadContext
    {
        public List<CheckProblem> Problems { get; } = [];

        public int[] PageRef { get; set; } = [];

        public int[] BlockRef { get; set; } = [];

        /// <summary>The data high-water mark of the state loaded.</summary>
        public uint DataHighWater { get; set; }
    }

    private static Superblock? ReadSuperblock(IStorageFile meta, string directory, List<CheckProblem> problems, out bool foreign) =>
        ReadSuperblock(meta, directory, problems, out foreign, out _);

    private static Superblock? ReadSuperblock(IStorageFile meta, string directory, List<CheckProblem> problems, out bool foreign, out int bestSlot)
    {
        Superblock? best = null;
        bestSlot = 0;
        bool anyMagic = false;
        var page = new byte[Layout.PageSize];
        var notes = new List<string>();
        for (int slot = 0; slot < 2; slot++)
        {
            meta.Read((long)slot * Layout.PageSize, page);
            var sb = Superblock.Parse(page, out var problem, out bool hasMagic);
            anyMagic |= hasMagic;
            if (sb is null)
            {
                notes.Add($"superblock {slot}: {problem}");
            }
            else if (best is null || sb.Generation > best.Generation)
            {
                best = sb;
                bestSlot = slot;
            }
        }

        foreign = !anyMagic;
        if (best is null && anyMagic)
        {
            foreach (var n in notes)
            {
                problems.Add(new CheckProblem($"pool '{directory}'", n));
            }
        }

        return best;
    }

    /// <summary>Loads the device table and every map reachable from it; problems are collected.</summary>
    private void LoadTrees(Superblock sb, LoadContext ctx)
    {
        ctx.PageRef = new int[_pages.HighWater];
        ctx.DataHighWater = sb.DataHighWater;
        ctx.BlockRef = new int[sb.DataHighWater];
        _deviceRoot = sb.DeviceRoot;
        _deviceDepth = Math.Clamp(sb.DeviceDepth, 1, Layout.MaxDepth);
        _devices.Reset(sb.NextDeviceId);
        if (sb.DeviceDepth != _deviceDepth)
        {
            ctx.Problems.Add(new CheckProblem("device table", $"invalid depth {sb.DeviceDepth}"));
        }

        var devices = new List<DeviceState>();
        if (_deviceRoot != 0)
        {
            VisitPage(_deviceRoot, _deviceDepth - 1, map: false, "device table", ctx, leaf =>
            {
                long firstSlot = leaf.Start;
                for (int i = 0; i < Layout.DevicesPerLeaf; i++)
                {
                    int slot = (int)(firstSlot + i);
                    var rec = _pages[leaf.Id].AsSpan(Layout.HeaderSize + (i * Layout.DeviceRecordSize), Layout.DeviceRecordSize);
                    var d = DeviceState.ReadRecord(rec, slot, out var problem);
                    if (problem is not null)
                    {
                        ctx.Problems.Add(new CheckProblem("device table", problem));
                    }

                    if (d is not null)
                    {
                        devices.Add(d);
                    }
                }
            });
        }

        foreach (var d in devices)
        {
            var subject = $"{(d.Kind == DeviceKind.Snapshot ? "snapshot" : "volume")} '{d.Name}' (id {d.Id})";
            if (!ValidateDevice(d, subject, ctx))
            {
                continue;
            }

            _devices.Load(d);
            if (d.Root != 0)
            {
                VisitPage(d.Root, d.Depth - 1, map: true, subject, ctx, leaf =>
                {
                    for (int i = 0; i < _tree.MapGeometry.LeafFanout; i++)
                    {
                        uint p = _tree.LeafBlock(leaf.Id, i);
                        if (p == NoBlock)
                        {
                            continue;
                        }

                        if (p >= ctx.DataHighWater)
                        {
                            ctx.Problems.Add(new CheckProblem(subject, $"block {leaf.Start + i} maps to physical block {p}, beyond the data high-water mark {ctx.DataHighWater}"));
                            continue;
                        }

                        ctx.BlockRef[p]++;
                    }
                });
            }
        }

        if (ctx.Problems.Count == 0)
        {
            // Nothing may be mapped past a device's end (the last partial block aside): walk only that range.
            foreach (var d in _devices.All)
            {
                long sizeBlocks = (d.Size + _blockSize - 1) / _blockSize;
                long firstBeyond = -1;
                _tree.WalkMapped(d.Root, d.Depth, sizeBlocks, _tree.MapGeometry.Covered(d.Depth - 1), (lb, _, _) => firstBeyond = firstBeyond < 0 ? lb : firstBeyond);
                if (firstBeyond >= 0)
                {
                    ctx.Problems.Add(new CheckProblem($"{Describe(d)} (id {d.Id})", $"block {firstBeyond} is mapped beyond the device size of {d.Size} bytes"));
                }
            }
        }

        _devices.FinishLoad();
    }

    private bool ValidateDevice(DeviceState d, string subject, LoadContext ctx)
    {
        var problems = ctx.Problems;
        int before = problems.Count;
        if (Names.Validate(d.Name) is { } nameError)
        {
            problems.Add(new CheckProblem(subject, nameError.Message));
        }

        if (_devices.Contains(d.Name))
        {
            problems.Add(new CheckProblem(subject, "the name is used by another device"));
        }

        if (_devices.Contains(d.Id) || d.Id >= _devices.NextId)
        {
            problems.Add(new CheckProblem(subject, $"the id is duplicated or not below the next id {_devices.NextId}"));
        }

        if (d.Size <= 0 || d.Size > ByteSize.MaxVolumeSize || d.Size % Layout.SectorSize != 0)
        {
            problems.Add(new CheckProblem(subject, $"invalid size {d.Size}"));
        }
        else if (d.Depth is < 1 or > Layout.MaxDepth || _tree.MapGeometry.Covered(d.Depth - 1) * _blockSize < d.Size)
        {
            problems.Add(new CheckProblem(subject, $"map depth {d.Depth} does not cover the size {d.Size}"));
        }

        if (d.Root >= _pages.HighWater || d.Root == 1)
        {
            problems.Add(new CheckProblem(subject, $"map root page {d.Root} is out of range"));
        }

        return problems.Count == before;
    }

    private readonly record struct LeafRef(uint Id, long Start);

    /// <summary>
    /// Counts a reference to a page and, on its first visit, loads and verifies it and recurses.
    /// </summary>
    private void VisitPage(uint id, int level, bool map, string subject, LoadContext ctx, Action<LeafRef> onLeaf, long start = 0)
    {
        if (id < 2 || id >= _pages.HighWater)
        {
            ctx.Problems.Add(new CheckProblem(subject, $"reference to page {id}, outside the metadata file's pages 2..{_pages.HighWater - 1}"));
            return;
        }

        var (interior, leafMagic) = MapTree.Magics(map);
        uint expected = level == 0 ? leafMagic : interior;
        if (ctx.PageRef[id]++ > 0)
        {
            // Shared: counted once more; its subtree was visited the first time.
            return;
        }

        var page = new byte[Layout.PageSize];
        _meta.Read((long)id * Layout.PageSize, page);
        if (!Layout.PageChecksumOk(page))
        {
            ctx.Problems.Add(new CheckProblem(subject, $"metadata page {id} (level {level}) failed its checksum"));
            return;
        }

        if (Layout.Magic(page) != expected || Layout.PageId(page) != id || Layout.Level(page) != level)
        {
            ctx.Problems.Add(new CheckProblem(subject, $"metadata page {id} is not the level-{level} {(map ? "map" : "device table")} page expected (magic {Layout.Magic(page):x8}, id {Layout.PageId(page)}, level {Layout.Level(page)})"));
            return;
        }

        _pages.Load(id, page);
        if (level == 0)
        {
            onLeaf(new LeafRef(id, start));
            return;
        }

        var geometry = map ? _tree.MapGeometry : _tree.DeviceGeometry;
        long covered = geometry.Covered(level - 1);
        for (int ci = 0; ci < Layout.InteriorFanout; ci++)
        {
            uint child = _tree.GetU32(id, ci);
            if (child != 0)
            {
                VisitPage(child, level - 1, map, subject, ctx, onLeaf, start + (ci * covered));
            }
        }
    }

    private List<DeviceState> _devicesBeforeChange = [];

    /// <summary>
    /// Discards every uncommitted change and reloads the committed state from disk. Device records keep their
    /// identity (open handles stay valid): devices that exist on disk get their committed root and size back,
    /// the others are marked deleted. Used only after a management change failed to commit, when nothing but
    /// that change is uncommitted.
    /// </summary>
    private void RollBackToCommitted(IReadOnlyCollection<DeviceState> known)
    {
        _dirty = false;
        _dataDirty = false;
        _clock.Advance();

        var problems = new List<CheckProblem>();
        var sb = ReadSuperblock(_meta, _directory, problems, out _, out int slot)
            ?? throw new StorageException($"pool '{_directory}': the committed superblock cannot be read back after a failed commit");
        Initialize(sb, slot);
        var ctx = new LoadContext();
        LoadTrees(sb, ctx);
        if (ctx.Problems.Count > 0)
        {
            throw new StorageException($"pool '{_directory}': the committed state cannot be read back after a failed commit: {ctx.Problems[0]}");
        }

        AdoptCounts(ctx);
        _journal.DurableStart = sb.JournalStart;
        ReplayJournal(sb, ctx, applyInPlace: true);
        if (ctx.Problems.Count > 0)
        {
            throw new StorageException($"pool '{_directory}': the committed journal cannot be replayed after a failed commit: {ctx.Problems[0]}");
        }

        _journalClean = false;

        foreach (var old in known)
        {
            if (_devices.TryGet(old.Id, out var loaded))
            {
                old.Root = loaded.Root;
                old.Depth = loaded.Depth;
                old.Size = loaded.Size;
                old.Deleted = false;
                _devices.Rebind(old);
            }
            else
            {
                old.Deleted = true;
            }
        }
    }

    /// <summary>Adopts the reference counts computed by a load and builds the free lists from them.</summary>
    private void AdoptCounts(LoadContext ctx)
    {
        _pages.Adopt(ctx.PageRef);

        // Queued punches are dropped (those blocks are simply free again); a piece being punched right now stays
        // unallocatable until its punch is done, when the drainer frees it.
        _blocks.Adopt(ctx.DataHighWater, ctx.BlockRef);
    }
}
