using System.CommandLine;
using Dolly.Storage;
using Spectre.Console;

namespace Dolly.Commands;

/// <summary><c>dolly volume create|list|resize|delete|clone|revert|import|export</c>.</summary>
internal static class VolumeCommands
{
    public const string ListJsonExample = """
        JSON (-o json): an array, sizes in bytes, times in UTC:
          [ { "name": "db", "kind": "volume", "size": 10737418240, "allocated": 65536,
              "exclusive": 65536, "source": null, "created": "2026-01-01T12:00:00+00:00" } ]
        """;

    public static Command Build(CliContext context)
    {
        var volume = new Command("volume", "Thin volumes: create, grow, clone, revert, import and export raw images");

        var createName = NameArgument("NAME", "Volume name (a Kubernetes-style name: lower-case letters, digits, '-', '.')");
        var createSize = SizeOption("Logical size, e.g. 10Gi, 512Mi, 1Ti (nothing is allocated until written)", required: true);
        var create = new Command("create", "Create an empty thin volume") { createName, createSize };
        create.SetAction(parse => Create(context, parse, parse.GetValue(createName)!, parse.GetValue(createSize)!));
        volume.Subcommands.Add(create);

        var listOutput = CliContext.OutputOption();
        var list = new Command("list", "List volumes with their space: SIZE (logical), ALLOCATED, EXCLUSIVE (freed by deleting it), SOURCE\n" + ListJsonExample)
        {
            listOutput,
        };
        list.Aliases.Add("ls");
        list.SetAction(parse => List(context, parse, DeviceKind.Volume, volumeFilter: null, parse.GetValue(listOutput) == "json"));
        volume.Subcommands.Add(list);

        var resizeName = NameArgument("NAME", "Volume to grow");
        var resizeSize = SizeOption("New logical size; shrinking is refused", required: true);
        var resize = new Command("resize", "Grow a volume") { resizeName, resizeSize };
        resize.SetAction(parse => Resize(context, parse, parse.GetValue(resizeName)!, parse.GetValue(resizeSize)!));
        volume.Subcommands.Add(resize);

        var deleteName = NameArgument("NAME", "Volume to delete");
        var delete = new Command("delete", "Delete a volume; its snapshots and clones stay, and only blocks nobody else references are freed") { deleteName };
        delete.Aliases.Add("rm");
        delete.SetAction(parse => Delete(context, parse, parse.GetValue(deleteName)!, DeviceKind.Volume));
        volume.Subcommands.Add(delete);

        var cloneSource = NameArgument("SOURCE", "Snapshot or volume to clone");
        var cloneName = NameArgument("NAME", "Name of the new volume");
        var cloneSize = SizeOption("Size of the clone (default: the source's; it may only be larger)", required: false);
        var clone = new Command("clone", "Create a writable volume from a snapshot or volume instantly; blocks are shared until written")
        {
            cloneSource, cloneName, cloneSize,
        };
        clone.SetAction(parse => Clone(context, parse, parse.GetValue(cloneSource)!, parse.GetValue(cloneName)!, parse.GetValue(cloneSize)));
        volume.Subcommands.Add(clone);

        var revertVolume = NameArgument("VOLUME", "Volume to revert");
        var revertSnapshot = NameArgument("SNAPSHOT", "One of the volume's snapshots");
        var revert = new Command("revert", "Revert a volume in place to one of its snapshots (the snapshot is kept)") { revertVolume, revertSnapshot };
        revert.SetAction(parse => Revert(context, parse, parse.GetValue(revertVolume)!, parse.GetValue(revertSnapshot)!));
        volume.Subcommands.Add(revert);

        volume.Subcommands.Add(ImportExport.BuildImport(context));
        volume.Subcommands.Add(ImportExport.BuildExport(context));
        return volume;
    }

    public static Argument<string> NameArgument(string name, string description) => new(name) { Description = description };

    public static Option<string?> SizeOption(string description, bool required) => new("--size", "-s")
    {
        Description = description,
        Required = required,
        HelpName = "SIZE",
    };

    private static int Create(CliContext context, ParseResult parse, string name, string sizeText)
    {
        long size = CliContext.ParseSize(sizeText, $"volume '{name}'");
        using var pool = context.OpenPool(parse);
        var d = pool.CreateVolume(name, size).OrFail();
        context.Host.Out.WriteLine($"created volume '{d.Name}' ({ByteSize.Format(d.Size)})");
        return ExitCodes.Ok;
    }

