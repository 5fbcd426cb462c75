using Microsoft.Extensions.Logging;

namespace Dolly.Nbd;

internal static partial class NbdLog
{
    [LoggerMessage(EventId = 1, Level = LogLevel.Information, Message = "NBD server listening on {Endpoint}")]
    public static partial void Listening(ILogger logger, string endpoint);

    [LoggerMessage(EventId = 2, Level = LogLevel.Information, Message = "NBD connection {Connection} from {Remote}: serving export '{Export}' ({Mode})")]
    public static partial void Serving(ILogger logger, long connection, string remote, string export, string mode);

    [LoggerMessage(EventId = 3, Level = LogLevel.Warning, Message = "NBD connection {Connection}: protocol error, disconnecting: {Reason}")]
    public static partial void ProtocolError(ILogger logger, long connection, string reason);

    [LoggerMessage(EventId = 4, Level = LogLevel.Debug, Message = "NBD connection {Connection} closed: {Reason}")]
    public static partial void Closed(ILogger logger, long connection, string reason);

    [LoggerMessage(EventId = 5, Level = LogLevel.Warning, Message = "NBD connection refused: {Count} connections already open (limit)")]
    public static partial void TooManyConnections(ILogger logger, int count);

    [LoggerMessage(EventId = 6, Level = LogLevel.Warning, Message = "NBD connection {Connection}: {Command} failed: {Message}")]
    public static partial void CommandFailed(ILogger logger, long connection, string command, string message);

    [LoggerMessage(EventId = 7, Level = LogLevel.Error, Message = "NBD connection {Connection} failed unexpectedly")]
    public static partial void Unexpected(ILogger logger, long connection, Exception exception);

    [LoggerMessage(EventId = 8, Level = LogLevel.Information, Message = "NBD connection {Connection} closed after {Seconds:0} s idle: its slot was needed by a new client ({Limit} connections open)")]
    public static partial void IdleEvicted(ILogger logger, long connection, double seconds, int limit);

    [LoggerMessage(EventId = 9, Level = LogLevel.Warning, Message = "NBD connection {Connection}: the client has not read its replies for {Seconds:0} s, disconnecting")]
    public static partial void Stalled(ILogger logger, long connection, double seconds);
}
