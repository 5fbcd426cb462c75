using System.CommandLine;
using Dolly.Csi.V1;
using Dolly.Mounts;
using k8s;
using Spectre.Console;

namespace Dolly.Commands;

/// <summary>
/// <c>dolly mount NAMESPACE/PVC DIR</c>, <c>dolly unmount DIR</c> and <c>dolly mounts</c>: kubelet's node path
/// run by hand against a running <c>dolly up</c>. The claim and its volume come from the API server, the
/// attach from the CSI Node service over csi.sock; the pool itself is never opened (dolly up holds it).
/// </summary>
internal static class MountCommands
{
    public static IEnumerable<Command> Build(CliContext context) => [BuildMount(context), BuildUnmount(context), BuildList(context)];

    private static Option<string?> KubeconfigOption() => new("--kubeconfig")
    {
        Description = "kubeconfig of the API server. Default: the one `dolly up` writes beside the pool (<pool>-api/kubeconfig)",
        HelpName = "FILE",
    };

    private static Option<string?> CsiSocketOption() => new("--csi-socket")
    {
        Description = "Unix socket of the CSI driver. Default: csi.sock in the pool directory",
        HelpName = "PATH",
    };

    private static Command BuildMount(CliContext context)
    {
        var claim = new Argument<string>("NAMESPACE/PVC") { Description = "The PersistentVolumeClaim to mount; it must be Bound to a volume of csi.dolly.io" };
        var dir = new Argument<string>("DIR") { Description = "Where to mount it (created if missing); for a Block claim, the path of the device file to create" };
        var readOnly = new Option<bool>("--read-only") { Description = "Publish read-only (always so for a claim whose only access mode is ReadOnlyMany)" };
        var kubeconfig = KubeconfigOption();
        var csiSocket = CsiSocketOption();
        var output = CliContext.OutputOption();
        var mount = new Command(
            "mount",
            "Mount a PersistentVolumeClaim's volume on this machine as kubelet would (NodeStageVolume, then NodePublishVolume), through a running `dolly up`")
        {
            claim, dir, readOnly, kubeconfig, csiSocket, output,
        };
        mount.SetAction((parse, ct) => MountAsync(
            context,
            Locate(context, parse, parse.GetValue(kubeconfig), parse.GetValue(csiSocket)),
            parse.GetValue(claim)!,
            parse.GetValue(dir)!,
            parse.GetValue(readOnly),
            parse.GetValue(output) == "json",
            ct));
        return mount;
    }

    private static Command BuildUnmount(CliContext context)
    {
        var dir = new Argument<string>("DIR") { Description = "A directory (or block device file) that `dolly mount` mounted" };
        var csiSocket = CsiSocketOption();
        var unmount = new Command(
            "unmount",
            "Undo `dolly mount`: NodeUnpublishVolume, then NodeUnstageVolume when no other mount uses the volume")
        {
            dir, csiSocket,
        };
        unmount.SetAction((parse, ct) => UnmountAsync(context, Locate(context, parse, null, parse.GetValue(csiSocket)), parse.GetValue(dir)!, ct));
        return unmount;
    }

    private static Command BuildList(CliContext context)
    {
        var output = CliContext.OutputOption();
        var list = new Command("mounts", "List what `dolly mount` has mounted from this pool") { output };
        list.SetAction(parse => List(context, Locate(context, parse, null, null), parse.GetValue(output) == "json"));
        return list;
    }

    /// <summary>Where the dolly up of this pool keeps its kubeconfig and CSI socket, and where mount records go.</summary>
    private sealed record Locations(string Kubeconfig, string CsiSocket, MountRecords Records);

    private static Locations Locate(CliContext context, ParseResult parse, string? kubeconfig, string? csiSocket)
    {
        string pool = context.PoolDirectory(parse).Directory;
        return new Locations(
            kubeconfig is null ? Path.Combine(CliContext.BesidePool(pool, "-api"), "kubeconfig") : Path.GetFullPath(kubeconfig),
            csiSocket is null ? Path.Combine(pool, "csi.sock") : Path.GetFullPath(csiSocket),
            new MountRecords(CliContext.BesidePool(pool, "-mounts")));
    }

