using System.Buffers.Binary;
using Dolly.Storage.Engine;

namespace Dolly.Storage.Tests;

/// <summary>
/// In-place overwrites of committed blocks that one device alone references: they allocate nothing, a flush of only
/// such writes is one journal sync, shared blocks keep copy-on-write, and power loss at any I/O call of the
/// journal's flush or of the commit that retires it leaves the old or the new content.
/// </summary>
public sealed class InPlaceOverwriteTests
{
    private const string Dir = "/pool";
    private const int Block = 65536;

    private static (CrashFileSystem Fs, Pool Pool, BlockDevice Dev) NewVolumeWithCommittedData(long journal = 1 << 20)
    {
        var fs = new CrashFileSystem();
        var pool = Pool.Create(Dir, new PoolCreateOptions { BlockSize = Block, JournalSize = journal }, fs).Value;
        pool.CreateVolume("v", 16 * Block).ThrowIfFailed();
        var dev = pool.OpenDevice("v").Value;
        dev.Write(0, Support.Pattern(8 * Block, 1)).ThrowIfFailed();
        pool.Flush().ThrowIfFailed();
        return (fs, pool, dev);
    }

    private static int Syncs(CrashFileSystem fs, string file) =>
        fs.Log.Count(e => e.What == "sync" && e.Path.EndsWith(file, StringComparison.Ordinal));

    [Fact]
    public void PartialOverwrite_OfUnsharedCommittedBlock_AllocatesNothingAndFlushIsOneJournalSync()
    {
        var (fs, pool, dev) = NewVolumeWithCommittedData();
        long used = pool.GetInfo().DataBlocksUsed;
        fs.LogCalls = true;
        var expected = Support.Pattern(8 * Block, 1);
        for (int i = 0; i < 20; i++)
        {
            var data = Support.Pattern(4096, 100 + i);
            long at = ((i * 7) % 8 * Block) + (i % 16 * 4096);
            dev.Write(at, data).ThrowIfFailed();
            data.CopyTo(expected, at);
            fs.Log.Clear();
            pool.Flush().ThrowIfFailed();
            Assert.Equal(1, Syncs(fs, Layout.JournalFile));
            Assert.Equal(0, Syncs(fs, Layout.DataFile));
            Assert.Equal(0, Syncs(fs, Layout.MetaFile));
        }

        Assert.Equal(used, pool.GetInfo().DataBlocksUsed);
        Assert.Equal(expected, Support.ReadAll(pool, "v").AsSpan(0, 8 * Block).ToArray());
        Support.AssertClean(pool.Check());
        pool.Dispose();
        var reopened = Pool.Open(Dir, fs).Value;
        Assert.Equal(expected, Support.ReadAll(reopened, "v").AsSpan(0, 8 * Block).ToArray());
        Support.AssertClean(reopened.Check());
        reopened.Dispose();
    }

    [Fact]
    public void SharedThenUnsharedThenShared_CopyOnWriteOnlyWhileShared()
    {
        var (_, pool, dev) = NewVolumeWithCommittedData();
        var model = Support.Pattern(8 * Block, 1);
        long used = pool.GetInfo().DataBlocksUsed;

        pool.CreateSnapshot("v", "s1").ThrowIfFailed();
        var snapContent = (byte[])model.Clone();
        Write(dev, model, 10_000, 5000, 2);
        Assert.Equal(used + 1, pool.GetInfo().DataBlocksUsed); // shared: the block was copied
        pool.Flush().ThrowIfFailed();

        pool.Delete("s1").ThrowIfFailed();
        long afterDelete = pool.GetInfo().DataBlocksUsed;
        Write(dev, model, 3 * Block, 6000, 3); // unshared again (the snapshot's copy of block 3 is gone)
        pool.Flush().ThrowIfFailed();
        Assert.Equal(afterDelete, pool.GetInfo().DataBlocksUsed);

        pool.CreateSnapshot("v", "s2").ThrowIfFailed();
        var snap2 = (byte[])model.Clone();
        Write(dev, model, (3 * Block) + 100, 100, 4); // shared again: copied
        Assert.Equal(afterDelete + 1, pool.GetInfo().DataBlocksUsed);
        pool.Flush().ThrowIfFailed();

        Assert.Equal(model, Support.ReadAll(pool, "v").AsSpan(0, 8 * Block).ToArray());
        Assert.Equal(snap2, Support.ReadAll(pool, "s2").AsSpan(0, 8 * Block).ToArray());
        Assert.NotEqual(snapContent, snap2);
        Support.AssertClean(pool.Check());
        pool.Dispose();
    }

