using Dolly.Storage.CrashWorker;

namespace Dolly.Storage.Tests;

/// <summary>
/// Every error a user can provoke: the code is right, the message names the object, and nothing changed.
/// </summary>
public sealed class ErrorPathTests : IDisposable
{
    private readonly TempDir _tmp = new();
    private readonly string _dir;
    private readonly Pool _pool;
    private readonly ReferenceModel _before;

    public ErrorPathTests()
    {
        _dir = _tmp.Sub("pool");
        _pool = Pool.Create(_dir, new PoolCreateOptions { BlockSize = 16384 }).Value;
        _pool.CreateVolume("vol", 1 << 20).ThrowIfFailed();
        _pool.OpenDevice("vol").Value.Write(1000, Support.Pattern(100_000, 1)).ThrowIfFailed();
        _pool.CreateSnapshot("vol", "snap").ThrowIfFailed();
        _pool.CreateVolume("other", 256 * 1024).ThrowIfFailed();
        _pool.OpenDevice("other").Value.Write(0, Support.Pattern(5000, 2)).ThrowIfFailed();
        _pool.CreateSnapshot("other", "other-snap").ThrowIfFailed();
        _before = ReferenceModel.FromPool(_pool);
    }

    public void Dispose()
    {
        _pool.Dispose();
        _tmp.Dispose();
    }

    private void AssertUnchanged()
    {
        Assert.Null(_before.Difference(_pool));
        Support.AssertClean(_pool.Check());
    }

    public static TheoryData<string> BadNames() =>
    [
        "../x", "a/b", "/abs", "Upper", "UPPER", "a_b", "-lead", "trail-", "a..b", ".dot", "dot.", "sp ace", "tab\t", "nul\0x", "ünï", new string('a', 254),
    ];

    [Theory]
    [MemberData(nameof(BadNames))]
    public void CreateVolume_InvalidName_InvalidNameNamingIt(string name)
    {
        var error = _pool.CreateVolume(name, 4096).Error;
        Support.AssertError(error, StorageErrorCode.InvalidName, name.Length > 40 ? name[..40] : Printable(name));
        AssertUnchanged();
    }

    [Theory]
    [MemberData(nameof(BadNames))]
    public void SnapshotCloneAndLookups_InvalidName_InvalidName(string name)
    {
        Assert.Equal(StorageErrorCode.InvalidName, _pool.CreateSnapshot("vol", name).Error?.Code);
        Assert.Equal(StorageErrorCode.InvalidName, _pool.Clone("snap", name).Error?.Code);
        Assert.Equal(StorageErrorCode.InvalidName, _pool.OpenDevice(name).Error?.Code);
        Assert.Equal(StorageErrorCode.InvalidName, _pool.Delete(name).Error?.Code);
        Assert.Equal(StorageErrorCode.InvalidName, _pool.GetSpace(name).Error?.Code);
        Assert.Equal(StorageErrorCode.InvalidName, _pool.Resize(name, 1 << 21).Error?.Code);
        AssertUnchanged();
    }

    [Fact]
    public void CreateVolume_EmptyName_InvalidName()
    {
        Assert.Equal(StorageErrorCode.InvalidName, _pool.CreateVolume("", 4096).Error?.Code);
        AssertUnchanged();
    }

    [Fact]
    public void CreateVolume_MaximumLengthName_Accepted()
    {
        string name = string.Join(".", Enumerable.Repeat(new string('a', 63), 4))[..253];
        Assert.True(_pool.CreateVolume(name, 4096).IsOk);
        _pool.Dispose();
        using var reopened = Pool.Open(_dir).Value;
        Assert.Contains(reopened.ListDevices(), d => d.Name == name);
    }

