using System.Diagnostics.Metrics;

namespace Dolly.Controllers.Metrics;

/// <summary>
/// The series upstream's snapshot-controller and CSI sidecars export, under their exact names and labels
/// (external-snapshotter pkg/metrics, csi-lib-utils metrics), so existing dashboards read Dolly's too.
/// One instance per controller set: its meter carries the instance as scope, so an exporter can take only
/// its own stack's instruments when several stacks share a process (tests).
/// </summary>
public sealed class ControllerMetrics : IDisposable
{
    /// <summary>The name of the meter every instance creates.</summary>
    public const string MeterName = "Dolly.Controllers";

    /// <summary>Upstream's histogram of whole snapshot operations.</summary>
    public const string OperationSeconds = "snapshot_controller_operation_total_seconds";

    /// <summary>Upstream's gauge of operations started and not yet finished.</summary>
    public const string OperationsInFlight = "snapshot_controller_operations_in_flight";

    /// <summary>csi-lib-utils' histogram of every CSI call a sidecar makes.</summary>
    public const string CsiOperationSeconds = "csi_sidecar_operations_seconds";

    /// <summary>external-snapshotter's buckets (seconds).</summary>
    internal static readonly double[] OperationBuckets = [0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15, 30, 60, 120, 300, 600];

    /// <summary>csi-lib-utils' buckets (seconds): they differ from the snapshot controller's at 25 and 50.</summary>
    internal static readonly double[] CsiBuckets = [0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15, 25, 50, 120, 300, 600];

    private readonly Meter _meter;
    private readonly Histogram<double> _operations;
    private readonly Histogram<double> _csi;

    /// <summary>Creates the meter and its instruments.</summary>
    public ControllerMetrics(TimeProvider? time = null)
    {
        Time = time ?? TimeProvider.System;
        _meter = new Meter(new MeterOptions(MeterName) { Scope = this });
        _operations = _meter.CreateHistogram(
            OperationSeconds,
            unit: null,
            description: "Total number of seconds spent by the controller on an operation",
            tags: null,
            advice: new InstrumentAdvice<double> { HistogramBucketBoundaries = OperationBuckets });
        _csi = _meter.CreateHistogram(
            CsiOperationSeconds,
            unit: null,
            description: "Container Storage Interface operation duration with gRPC error code status total",
            tags: null,
            advice: new InstrumentAdvice<double> { HistogramBucketBoundaries = CsiBuckets });
        Operations = new OperationTracker(_operations, Time);
        _meter.CreateObservableGauge(OperationsInFlight, () => Operations.InFlight, unit: null, description: "Total number of operations in flight");
    }

    /// <summary>The clock operations are timed with.</summary>
    public TimeProvider Time { get; }

    /// <summary>Snapshot operations started and not yet recorded.</summary>
    internal OperationTracker Operations { get; }

    /// <summary>Whether <paramref name="instrument"/> belongs to this instance (for an exporter's filter).</summary>
    public bool Owns(Instrument instrument)
    {
        ArgumentNullException.ThrowIfNull(instrument);
        return ReferenceEquals(instrument.Meter.Scope, this);
    }

    /// <summary>Records one finished CSI call.</summary>
    internal void RecordCsiCall(string driverName, string method, string grpcStatusCode, TimeSpan elapsed) =>
        _csi.Record(
            elapsed.TotalSeconds,
            new KeyValuePair<string, object?>(Labels.DriverName, driverName),
            new KeyValuePair<string, object?>(Labels.MethodName, method),
            new KeyValuePair<string, object?>(Labels.GrpcStatusCode, grpcStatusCode));

    /// <inheritdoc />
    public void Dispose() => _meter.Dispose();

    /// <summary>Upstream's label names.</summary>
    internal static class Labels
    {
        public const string DriverName = "driver_name";
        public const string OperationName = "operation_name";
        public const string SnapshotType = "snapshot_type";
        public const string OperationStatus = "operation_status";
        public const string MethodName = "method_name";
        public const string GrpcStatusCode = "grpc_status_code";
    }
}
