using Microsoft.Extensions.Logging;

namespace Dolly.Csi;

/// <summary>The CSI driver's log messages; event ids are stable.</summary>
internal static partial class CsiLog
{
    [LoggerMessage(EventId = 5001, Level = LogLevel.Information, Message = "CSI driver {Driver} listening on {Socket}")]
    public static partial void Listening(ILogger logger, string driver, string socket);

    [LoggerMessage(EventId = 5002, Level = LogLevel.Information, Message = "CSI driver stopped listening on {Socket}")]
    public static partial void Stopped(ILogger logger, string socket);

    [LoggerMessage(EventId = 5010, Level = LogLevel.Information, Message = "created volume {Volume} ({Bytes} bytes) from {Source}")]
    public static partial void VolumeCreated(ILogger logger, string volume, long bytes, string source);

    [LoggerMessage(EventId = 5011, Level = LogLevel.Information, Message = "deleted volume {Volume}")]
    public static partial void VolumeDeleted(ILogger logger, string volume);

    [LoggerMessage(EventId = 5012, Level = LogLevel.Information, Message = "expanded volume {Volume} to {Bytes} bytes")]
    public static partial void VolumeExpanded(ILogger logger, string volume, long bytes);

    [LoggerMessage(EventId = 5020, Level = LogLevel.Information, Message = "created snapshot {Snapshot} of volume {Volume}")]
    public static partial void SnapshotCreated(ILogger logger, string snapshot, string volume);

    [LoggerMessage(EventId = 5021, Level = LogLevel.Information, Message = "deleted snapshot {Snapshot}")]
    public static partial void SnapshotDeleted(ILogger logger, string snapshot);

    [LoggerMessage(EventId = 5030, Level = LogLevel.Warning, Message = "{Rpc} failed with {Code}: {Message}")]
    public static partial void RpcFailed(ILogger logger, string rpc, Grpc.Core.StatusCode code, string message);

    [LoggerMessage(EventId = 5040, Level = LogLevel.Information, Message = "staged volume {Volume} at {Path} on {Device}")]
    public static partial void VolumeStaged(ILogger logger, string volume, string path, string device);

    [LoggerMessage(EventId = 5041, Level = LogLevel.Information, Message = "unstaged volume {Volume} from {Path}")]
    public static partial void VolumeUnstaged(ILogger logger, string volume, string path);

    [LoggerMessage(EventId = 5042, Level = LogLevel.Information, Message = "published volume {Volume} at {Path}")]
    public static partial void VolumePublished(ILogger logger, string volume, string path);

    [LoggerMessage(EventId = 5043, Level = LogLevel.Information, Message = "unpublished volume {Volume} from {Path}")]
    public static partial void VolumeUnpublished(ILogger logger, string volume, string path);

    [LoggerMessage(EventId = 5044, Level = LogLevel.Warning, Message = "cleanup after a failed stage of {Volume}: {Command} failed: {Message}")]
    public static partial void CleanupFailed(ILogger logger, string volume, string command, string message);

    [LoggerMessage(EventId = 5045, Level = LogLevel.Information, Message = "{Device} was taken by another program while attaching volume {Volume}; trying the next free nbd device")]
    public static partial void NbdDeviceTaken(ILogger logger, string device, string volume);

    [LoggerMessage(EventId = 5050, Level = LogLevel.Information, Message = "relaying NBD from {Socket} to {Server} over TLS")]
    public static partial void BridgeListening(ILogger logger, string socket, string server);

    [LoggerMessage(EventId = 5051, Level = LogLevel.Warning, Message = "an NBD connection relayed to {Server} failed: {Message}")]
    public static partial void BridgeConnectionFailed(ILogger logger, string server, string message);
}
