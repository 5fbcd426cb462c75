namespace Dolly.Nbd;

/// <summary>
/// Bounds the payload bytes a connection holds: the receive loop acquires before reading or allocating a
/// request's data and the reply path releases once the reply is sent. A client that stops reading replies
/// therefore stalls only its own receive loop, and TCP pushes back on it.
/// </summary>
internal sealed class ByteBudget(long capacity)
{
    private readonly long _capacity = capacity;
    private readonly Lock _lock = new();
    private readonly Queue<(long Bytes, TaskCompletionSource Waiter)> _waiters = new();
    private long _available = capacity;

    public ValueTask AcquireAsync(long bytes, CancellationToken cancellationToken)
    {
        bytes = Math.Min(bytes, _capacity);
        TaskCompletionSource waiter;
        lock (_lock)
        {
            if (_waiters.Count == 0 && _available >= bytes)
            {
                _available -= bytes;
                return ValueTask.CompletedTask;
            }

            waiter = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            _waiters.Enqueue((bytes, waiter));
        }

        return new ValueTask(waiter.Task.WaitAsync(cancellationToken));
    }

    public void Release(long bytes)
    {
        bytes = Math.Min(bytes, _capacity);
        lock (_lock)
        {
            _available += bytes;
            while (_waiters.Count > 0 && _available >= _waiters.Peek().Bytes)
            {
                var (n, waiter) = _waiters.Dequeue();
                _available -= n;
                waiter.TrySetResult();
            }
        }
    }
}
