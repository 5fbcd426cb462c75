using System.Diagnostics;
using System.Text;
using System.Text.Json;
using Dolly.Csi.V1;
using Grpc.Core;

namespace Dolly.Csi;

/// <summary>
/// Attaching and detaching: nbdfuse's file under a loop device, or a kernel <c>/dev/nbdN</c> connected by
/// nbd-client; then the same file system and mount on either. Each step that fails undoes the ones before it.
/// </summary>
internal sealed partial class NodeService
{
    /// <summary>
    /// The mechanism for a new attachment. Forced kernel attach where this node lacks the driver or nbd-client is
    /// FAILED_PRECONDITION naming what is missing, before anything is created.
    /// </summary>
    private Attachment ChooseAttachment(string volumeId, string rpc)
    {
        var kernel = _options.KernelNbd;
        return _options.NodeAttach switch
        {
            NodeAttachMode.Nbdfuse => Attachment.Nbdfuse,
            NodeAttachMode.Kernel when kernel.Missing() is { } missing => throw CsiStatus.Fail(
                StatusCode.FailedPrecondition,
                $"{rpc} '{volumeId}': this node attaches volumes with the kernel NBD driver (attach mode kernel), but it has {missing}"),
            NodeAttachMode.Kernel => Attachment.Kernel,
            _ => kernel.Missing() is null ? Attachment.Kernel : Attachment.Nbdfuse,
        };
    }

    /// <summary>The device, then (mount access) the file system and the staging mount; all undone when a step fails.</summary>
    private async Task<StagedVolume> AttachAsync(string volumeId, string staging, bool block, string? fsType, VolumeCapability capability, Attachment attachment, string rpc)
    {
        var staged = attachment == Attachment.Kernel
            ? await ConnectKernelAsync(new StagedVolume(volumeId, staging, string.Empty, string.Empty, 0, block, fsType, Attachment.Kernel), rpc).ConfigureAwait(false)
            : await AttachNbdfuseAsync(volumeId, staging, block, fsType, rpc).ConfigureAwait(false);
        if (block)
        {
            return staged;
        }

        try
        {
            await MakeFileSystemAndMountAsync(staged, capability, rpc).ConfigureAwait(false);
            return staged;
        }
        catch
        {
            await TearDownAsync(staged, rpc, strict: false).ConfigureAwait(false);
            throw;
        }
    }

    /// <summary>nbdfuse's file and a loop device over it; undone when a step fails.</summary>
    private async Task<StagedVolume> AttachNbdfuseAsync(string volumeId, string staging, bool block, string? fsType, string rpc)
    {
        string fuseDir = Path.Combine(_stateDir, volumeId);
        string disk = Path.Combine(fuseDir, "disk");
        string pidFile = Path.Combine(_stateDir, volumeId + ".nbdfuse.pid");
        Directory.CreateDirectory(fuseDir);
        File.Delete(pidFile);
        var staged = new StagedVolume(volumeId, staging, fuseDir, string.Empty, 0, block, fsType);
        try
        {
            string uri = UnixUri(volumeId, _nbd.SocketPath ?? (_bridge ??= new NbdTlsBridge(Path.Combine(_stateDir, "nbd-tls.sock"), _nbd, _logger)).SocketPath);
            var psi = new ProcessStartInfo(NodeCommands.Find("nbdfuse") ?? "nbdfuse")
            {
                RedirectStandardOutput = true,
                RedirectStandardError = true,
                UseShellExecute = false,
            };
            foreach (string a in new[] { "-P", pidFile, disk, uri })
            {
                psi.ArgumentList.Add(a);
            }

            var output = new StringBuilder();
            Process nbdfuse;
            try
            {
                nbdfuse = Process.Start(psi) ?? throw new InvalidOperationException("no process");
            }
            catch (Exception e) when (e is System.ComponentModel.Win32Exception or InvalidOperationException)
            {
                throw CsiStatus.Fail(StatusCode.Internal, $"{rpc} '{volumeId}': cannot start nbdfuse: {e.Message}");
            }

            nbdfuse.OutputDataReceived += (_, e) => Append(output, e.Data);
            nbdfuse.ErrorDataReceived += (_, e) => Append(output, e.Data);
            nbdfuse.BeginOutputReadLine();
            nbdfuse.BeginErrorReadLine();
            _nbdfuse[volumeId] = nbdfuse;
            staged = staged with { NbdfusePid = nbdfuse.Id };

            // nbdfuse writes its pid file once the FUSE file system is ready.
            var deadline = Stopwatch.StartNew();
            while (!(File.Exists(pidFile) && File.Exists(disk)))
            {
                if (nbdfuse.HasExited)
                {
                    await nbdfuse.WaitForExitAsync(CancellationToken.None).ConfigureAwait(false);
                    throw CsiStatus.Fail(StatusCode.Internal, $"{rpc} '{volumeId}': nbdfuse exited with {nbdfuse.ExitCode}: {Read(output)}");
                }

                if (deadline.Elapsed > AttachDeadline)
                {
                    throw CsiStatus.Fail(StatusCode.Internal, $"{rpc} '{volumeId}': nbdfuse did not expose the volume within {AttachDeadline.TotalSeconds:0} s: {Read(output)}");
                }

                await Task.Delay(50, CancellationToken.None).ConfigureAwait(false);
            }

            var loop = (await NodeCommands.RunAsync("losetup", "-f", "--show", disk).ConfigureAwait(false)).Check(rpc);
            return staged with { LoopDevice = loop.StdOut.Trim() };
        }
        catch
        {
            await TearDownAsync(staged, rpc, strict: false).ConfigureAwait(false);
            throw;
        }
    }

