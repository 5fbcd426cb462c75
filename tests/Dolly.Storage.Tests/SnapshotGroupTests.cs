namespace Dolly.Storage.Tests;

public sealed class SnapshotGroupTests
{
    private const string Dir = "/pool";

    private static byte[] Fill(int length, byte value) => Enumerable.Repeat(value, length).ToArray();

    private static Pool NewPool(CrashFileSystem fs)
    {
        var pool = Pool.Create(Dir, new PoolCreateOptions { BlockSize = 16384 }, fs).Value;
        foreach (var (name, value) in new[] { ("a", (byte)1), ("b", (byte)2), ("c", (byte)3) })
        {
            pool.CreateVolume(name, 1 << 20).Value.ToString();
            pool.OpenDevice(name).Value.Write(0, Fill(200_000, value)).ThrowIfFailed();
        }

        pool.Flush().ThrowIfFailed();
        return pool;
    }

    [Fact]
    public void CreateSnapshotGroup_ThreeVolumes_AllHoldTheSameInstant()
    {
        var fs = new CrashFileSystem();
        using var pool = NewPool(fs);
        var group = pool.CreateSnapshotGroup([("a", "a-1"), ("b", "b-1"), ("c", "c-1")]).Value;
        Assert.Equal(["a-1", "b-1", "c-1"], group.Select(g => g.Name));
        Assert.All(group, g => Assert.Equal(DeviceKind.Snapshot, g.Kind));
        Assert.Equal(["a", "b", "c"], group.Select(g => g.SourceName));

        foreach (var name in new[] { "a", "b", "c" })
        {
            pool.OpenDevice(name).Value.Write(0, Fill(200_000, 9)).ThrowIfFailed();
        }

        var buffer = new byte[200_000];
        foreach (var (snap, value) in new[] { ("a-1", (byte)1), ("b-1", (byte)2), ("c-1", (byte)3) })
        {
            pool.OpenDevice(snap).Value.Read(0, buffer).ThrowIfFailed();
            Assert.All(buffer, b => Assert.Equal(value, b));
        }

        Support.AssertClean(pool.Check(), "after a group snapshot:");
    }

    [Theory]
    [InlineData("nope", "n-1", StorageErrorCode.NotFound, "'nope'")]
    [InlineData("a", "Bad_Name", StorageErrorCode.InvalidName, "'Bad_Name'")]
    [InlineData("c", "b", StorageErrorCode.AlreadyExists, "'b'")]
    [InlineData("b", "a-1", StorageErrorCode.InvalidArgument, "'b' appears twice")]
    [InlineData("c", "x-1", StorageErrorCode.AlreadyExists, "'x-1'")]
    public void CreateSnapshotGroup_OneBadMember_CreatesNothing(string volume, string snapshot, StorageErrorCode code, string named)
    {
        var fs = new CrashFileSystem();
        using var pool = NewPool(fs);
        var before = pool.ListDevices().Select(d => d.Name).ToList();
        var members = new List<(string, string)> { ("b", "b-1"), ("a", "x-1") };
        members.Add((volume, snapshot));

        var r = pool.CreateSnapshotGroup(members);
        Assert.False(r.IsOk);
        Assert.Equal(code, r.Error!.Code);
        Assert.Contains(named, r.Error.Message, StringComparison.Ordinal);
        Assert.Equal(before, pool.ListDevices().Select(d => d.Name).ToList());
    }

    [Fact]
    public void CreateSnapshotGroup_OfASnapshotOrEmpty_IsRefused()
    {
        var fs = new CrashFileSystem();
        using var pool = NewPool(fs);
        pool.CreateSnapshot("a", "s").Value.ToString();
        Assert.Equal(StorageErrorCode.InvalidArgument, pool.CreateSnapshotGroup([("s", "s-1")]).Error!.Code);
        Assert.Equal(StorageErrorCode.InvalidArgument, pool.CreateSnapshotGroup([]).Error!.Code);
        Assert.Single(pool.ListDevices(DeviceKind.Snapshot));
    }

    [Fact]
    public void CreateSnapshotGroup_PowerLossAtEveryIoCall_AllOrNone()
    {
        var rng = new Random(7);
        int outcomes = 0;
        for (int k = 0; ; k++)
        {
            var fs = new CrashFileSystem();
            var pool = NewPool(fs);

            // Unflushed writes before the group: the group commits them first, then itself.
            pool.OpenDevice("a").Value.Write(300_000, Fill(50_000, 7)).ThrowIfFailed();
            fs.CrashAfter = fs.IoCalls + k;
            bool finished;
            try
            {
                finished = pool.CreateSnapshotGroup([("a", "a-1"), ("b", "b-1"), ("c", "c-1")]).IsOk && !fs.Crashed;
            }
            catch (Exception ex) when (ex is IOException or StorageException)
            {
                finished = false;
            }

            fs.PowerOff();
            pool.Abandon();
            var rebooted = fs.Reboot(rng);
            Support.AssertClean(Pool.CheckDirectory(Dir, rebooted), $"power loss after {k} I/O calls:");
            using var reopened = Pool.Open(Dir, rebooted).Value;
            var snaps = reopened.ListDevices(DeviceKind.Snapshot).Select(d => d.Name).ToList();
            Assert.True(snaps.Count is 0 or 3, $"power loss after {k} I/O calls left {snaps.Count} of 3 group snapshots: {string.Join(", ", snaps)}");
            outcomes++;
            if (finished)
            {
                Assert.Equal(3, snaps.Count);
                break;
            }

            Assert.True(k < 10_000, "the group snapshot never finished");
        }

        Assert.True(outcomes > 3, $"only {outcomes} crash points were tried");
    }
}
