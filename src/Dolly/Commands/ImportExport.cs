using System.CommandLine;
using System.Diagnostics;
using Dolly.Storage;

namespace Dolly.Commands;

/// <summary>
/// <c>volume import</c> and <c>volume export</c>: raw images between a file (or stdin/stdout) and a volume.
/// Import never writes an all-zero block (the volume stays thin) and skips a sparse file's holes unread;
/// export reads only allocated ranges and leaves holes in the output file (or writes zeros to a pipe). The
/// summary goes to stdout, or to stderr when stdout carries the image. Both move data in 4 MiB chunks, and
/// import reads the next chunk while the engine writes the current one.
/// </summary>
internal static class ImportExport
{
    internal const int ChunkSize = 4 << 20;
    private const int SizeAlignment = 4096;

    public static Command BuildImport(CliContext context)
    {
        var name = VolumeCommands.NameArgument("NAME", "Volume to import into (created when it does not exist)");
        var source = new Argument<string>("FILE") { Description = "Raw image to read, or - for stdin" };
        var size = VolumeCommands.SizeOption("Size of a new volume (default: the file's size rounded up to 4 KiB)", required: false);
        var import = new Command(
            "import",
            "Copy a raw image into a volume. A new volume is sized to the image; an existing volume must be large enough. " +
            "All-zero blocks are not written (they stay unallocated), and holes of a sparse image file are not even read. If the import fails, a volume it created is removed; " +
            "an existing volume keeps what was written before the failure.")
        {
            name, source, size,
        };
        import.SetAction(parse => Import(context, parse, parse.GetValue(name)!, parse.GetValue(source)!, parse.GetValue(size)));
        return import;
    }

    public static Command BuildExport(CliContext context)
    {
        var name = VolumeCommands.NameArgument("NAME", "Volume or snapshot to export");
        var target = new Argument<string>("FILE") { Description = "Raw image to write (sparse), or - for stdout" };
        var export = new Command(
            "export",
            "Copy a volume or snapshot to a raw image. Only allocated ranges are read; the file gets holes elsewhere. " +
            "A block that fails its checksum stops the export: a new output file is removed, an overwritten one emptied.")
        {
            name, target,
        };
        export.SetAction(parse => Export(context, parse, parse.GetValue(name)!, parse.GetValue(target)!));
        return export;
    }

    private static int Import(CliContext context, ParseResult parse, string name, string source, string? sizeText)
    {
        long? requested = sizeText is null ? null : CliContext.ParseSize(sizeText, $"volume '{name}'");
        if (Names.Validate(name, "volume name") is { } bad)
        {
            throw new CliFailureException(bad);
        }

        using var input = OpenInput(context, source);
        long? length = input.CanSeek ? input.Length : null;
        using var pool = context.OpenPool(parse);
        var existing = pool.GetDevice(name);
        bool created = false;
        if (existing.IsOk)
        {
            var v = existing.Value;
            if (v.Kind != DeviceKind.Volume)
            {
                throw new CliFailureException(ExitCodes.ReadOnly, $"'{name}' is a snapshot and cannot be written; import into a clone of it instead");
            }

            if (requested is not null)
            {
                throw new CliFailureException(ExitCodes.InvalidArgument, $"volume '{name}' already exists; --size applies only when import creates the volume (use 'dolly volume resize')");
            }

            if (length > v.Size)
            {
                throw new CliFailureException(
                    ExitCodes.InvalidArgument,
                    $"'{source}' is {ByteSize.Format(length.Value)} ({length} bytes), larger than volume '{name}' ({ByteSize.Format(v.Size)}); resize the volume first");
            }
        }
        else if (existing.Error.Code == StorageErrorCode.NotFound)
        {
            long size = requested ?? (length is { } l ? RoundUp(Math.Max(l, 1)) : SizeAlignment);
            if (length > size)
            {
                throw new CliFailureException(ExitCodes.InvalidArgument, $"'{source}' is {ByteSize.Format(length.Value)} ({length} bytes), larger than the requested size of volume '{name}' ({ByteSize.Format(size)})");
            }

            pool.CreateVolume(name, size).OrFail();
            created = true;
        }
        else
        {
            throw new CliFailureException(existing.Error);
        }

        var device = pool.OpenDevice(name).OrFail();
        bool growable = created && requested is null && length is null;
        long started = Stopwatch.GetTimestamp();
        ImportStats stats;
        try
        {
            stats = TransferProgress.Run(context, $"import {name}", length, report => Copy(input, device, pool, created, growable, source, report));
            pool.Flush().OrFail();
        }
        catch (CliFailureException) when (created)
        {
            // A half-imported new volume is worse than none: the user retries the same command.
            _ = pool.Delete(name);
            throw;
        }

        context.Host.Out.WriteLine(
            $"imported {TransferProgress.Rate(stats.Read, TransferProgress.Since(started))} into {(created ? "new " : string.Empty)}volume '{name}' " +
            $"({ByteSize.Format(device.Size)}): {ByteSize.Format(stats.Written)} written, {ByteSize.Format(stats.Read - stats.Written)} of zeros skipped");
        return ExitCodes.Ok;
    }

