using Dolly.Csi.V1;
using Dolly.Storage;
using Google.Protobuf.WellKnownTypes;
using Grpc.Core;
using Microsoft.Extensions.Logging;
using AccessMode = Dolly.Csi.V1.VolumeCapability.Types.AccessMode.Types.Mode;
using RpcType = Dolly.Csi.V1.ControllerServiceCapability.Types.RPC.Types.Type;

namespace Dolly.Csi;

/// <summary>
/// The CSI Controller service over a pool. Volume and snapshot ids are pool names (see <see cref="CsiNames"/>).
/// Every RPC is idempotent as the CSI spec asks: a retried create returns what the first one made, a delete
/// of something already gone succeeds.
/// </summary>
internal sealed partial class ControllerService(Pool pool, CsiServerOptions options, ILogger<ControllerService> logger) : Controller.ControllerBase
{
    private const long Alignment = 4096;

    private static readonly RpcType[] Capabilities =
    [
        RpcType.CreateDeleteVolume,
        RpcType.CreateDeleteSnapshot,
        RpcType.ListSnapshots,
        RpcType.ListVolumes,
        RpcType.GetCapacity,
        RpcType.CloneVolume,
        RpcType.ExpandVolume,
        RpcType.GetVolume,
        RpcType.GetSnapshot,
    ];

    // Check-then-create sequences (does the name exist, is it compatible, create) must not interleave with
    // another create of the same name; the pool's own operations are short, so one lock is enough.
    private readonly Lock _gate = new();

    public override Task<ControllerGetCapabilitiesResponse> ControllerGetCapabilities(ControllerGetCapabilitiesRequest request, ServerCallContext context)
    {
        var response = new ControllerGetCapabilitiesResponse();
        foreach (var type in Capabilities)
        {
            response.Capabilities.Add(new ControllerServiceCapability { Rpc = new ControllerServiceCapability.Types.RPC { Type = type } });
        }

        return Task.FromResult(response);
    }

    public override Task<CreateVolumeResponse> CreateVolume(CreateVolumeRequest request, ServerCallContext context)
    {
        if (string.IsNullOrEmpty(request.Name))
        {
            throw CsiStatus.InvalidArgument("CreateVolume: name is required");
        }

        if (request.VolumeCapabilities.Count == 0)
        {
            throw CsiStatus.InvalidArgument($"CreateVolume '{request.Name}': volume_capabilities are required");
        }

        if (Unsupported(request.VolumeCapabilities) is { } why)
        {
            throw CsiStatus.InvalidArgument($"CreateVolume '{request.Name}': {why}");
        }

        var (required, limit) = Range(request.CapacityRange, $"CreateVolume '{request.Name}'");
        string name = CsiNames.ToEngineName(request.Name);
        var source = request.VolumeContentSource;
        string? sourceId = source?.TypeCase switch
        {
            null or VolumeContentSource.TypeOneofCase.None => null,
            VolumeContentSource.TypeOneofCase.Snapshot => source.Snapshot.SnapshotId,
            VolumeContentSource.TypeOneofCase.Volume => source.Volume.VolumeId,
            _ => throw CsiStatus.InvalidArgument($"CreateVolume '{request.Name}': unknown volume_content_source"),
        };
        if (sourceId is { Length: 0 })
        {
            throw CsiStatus.InvalidArgument($"CreateVolume '{request.Name}': volume_content_source names no {SourceWhat(source!)}");
        }

        lock (_gate)
        {
            if (Lookup(name) is { } existing)
            {
                if (existing.Kind != DeviceKind.Volume)
                {
                    throw CsiStatus.AlreadyExists($"CreateVolume '{request.Name}': the name '{name}' is taken by a snapshot");
                }

                if (existing.Size < required || (limit > 0 && existing.Size > limit))
                {
                    throw CsiStatus.AlreadyExists(
                        $"volume '{name}' already exists with {existing.Size} bytes, outside the requested capacity range [{required}, {(limit > 0 ? limit.ToString(System.Globalization.CultureInfo.InvariantCulture) : "any")}]");
                }

                // A source that is gone since cannot be compared; the volume was made from whatever it was.
                bool sameSource = sourceId is null ? existing.SourceId == 0 : existing.SourceName == sourceId || existing.SourceName is null && existing.SourceId != 0;
                if (!sameSource)
                {
                    throw CsiStatus.AlreadyExists(
                        $"volume '{name}' already exists from {Describe(existing.SourceName, existing.SourceId)}, not from {Describe(sourceId, 0)}");
                }

                return Task.FromResult(new CreateVolumeResponse { Volume = ToVolume(existing, source) });
            }

            DeviceInfo? src = null;
            if (sourceId is not null)
            {
                var wanted = source!.TypeCase == VolumeContentSource.TypeOneofCase.Snapshot ? DeviceKind.Snapshot : DeviceKind.Volume;
                src = Lookup(sourceId);
                if (src is null || src.Kind != wanted)
                {
                    throw CsiStatus.NotFound($"CreateVolume '{request.Name}': source {SourceWhat(source)} '{sourceId}' not found");
                }
            }

            long size = SizeFor(request.Name, required, limit, src);
            var created = src is null ? pool.CreateVolume(name, size) : pool.Clone(src.Name, name, size);
            if (!created.IsOk)
            {
                throw CsiStatus.From(created.Error);
            }

            CsiLog.VolumeCreated(logger, name, size, src?.Name ?? "nothing");
            return Task.FromResult(new CreateVolumeResponse { Volume = ToVolume(created.Value, source) });
        }
    }

