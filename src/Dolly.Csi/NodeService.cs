using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;
using Dolly.Csi.V1;
using Dolly.Storage;
using Grpc.Core;
using Microsoft.Extensions.Logging;
using RpcType = Dolly.Csi.V1.NodeServiceCapability.Types.RPC.Types.Type;

namespace Dolly.Csi;

/// <summary>What the node did to stage one volume; kept as JSON in the node state directory so Unstage finds it again.</summary>
internal sealed record StagedVolume(string VolumeId, string StagingPath, string FuseDir, string LoopDevice, int NbdfusePid, bool Block, string? FsType);

[JsonSerializable(typeof(StagedVolume))]
[JsonSourceGenerationOptions(WriteIndented = true)]
internal sealed partial class NodeJsonContext : JsonSerializerContext;

/// <summary>
/// The CSI Node service: attaches a volume through the NBD server as nbdfuse's file under a loop device,
/// makes a file system on it when it has none, mounts it at the staging path and bind-mounts it into pods.
/// All RPCs are idempotent; one lock serializes them, as the tools they run are not. With a pool in this
/// process, volumes are looked up there; without one (a node of a cluster, the pool on another machine)
/// the NBD server is asked. An NBD server on TCP is reached through <see cref="NbdTlsBridge"/>, which
/// does the TLS that nbdfuse cannot be configured for.
/// </summary>
internal sealed partial class NodeService : Node.NodeBase, IAsyncDisposable
{
    private static readonly TimeSpan AttachDeadline = TimeSpan.FromSeconds(30);

    private static readonly RpcType[] Capabilities = [RpcType.StageUnstageVolume, RpcType.GetVolumeStats, RpcType.ExpandVolume];

    private readonly Pool? _pool;
    private readonly CsiServerOptions _options;
    private readonly NbdEndpoint _nbd;
    private NbdTlsBridge? _bridge;
    private readonly ILogger<NodeService> _logger;
    private readonly string _stateDir;
    private readonly SemaphoreSlim _gate = new(1, 1);
    private readonly ConcurrentDictionary<string, Process> _nbdfuse = new(StringComparer.Ordinal);

    public NodeService(Pool? pool, CsiServerOptions options, ILogger<NodeService> logger)
    {
        _pool = pool;
        _options = options;
        _nbd = options.NbdServer ?? throw new ArgumentException("the Node service needs an NBD server", nameof(options));
        _logger = logger;
        _stateDir = Path.GetFullPath(options.NodeStateDirectory ?? Path.Combine(Path.GetDirectoryName(Path.GetFullPath(options.SocketPath))!, "node"));
    }

    /// <summary>
    /// Lets go of the nbdfuse handles; the attachments themselves outlive the server, as the mounts do,
    /// except through a TLS bridge, which stops with the server (and with it those attachments' I/O).
    /// </summary>
    public async ValueTask DisposeAsync()
    {
        if (_bridge is not null)
        {
            await _bridge.DisposeAsync().ConfigureAwait(false);
            _bridge = null;
        }

        foreach (var process in _nbdfuse.Values)
        {
            process.Dispose();
        }

        _nbdfuse.Clear();
        _gate.Dispose();
    }

    public override Task<NodeGetInfoResponse> NodeGetInfo(NodeGetInfoRequest request, ServerCallContext context) =>
        Task.FromResult(new NodeGetInfoResponse { NodeId = _options.NodeId ?? string.Empty, MaxVolumesPerNode = 0 });

    public override Task<NodeGetCapabilitiesResponse> NodeGetCapabilities(NodeGetCapabilitiesRequest request, ServerCallContext context)
    {
        var response = new NodeGetCapabilitiesResponse();
        foreach (var type in Capabilities)
        {
            response.Capabilities.Add(new NodeServiceCapability { Rpc = new NodeServiceCapability.Types.RPC { Type = type } });
        }

        return Task.FromResult(response);
    }