    private readonly record struct ImportStats(long Read, long Written);

    private static ImportStats Copy(Stream input, BlockDevice device, Pool pool, bool fresh, bool growable, string source, Action<long> report)
    {
        var current = new byte[ChunkSize];
        var next = new byte[ChunkSize];
        long written = 0, end = 0;
        int blockSize = pool.BlockSize;

        // A sparse image file is read only where it holds data; its holes are zeros without reading them.
        var extents = input is FileStream file ? SparseFile.DataExtents(file.SafeFileHandle, file.Length) : null;
        long total = input.CanSeek ? input.Length : long.MaxValue;
        foreach (var (start, length) in extents ?? [(0, total)])
        {
            if (!fresh && start > end)
            {
                device.Trim(end, start - end).OrFail();
            }

            if (input.CanSeek)
            {
                input.Position = start;
            }

            long offset = start, stop = start + length;
            int n = ReadFull(input, current, Limit(stop - offset), source);
            while (n > 0)
            {
                // Read ahead while the engine writes this chunk.
                var buffer = next;
                int want = Limit(stop - offset - n);
                var reading = Task.Run(() => ReadFull(input, buffer, want, source));
                long chunkEnd = offset + n;
                if (chunkEnd > device.Size)
                {
                    if (!growable)
                    {
                        _ = reading.GetAwaiter().GetResult();
                        throw new CliFailureException(ExitCodes.InvalidArgument, $"'{source}' holds more than the {ByteSize.Format(device.Size)} of volume '{device.Name}'; stopped at byte {offset}");
                    }

                    pool.Resize(device.Name, RoundUp(chunkEnd)).OrFail();
                }

                written += WriteSkippingZeros(device, offset, current.AsSpan(0, n), blockSize, fresh);
                offset = chunkEnd;
                report(offset);
                n = reading.GetAwaiter().GetResult();
                (current, next) = (next, current);
            }

            end = offset;
        }

        long size = input.CanSeek ? input.Length : end;
        if (!fresh && size > end)
        {
            device.Trim(end, size - end).OrFail();
        }

        report(size);
        return new ImportStats(size, written);
    }

    private static int Limit(long remaining) => (int)Math.Clamp(remaining, 0, ChunkSize);

    /// <summary>
    /// Writes the non-zero runs of <paramref name="data"/> (at block granularity). Zero runs are skipped on a
    /// fresh volume and trimmed on an existing one, so the result reads exactly as the image.
    /// </summary>
    private static long WriteSkippingZeros(BlockDevice device, long offset, ReadOnlySpan<byte> data, int blockSize, bool fresh)
    {
        long written = 0;
        int pos = 0;
        while (pos < data.Length)
        {
            // Pieces end on block boundaries of the volume, so a zero piece is a whole block wherever possible.
            int runStart = pos;
            bool zero = IsZero(data.Slice(pos, PieceLength(offset + pos, data.Length - pos, blockSize)));
            do
            {
                pos += PieceLength(offset + pos, data.Length - pos, blockSize);
            }
            while (pos < data.Length && IsZero(data.Slice(pos, PieceLength(offset + pos, data.Length - pos, blockSize))) == zero);

            var run = data[runStart..pos];
            if (!zero)
            {
                device.Write(offset + runStart, run).OrFail();
                written += run.Length;
            }
            else if (!fresh)
            {
                device.Trim(offset + runStart, run.Length).OrFail();
            }
        }

        return written;
    }