    public override Task<DeleteVolumeResponse> DeleteVolume(DeleteVolumeRequest request, ServerCallContext context)
    {
        if (string.IsNullOrEmpty(request.VolumeId))
        {
            throw CsiStatus.InvalidArgument("DeleteVolume: volume_id is required");
        }

        // Unknown ids, and ids that name a snapshot rather than a volume, are already "deleted" volumes.
        if (DeleteIfKind(request.VolumeId, DeviceKind.Volume))
        {
            CsiLog.VolumeDeleted(logger, request.VolumeId);
        }

        return Task.FromResult(new DeleteVolumeResponse());
    }

    /// <summary>
    /// Deletes the device when it exists and is of <paramref name="kind"/>; true when it was deleted. Deletes
    /// are idempotent: a device already gone, or of the other kind, is left alone.
    /// </summary>
    private bool DeleteIfKind(string id, DeviceKind kind)
    {
        lock (_gate)
        {
            if (Lookup(id)?.Kind != kind)
            {
                return false;
            }

            var deleted = pool.Delete(id);
            if (!deleted.IsOk && deleted.Error.Code != StorageErrorCode.NotFound)
            {
                throw CsiStatus.From(deleted.Error);
            }

            return deleted.IsOk;
        }
    }

    public override Task<ValidateVolumeCapabilitiesResponse> ValidateVolumeCapabilities(ValidateVolumeCapabilitiesRequest request, ServerCallContext context)
    {
        if (string.IsNullOrEmpty(request.VolumeId))
        {
            throw CsiStatus.InvalidArgument("ValidateVolumeCapabilities: volume_id is required");
        }

        if (request.VolumeCapabilities.Count == 0)
        {
            throw CsiStatus.InvalidArgument($"ValidateVolumeCapabilities '{request.VolumeId}': volume_capabilities are required");
        }

        _ = RequireVolume(request.VolumeId, "ValidateVolumeCapabilities");
        if (Unsupported(request.VolumeCapabilities) is { } why)
        {
            return Task.FromResult(new ValidateVolumeCapabilitiesResponse { Message = why });
        }

        var confirmed = new ValidateVolumeCapabilitiesResponse.Types.Confirmed();
        confirmed.VolumeCapabilities.Add(request.VolumeCapabilities);
        confirmed.VolumeContext.Add(request.VolumeContext);
        confirmed.Parameters.Add(request.Parameters);
        confirmed.MutableParameters.Add(request.MutableParameters);
        return Task.FromResult(new ValidateVolumeCapabilitiesResponse { Confirmed = confirmed });
    }

    public override Task<ListVolumesResponse> ListVolumes(ListVolumesRequest request, ServerCallContext context)
    {
        var volumes = pool.ListDevices(DeviceKind.Volume);
        var (page, next) = Paging.Page(volumes, request.MaxEntries, request.StartingToken, "ListVolumes");
        var response = new ListVolumesResponse { NextToken = next };
        foreach (var v in page)
        {
            response.Entries.Add(new ListVolumesResponse.Types.Entry { Volume = ToVolume(v, SourceOf(v)), Status = new ListVolumesResponse.Types.VolumeStatus() });
        }

        return Task.FromResult(response);
    }

