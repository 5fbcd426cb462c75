using System.CommandLine;
using System.Diagnostics;
using System.Text.Json;
using Dolly.Bench;
using Dolly.Storage;

namespace Dolly.Commands;

/// <summary><c>dolly bench engine [--json FILE] [--quick] [--dir DIR] [--strict]</c>.</summary>
internal static partial class BenchCommand
{
    public static Command Build(CliContext context)
    {
        var bench = new Command("bench", "Benchmarks with targets; results go in docs/BENCHMARKS.md");
        var json = new Option<string?>("--json") { Description = "Also write the figures as JSON to this file", HelpName = "FILE" };
        var quick = new Option<bool>("--quick") { Description = "Small sizes (a smoke test for CI, seconds instead of minutes); figures are not meaningful" };
        var dir = new Option<string?>("--dir")
        {
            Description = "Directory for the scratch pools and baseline files (default /var/tmp); a subdirectory is created and deleted afterwards",
            HelpName = "DIR",
        };
        var strict = new Option<bool>("--strict") { Description = "Exit 13 when any target is missed" };
        var blockSize = new Option<string>("--block-size")
        {
            Description = "Block size of the scratch pools (the pool init default is 64Ki)",
            DefaultValueFactory = _ => "64Ki",
            HelpName = "SIZE",
        };
        var only = new Option<string[]>("--only")
        {
            Description = $"Run only these sections: {string.Join(", ", EngineBench.Sections)}",
            AllowMultipleArgumentsPerToken = true,
            HelpName = "SECTION",
        };
        var engine = new Command(
            "engine",
            "Measure the storage engine in one run: snapshot and clone latency on small and huge volumes, sequential and random I/O " +
            "against a plain file, reads with many snapshots in the lineage, metadata overhead, snapshot delete. " +
            "The full run needs about 14 GiB of free space.")
        {
            json, quick, dir, strict, blockSize, only,
        };
        engine.SetAction(parse => RunEngine(
            context,
            new BenchRequest(parse.GetValue(json), parse.GetValue(quick), parse.GetValue(dir), parse.GetValue(strict), parse.GetValue(blockSize)!, parse.GetValue(only) ?? [])));
        bench.Subcommands.Add(engine);
        bench.Subcommands.Add(BuildNbd(context));
        bench.Subcommands.Add(BuildDb(context));
        bench.Subcommands.Add(BuildApi(context));
        bench.Subcommands.Add(BuildE2e(context));
        bench.Subcommands.Add(BuildScale(context));
        return bench;
    }

    private sealed record BenchRequest(string? JsonFile, bool Quick, string? Dir, bool Strict, string BlockSize, string[] Only);

    private static int RunEngine(CliContext context, BenchRequest request)
    {
        var (jsonFile, quick, dir, strict, _, _) = request;
        int blockSize = (int)Math.Clamp(CliContext.ParseSize(request.BlockSize, "--block-size"), 0, int.MaxValue);
        var sections = request.Only.Length == 0 ? EngineBench.Sections.ToHashSet() : request.Only.SelectMany(o => o.Split(',')).ToHashSet();
        if (sections.FirstOrDefault(s => !EngineBench.Sections.Contains(s)) is { } unknown)
        {
            throw new CliFailureException(ExitCodes.InvalidArgument, $"--only: unknown section '{unknown}' (sections: {string.Join(", ", EngineBench.Sections)})");
        }

        var (parent, root) = ScratchDirectory(dir, "dolly-bench");

        var date = DateTimeOffset.UtcNow;
        var started = Stopwatch.GetTimestamp();
        var machine = BenchReport.Machine(parent);
        IReadOnlyList<BenchFigure> figures;
        try
        {
            var sizes = quick ? BenchSizes.Quick : BenchSizes.Full;
            var bench = new EngineBench(root, sizes, blockSize, sections, message =>
            {
                context.Host.Error.WriteLine($"bench: {message}");
                context.Host.Error.Flush();
            });
            figures = bench.Run();
        }
        catch (CliFailureException ex) when (ex.ExitCode == ExitCodes.InvalidArgument && ex.Message.Contains("block size", StringComparison.Ordinal))
        {
            throw new CliFailureException(ExitCodes.InvalidArgument, $"--block-size: {ex.Message}");
        }
        catch (IOException ex)
        {
            bool full = (ex.HResult & 0xFFFF) == 28 || ex.Message.Contains("No space left", StringComparison.OrdinalIgnoreCase);
            throw new CliFailureException(full ? ExitCodes.NoSpace : ExitCodes.IoError, $"benchmark in '{root}' failed: {ex.Message}");
        }
        finally
        {
            try
            {
                Directory.Delete(root, recursive: true);
            }
            catch (IOException)
            {
                context.Host.Error.WriteLine($"warning: could not remove '{root}'");
            }
        }

        return Report(context, figures, new ReportInfo(jsonFile, quick, strict, blockSize, machine, date, Stopwatch.GetElapsedTime(started)));
    }

