using System.Diagnostics;
using System.Globalization;
using System.Text;
using Dolly.Repository.Storage;
using Dolly.Repository.Transfer;
using Dolly.Storage;

namespace Dolly.Repository.Tests;

/// <summary>
/// The measurements behind the format's defaults (chunk size, zstd), recorded in docs/ARCHITECTURE.md. They take
/// minutes, so they run only with DOLLY_REPO_MEASURE=1, and they check that every upload restores equal; the
/// figures go to the test output and, with DOLLY_REPO_MEASURE_OUT=FILE, to that file.
/// </summary>
public sealed class ChunkingMeasurements(ITestOutputHelper output)
{
    private const int Mi = 1 << 20;

    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    [Fact]
    public async Task ChunkSizeAndCompression_Figures()
    {
        Assert.SkipUnless(Environment.GetEnvironmentVariable("DOLLY_REPO_MEASURE") == "1", "set DOLLY_REPO_MEASURE=1 to measure");
        int volumeMi = int.Parse(Environment.GetEnvironmentVariable("DOLLY_REPO_MEASURE_MIB") ?? "256", CultureInfo.InvariantCulture);
        Log($"load average {File.ReadAllText("/proc/loadavg").Trim()}; volume {volumeMi} MiB; 64 KiB pool blocks; directory store on /dev/shm");
        foreach (var kind in new[] { "random", "text" })
        {
            foreach (int level in new[] { 0, 3 })
            {
                foreach (int chunk in new[] { 1 * Mi, 2 * Mi, 4 * Mi })
                {
                    if (kind == "text" && chunk != 4 * Mi)
                    {
                        continue;
                    }

                    await MeasureAsync(kind, volumeMi, chunk, level);
                }
            }
        }
    }

    private async Task MeasureAsync(string kind, int volumeMi, int chunkSize, int level)
    {
        using var tmp = new TempDir();
        using var pool = Pool.Create(tmp.Sub("pool"), new PoolCreateOptions { BlockSize = 64 * 1024, JournalSize = 64L << 20 }).Value;
        var store = new CountingObjectStore(DirectoryObjectStore.Create(tmp.Sub("repo")));
        var repo = await SnapshotRepository.InitAsync(store, RepoFixture.Key, new RepositoryInitOptions { ChunkSize = chunkSize, ZstdLevel = level, KdfIterations = 1000 }, TimeProvider.System, Ct);
        long size = (long)volumeMi * Mi;
        pool.CreateVolume("v", size).ThrowIfFailed();
        var dev = pool.OpenDevice("v").Value;
        var rng = new Random(1);
        var buffer = new byte[4 * Mi];
        var text = Encoding.ASCII.GetBytes(string.Concat(Enumerable.Range(0, 200_000).Select(i => FormattableString.Invariant($"{i},row {i * 7919 % 10007},value {rng.Next(1000)}\n"))));
        for (long at = 0; at < size; at += buffer.Length)
        {
            if (kind == "random")
            {
                rng.NextBytes(buffer);
            }
            else
            {
                for (int i = 0; i < buffer.Length; i += 4096)
                {
                    text.AsSpan(rng.Next(text.Length - 4096), 4096).CopyTo(buffer.AsSpan(i));
                }
            }

            dev.Write(at, buffer).ThrowIfFailed();
        }

        pool.CreateSnapshot("v", "s1").ThrowIfFailed();
        var options = new UploadOptions { StateDirectory = tmp.Sub("state"), Parallelism = 8 };
        var full = await SnapshotUploader.UploadAsync(repo, pool, "s1", options, Ct);

        // 1% of the volume changed in random 4 KiB writes.
        var block = new byte[4096];
        for (long i = 0; i < size / 100 / 4096; i++)
        {
            rng.NextBytes(block);
            dev.Write(rng.NextInt64(size / 4096) * 4096, block).ThrowIfFailed();
        }

        pool.CreateSnapshot("v", "s2").ThrowIfFailed();
        var incremental = await SnapshotUploader.UploadAsync(repo, pool, "s2", options, Ct);
        var started = Stopwatch.GetTimestamp();
        var restored = await SnapshotRestorer.RestoreAsync(repo, incremental.Manifest.Info.Id, pool, "back", new RestoreOptions(), Ct);
        var restoreTime = Stopwatch.GetElapsedTime(started);
        Assert.True(Support.Equal(pool, "s2", "back"));
        Log(FormattableString.Invariant(
            $"{kind,-6} chunk {chunkSize / Mi} MiB zstd {level}: full {MiBps(size, full.Elapsed),6:0} MiB/s, stored {100.0 * full.BytesPut / size,5:0.0}% of data in {full.ChunksPut} objects; ") +
            FormattableString.Invariant($"1% random 4K change: sent {100.0 * incremental.BytesPut / size,5:0.0}% of the volume ({incremental.ChunksPut} chunks) in {incremental.Elapsed.TotalSeconds:0.00} s; restore {MiBps(size, restoreTime),6:0} MiB/s ({restored.ChunksFetched} chunks)"));
    }

    private static double MiBps(long bytes, TimeSpan t) => bytes / (double)Mi / Math.Max(t.TotalSeconds, 1e-6);

    private void Log(string line)
    {
        output.WriteLine(line);
        if (Environment.GetEnvironmentVariable("DOLLY_REPO_MEASURE_OUT") is { Length: > 0 } file)
        {
            File.AppendAllText(file, line + "\n");
        }
    }
}

internal static class Support
{
    public static bool Equal(Pool pool, string a, string b)
    {
        var da = pool.OpenDevice(a).Value;
        var db = pool.OpenDevice(b).Value;
        var ba = new byte[4 << 20];
        var bb = new byte[4 << 20];
        for (long at = 0; at < da.Size; at += ba.Length)
        {
            int n = (int)Math.Min(ba.Length, da.Size - at);
            da.Read(at, ba.AsSpan(0, n)).ThrowIfFailed();
            db.Read(at, bb.AsSpan(0, n)).ThrowIfFailed();
            if (!ba.AsSpan(0, n).SequenceEqual(bb.AsSpan(0, n)))
            {
                return false;
            }
        }

        return true;
    }
}
