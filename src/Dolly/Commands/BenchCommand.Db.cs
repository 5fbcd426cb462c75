using System.CommandLine;
using System.Diagnostics;
using Dolly.Bench;

namespace Dolly.Commands;

/// <summary><c>dolly bench db</c>: PostgreSQL on a Dolly volume against the same stack on a plain file.</summary>
internal static partial class BenchCommand
{
    private static Command BuildDb(CliContext context)
    {
        var json = new Option<string?>("--json") { Description = "Also write the figures as JSON to this file", HelpName = "FILE" };
        var quick = new Option<bool>("--quick") { Description = "512 MiB volumes, scale 1, one 3 s round, a snapshot every second: a smoke test; figures are not meaningful" };
        var dir = new Option<string?>("--dir") { Description = "Directory for the pool, the plain file and the mounts (default /var/tmp); a subdirectory is created and deleted afterwards", HelpName = "DIR" };
        var size = new Option<string>("--size") { Description = "Size of each volume (the Dolly volume and the plain file)", DefaultValueFactory = _ => "4Gi", HelpName = "SIZE" };
        var scale = new Option<int>("--scale") { Description = "pgbench scale factor (100,000 accounts, about 15 MiB, each)", DefaultValueFactory = _ => 20 };
        var rounds = new Option<int>("--rounds") { Description = "Rounds; each runs pgbench on Dolly, on nbdkit, then on Dolly with snapshots; medians are reported", DefaultValueFactory = _ => 5 };
        var seconds = new Option<int>("--seconds") { Description = "Duration of each pgbench run (pgbench -T)", DefaultValueFactory = _ => 30 };
        var interval = new Option<int>("--snapshot-interval") { Description = "Seconds between engine snapshots in the snapshot rounds", DefaultValueFactory = _ => 10 };
        var pgBin = new Option<string?>("--pg-bin") { Description = "Directory of PostgreSQL's initdb, pg_ctl, postgres, pgbench and psql (default: the newest /usr/lib/postgresql/N/bin)", HelpName = "DIR" };
        var strict = new Option<bool>("--strict") { Description = "Exit 13 when any target is missed" };
        var db = new Command(
            "db",
            "Measure PostgreSQL on a Dolly volume: ext4 over nbdfuse and a loop device, over Dolly's NBD server and over nbdkit's file plugin " +
            "serving a plain file in the same directory; pgbench -c 4 -j 2 rounds alternate between them (target TPS ratio >= 1.0), plus Dolly " +
            "with an engine snapshot every 10 s (target >= 0.8 of without). Runs as root (PostgreSQL itself runs as the postgres user); needs " +
            "PostgreSQL, FUSE, nbdfuse, nbdkit and e2fsprogs (scripts/install-test-deps.sh). Mounts, loop devices and servers are removed " +
            "at the end, also after a failure or Ctrl-C.")
        {
            json, quick, dir, size, scale, rounds, seconds, interval, pgBin, strict,
        };
        db.SetAction(async (parse, ct) =>
        {
            bool q = parse.GetValue(quick);
            var options = q
                ? DbBenchOptions.Quick
                : new DbBenchOptions(
                    CliContext.ParseSize(parse.GetValue(size), "--size"),
                    parse.GetValue(scale),
                    parse.GetValue(rounds),
                    TimeSpan.FromSeconds(parse.GetValue(seconds)),
                    TimeSpan.FromSeconds(parse.GetValue(interval)),
                    Clients: 4,
                    Threads: 2);
            Validate(options);
            var tools = DbTools.Locate(parse.GetValue(pgBin), context.Host.GetEnvironmentVariable("PATH") ?? Environment.GetEnvironmentVariable("PATH"));

            var (parent, root) = ScratchDirectory(parse.GetValue(dir), "dolly-bench-db");
            var date = DateTimeOffset.UtcNow;
            var started = Stopwatch.GetTimestamp();
            var machine = BenchReport.Machine(parent);
            var bench = new DbBench(root, options, tools, message =>
            {
                context.Host.Error.WriteLine($"bench: {message}");
                context.Host.Error.Flush();
            });
            IReadOnlyList<BenchFigure> figures;
            try
            {
                figures = await bench.RunAsync(ct);
            }
            finally
            {
                RemoveScratch(context, root, bench.Leftovers);
            }

            int code = Report(context, figures, new ReportInfo(parse.GetValue(json), q, parse.GetValue(strict), 0, machine, date, Stopwatch.GetElapsedTime(started)));
            if (bench.Leftovers.Count > 0)
            {
                throw new CliFailureException(ExitCodes.IoError, $"the benchmark ran but could not clean up: {string.Join("; ", bench.Leftovers)}");
            }

            return code;
        });
        return db;
    }

    private static void Validate(DbBenchOptions o)
    {
        if (o.VolumeSize < 256L << 20 || o.VolumeSize % 4096 != 0)
        {
            throw new CliFailureException(ExitCodes.InvalidArgument, $"--size {o.VolumeSize} must be a multiple of 4096 and at least 256 MiB (ext4 and the database live there)");
        }

        if (o.Scale < 1 || o.Rounds < 1 || o.RoundTime < TimeSpan.FromSeconds(1) || o.SnapshotInterval < TimeSpan.FromSeconds(1))
        {
            throw new CliFailureException(ExitCodes.InvalidArgument, "--scale, --rounds, --seconds and --snapshot-interval must be at least 1");
        }
    }

    /// <summary>
    /// Deletes the scratch directory, unless something is still mounted in it: deleting through a live mount
    /// would walk into the FUSE file and the database, so the directory stays and the leftovers are named.
    /// </summary>
    private static void RemoveScratch(CliContext context, string root, IReadOnlyList<string> leftovers)
    {
        if (leftovers.Count > 0)
        {
            context.Host.Error.WriteLine($"warning: left '{root}' in place: {string.Join("; ", leftovers)}");
            return;
        }

        try
        {
            Directory.Delete(root, recursive: true);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            context.Host.Error.WriteLine($"warning: could not remove '{root}': {ex.Message}");
        }
    }
}