    private sealed record ReportInfo(string? JsonFile, bool Quick, bool Strict, int BlockSize, BenchMachineJson Machine, DateTimeOffset Date, TimeSpan Duration);

    /// <summary>Prints the table and the summary line, writes the JSON file if asked, and picks the exit code.</summary>
    private static int Report(CliContext context, IReadOnlyList<BenchFigure> figures, ReportInfo info)
    {
        var (jsonFile, quick, strict, blockSize, machine, date, duration) = info;
        context.Out.Write(BenchReport.Table(figures));
        int missed = figures.Count(f => f.Pass == false);
        int met = figures.Count(f => f.Pass == true);
        context.Host.Out.WriteLine(
            $"{met} target(s) met, {missed} missed; {(blockSize > 0 ? $"block size {ByteSize.Format(blockSize)}; " : string.Empty)}{machine.Processors} CPU(s) {machine.Cpu}, {machine.FileSystem}; load {machine.LoadAverage} at start, {BenchReport.LoadAverage()} at end; {duration.TotalSeconds:0} s{(quick ? " (--quick: sizes too small for meaningful figures)" : string.Empty)}");
        if (jsonFile is not null)
        {
            string command = "dolly " + string.Join(' ', context.Args);
            var doc = BenchReport.Json(figures, command, quick, blockSize, machine, date, duration);
            try
            {
                File.WriteAllText(jsonFile, JsonSerializer.Serialize(doc, DollyJson.Default.BenchJson));
            }
            catch (IOException ex)
            {
                throw new CliFailureException(ExitCodes.IoError, $"cannot write '{jsonFile}': {ex.Message}");
            }
            catch (UnauthorizedAccessException)
            {
                throw new CliFailureException(ExitCodes.IoError, $"cannot write '{jsonFile}': permission denied");
            }

            context.Host.Error.WriteLine($"wrote {jsonFile}");
        }

        return strict && missed > 0 ? ExitCodes.TargetMissed : ExitCodes.Ok;
    }

    /// <summary><c>dolly bench api</c>: the embedded API server with 10,000 VolumeSnapshots, kubectl and watches.</summary>
    private static Command BuildApi(CliContext context)
    {
        var json = new Option<string?>("--json") { Description = "Also write the figures as JSON to this file", HelpName = "FILE" };
        var quick = new Option<bool>("--quick") { Description = "500 objects and 50 watch samples: a smoke test; figures are not meaningful" };
        var objects = new Option<int>("--objects") { Description = "VolumeSnapshots to create", DefaultValueFactory = _ => 10_000 };
        var strict = new Option<bool>("--strict") { Description = "Exit 13 when any target is missed" };
        var api = new Command(
            "api",
            "Measure the embedded API server: creating VolumeSnapshots (objects/s), 'kubectl get volumesnapshots -A' over them (target <= 1 s), " +
            "watch event latency p50/p99 (target p50 <= 5 ms), resident memory with all objects loaded")
        {
            json, quick, objects, strict,
        };
        api.SetAction(async (parse, ct) =>
        {
            bool q = parse.GetValue(quick);
            int n = q ? 500 : parse.GetValue(objects);
            if (n < 1)
            {
                throw new CliFailureException(ExitCodes.InvalidArgument, "--objects must be at least 1");
            }

            var date = DateTimeOffset.UtcNow;
            var started = Stopwatch.GetTimestamp();
            var machine = BenchReport.Machine(Path.GetTempPath());
            context.Host.Error.WriteLine($"bench: creating {n} VolumeSnapshots, listing them with kubectl, timing watch events");
            var r = await Dolly.Api.Bench.ApiBenchmark.RunAsync(new Dolly.Api.Bench.ApiBenchmarkOptions(n, WatchSamples: q ? 50 : 500), ct);
            const string group = "embedded API server";
            var figures = new List<BenchFigure>
            {
                new(group, $"create {r.Objects} VolumeSnapshots", r.CreatesPerSecond, "objects/s", $"{r.CreatesPerSecond:0} objects/s", null, null, "each durable in SQLite before the reply"),
                r.KubectlGetAllSeconds is { } k
                    ? new(group, $"kubectl get volumesnapshots -A ({r.Objects} objects)", k, "s", $"{k:0.00} s", "<= 1 s", k <= 1.0)
                    : new(group, "kubectl get volumesnapshots -A", 0, "s", "skipped", "<= 1 s", null, "kubectl not found"),
                new(group, "watch event latency p50", r.WatchLatencyP50Milliseconds, "ms", $"{r.WatchLatencyP50Milliseconds:0.00} ms", "<= 5 ms", r.WatchLatencyP50Milliseconds <= 5.0),
                new(group, "watch event latency p99", r.WatchLatencyP99Milliseconds, "ms", $"{r.WatchLatencyP99Milliseconds:0.00} ms", null, null),
                new(group, $"resident memory with {r.Objects} objects", r.ResidentBytes, "bytes", ByteSize.Format(r.ResidentBytes), null, null, "working set of the whole dolly process"),
            };
            return Report(context, figures, new ReportInfo(parse.GetValue(json), q, parse.GetValue(strict), 0, machine, date, Stopwatch.GetElapsedTime(started)));
        });
        return api;
    }