    private static async Task<int> MountAsync(CliContext context, Locations at, string claimText, string dir, bool readOnly, bool json, CancellationToken ct)
    {
        var (ns, claimName) = ClaimResolver.Parse(claimText);
        string target = Path.TrimEndingDirectorySeparator(Path.GetFullPath(dir));
        using var guard = await MountLock.AcquireAsync(at.Records.Directory, ct).ConfigureAwait(false);
        if (at.Records.Find(target) is { } existing)
        {
            throw new CliFailureException(ExitCodes.AlreadyExists, $"{target} is already mounted by dolly ({existing.Namespace}/{existing.Claim}); 'dolly unmount {target}' first");
        }

        if (MountTable.IsMountPoint(target))
        {
            throw new CliFailureException(ExitCodes.AlreadyExists, $"{target} is already a mount point; choose another directory");
        }

        ClaimVolume volume;
        using (var client = ClaimResolver.Connect(at.Kubeconfig))
        {
            volume = await ClaimResolver.ResolveAsync(client, ns, claimName, ct).ConfigureAwait(false);
        }

        if (volume.Block && Directory.Exists(target))
        {
            throw new CliFailureException(ExitCodes.InvalidArgument, $"{target} is a directory, but {ns}/{claimName} is a Block volume, published as a device file: give the path of a file to create");
        }

        // Unpublish deletes the device file, as the CSI spec asks: never publish over a file that holds data.
        if (volume.Block && File.Exists(target) && new FileInfo(target).Length != 0)
        {
            throw new CliFailureException(ExitCodes.AlreadyExists, $"{target} is a file with data in it; a Block volume is published on a new (or empty) file, which unmount removes");
        }

        if (!volume.Block && File.Exists(target))
        {
            throw new CliFailureException(ExitCodes.InvalidArgument, $"{target} is a file, but {ns}/{claimName} is a Filesystem volume, mounted on a directory");
        }

        using var node = CsiNodeConnection.Open(at.CsiSocket);
        await node.ProbeAsync(ct).ConfigureAwait(false);
        var record = new MountRecord(
            target,
            ns,
            claimName,
            volume.PersistentVolume,
            volume.VolumeId,
            at.Records.StagingPath(volume.VolumeId),
            volume.Block ? "Block" : "Filesystem",
            volume.FsType,
            volume.AccessMode,
            readOnly || volume.ClaimIsReadOnlyMany || volume.PersistentVolumeReadOnly,
            DateTimeOffset.UtcNow);

        // The record goes first: whatever happens next, `dolly unmount` knows what to undo.
        at.Records.Save(record);
        try
        {
            await AttachAsync(node, record, volume, ct).ConfigureAwait(false);
        }
        catch (CliFailureException ex)
        {
            string? undo = await TryDetachAsync(node, at.Records, record).ConfigureAwait(false);
            throw new CliFailureException(ex.ExitCode, undo is null ? ex.Message : $"{ex.Message}; undoing it failed too ({undo}): 'dolly unmount {target}' retries");
        }

        string? resized = null;
        if (volume.ResizePending && !volume.Block && !record.ReadOnly)
        {
            resized = await FinishResizeAsync(at, node, record, volume, ct).ConfigureAwait(false);
        }

        if (json)
        {
            context.WriteJson(record, DollyJson.Default.MountRecord);
        }
        else
        {
            await context.Host.Out.WriteLineAsync($"mounted {ns}/{claimName} (volume {record.VolumeId}) at {target}{(record.ReadOnly ? " read-only" : string.Empty)}").ConfigureAwait(false);
            if (resized is not null)
            {
                await context.Host.Out.WriteLineAsync(resized).ConfigureAwait(false);
            }
        }

        return ExitCodes.Ok;
    }

    /// <summary>
    /// The kubelet's half of a volume expansion: the controller grew the volume and left the claim with
    /// FileSystemResizePending; the file system grows on the node (NodeExpandVolume) and the claim's status
    /// then shows the new capacity. Only a fresh attachment sees the new size, so a volume already staged
    /// for another target is left pending with a note.
    /// </summary>
    private static async Task<string> FinishResizeAsync(Locations at, CsiNodeConnection node, MountRecord record, ClaimVolume volume, CancellationToken ct)
    {
        if (at.Records.List().Any(r => r.VolumeId == record.VolumeId && r.Target != record.Target))
        {
            return $"file system resize of {record.Namespace}/{record.Claim} is pending: the volume is mounted elsewhere too; unmount every target and mount again to grow it";
        }

        var expand = new NodeExpandVolumeRequest
        {
            VolumeId = record.VolumeId,
            VolumePath = record.Target,
            StagingTargetPath = record.StagingPath,
            VolumeCapability = volume.Capability(),
            CapacityRange = volume.VolumeCapacity is null ? null : new CapacityRange { RequiredBytes = (long)new k8s.Models.ResourceQuantity(volume.VolumeCapacity).ToDecimal() },
        };
        await node.ExpandAsync(expand, ct).ConfigureAwait(false);
        using var client = ClaimResolver.Connect(at.Kubeconfig);
        string patch = $$$"""{"status":{"capacity":{"storage":"{{{volume.VolumeCapacity}}}"},"conditions":[]}}""";
        try
        {
            await client.CoreV1.PatchNamespacedPersistentVolumeClaimStatusAsync(new k8s.Models.V1Patch(patch, k8s.Models.V1Patch.PatchType.MergePatch), record.Claim, record.Namespace, cancellationToken: ct).ConfigureAwait(false);
        }
        catch (k8s.Autorest.HttpOperationException ex)
        {
            throw new CliFailureException(ExitCodes.IoError, $"grew the file system of {record.Namespace}/{record.Claim}, but recording its capacity in the claim failed: {ex.Response.StatusCode} {ex.Response.Content}");
        }

        return $"grew the file system of {record.Namespace}/{record.Claim} to {volume.VolumeCapacity}";
    }

