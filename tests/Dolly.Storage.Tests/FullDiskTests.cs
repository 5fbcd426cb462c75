using System.Diagnostics;

namespace Dolly.Storage.Tests;

/// <summary>
/// A real full disk: an 8 MiB tmpfs mounted by the test (as root). Filling it through the engine ends in NoSpace
/// naming the volume; the pool then opens, checks clean and every flushed write reads back. (The same scenario
/// through <see cref="CrashFileSystem"/> with a capacity limit is in <see cref="PowerLossTests"/>.)
/// </summary>
public sealed class FullDiskTests : IDisposable
{
    private readonly TempDir _tmp = new();
    private readonly string _mount;
    private readonly string? _mountError;

    public FullDiskTests()
    {
        _mount = _tmp.Sub("tmpfs");
        Directory.CreateDirectory(_mount);
        _mountError = Run("mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", _mount);
    }

    public void Dispose()
    {
        if (_mountError is null)
        {
            _ = Run("umount", _mount);
        }

        _tmp.Dispose();
    }

    private static string? Run(string file, params string[] args)
    {
        try
        {
            var psi = new ProcessStartInfo(file) { RedirectStandardError = true, RedirectStandardOutput = true, UseShellExecute = false };
            foreach (var a in args)
            {
                psi.ArgumentList.Add(a);
            }

            using var p = Process.Start(psi)!;
            string err = p.StandardError.ReadToEnd();
            p.StandardOutput.ReadToEnd();
            p.WaitForExit();
            return p.ExitCode == 0 ? null : $"{file} exited with {p.ExitCode}: {err.Trim()}";
        }
        catch (System.ComponentModel.Win32Exception ex)
        {
            return $"{file}: {ex.Message}";
        }
    }

    [Theory]
    [InlineData(65536)]
    [InlineData(4096)]
    public void FillTmpfs_NoSpaceNamesVolume_PoolReopensCleanWithFlushedData(int blockSize)
    {
        Assert.SkipWhen(_mountError is not null, $"cannot mount a tmpfs here (needs root and mount permission): {_mountError}");
        string dir = Path.Combine(_mount, "pool");
        const int Chunk = 100_000;
        int flushed = 0;
        StorageError? failure = null;
        using (var pool = Pool.Create(dir, new PoolCreateOptions { BlockSize = blockSize }).Value)
        {
            pool.CreateVolume("filler", 64L << 20).ThrowIfFailed();
            var dev = pool.OpenDevice("filler").Value;
            for (int i = 0; i < 200; i++)
            {
                var r = dev.Write((long)i * Chunk, Support.Pattern(Chunk, i + 1));
                if (r.IsOk)
                {
                    r = i % 3 == 2 ? pool.Flush() : Result.Ok;
                }

                if (!r.IsOk)
                {
                    failure = r.Error;
                    break;
                }

                if (i % 3 == 2)
                {
                    flushed = i + 1;
                }
            }

            Assert.NotNull(failure);
            Assert.Equal(StorageErrorCode.NoSpace, failure.Code);
            Assert.Contains("no space", failure.Message, StringComparison.OrdinalIgnoreCase);
            Assert.True(failure.Message.Contains("'filler'", StringComparison.Ordinal) || failure.Message.Contains(dir, StringComparison.Ordinal), failure.Message);
            Assert.True(flushed * (long)Chunk > 4 << 20, $"only {flushed} chunks were flushed before the disk filled");

            // The pool keeps answering reads of what was flushed while the disk is full.
            var buf = new byte[Chunk];
            dev.Read(0, buf).ThrowIfFailed();
            Assert.Equal(Support.Pattern(Chunk, 1), buf);
        }

        Support.AssertClean(Pool.CheckDirectory(dir), "after the disk filled:");
        using (var pool = Pool.Open(dir).Value)
        {
            Support.AssertClean(pool.Check());
            var dev = pool.OpenDevice("filler").Value;
            var buf = new byte[Chunk];
            for (int i = 0; i < flushed; i++)
            {
                dev.Read((long)i * Chunk, buf).ThrowIfFailed();
                Assert.True(Support.Pattern(Chunk, i + 1).AsSpan().SequenceEqual(buf), $"flushed chunk {i} does not read back");
            }

            // Deleting returns the space (freed blocks are hole-punched or reused): work can go on.
            pool.Delete("filler").ThrowIfFailed();
            pool.CreateVolume("after", 2 << 20).ThrowIfFailed();
            pool.OpenDevice("after").Value.Write(0, Support.Pattern(2 << 20, 5), fua: true).ThrowIfFailed();
        }

        using (var pool = Pool.Open(dir).Value)
        {
            Assert.Equal(Support.Pattern(2 << 20, 5), Support.ReadAll(pool, "after"));
            Support.AssertClean(pool.Check());
        }
    }
}