    /// <summary><c>dolly bench e2e</c>: dolly up in-process, measured through the API as a user sees it.</summary>
    private static Command BuildE2e(CliContext context)
    {
        var json = new Option<string?>("--json") { Description = "Also write the figures as JSON to this file", HelpName = "FILE" };
        var quick = new Option<bool>("--quick") { Description = "5 rounds and 10 namespaces: a smoke test; figures are not meaningful" };
        var dir = new Option<string?>("--dir") { Description = "Directory for the scratch pool and the API server's state (default /var/tmp); a subdirectory is created and deleted afterwards", HelpName = "DIR" };
        var verbose = new Option<bool>("--verbose", "-v") { Description = "Pass --verbose to dolly up: its API server, CSI and controller logs go to the console, with timestamps" };
        var strict = new Option<bool>("--strict") { Description = "Exit 13 when any target is missed" };
        var e2e = new Command(
            "e2e",
            "Measure the whole system through the API: dolly up runs in-process on a scratch pool; VolumeSnapshot apply -> readyToUse (target p50 <= 100 ms), " +
            "restore claim apply -> Bound from snapshots of a 1 GiB and a 1 TiB volume (target p50 <= 200 ms, within 1.5x of each other), " +
            "100 restores of one snapshot in 100 namespaces at once (target <= 5 s from the first apply to the last Bound). Conditions are seen through watches.")
        {
            json, quick, dir, verbose, strict,
        };
        e2e.SetAction(async (parse, ct) =>
        {
            bool q = parse.GetValue(quick);
            var (parent, root) = ScratchDirectory(parse.GetValue(dir), "dolly-bench-e2e");

            var date = DateTimeOffset.UtcNow;
            var started = Stopwatch.GetTimestamp();
            var machine = BenchReport.Machine(parent);
            var figures = await InScratchAsync(context, root, say => new E2eBench(root, q ? E2eSizes.Quick : E2eSizes.Full, parse.GetValue(verbose), say).RunAsync(ct));

            return Report(context, figures, new ReportInfo(parse.GetValue(json), q, parse.GetValue(strict), 65536, machine, date, Stopwatch.GetElapsedTime(started)));
        });
        return e2e;
    }

    private const string NbdTransferSection = "transfer";