    public override async Task<NodeStageVolumeResponse> NodeStageVolume(NodeStageVolumeRequest request, ServerCallContext context)
    {
        const string Rpc = "NodeStageVolume";
        Require(request.VolumeId, "volume_id", Rpc);
        Require(request.StagingTargetPath, "staging_target_path", Rpc);
        if (request.VolumeCapability is null)
        {
            throw CsiStatus.InvalidArgument($"{Rpc} '{request.VolumeId}': volume_capability is required");
        }

        var capability = request.VolumeCapability;
        bool block = capability.AccessTypeCase == VolumeCapability.AccessTypeOneofCase.Block;
        if (!block && capability.AccessTypeCase != VolumeCapability.AccessTypeOneofCase.Mount)
        {
            throw CsiStatus.InvalidArgument($"{Rpc} '{request.VolumeId}': volume_capability has no access type (block or mount)");
        }

        string? fsType = block ? null : FsType(capability.Mount.FsType, request.VolumeId);
        string staging = Path.GetFullPath(request.StagingTargetPath);

        await _gate.WaitAsync(context.CancellationToken).ConfigureAwait(false);
        try
        {
            await RequireVolumeAsync(request.VolumeId, Rpc).ConfigureAwait(false);
            if (Load(request.VolumeId) is { } existing)
            {
                if (existing.StagingPath != staging)
                {
                    throw CsiStatus.AlreadyExists($"{Rpc} '{request.VolumeId}': already staged at {existing.StagingPath}");
                }

                if (existing.Block != block)
                {
                    throw CsiStatus.AlreadyExists($"{Rpc} '{request.VolumeId}': already staged with {(existing.Block ? "block" : "mount")} access");
                }

                if (block || NodeCommands.IsMountPoint(staging))
                {
                    return new NodeStageVolumeResponse();
                }

                // The record outlived its mount (a crash half-way): start over.
                await TearDownAsync(existing, Rpc, strict: true).ConfigureAwait(false);
            }

            var staged = await AttachAsync(request.VolumeId, staging, block, fsType, capability, Rpc).ConfigureAwait(false);
            Save(staged);
            CsiLog.VolumeStaged(_logger, request.VolumeId, staging, staged.LoopDevice);
            return new NodeStageVolumeResponse();
        }
        finally
        {
            _gate.Release();
        }
    }

    public override async Task<NodeUnstageVolumeResponse> NodeUnstageVolume(NodeUnstageVolumeRequest request, ServerCallContext context)
    {
        const string Rpc = "NodeUnstageVolume";
        Require(request.VolumeId, "volume_id", Rpc);
        Require(request.StagingTargetPath, "staging_target_path", Rpc);
        string staging = Path.GetFullPath(request.StagingTargetPath);

        await _gate.WaitAsync(context.CancellationToken).ConfigureAwait(false);
        try
        {
            if (Load(request.VolumeId) is { } staged && staged.StagingPath == staging)
            {
                await TearDownAsync(staged, Rpc, strict: true).ConfigureAwait(false);
                CsiLog.VolumeUnstaged(_logger, request.VolumeId, staging);
            }
            else if (NodeCommands.IsMountPoint(staging))
            {
                // Mounted without a record of ours at this path: unmount what is there, nothing else to undo.
                (await NodeCommands.RunAsync("umount", staging).ConfigureAwait(false)).Check(Rpc);
            }

            return new NodeUnstageVolumeResponse();
        }
        finally
        {
            _gate.Release();
        }
    }

    public override async Task<NodePublishVolumeResponse> NodePublishVolume(NodePublishVolumeRequest request, ServerCallContext context)
    {
        const string Rpc = "NodePublishVolume";
        Require(request.VolumeId, "volume_id", Rpc);
        Require(request.StagingTargetPath, "staging_target_path", Rpc);
        Require(request.TargetPath, "target_path", Rpc);
        if (request.VolumeCapability is null)
        {
            throw CsiStatus.InvalidArgument($"{Rpc} '{request.VolumeId}': volume_capability is required");
        }

        string staging = Path.GetFullPath(request.StagingTargetPath);
        string target = Path.GetFullPath(request.TargetPath);

        await _gate.WaitAsync(context.CancellationToken).ConfigureAwait(false);
        try
        {
            // With the pool here a deleted volume is NotFound; a remote one was checked when staged, and a
            // publish must not fail because the NBD server is briefly out of reach.
            if (_pool is not null)
            {
                await RequireVolumeAsync(request.VolumeId, Rpc).ConfigureAwait(false);
            }

            var staged = Load(request.VolumeId);
            if (staged is null || staged.StagingPath != staging)
            {
                throw CsiStatus.Fail(StatusCode.FailedPrecondition, $"{Rpc} '{request.VolumeId}': not staged at {staging}");
            }

            if (NodeCommands.IsMountPoint(target))
            {
                return new NodePublishVolumeResponse();
            }

            string source;
            if (staged.Block)
            {
                Directory.CreateDirectory(Path.GetDirectoryName(target)!);
                if (!File.Exists(target))
                {
                    await File.WriteAllBytesAsync(target, [], CancellationToken.None).ConfigureAwait(false);
                }

                source = staged.LoopDevice;
            }
            else
            {
                Directory.CreateDirectory(target);
                source = staging;
            }

            (await NodeCommands.RunAsync("mount", "--bind", source, target).ConfigureAwait(false)).Check(Rpc);
            if (request.Readonly)
            {
                var ro = await NodeCommands.RunAsync("mount", "-o", "remount,bind,ro", target).ConfigureAwait(false);
                if (!ro.Ok)
                {
                    await NodeCommands.RunAsync("umount", target).ConfigureAwait(false);
                    throw ro.Failure(Rpc);
                }
            }

            CsiLog.VolumePublished(_logger, request.VolumeId, target);
            return new NodePublishVolumeResponse();
        }
        finally
        {
            _gate.Release();
        }
    }