    [Theory]
    [InlineData("vol")]
    [InlineData("snap")]
    [InlineData("other-snap")]
    public void CreateSnapshotCloneVolume_NameTakenByAnyDevice_AlreadyExistsNamingIt(string taken)
    {
        Support.AssertError(_pool.CreateVolume(taken, 4096).Error, StorageErrorCode.AlreadyExists, $"'{taken}'");
        Support.AssertError(_pool.CreateSnapshot("vol", taken).Error, StorageErrorCode.AlreadyExists, $"'{taken}'");
        Support.AssertError(_pool.Clone("snap", taken).Error, StorageErrorCode.AlreadyExists, $"'{taken}'");
        AssertUnchanged();
    }

    [Theory]
    [InlineData(0)]
    [InlineData(-4096)]
    [InlineData(4097)]
    [InlineData(100)]
    [InlineData((64L << 40) + 4096)]
    [InlineData(long.MaxValue)]
    public void CreateVolume_BadSize_InvalidArgumentNamingVolume(long size)
    {
        Support.AssertError(_pool.CreateVolume("newvol", size).Error, StorageErrorCode.InvalidArgument, "'newvol'");
        Support.AssertError(_pool.Clone("snap", "newclone", size).Error, StorageErrorCode.InvalidArgument, "'newclone'");
        Support.AssertError(_pool.Resize("vol", size).Error, StorageErrorCode.InvalidArgument, "'vol'");
        AssertUnchanged();
    }

    [Fact]
    public void Resize_Shrink_RefusedNamingVolume()
    {
        Support.AssertError(_pool.Resize("vol", (1 << 20) - 4096).Error, StorageErrorCode.InvalidArgument, "'vol'", "shrink");
        Support.AssertError(_pool.Clone("vol", "smaller", 4096).Error, StorageErrorCode.InvalidArgument, "'smaller'");
        AssertUnchanged();
    }

    [Fact]
    public void SnapshotOperations_ReadOnlyOrWrongKind_Refused()
    {
        var snap = _pool.OpenDevice("snap").Value;
        Support.AssertError(snap.Write(0, new byte[10]).Error, StorageErrorCode.ReadOnly, "'snap'");
        Support.AssertError(snap.Trim(0, 4096).Error, StorageErrorCode.ReadOnly, "'snap'");
        Support.AssertError(snap.WriteZeroes(0, 4096, mayUnmap: false).Error, StorageErrorCode.ReadOnly, "'snap'");
        Support.AssertError(_pool.Resize("snap", 2 << 20).Error, StorageErrorCode.ReadOnly, "'snap'");
        Support.AssertError(_pool.Revert("snap", "snap").Error, StorageErrorCode.ReadOnly, "'snap'");
        Support.AssertError(_pool.CreateSnapshot("snap", "snap2").Error, StorageErrorCode.InvalidArgument, "'snap'");
        Support.AssertError(_pool.Revert("vol", "other").Error, StorageErrorCode.InvalidArgument, "'other'");
        AssertUnchanged();
    }

    [Fact]
    public void Revert_ToAnotherVolumesSnapshot_RefusedNamingBoth()
    {
        Support.AssertError(_pool.Revert("vol", "other-snap").Error, StorageErrorCode.InvalidArgument, "'other-snap'", "'vol'");

        // Same name, different volume: a snapshot of a deleted volume does not belong to its namesake.
        _pool.Delete("other").ThrowIfFailed();
        _pool.CreateVolume("other", 256 * 1024).ThrowIfFailed();
        Support.AssertError(_pool.Revert("other", "other-snap").Error, StorageErrorCode.InvalidArgument, "'other-snap'");
    }

    [Fact]
    public void ChangedRanges_AcrossLineages_RefusedNamingBoth()
    {
        Support.AssertError(_pool.GetChangedRanges("snap", "other").Error, StorageErrorCode.InvalidArgument, "'snap'", "'other'");
        Support.AssertError(_pool.OpenDevice("other").Value.GetChangedRanges("snap", 0, 4096).Error, StorageErrorCode.InvalidArgument, "'snap'", "'other'");

        // A clone of another lineage's snapshot is of that lineage, not of its own name.
        _pool.Clone("other-snap", "c").ThrowIfFailed();
        Assert.True(_pool.GetChangedRanges("other-snap", "c").IsOk);
        Assert.Equal(StorageErrorCode.InvalidArgument, _pool.GetChangedRanges("snap", "c").Error?.Code);
    }