    public override Task<ControllerGetVolumeResponse> ControllerGetVolume(ControllerGetVolumeRequest request, ServerCallContext context)
    {
        if (string.IsNullOrEmpty(request.VolumeId))
        {
            throw CsiStatus.InvalidArgument("ControllerGetVolume: volume_id is required");
        }

        var v = RequireVolume(request.VolumeId, "ControllerGetVolume");
        return Task.FromResult(new ControllerGetVolumeResponse
        {
            Volume = ToVolume(v, SourceOf(v)),
            Status = new ControllerGetVolumeResponse.Types.VolumeStatus(),
        });
    }

    public override Task<GetCapacityResponse> GetCapacity(GetCapacityRequest request, ServerCallContext context)
    {
        // Thin provisioning: what can still be written is the free blocks inside the data file plus the
        // free space of the file system under the pool.
        var info = pool.GetInfo();
        long free = info.DataBlocksFree * info.BlockSize;
        try
        {
            free += new DriveInfo(pool.Directory).AvailableFreeSpace;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or ArgumentException)
        {
            // No file-system figure (an unusual mount): report the pool's own free blocks only.
        }

        return Task.FromResult(new GetCapacityResponse
        {
            AvailableCapacity = free,
            MaximumVolumeSize = ByteSize.MaxVolumeSize,
            MinimumVolumeSize = Alignment,
        });
    }

    public override Task<ControllerExpandVolumeResponse> ControllerExpandVolume(ControllerExpandVolumeRequest request, ServerCallContext context)
    {
        if (string.IsNullOrEmpty(request.VolumeId))
        {
            throw CsiStatus.InvalidArgument("ControllerExpandVolume: volume_id is required");
        }

        if (request.CapacityRange is null)
        {
            throw CsiStatus.InvalidArgument($"ControllerExpandVolume '{request.VolumeId}': capacity_range is required");
        }

        var (required, limit) = Range(request.CapacityRange, $"ControllerExpandVolume '{request.VolumeId}'");
        long size = RoundUp(required, $"ControllerExpandVolume '{request.VolumeId}'");
        if (limit > 0 && size > limit)
        {
            throw CsiStatus.OutOfRange($"ControllerExpandVolume '{request.VolumeId}': {required} bytes rounded up to {size} exceeds limit_bytes {limit}");
        }

        // A file system on the volume has to be grown by the node; a raw block volume is ready as it is.
        bool nodeExpansion = request.VolumeCapability?.AccessTypeCase != VolumeCapability.AccessTypeOneofCase.Block;
        lock (_gate)
        {
            var v = RequireVolume(request.VolumeId, "ControllerExpandVolume");
            if (size < v.Size)
            {
                throw CsiStatus.OutOfRange($"volume '{v.Name}' is {v.Size} bytes; shrinking it to {size} bytes is not supported");
            }

            if (size > v.Size)
            {
                var resized = pool.Resize(v.Name, size);
                if (!resized.IsOk)
                {
                    throw CsiStatus.From(resized.Error);
                }

                CsiLog.VolumeExpanded(logger, v.Name, size);
            }

            return Task.FromResult(new ControllerExpandVolumeResponse { CapacityBytes = size, NodeExpansionRequired = nodeExpansion });
        }
    }

    /// <summary>The device by pool name, or null when there is none (an id that is no valid name names nothing).</summary>
    private DeviceInfo? Lookup(string name)
    {
        var found = pool.GetDevice(name);
        if (found.IsOk)
        {
            return found.Value;
        }

        return found.Error.Code is StorageErrorCode.NotFound or StorageErrorCode.InvalidName ? null : throw CsiStatus.From(found.Error);
    }

    private DeviceInfo RequireVolume(string volumeId, string rpc) =>
        Lookup(volumeId) is { Kind: DeviceKind.Volume } v ? v : throw CsiStatus.NotFound($"{rpc}: volume '{volumeId}' not found");