    public override async Task<NodeUnpublishVolumeResponse> NodeUnpublishVolume(NodeUnpublishVolumeRequest request, ServerCallContext context)
    {
        const string Rpc = "NodeUnpublishVolume";
        Require(request.VolumeId, "volume_id", Rpc);
        Require(request.TargetPath, "target_path", Rpc);
        string target = Path.GetFullPath(request.TargetPath);

        await _gate.WaitAsync(context.CancellationToken).ConfigureAwait(false);
        try
        {
            if (NodeCommands.IsMountPoint(target))
            {
                (await NodeCommands.RunAsync("umount", target).ConfigureAwait(false)).Check(Rpc);
                CsiLog.VolumeUnpublished(_logger, request.VolumeId, target);
            }

            // The target was made by Publish (a directory, or a file for block): remove it, as the spec asks.
            if (!NodeCommands.IsMountPoint(target))
            {
                if (File.Exists(target))
                {
                    File.Delete(target);
                }
                else if (Directory.Exists(target) && !Directory.EnumerateFileSystemEntries(target).Any())
                {
                    Directory.Delete(target);
                }
            }

            return new NodeUnpublishVolumeResponse();
        }
        finally
        {
            _gate.Release();
        }
    }

    public override async Task<NodeGetVolumeStatsResponse> NodeGetVolumeStats(NodeGetVolumeStatsRequest request, ServerCallContext context)
    {
        const string Rpc = "NodeGetVolumeStats";
        Require(request.VolumeId, "volume_id", Rpc);
        Require(request.VolumePath, "volume_path", Rpc);
        string path = Path.GetFullPath(request.VolumePath);
        if (!NodeCommands.IsMountPoint(path))
        {
            throw CsiStatus.NotFound($"{Rpc} '{request.VolumeId}': {path} is not mounted");
        }

        var response = new NodeGetVolumeStatsResponse();
        if (File.Exists(path))
        {
            // A published block device: only its size is known.
            long size = _pool is not null
                ? await RequireVolumeAsync(request.VolumeId, Rpc).ConfigureAwait(false)
                : AttachedSize(Load(request.VolumeId) ?? throw CsiStatus.NotFound($"{Rpc} '{request.VolumeId}': not staged on this node"));
            response.Usage.Add(new VolumeUsage { Unit = VolumeUsage.Types.Unit.Bytes, Total = size });
            return response;
        }

        // statvfs(2) through stat -f: fundamental block size, blocks total/free/available, inodes total/free.
        var stat = (await NodeCommands.RunAsync("stat", "-f", "-c", "%S %b %f %a %c %d", path).ConfigureAwait(false)).Check(Rpc);
        long[] v = stat.StdOut.Split(' ', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
            .Select(f => long.Parse(f, NumberStyles.None, CultureInfo.InvariantCulture)).ToArray();
        if (v.Length != 6)
        {
            throw CsiStatus.Fail(StatusCode.Internal, $"{Rpc}: unexpected output of '{stat.Command}': {stat.StdOut}");
        }

        long bsize = v[0];
        response.Usage.Add(new VolumeUsage { Unit = VolumeUsage.Types.Unit.Bytes, Total = v[1] * bsize, Used = (v[1] - v[2]) * bsize, Available = v[3] * bsize });
        response.Usage.Add(new VolumeUsage { Unit = VolumeUsage.Types.Unit.Inodes, Total = v[4], Used = v[4] - v[5], Available = v[5] });
        response.VolumeCondition = new VolumeCondition { Abnormal = false, Message = "mounted" };
        return response;
    }

    public override async Task<NodeExpandVolumeResponse> NodeExpandVolume(NodeExpandVolumeRequest request, ServerCallContext context)
    {
        const string Rpc = "NodeExpandVolume";
        Require(request.VolumeId, "volume_id", Rpc);
        Require(request.VolumePath, "volume_path", Rpc);

        await _gate.WaitAsync(context.CancellationToken).ConfigureAwait(false);
        try
        {
            long size = _pool is not null ? await RequireVolumeAsync(request.VolumeId, Rpc).ConfigureAwait(false) : 0;
            var staged = Load(request.VolumeId) ?? throw CsiStatus.NotFound($"{Rpc} '{request.VolumeId}': not staged on this node");
            (await NodeCommands.RunAsync("losetup", "-c", staged.LoopDevice).ConfigureAwait(false)).Check(Rpc);
            if (!staged.Block)
            {
                if (staged.FsType == "xfs")
                {
                    (await NodeCommands.RunAsync("xfs_growfs", staged.StagingPath).ConfigureAwait(false)).Check(Rpc);
                }
                else
                {
                    (await NodeCommands.RunAsync("resize2fs", staged.LoopDevice).ConfigureAwait(false)).Check(Rpc);
                }
            }

            // Without the pool, the size is what the attachment sees (NBD fixes it when the connection opens).
            return new NodeExpandVolumeResponse { CapacityBytes = _pool is not null ? size : AttachedSize(staged) };
        }
        finally
        {
            _gate.Release();
        }
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

    private static void Require(string value, string field, string rpc)
    {
        if (string.IsNullOrEmpty(value))
        {
            throw CsiStatus.InvalidArgument($"{rpc}: {field} is required");
        }
    }

    private static string FsType(string requested, string volumeId)
    {
        string fs = string.IsNullOrEmpty(requested) ? "ext4" : requested;
        return fs switch
        {
            "ext4" => fs,
            "xfs" when NodeCommands.Find("mkfs.xfs") is not null => fs,
            "xfs" => throw CsiStatus.InvalidArgument($"NodeStageVolume '{volumeId}': fs_type xfs needs mkfs.xfs, which this node lacks"),
            _ => throw CsiStatus.InvalidArgument($"NodeStageVolume '{volumeId}': fs_type '{fs}' is not supported (ext4 or xfs)"),
        };
    }

    /// <summary>The volume's size; NOT_FOUND when it does not exist, INTERNAL when the NBD server cannot tell.</summary>
    private async Task<long> RequireVolumeAsync(string volumeId, string rpc)
    {
        if (_pool is null)
        {
            return await RemoteVolumeSizeAsync(volumeId, rpc).ConfigureAwait(false);
        }

        var found = _pool.GetDevice(volumeId);
        if (found.IsOk && found.Value.Kind == DeviceKind.Volume)
        {
            return found.Value.Size;
        }

        if (found.IsOk || found.Error.Code is StorageErrorCode.NotFound or StorageErrorCode.InvalidName)
        {
            throw CsiStatus.NotFound($"{rpc}: volume '{volumeId}' not found");
        }

        throw CsiStatus.From(found.Error);
    }

    private async Task<long> RemoteVolumeSizeAsync(string volumeId, string rpc)
    {
        if (_nbd.Tls is not null)
        {
            long? exportSize;
            try
            {
                using var tls = _nbd.LoadTlsOptions();
                exportSize = await Dolly.Nbd.NbdTlsClient.GetExportSizeAsync(tls, volumeId, CancellationToken.None).ConfigureAwait(false);
            }
            catch (Dolly.Nbd.NbdClientException e)
            {
                throw CsiStatus.Fail(StatusCode.Internal, $"{rpc} '{volumeId}': cannot reach the volume on the NBD server {_nbd}: {e.Message}");
            }

            return exportSize ?? throw CsiStatus.NotFound($"{rpc}: volume '{volumeId}' not found on the NBD server {_nbd}");
        }

        var info = await NodeCommands.RunAsync("nbdinfo", "--size", UnixUri(volumeId, _nbd.SocketPath!)).ConfigureAwait(false);
        string detail = info.StdErr.Trim().Length > 0 ? info.StdErr.Trim() : info.StdOut.Trim();
        if (info.Ok && long.TryParse(info.StdOut.Trim(), NumberStyles.None, CultureInfo.InvariantCulture, out long size))
        {
            return size;
        }

        // libnbd's words for NBD_REP_ERR_UNKNOWN in reply to NBD_OPT_GO; snapshots are exported too but
        // read-only, and the CO never stages a snapshot id, so an export is taken to be a volume.
        if (detail.Contains("has no export named", StringComparison.Ordinal))
        {
            throw CsiStatus.NotFound($"{rpc}: volume '{volumeId}' not found on the NBD server {_nbd}");
        }

        throw CsiStatus.Fail(StatusCode.Internal, $"{rpc} '{volumeId}': cannot reach the volume on the NBD server {_nbd} ('{info.Command}' exited with {info.ExitCode}): {detail}");
    }

    // Volume ids are CSI names (letters, digits, '-', '.') and the socket an absolute path: nothing to escape.
    private static string UnixUri(string volumeId, string socket) => $"nbd+unix:///{volumeId}?socket={socket}";

    private static long AttachedSize(StagedVolume staged)
    {
        var disk = new FileInfo(Path.Combine(staged.FuseDir, "disk"));
        return disk.Exists ? disk.Length : throw CsiStatus.Fail(StatusCode.FailedPrecondition, $"the attachment of volume '{staged.VolumeId}' ({disk.FullName}) is gone; unstage and stage it again");
    }

    /// <summary>nbdfuse file, loop device, file system and mount; undone in reverse order when a step fails.</summary>
    private async Task<StagedVolume> AttachAsync(string volumeId, string staging, bool block, string? fsType, VolumeCapability capability, string rpc)
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
            staged = staged with { LoopDevice = loop.StdOut.Trim() };
            if (block)
            {
                return staged;
            }

            // blkid exits 2 when it finds no signature: a blank volume gets a file system.
            var probe = await NodeCommands.RunAsync("blkid", "-p", "-o", "value", "-s", "TYPE", staged.LoopDevice).ConfigureAwait(false);
            if (probe.ExitCode == 2)
            {
                var mkfs = fsType == "xfs"
                    ? await NodeCommands.RunAsync("mkfs.xfs", "-q", "-K", staged.LoopDevice).ConfigureAwait(false)
                    : await NodeCommands.RunAsync("mkfs.ext4", "-q", "-F", "-E", "nodiscard", staged.LoopDevice).ConfigureAwait(false);
                mkfs.Check(rpc);
            }
            else
            {
                probe.Check(rpc);
                if (probe.StdOut.Trim() is "ext2" or "ext3" or "ext4")
                {
                    await GrowExtOfflineAsync(staged.LoopDevice, rpc).ConfigureAwait(false);
                }
            }

            Directory.CreateDirectory(staging);
            var args = new List<string> { "-t", fsType! };
            if (capability.Mount.MountFlags.Count > 0)
            {
                args.Add("-o");
                args.Add(string.Join(',', capability.Mount.MountFlags));
            }

            args.Add(staged.LoopDevice);
            args.Add(staging);
            (await NodeCommands.RunAsync("mount", [.. args]).ConfigureAwait(false)).Check(rpc);
            return staged;
        }
        catch
        {
            await TearDownAsync(staged, rpc, strict: false).ConfigureAwait(false);
            throw;
        }
    }

