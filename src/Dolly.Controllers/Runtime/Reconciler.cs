using System.Net;
using Dolly.Controllers.Metrics;
using Grpc.Core;
using k8s.Autorest;
using Microsoft.Extensions.Logging;

namespace Dolly.Controllers.Runtime;

/// <summary>What a reconcile asks for next.</summary>
internal readonly record struct Outcome(TimeSpan? RequeueAfter)
{
    public static Outcome Done => default;

    public static Outcome After(TimeSpan delay) => new(delay);
}

/// <summary>
/// A reconcile that cannot finish yet for a reason already reported (in status and an event); the key is
/// retried with backoff.
/// </summary>
internal sealed class RetryLaterException : Exception
{
    public RetryLaterException(string message)
        : base(message)
    {
    }

    public RetryLaterException()
    {
    }

    public RetryLaterException(string message, Exception innerException)
        : base(message, innerException)
    {
    }
}

/// <summary>
/// One controller: a work queue of keys and workers that reconcile them. Failures retry with per-key
/// exponential backoff; a write conflict (HTTP 409) retries at once with the fresh object from the cache.
/// </summary>
internal abstract class Reconciler<TKey> : IController
    where TKey : notnull
{
    private static readonly TimeSpan ConflictRetry = TimeSpan.FromMilliseconds(50);
    private readonly ILogger _logger;
    private ControllerMetrics? _metrics;

    protected Reconciler(string name, WorkQueue<TKey> queue, ILogger logger)
    {
        Name = name;
        Queue = queue;
        _logger = logger;
    }

    public string Name { get; }

    public WorkQueue<TKey> Queue { get; }

    protected ILogger Logger => _logger;

    protected abstract Task<Outcome> ReconcileAsync(TKey key, CancellationToken cancellationToken);

    /// <inheritdoc />
    public void Instrument(ControllerMetrics metrics)
    {
        _metrics = metrics;
        metrics.TrackQueue(Name, () => Queue.Count);
    }

    public async Task RunAsync(int workers, CancellationToken cancellationToken)
    {
        ControllerLog.ControllerStarted(_logger, Name, workers);
        var tasks = new Task[workers];
        for (int i = 0; i < workers; i++)
        {
            tasks[i] = Task.Run(() => WorkAsync(cancellationToken), CancellationToken.None);
        }

        try
        {
            await Task.WhenAll(tasks).ConfigureAwait(false);
        }
        finally
        {
            Queue.Dispose();
        }
    }

    /// <summary>Takes one key and reconciles it, as a worker does; false once the queue is closed or the token cancelled.</summary>
    internal async Task<bool> ProcessNextAsync(CancellationToken cancellationToken)
    {
        TKey key;
        try
        {
            key = await Queue.TakeAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            return false;
        }
        catch (System.Threading.Channels.ChannelClosedException)
        {
            return false;
        }

        string shown = key.ToString() ?? "";
        long started = _metrics?.Time.GetTimestamp() ?? 0;
        string? result = ControllerMetrics.ReconcileResults.Error;
        try
        {
            var outcome = await ReconcileAsync(key, cancellationToken).ConfigureAwait(false);
            Queue.Forget(key);
            result = ControllerMetrics.ReconcileResults.Success;
            if (outcome.RequeueAfter is { } after)
            {
                result = ControllerMetrics.ReconcileResults.RequeueAfter;
                Queue.AddAfter(key, after);
            }
        }
        catch (Exception) when (cancellationToken.IsCancellationRequested)
        {
            // Stopping: whatever the interrupted call threw (a cancelled gRPC call is an RpcException), the
            // key is simply left for the next run, which starts from the API objects.
            result = null;
            return false;
        }
        catch (HttpOperationException ex) when (ex.Response.StatusCode == HttpStatusCode.Conflict)
        {
            // Someone wrote the object first; the watch brings the new version, then try again. Optimistic
            // concurrency at work, not a failure: counted as a requeue.
            result = ControllerMetrics.ReconcileResults.Requeue;
            Queue.AddAfter(key, ConflictRetry);
        }
        catch (HttpOperationException ex) when (ex.Response.StatusCode == HttpStatusCode.NotFound)
        {
            // The object, or one it points to, is gone (a namespace being torn down deletes everything in it):
            // nothing went wrong. The watch brings the deletion and the retry finds nothing left to do.
            var delay = Backoff(key);
            ControllerLog.ReconcileFailed(_logger, Name, shown, "an object it needs is gone (404)", delay);
        }
        catch (RetryLaterException ex)
        {
            var delay = Backoff(key);
            ControllerLog.ReconcileFailed(_logger, Name, shown, ex.Message, delay);
        }
        catch (Exception ex) when (!cancellationToken.IsCancellationRequested)
        {
            // Anything else, a bug included, retries with backoff rather than killing this worker.
            var delay = Backoff(key);
            ControllerLog.ReconcileCrashed(_logger, Name, shown, Describe(ex), delay);
        }
        finally
        {
            Queue.Done(key);
            if (result is not null && _metrics is { } metrics)
            {
                metrics.RecordReconcile(Name, result, metrics.Time.GetElapsedTime(started));
            }
        }

        return true;
    }

    private TimeSpan Backoff(TKey key)
    {
        _metrics?.RecordRetry(Name);
        return Queue.AddWithBackoff(key);
    }

    private async Task WorkAsync(CancellationToken cancellationToken)
    {
        while (!cancellationToken.IsCancellationRequested && await ProcessNextAsync(cancellationToken).ConfigureAwait(false))
        {
        }
    }

    private static string Describe(Exception ex) => ex switch
    {
        HttpOperationException h => $"{(int)h.Response.StatusCode} {h.Response.Content}",
        RpcException r => $"{r.StatusCode}: {r.Status.Detail}",
        _ => ex.Message,
    };
}

/// <summary>What the host runs of a controller, whatever its key type.</summary>
internal interface IController
{
    string Name { get; }

    /// <summary>Counts this controller's reconciles into <paramref name="metrics"/> and reports its queue's depth.</summary>
    void Instrument(ControllerMetrics metrics);

    Task RunAsync(int workers, CancellationToken cancellationToken);
}

/// <summary>A controller whose keys are cache keys (<c>namespace/name</c> or <c>name</c>).</summary>
internal abstract class Reconciler : Reconciler<string>
{
    protected Reconciler(string name, TimeSpan baseDelay, TimeSpan maxDelay, ILogger logger, TimeProvider? time = null)
        : base(name, new WorkQueue(baseDelay, maxDelay, time), logger)
    {
    }
}
