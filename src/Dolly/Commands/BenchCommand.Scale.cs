using System.CommandLine;
using System.Diagnostics;
using Dolly.Bench;

namespace Dolly.Commands;

/// <summary><c>dolly bench scale</c>: the control plane's cost per event as the cluster grows to 10,000 snapshots.</summary>
internal static partial class BenchCommand
{
    private static Command BuildScale(CliContext context)
    {
        var json = new Option<string?>("--json") { Description = "Also write the figures as JSON to this file", HelpName = "FILE" };
        var quick = new Option<bool>("--quick") { Description = "200 unrelated snapshots and 3 rounds: a smoke test; figures are not meaningful" };
        var objects = new Option<int>("--objects") { Description = "Unrelated VolumeSnapshots present in the last phase", DefaultValueFactory = _ => ScaleSizes.Full.Objects };
        var dir = new Option<string?>("--dir") { Description = "Directory for the scratch pool and the API server's state (default /var/tmp); a subdirectory is created and deleted afterwards", HelpName = "DIR" };
        var verbose = new Option<bool>("--verbose", "-v") { Description = "Pass --verbose to dolly up: its API server, CSI and controller logs go to the console, with timestamps" };
        var strict = new Option<bool>("--strict") { Description = "Exit 13 when any target is missed" };
        var scale = new Command(
            "scale",
            "Measure the control plane as the cluster grows: dolly up runs in-process on a scratch pool; rounds of VolumeSnapshot apply -> readyToUse " +
            "and restore claim apply -> Bound run with no, 100 and 10,000 unrelated ready VolumeSnapshots present (targets: snapshot p50 with 10,000 " +
            "<= 1.2x of none, restore p50 with 10,000 <= 50 ms, process CPU per round with 10,000 within 1.5x of 100), then kubectl get volumesnapshots -A " +
            "over all of them (target <= 0.5 s). Takes minutes: the unrelated snapshots are real ones.")
        {
            json, quick, objects, dir, verbose, strict,
        };
        scale.SetAction(async (parse, ct) =>
        {
            bool q = parse.GetValue(quick);
            var sizes = q ? ScaleSizes.Quick : ScaleSizes.Full with { Objects = parse.GetValue(objects) };
            if (sizes.Objects <= sizes.Baseline)
            {
                throw new CliFailureException(ExitCodes.InvalidArgument, $"--objects must be more than {sizes.Baseline} (the baseline phase's count)");
            }

            var (parent, root) = ScratchDirectory(parse.GetValue(dir), "dolly-bench-scale");
            var date = DateTimeOffset.UtcNow;
            var started = Stopwatch.GetTimestamp();
            var machine = BenchReport.Machine(parent);
            var figures = await InScratchAsync(context, root, say => new ScaleBench(root, sizes, parse.GetValue(verbose), "kubectl", say).RunAsync(ct));
            return Report(context, figures, new ReportInfo(parse.GetValue(json), q, parse.GetValue(strict), 65536, machine, date, Stopwatch.GetElapsedTime(started)));
        });
        return scale;
    }
}