    /// <summary><c>dolly bench nbd</c>: Dolly's NBD server against nbdkit's file plugin with nbdcopy and fio.</summary>
    private static Command BuildNbd(CliContext context)
    {
        var json = new Option<string?>("--json") { Description = "Also write the figures as JSON to this file", HelpName = "FILE" };
        var quick = new Option<bool>("--quick") { Description = "64 MiB, one round, 1 s of fio: a smoke test; figures are not meaningful" };
        var dir = new Option<string?>("--dir") { Description = "Directory for the pool, the raw file and the source image (default /var/tmp); a subdirectory is created and deleted afterwards", HelpName = "DIR" };
        var size = new Option<string>("--size") { Description = "Bytes moved by each sequential transfer", DefaultValueFactory = _ => "2Gi", HelpName = "SIZE" };
        var rounds = new Option<int>("--rounds") { Description = "Rounds, alternating Dolly and nbdkit; medians are reported", DefaultValueFactory = _ => 3 };
        var fioSeconds = new Option<int>("--fio-seconds") { Description = "Run time of each fio random-I/O job", DefaultValueFactory = _ => 5 };
        var strict = new Option<bool>("--strict") { Description = "Exit 13 when any target is missed" };
        var only = new Option<string[]>("--only")
        {
            Description = $"Run only these sections: {NbdTransferSection} (nbdcopy and fio against nbdkit), {NbdMemoryBench.Section} (server RSS with 64 clients that read nothing)",
            AllowMultipleArgumentsPerToken = true,
            HelpName = "SECTION",
        };
        var nbd = new Command(
            "nbd",
            "Measure the NBD server against nbdkit's file plugin serving a raw file in the same directory: nbdcopy sequential write and read " +
            "(target ratio >= 1.0), fio 4 KiB random read and write (target >= 0.8), 1 vs 4 connections (needs nbdcopy, nbdkit and fio); " +
            "and the server's RSS with 64 connections sending 32 MiB reads and reading nothing (target <= 256 MiB above idle, back to idle after they leave).")
        {
            json, quick, dir, size, rounds, fioSeconds, strict, only,
        };
        nbd.SetAction(async (parse, ct) =>
        {
            var sections = (parse.GetValue(only) ?? []).SelectMany(o => o.Split(',')).ToHashSet();
            if (sections.FirstOrDefault(s => s is not (NbdTransferSection or NbdMemoryBench.Section)) is { } unknown)
            {
                throw new CliFailureException(ExitCodes.InvalidArgument, $"--only '{unknown}' is not a section of the NBD benchmark: {NbdTransferSection}, {NbdMemoryBench.Section}");
            }

            bool all = sections.Count == 0;
            bool q = parse.GetValue(quick);
            long bytes = q ? 64L << 20 : CliContext.ParseSize(parse.GetValue(size), "--size");
            if (bytes <= 0 || bytes % 4096 != 0)
            {
                throw new CliFailureException(ExitCodes.InvalidArgument, $"--size {bytes} must be a positive multiple of 4096");
            }

            int r = q ? 1 : parse.GetValue(rounds);
            int seconds = q ? 1 : parse.GetValue(fioSeconds);
            if (r < 1 || seconds < 1)
            {
                throw new CliFailureException(ExitCodes.InvalidArgument, "--rounds and --fio-seconds must be at least 1");
            }

            var (parent, root) = ScratchDirectory(parse.GetValue(dir), "dolly-bench-nbd");
            var date = DateTimeOffset.UtcNow;
            var started = Stopwatch.GetTimestamp();
            var machine = BenchReport.Machine(parent);
            var figures = await InScratchAsync(context, root, async say =>
            {
                var results = new List<BenchFigure>();
                if (all || sections.Contains(NbdTransferSection))
                {
                    results.AddRange(await new NbdBench(root, bytes, r, TimeSpan.FromSeconds(seconds), say).RunAsync(ct));
                }

                if (all || sections.Contains(NbdMemoryBench.Section))
                {
                    results.AddRange(await new NbdMemoryBench(root, q, say).RunAsync(ct));
                }

                return results;
            });

            return Report(context, figures, new ReportInfo(parse.GetValue(json), q, parse.GetValue(strict), 65536, machine, date, Stopwatch.GetElapsedTime(started)));
        });
        return nbd;
    }

    /// <summary>Runs a bench with progress on stderr, then removes its scratch directory whatever happened.</summary>
    private static async Task<IReadOnlyList<BenchFigure>> InScratchAsync(CliContext context, string root, Func<Action<string>, Task<IReadOnlyList<BenchFigure>>> run)
    {
        try
        {
            return await run(message =>
            {
                context.Host.Error.WriteLine($"bench: {message}");
                context.Host.Error.Flush();
            }).ConfigureAwait(false);
        }
        finally
        {
            try
            {
                Directory.Delete(root, recursive: true);
            }
            catch (IOException)
            {
                context.Host.Error.WriteLine($"warning: could not remove '{root}'");
            }
        }
    }

    /// <summary>A fresh scratch directory <c>PREFIX-xxxx</c> in <paramref name="dir"/> (default /var/tmp), which must exist.</summary>
    private static (string Parent, string Root) ScratchDirectory(string? dir, string prefix)
    {
        string parent = Path.GetFullPath(dir ?? "/var/tmp");
        if (!Directory.Exists(parent))
        {
            throw new CliFailureException(ExitCodes.NotFound, $"benchmark directory '{parent}' does not exist");
        }

        string root = Path.Combine(parent, $"{prefix}-{Guid.NewGuid():N}"[..(prefix.Length + 13)]);
        try
        {
            Directory.CreateDirectory(root);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            throw new CliFailureException(ExitCodes.IoError, $"cannot create a scratch directory in '{parent}': {ex.Message}");
        }

        return (parent, root);
    }
}
