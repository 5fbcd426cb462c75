using System.Diagnostics;
using System.Globalization;
using System.Security.Cryptography;
using System.Text.Json;
using Dolly.Nbd;
using Dolly.Storage;

namespace Dolly.Bench;

/// <summary>
/// <c>dolly bench nbd</c>: Dolly's NBD server against nbdkit's file plugin serving a raw file in the same
/// directory, driven by the same real clients (nbdcopy for sequential transfers, fio's nbd engine for 4 KiB
/// random I/O), alternating between the two servers so that drift on a noisy machine hits both alike.
/// </summary>
internal sealed class NbdBench(string root, long size, int rounds, TimeSpan fioRuntime, Action<string> log)
{
    private const string Volume = "bench";

    public async Task<IReadOnlyList<BenchFigure>> RunAsync(CancellationToken ct)
    {
        foreach (var tool in new[] { "nbdcopy", "nbdkit", "fio" })
        {
            if (FindOnPath(tool) is null)
            {
                throw new CliFailureException(ExitCodes.NotFound, $"'{tool}' is not installed; the NBD benchmark needs nbdcopy (libnbd-bin), nbdkit and fio (apt-get install libnbd-bin nbdkit fio)");
            }
        }

        string source = Path.Combine(root, "source.img");
        log($"writing {ByteSize.Format(size)} of random source data");
        WriteRandomFile(source, size);

        string raw = Path.Combine(root, "plain.raw");
        using (var f = File.Create(raw))
        {
            f.SetLength(size);
        }

        string kitSocket = Path.Combine(root, "kit.sock");
        string dollySocket = Path.Combine(root, "dolly.sock");
        using var pool = Pool.Create(Path.Combine(root, "pool")).OrFail();
        pool.CreateVolume(Volume, size).OrFail();
        await using var server = new NbdServer(new ExportCatalog(pool), new NbdServerOptions { UnixSocketPath = dollySocket });
        server.Start();

        // The same server with its metrics on and exported as `dolly up` exports them, for the overhead row.
        string meteredSocket = Path.Combine(root, "dolly-metered.sock");
        using var nbdMetrics = new NbdMetrics();
        await using var metered = new NbdServer(new ExportCatalog(pool), new NbdServerOptions { UnixSocketPath = meteredSocket, Metrics = nbdMetrics });
        nbdMetrics.TrackConnections(metered);
        metered.Start();
        await using var exporter = await Metrics.MetricsServer.StartAsync(
            new System.Net.IPEndPoint(System.Net.IPAddress.Loopback, 0),
            [new(NbdMetrics.MeterName, nbdMetrics.Owns)],
            web: null,
            Microsoft.Extensions.Logging.Abstractions.NullLoggerFactory.Instance,
            ct).ConfigureAwait(false);
        using var kit = StartNbdkit(kitSocket, raw);
        try
        {
            await WaitForSocketAsync(kitSocket, ct).ConfigureAwait(false);
            string dolly = $"nbd+unix:///{Volume}?socket={dollySocket}";
            string nbdkit = $"nbd+unix:///?socket={kitSocket}";

            // Every measured write lands on data written before (as a database's writes do), not on fresh blocks.
            foreach (var uri in new[] { dolly, nbdkit })
            {
                log($"filling {(uri == dolly ? "dolly" : "nbdkit")} (not measured)");
                await TimeAsync("nbdcopy", ["--flush", source, uri], ct).ConfigureAwait(false);
            }

            var writes = new Dictionary<string, List<double>> { [dolly] = [], [nbdkit] = [] };
            var reads = new Dictionary<string, List<double>> { [dolly] = [], [nbdkit] = [] };
            for (int round = 0; round < rounds; round++)
            {
                foreach (var uri in new[] { dolly, nbdkit })
                {
                    string who = uri == dolly ? "dolly" : "nbdkit";
                    log($"round {round + 1}/{rounds}: nbdcopy write to {who}");
                    writes[uri].Add(Throughput(await TimeAsync("nbdcopy", ["--flush", source, uri], ct).ConfigureAwait(false)));
                    log($"round {round + 1}/{rounds}: nbdcopy read from {who}");
                    reads[uri].Add(Throughput(await TimeAsync("nbdcopy", [uri, "null:"], ct).ConfigureAwait(false)));
                }
            }

            var figures = new List<BenchFigure>();
            AddRatio(figures, "sequential over data already written (nbdcopy, 256 KiB requests, 4 connections)", "write", writes[dolly], writes[nbdkit], 1.0);
            AddRatio(figures, "sequential over data already written (nbdcopy, 256 KiB requests, 4 connections)", "read", reads[dolly], reads[nbdkit], 1.0);

            string withMetrics = $"nbd+unix:///{Volume}?socket={meteredSocket}";
            foreach (var mode in new[] { "randread", "randwrite" })
            {
                var d = new List<double>();
                var k = new List<double>();
                var m = new List<double>();
                for (int round = 0; round < rounds; round++)
                {
                    log($"round {round + 1}/{rounds}: fio {mode} on dolly and nbdkit{(mode == "randread" ? ", and on dolly with metrics" : "")}");
                    d.Add(await FioIopsAsync(dolly, mode, FioShape.Deep, ct).ConfigureAwait(false));
                    k.Add(await FioIopsAsync(nbdkit, mode, FioShape.Deep, ct).ConfigureAwait(false));
                    if (mode == "randread")
                    {
                        m.Add(await FioIopsAsync(withMetrics, mode, FioShape.Deep, ct).ConfigureAwait(false));
                    }
                }

                AddIops(figures, "4 KiB random (fio nbd engine, iodepth 16)", mode, d, k, mode == "randwrite" ? 0.9 : 0.8);
                if (m.Count > 0)
                {
                    await ScrapeAsync(exporter.Url, ct).ConfigureAwait(false);
                    double with = BenchReport.Median(m), without = BenchReport.Median(d), ratio = with / without;
                    figures.Add(new BenchFigure(
                        "metrics overhead (fio randread, iodepth 16)",
                        "dolly with metrics / without",
                        ratio,
                        "ratio",
                        $"{with:N0} vs {without:N0} IOPS = {ratio:0.000}",
                        ">= 0.97",
                        ratio >= 0.97,
                        Details: new Dictionary<string, double> { ["with_metrics_iops"] = with, ["without_metrics_iops"] = without }));
                }
            }

            foreach (var shape in new[] { FioShape.FlushEach, FioShape.FlushPer32 })
            {
                var d = new List<double>();
                var k = new List<double>();
                for (int round = 0; round < rounds; round++)
                {
                    log($"round {round + 1}/{rounds}: fio randwrite, {shape.Name}, on dolly and nbdkit");
                    d.Add(await FioIopsAsync(dolly, "randwrite", shape, ct).ConfigureAwait(false));
                    k.Add(await FioIopsAsync(nbdkit, "randwrite", shape, ct).ConfigureAwait(false));
                }

                AddIops(figures, "4 KiB random write with flushes (fio nbd engine)", shape.Name, d, k, shape.Target);
            }

            foreach (var uri in new[] { dolly, nbdkit })
            {
                string who = uri == dolly ? "dolly" : "nbdkit";
                var one = new List<double>();
                var four = new List<double>();
                for (int round = 0; round < rounds; round++)
                {
                    log($"round {round + 1}/{rounds}: nbdcopy read from {who} over 1 and 4 connections");
                    one.Add(Throughput(await TimeAsync("nbdcopy", ["--connections=1", uri, "null:"], ct).ConfigureAwait(false)));
                    four.Add(Throughput(await TimeAsync("nbdcopy", ["--connections=4", uri, "null:"], ct).ConfigureAwait(false)));
                }

                double m1 = BenchReport.Median(one), m4 = BenchReport.Median(four);
                figures.Add(new BenchFigure("connections (nbdcopy read)", $"{who}: 1 vs 4 connections", m4 / m1, "x", $"{Mb(m1)} -> {Mb(m4)} ({m4 / m1:0.00}x)", null, null));
            }

            return figures;
        }
        finally
        {
            if (!kit.HasExited)
            {
                kit.Kill(entireProcessTree: true);
                await kit.WaitForExitAsync(CancellationToken.None).ConfigureAwait(false);
            }
        }

        double Throughput(TimeSpan t) => size / t.TotalSeconds;
    }

