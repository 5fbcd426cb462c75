using System.Diagnostics;
using Dolly.Storage;
using Microsoft.Win32.SafeHandles;

namespace Dolly.Bench;

// Timing, offsets and plain-file helpers of the engine benchmark.
internal sealed partial class EngineBench
{
    /// <summary>Seconds spent writing, and writing plus the flush that makes it durable.</summary>
    private readonly record struct Timing(double Write, double Total)
    {
        public override string ToString() => Describe("flush");

        public string Describe(string flush) => $"{BenchReport.Num(Write)} s + {flush} {BenchReport.Num(Total - Write)} s";
    }

    private static Timing Time(Action write, Action flush)
    {
        long start = Stopwatch.GetTimestamp();
        write();
        double written = Seconds(start);
        flush();
        return new Timing(written, Seconds(start));
    }

    private void WriteFileSequential(SafeFileHandle file, long size)
    {
        for (long pos = 0; pos < size; pos += MiB)
        {
            RandomAccess.Write(file, Data(MiB), pos);
        }
    }

    private static long[] RandomOffsets(Random rng, long span, int count)
    {
        var offsets = new long[count];
        for (int i = 0; i < count; i++)
        {
            offsets[i] = rng.NextInt64(span / Sector) * Sector;
        }

        return offsets;
    }

    /// <summary>One 4 KiB offset in every block of the span, blocks in random order.</summary>
    private static long[] OnePerBlock(Random rng, long span, int blockSize)
    {
        long blocks = span / blockSize;
        var offsets = new long[blocks];
        for (long b = 0; b < blocks; b++)
        {
            offsets[b] = (b * blockSize) + (rng.Next(blockSize / Sector) * Sector);
        }

        rng.Shuffle(offsets);
        return offsets;
    }

    private static double ReadAll(BlockDevice device, long size, byte[] buffer)
    {
        long start = Stopwatch.GetTimestamp();
        for (long pos = 0; pos < size; pos += buffer.Length)
        {
            device.Read(pos, buffer).OrFail();
        }

        return Seconds(start);
    }

    private static double ReadAt(BlockDevice device, long[] offsets, byte[] buffer)
    {
        long start = Stopwatch.GetTimestamp();
        foreach (long o in offsets)
        {
            device.Read(o, buffer).OrFail();
        }

        return Seconds(start);
    }
}