    [Fact]
    public void JournalFlushedThenCrash_ReplayBringsTheOverwriteBack_UnflushedOneIsOld()
    {
        var (fs, pool, dev) = NewVolumeWithCommittedData();
        var model = Support.Pattern(8 * Block, 1);
        Write(dev, model, 5000, 3000, 2);
        pool.Flush().ThrowIfFailed();
        var flushed = (byte[])model.Clone();
        Write(dev, model, 2 * Block, 9000, 3); // not flushed
        pool.Abandon();

        for (int variant = 0; variant < 6; variant++)
        {
            var rebooted = fs.Fork().Reboot(new Random(variant));
            Support.AssertClean(Pool.CheckDirectory(Dir, rebooted), $"variant {variant}, check before open:");
            var opened = Pool.Open(Dir, rebooted).Value;
            Assert.Equal(flushed, Support.ReadAll(opened, "v").AsSpan(0, 8 * Block).ToArray());
            Support.AssertClean(opened.Check(), $"variant {variant}:");
            opened.Dispose();
        }
    }

    [Fact]
    public void ManyFlushes_JournalWrapsAndIsRetiredByCommits_CrashesKeepAFlushedState()
    {
        var (fs, pool, dev) = NewVolumeWithCommittedData(journal: 128 << 10);
        var model = Support.Pattern(8 * Block, 1);
        var sinceFlush = new List<byte[]> { (byte[])model.Clone() };
        var rng = new Random(Support.Seed(11));
        for (int i = 0; i < 400; i++)
        {
            int len = rng.Next(1, 3 * 4096);
            long at = rng.NextInt64(0, (8 * Block) - len);
            Write(dev, model, at, len, 1000 + i);
            sinceFlush.Add((byte[])model.Clone());
            if (rng.Next(3) == 0)
            {
                pool.Flush().ThrowIfFailed();
                sinceFlush = [(byte[])model.Clone()];
            }

            if (i % 40 == 39)
            {
                // Power loss: what a flush acknowledged survives; an overwrite the engine flushed on its own (its
                // overlay was full) may survive too, so any state since the last acknowledged flush is allowed.
                pool.Abandon();
                fs = fs.Reboot(rng);
                var reopened = Pool.Open(Dir, fs);
                Assert.True(reopened.IsOk, reopened.Error?.Message);
                pool = reopened.Value;
                dev = pool.OpenDevice("v").Value;
                var now = Support.ReadAll(pool, "v").AsSpan(0, 8 * Block).ToArray();
                Assert.True(sinceFlush.Any(m => m.AsSpan().SequenceEqual(now)), $"round {i}: the volume holds no state since the last flush");
                Support.AssertClean(pool.Check(), $"round {i}:");
                model = now;
                sinceFlush = [(byte[])model.Clone()];
            }
        }

        pool.Flush().ThrowIfFailed();
        pool.Dispose();
        var final = Pool.Open(Dir, fs).Value;
        Assert.Equal(model, Support.ReadAll(final, "v").AsSpan(0, 8 * Block).ToArray());
        final.Dispose();
    }

    [Fact]
    public void PowerLossAtEveryCall_OfJournalFlushAndRetiringCommit_OldOrNewContent()
    {
        var (setup, pool, dev) = NewVolumeWithCommittedData(journal: 128 << 10);
        var before = Support.Pattern(8 * Block, 1);
        pool.Dispose();
        var afterFirst = (byte[])before.Clone();
        Support.Pattern(6000, 2).CopyTo(afterFirst, Block + 1000);
        var afterSecond = (byte[])afterFirst.Clone();
        Support.Pattern(5000, 3).CopyTo(afterSecond, (4 * Block) + 70);

        // Count the calls of: open, overwrite + flush (journal only), a second overwrite, a snapshot (full commits).
        var dry = setup.Fork();
        long start = dry.IoCalls;
        Steps(Pool.Open(Dir, dry).Value).Dispose();
        long calls = dry.IoCalls - start;
        var rng = new Random(Support.Seed(13));
        for (long k = 1; k <= calls; k++)
        {
            var fs = setup.Fork();
            fs.CrashAfter = fs.IoCalls + k;
            int acknowledged = 0;
            try
            {
                var p = Pool.Open(Dir, fs);
                if (p.IsOk)
                {
                    Steps(p.Value, () => acknowledged++).Abandon();
                }
            }
            catch (IOException) when (fs.Crashed)
            {
            }
            catch (StorageException) when (fs.Crashed)
            {
            }

            fs.PowerOff();
            var rebooted = fs.Reboot(rng);
            string context = $"crash after call {k} of {calls}, {acknowledged} flush(es) acknowledged";
            Support.AssertClean(Pool.CheckDirectory(Dir, rebooted), $"{context}:");
            var opened = Pool.Open(Dir, rebooted);
            Assert.True(opened.IsOk, $"{context}: {opened.Error?.Message}");
            var content = Support.ReadAll(opened.Value, "v").AsSpan(0, 8 * Block).ToArray();
            var allowed = new[] { before, afterFirst, afterSecond }.Skip(acknowledged).ToList();
            Assert.True(allowed.Any(a => a.AsSpan().SequenceEqual(content)), $"{context}: the volume holds none of the allowed states");
            Support.AssertClean(opened.Value.Check(), $"{context}, after open:");
            opened.Value.Dispose();
        }

        static Pool Steps(Pool p, Action? acknowledged = null)
        {
            var d = p.OpenDevice("v").Value;
            d.Write(Block + 1000, Support.Pattern(6000, 2)).ThrowIfFailed();
            if (p.Flush().IsOk)
            {
                acknowledged?.Invoke();
            }
            else
            {
                return p;
            }

            d.Write((4 * Block) + 70, Support.Pattern(5000, 3)).ThrowIfFailed();
            if (p.CreateSnapshot("v", "s").IsOk)
            {
                acknowledged?.Invoke();
            }

            return p;
        }
    }

