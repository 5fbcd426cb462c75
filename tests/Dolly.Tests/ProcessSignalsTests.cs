namespace Dolly.Tests;

/// <summary>What a SIGTERM or Ctrl-C does to the process: stop cleanly, or exit after the stop timeout, or at a second signal.</summary>
public sealed class ProcessSignalsTests
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    /// <summary>A clock that moves only when told; its timers fire when it passes their due time.</summary>
    private sealed class ManualTime : TimeProvider
    {
        private readonly List<ManualTimer> _timers = [];
        private DateTimeOffset _now = new(2026, 1, 1, 0, 0, 0, TimeSpan.Zero);

        public override DateTimeOffset GetUtcNow() => _now;

        public override ITimer CreateTimer(TimerCallback callback, object? state, TimeSpan dueTime, TimeSpan period)
        {
            var timer = new ManualTimer(this, callback, state);
            timer.Change(dueTime, period);
            lock (_timers)
            {
                _timers.Add(timer);
            }

            return timer;
        }

        public void Advance(TimeSpan by)
        {
            _now += by;
            List<ManualTimer> due;
            lock (_timers)
            {
                due = [.. _timers.Where(t => t.Due is { } d && d <= _now)];
            }

            foreach (var timer in due)
            {
                timer.Fire();
            }
        }

        private sealed class ManualTimer(ManualTime time, TimerCallback callback, object? state) : ITimer
        {
            public DateTimeOffset? Due { get; private set; }

            public bool Change(TimeSpan dueTime, TimeSpan period)
            {
                Due = dueTime == Timeout.InfiniteTimeSpan ? null : time._now + dueTime;
                return true;
            }

            public void Fire()
            {
                Due = null;
                callback(state);
            }

            public void Dispose() => Due = null;

            public ValueTask DisposeAsync()
            {
                Dispose();
                return ValueTask.CompletedTask;
            }
        }
    }

    [Fact]
    public async Task TheFirstSignal_CancelsTheCommand_AndExitsOnlyWhenTheStopTimeoutPasses()
    {
        var time = new ManualTime();
        var error = new StringWriter();
        var exited = new TaskCompletionSource<int>(TaskCreationOptions.RunContinuationsAsynchronously);
        using var signals = new ProcessSignals(TimeSpan.FromSeconds(60), error, time, code => exited.TrySetResult(code));
        Assert.False(signals.Stopping.IsCancellationRequested);

        signals.Received(ProcessSignals.TerminateExitCode);
        await Task.Delay(Timeout.Infinite, signals.Stopping).ContinueWith(_ => { }, Ct, TaskContinuationOptions.None, TaskScheduler.Default).WaitAsync(TimeSpan.FromSeconds(30), Ct);

        time.Advance(TimeSpan.FromSeconds(59));
        Assert.False(exited.Task.IsCompleted, "exited before the stop timeout");
        time.Advance(TimeSpan.FromSeconds(1));
        Assert.Equal(ProcessSignals.TerminateExitCode, await exited.Task.WaitAsync(TimeSpan.FromSeconds(30), Ct));
        Assert.Contains("did not stop within 60 s", error.ToString(), StringComparison.Ordinal);
    }

    [Fact]
    public async Task ASecondSignal_ExitsAtOnce()
    {
        var time = new ManualTime();
        var error = new StringWriter();
        var exited = new TaskCompletionSource<int>(TaskCreationOptions.RunContinuationsAsynchronously);
        using var signals = new ProcessSignals(TimeSpan.FromSeconds(60), error, time, code => exited.TrySetResult(code));
        signals.Received(ProcessSignals.TerminateExitCode);
        Assert.False(exited.Task.IsCompleted);
        signals.Received(ProcessSignals.InterruptExitCode);
        Assert.Equal(ProcessSignals.InterruptExitCode, await exited.Task.WaitAsync(TimeSpan.FromSeconds(30), Ct));
        Assert.Contains("a second signal", error.ToString(), StringComparison.Ordinal);
    }
}
