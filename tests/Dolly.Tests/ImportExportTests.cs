using Dolly.Storage.IO;

namespace Dolly.Tests;

public sealed class ImportExportTests : CliTestBase
{
    [Fact]
    public async Task FileRoundTrip_RandomDataWithHoles_IsExactAndSparse()
    {
        var image = ImageWithHoles((5 << 20) + 12345, seed: 3);
        string input = Path.Combine(Root, "in.raw");
        await File.WriteAllBytesAsync(input, image, TestContext.Current.CancellationToken);

        var imported = await Ok("volume", "import", "disk", input);
        Assert.Contains("into new volume 'disk'", imported.Out, StringComparison.Ordinal);
        Assert.Contains("of zeros skipped", imported.Out, StringComparison.Ordinal);

        // Sized to the file rounded up to 4 KiB; zero blocks were not written.
        var row = (await Ok("volume", "list", "-o", "json")).Json()[0];
        long size = row.GetProperty("size").GetInt64();
        Assert.Equal((image.Length + 4095) / 4096 * 4096, size);
        long nonZeroBlocks = Enumerable.Range(0, (image.Length + 65535) / 65536)
            .Count(b => image.AsSpan(b * 65536, Math.Min(65536, image.Length - (b * 65536))).ContainsAnyExcept((byte)0));
        Assert.Equal(nonZeroBlocks * 65536, row.GetProperty("allocated").GetInt64());

        string output = Path.Combine(Root, "out.raw");
        var exported = await Ok("volume", "export", "disk", output);
        Assert.Contains("left as holes", exported.Out, StringComparison.Ordinal);
        var back = await File.ReadAllBytesAsync(output, TestContext.Current.CancellationToken);
        Assert.Equal(size, back.Length);
        Assert.Equal(image, back[..image.Length]);
        Assert.All(back[image.Length..], b => Assert.Equal(0, b));
        Assert.True(IsSparse(output), "the exported image has holes where the volume is unallocated");
    }

    [Fact]
    public async Task SparseImageFile_HolesAreSkippedIntoNewVolume_AndTrimmedInExistingOne()
    {
        // A 64 MiB image that is a hole except for three pieces, one of them not block-aligned.
        string input = Path.Combine(Root, "sparse.raw");
        var pieces = new (long Offset, byte[] Data)[] { (0, RandomBytes(10_000, 1)), (20 << 20, RandomBytes(1 << 20, 2)), ((40 << 20) + 12_288, RandomBytes(70_000, 3)) };
        using (var file = File.OpenHandle(input, FileMode.Create, FileAccess.Write))
        {
            RandomAccess.SetLength(file, 64 << 20);
            foreach (var (offset, data) in pieces)
            {
                RandomAccess.Write(file, data, offset);
            }
        }

        Assert.True(IsSparse(input));
        var expected = new byte[64 << 20];
        foreach (var (offset, data) in pieces)
        {
            data.CopyTo(expected, offset);
        }

        var imported = await Ok("volume", "import", "new", input);
        Assert.Contains("into new volume 'new' (64 MiB)", imported.Out, StringComparison.Ordinal);
        Assert.Equal(expected, (await Ok("volume", "export", "new", "-")).Binary);

        // An existing volume full of data: the image's holes must come out as zeros.
        Assert.Equal(0, (await Run(["volume", "import", "old", "-"], RandomBytes(64 << 20, 4), null, null)).ExitCode);
        await Ok("volume", "import", "old", input);
        Assert.Equal(expected, (await Ok("volume", "export", "old", "-")).Binary);
        var rows = (await Ok("volume", "list", "-o", "json")).Json();
        Assert.All(rows.EnumerateArray(), r => Assert.True(r.GetProperty("allocated").GetInt64() <= 4 << 20, r.ToString()));
    }

    [Fact]
    public async Task StdinStdoutRoundTrip_GrowsVolumeToInput()
    {
        var image = ImageWithHoles((9 << 20) + 100, seed: 4);
        var imported = await Run(["volume", "import", "piped", "-"], image, null, null);
        Assert.Equal(0, imported.ExitCode);

        var row = (await Ok("volume", "list", "-o", "json")).Json()[0];
        Assert.Equal((image.Length + 4095) / 4096 * 4096, row.GetProperty("size").GetInt64());

        var exported = await Ok("volume", "export", "piped", "-");
        Assert.Equal(image, exported.Binary[..image.Length]);
        Assert.Equal(row.GetProperty("size").GetInt64(), exported.Binary.Length);
        Assert.Contains("exported volume 'piped' to stdout", exported.Err, StringComparison.Ordinal);
        Assert.Equal(string.Empty, exported.Out);
    }

