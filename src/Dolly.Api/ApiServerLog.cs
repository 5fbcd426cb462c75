using Microsoft.Extensions.Logging;

namespace Dolly.Api;

/// <summary>Source-generated log messages of the API server; event ids are stable.</summary>
internal static partial class ApiServerLog
{
    [LoggerMessage(EventId = 4001, Level = LogLevel.Information, Message = "Kubernetes API server listening on {Url}; kubeconfig {Kubeconfig}")]
    public static partial void Listening(ILogger logger, Uri url, string kubeconfig);

    [LoggerMessage(EventId = 4002, Level = LogLevel.Error, Message = "Request {Method} {Path} failed")]
    public static partial void RequestFailed(ILogger logger, Exception exception, string method, string path);

    [LoggerMessage(EventId = 4003, Level = LogLevel.Debug, Message = "Controller will retry: {Reason}")]
    public static partial void ControllerRetry(ILogger logger, string reason);

    [LoggerMessage(EventId = 4004, Level = LogLevel.Debug, Message = "Garbage collecting {Resource} {Namespace}/{Name}: all owners are gone")]
    public static partial void GarbageCollected(ILogger logger, string resource, string @namespace, string name);

    [LoggerMessage(EventId = 4005, Level = LogLevel.Error, Message = "Controllers stopped unexpectedly")]
    public static partial void ControllersFailed(ILogger logger, Exception exception);

    [LoggerMessage(EventId = 4006, Level = LogLevel.Information, Message = "Kubernetes API server stopped")]
    public static partial void Stopped(ILogger logger);
}
