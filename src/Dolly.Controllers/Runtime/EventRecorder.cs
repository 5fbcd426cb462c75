using System.Collections.Concurrent;
using k8s;
using k8s.Autorest;
using k8s.Models;
using Microsoft.Extensions.Logging;

namespace Dolly.Controllers.Runtime;

/// <summary>
/// Records core/v1 Events about objects, as <c>kubectl describe</c> shows them. A repeat of the same
/// reason and message for the same object bumps the count of the existing event instead of adding one.
/// A failure to record is logged and never fails the reconcile.
/// </summary>
internal sealed class EventRecorder
{
    private readonly IKubernetes _client;
    private readonly string _component;
    private readonly string _instance;
    private readonly ILogger _logger;
    private readonly TimeProvider _time;
    private readonly ConcurrentDictionary<string, (string Name, string Namespace, int Count)> _recent = new(StringComparer.Ordinal);

    public EventRecorder(IKubernetes client, string component, string instance, ILogger logger, TimeProvider? time = null)
    {
        _client = client;
        _time = time ?? TimeProvider.System;
        _component = component;
        _instance = instance;
        _logger = logger;
    }

    public const string Normal = "Normal";
    public const string Warning = "Warning";

    /// <summary>The status cause kube-apiserver gives for a write into a namespace being deleted.</summary>
    private const string NamespaceTerminating = "NamespaceTerminating";

    public async Task RecordAsync(IKubernetesObject<V1ObjectMeta> obj, string type, string reason, string message, CancellationToken cancellationToken)
    {
        // Events of cluster-scoped objects live in "default", as upstream records them.
        string ns = string.IsNullOrEmpty(obj.Metadata.NamespaceProperty) ? "default" : obj.Metadata.NamespaceProperty;
        string dedupe = $"{obj.Metadata.Uid}\n{type}\n{reason}\n{message}";
        var now = _time.GetUtcNow().UtcDateTime;
        try
        {
            if (_recent.TryGetValue(dedupe, out var seen))
            {
                int count = seen.Count + 1;
                var patch = new V1Patch(
                    $$"""{"count":{{count}},"lastTimestamp":"{{now.ToString("yyyy-MM-ddTHH:mm:ssZ", System.Globalization.CultureInfo.InvariantCulture)}}"}""",
                    V1Patch.PatchType.MergePatch);
                try
                {
                    await _client.CoreV1.PatchNamespacedEventAsync(patch, seen.Name, seen.Namespace, cancellationToken: cancellationToken).ConfigureAwait(false);
                    _recent[dedupe] = (seen.Name, seen.Namespace, count);
                    return;
                }
                catch (HttpOperationException ex) when (ex.Response.StatusCode == System.Net.HttpStatusCode.NotFound)
                {
                    _recent.TryRemove(dedupe, out _);
                }
            }

            var created = await _client.CoreV1.CreateNamespacedEventAsync(
                new Corev1Event
                {
                    Metadata = new V1ObjectMeta { GenerateName = obj.Metadata.Name + ".", NamespaceProperty = ns },
                    InvolvedObject = new V1ObjectReference
                    {
                        ApiVersion = obj.ApiVersion,
                        Kind = obj.Kind,
                        Name = obj.Metadata.Name,
                        NamespaceProperty = obj.Metadata.NamespaceProperty,
                        Uid = obj.Metadata.Uid,
                        ResourceVersion = obj.Metadata.ResourceVersion,
                    },
                    Type = type,
                    Reason = reason,
                    Message = message,
                    Source = new V1EventSource { Component = _component },
                    FirstTimestamp = now,
                    LastTimestamp = now,
                    Count = 1,
                    ReportingComponent = _component,
                    ReportingInstance = _instance,
                },
                ns,
                cancellationToken: cancellationToken).ConfigureAwait(false);
            _recent[dedupe] = (created.Metadata.Name, ns, 1);
            if (_recent.Count > 10_000)
            {
                _recent.Clear();
            }
        }
        catch (HttpOperationException ex) when (ex.Response.StatusCode == System.Net.HttpStatusCode.NotFound
            || (ex.Response.StatusCode == System.Net.HttpStatusCode.Forbidden && ex.Response.Content?.Contains(NamespaceTerminating, StringComparison.Ordinal) == true))
        {
            // The namespace is gone or being torn down, and the object with it: nobody will read this event.
            ControllerLog.EventDropped(_logger, reason, obj.Metadata.Name, ns);
        }
        catch (Exception ex) when (ex is HttpOperationException or HttpRequestException or IOException)
        {
            ControllerLog.EventFailed(_logger, reason, obj.Metadata.Name, ex.Message);
        }
    }
}