    [Theory]
    [InlineData(-1, 10)]
    [InlineData((1 << 20) - 10, 11)]
    [InlineData(1 << 20, 1)]
    [InlineData((1 << 20) + 4096, 0)]
    [InlineData(0, (1 << 20) + 1)]
    public void Io_OutOfRange_InvalidArgumentNamingDevice(long offset, int length)
    {
        var vol = _pool.OpenDevice("vol").Value;
        var snap = _pool.OpenDevice("snap").Value;
        Support.AssertError(vol.Write(offset, new byte[length]).Error, StorageErrorCode.InvalidArgument, "'vol'");
        Support.AssertError(vol.Read(offset, new byte[length]).Error, StorageErrorCode.InvalidArgument, "'vol'");
        Support.AssertError(snap.Read(offset, new byte[length]).Error, StorageErrorCode.InvalidArgument, "'snap'");
        Support.AssertError(vol.Trim(offset, length).Error, StorageErrorCode.InvalidArgument, "'vol'");
        Support.AssertError(vol.WriteZeroes(offset, length, mayUnmap: false).Error, StorageErrorCode.InvalidArgument, "'vol'");
        AssertUnchanged();
    }

    [Fact]
    public void Io_EmptyAtEnd_Succeeds()
    {
        var vol = _pool.OpenDevice("vol").Value;
        Assert.True(vol.Write(1 << 20, []).IsOk);
        Assert.True(vol.Read(1 << 20, []).IsOk);
        AssertUnchanged();
    }

    [Fact]
    public void UnknownName_NotFoundNamingIt()
    {
        Support.AssertError(_pool.OpenDevice("nope").Error, StorageErrorCode.NotFound, "'nope'");
        Support.AssertError(_pool.GetDevice("nope").Error, StorageErrorCode.NotFound, "'nope'");
        Support.AssertError(_pool.Delete("nope").Error, StorageErrorCode.NotFound, "'nope'");
        Support.AssertError(_pool.GetSpace("nope").Error, StorageErrorCode.NotFound, "'nope'");
        Support.AssertError(_pool.Resize("nope", 1 << 21).Error, StorageErrorCode.NotFound, "'nope'");
        Support.AssertError(_pool.CreateSnapshot("nope", "s2").Error, StorageErrorCode.NotFound, "'nope'");
        Support.AssertError(_pool.Clone("nope", "c2").Error, StorageErrorCode.NotFound, "'nope'");
        Support.AssertError(_pool.Revert("vol", "nope").Error, StorageErrorCode.NotFound, "'nope'");
        Support.AssertError(_pool.Revert("nope", "snap").Error, StorageErrorCode.NotFound, "'nope'");
        Support.AssertError(_pool.GetChangedRanges("nope", "vol").Error, StorageErrorCode.NotFound, "'nope'");
        Support.AssertError(_pool.GetAllocatedRanges("nope").Error, StorageErrorCode.NotFound, "'nope'");
        Support.AssertError(_pool.OpenDevice("vol").Value.GetChangedRanges("nope", 0, 4096).Error, StorageErrorCode.NotFound, "'nope'");
        AssertUnchanged();
    }

