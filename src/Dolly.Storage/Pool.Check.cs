using System.Buffers.Binary;
using Dolly.Storage.Engine;
using Dolly.Storage.IO;

namespace Dolly.Storage;

// `check`: recompute everything that is derived and compare it with what the engine holds; read every
// referenced page and data block back from disk and verify its checksum. Each problem names its object.
public sealed partial class Pool
{
    /// <summary>Checks a pool directory without keeping it open: metadata structure, then the full <see cref="Check"/>.</summary>
    public static CheckReport CheckDirectory(string directory, IFileSystem? fileSystem = null, IProgress<double>? progress = null)
    {
        var opened = OpenCore(directory, fileSystem ?? PhysicalFileSystem.Instance, TimeProvider.System, lenient: true, out var problems);
        if (!opened.IsOk)
        {
            var list = problems.Count > 0 ? problems : [new CheckProblem($"pool '{directory}'", opened.Error.Message)];
            return new CheckReport(list, 0, 0, 0);
        }

        using var pool = opened.Value;
        if (problems.Count > 0)
        {
            return new CheckReport(problems, pool._devices.Count, 0, 0);
        }

        return pool.Check(progress);
    }

    /// <summary>Verifies every invariant of the open pool: maps, reference counts, free space and checksums.</summary>
    public CheckReport Check(IProgress<double>? progress = null)
    {
        // No commit may be half-way through writing pages while they are compared with the disk, and no write
        // half-way between a block's bytes and its checksums (the data path holds the pool lock shared).
        _commitGate.Wait();
        _rw.EnterWriteLock();
        try
        {
            ThrowIfDisposed();
            var problems = new List<CheckProblem>();
            var pageRef = new int[_pages.HighWater];
            var blockRef = new int[_blocks.HighWater];
            var blockSums = new Dictionary<uint, (byte[] Sums, string Owner, long Block)>();
            long pagesVerified = 0;

            if (_deviceRoot != 0)
            {
                CountTree(_deviceRoot, _deviceDepth - 1, map: false, pageRef, blockRef, null, "device table", problems);
            }

            foreach (var d in _devices.All.OrderBy(d => d.Id))
            {
                if (d.Root != 0)
                {
                    CountTree(d.Root, d.Depth - 1, map: true, pageRef, blockRef, blockSums, $"{Describe(d)} (id {d.Id})", problems);
                }
            }

            for (uint id = 2; id < _pages.HighWater; id++)
            {
                int expected = pageRef[id];
                int held = _pages.References(id);
                if (expected != held)
                {
                    problems.Add(new CheckProblem($"metadata page {id}", $"reference count is {held} but {expected} tree pointer(s) reach it"));
                }

                if (expected > 0 && !_pages.IsFresh(id))
                {
                    pagesVerified++;
                    VerifyCommittedPage(id, problems);
                }
            }

            long free = 0;
            for (uint p = 0; p < _blocks.HighWater; p++)
            {
                int held = _blocks.References(p);
                if (blockRef[p] != held)
                {
                    problems.Add(new CheckProblem($"physical block {p}", $"reference count is {held} but {blockRef[p]} map entries reference it"));
                }

                if (_blocks.Phase(p) == BlockPhase.Free)
                {
                    free++;
                }
            }

            if (free != _blocks.FreeBelowHighWater)
            {
                problems.Add(new CheckProblem("free space", $"{free} data blocks are free but the allocator counts {_blocks.FreeBelowHighWater}"));
            }

            foreach (uint id in _pages.FreePages)
            {
                if (pageRef[id] != 0)
                {
                    problems.Add(new CheckProblem("free space", $"metadata page {id} is on the free list but in use"));
                }
            }

            long verified = 0;
            var buffer = new byte[_blockSize];
            foreach (var (p, entry) in blockSums.OrderBy(kv => kv.Key))
            {
                VerifyBlock(p, entry.Sums, entry.Owner, entry.Block, buffer, problems);
                verified++;
                if (verified % 256 == 0)
                {
                    progress?.Report((double)verified / blockSums.Count);
                }
            }

            progress?.Report(1);
            return new CheckReport(problems, _devices.Count, pagesVerified, verified);
        }
        finally
        {
            _rw.ExitWriteLock();
            _commitGate.Release();
        }
    }