    /// <summary>
    /// Connects the first free <c>/dev/nbdN</c> to the volume's export. Another program on the host may take the
    /// same device between the look in sysfs and the connect (this node's own stages are serialized by the gate):
    /// nbd-client then fails and sysfs shows the device taken, so the next free one is tried.
    /// </summary>
    private async Task<StagedVolume> ConnectKernelAsync(StagedVolume staged, string rpc)
    {
        var kernel = _options.KernelNbd;
        string program = kernel.ProgramPath
            ?? throw CsiStatus.Fail(StatusCode.FailedPrecondition, $"{rpc} '{staged.VolumeId}': the {kernel.Program} program is gone (install the nbd-client package)");
        var free = kernel.FreeDevices(RecordedNbdDevices());
        foreach (string device in free)
        {
            var connect = await NodeCommands.RunAsync(program, [.. KernelNbd.ConnectArguments(_nbd, staged.VolumeId, device)]).ConfigureAwait(false);
            if (connect.Ok)
            {
                var connected = staged with { NbdDevice = device };
                await WaitConnectedAsync(connected, rpc).ConfigureAwait(false);
                return connected;
            }

            if (connect.ExitCode > 0 && (kernel.InUse(device) || connect.StdErr.Contains("busy", StringComparison.OrdinalIgnoreCase)))
            {
                CsiLog.NbdDeviceTaken(_logger, device, staged.VolumeId);
                continue;
            }

            if (connect.ExitCode < 0)
            {
                // Timed out and killed: the device may have been connected all the same, by us.
                await TearDownAsync(staged with { NbdDevice = device }, rpc, strict: false).ConfigureAwait(false);
            }

            throw connect.Failure(rpc);
        }

        throw CsiStatus.Fail(
            StatusCode.ResourceExhausted,
            $"{rpc} '{staged.VolumeId}': no free NBD device on this node ({(free.Count == 0 ? "every /dev/nbdN is connected or recorded for a staged volume" : $"{string.Join(", ", free)} were taken while connecting")}); " +
            "unstage volumes or load the nbd module with more devices (modprobe nbd nbds_max=N)");
    }

    /// <summary>
    /// nbd-client configures the device through netlink before it exits; through the older ioctl interface its
    /// daemon does it a moment later. Either way the kernel shows the connection in sysfs once it is up.
    /// </summary>
    private async Task WaitConnectedAsync(StagedVolume staged, string rpc)
    {
        var deadline = Stopwatch.StartNew();
        while (!_options.KernelNbd.Connected(staged.NbdDevice!))
        {
            if (deadline.Elapsed > AttachDeadline)
            {
                await TearDownAsync(staged, rpc, strict: false).ConfigureAwait(false);
                throw CsiStatus.Fail(StatusCode.Internal, $"{rpc} '{staged.VolumeId}': nbd-client exited but {staged.NbdDevice} showed no connection within {AttachDeadline.TotalSeconds:0} s");
            }

            await Task.Delay(50, CancellationToken.None).ConfigureAwait(false);
        }
    }

    /// <summary>The nbd devices that records of this node name: theirs until unstaged, even when their connection dropped.</summary>
    private HashSet<string> RecordedNbdDevices()
    {
        var devices = new HashSet<string>(StringComparer.Ordinal);
        if (!Directory.Exists(_stateDir))
        {
            return devices;
        }

        foreach (string path in Directory.EnumerateFiles(_stateDir, "*.json"))
        {
            try
            {
                if (StagedVolume.Read(path) is { Attach: Attachment.Kernel, NbdDevice: { } device })
                {
                    devices.Add(device);
                }
            }
            catch (JsonException)
            {
                // Not a record of ours (or a torn one from before writes were renamed into place): it holds no device.
            }
        }

        return devices;
    }