    [Fact]
    public async Task Import_WithSize_ThenExportSnapshot()
    {
        var image = RandomBytes(300_000, 5);
        Assert.Equal(0, (await Run(["volume", "import", "v", "-", "--size", "1Gi"], image, null, null)).ExitCode);
        await Ok("snapshot", "create", "v", "s");
        Assert.Equal(0, (await Run(["volume", "import", "v", "-"], RandomBytes(300_000, 6), null, null)).ExitCode);
        string output = Path.Combine(Root, "snap.raw");
        await Ok("volume", "export", "s", output);
        await using var f = File.OpenRead(output);
        Assert.Equal(1L << 30, f.Length);
        var head = new byte[image.Length];
        await f.ReadExactlyAsync(head, TestContext.Current.CancellationToken);
        Assert.Equal(image, head);
        Assert.True(IsSparse(output));
    }

    [Fact]
    public async Task Import_IntoExistingVolume_ZerosInTheImageReplaceOldData()
    {
        Assert.Equal(0, (await Run(["volume", "import", "v", "-"], RandomBytes(1 << 20, 7), null, null)).ExitCode);
        var mixed = new byte[1 << 20];
        RandomBytes(4096, 8).CopyTo(mixed, 300_000);
        Assert.Equal(0, (await Run(["volume", "import", "v", "-"], mixed, null, null)).ExitCode);
        var exported = await Ok("volume", "export", "v", "-");
        Assert.Equal(mixed, exported.Binary);
        Assert.Equal(65536, (await Ok("volume", "list", "-o", "json")).Json()[0].GetProperty("allocated").GetInt64());
    }

