using Microsoft.Extensions.Logging;

namespace Dolly.Controllers.Runtime;

internal static partial class ControllerLog
{
    [LoggerMessage(1, LogLevel.Warning, "listing {Kind} failed: {Message}; retrying")]
    public static partial void ListFailed(ILogger logger, string kind, string message);

    [LoggerMessage(2, LogLevel.Information, "watching {Kind} failed: {Message}; listing again")]
    public static partial void WatchFailed(ILogger logger, string kind, string message);

    [LoggerMessage(3, LogLevel.Error, "a {Kind} change handler failed: {Message}")]
    public static partial void HandlerFailed(ILogger logger, string kind, string message);

    [LoggerMessage(4, LogLevel.Warning, "recording event {Reason} for {Name} failed: {Message}")]
    public static partial void EventFailed(ILogger logger, string reason, string name, string message);

    [LoggerMessage(5, LogLevel.Information, "{Controller} {Key}: {Message}; retrying in {Delay}")]
    public static partial void ReconcileFailed(ILogger logger, string controller, string key, string message, TimeSpan delay);

    [LoggerMessage(6, LogLevel.Information, "{Controller} started with {Workers} workers")]
    public static partial void ControllerStarted(ILogger logger, string controller, int workers);

    [LoggerMessage(7, LogLevel.Information, "leader election: {Identity} now leads {Lease}")]
    public static partial void Leading(ILogger logger, string identity, string lease);

    [LoggerMessage(8, LogLevel.Warning, "leader election: {Identity} lost {Lease}; stopping the controllers")]
    public static partial void LostLeadership(ILogger logger, string identity, string lease);

    [LoggerMessage(9, LogLevel.Error, "{Controller} {Key}: unexpected failure: {Message}; retrying in {Delay}")]
    public static partial void ReconcileCrashed(ILogger logger, string controller, string key, string message, TimeSpan delay);

    [LoggerMessage(10, LogLevel.Information, "{Controller} {Key}: {Message}")]
    public static partial void Action(ILogger logger, string controller, string key, string message);

    [LoggerMessage(31, LogLevel.Debug, "event {Reason} for {Name} dropped: namespace {Namespace} is gone or being deleted")]
    public static partial void EventDropped(ILogger logger, string reason, string name, string @namespace);
}
