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

    /// <summary>controller-runtime's counter of reconciles by controller and result.</summary>
    public const string ReconcileTotal = "controller_runtime_reconcile_total";

    /// <summary>controller-runtime's counter of reconciles that failed.</summary>
    public const string ReconcileErrors = "controller_runtime_reconcile_errors_total";

    /// <summary>controller-runtime's histogram of reconcile durations.</summary>
    public const string ReconcileSeconds = "controller_runtime_reconcile_time_seconds";

    /// <summary>client-go's gauge of keys waiting in a controller's work queue.</summary>
    public const string QueueDepth = "workqueue_depth";

    /// <summary>client-go's counter of keys queued again after a failure.</summary>
    public const string QueueRetries = "workqueue_retries_total";

    /// <summary>external-snapshotter's buckets (seconds).</summary>
    internal static readonly double[] OperationBuckets = [0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15, 30, 60, 120, 300, 600];

    /// <summary>csi-lib-utils' buckets (seconds): they differ from the snapshot controller's at 25 and 50.</summary>
    internal static readonly double[] CsiBuckets = [0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15, 25, 50, 120, 300, 600];

    /// <summary>controller-runtime's reconcile-time buckets (seconds).</summary>
    internal static readonly double[] ReconcileBuckets = [0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.6, 0.7, 0.8, 0.9, 1, 1.25, 1.5, 1.75, 2, 2.5, 3, 3.5, 4, 4.5, 5, 6, 7, 8, 9, 10, 15, 20, 25, 30, 40, 50, 60];

    private readonly Meter _meter;
    private readonly Histogram<double> _operations;
    private readonly Histogram<double> _csi;
    private readonly Counter<long> _reconciles;
    private readonly Counter<long> _reconcileErrors;
    private readonly Histogram<double> _reconcileTime;
    private readonly Counter<long> _retries;
    private readonly Lock _queuesLock = new();
    private readonly List<(string Name, Func<int> Depth)> _queues = [];

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
        _reconciles = _meter.CreateCounter<long>(ReconcileTotal, unit: null, description: "Total number of reconciliations per controller");
        _reconcileErrors = _meter.CreateCounter<long>(ReconcileErrors, unit: null, description: "Total number of reconciliation errors per controller");
        _reconcileTime = _meter.CreateHistogram(
            ReconcileSeconds,
            unit: null,
            description: "Length of time per reconciliation per controller",
            tags: null,
            advice: new InstrumentAdvice<double> { HistogramBucketBoundaries = ReconcileBuckets });
        _retries = _meter.CreateCounter<long>(QueueRetries, unit: null, description: "Total number of retries handled by workqueue");
        _meter.CreateObservableGauge(QueueDepth, ObserveQueues, unit: null, description: "Current depth of workqueue");
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

    /// <summary>Reports the depth of a controller's queue at each scrape from now on.</summary>
    internal void TrackQueue(string controller, Func<int> depth)
    {
        lock (_queuesLock)
        {
            _queues.Add((controller, depth));
        }
    }

    /// <summary>Records one finished reconcile; <paramref name="result"/> is one of <see cref="ReconcileResults"/>.</summary>
    internal void RecordReconcile(string controller, string result, TimeSpan elapsed)
    {
        var name = new KeyValuePair<string, object?>(Labels.Controller, controller);
        _reconciles.Add(1, name, new KeyValuePair<string, object?>(Labels.Result, result));
        _reconcileTime.Record(elapsed.TotalSeconds, name);
        if (result == ReconcileResults.Error)
        {
            _reconcileErrors.Add(1, name);
        }
    }

    /// <summary>Records a key queued again with backoff after a failure.</summary>
    internal void RecordRetry(string controller) => _retries.Add(1, new KeyValuePair<string, object?>(Labels.Name, controller));

    private List<Measurement<int>> ObserveQueues()
    {
        lock (_queuesLock)
        {
            return [.. _queues.Select(q => new Measurement<int>(q.Depth(), new KeyValuePair<string, object?>(Labels.Name, q.Name)))];
        }
    }

    /// <inheritdoc />
    public void Dispose() => _meter.Dispose();

    /// <summary>controller-runtime's values of the <c>result</c> label.</summary>
    internal static class ReconcileResults
    {
        public const string Success = "success";
        public const string Error = "error";
        public const string Requeue = "requeue";
        public const string RequeueAfter = "requeue_after";
    }

    /// <summary>Upstream's label names.</summary>
    internal static class Labels
    {
        public const string DriverName = "driver_name";
        public const string OperationName = "operation_name";
        public const string SnapshotType = "snapshot_type";
        public const string OperationStatus = "operation_status";
        public const string MethodName = "method_name";
        public const string GrpcStatusCode = "grpc_status_code";
        public const string Controller = "controller";
        public const string Result = "result";
        public const string Name = "name";
    }
}
