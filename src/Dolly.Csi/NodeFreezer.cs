using System.Collections.Concurrent;
using System.Text.Json;
using System.Text.Json.Serialization;
using Grpc.Core;
using Microsoft.Extensions.Logging;
using Microsoft.Win32.SafeHandles;

namespace Dolly.Csi;

/// <summary>
/// Freezes and thaws the file systems of volumes staged on this node, and guarantees the thaw: each freeze has a
/// deadline on <see cref="TimeProvider"/> after which it thaws whatever its caller does, and each is recorded in
/// <c>frozen/&lt;volume&gt;.json</c> under the node state directory before the ioctl, so a node restarted while
/// something was frozen thaws it (<see cref="ThawLeftovers"/>) before it serves anything. The record needs no
/// fsync: a freeze does not outlive the kernel, so only a process crash, which keeps the page cache, can leave one.
/// </summary>
internal sealed partial class NodeFreezer
{
    /// <summary>The deadline when the caller names none.</summary>
    public static readonly TimeSpan DefaultTimeout = TimeSpan.FromSeconds(2);

    /// <summary>The longest deadline a caller may ask for: a freeze blocks every writer of the volume.</summary>
    public static readonly TimeSpan MaxTimeout = TimeSpan.FromSeconds(60);

    private readonly string _stateDir;
    private readonly string _frozenDir;
    private readonly TimeProvider _time;
    private readonly ILogger _logger;
    private readonly ConcurrentDictionary<string, Window> _open = new(StringComparer.Ordinal);

    public NodeFreezer(string stateDirectory, TimeProvider time, ILogger logger)
    {
        _stateDir = stateDirectory;
        _frozenDir = Path.Combine(stateDirectory, "frozen");
        _time = time;
        _logger = logger;
    }

    /// <summary>Thaws every file system a previous run of the node recorded as frozen; returns the mount paths it looked at.</summary>
    public IReadOnlyList<string> ThawLeftovers()
    {
        if (!Directory.Exists(_frozenDir))
        {
            return [];
        }

        var paths = new List<string>();
        foreach (string file in Directory.EnumerateFiles(_frozenDir, "*.json"))
        {
            FrozenMount? record;
            try
            {
                record = JsonSerializer.Deserialize(File.ReadAllText(file), FrozenJsonContext.Default.FrozenMount);
            }
            catch (JsonException e)
            {
                // A record cut short by a crash while it was written: the freeze after it never ran.
                NodeFreezeLog.BadRecord(_logger, file, e.Message);
                File.Delete(file);
                continue;
            }

            if (record is null)
            {
                File.Delete(file);
                continue;
            }

            // Never FITHAW a path that is no longer a mount: that would reach the file system beneath it.
            bool mounted = NodeCommands.IsMountPoint(record.MountPath);
            int errno = mounted ? NodeFreezeIoctl.Thaw(record.MountPath) : NodeFreezeIoctl.EInval;
            if (errno is 0 or NodeFreezeIoctl.EInval)
            {
                NodeFreezeLog.LeftoverThawed(_logger, record.VolumeId, record.MountPath, errno == 0 ? "thawed" : mounted ? "was not frozen" : "no longer mounted");
                File.Delete(file);
            }
            else
            {
                // Kept, so the next start tries again; the operator sees why in the log.
                NodeFreezeLog.LeftoverThawFailed(_logger, record.VolumeId, record.MountPath, NodeFreezeIoctl.Describe(errno));
            }

            paths.Add(record.MountPath);
        }

        return paths;
    }

    /// <summary>
    /// Freezes the file system of a volume staged here; the window thaws on <see cref="Window.Thaw"/>, on dispose,
    /// or at the deadline, whichever comes first. Throws the gRPC status the service answers with.
    /// </summary>
    public Window Freeze(string volumeId, TimeSpan timeout)
    {
        if (string.IsNullOrEmpty(volumeId) || volumeId is "." or ".." || volumeId.AsSpan().IndexOfAny('/', '\0') >= 0)
        {
            throw CsiStatus.InvalidArgument($"FreezeWindow: volume_id '{volumeId}' is not a volume id");
        }

        if (timeout <= TimeSpan.Zero || timeout > MaxTimeout)
        {
            throw CsiStatus.InvalidArgument($"FreezeWindow '{volumeId}': timeout {timeout.TotalMilliseconds} ms is outside 1 ms..{MaxTimeout.TotalMilliseconds} ms");
        }

        var staged = StagedVolume.Read(Path.Combine(_stateDir, volumeId + ".json"))
            ?? throw CsiStatus.NotFound($"FreezeWindow: volume '{volumeId}' is not staged on this node");
        if (staged.Block)
        {
            throw CsiStatus.Fail(StatusCode.FailedPrecondition, $"FreezeWindow '{volumeId}': staged for block access, so there is no file system to freeze");
        }

        if (!NodeCommands.IsMountPoint(staged.StagingPath))
        {
            throw CsiStatus.Fail(StatusCode.FailedPrecondition, $"FreezeWindow '{volumeId}': its staging path {staged.StagingPath} is not mounted");
        }

        var window = new Window(this, volumeId, staged.StagingPath);
        if (!_open.TryAdd(volumeId, window))
        {
            throw CsiStatus.Fail(StatusCode.Aborted, $"FreezeWindow '{volumeId}': another freeze of this volume is in progress");
        }

        try
        {
            window.Start(timeout);
            return window;
        }
        catch
        {
            _open.TryRemove(new KeyValuePair<string, Window>(volumeId, window));
            throw;
        }
    }