    /// <summary>Scrapes the metered server's /metrics once, so the row is measured with a working exporter, not a silent one.</summary>
    private static async Task ScrapeAsync(Uri url, CancellationToken ct)
    {
        using var http = new HttpClient();
        string text = await http.GetStringAsync(url, ct).ConfigureAwait(false);
        if (!text.Contains(NbdMetrics.Requests, StringComparison.Ordinal))
        {
            throw new CliFailureException(ExitCodes.Unexpected, $"the metered NBD server's {url} has no {NbdMetrics.Requests} after fio ran against it");
        }
    }

    private static void AddRatio(List<BenchFigure> figures, string group, string name, List<double> dolly, List<double> kit, double target)
    {
        double d = BenchReport.Median(dolly), k = BenchReport.Median(kit), ratio = d / k;
        figures.Add(new BenchFigure(group, $"{name}: dolly / nbdkit", ratio, "ratio", $"{Mb(d)} vs {Mb(k)} = {ratio:0.00}", $">= {target:0.0}", ratio >= target,
            Details: new Dictionary<string, double> { ["dolly_bytes_per_s"] = d, ["nbdkit_bytes_per_s"] = k }));
    }

    private static void AddIops(List<BenchFigure> figures, string group, string name, List<double> dolly, List<double> kit, double target)
    {
        double d = BenchReport.Median(dolly), k = BenchReport.Median(kit), ratio = d / k;
        figures.Add(new BenchFigure(group, $"{name}: dolly / nbdkit", ratio, "ratio", $"{d:0} vs {k:0} IOPS = {ratio:0.00}", $">= {target:0.0}", ratio >= target,
            Details: new Dictionary<string, double> { ["dolly_iops"] = d, ["nbdkit_iops"] = k }));
    }