    private static async Task AttachAsync(CsiNodeConnection node, MountRecord record, ClaimVolume volume, CancellationToken ct)
    {
        var capability = volume.Capability();

        // Staging is per volume and idempotent: a volume already staged for another target of this pool
        // answers at once, and one whose staging mount was lost (a reboot) is staged again.
        var stage = new NodeStageVolumeRequest { VolumeId = record.VolumeId, StagingTargetPath = record.StagingPath, VolumeCapability = capability };
        stage.VolumeContext.Add(volume.VolumeContext);
        await node.StageAsync(stage, ct).ConfigureAwait(false);

        // kubelet makes the target before publishing: a directory for a mount, an empty file for a block device.
        try
        {
            if (volume.Block)
            {
                Directory.CreateDirectory(Path.GetDirectoryName(record.Target)!);
                if (!File.Exists(record.Target))
                {
                    await File.WriteAllBytesAsync(record.Target, [], ct).ConfigureAwait(false);
                }
            }
            else
            {
                Directory.CreateDirectory(record.Target);
            }
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            throw new CliFailureException(ExitCodes.IoError, $"cannot create {record.Target}: {ex.Message}");
        }

        var publish = new NodePublishVolumeRequest
        {
            VolumeId = record.VolumeId,
            StagingTargetPath = record.StagingPath,
            TargetPath = record.Target,
            VolumeCapability = capability,
            Readonly = record.ReadOnly,
        };
        publish.VolumeContext.Add(volume.VolumeContext);
        await node.PublishAsync(publish, ct).ConfigureAwait(false);
    }

    /// <summary>Unpublishes, unstages when nothing else uses the volume, removes the record; returns what failed, or null.</summary>
    private static async Task<string?> TryDetachAsync(CsiNodeConnection node, MountRecords records, MountRecord record)
    {
        try
        {
            await DetachAsync(node, records, record, CancellationToken.None).ConfigureAwait(false);
            return null;
        }
        catch (CliFailureException ex)
        {
            return ex.Message;
        }
    }

    /// <summary>Undoes a mount; returns whether the volume was unstaged too.</summary>
    private static async Task<bool> DetachAsync(CsiNodeConnection node, MountRecords records, MountRecord record, CancellationToken ct)
    {
        await node.UnpublishAsync(record.VolumeId, record.Target, ct).ConfigureAwait(false);
        bool shared = records.List().Any(r => r.VolumeId == record.VolumeId && r.Target != record.Target);
        if (!shared)
        {
            await node.UnstageAsync(record.VolumeId, record.StagingPath, ct).ConfigureAwait(false);
        }

        records.Remove(record.Target);
        return !shared;
    }

    private static async Task<int> UnmountAsync(CliContext context, Locations at, string dir, CancellationToken ct)
    {
        string target = Path.TrimEndingDirectorySeparator(Path.GetFullPath(dir));
        using var guard = await MountLock.AcquireAsync(at.Records.Directory, ct).ConfigureAwait(false);
        var record = at.Records.Find(target);
        if (record is null)
        {
            throw new CliFailureException(
                ExitCodes.NotFound,
                MountTable.IsMountPoint(target)
                    ? $"{target} is a mount point, but not one that dolly mount made (no record in {at.Records.Directory}); use umount"
                    : $"nothing is mounted at {target} by dolly mount (no record in {at.Records.Directory})");
        }

        using var node = CsiNodeConnection.Open(at.CsiSocket);
        bool unstaged = await DetachAsync(node, at.Records, record, ct).ConfigureAwait(false);
        await context.Host.Out.WriteLineAsync(
            $"unmounted {record.Namespace}/{record.Claim} (volume {record.VolumeId}) from {target}{(unstaged ? string.Empty : "; the volume stays staged for its other mounts")}").ConfigureAwait(false);
        return ExitCodes.Ok;
    }

    private static int List(CliContext context, Locations at, bool json)
    {
        var records = at.Records.List();
        if (json)
        {
            context.WriteJson(records, DollyJson.Default.IReadOnlyListMountRecord);
            return ExitCodes.Ok;
        }

        if (records.Count == 0)
        {
            context.Host.Out.WriteLine("no volumes mounted by dolly mount");
            return ExitCodes.Ok;
        }

        var table = CliContext.NewTable("TARGET", "CLAIM", "VOLUME", "MODE", "ACCESS", "STATE");
        foreach (var r in records)
        {
            table.AddRow(
                Markup.Escape(r.Target),
                Markup.Escape($"{r.Namespace}/{r.Claim}"),
                Markup.Escape(r.VolumeId),
                r.VolumeMode == "Block" ? "Block" : $"Filesystem ({r.FsType})",
                r.ReadOnly ? "ro" : "rw",
                MountTable.IsMountPoint(r.Target) ? "mounted" : "not mounted ('dolly unmount' cleans up)");
        }

        context.Out.Write(table);
        return ExitCodes.Ok;
    }
}