    [Fact]
    public void DeletedDeviceHandle_NotFoundNamingIt_EvenAfterNameIsReused()
    {
        var handle = _pool.OpenDevice("other").Value;
        _pool.Delete("other").ThrowIfFailed();
        Support.AssertError(handle.Read(0, new byte[10]).Error, StorageErrorCode.NotFound, "'other'");
        Support.AssertError(handle.Write(0, new byte[10]).Error, StorageErrorCode.NotFound, "'other'");
        Support.AssertError(handle.Trim(0, 4096).Error, StorageErrorCode.NotFound, "'other'");
        Support.AssertError(handle.GetAllocatedRanges(0, 4096).Error, StorageErrorCode.NotFound, "'other'");
        Assert.Equal(-1, handle.Size);

        _pool.CreateVolume("other", 256 * 1024).ThrowIfFailed();
        Support.AssertError(handle.Write(0, new byte[10]).Error, StorageErrorCode.NotFound, "'other'");
        Assert.Equal(new byte[10], Support.ReadAll(_pool, "other")[..10]);

        // The snapshot of the deleted volume lives on.
        Assert.Equal(Support.Pattern(5000, 2), Support.ReadAll(_pool, "other-snap")[..5000]);
    }

    [Fact]
    public void Open_PoolHeldByAnotherPool_InUseNamingDirectory_ThenOpensAfterClose()
    {
        var second = Pool.Open(_dir);
        Support.AssertError(second.Error, StorageErrorCode.InUse, _dir);
        var create = Pool.Create(_dir).Error;
        Assert.True(create?.Code is StorageErrorCode.AlreadyExists or StorageErrorCode.InUse, create?.Message);
        Assert.Contains(_dir, create!.Message, StringComparison.Ordinal);
        AssertUnchanged();
        _pool.Dispose();
        using var reopened = Pool.Open(_dir).Value;
        Assert.Null(_before.Difference(reopened));
    }

    [Fact]
    public void Open_NotAPool_RefusedNamingDirectory()
    {
        string missing = _tmp.Sub("missing");
        Support.AssertError(Pool.Open(missing).Error, StorageErrorCode.NotFound, missing);

        string empty = _tmp.Sub("empty");
        Directory.CreateDirectory(empty);
        Support.AssertError(Pool.Open(empty).Error, StorageErrorCode.NotAPool, empty);
        Assert.DoesNotContain(Directory.GetFiles(empty), f => !f.EndsWith("pool.lock", StringComparison.Ordinal));

        string foreign = _tmp.Sub("foreign");
        Directory.CreateDirectory(foreign);
        File.WriteAllText(Path.Combine(foreign, "notes.txt"), "hello");
        Support.AssertError(Pool.Open(foreign).Error, StorageErrorCode.NotAPool, foreign);
        Support.AssertError(Pool.Create(foreign).Error, StorageErrorCode.NotAPool, foreign);
        Assert.Equal("hello", File.ReadAllText(Path.Combine(foreign, "notes.txt")));

        string garbage = _tmp.Sub("garbage");
        Directory.CreateDirectory(garbage);
        File.WriteAllBytes(Path.Combine(garbage, "meta.dolly"), Support.Pattern(16384, 3));
        File.WriteAllBytes(Path.Combine(garbage, "data.dolly"), Support.Pattern(16384, 4));
        var opened = Pool.Open(garbage);
        Assert.True(opened.Error?.Code is StorageErrorCode.NotAPool or StorageErrorCode.Corrupt, opened.Error?.Message);
        Assert.Contains(garbage, opened.Error!.Message, StringComparison.Ordinal);
        Assert.False(Pool.CheckDirectory(garbage).IsClean);
        Assert.Equal(Support.Pattern(16384, 3), File.ReadAllBytes(Path.Combine(garbage, "meta.dolly")));

        string file = _tmp.Sub("a-file");
        File.WriteAllText(file, "x");
        Assert.False(Pool.Open(file).IsOk);
    }

    [Fact]
    public void Create_BadBlockSize_InvalidArgument()
    {
        foreach (int bs in new[] { 0, 512, 3000, 4095, 12288, 2 << 20 })
        {
            Assert.Equal(StorageErrorCode.InvalidArgument, Pool.Create(_tmp.Sub($"bs{bs}"), new PoolCreateOptions { BlockSize = bs }).Error?.Code);
        }
    }

    private static string Printable(string s) =>
        string.Concat(s.Select(c => char.IsControl(c) ? $"\\u{(int)c:x4}" : c.ToString()));
}