    /// <summary>mkfs when the volume has no file system (offline growth when it has ext*), then the staging mount.</summary>
    private static async Task MakeFileSystemAndMountAsync(StagedVolume staged, VolumeCapability capability, string rpc)
    {
        string device = staged.Device;

        // blkid exits 2 when it finds no signature: a blank volume gets a file system.
        var probe = await NodeCommands.RunAsync("blkid", "-p", "-o", "value", "-s", "TYPE", device).ConfigureAwait(false);
        if (probe.ExitCode == 2)
        {
            var mkfs = staged.FsType == "xfs"
                ? await NodeCommands.RunAsync("mkfs.xfs", "-q", "-K", device).ConfigureAwait(false)
                : await NodeCommands.RunAsync("mkfs.ext4", "-q", "-F", "-E", "nodiscard", device).ConfigureAwait(false);
            mkfs.Check(rpc);
        }
        else
        {
            probe.Check(rpc);
            if (probe.StdOut.Trim() is "ext2" or "ext3" or "ext4")
            {
                await GrowExtOfflineAsync(device, rpc).ConfigureAwait(false);
            }
        }

        Directory.CreateDirectory(staged.StagingPath);
        var args = new List<string> { "-t", staged.FsType! };
        if (capability.Mount.MountFlags.Count > 0)
        {
            args.Add("-o");
            args.Add(string.Join(',', capability.Mount.MountFlags));
        }

        args.Add(device);
        args.Add(staged.StagingPath);
        (await NodeCommands.RunAsync("mount", [.. args]).ConfigureAwait(false)).Check(rpc);
    }

    /// <summary>
    /// Offline expansion: a volume grown since its file system was made gets the file system grown to the
    /// device before it is mounted (e2fsck -f, then resize2fs), so no online-resize privilege is needed.
    /// </summary>
    private static async Task GrowExtOfflineAsync(string device, string rpc)
    {
        var header = (await NodeCommands.RunAsync("dumpe2fs", "-h", device).ConfigureAwait(false)).Check(rpc);
        long blocks = HeaderNumber(header.StdOut, "Block count:");
        long blockSize = HeaderNumber(header.StdOut, "Block size:");
        var size = (await NodeCommands.RunAsync("blockdev", "--getsize64", device).ConfigureAwait(false)).Check(rpc);
        if (blocks <= 0 || blockSize <= 0 || !long.TryParse(size.StdOut.Trim(), System.Globalization.CultureInfo.InvariantCulture, out long deviceBytes)
            || deviceBytes - (blocks * blockSize) < 1L << 20)
        {
            return;
        }

        // e2fsck -p exits 1 when it corrected something; resize2fs insists on a freshly checked file system.
        var check = await NodeCommands.RunAsync("e2fsck", "-f", "-p", device).ConfigureAwait(false);
        if (check.ExitCode is not (0 or 1))
        {
            throw check.Failure(rpc);
        }

        (await NodeCommands.RunAsync("resize2fs", device).ConfigureAwait(false)).Check(rpc);
    }

    private static long HeaderNumber(string dump, string field)
    {
        foreach (string line in dump.Split('\n'))
        {
            if (line.StartsWith(field, StringComparison.Ordinal)
                && long.TryParse(line[field.Length..].Trim(), System.Globalization.CultureInfo.InvariantCulture, out long value))
            {
                return value;
            }
        }

        return 0;
    }

    /// <summary>The size the attachment sees: nbdfuse's file, or the nbd device's size in sysfs.</summary>
    private long AttachedSize(StagedVolume staged)
    {
        if (staged.Attach == Attachment.Kernel)
        {
            return _options.KernelNbd.SizeBytes(staged.Device) ?? throw CsiStatus.Fail(
                StatusCode.FailedPrecondition,
                $"the attachment of volume '{staged.VolumeId}' ({staged.Device}) has no connection; unstage and stage it again");
        }

        var disk = new FileInfo(Path.Combine(staged.FuseDir, "disk"));
        return disk.Exists ? disk.Length : throw CsiStatus.Fail(StatusCode.FailedPrecondition, $"the attachment of volume '{staged.VolumeId}' ({disk.FullName}) is gone; unstage and stage it again");
    }