    /// <summary>Whether a freeze of the volume is open (for tests and the unstage path).</summary>
    public bool IsFrozen(string volumeId) => _open.ContainsKey(volumeId);

    private string RecordPath(string volumeId) => Path.Combine(_frozenDir, volumeId + ".json");

    /// <summary>One freeze of one file system, from FIFREEZE to FITHAW.</summary>
    public sealed class Window : IDisposable
    {
        private readonly NodeFreezer _owner;
        private readonly Lock _lock = new();
        private ITimer? _deadline;
        private SafeFileHandle? _handle;
        private long _started;
        private long _frozenAt;
        private WindowResult? _result;

        internal Window(NodeFreezer owner, string volumeId, string mountPath)
        {
            _owner = owner;
            VolumeId = volumeId;
            MountPath = mountPath;
        }

        public string VolumeId { get; }

        public string MountPath { get; }

        internal void Start(TimeSpan timeout)
        {
            var record = new FrozenMount(VolumeId, MountPath);
            Directory.CreateDirectory(_owner._frozenDir);
            string path = _owner.RecordPath(VolumeId);
            File.WriteAllText(path + ".tmp", JsonSerializer.Serialize(record, FrozenJsonContext.Default.FrozenMount));
            File.Move(path + ".tmp", path, overwrite: true);

            // The handle is opened before the mount is checked and held to the thaw: the mount cannot go away under
            // it (umount fails with EBUSY), so the freeze and the thaw reach the staged file system and never the
            // one beneath the staging path.
            int errno = NodeFreezeIoctl.Open(MountPath, out var handle);
            if (errno != 0 || !NodeCommands.IsMountPoint(MountPath))
            {
                handle.Dispose();
                File.Delete(path);
                throw CsiStatus.Fail(StatusCode.FailedPrecondition, $"FreezeWindow '{VolumeId}': its staging path {MountPath} is not mounted{(errno != 0 ? $" ({NodeFreezeIoctl.Describe(errno)})" : "")}");
            }

            _started = _owner._time.GetTimestamp();
            errno = NodeFreezeIoctl.Freeze(handle);
            if (errno != 0)
            {
                handle.Dispose();
                File.Delete(path);
                throw errno switch
                {
                    NodeFreezeIoctl.EBusy => CsiStatus.Fail(StatusCode.Aborted, $"FreezeWindow '{VolumeId}': {MountPath} is already frozen by someone else ({NodeFreezeIoctl.Describe(errno)})"),
                    NodeFreezeIoctl.EInval or NodeFreezeIoctl.EOpNotSupp => CsiStatus.Fail(StatusCode.FailedPrecondition, $"FreezeWindow '{VolumeId}': the file system at {MountPath} cannot be frozen ({NodeFreezeIoctl.Describe(errno)})"),
                    _ => CsiStatus.Fail(StatusCode.Internal, $"FreezeWindow '{VolumeId}': FIFREEZE on {MountPath} failed: {NodeFreezeIoctl.Describe(errno)}"),
                };
            }

            _frozenAt = _owner._time.GetTimestamp();
            _handle = handle;
            long took = (long)_owner._time.GetElapsedTime(_started, _frozenAt).TotalMicroseconds;
            NodeFreezeLog.Frozen(_owner._logger, VolumeId, MountPath, took);
            lock (_lock)
            {
                _deadline = _owner._time.CreateTimer(_ => OnDeadline(), null, timeout, Timeout.InfiniteTimeSpan);
            }
        }

        /// <summary>Thaws now unless already thawed; returns how the window went. Throws INTERNAL when the kernel refuses the thaw.</summary>
        public WindowResult Thaw() => ThawCore(expired: false);

