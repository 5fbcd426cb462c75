using System.Diagnostics.Metrics;

namespace Dolly.Controllers.Metrics;

/// <summary>Upstream's operation names and label values (external-snapshotter pkg/metrics).</summary>
internal static class SnapshotOperations
{
    /// <summary>From noticing a new dynamic snapshot to its status having a creationTime.</summary>
    public const string Create = "CreateSnapshot";

    /// <summary>From noticing a new snapshot (dynamic or pre-provisioned) to its status being readyToUse.</summary>
    public const string CreateAndReady = "CreateSnapshotAndReady";

    /// <summary>From a deleted snapshot being free to go to its finalizers being lifted.</summary>
    public const string Delete = "DeleteSnapshot";

    public const string Dynamic = "dynamic";
    public const string PreProvisioned = "pre-provisioned";

    public const string Success = "success";

    /// <summary>A create that had not finished when its snapshot was deleted.</summary>
    public const string Cancel = "cancel";
}

/// <summary>
/// Start times of snapshot operations keyed by operation and snapshot UID, as upstream's metrics manager keeps
/// them: starting twice keeps the first time, recording ends the operation, and finishing a delete records any
/// create of the same snapshot still pending as cancelled.
/// </summary>
internal sealed class OperationTracker(Histogram<double> histogram, TimeProvider time)
{
    private readonly Lock _lock = new();
    private readonly Dictionary<(string Operation, string Uid), (string Driver, string Type, long Started)> _pending = [];

    /// <summary>Operations started and not yet recorded.</summary>
    public int InFlight
    {
        get
        {
            lock (_lock)
            {
                return _pending.Count;
            }
        }
    }

    public void Start(string operation, string uid, string driver, string snapshotType)
    {
        lock (_lock)
        {
            _pending.TryAdd((operation, uid), (driver, snapshotType, time.GetTimestamp()));
        }
    }

    public void Record(string operation, string uid, string status)
    {
        lock (_lock)
        {
            if (!_pending.Remove((operation, uid), out var started))
            {
                return;
            }

            double seconds = time.GetElapsedTime(started.Started).TotalSeconds;
            Observe(operation, started, status, seconds);
            if (operation == SnapshotOperations.Delete)
            {
                foreach (string create in (ReadOnlySpan<string>)[SnapshotOperations.Create, SnapshotOperations.CreateAndReady])
                {
                    if (_pending.Remove((create, uid), out var pending))
                    {
                        // Upstream records the cancelled create with the delete's duration.
                        Observe(create, pending, SnapshotOperations.Cancel, seconds);
                    }
                }
            }
        }
    }

    /// <summary>Forgets every operation of a snapshot that is gone without a recorded end.</summary>
    public void Drop(string uid)
    {
        lock (_lock)
        {
            foreach (var key in _pending.Keys.Where(k => k.Uid == uid).ToList())
            {
                _pending.Remove(key);
            }
        }
    }

    private void Observe(string operation, (string Driver, string Type, long Started) started, string status, double seconds) =>
        histogram.Record(
            seconds,
            new KeyValuePair<string, object?>(ControllerMetrics.Labels.DriverName, started.Driver),
            new KeyValuePair<string, object?>(ControllerMetrics.Labels.OperationName, operation),
            new KeyValuePair<string, object?>(ControllerMetrics.Labels.SnapshotType, started.Type),
            new KeyValuePair<string, object?>(ControllerMetrics.Labels.OperationStatus, status));
}