    /// <summary>
    /// Unmount, detach (loop device and nbdfuse, or the nbd device) and forget the volume. Strict: a failing step
    /// fails the RPC (the CO retries); otherwise (cleanup after a failed stage) failures are logged and the rest goes on.
    /// </summary>
    private async Task TearDownAsync(StagedVolume staged, string rpc, bool strict)
    {
        if (!staged.Block && NodeCommands.IsMountPoint(staged.StagingPath))
        {
            await Step(staged, rpc, strict, "umount", staged.StagingPath).ConfigureAwait(false);
        }

        if (staged.Attach == Attachment.Kernel)
        {
            await DisconnectKernelAsync(staged, rpc, strict).ConfigureAwait(false);
        }
        else
        {
            await DetachNbdfuseAsync(staged, rpc, strict).ConfigureAwait(false);
        }

        File.Delete(RecordPath(staged.VolumeId));
    }

    private async Task DisconnectKernelAsync(StagedVolume staged, string rpc, bool strict)
    {
        var kernel = _options.KernelNbd;
        if (staged.NbdDevice is not { } device || !kernel.InUse(device))
        {
            return;
        }

        if (staged.Block && kernel.Connected(device))
        {
            // Nothing unmounted a block volume: have the kernel write back and flush what it caches before the
            // connection goes, as umount does for a file system.
            await Step(staged, rpc, strict, "blockdev", "--flushbufs", device).ConfigureAwait(false);
        }

        var disconnect = await NodeCommands.RunAsync(kernel.ProgramPath ?? kernel.Program, [.. KernelNbd.DisconnectArguments(device)]).ConfigureAwait(false);
        var deadline = Stopwatch.StartNew();
        while (disconnect.Ok && kernel.Connected(device) && deadline.Elapsed < AttachDeadline)
        {
            await Task.Delay(50, CancellationToken.None).ConfigureAwait(false);
        }

        if (kernel.Connected(device))
        {
            Report(staged, rpc, strict, disconnect.Ok ? disconnect with { ExitCode = -1, StdErr = $"{device} is still connected {AttachDeadline.TotalSeconds:0} s after the disconnect" } : disconnect);
        }
    }

    private async Task DetachNbdfuseAsync(StagedVolume staged, string rpc, bool strict)
    {
        if (staged.LoopDevice.Length > 0)
        {
            var detach = await NodeCommands.RunAsync("losetup", "-d", staged.LoopDevice).ConfigureAwait(false);
            if (!detach.Ok && IsAttached(staged.LoopDevice))
            {
                Report(staged, rpc, strict, detach);
            }
        }

        if (NodeCommands.IsMountPoint(staged.FuseDir))
        {
            // The loop driver lets go of the file asynchronously: fusermount3 says busy until it has.
            var deadline = Stopwatch.StartNew();
            CommandResult unmount;
            while (!(unmount = await NodeCommands.RunAsync("fusermount3", "-u", staged.FuseDir).ConfigureAwait(false)).Ok && deadline.Elapsed < AttachDeadline)
            {
                await Task.Delay(100, CancellationToken.None).ConfigureAwait(false);
            }

            if (!unmount.Ok)
            {
                if (strict)
                {
                    throw unmount.Failure(rpc);
                }

                await Step(staged, rpc, strict, "fusermount3", "-u", "-z", staged.FuseDir).ConfigureAwait(false);
            }
        }

        if (_nbdfuse.TryRemove(staged.VolumeId, out var process))
        {
            using (process)
            {
                using var cts = new CancellationTokenSource(AttachDeadline);
                try
                {
                    await process.WaitForExitAsync(cts.Token).ConfigureAwait(false);
                }
                catch (OperationCanceledException)
                {
                    process.Kill();
                }
            }
        }

        if (Directory.Exists(staged.FuseDir) && !NodeCommands.IsMountPoint(staged.FuseDir))
        {
            Directory.Delete(staged.FuseDir, recursive: false);
        }

        File.Delete(Path.Combine(_stateDir, staged.VolumeId + ".nbdfuse.pid"));
    }

    private async Task Step(StagedVolume staged, string rpc, bool strict, string program, params string[] args)
    {
        var result = await NodeCommands.RunAsync(program, args).ConfigureAwait(false);
        if (!result.Ok)
        {
            Report(staged, rpc, strict, result);
        }
    }

    private void Report(StagedVolume staged, string rpc, bool strict, CommandResult result)
    {
        if (strict)
        {
            throw result.Failure(rpc);
        }

        CsiLog.CleanupFailed(_logger, staged.VolumeId, result.Command, result.StdErr.Trim());
    }

    private static bool IsAttached(string loopDevice) =>
        File.Exists($"/sys/block/{Path.GetFileName(loopDevice)}/loop/backing_file");

    private static void Append(StringBuilder output, string? line)
    {
        if (line is null)
        {
            return;
        }

        lock (output)
        {
            output.AppendLine(line);
        }
    }

    private static string Read(StringBuilder output)
    {
        lock (output)
        {
            return output.ToString().Trim();
        }
    }
}