        /// <summary>Thaws if still frozen; never throws (a failed thaw is logged and left recorded for the next start).</summary>
        public void Dispose()
        {
            try
            {
                ThawCore(expired: false);
            }
            catch (RpcException)
            {
            }
        }

        private void OnDeadline()
        {
            try
            {
                ThawCore(expired: true);
            }
            catch (RpcException)
            {
                // Logged by ThawCore; the record stays for the next start.
            }
        }

        private WindowResult ThawCore(bool expired)
        {
            lock (_lock)
            {
                if (_result is { } done)
                {
                    return done;
                }

                _deadline?.Dispose();
                int errno = NodeFreezeIoctl.Thaw(_handle!);
                long thawed = _owner._time.GetTimestamp();

                // EINVAL: not frozen any more (an operator ran fsfreeze -u); thawed either way.
                if (errno is not (0 or NodeFreezeIoctl.EInval))
                {
                    NodeFreezeLog.ThawFailed(_owner._logger, VolumeId, MountPath, NodeFreezeIoctl.Describe(errno));
                    throw CsiStatus.Fail(StatusCode.Internal, $"FreezeWindow '{VolumeId}': FITHAW on {MountPath} failed: {NodeFreezeIoctl.Describe(errno)}; the node retries at its next start");
                }

                _handle!.Dispose();
                File.Delete(_owner.RecordPath(VolumeId));
                _owner._open.TryRemove(new KeyValuePair<string, Window>(VolumeId, this));
                var result = new WindowResult(
                    (ulong)_owner._time.GetElapsedTime(_started, thawed).TotalMicroseconds,
                    (ulong)_owner._time.GetElapsedTime(_started, _frozenAt).TotalMicroseconds,
                    expired);
                _result = result;
                if (expired)
                {
                    NodeFreezeLog.DeadlineThawed(_owner._logger, VolumeId, MountPath, (long)result.FrozenMicroseconds);
                }
                else
                {
                    NodeFreezeLog.Thawed(_owner._logger, VolumeId, MountPath, (long)result.FrozenMicroseconds);
                }

                return result;
            }
        }
    }
}

/// <summary>How a freeze window went.</summary>
/// <param name="FrozenMicroseconds">From the call of FIFREEZE to the return of FITHAW: how long writers may have been held.</param>
/// <param name="FreezeMicroseconds">How long FIFREEZE itself took (it flushes dirty data first).</param>
/// <param name="DeadlineExpired">The node thawed by its deadline, before its caller asked.</param>
internal sealed record WindowResult(ulong FrozenMicroseconds, ulong FreezeMicroseconds, bool DeadlineExpired);

/// <summary>The durable record of one frozen file system.</summary>
internal sealed record FrozenMount(string VolumeId, string MountPath);

[JsonSerializable(typeof(FrozenMount))]
internal sealed partial class FrozenJsonContext : JsonSerializerContext;

internal static partial class NodeFreezeLog
{
    [LoggerMessage(EventId = 5060, Level = LogLevel.Information, Message = "froze {Volume} at {Path} (FIFREEZE took {Microseconds} us)")]
    public static partial void Frozen(ILogger logger, string volume, string path, long microseconds);

    [LoggerMessage(EventId = 5061, Level = LogLevel.Information, Message = "thawed {Volume} at {Path} after {Microseconds} us")]
    public static partial void Thawed(ILogger logger, string volume, string path, long microseconds);

    [LoggerMessage(EventId = 5062, Level = LogLevel.Warning, Message = "thawed {Volume} at {Path} by the deadline after {Microseconds} us: the caller did not ask in time")]
    public static partial void DeadlineThawed(ILogger logger, string volume, string path, long microseconds);

    [LoggerMessage(EventId = 5063, Level = LogLevel.Error, Message = "FITHAW of {Volume} at {Path} failed: {Message}")]
    public static partial void ThawFailed(ILogger logger, string volume, string path, string message);

    [LoggerMessage(EventId = 5064, Level = LogLevel.Warning, Message = "at start, {Volume} at {Path} was left frozen by a previous run: {Outcome}")]
    public static partial void LeftoverThawed(ILogger logger, string volume, string path, string outcome);

    [LoggerMessage(EventId = 5065, Level = LogLevel.Error, Message = "at start, {Volume} at {Path} was left frozen by a previous run and cannot be thawed: {Message}")]
    public static partial void LeftoverThawFailed(ILogger logger, string volume, string path, string message);

    [LoggerMessage(EventId = 5066, Level = LogLevel.Warning, Message = "ignored the unreadable freeze record {File}: {Message}")]
    public static partial void BadRecord(ILogger logger, string file, string message);
}
