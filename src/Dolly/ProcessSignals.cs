using System.Runtime.InteropServices;

namespace Dolly;

/// <summary>
/// SIGTERM and SIGINT for the whole process, taken before anything else runs: the first one cancels
/// <see cref="Stopping"/> (which every command, and every start-up step of <c>dolly up</c>, observes) and
/// starts the stop timeout, after which the process exits whatever is still running; a second one exits at
/// once. Taking them this early matters: a signal that arrives while a command is still starting must stop
/// it, never be swallowed by a part that is starting (a hosted server's console lifetime took it for itself,
/// and `dolly up` then ran on, holding the pool, until a second signal).
/// </summary>
internal sealed class ProcessSignals : IDisposable
{
    /// <summary>Exit code after SIGINT (128 + 2), as shells report it.</summary>
    public const int InterruptExitCode = 130;

    /// <summary>Exit code after SIGTERM (128 + 15).</summary>
    public const int TerminateExitCode = 143;

    private readonly CancellationTokenSource _stopping = new();
    private readonly PosixSignalRegistration[] _registrations;
    private readonly TimeSpan _stopTimeout;
    private readonly TextWriter _error;
    private readonly TimeProvider _time;
    private readonly Action<int> _exit;
    private int _received;

    public ProcessSignals(TimeSpan stopTimeout, TextWriter error, TimeProvider? time = null, Action<int>? exit = null)
    {
        _stopTimeout = stopTimeout;
        _error = error;
        _time = time ?? TimeProvider.System;
        _exit = exit ?? Environment.Exit;
        _registrations =
        [
            PosixSignalRegistration.Create(PosixSignal.SIGTERM, OnSignal),
            PosixSignalRegistration.Create(PosixSignal.SIGINT, OnSignal),
        ];
    }

    /// <summary>Cancelled by the first signal.</summary>
    public CancellationToken Stopping => _stopping.Token;

    private void OnSignal(PosixSignalContext context)
    {
        // The process stops in order (controllers, servers, the pool's commit) instead of dying on the spot.
        context.Cancel = true;
        Received(context.Signal == PosixSignal.SIGINT ? InterruptExitCode : TerminateExitCode);
    }

    /// <summary>What a signal does; separate from the registration so tests can drive it.</summary>
    internal void Received(int exitCode)
    {
        if (Interlocked.Increment(ref _received) > 1)
        {
            Exit(exitCode, "a second signal: exiting now");
            return;
        }

        // Cancellation callbacks run synchronously on the cancelling thread; the signal thread must not wait for them.
        _ = Task.Run(_stopping.Cancel);
        _ = Task.Delay(_stopTimeout, _time).ContinueWith(
            _ => Exit(exitCode, $"did not stop within {_stopTimeout.TotalSeconds:0} s of the signal: exiting now"),
            CancellationToken.None,
            TaskContinuationOptions.ExecuteSynchronously,
            TaskScheduler.Default);
    }

    private void Exit(int exitCode, string why)
    {
        try
        {
            _error.WriteLine($"dolly: {why}");
            _error.Flush();
        }
        catch (IOException)
        {
            // A closed stderr does not stop the exit.
        }

        _exit(exitCode);
    }

    public void Dispose()
    {
        foreach (var registration in _registrations)
        {
            registration.Dispose();
        }

        _stopping.Dispose();
    }
}