    private static string Mb(double bytesPerSecond) => string.Create(CultureInfo.InvariantCulture, $"{bytesPerSecond / (1 << 20):0} MiB/s");

    private async Task<double> FioIopsAsync(string uri, string mode, FioShape shape, CancellationToken ct)
    {
        string[] flushes = shape.FlushEvery > 0 ? [$"--fsync={shape.FlushEvery}"] : [];
        string output = await RunAsync(
            "fio",
            [
                "--name=bench", "--ioengine=nbd", $"--uri={uri}", $"--rw={mode}", "--bs=4k", $"--iodepth={shape.IoDepth}", "--numjobs=1",
                "--time_based", $"--runtime={(int)fioRuntime.TotalSeconds}", $"--size={size}", "--output-format=json", "--randrepeat=1", .. flushes,
            ],
            ct).ConfigureAwait(false);
        int start = output.IndexOf('{', StringComparison.Ordinal);
        using var doc = JsonDocument.Parse(output[start..]);
        var job = doc.RootElement.GetProperty("jobs")[0];
        return job.GetProperty(mode == "randread" ? "read" : "write").GetProperty("iops").GetDouble();
    }

    private static async Task<TimeSpan> TimeAsync(string file, string[] args, CancellationToken ct)
    {
        var started = Stopwatch.GetTimestamp();
        await RunAsync(file, args, ct).ConfigureAwait(false);
        return Stopwatch.GetElapsedTime(started);
    }

    internal static async Task<string> RunAsync(string file, string[] args, CancellationToken ct)
    {
        var psi = new ProcessStartInfo(file) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in args)
        {
            psi.ArgumentList.Add(a);
        }

        using var p = Process.Start(psi) ?? throw new CliFailureException(ExitCodes.IoError, $"cannot start {file}");
        var stdout = p.StandardOutput.ReadToEndAsync(ct);
        var stderr = p.StandardError.ReadToEndAsync(ct);
        await p.WaitForExitAsync(ct).ConfigureAwait(false);
        if (p.ExitCode != 0)
        {
            throw new CliFailureException(ExitCodes.IoError, $"{file} {string.Join(' ', args)} failed ({p.ExitCode}): {(await stderr.ConfigureAwait(false)).Trim()}");
        }

        return await stdout.ConfigureAwait(false);
    }

    internal static Process StartNbdkit(string socket, string raw)
    {
        var psi = new ProcessStartInfo("nbdkit") { UseShellExecute = false, RedirectStandardError = true };
        // Not --exit-with-parent: it ties nbdkit's life to the thread-pool thread that starts it (PR_SET_PDEATHSIG
        // follows the parent thread), which can retire mid-run. Callers kill it when done.
        foreach (var a in new[] { "--foreground", "-U", socket, "file", raw })
        {
            psi.ArgumentList.Add(a);
        }

        return Process.Start(psi) ?? throw new CliFailureException(ExitCodes.IoError, "cannot start nbdkit");
    }

    internal static async Task WaitForSocketAsync(string path, CancellationToken ct)
    {
        var deadline = Stopwatch.GetTimestamp();
        while (!File.Exists(path))
        {
            if (Stopwatch.GetElapsedTime(deadline) > TimeSpan.FromSeconds(20))
            {
                throw new CliFailureException(ExitCodes.IoError, $"nbdkit did not create its socket {path} within 20 s");
            }

            await Task.Delay(20, ct).ConfigureAwait(false);
        }
    }

    internal static void WriteRandomFile(string path, long length)
    {
        var buffer = new byte[4 << 20];
        using var f = new FileStream(path, FileMode.Create, FileAccess.Write, FileShare.None, 1 << 20);
        for (long done = 0; done < length; done += buffer.Length)
        {
            RandomNumberGenerator.Fill(buffer);
            f.Write(buffer, 0, (int)Math.Min(buffer.Length, length - done));
        }
    }

    internal static string? FindOnPath(string tool) =>
        (Environment.GetEnvironmentVariable("PATH") ?? string.Empty).Split(':').Select(d => Path.Combine(d, tool)).FirstOrDefault(File.Exists);

    /// <summary>
    /// The queue depth of a fio job and how often it flushes (fio's --fsync=N: an NBD_CMD_FLUSH after every N
    /// writes, 0 for never), with the Dolly / nbdkit target of issue 9 for that shape.
    /// </summary>
    private sealed record FioShape(string Name, int IoDepth, int FlushEvery, double Target)
    {
        public static FioShape Deep { get; } = new("iodepth 16", 16, 0, 0.9);

        public static FioShape FlushEach { get; } = new("flush after every write, iodepth 1", 1, 1, 0.9);

        public static FioShape FlushPer32 { get; } = new("flush every 32 writes, iodepth 4", 4, 32, 1.0);
    }
}
