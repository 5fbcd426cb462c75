using System.Threading.Channels;

namespace Dolly.Controllers.Runtime;

/// <summary>
/// A queue of object keys for one controller, with the semantics reconcilers rely on: a key waiting is
/// queued once however often it is added; a key is never handed to two workers at once (an add while it
/// is being processed runs it again afterwards); failures retry with per-key exponential backoff.
/// </summary>
internal sealed class WorkQueue : IDisposable
{
    private readonly Lock _lock = new();
    private readonly HashSet<string> _queued = new(StringComparer.Ordinal);
    private readonly HashSet<string> _processing = new(StringComparer.Ordinal);
    private readonly HashSet<string> _dirty = new(StringComparer.Ordinal);
    private readonly Dictionary<string, int> _failures = new(StringComparer.Ordinal);
    private readonly Channel<string> _ready = Channel.CreateUnbounded<string>(new UnboundedChannelOptions { SingleReader = false });
    private readonly CancellationTokenSource _stop = new();
    private readonly TimeSpan _baseDelay;
    private readonly TimeSpan _maxDelay;

    public WorkQueue(TimeSpan baseDelay, TimeSpan maxDelay)
    {
        _baseDelay = baseDelay;
        _maxDelay = maxDelay;
    }

    /// <summary>Queues the key unless it is already waiting.</summary>
    public void Add(string key)
    {
        lock (_lock)
        {
            if (_processing.Contains(key))
            {
                _dirty.Add(key);
                return;
            }

            if (_queued.Add(key))
            {
                _ready.Writer.TryWrite(key);
            }
        }
    }

    /// <summary>Queues the key after a delay.</summary>
    public void AddAfter(string key, TimeSpan delay)
    {
        if (delay <= TimeSpan.Zero)
        {
            Add(key);
            return;
        }

        _ = Task.Delay(delay, _stop.Token).ContinueWith(
            t =>
            {
                if (!t.IsCanceled)
                {
                    Add(key);
                }
            },
            CancellationToken.None,
            TaskContinuationOptions.ExecuteSynchronously,
            TaskScheduler.Default);
    }

    /// <summary>Queues the key after its next backoff delay (doubling from the base to the maximum).</summary>
    public TimeSpan AddWithBackoff(string key)
    {
        int failures;
        lock (_lock)
        {
            _failures.TryGetValue(key, out failures);
            _failures[key] = failures + 1;
        }

        double ms = _baseDelay.TotalMilliseconds * Math.Pow(2, Math.Min(failures, 30));
        var delay = TimeSpan.FromMilliseconds(Math.Min(ms, _maxDelay.TotalMilliseconds));
        AddAfter(key, delay);
        return delay;
    }

    /// <summary>Clears the key's failure count after a success.</summary>
    public void Forget(string key)
    {
        lock (_lock)
        {
            _failures.Remove(key);
        }
    }

    /// <summary>Waits for the next key; the caller must call <see cref="Done"/> with it.</summary>
    public async ValueTask<string> TakeAsync(CancellationToken cancellationToken)
    {
        while (true)
        {
            string key = await _ready.Reader.ReadAsync(cancellationToken).ConfigureAwait(false);
            lock (_lock)
            {
                if (!_queued.Remove(key))
                {
                    continue;
                }

                _processing.Add(key);
                return key;
            }
        }
    }

    /// <summary>Marks the key processed; a key added meanwhile is queued again.</summary>
    public void Done(string key)
    {
        lock (_lock)
        {
            _processing.Remove(key);
            if (_dirty.Remove(key) && _queued.Add(key))
            {
                _ready.Writer.TryWrite(key);
            }
        }
    }

    public void Dispose()
    {
        _stop.Cancel();
        _stop.Dispose();
        _ready.Writer.TryComplete();
    }
}