    private void CountTree(uint id, int level, bool map, int[] pageRef, int[] blockRef, Dictionary<uint, (byte[] Sums, string Owner, long Block)>? sums, string subject, List<CheckProblem> problems, long start = 0)
    {
        if (id < 2 || !_pages.IsLoaded(id))
        {
            problems.Add(new CheckProblem(subject, $"pointer to missing metadata page {id}"));
            return;
        }

        if (pageRef[id]++ > 0)
        {
            return;
        }

        var page = _pages[id];
        var (interior, leafMagic) = MapTree.Magics(map);
        if (Layout.Magic(page) != (level == 0 ? leafMagic : interior) || Layout.Level(page) != level || Layout.PageId(page) != id)
        {
            problems.Add(new CheckProblem(subject, $"metadata page {id} is not the level-{level} page its parent expects"));
            return;
        }

        if (level > 0)
        {
            long covered = (map ? _tree.MapGeometry : _tree.DeviceGeometry).Covered(level - 1);
            for (int ci = 0; ci < Layout.InteriorFanout; ci++)
            {
                uint child = _tree.GetU32(id, ci);
                if (child != 0)
                {
                    CountTree(child, level - 1, map, pageRef, blockRef, sums, subject, problems, start + (ci * covered));
                }
            }

            return;
        }

        if (!map)
        {
            return;
        }

        for (int i = 0; i < _tree.MapGeometry.LeafFanout; i++)
        {
            uint p = _tree.LeafBlock(id, i);
            if (p == NoBlock)
            {
                continue;
            }

            if (p >= _blocks.HighWater)
            {
                problems.Add(new CheckProblem(subject, $"block {start + i} maps to physical block {p}, beyond the data high-water mark"));
                continue;
            }

            blockRef[p]++;
            var entrySums = _tree.LeafSums(id, i);
            if (sums!.TryGetValue(p, out var first))
            {
                if (!entrySums.SequenceEqual(first.Sums))
                {
                    problems.Add(new CheckProblem(subject, $"block {start + i} shares physical block {p} with {first.Owner} but their checksums differ"));
                }
            }
            else
            {
                sums[p] = (entrySums.ToArray(), subject, start + i);
            }
        }
    }

    private void VerifyCommittedPage(uint id, List<CheckProblem> problems)
    {
        var disk = new byte[Layout.PageSize];
        try
        {
            _meta.Read((long)id * Layout.PageSize, disk);
        }
        catch (IOException ex)
        {
            problems.Add(new CheckProblem($"metadata page {id}", $"cannot be read: {ex.Message}"));
            return;
        }

        if (!Layout.PageChecksumOk(disk))
        {
            problems.Add(new CheckProblem($"metadata page {id}", "failed its checksum on disk"));
        }
        else if (!disk.AsSpan().SequenceEqual(_pages[id]))
        {
            problems.Add(new CheckProblem($"metadata page {id}", "differs on disk from the committed copy in memory"));
        }
    }

    private void VerifyBlock(uint p, byte[] sums, string owner, long block, byte[] buffer, List<CheckProblem> problems)
    {
        try
        {
            _data.Read((long)p * _blockSize, buffer);
            _overlay.Merge(p, 0, buffer);
        }
        catch (IOException ex)
        {
            problems.Add(new CheckProblem(owner, $"block {block} (physical block {p}) cannot be read: {ex.Message}"));
            return;
        }

        for (int s = 0; s < _sectorsPerBlock; s++)
        {
            if (Layout.Checksum(buffer.AsSpan(s * Layout.SectorSize, Layout.SectorSize)) != BinaryPrimitives.ReadUInt32LittleEndian(sums.AsSpan(s * 4)))
            {
                problems.Add(new CheckProblem(owner, $"block {block} (physical block {p}), sector {s} at byte offset {(block * _blockSize) + ((long)s * Layout.SectorSize)} failed its checksum"));
            }
        }
    }
}