    [Fact]
    public void PartialWrite_MergingWithACorruptSector_IsRefusedAndChangesNothing()
    {
        var (fs, pool, dev) = NewVolumeWithCommittedData();
        pool.Dispose();

        // Corrupt sector 2 of logical block 1 (physical block 1: the first write laid blocks out in order).
        fs.CorruptDurable($"{Dir}/{Layout.DataFile}", Block + (2 * 4096) + 10, new byte[] { 0xFF, 0xFE });
        pool = Pool.Open(Dir, fs).Value;
        dev = pool.OpenDevice("v").Value;
        var r = dev.Write(Block + (2 * 4096) + 100, Support.Pattern(50, 9));
        Support.AssertError(r.Error, StorageErrorCode.Corrupt, "'v'", "sector 2");
        var buf = new byte[4096];
        Assert.True(dev.Read(Block + (3 * 4096), buf).IsOk);
        Assert.Equal(Support.Pattern(8 * Block, 1).AsSpan(Block + (3 * 4096), 4096).ToArray(), buf);
        Support.AssertError(dev.Read(Block + (2 * 4096), buf).Error, StorageErrorCode.Corrupt, "'v'");
        pool.Dispose();
    }

    [Fact]
    public void VersionOnePool_IsMigratedAtOpen_AndAnUnknownVersionIsRefusedNamingIt()
    {
        var (fs, pool, _) = NewVolumeWithCommittedData();
        pool.Dispose();
        var content = Support.Pattern(8 * Block, 1);

        // Turn it into what version 1 wrote: no journal fields, no journal file.
        RewriteSuperblocks(fs, sb => sb with { Version = 1, JournalStart = 0, JournalStartSeq = 0, JournalPages = 0 });
        var migrated = Pool.Open(Dir, fs);
        Assert.True(migrated.IsOk, migrated.Error?.Message);
        Assert.Equal(content, Support.ReadAll(migrated.Value, "v").AsSpan(0, 8 * Block).ToArray());
        migrated.Value.Dispose();
        var newest = ReadSuperblocks(fs).MaxBy(s => s.Generation)!;
        Assert.Equal(Layout.FormatVersion, newest.Version);
        Assert.True(newest.JournalPages > 0);

        RewriteSuperblocks(fs, sb => sb with { Version = 3 });
        var refused = Pool.Open(Dir, fs);
        Support.AssertError(refused.Error, StorageErrorCode.NotAPool, "version 3");
    }

    private static void Write(BlockDevice dev, byte[] model, long at, int length, int seed)
    {
        var data = Support.Pattern(length, seed);
        dev.Write(at, data).ThrowIfFailed();
        data.CopyTo(model, at);
    }

    private static List<Superblock> ReadSuperblocks(CrashFileSystem fs)
    {
        var image = fs.DurableImage($"{Dir}/{Layout.MetaFile}");
        var list = new List<Superblock>();
        for (int slot = 0; slot < 2; slot++)
        {
            if (Superblock.Parse(image.AsSpan(slot * Layout.PageSize, Layout.PageSize), out _, out _) is { } sb)
            {
                list.Add(sb);
            }
        }

        return list;
    }

    private static void RewriteSuperblocks(CrashFileSystem fs, Func<Superblock, Superblock> change)
    {
        var image = fs.DurableImage($"{Dir}/{Layout.MetaFile}");
        for (int slot = 0; slot < 2; slot++)
        {
            var page = image.AsSpan(slot * Layout.PageSize, Layout.PageSize);
            if (Superblock.Parse(page, out _, out _) is { } sb)
            {
                var changed = change(sb);
                var buffer = new byte[Layout.PageSize];
                changed.WriteTo(buffer);
                BinaryPrimitives.WriteUInt32LittleEndian(buffer.AsSpan(12), (uint)changed.Version);
                Layout.SealPage(buffer);
                fs.CorruptDurable($"{Dir}/{Layout.MetaFile}", slot * Layout.PageSize, buffer);
            }
        }
    }
}
