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
        var create = new Command(
            "create",
            "Take a snapshot of a volume. While `dolly up` holds the pool, the snapshot is taken through its CSI driver (csi.sock in the pool directory); its name is the handle a pre-provisioned VolumeSnapshotContent names")
        {
            createVolume, createName,
        };
        create.SetAction((parse, ct) => Create(context, parse, parse.GetValue(createVolume)!, parse.GetValue(createName)!, ct));
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

    private static async Task<int> Create(CliContext context, ParseResult parse, string volume, string name, CancellationToken ct)
    {
        Pool pool;
        try
        {
            pool = context.OpenPool(parse);
        }
        catch (CliFailureException ex) when (ex.ExitCode == ExitCodes.InUse && File.Exists(Path.Combine(context.PoolDirectory(parse).Directory, "csi.sock")))
        {
            return await CreateThroughDriverAsync(context, Path.Combine(context.PoolDirectory(parse).Directory, "csi.sock"), volume, name, ct).ConfigureAwait(false);
        }

        using (pool)
        {
            var started = System.Diagnostics.Stopwatch.GetTimestamp();
            var s = pool.CreateSnapshot(volume, name).OrFail();
            var took = System.Diagnostics.Stopwatch.GetElapsedTime(started);
            context.Host.Out.WriteLine($"created snapshot '{s.Name}' of volume '{volume}' ({ByteSize.Format(s.Size)}) in {took.TotalMilliseconds:0.0} ms");
            return ExitCodes.Ok;
        }
    }

    /// <summary>
    /// The pool is held by a running <c>dolly up</c>: take the snapshot the way a sidecar would, through its CSI
    /// Controller service. CreateSnapshot is idempotent, so an existing name is looked up first to keep the
    /// command's meaning (a name that exists is an error, as without a server).
    /// </summary>
    private static async Task<int> CreateThroughDriverAsync(CliContext context, string socket, string volume, string name, CancellationToken ct)
    {
        if (Names.Validate(name, "snapshot name") is { } invalid)
        {
            throw new CliFailureException(invalid);
        }

        using var channel = Dolly.Controllers.DollyControllers.ConnectCsi(socket);
        var csi = new Dolly.Csi.V1.Controller.ControllerClient(channel);
        var started = System.Diagnostics.Stopwatch.GetTimestamp();
        try
        {
            var existing = await csi.ListSnapshotsAsync(new Dolly.Csi.V1.ListSnapshotsRequest { SnapshotId = name }, cancellationToken: ct).ConfigureAwait(false);
            if (existing.Entries.Count > 0)
            {
                throw new CliFailureException(ExitCodes.AlreadyExists, $"a snapshot named '{name}' already exists (of volume '{existing.Entries[0].Snapshot.SourceVolumeId}')");
            }

            var created = await csi.CreateSnapshotAsync(new Dolly.Csi.V1.CreateSnapshotRequest { Name = name, SourceVolumeId = volume }, cancellationToken: ct).ConfigureAwait(false);
            var took = System.Diagnostics.Stopwatch.GetElapsedTime(started);
            context.Host.Out.WriteLine(
                $"created snapshot '{created.Snapshot.SnapshotId}' of volume '{volume}' ({ByteSize.Format(created.Snapshot.SizeBytes)}) in {took.TotalMilliseconds:0.0} ms, through the CSI driver of the dolly up holding the pool");
            return ExitCodes.Ok;
        }
        catch (Grpc.Core.RpcException ex)
        {
            int code = ex.StatusCode switch
            {
                Grpc.Core.StatusCode.NotFound => ExitCodes.NotFound,
                Grpc.Core.StatusCode.AlreadyExists => ExitCodes.AlreadyExists,
                Grpc.Core.StatusCode.InvalidArgument => ExitCodes.InvalidArgument,
                Grpc.Core.StatusCode.ResourceExhausted => ExitCodes.NoSpace,
                Grpc.Core.StatusCode.Unavailable => ExitCodes.InUse,
                _ => ExitCodes.IoError,
            };
            string why = ex.StatusCode == Grpc.Core.StatusCode.Unavailable
                ? $"the pool is in use and its CSI driver at {socket} does not answer ({ex.Status.Detail}); stop the process holding the pool or start `dolly up`"
                : $"the CSI driver of the dolly up holding the pool refused: {ex.Status.Detail}";
            throw new CliFailureException(code, why);
        }
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
