using System.Diagnostics.Metrics;
using Grpc.Core;
using Grpc.Core.Interceptors;

namespace Dolly.Csi;

/// <summary>
/// The driver's side of every CSI call: <c>dolly_csi_operations_seconds</c>, a histogram with csi-lib-utils'
/// labels and buckets (<c>driver_name</c>, <c>method_name</c> such as /csi.v1.Node/NodeStageVolume,
/// <c>grpc_status_code</c> as grpc-go spells it). It is what a node plugin (<c>dolly node</c>) reports, where no
/// sidecar times the calls kubelet makes. One instance per server: its meter carries the instance as scope.
/// </summary>
public sealed class CsiMetrics : IDisposable
{
    /// <summary>The name of the meter every instance creates.</summary>
    public const string MeterName = "Dolly.Csi";

    /// <summary>Histogram of CSI calls served.</summary>
    public const string OperationSeconds = "dolly_csi_operations_seconds";

    /// <summary>csi-lib-utils' buckets (seconds).</summary>
    internal static readonly double[] Buckets = [0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15, 25, 50, 120, 300, 600];

    private readonly Meter _meter;
    private readonly Histogram<double> _operations;

    /// <summary>Creates the meter and its instrument.</summary>
    public CsiMetrics(TimeProvider? time = null)
    {
        Time = time ?? TimeProvider.System;
        _meter = new Meter(new MeterOptions(MeterName) { Scope = this });
        _operations = _meter.CreateHistogram(
            OperationSeconds,
            unit: null,
            description: "CSI calls served by the driver, by method and gRPC status code",
            tags: null,
            advice: new InstrumentAdvice<double> { HistogramBucketBoundaries = Buckets });
    }

    /// <summary>The clock calls are timed with.</summary>
    public TimeProvider Time { get; }

    /// <summary>Whether <paramref name="instrument"/> belongs to this instance (for an exporter's filter).</summary>
    public bool Owns(Instrument instrument)
    {
        ArgumentNullException.ThrowIfNull(instrument);
        return ReferenceEquals(instrument.Meter.Scope, this);
    }

    /// <inheritdoc />
    public void Dispose() => _meter.Dispose();

    /// <summary>The code as grpc-go's String() prints it, which csi-lib-utils' label values are.</summary>
    internal static string GoName(StatusCode code) => code == StatusCode.Cancelled ? "Canceled" : code.ToString();

    internal void Record(string driverName, string method, StatusCode code, long started) =>
        _operations.Record(
            Time.GetElapsedTime(started).TotalSeconds,
            new KeyValuePair<string, object?>("driver_name", driverName),
            new KeyValuePair<string, object?>("method_name", method),
            new KeyValuePair<string, object?>("grpc_status_code", GoName(code)));
}

/// <summary>Times every CSI call the server answers into <see cref="CsiMetrics"/>; a failure other than an RpcException is gRPC's Unknown.</summary>
internal sealed class CsiMetricsInterceptor(CsiMetrics metrics, string driverName) : Interceptor
{
    public override async Task<TResponse> UnaryServerHandler<TRequest, TResponse>(TRequest request, ServerCallContext context, UnaryServerMethod<TRequest, TResponse> continuation)
    {
        long started = metrics.Time.GetTimestamp();
        var code = StatusCode.Unknown;
        try
        {
            var response = await continuation(request, context).ConfigureAwait(false);
            code = StatusCode.OK;
            return response;
        }
        catch (RpcException e)
        {
            code = e.StatusCode;
            throw;
        }
        finally
        {
            metrics.Record(driverName, context.Method, code, started);
        }
    }

    public override async Task ServerStreamingServerHandler<TRequest, TResponse>(TRequest request, IServerStreamWriter<TResponse> responseStream, ServerCallContext context, ServerStreamingServerMethod<TRequest, TResponse> continuation)
    {
        long started = metrics.Time.GetTimestamp();
        var code = StatusCode.Unknown;
        try
        {
            await continuation(request, responseStream, context).ConfigureAwait(false);
            code = StatusCode.OK;
        }
        catch (RpcException e)
        {
            code = e.StatusCode;
            throw;
        }
        finally
        {
            metrics.Record(driverName, context.Method, code, started);
        }
    }
}
