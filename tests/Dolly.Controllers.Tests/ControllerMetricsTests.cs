using System.Diagnostics.Metrics;
using System.Net;
using Dolly.Controllers.Metrics;
using Dolly.Controllers.Runtime;
using Grpc.Core;
using k8s.Autorest;
using Microsoft.Extensions.Logging.Abstractions;
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
        _listener.SetMeasurementEventCallback<long>((instrument, value, tags, _) =>
        {
            var t = new Dictionary<string, string?>(StringComparer.Ordinal);
            foreach (var tag in tags)
            {
                t[tag.Key] = tag.Value?.ToString();
            }

            _recorded.Add((instrument.Name, value, t));
        });
        _listener.SetMeasurementEventCallback<int>((instrument, value, tags, _) =>
        {
            if (instrument.Name == ControllerMetrics.OperationsInFlight)
            {
                _inFlight = value;
            }
            else
            {
                _recorded.Add((instrument.Name, value, tags.ToArray().ToDictionary(t => t.Key, t => t.Value?.ToString(), StringComparer.Ordinal)));
            }
        });
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

    /// <summary>What one reconcile does, by name.</summary>
    public enum Behaviour
    {
        Done,
        RequeueAfter,
        Conflict,
        NotFound,
        RetryLater,
        Crash,
    }

    /// <summary>Reconciles one key as told, taking two seconds of the fake clock.</summary>
    private sealed class Scripted(Behaviour behaviour, FakeTimeProvider time)
        : Reconciler("scripted", TimeSpan.FromSeconds(1), TimeSpan.FromSeconds(10), NullLogger.Instance, time)
    {
        protected override Task<Outcome> ReconcileAsync(string key, CancellationToken cancellationToken)
        {
            time.Advance(TimeSpan.FromSeconds(2));
            return behaviour switch
            {
                Behaviour.Done => Task.FromResult(Outcome.Done),
                Behaviour.RequeueAfter => Task.FromResult(Outcome.After(TimeSpan.FromMinutes(1))),
                Behaviour.Conflict => throw Status(HttpStatusCode.Conflict),
                Behaviour.NotFound => throw Status(HttpStatusCode.NotFound),
                Behaviour.RetryLater => throw new RetryLaterException("reported in an event"),
                _ => throw new InvalidOperationException("a bug"),
            };
        }

        private static HttpOperationException Status(HttpStatusCode status) =>
            new($"status {status}") { Response = new HttpResponseMessageWrapper(new HttpResponseMessage(status), "{\"kind\":\"Status\"}") };
    }

    [Theory]
    [InlineData(Behaviour.Done, "success", false)]
    [InlineData(Behaviour.RequeueAfter, "requeue_after", false)]
    [InlineData(Behaviour.Conflict, "requeue", false)]
    [InlineData(Behaviour.NotFound, "error", true)]
    [InlineData(Behaviour.RetryLater, "error", true)]
    [InlineData(Behaviour.Crash, "error", true)]
    public async Task AReconcile_IsCountedUnderItsResult_Timed_AndAFailureIsAnErrorAndARetry(Behaviour behaviour, string result, bool failed)
    {
        var reconciler = new Scripted(behaviour, _time);
        reconciler.Instrument(_metrics);
        reconciler.Queue.Add("default/x");
        Assert.True(await reconciler.ProcessNextAsync(TestContext.Current.CancellationToken));

        var controller = new Dictionary<string, string?> { ["controller"] = "scripted" };
        var total = Assert.Single(_recorded, r => r.Instrument == ControllerMetrics.ReconcileTotal);
        Assert.Equal(1, total.Value);
        Assert.Equal(new Dictionary<string, string?>(controller) { ["result"] = result }, total.Tags);
        var time = Assert.Single(_recorded, r => r.Instrument == ControllerMetrics.ReconcileSeconds);
        Assert.Equal(2, time.Value);
        Assert.Equal(controller, time.Tags);
        Assert.Equal(failed ? 1 : 0, _recorded.Count(r => r.Instrument == ControllerMetrics.ReconcileErrors && r.Tags.SequenceEqual(controller)));
        Assert.Equal(failed ? 1 : 0, _recorded.Count(r => r.Instrument == ControllerMetrics.QueueRetries && r.Tags["name"] == "scripted"));

        // The queue's depth is read at collection: the key waits again only after a failure's backoff or a requeue's delay.
        _recorded.Clear();
        reconciler.Queue.Add("default/y");
        _listener.RecordObservableInstruments();
        var depth = Assert.Single(_recorded, r => r.Instrument == ControllerMetrics.QueueDepth);
        Assert.Equal(1, depth.Value);
        Assert.Equal(new Dictionary<string, string?> { ["name"] = "scripted" }, depth.Tags);
        reconciler.Queue.Dispose();
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
