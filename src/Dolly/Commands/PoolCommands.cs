using System.CommandLine;
using Dolly.Storage;
using Spectre.Console;

namespace Dolly.Commands;

/// <summary><c>dolly pool init|info|check</c>.</summary>
internal static class PoolCommands
{
    private const string InfoJsonExample = """
        JSON (-o json), sizes in bytes:
          { "directory": "/home/me/.local/share/dolly/pool", "id": "0d9f...", "blockSize": 65536, "generation": 12,
            "volumes": 2, "snapshots": 1, "logicalBytes": 32212254720, "dataBytesUsed": 39845888,
            "dataBlocksUsed": 608, "dataBlocksFree": 0, "dataFileBytes": 39845888, "metadataBytes": 98304 }
        """;

    private const string CheckJsonExample = """
        JSON (-o json):
          { "directory": "/pools/a", "clean": false, "devices": 3, "metadataPagesVerified": 24, "dataBlocksVerified": 608,
            "problems": [ { "subject": "volume 'web' (id 1)", "message": "block 0 (physical block 0), sector 0 ... failed its checksum" } ] }
        """;

    public static Command Build(CliContext context)
    {
        var pool = new Command("pool", "Create, describe and verify the pool (a directory holding all volumes)");

        var blockSize = new Option<string?>("--block-size")
        {
            Description = "Data block size, the unit of copy-on-write sharing: a power of two from 4Ki to 1Mi (default 64Ki)",
            HelpName = "SIZE",
        };
        var init = new Command("init", "Create a new, empty pool (in --pool DIR or the default location)") { blockSize };
        init.SetAction(parse => Init(context, parse, parse.GetValue(blockSize)));
        pool.Subcommands.Add(init);

        var infoOutput = CliContext.OutputOption();
        var info = new Command("info", "Show pool-wide figures: devices, data and metadata space\n" + InfoJsonExample) { infoOutput };
        info.SetAction(parse => Info(context, parse, parse.GetValue(infoOutput) == "json"));
        pool.Subcommands.Add(info);

        var checkOutput = CliContext.OutputOption();
        var check = new Command(
            "check",
            "Verify every invariant: block maps, reference counts, free space and every checksum of data and metadata. " +
            "Exits 9 when a problem is found, naming each one.\n" + CheckJsonExample)
        {
            checkOutput,
        };
        check.SetAction(parse => Check(context, parse, parse.GetValue(checkOutput) == "json"));
        pool.Subcommands.Add(check);
        return pool;
    }

    private static int Init(CliContext context, ParseResult parse, string? blockSize)
    {
        var (dir, _) = context.PoolDirectory(parse);
        var options = new PoolCreateOptions();
        if (blockSize is not null)
        {
            long bs = CliContext.ParseSize(blockSize, "--block-size");
            options = options with { BlockSize = (int)Math.Clamp(bs, 0, int.MaxValue) };
        }

        using var pool = Pool.Create(dir, options, context.Host.FileSystem).OrFail();
        context.Host.Out.WriteLine($"created pool '{dir}' (block size {ByteSize.Format(pool.BlockSize)})");
        return ExitCodes.Ok;
    }

    private static int Info(CliContext context, ParseResult parse, bool json)
    {
        using var pool = context.OpenPool(parse);
        var i = pool.GetInfo();
        long used = i.DataBlocksUsed * i.BlockSize;
        if (json)
        {
            context.WriteJson(
                new PoolInfoJson(i.Directory, i.Id, i.BlockSize, i.Generation, i.Volumes, i.Snapshots, i.LogicalBytes, used, i.DataBlocksUsed, i.DataBlocksFree, i.DataFileBytes, i.MetadataBytes),
                DollyJson.Default.PoolInfoJson);
            return ExitCodes.Ok;
        }

        var table = CliContext.NewTable("FIELD", "VALUE");
        table.AddRow("directory", Markup.Escape(i.Directory));
        table.AddRow("id", i.Id.ToString());
        table.AddRow("block size", ByteSize.Format(i.BlockSize));
        table.AddRow("volumes", i.Volumes.ToString(System.Globalization.CultureInfo.InvariantCulture));
        table.AddRow("snapshots", i.Snapshots.ToString(System.Globalization.CultureInfo.InvariantCulture));
        table.AddRow("logical size (all devices)", CliContext.Bytes(i.LogicalBytes));
        table.AddRow("data in use", CliContext.Bytes(used));
        table.AddRow("data file on disk", CliContext.Bytes(i.DataFileBytes));
        table.AddRow("metadata", CliContext.Bytes(i.MetadataBytes));
        table.AddRow("generation", i.Generation.ToString(System.Globalization.CultureInfo.InvariantCulture));
        context.Out.Write(table);
        return ExitCodes.Ok;
    }

    private static int Check(CliContext context, ParseResult parse, bool json)
    {
        var (dir, isExplicit) = context.PoolDirectory(parse);
        if (!Directory.Exists(dir))
        {
            throw new CliFailureException(
                isExplicit ? ExitCodes.NotAPool : ExitCodes.NotFound,
                $"pool directory '{dir}' does not exist");
        }

        if (!File.Exists(Path.Combine(dir, "meta.dolly")))
        {
            throw new CliFailureException(ExitCodes.NotAPool, $"'{dir}' is not a Dolly pool: it has no meta.dolly");
        }

        var started = System.Diagnostics.Stopwatch.StartNew();
        var report = Pool.CheckDirectory(dir, context.Host.FileSystem);
        if (json)
        {
            context.WriteJson(
                new CheckJson(dir, report.IsClean, report.Devices, report.MetadataPagesVerified, report.DataBlocksVerified, report.Problems.Select(p => new ProblemJson(p.Subject, p.Message)).ToList()),
                DollyJson.Default.CheckJson);
        }
        else if (report.IsClean)
        {
            context.Host.Out.WriteLine(
                $"pool '{dir}' is clean: {report.Devices} device(s), {report.MetadataPagesVerified} metadata page(s) and {report.DataBlocksVerified} data block(s) verified in {started.Elapsed.TotalSeconds:0.00} s");
        }
        else
        {
            var table = CliContext.NewTable("OBJECT", "PROBLEM");
            foreach (var p in report.Problems)
            {
                table.AddRow(Markup.Escape(p.Subject), Markup.Escape(p.Message));
            }

            context.Out.Write(table);
        }

        if (!report.IsClean)
        {
            context.Host.Error.WriteLine($"error: pool '{dir}' has {report.Problems.Count} problem(s); first: {report.Problems[0]}");
            return ExitCodes.Corrupt;
        }

        return ExitCodes.Ok;
    }
}