    private static int Resize(CliContext context, ParseResult parse, string name, string sizeText)
    {
        long size = CliContext.ParseSize(sizeText, $"volume '{name}'");
        using var pool = context.OpenPool(parse);
        var before = pool.GetDevice(name).OrFail();
        if (before.Kind != DeviceKind.Volume)
        {
            throw new CliFailureException(ExitCodes.ReadOnly, $"'{name}' is a snapshot; snapshots cannot be resized");
        }

        if (size < before.Size)
        {
            throw new CliFailureException(
                ExitCodes.InvalidArgument,
                $"volume '{name}' is {ByteSize.Format(before.Size)}; shrinking it to {ByteSize.Format(size)} would destroy data and is refused");
        }

        var d = pool.Resize(name, size).OrFail();
        context.Host.Out.WriteLine($"resized volume '{d.Name}' from {ByteSize.Format(before.Size)} to {ByteSize.Format(d.Size)}");
        return ExitCodes.Ok;
    }

    public static int Delete(CliContext context, ParseResult parse, string name, DeviceKind kind)
    {
        using var pool = context.OpenPool(parse);
        var d = pool.GetDevice(name).OrFail();
        string what = kind == DeviceKind.Volume ? "volume" : "snapshot";
        if (d.Kind != kind)
        {
            string other = d.Kind == DeviceKind.Volume ? "volume" : "snapshot";
            throw new CliFailureException(ExitCodes.InvalidArgument, $"'{name}' is a {other}, not a {what}; use 'dolly {other} delete {name}'");
        }

        var space = pool.GetSpace(name).OrFail();
        pool.Delete(name).OrFail();
        context.Host.Out.WriteLine($"deleted {what} '{name}' (freed {ByteSize.Format(space.Exclusive)})");
        return ExitCodes.Ok;
    }

    private static int Clone(CliContext context, ParseResult parse, string source, string name, string? sizeText)
    {
        long? size = sizeText is null ? null : CliContext.ParseSize(sizeText, $"clone '{name}'");
        using var pool = context.OpenPool(parse);
        var d = pool.Clone(source, name, size).OrFail();
        context.Host.Out.WriteLine($"cloned '{source}' to volume '{d.Name}' ({ByteSize.Format(d.Size)})");
        return ExitCodes.Ok;
    }

    private static int Revert(CliContext context, ParseResult parse, string volume, string snapshot)
    {
        using var pool = context.OpenPool(parse);
        pool.Revert(volume, snapshot).OrFail();
        context.Host.Out.WriteLine($"reverted volume '{volume}' to snapshot '{snapshot}'");
        return ExitCodes.Ok;
    }

    /// <summary>Lists volumes or snapshots (optionally the snapshots of one volume) as a table or JSON.</summary>
    public static int List(CliContext context, ParseResult parse, DeviceKind kind, string? volumeFilter, bool json)
    {
        using var pool = context.OpenPool(parse);
        if (volumeFilter is not null)
        {
            var v = pool.GetDevice(volumeFilter).OrFail();
            if (v.Kind != DeviceKind.Volume)
            {
                throw new CliFailureException(ExitCodes.InvalidArgument, $"'{volumeFilter}' is a snapshot, not a volume");
            }
        }

        var rows = new List<DeviceJson>();
        foreach (var d in pool.ListDevices(kind))
        {
            if (volumeFilter is not null && d.SourceName != volumeFilter)
            {
                continue;
            }

            var space = pool.GetSpace(d.Name).OrFail();
            rows.Add(new DeviceJson(d.Name, kind == DeviceKind.Volume ? "volume" : "snapshot", d.Size, space.Allocated, space.Exclusive, d.SourceName, d.CreatedAt));
        }

        if (json)
        {
            context.WriteJson<IReadOnlyList<DeviceJson>>(rows, DollyJson.Default.IReadOnlyListDeviceJson);
            return ExitCodes.Ok;
        }

        if (rows.Count == 0)
        {
            context.Host.Out.WriteLine(kind == DeviceKind.Volume ? "no volumes" : "no snapshots");
            return ExitCodes.Ok;
        }

        var table = CliContext.NewTable("NAME", "SIZE", "ALLOCATED", "EXCLUSIVE", "SOURCE", "CREATED");
        foreach (var r in rows)
        {
            table.AddRow(
                Markup.Escape(r.Name),
                CliContext.Bytes(r.Size),
                CliContext.Bytes(r.Allocated),
                CliContext.Bytes(r.Exclusive),
                Markup.Escape(r.Source ?? "-"),
                CliContext.Time(r.Created));
        }

        context.Out.Write(table);
        return ExitCodes.Ok;
    }
}
