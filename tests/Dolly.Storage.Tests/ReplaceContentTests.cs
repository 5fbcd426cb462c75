namespace Dolly.Storage.Tests;

/// <summary>
/// <see cref="Pool.ReplaceContent"/>: a volume gets any snapshot's content in O(1), keeping its identity and size; the
/// refusals change nothing; a power loss during it leaves either the old content or the new one.
/// </summary>
public sealed class ReplaceContentTests : IDisposable
{
    private const int Bs = 4096;
    private readonly TempDir _tmp = new();

    public void Dispose() => _tmp.Dispose();

    /// <summary>
    /// A pool with volume "v" (8 blocks, pattern 1, snapshot "v-snap" of it, then pattern 2 over its first 2 blocks),
    /// a clone "c" of "v-snap" with snapshot "c-snap", and an unrelated volume "f" (4 blocks, pattern 3) with
    /// snapshot "f-snap" and a bigger unrelated "big" with snapshot "big-snap".
    /// </summary>
    private Pool Setup()
    {
        var pool = Pool.Create(_tmp.Sub("pool"), new PoolCreateOptions { BlockSize = Bs }).Value;
        pool.CreateVolume("v", 8 * Bs).ThrowIfFailed();
        pool.OpenDevice("v").Value.Write(0, Support.Pattern(8 * Bs, 1)).ThrowIfFailed();
        pool.CreateSnapshot("v", "v-snap").ThrowIfFailed();
        pool.OpenDevice("v").Value.Write(0, Support.Pattern(2 * Bs, 2)).ThrowIfFailed();
        pool.Clone("v-snap", "c").ThrowIfFailed();
        pool.OpenDevice("c").Value.Write(Bs, Support.Pattern(Bs, 4)).ThrowIfFailed();
        pool.CreateSnapshot("c", "c-snap").ThrowIfFailed();
        pool.CreateVolume("f", 4 * Bs).ThrowIfFailed();
        pool.OpenDevice("f").Value.Write(0, Support.Pattern(4 * Bs, 3)).ThrowIfFailed();
        pool.CreateSnapshot("f", "f-snap").ThrowIfFailed();
        pool.CreateVolume("big", 16 * Bs).ThrowIfFailed();
        pool.CreateSnapshot("big", "big-snap").ThrowIfFailed();
        return pool;
    }

    public static TheoryData<string, bool> Accepted() => new()
    {
        { "v-snap", false }, // its own snapshot: a revert
        { "c-snap", false }, // a snapshot of a clone of it: same lineage
        { "f-snap", true },  // an unrelated snapshot, allowed
        { "v-snap", true },  // allowing foreign snapshots does not forbid own ones
    };

    [Theory]
    [MemberData(nameof(Accepted))]
    public void Accepted_VolumeHoldsTheSnapshotsContent_KeepsIdentityAndSize_OthersUntouched(string snapshot, bool allowForeign)
    {
        using var pool = Setup();
        var before = pool.GetDevice("v").Value;
        var others = new[] { "v-snap", "c", "c-snap", "f", "f-snap" }.ToDictionary(n => n, n => Support.ReadAll(pool, n));
        var handle = pool.OpenDevice("v").Value;

        var replaced = pool.ReplaceContent("v", snapshot, allowForeign);

        Assert.True(replaced.IsOk, replaced.Error?.Message);
        var after = pool.GetDevice("v").Value;
        Assert.Equal((before.Id, before.LineageId, before.Size, DeviceKind.Volume), (after.Id, after.LineageId, after.Size, after.Kind));
        var expected = new byte[8 * Bs];
        others[snapshot].CopyTo(expected, 0);
        Assert.Equal(expected, Support.ReadAll(pool, "v"));

        // An open handle sees the new content; a write to the volume afterwards leaves the snapshot alone.
        handle.Write(3 * Bs, Support.Pattern(Bs, 9)).ThrowIfFailed();
        foreach (var (name, content) in others)
        {
            Assert.Equal(content, Support.ReadAll(pool, name));
        }

        Support.AssertClean(pool.Check());
    }

    public static TheoryData<string, string, bool, StorageErrorCode, string> Refused() => new()
    {
        { "v", "f-snap", false, StorageErrorCode.InvalidArgument, "lineage" },
        { "v", "big-snap", true, StorageErrorCode.InvalidArgument, "grow the volume first" },
        { "f", "v-snap", true, StorageErrorCode.InvalidArgument, "larger than volume 'f'" },
        { "v", "f", true, StorageErrorCode.InvalidArgument, "is a volume, not a snapshot" },
        { "v-snap", "c-snap", true, StorageErrorCode.ReadOnly, "only a volume's content can be replaced" },
        { "v", "nothing", true, StorageErrorCode.NotFound, "nothing" },
        { "nothing", "v-snap", true, StorageErrorCode.NotFound, "nothing" },
    };