    [Fact]
    public async Task Import_FileLargerThanExistingVolume_IsRefused()
    {
        await Ok("volume", "create", "small", "--size", "64Ki");
        string input = Path.Combine(Root, "big.raw");
        await File.WriteAllBytesAsync(input, RandomBytes(100_000, 1), TestContext.Current.CancellationToken);
        await Fails(ExitCodes.InvalidArgument, "larger than volume 'small'", "volume", "import", "small", input);
        await Fails(ExitCodes.InvalidArgument, "larger than the requested size of volume 'n'", "volume", "import", "n", input, "--size", "64Ki");
        await Fails(ExitCodes.InvalidArgument, "--size applies only when import creates the volume", "volume", "import", "small", input, "--size", "1Mi");

        var piped = await Run(["volume", "import", "small", "-"], RandomBytes(100_000, 1), null, null);
        Assert.Equal(ExitCodes.InvalidArgument, piped.ExitCode);
        Assert.Contains("holds more than the 64 KiB of volume 'small'", piped.Err, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Import_MissingFile_FailsNamingIt()
    {
        string missing = Path.Combine(Root, "nope.raw");
        await Fails(ExitCodes.NotFound, $"image file '{missing}' does not exist", "volume", "import", "v", missing);
        await Fails(ExitCodes.InvalidArgument, "is a directory", "volume", "import", "v", Root);
        Assert.Equal(0, (await Ok("volume", "list", "-o", "json")).Json().GetArrayLength());
    }

    [Fact]
    public async Task Export_CorruptedBlock_FailsAndLeavesNoFile()
    {
        Assert.Equal(0, (await Run(["volume", "import", "v", "-"], RandomBytes(256 * 1024, 9), null, null)).ExitCode);
        PoolCommandTests.CorruptFirstDataBlock(PoolDir);

        string output = Path.Combine(Root, "out.raw");
        var r = await Fails(ExitCodes.Corrupt, "export of 'v' stopped: volume 'v': data at byte offset 0", "volume", "export", "v", output);
        Assert.Contains("failed its checksum", r.Err, StringComparison.Ordinal);
        Assert.False(File.Exists(output), "a failed export must not leave a file with wrong data");

        var piped = await Dolly("volume", "export", "v", "-");
        Assert.Equal(ExitCodes.Corrupt, piped.ExitCode);
        Assert.Empty(piped.Binary);

        // An existing file that the export was overwriting is emptied, not left with a mix of old and new.
        await File.WriteAllBytesAsync(output, RandomBytes(1 << 20, 3), TestContext.Current.CancellationToken);
        await Fails(ExitCodes.Corrupt, "failed its checksum", "volume", "export", "v", output);
        Assert.Equal(0, new FileInfo(output).Length);
    }

    [Fact]
    public async Task Export_StdoutOnAFullDisk_FailsNoSpace()
    {
        Assert.Equal(0, (await Run(["volume", "import", "v", "-"], RandomBytes(256 * 1024, 9), null, null)).ExitCode);
        var err = new StringWriter();
        var host = new CliHost(
            new StringWriter(),
            err,
            () => Stream.Null,
            () => new FileStream("/dev/full", FileMode.Open, FileAccess.Write, FileShare.ReadWrite, bufferSize: 0),
            OutIsTerminal: false,
            ErrorIsTerminal: false,
            name => name == "DOLLY_POOL" ? PoolDir : null);
        int code = await Cli.RunAsync(["volume", "export", "v", "-"], host, TestContext.Current.CancellationToken);
        Assert.Equal(ExitCodes.NoSpace, code);
        Assert.Contains("error: writing the image to stdout failed: No space left on device", err.ToString(), StringComparison.Ordinal);
    }

    [Fact]
    public async Task Terminal_ImportShowsProgress_ExportRefusesRawBytesOnStdout()
    {
        string input = Path.Combine(Root, "in.raw");
        await File.WriteAllBytesAsync(input, RandomBytes(6 << 20, 12), TestContext.Current.CancellationToken);
        var imported = await Run(["volume", "import", "v", input], null, null, null, terminal: true);
        Assert.Equal(0, imported.ExitCode);
        Assert.Contains("import v", imported.Err, StringComparison.Ordinal);
        Assert.Contains("100%", imported.Err, StringComparison.Ordinal);

        var exported = await Run(["volume", "export", "v", "-"], null, null, null, terminal: true);
        Assert.Equal(ExitCodes.InvalidArgument, exported.ExitCode);
        Assert.Contains("refusing to write the raw image of 'v' to a terminal", exported.Err, StringComparison.Ordinal);
        Assert.Empty(exported.Binary);
    }

    [Fact]
    public async Task Export_ToADirectory_IsRefused()
    {
        await Ok("volume", "create", "v", "--size", "1Mi");
        await Fails(ExitCodes.InvalidArgument, $"'{Root}' is a directory", "volume", "export", "v", Root);
    }

    [Fact]
    public async Task Import_DiskFull_FailsNoSpaceAndRemovesTheNewVolume()
    {
        await Ok("pool", "init");
        var fs = new FullDiskFileSystem(dataBytesAllowed: 1 << 20);
        var r = await Run(["volume", "import", "big", "-"], RandomBytes(3 << 20, 10), null, fs);
        Assert.Equal(ExitCodes.NoSpace, r.ExitCode);
        Assert.StartsWith("error: volume 'big': no space left on the disk under pool", r.Err, StringComparison.Ordinal);

        var after = await Dolly("volume", "list", "-o", "json");
        Assert.Equal(0, after.ExitCode);
        Assert.Equal(0, after.Json().GetArrayLength());
        var check = await Ok("pool", "check", "-o", "json");
        Assert.True(check.Json().GetProperty("clean").GetBoolean(), check.Out);
    }

    /// <summary>The real file system, except that the data file refuses to grow past a limit with ENOSPC.</summary>
    private sealed class FullDiskFileSystem(long dataBytesAllowed) : IFileSystem
    {
        private readonly PhysicalFileSystem _real = PhysicalFileSystem.Instance;

        public bool DirectoryExists(string path) => _real.DirectoryExists(path);

        public void CreateDirectory(string path) => _real.CreateDirectory(path);

        public IReadOnlyList<string> ListDirectory(string path) => _real.ListDirectory(path);

        public bool FileExists(string path) => _real.FileExists(path);

        public IStorageFile Open(string path, bool create)
        {
            var file = _real.Open(path, create);
            return path.EndsWith("data.dolly", StringComparison.Ordinal) ? new Limited(file, dataBytesAllowed) : file;
        }

        public IDisposable? TryLock(string directory) => _real.TryLock(directory);

        public void SyncDirectory(string path) => _real.SyncDirectory(path);

        private sealed class Limited(IStorageFile inner, long limit) : IStorageFile
        {
            public long Length => inner.Length;

            public long AllocatedBytes => inner.AllocatedBytes;

            public void Read(long offset, Span<byte> buffer) => inner.Read(offset, buffer);

            public void Write(long offset, ReadOnlySpan<byte> data)
            {
                if (offset + data.Length > limit)
                {
                    throw new IOException("No space left on device", 28);
                }

                inner.Write(offset, data);
            }

            public void Sync() => inner.Sync();

            public void PunchHole(long offset, long length) => inner.PunchHole(offset, length);

            public void Dispose() => inner.Dispose();
        }
    }
}
