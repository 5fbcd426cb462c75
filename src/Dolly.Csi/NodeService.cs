using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using Dolly.Csi.V1;
using Dolly.Storage;
using Grpc.Core;
using Microsoft.Extensions.Logging;
using RpcType = Dolly.Csi.V1.NodeServiceCapability.Types.RPC.Types.Type;

namespace Dolly.Csi;

/// <summary>
/// The CSI Node service: attaches a volume through the NBD server, as a kernel nbd device connected by
/// nbd-client or as nbdfuse's file under a loop device (<see cref="NodeAttachMode"/>), makes a file system on
/// it when it has none, mounts it at the staging path and bind-mounts it into pods.
/// All RPCs are idempotent; one lock serializes them, as the tools they run are not. With a pool in this
/// process, volumes are looked up there; without one (a node of a cluster, the pool on another machine)
/// the NBD server is asked. For nbdfuse, an NBD server on TCP is reached through <see cref="NbdTlsBridge"/>,
/// which does the TLS that nbdfuse cannot be configured for; nbd-client does its own TLS.
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
        _stateDir = StateDirectory(options);
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

            var attachment = ChooseAttachment(request.VolumeId, Rpc);
            var staged = await AttachAsync(request.VolumeId, staging, block, fsType, capability, attachment, Rpc).ConfigureAwait(false);
            Save(staged);
            CsiLog.VolumeStaged(_logger, request.VolumeId, staging, staged.Device);
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

                source = staged.Device;
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
            if (staged.Attach == Attachment.Nbdfuse)
            {
                // The loop device re-reads nbdfuse's file size. A kernel nbd device keeps the size the connection
                // opened with (NBD has no resize notice): a volume grown since is grown at its next stage, offline.
                (await NodeCommands.RunAsync("losetup", "-c", staged.LoopDevice).ConfigureAwait(false)).Check(Rpc);
            }

            if (!staged.Block)
            {
                if (staged.FsType == "xfs")
                {
                    (await NodeCommands.RunAsync("xfs_growfs", staged.StagingPath).ConfigureAwait(false)).Check(Rpc);
                }
                else
                {
                    (await NodeCommands.RunAsync("resize2fs", staged.Device).ConfigureAwait(false)).Check(Rpc);
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

    /// <summary>Where the node keeps its records: <see cref="CsiServerOptions.NodeStateDirectory"/>, or <c>node</c> next to the socket.</summary>
    internal static string StateDirectory(CsiServerOptions options) =>
        Path.GetFullPath(options.NodeStateDirectory ?? Path.Combine(Path.GetDirectoryName(Path.GetFullPath(options.SocketPath))!, "node"));

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

    private string RecordPath(string volumeId) => Path.Combine(_stateDir, volumeId + ".json");

    private StagedVolume? Load(string volumeId) => StagedVolume.Read(RecordPath(volumeId));

    private void Save(StagedVolume staged)
    {
        Directory.CreateDirectory(_stateDir);
        staged.Write(RecordPath(staged.VolumeId));
    }
}