    [Theory]
    [MemberData(nameof(Refused))]
    public void Refused_NamesTheProblem_ChangesNothing(string volume, string snapshot, bool allowForeign, StorageErrorCode code, string mention)
    {
        using var pool = Setup();
        var devices = pool.ListDevices();
        var contents = devices.ToDictionary(d => d.Name, d => Support.ReadAll(pool, d.Name));
        ulong generation = pool.GetInfo().Generation;

        var check = pool.CheckReplaceContent(volume, snapshot, allowForeign);
        var replaced = pool.ReplaceContent(volume, snapshot, allowForeign);

        Support.AssertError(check.Error, code, mention);
        Support.AssertError(replaced.Error, code, mention);
        Assert.Equal(devices, pool.ListDevices());
        Assert.All(contents, kv => Assert.Equal(kv.Value, Support.ReadAll(pool, kv.Key)));
        Assert.Equal(generation, pool.GetInfo().Generation);
    }

    [Fact]
    public void IsUnchangedSince_TrueUntilTheVolumeIsWritten_AndAgainAfterItsContentIsReplacedByThatSnapshot()
    {
        using var pool = Setup();
        pool.CreateSnapshot("v", "guard").ThrowIfFailed();
        Assert.True(pool.IsUnchangedSince("v", "guard").Value);
        Assert.False(pool.IsUnchangedSince("v", "v-snap").Value);

        // A write still in memory (not yet committed) counts.
        pool.OpenDevice("v").Value.Write(5 * Bs, Support.Pattern(100, 7)).ThrowIfFailed();
        Assert.False(pool.IsUnchangedSince("v", "guard").Value);

        pool.ReplaceContent("v", "guard", allowForeign: false).ThrowIfFailed();
        Assert.True(pool.IsUnchangedSince("v", "guard").Value);
        Support.AssertError(pool.IsUnchangedSince("v", "gone").Error, StorageErrorCode.NotFound, "gone");
    }

    [Fact]
    public void Replaced_SurvivesReopen_AndFreesTheOldBlocksWhenNothingElseHoldsThem()
    {
        string dir;
        long usedBefore;
        using (var pool = Setup())
        {
            dir = pool.Directory;
            usedBefore = pool.GetInfo().DataBlocksUsed;
            pool.ReplaceContent("v", "f-snap", allowForeign: true).ThrowIfFailed();

            // The 2 blocks "v" wrote after "v-snap" were its own; everything else is shared with a snapshot.
            Assert.Equal(usedBefore - 2, pool.GetInfo().DataBlocksUsed);
        }

        using var reopened = Pool.Open(dir).Value;
        var expected = new byte[8 * Bs];
        Support.Pattern(4 * Bs, 3).CopyTo(expected, 0);
        Assert.Equal(expected, Support.ReadAll(reopened, "v"));
        Support.AssertClean(reopened.Check());
    }

    [Fact]
    public void PowerLossAtEveryCall_LeavesTheOldOrTheNewContent_TheNewOnceAcknowledged()
    {
        const string dir = "/pool";
        var setup = new CrashFileSystem();
        using (var p = Pool.Create(dir, new PoolCreateOptions { BlockSize = Bs }, setup).Value)
        {
            p.CreateVolume("v", 8 * Bs).ThrowIfFailed();
            p.OpenDevice("v").Value.Write(0, Support.Pattern(8 * Bs, 1)).ThrowIfFailed();
            p.CreateVolume("f", 4 * Bs).ThrowIfFailed();
            p.OpenDevice("f").Value.Write(0, Support.Pattern(4 * Bs, 3)).ThrowIfFailed();
            p.CreateSnapshot("f", "f-snap").ThrowIfFailed();
            p.OpenDevice("v").Value.Write(6 * Bs, Support.Pattern(Bs, 2)).ThrowIfFailed();
            p.Flush().ThrowIfFailed();
        }

        var dry = setup.Fork();
        var dryPool = Pool.Open(dir, dry).Value;
        var old = Support.ReadAll(dryPool, "v");
        long opened = dry.IoCalls;
        dryPool.ReplaceContent("v", "f-snap", allowForeign: true).ThrowIfFailed();
        long opCalls = dry.IoCalls - opened;
        var replaced = Support.ReadAll(dryPool, "v");
        dryPool.Dispose();
        Assert.NotEqual(old, replaced);

        var rng = new Random(Support.Seed(11));
        for (long k = 0; k <= opCalls + 1; k++)
        {
            var fs = setup.Fork();
            var p = Pool.Open(dir, fs).Value;
            fs.CrashAfter = fs.IoCalls + k;
            bool acknowledged;
            try
            {
                acknowledged = p.ReplaceContent("v", "f-snap", allowForeign: true).IsOk;
            }
            catch (IOException) when (fs.Crashed)
            {
                acknowledged = false;
            }

            p.Abandon();
            using var after = Pool.Open(dir, fs.Reboot(rng)).Value;
            string context = $"power loss after I/O call {k} of {opCalls}:";
            Support.AssertClean(after.Check(), context);
            var content = Support.ReadAll(after, "v");
            if (acknowledged)
            {
                Assert.True(content.AsSpan().SequenceEqual(replaced), $"{context} the replace was acknowledged but the volume does not hold the snapshot's content");
            }
            else
            {
                Assert.True(content.AsSpan().SequenceEqual(old) || content.AsSpan().SequenceEqual(replaced), $"{context} the volume holds neither its old content nor the snapshot's");
            }

            Assert.Equal(Support.Pattern(4 * Bs, 3), Support.ReadAll(after, "f-snap"));
        }
    }
}
