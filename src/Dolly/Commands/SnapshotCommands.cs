using System.CommandLine;
using Dolly.Storage;
using Spectre.Console;

namespace Dolly.Commands;

/// <summary><c>dolly snapshot create|list|delete|diff</c>.</summary>
internal static class SnapshotCommands
{
    private const string DiffJsonExample = """
        JSON (-o json):
          { "base": "s1", "target": "s2", "changedBytes": 131072,
            "ranges": [ { "offset": 0, "length": 65536 }, { "offset": 1048576, "length": 65536 } ] }
        """;

    public static Command Build(CliContext context)
    {
        var snapshot = new Command("snapshot", "Immutable point-in-time images of volumes, taken instantly whatever the volume's size");

        var createVolume = VolumeCommands.NameArgument("VOLUME", "Volume to snapshot");
        var createName = VolumeCommands.NameArgument("NAME", "Snapshot name");
        var create = new Command("create", "Take a snapshot of a volume") { createVolume, createName };
        create.SetAction(parse => Create(context, parse, parse.GetValue(createVolume)!, parse.GetValue(createName)!));
        snapshot.Subcommands.Add(create);

        var listOutput = CliContext.OutputOption();
        var listVolume = new Option<string?>("--volume") { Description = "Only the snapshots of this volume", HelpName = "VOLUME" };
        var list = new Command(
            "list",
            "List snapshots with their space: SIZE, ALLOCATED, EXCLUSIVE (freed by deleting it), SOURCE (the volume)\n" +
            VolumeCommands.ListJsonExample.Replace("\"db\", \"kind\": \"volume\"", "\"db-1\", \"kind\": \"snapshot\"", StringComparison.Ordinal).Replace("null", "\"db\"", StringComparison.Ordinal))
        {
            listOutput, listVolume,
        };
        list.Aliases.Add("ls");
        list.SetAction(parse => VolumeCommands.List(context, parse, DeviceKind.Snapshot, parse.GetValue(listVolume), parse.GetValue(listOutput) == "json"));
        snapshot.Subcommands.Add(list);

        var deleteName = VolumeCommands.NameArgument("NAME", "Snapshot to delete");
        var delete = new Command("delete", "Delete a snapshot; blocks still used by its volume or clones stay") { deleteName };
        delete.Aliases.Add("rm");
        delete.SetAction(parse => VolumeCommands.Delete(context, parse, parse.GetValue(deleteName)!, DeviceKind.Snapshot));
        snapshot.Subcommands.Add(delete);

        var diffBase = VolumeCommands.NameArgument("BASE", "The older snapshot");
        var diffTarget = VolumeCommands.NameArgument("TARGET", "A newer snapshot or the volume itself (same lineage)");
        var diffOutput = CliContext.OutputOption();
        var diff = new Command("diff", "List the byte ranges that changed between two snapshots of one lineage (what an incremental backup copies)\n" + DiffJsonExample)
        {
            diffBase, diffTarget, diffOutput,
        };
        diff.SetAction(parse => Diff(context, parse, parse.GetValue(diffBase)!, parse.GetValue(diffTarget)!, parse.GetValue(diffOutput) == "json"));
        snapshot.Subcommands.Add(diff);
        return snapshot;
    }

    private static int Create(CliContext context, ParseResult parse, string volume, string name)
    {
        using var pool = context.OpenPool(parse);
        var started = System.Diagnostics.Stopwatch.GetTimestamp();
        var s = pool.CreateSnapshot(volume, name).OrFail();
        var took = System.Diagnostics.Stopwatch.GetElapsedTime(started);
        context.Host.Out.WriteLine($"created snapshot '{s.Name}' of volume '{volume}' ({ByteSize.Format(s.Size)}) in {took.TotalMilliseconds:0.0} ms");
        return ExitCodes.Ok;
    }

    private static int Diff(CliContext context, ParseResult parse, string baseName, string target, bool json)
    {
        using var pool = context.OpenPool(parse);
        var b = pool.GetDevice(baseName).OrFail();
        if (b.Kind != DeviceKind.Snapshot)
        {
            throw new CliFailureException(ExitCodes.InvalidArgument, $"base '{baseName}' is a volume; a diff starts from a snapshot");
        }

        var ranges = pool.GetChangedRanges(baseName, target).OrFail();
        long changed = ranges.Sum(r => r.Length);
        if (json)
        {
            context.WriteJson(new DiffJson(baseName, target, changed, ranges.Select(r => new RangeJson(r.Offset, r.Length)).ToList()), DollyJson.Default.DiffJson);
            return ExitCodes.Ok;
        }

        var table = CliContext.NewTable("OFFSET", "LENGTH", "END");
        foreach (var r in ranges)
        {
            table.AddRow(r.Offset.ToString(System.Globalization.CultureInfo.InvariantCulture), CliContext.Bytes(r.Length), r.End.ToString(System.Globalization.CultureInfo.InvariantCulture));
        }

        if (ranges.Count > 0)
        {
            context.Out.Write(table);
        }

        context.Host.Out.WriteLine($"{ranges.Count} changed range(s), {ByteSize.Format(changed)} between '{baseName}' and '{target}'");
        return ExitCodes.Ok;
    }
}