    private static int PieceLength(long at, int remaining, int blockSize) => (int)Math.Min(remaining, blockSize - (at % blockSize));

    /// <summary>True when every byte is zero (vectorized: compares 32 or 64 bytes per instruction).</summary>
    internal static bool IsZero(ReadOnlySpan<byte> data) => !data.ContainsAnyExcept((byte)0);

    private static int ReadFull(Stream input, byte[] buffer, int count, string source)
    {
        int done = 0;
        try
        {
            while (done < count)
            {
                int n = input.Read(buffer, done, count - done);
                if (n == 0)
                {
                    break;
                }

                done += n;
            }
        }
        catch (IOException ex)
        {
            throw new CliFailureException(ExitCodes.IoError, $"reading '{source}' failed: {ex.Message}");
        }

        return done;
    }

    private static Stream OpenInput(CliContext context, string source)
    {
        if (source == "-")
        {
            return context.Host.OpenStandardInput();
        }

        try
        {
            if (Directory.Exists(source))
            {
                throw new CliFailureException(ExitCodes.InvalidArgument, $"'{source}' is a directory, not a raw image file");
            }

            return new FileStream(source, FileMode.Open, FileAccess.Read, FileShare.Read, bufferSize: 0, FileOptions.SequentialScan);
        }
        catch (FileNotFoundException)
        {
            throw new CliFailureException(ExitCodes.NotFound, $"image file '{source}' does not exist");
        }
        catch (DirectoryNotFoundException)
        {
            throw new CliFailureException(ExitCodes.NotFound, $"image file '{source}' does not exist");
        }
        catch (UnauthorizedAccessException)
        {
            throw new CliFailureException(ExitCodes.IoError, $"image file '{source}' cannot be read: permission denied");
        }
        catch (IOException ex)
        {
            throw new CliFailureException(ExitCodes.IoError, $"image file '{source}' cannot be opened: {ex.Message}");
        }
    }

    private static long RoundUp(long bytes) => (bytes + SizeAlignment - 1) / SizeAlignment * SizeAlignment;

    private static int Export(CliContext context, ParseResult parse, string name, string target)
    {
        using var pool = context.OpenPool(parse);
        var info = pool.GetDevice(name).OrFail();
        var device = pool.OpenDevice(name).OrFail();
        var ranges = pool.GetAllocatedRanges(name).OrFail();
        long allocated = ranges.Sum(r => r.Length);
        long started = Stopwatch.GetTimestamp();
        string what = $"{(info.Kind == DeviceKind.Snapshot ? "snapshot" : "volume")} '{name}'";
        long moved;
        if (target == "-")
        {
            if (context.Host.OutIsTerminal)
            {
                throw new CliFailureException(ExitCodes.InvalidArgument, $"refusing to write the raw image of '{name}' to a terminal; redirect stdout to a file or a pipe");
            }

            using var output = context.Host.OpenStandardOutput();
            moved = TransferProgress.Run(context, $"export {name}", info.Size, report => ExportToStream(device, info.Size, ranges, output, report));
            output.Flush();
            context.Host.Error.WriteLine($"exported {what} to stdout: {TransferProgress.Rate(info.Size, TransferProgress.Since(started))}, {ByteSize.Format(allocated)} allocated");
            return ExitCodes.Ok;
        }

        if (Directory.Exists(target))
        {
            throw new CliFailureException(ExitCodes.InvalidArgument, $"'{target}' is a directory; give the path of the image file to write");
        }

        // A failed export must not leave wrong data behind: a file it created is removed, a file it overwrote
        // is emptied (never deleted: it may be a device node such as /dev/full).
        bool existed = File.Exists(target);
        try
        {
            using (var file = File.OpenHandle(target, FileMode.Create, FileAccess.ReadWrite, FileShare.None))
            {
                // A fresh file of the full length is one hole; only non-zero data is written into it.
                RandomAccess.SetLength(file, info.Size);
                moved = TransferProgress.Run(context, $"export {name}", allocated, report => ExportToFile(device, ranges, file, report));
                RandomAccess.FlushToDisk(file);
            }
        }
        catch (CliFailureException)
        {
            RemovePartial(target, existed);
            throw;
        }
        catch (UnauthorizedAccessException)
        {
            RemovePartial(target, existed);
            throw new CliFailureException(ExitCodes.IoError, $"cannot write image file '{target}': permission denied");
        }
        catch (IOException ex)
        {
            RemovePartial(target, existed);
            throw new CliFailureException(
                IsNoSpace(ex) ? ExitCodes.NoSpace : ExitCodes.IoError,
                $"writing image file '{target}' failed{(IsNoSpace(ex) ? " (the disk is full)" : string.Empty)}: {ex.Message}; the partial {(existed ? "file was emptied" : "file was removed")}");
        }

        context.Host.Out.WriteLine(
            $"exported {what} ({ByteSize.Format(info.Size)}) to '{target}': read {TransferProgress.Rate(allocated, TransferProgress.Since(started))}, {ByteSize.Format(moved)} written, the rest left as holes");
        return ExitCodes.Ok;
    }

