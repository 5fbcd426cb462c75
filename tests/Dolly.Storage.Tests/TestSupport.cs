using System.Globalization;
using Dolly.Storage.CrashWorker;

namespace Dolly.Storage.Tests;

/// <summary>A temporary directory removed at dispose.</summary>
internal sealed class TempDir : IDisposable
{
    public TempDir(bool memory = false)
    {
        // /dev/shm (tmpfs) where asked and present: a SIGKILL keeps the page cache, so fsync costs buy nothing there.
        string root = memory && Directory.Exists("/dev/shm") ? "/dev/shm" : System.IO.Path.GetTempPath();
        Path = System.IO.Path.Combine(root, "dolly-test-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(Path);
    }

    public string Path { get; }

    public string Sub(string name) => System.IO.Path.Combine(Path, name);

    public void Dispose()
    {
        try
        {
            Directory.Delete(Path, recursive: true);
        }
        catch (IOException)
        {
            // A mount that failed to unmount keeps its directory; nothing to clean then.
        }
    }
}

internal static class Support
{
    /// <summary>Throws when a valued result failed (for setup steps that must succeed).</summary>
    public static void ThrowIfFailed<T>(this Result<T> result) => _ = result.Value;

    public static byte[] Pattern(int length, int seed)
    {
        var data = new byte[length];
        new Random(seed).NextBytes(data);
        return data;
    }

    public static void AssertClean(CheckReport report, string context = "")
    {
        Assert.True(report.IsClean, $"{context} check found {report.Problems.Count} problem(s):\n{string.Join("\n", report.Problems)}");
    }

    public static void AssertError(StorageError? error, StorageErrorCode code, params string[] mentions)
    {
        Assert.NotNull(error);
        Assert.True(error.Code == code, $"expected {code}, got {error.Code}: {error.Message}");
        foreach (var m in mentions)
        {
            Assert.True(error.Message.Contains(m, StringComparison.Ordinal), $"message does not mention '{m}': {error.Message}");
        }
    }

    public static byte[] ReadAll(Pool pool, string name)
    {
        var dev = pool.OpenDevice(name).Value;
        var buf = new byte[dev.Size];
        dev.Read(0, buf).ThrowIfFailed();
        return buf;
    }

    /// <summary>An integer from the environment (to run longer campaigns), else the default.</summary>
    public static int EnvInt(string name, int fallback) =>
        int.TryParse(Environment.GetEnvironmentVariable(name), NumberStyles.Integer, CultureInfo.InvariantCulture, out int v) ? v : fallback;

    /// <summary>A base seed: DOLLY_SEED when set (to reproduce a failure), else a fixed default.</summary>
    public static int Seed(int fallback) => EnvInt("DOLLY_SEED", fallback);

    /// <summary>
    /// Checks the pool's ranges against the model: allocated ranges cover every non-zero byte; changed ranges between a
    /// snapshot and each device of its lineage cover every byte that differs. Ranges are sorted, disjoint and in bounds.
    /// </summary>
    public static string? RangeProblem(Pool pool, ReferenceModel model, Random rng, int pairs)
    {
        foreach (var d in model.Devices.Values)
        {
            var ranges = pool.GetAllocatedRanges(d.Name).Value;
            if (ShapeProblem(ranges, d.Size) is { } shape)
            {
                return $"allocated ranges of '{d.Name}': {shape}";
            }

            var content = d.Content.ToArray();
            if (FirstUncovered(ranges, d.Size, i => content[(int)i] != 0) is { } at)
            {
                return $"allocated ranges of '{d.Name}' miss non-zero byte {at}";
            }
        }

        var snapshots = model.Devices.Values.Where(d => d.Kind == DeviceKind.Snapshot).ToList();
        for (int k = 0; k < pairs && snapshots.Count > 0; k++)
        {
            var a = snapshots[rng.Next(snapshots.Count)];
            var sameLineage = model.Devices.Values.Where(d => d.LineageId == a.LineageId).ToList();
            var b = sameLineage[rng.Next(sameLineage.Count)];
            var changed = pool.GetChangedRanges(a.Name, b.Name);
            if (!changed.IsOk)
            {
                return $"changed ranges {a.Name} -> {b.Name} failed: {changed.Error}";
            }

            if (ShapeProblem(changed.Value, b.Size) is { } shape)
            {
                return $"changed ranges {a.Name} -> {b.Name}: {shape}";
            }

            var ac = a.Content.ToArray();
            var bc = b.Content.ToArray();
            if (FirstUncovered(changed.Value, b.Size, i => (i < ac.Length ? ac[(int)i] : 0) != bc[(int)i]) is { } at)
            {
                return $"changed ranges {a.Name} -> {b.Name} miss differing byte {at}";
            }
        }

        return null;
    }

    private static string? ShapeProblem(IReadOnlyList<ByteRange> ranges, long size)
    {
        long prev = -1;
        foreach (var r in ranges)
        {
            if (r.Length <= 0 || r.Offset < 0 || r.End > size || r.Offset <= prev)
            {
                return $"range {r} is empty, out of [0, {size}) or not after the previous one ending at {prev}";
            }

            prev = r.End;
        }

        return null;
    }

    private delegate bool ByteTest(long index);

    private static long? FirstUncovered(IReadOnlyList<ByteRange> ranges, long size, ByteTest interesting)
    {
        int ri = 0;
        for (long i = 0; i < size; i++)
        {
            while (ri < ranges.Count && ranges[ri].End <= i)
            {
                ri++;
            }

            if (ri < ranges.Count && ranges[ri].Offset <= i)
            {
                i = ranges[ri].End - 1;
                continue;
            }

            if (interesting(i))
            {
                return i;
            }
        }

        return null;
    }
}
