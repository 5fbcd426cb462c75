using System.CommandLine;
using System.Diagnostics;
using System.Text.Json;
using Dolly.Bench;

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
        var engine = new Command(
            "engine",
            "Measure the storage engine in one run: snapshot and clone latency on small and huge volumes, sequential and random I/O " +
            "against a plain file, reads with many snapshots in the lineage, metadata overhead, snapshot delete. " +
            "The full run needs about 14 GiB of free space.")
        {
            json, quick, dir, strict,
        };
        engine.SetAction(parse => RunEngine(context, parse.GetValue(json), parse.GetValue(quick), parse.GetValue(dir), parse.GetValue(strict)));
        bench.Subcommands.Add(engine);
        return bench;
    }

    private static int RunEngine(CliContext context, string? jsonFile, bool quick, string? dir, bool strict)
    {
        string parent = Path.GetFullPath(dir ?? "/var/tmp");
        if (!Directory.Exists(parent))
        {
            throw new CliFailureException(ExitCodes.NotFound, $"benchmark directory '{parent}' does not exist");
        }

        string root = Path.Combine(parent, $"dolly-bench-{Guid.NewGuid():N}"[..24]);
        Directory.CreateDirectory(root);
        var date = DateTimeOffset.UtcNow;
        var started = Stopwatch.GetTimestamp();
        var machine = BenchReport.Machine(parent);
        IReadOnlyList<BenchFigure> figures;
        try
        {
            var sizes = quick ? BenchSizes.Quick : BenchSizes.Full;
            var bench = new EngineBench(root, sizes, message =>
            {
                context.Host.Error.WriteLine($"bench: {message}");
                context.Host.Error.Flush();
            });
            figures = bench.Run();
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
            $"{met} target(s) met, {missed} missed; {machine.Processors} CPU(s) {machine.Cpu}, {machine.FileSystem}; {duration.TotalSeconds:0} s{(quick ? " (--quick: sizes too small for meaningful figures)" : string.Empty)}");
        if (jsonFile is not null)
        {
            string command = "dolly " + string.Join(' ', context.Args);
            var doc = BenchReport.Json(figures, command, quick, machine, date, duration);
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
