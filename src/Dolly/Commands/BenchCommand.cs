using System.CommandLine;
using System.Diagnostics;
using System.Text.Json;
using Dolly.Bench;
using Dolly.Storage;

namespace Dolly.Commands;

/// <summary><c>dolly bench engine [--json FILE] [--quick] [--dir DIR] [--strict]</c>.</summary>
internal static class BenchCommand
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

        string parent = Path.GetFullPath(dir ?? "/var/tmp");
        if (!Directory.Exists(parent))
        {
            throw new CliFailureException(ExitCodes.NotFound, $"benchmark directory '{parent}' does not exist");
        }

        string root = Path.Combine(parent, $"dolly-bench-{Guid.NewGuid():N}"[..24]);
        try
        {
            Directory.CreateDirectory(root);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            throw new CliFailureException(ExitCodes.IoError, $"cannot create a scratch directory in '{parent}': {ex.Message}");
        }

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

        var duration = Stopwatch.GetElapsedTime(started);
        context.Out.Write(BenchReport.Table(figures));
        int missed = figures.Count(f => f.Pass == false);
        int met = figures.Count(f => f.Pass == true);
        context.Host.Out.WriteLine(
            $"{met} target(s) met, {missed} missed; block size {ByteSize.Format(blockSize)}; {machine.Processors} CPU(s) {machine.Cpu}, {machine.FileSystem}; load {machine.LoadAverage} at start, {BenchReport.LoadAverage()} at end; {duration.TotalSeconds:0} s{(quick ? " (--quick: sizes too small for meaningful figures)" : string.Empty)}");
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

}
