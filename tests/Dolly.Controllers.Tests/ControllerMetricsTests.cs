using System.Diagnostics.Metrics;
using Dolly.Controllers.Metrics;
using Grpc.Core;
using Microsoft.Extensions.Time.Testing;

namespace Dolly.Controllers.Tests;

/// <summary>Upstream's operation bookkeeping (external-snapshotter pkg/metrics) on a fake clock.</summary>
public sealed class ControllerMetricsTests : IDisposable
{
    private readonly FakeTimeProvider _time = new();
    private readonly ControllerMetrics _metrics;
    private readonly MeterListener _listener = new();
    private readonly List<(string Instrument, double Value, Dictionary<string, string?> Tags)> _recorded = [];
    private int _inFlight;

    public ControllerMetricsTests()
    {
        _metrics = new ControllerMetrics(_time);
        _listener.InstrumentPublished = (instrument, listener) =>
        {
            if (_metrics.Owns(instrument))
            {
                listener.EnableMeasurementEvents(instrument);
            }
        };
        _listener.SetMeasurementEventCallback<double>((instrument, value, tags, _) =>
        {
            var t = new Dictionary<string, string?>(StringComparer.Ordinal);
            foreach (var tag in tags)
            {
                t[tag.Key] = tag.Value?.ToString();
            }

            _recorded.Add((instrument.Name, value, t));
        });
        _listener.SetMeasurementEventCallback<int>((_, value, _, _) => _inFlight = value);
        _listener.Start();
    }

    public void Dispose()
    {
        _listener.Dispose();
        _metrics.Dispose();
    }

    private int InFlight()
    {
        _listener.RecordObservableInstruments();
        return _inFlight;
    }

    [Fact]
    public void AnOperationStartedTwice_IsTimedFromItsFirstStart_AndRecordedOnce()
    {
        var ops = _metrics.Operations;
        ops.Start(SnapshotOperations.Create, "uid-1", "csi.dolly.io", SnapshotOperations.Dynamic);
        _time.Advance(TimeSpan.FromSeconds(2));
        ops.Start(SnapshotOperations.Create, "uid-1", "csi.dolly.io", SnapshotOperations.Dynamic);
        Assert.Equal(1, InFlight());
        _time.Advance(TimeSpan.FromSeconds(1));
        ops.Record(SnapshotOperations.Create, "uid-1", SnapshotOperations.Success);
        ops.Record(SnapshotOperations.Create, "uid-1", SnapshotOperations.Success);

        var only = Assert.Single(_recorded);
        Assert.Equal(ControllerMetrics.OperationSeconds, only.Instrument);
        Assert.Equal(3, only.Value);
        Assert.Equal(
            new Dictionary<string, string?> { ["driver_name"] = "csi.dolly.io", ["operation_name"] = "CreateSnapshot", ["snapshot_type"] = "dynamic", ["operation_status"] = "success" },
            only.Tags);
        Assert.Equal(0, InFlight());
    }

    [Fact]
    public void FinishingADelete_RecordsThatSnapshotsPendingCreatesAsCancelled_AndNoOtherSnapshots()
    {
        var ops = _metrics.Operations;
        ops.Start(SnapshotOperations.Create, "uid-1", "csi.dolly.io", SnapshotOperations.Dynamic);
        ops.Start(SnapshotOperations.CreateAndReady, "uid-1", "csi.dolly.io", SnapshotOperations.Dynamic);
        ops.Start(SnapshotOperations.CreateAndReady, "uid-2", "csi.dolly.io", SnapshotOperations.PreProvisioned);
        _time.Advance(TimeSpan.FromSeconds(5));
        ops.Start(SnapshotOperations.Delete, "uid-1", "csi.dolly.io", SnapshotOperations.Dynamic);
        _time.Advance(TimeSpan.FromSeconds(1));
        ops.Record(SnapshotOperations.Delete, "uid-1", SnapshotOperations.Success);

        Assert.Equal(
            [("DeleteSnapshot", "success", 1.0), ("CreateSnapshot", "cancel", 1.0), ("CreateSnapshotAndReady", "cancel", 1.0)],
            _recorded.Select(r => (r.Tags["operation_name"], r.Tags["operation_status"], r.Value)));
        Assert.Equal(1, InFlight());
        ops.Drop("uid-2");
        Assert.Equal(0, InFlight());
    }

    [Theory]
    [InlineData(StatusCode.OK, "OK")]
    [InlineData(StatusCode.Cancelled, "Canceled")]
    [InlineData(StatusCode.NotFound, "NotFound")]
    [InlineData(StatusCode.DeadlineExceeded, "DeadlineExceeded")]
    [InlineData(StatusCode.FailedPrecondition, "FailedPrecondition")]
    public void GrpcStatusCodes_AreSpelledAsGrpcGoDoes(StatusCode code, string expected) =>
        Assert.Equal(expected, CsiMetricsInterceptor.GoName(code));
}
