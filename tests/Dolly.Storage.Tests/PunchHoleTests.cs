using Dolly.Storage.IO;

namespace Dolly.Storage.Tests;

/// <summary>
/// A punched range must read as zeros: the engine hands a punched block out again and writes only the sectors a
/// client writes. Where the file system cannot punch, zeros are written instead.
/// </summary>
public sealed class PunchHoleTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("dolly-punch-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    public static TheoryData<long, long> Ranges() => new()
    {
        { 0, 4096 },
        { 4096, 3 * 4096 },
        { 512, 1000 },
        { 65536, (2 << 20) + 4096 }, // more than one piece of the zero writer
    };

    [Theory]
    [MemberData(nameof(Ranges))]
    public void PunchHole_RangeReadsZeros_RestUntouched(long offset, long length) =>
        Check(offset, length, (fs, path) =>
        {
            using var file = fs.Open(path, create: false);
            file.PunchHole(offset, length);
        });

    [Theory]
    [MemberData(nameof(Ranges))]
    public void ZeroFallback_RangeReadsZeros_RestUntouched(long offset, long length) =>
        Check(offset, length, (_, path) =>
        {
            using var handle = File.OpenHandle(path, FileMode.Open, FileAccess.ReadWrite);
            PhysicalFileSystem.WriteZeros(handle, offset, length);
        });

    private void Check(long offset, long length, Action<PhysicalFileSystem, string> zero)
    {
        string path = Path.Combine(_dir, "data");
        var before = new byte[4 << 20];
        new Random(7).NextBytes(before);
        File.WriteAllBytes(path, before);

        zero(new PhysicalFileSystem(), path);

        var after = File.ReadAllBytes(path);
        Assert.Equal(before.Length, after.Length);
        Assert.All(after.AsSpan((int)offset, (int)length).ToArray(), b => Assert.Equal(0, b));
        Assert.True(before.AsSpan(0, (int)offset).SequenceEqual(after.AsSpan(0, (int)offset)), "bytes before the range changed");
        int end = (int)(offset + length);
        Assert.True(before.AsSpan(end).SequenceEqual(after.AsSpan(end)), "bytes after the range changed");
    }
}
