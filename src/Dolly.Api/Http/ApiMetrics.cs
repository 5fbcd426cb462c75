using System.Diagnostics;
using System.Diagnostics.Metrics;
using Microsoft.AspNetCore.Http;

namespace Dolly.Api.Http;

/// <summary>
/// kube-apiserver's request series under its names (<c>apiserver_request_total</c>,
/// <c>apiserver_request_duration_seconds</c>, <c>apiserver_longrunning_requests</c>) and with its labels, less
/// <c>dry_run</c>, so dashboards made for a cluster's API server read the embedded one's. One instance per server:
/// its meter carries the instance as scope, so an exporter can take only its own server's instruments.
/// </summary>
public sealed class ApiMetrics : IDisposable
{
    /// <summary>The name of the meter every instance creates.</summary>
    public const string MeterName = "Dolly.Api";

    /// <summary>Counter of answered requests by verb, resource and HTTP code.</summary>
    public const string RequestTotal = "apiserver_request_total";

    /// <summary>Histogram of request latency by verb and resource; watches are not in it (they last until closed).</summary>
    public const string RequestSeconds = "apiserver_request_duration_seconds";

    /// <summary>Gauge of open watches by resource.</summary>
    public const string LongRunning = "apiserver_longrunning_requests";

    /// <summary>kube-apiserver's latency buckets (seconds).</summary>
    internal static readonly double[] Buckets = [0.005, 0.025, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1, 1.25, 1.5, 2, 3, 4, 5, 6, 8, 10, 15, 20, 30, 45, 60];

    private const string Component = "apiserver";
    private static readonly object InfoKey = new();
    private readonly Meter _meter;
    private readonly Counter<long> _requests;
    private readonly Histogram<double> _latency;
    private readonly UpDownCounter<long> _longRunning;

    /// <summary>Creates the meter and its instruments.</summary>
    public ApiMetrics(TimeProvider? time = null)
    {
        Time = time ?? TimeProvider.System;
        _meter = new Meter(new MeterOptions(MeterName) { Scope = this });
        _requests = _meter.CreateCounter<long>(RequestTotal, unit: null, description: "Counter of apiserver requests broken out for each verb, group, version, resource, scope, component, and HTTP response code");
        _latency = _meter.CreateHistogram(
            RequestSeconds,
            unit: null,
            description: "Response latency distribution in seconds for each verb, group, version, resource, subresource, scope and component",
            tags: null,
            advice: new InstrumentAdvice<double> { HistogramBucketBoundaries = Buckets });
        _longRunning = _meter.CreateUpDownCounter<long>(LongRunning, unit: null, description: "Gauge of all active long-running apiserver requests broken out by verb, group, version, resource, scope and component");
    }

    /// <summary>The clock requests are timed with.</summary>
    public TimeProvider Time { get; }

    /// <summary>Whether <paramref name="instrument"/> belongs to this instance (for an exporter's filter).</summary>
    public bool Owns(Instrument instrument)
    {
        ArgumentNullException.ThrowIfNull(instrument);
        return ReferenceEquals(instrument.Meter.Scope, this);
    }

    /// <summary>Notes what a routed request acts on, for the labels recorded when it is answered.</summary>
    internal static void Resolved(HttpContext context, ResourceRequest request, string verb) =>
        context.Items[InfoKey] = new RequestInfo(CleanVerb(verb, context.Request), request.Type.Group, request.Type.Version, request.Type.Plural, request.Subresource ?? "", Scope(request));

    /// <summary>Counts an open watch until the returned handle is disposed.</summary>
    internal WatchHandle Watching(HttpContext context)
    {
        var tags = Tags(Info(context), code: null);
        _longRunning.Add(1, tags);
        return new WatchHandle(_longRunning, tags);
    }

    /// <summary>Records an answered request (any outcome: the response's status code is its label).</summary>
    internal void Answered(HttpContext context, long started)
    {
        var info = Info(context);
        _requests.Add(1, Tags(info, context.Response.StatusCode.ToString(System.Globalization.CultureInfo.InvariantCulture)));
        if (info.Verb != "WATCH")
        {
            _latency.Record(Time.GetElapsedTime(started).TotalSeconds, Tags(info, code: null));
        }
    }

    /// <inheritdoc />
    public void Dispose() => _meter.Dispose();

    /// <summary>Requests outside the resource paths (discovery, /version, /openapi, refused ones) keep their HTTP method and empty resource labels, as upstream's.</summary>
    private static RequestInfo Info(HttpContext context) =>
        context.Items.TryGetValue(InfoKey, out var info) && info is RequestInfo known ? known : new RequestInfo(context.Request.Method, "", "", "", "", "");

    /// <summary>Upstream's verb label: LIST and WATCH for collection reads, APPLY for server-side apply, else the HTTP method.</summary>
    private static string CleanVerb(string verb, HttpRequest request) => verb switch
    {
        "list" => "LIST",
        "watch" => "WATCH",
        "patch" when request.ContentType is { } type && type.StartsWith("application/apply-patch", StringComparison.OrdinalIgnoreCase) => "APPLY",
        _ => request.Method,
    };

    private static string Scope(ResourceRequest request) =>
        request.NameInPath ? "resource" : request.NamespaceInPath ? "namespace" : "cluster";

    private static TagList Tags(RequestInfo info, string? code)
    {
        var tags = new TagList
        {
            { "verb", info.Verb },
            { "group", info.Group },
            { "version", info.Version },
            { "resource", info.Resource },
            { "subresource", info.Subresource },
            { "scope", info.Scope },
            { "component", Component },
        };
        if (code is not null)
        {
            tags.Add("code", code);
        }

        return tags;
    }

    private sealed record RequestInfo(string Verb, string Group, string Version, string Resource, string Subresource, string Scope);

    /// <summary>Ends the count of one open watch.</summary>
    internal readonly struct WatchHandle(UpDownCounter<long> counter, TagList tags) : IDisposable
    {
        public void Dispose() => counter.Add(-1, tags);
    }
}