    /// <summary>
    /// Unmount, detach the loop device, unmount nbdfuse and forget the volume. Strict: a failing step fails the
    /// RPC (the CO retries); otherwise (cleanup after a failed stage) failures are logged and the rest goes on.
    /// </summary>
    private async Task TearDownAsync(StagedVolume staged, string rpc, bool strict)
    {
        if (!staged.Block && NodeCommands.IsMountPoint(staged.StagingPath))
        {
            await Step(staged, rpc, strict, "umount", staged.StagingPath).ConfigureAwait(false);
        }

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
        File.Delete(RecordPath(staged.VolumeId));
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

    private string RecordPath(string volumeId) => Path.Combine(_stateDir, volumeId + ".json");

    private StagedVolume? Load(string volumeId)
    {
        string path = RecordPath(volumeId);
        return File.Exists(path) ? JsonSerializer.Deserialize(File.ReadAllText(path), NodeJsonContext.Default.StagedVolume) : null;
    }

    private void Save(StagedVolume staged)
    {
        Directory.CreateDirectory(_stateDir);
        string path = RecordPath(staged.VolumeId);
        string temp = path + ".tmp";
        File.WriteAllText(temp, JsonSerializer.Serialize(staged, NodeJsonContext.Default.StagedVolume));
        File.Move(temp, path, overwrite: true);
    }

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
