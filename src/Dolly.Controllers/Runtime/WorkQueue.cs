using System.Threading.Channels;

namespace Dolly.Controllers.Runtime;

/// <summary>
/// A queue of object keys for one controller, with the semantics reconcilers rely on: a key waiting is
/// queued once however often it is added; a key is never handed to two workers at once (an add while it
/// is being processed runs it again afterwards); failures retry with per-key exponential backoff, and all
/// retries together are held to a rate (a token bucket), as upstream's default controller rate limiter does, so
/// a storm of failing keys cannot flood the API server. Delays run on a <see cref="TimeProvider"/>.
/// </summary>
internal class WorkQueue<TKey> : IDisposable
    where TKey : notnull
{
    private readonly Lock _lock = new();
    private readonly HashSet<TKey> _queued;
    private readonly HashSet<TKey> _processing;
    private readonly HashSet<TKey> _dirty;
    private readonly Dictionary<TKey, int> _failures;
    private readonly Channel<TKey> _ready = Channel.CreateUnbounded<TKey>(new UnboundedChannelOptions { SingleReader = false });
    private readonly CancellationTokenSource _stop = new();
    private readonly TimeSpan _baseDelay;
    private readonly TimeSpan _maxDelay;
    private readonly TimeProvider _time;
    private readonly RetryBucket _bucket;

    public WorkQueue(TimeSpan baseDelay, TimeSpan maxDelay, TimeProvider? time = null, IEqualityComparer<TKey>? comparer = null, RetryBucket? bucket = null)
    {
        _baseDelay = baseDelay;
        _maxDelay = maxDelay;
        _time = time ?? TimeProvider.System;
        _bucket = bucket ?? new RetryBucket(RetryBucket.DefaultRate, RetryBucket.DefaultBurst, _time);
        _queued = new HashSet<TKey>(comparer);
        _processing = new HashSet<TKey>(comparer);
        _dirty = new HashSet<TKey>(comparer);
        _failures = new Dictionary<TKey, int>(comparer);
    }

    /// <summary>Keys waiting (not counting those being processed).</summary>
    public int Count
    {
        get
        {
            lock (_lock)
            {
                return _queued.Count;
            }
        }
    }

    /// <summary>Queues the key unless it is already waiting.</summary>
    public void Add(TKey key)
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
    public void AddAfter(TKey key, TimeSpan delay)
    {
        if (delay <= TimeSpan.Zero)
        {
            Add(key);
            return;
        }

        CancellationToken stop;
        try
        {
            stop = _stop.Token;
        }
        catch (ObjectDisposedException)
        {
            return;
        }

        _ = Task.Delay(delay, _time, stop).ContinueWith(
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

    /// <summary>
    /// Queues the key after its next backoff delay: the longer of its own (doubling from the base to the maximum with
    /// each failure) and the wait for a retry token.
    /// </summary>
    public TimeSpan AddWithBackoff(TKey key)
    {
        int failures;
        lock (_lock)
        {
            _failures.TryGetValue(key, out failures);
            _failures[key] = failures + 1;
        }

        double ms = _baseDelay.TotalMilliseconds * Math.Pow(2, Math.Min(failures, 30));
        var own = TimeSpan.FromMilliseconds(Math.Min(ms, _maxDelay.TotalMilliseconds));
        var shared = _bucket.Reserve();
        var delay = own > shared ? own : shared;
        AddAfter(key, delay);
        return delay;
    }

    /// <summary>Clears the key's failure count after a success.</summary>
    public void Forget(TKey key)
    {
        lock (_lock)
        {
            _failures.Remove(key);
        }
    }

    /// <summary>Waits for the next key; the caller must call <see cref="Done"/> with it.</summary>
    public async ValueTask<TKey> TakeAsync(CancellationToken cancellationToken)
    {
        while (true)
        {
            var key = await _ready.Reader.ReadAsync(cancellationToken).ConfigureAwait(false);
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
    public void Done(TKey key)
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
        Dispose(true);
        GC.SuppressFinalize(this);
    }

    protected virtual void Dispose(bool disposing)
    {
        if (!disposing)
        {
            return;
        }

        lock (_lock)
        {
            if (_ready.Writer.TryComplete())
            {
                _stop.Cancel();
                _stop.Dispose();
            }
        }
    }
}

/// <summary>The work queue of a controller whose keys are cache keys (<c>namespace/name</c> or <c>name</c>).</summary>
internal sealed class WorkQueue : WorkQueue<string>
{
    public WorkQueue(TimeSpan baseDelay, TimeSpan maxDelay, TimeProvider? time = null)
        : base(baseDelay, maxDelay, time, StringComparer.Ordinal)
    {
    }
}

/// <summary>
/// A token bucket shared by all retries of one queue: <see cref="DefaultBurst"/> retries at once, then
/// <see cref="DefaultRate"/> a second (upstream's defaults, 10 qps and a burst of 100).
/// </summary>
internal sealed class RetryBucket
{
    public const double DefaultRate = 10;
    public const int DefaultBurst = 100;

    private readonly Lock _lock = new();
    private readonly double _rate;
    private readonly int _burst;
    private readonly TimeProvider _time;
    private double _tokens;
    private long _last;

    public RetryBucket(double rate, int burst, TimeProvider time)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(rate);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(burst);
        _rate = rate;
        _burst = burst;
        _time = time;
        _tokens = burst;
        _last = time.GetTimestamp();
    }

    /// <summary>Takes a token and says how long to wait for it (zero while the burst lasts).</summary>
    public TimeSpan Reserve()
    {
        lock (_lock)
        {
            long now = _time.GetTimestamp();
            _tokens = Math.Min(_burst, _tokens + (_time.GetElapsedTime(_last, now).TotalSeconds * _rate));
            _last = now;
            _tokens -= 1;
            return _tokens >= 0 ? TimeSpan.Zero : TimeSpan.FromSeconds(-_tokens / _rate);
        }
    }
}