    private static long ExportToFile(BlockDevice device, IReadOnlyList<ByteRange> ranges, Microsoft.Win32.SafeHandles.SafeFileHandle file, Action<long> report)
    {
        var buffer = new byte[ChunkSize];
        long done = 0, written = 0;
        int blockSize = device.Pool.BlockSize;
        foreach (var range in ranges)
        {
            for (long pos = range.Offset; pos < range.End; pos += ChunkSize)
            {
                int n = (int)Math.Min(ChunkSize, range.End - pos);
                var chunk = buffer.AsSpan(0, n);
                ReadOrFail(device, pos, chunk);

                // Allocated blocks may still hold zeros: keep those as holes too.
                int at = 0, runStart = -1;
                while (at < n)
                {
                    int piece = PieceLength(pos + at, n - at, blockSize);
                    bool zero = IsZero(chunk.Slice(at, piece));
                    if (!zero && runStart < 0)
                    {
                        runStart = at;
                    }
                    else if (zero && runStart >= 0)
                    {
                        RandomAccess.Write(file, chunk[runStart..at], pos + runStart);
                        written += at - runStart;
                        runStart = -1;
                    }

                    at += piece;
                }

                if (runStart >= 0)
                {
                    RandomAccess.Write(file, chunk[runStart..n], pos + runStart);
                    written += n - runStart;
                }

                done += n;
                report(done);
            }
        }

        return written;
    }

    private static long ExportToStream(BlockDevice device, long size, IReadOnlyList<ByteRange> ranges, Stream output, Action<long> report)
    {
        var buffer = new byte[ChunkSize];
        var zeros = new byte[ChunkSize];
        long pos = 0;
        foreach (var range in ranges.Append(new ByteRange(size, 0)))
        {
            while (pos < range.Offset)
            {
                int n = (int)Math.Min(ChunkSize, range.Offset - pos);
                WriteOut(output, zeros.AsSpan(0, n));
                pos += n;
                report(pos);
            }

            while (pos < range.End)
            {
                int n = (int)Math.Min(ChunkSize, range.End - pos);
                ReadOrFail(device, pos, buffer.AsSpan(0, n));
                WriteOut(output, buffer.AsSpan(0, n));
                pos += n;
                report(pos);
            }
        }

        return pos;
    }

    private static void ReadOrFail(BlockDevice device, long offset, Span<byte> destination)
    {
        var r = device.Read(offset, destination);
        if (!r.IsOk)
        {
            throw new CliFailureException(ExitCodes.For(r.Error.Code), $"export of '{device.Name}' stopped: {r.Error.Message}");
        }
    }

    private static void WriteOut(Stream output, ReadOnlySpan<byte> data)
    {
        try
        {
            output.Write(data);
        }
        catch (IOException ex)
        {
            throw new CliFailureException(IsNoSpace(ex) ? ExitCodes.NoSpace : ExitCodes.IoError, $"writing the image to stdout failed: {ex.Message}");
        }
    }

    private static bool IsNoSpace(IOException ex) =>
        (ex.HResult & 0xFFFF) == 28 || ex.Message.Contains("No space left", StringComparison.OrdinalIgnoreCase);

    private static void RemovePartial(string path, bool existed)
    {
        try
        {
            if (existed)
            {
                using var file = File.OpenHandle(path, FileMode.Open, FileAccess.Write);
                RandomAccess.SetLength(file, 0);
            }
            else
            {
                File.Delete(path);
            }
        }
        catch (IOException)
        {
        }
        catch (UnauthorizedAccessException)
        {
        }
    }
}