    private long SizeFor(string csiName, long required, long limit, DeviceInfo? source)
    {
        string what = $"CreateVolume '{csiName}'";
        long size = required > 0 ? RoundUp(required, what) : source?.Size ?? options.DefaultVolumeSize;
        if (required == 0 && source is null && limit > 0 && size > limit)
        {
            // Only a limit: the default size does not fit, take the largest aligned size that does.
            size = limit / Alignment * Alignment;
        }

        if (source is not null && size < source.Size)
        {
            throw CsiStatus.OutOfRange($"{what}: {size} bytes is smaller than source '{source.Name}' ({source.Size} bytes)");
        }

        if (size <= 0 || (limit > 0 && size > limit))
        {
            throw CsiStatus.OutOfRange($"{what}: no size that is a multiple of {Alignment} bytes fits between required_bytes {required} and limit_bytes {limit}{(source is null ? "" : $" and is at least the {source.Size} bytes of source '{source.Name}'")}");
        }

        if (size > ByteSize.MaxVolumeSize)
        {
            throw CsiStatus.OutOfRange($"{what}: {size} bytes is larger than the largest volume ({ByteSize.MaxVolumeSize} bytes)");
        }

        return size;
    }

    private static (long Required, long Limit) Range(CapacityRange? range, string what)
    {
        long required = range?.RequiredBytes ?? 0;
        long limit = range?.LimitBytes ?? 0;
        if (required < 0 || limit < 0)
        {
            throw CsiStatus.InvalidArgument($"{what}: capacity_range must not be negative");
        }

        if (limit > 0 && required > limit)
        {
            throw CsiStatus.OutOfRange($"{what}: required_bytes {required} is more than limit_bytes {limit}");
        }

        return (required, limit);
    }

    private static long RoundUp(long bytes, string what)
    {
        if (bytes > ByteSize.MaxVolumeSize)
        {
            throw CsiStatus.OutOfRange($"{what}: {bytes} bytes is larger than the largest volume ({ByteSize.MaxVolumeSize} bytes)");
        }

        return (bytes + Alignment - 1) / Alignment * Alignment;
    }

    /// <summary>Why the capabilities cannot be honoured, or null when they all can.</summary>
    private static string? Unsupported(IEnumerable<VolumeCapability> capabilities)
    {
        foreach (var c in capabilities)
        {
            if (c.AccessTypeCase == VolumeCapability.AccessTypeOneofCase.None)
            {
                return "a volume capability must ask for block or mount access";
            }

            if (c.AccessMode is null)
            {
                return "a volume capability must carry an access mode";
            }

            // One writer at a time: a volume is exported by one NBD connection that may write. Many readers
            // are fine.
            if (c.AccessMode.Mode is not (AccessMode.SingleNodeWriter or AccessMode.SingleNodeReaderOnly or AccessMode.SingleNodeSingleWriter
                or AccessMode.SingleNodeMultiWriter or AccessMode.MultiNodeReaderOnly))
            {
                return $"access mode {c.AccessMode.Mode} is not supported";
            }

            if (c.Mount is { FsType: not ("" or "ext4" or "xfs") } mount)
            {
                return $"file system '{mount.FsType}' is not supported (ext4 or xfs)";
            }
        }

        return null;
    }

    private static string SourceWhat(VolumeContentSource source) =>
        source.TypeCase == VolumeContentSource.TypeOneofCase.Snapshot ? "snapshot" : "volume";

    private static string Describe(string? sourceName, ulong sourceId) =>
        sourceName is not null ? $"'{sourceName}'" : sourceId != 0 ? "a deleted source" : "no source";

    /// <summary>The content source of a volume as CSI describes it, while the source still exists.</summary>
    private VolumeContentSource? SourceOf(DeviceInfo volume)
    {
        if (volume.SourceName is null || Lookup(volume.SourceName) is not { } src)
        {
            return null;
        }

        return src.Kind == DeviceKind.Snapshot
            ? new VolumeContentSource { Snapshot = new VolumeContentSource.Types.SnapshotSource { SnapshotId = src.Name } }
            : new VolumeContentSource { Volume = new VolumeContentSource.Types.VolumeSource { VolumeId = src.Name } };
    }

    private static V1.Volume ToVolume(DeviceInfo device, VolumeContentSource? source)
    {
        var volume = new V1.Volume { VolumeId = device.Name, CapacityBytes = device.Size };
        if (source is not null && source.TypeCase != VolumeContentSource.TypeOneofCase.None)
        {
            volume.ContentSource = source;
        }

        return volume;
    }

    private static Snapshot ToSnapshot(DeviceInfo snapshot) => new()
    {
        SnapshotId = snapshot.Name,
        SourceVolumeId = snapshot.SourceName ?? "",
        SizeBytes = snapshot.Size,
        CreationTime = Timestamp.FromDateTimeOffset(snapshot.CreatedAt),

        // Snapshots share blocks with their volume and are complete the moment they exist.
        ReadyToUse = true,
    };
}
