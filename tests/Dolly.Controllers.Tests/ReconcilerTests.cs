using System.Collections.Concurrent;
using System.Net;
using Dolly.Controllers.Runtime;
using k8s.Autorest;
using Microsoft.Extensions.Logging;

namespace Dolly.Controllers.Tests;

/// <summary>How a reconcile's failures are retried and logged.</summary>
public sealed class ReconcilerTests
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    private sealed class Recorded : ILogger
    {
        public ConcurrentQueue<(LogLevel Level, string Message)> Entries { get; } = new();

        public IDisposable? BeginScope<TState>(TState state)
            where TState : notnull => null;

        public bool IsEnabled(LogLevel logLevel) => true;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter) =>
            Entries.Enqueue((logLevel, formatter(state, exception)));
    }

    /// <summary>Fails each key's first reconciles with the given status, then succeeds.</summary>
    private sealed class Failing(HttpStatusCode status, int failures, ILogger logger)
        : Reconciler("test", TimeSpan.FromMilliseconds(5), TimeSpan.FromMilliseconds(20), logger)
    {
        private int _calls;

        public TaskCompletionSource Succeeded { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public int Calls => _calls;

        protected override Task<Outcome> ReconcileAsync(string key, CancellationToken cancellationToken)
        {
            if (Interlocked.Increment(ref _calls) <= failures)
            {
                var response = new HttpResponseMessageWrapper(new HttpResponseMessage(status), "{\"kind\":\"Status\"}");
                throw new HttpOperationException($"Operation returned an invalid status code '{status}'") { Response = response };
            }

            Succeeded.TrySetResult();
            return Task.FromResult(Outcome.Done);
        }
    }

    [Theory]
    [InlineData(HttpStatusCode.NotFound, false)]
    [InlineData(HttpStatusCode.InternalServerError, true)]
    public async Task AFailedWrite_IsRetried_AndOnlyAnUnexpectedOneIsLoggedAsAnError(HttpStatusCode status, bool error)
    {
        var log = new Recorded();
        var reconciler = new Failing(status, failures: 2, log);
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(Ct);
        var run = reconciler.RunAsync(1, stop.Token);
        reconciler.Queue.Add("default/gone");
        await reconciler.Succeeded.Task.WaitAsync(TimeSpan.FromSeconds(30), Ct);
        await stop.CancelAsync();
        await run;

        Assert.Equal(3, reconciler.Calls);
        var failures = log.Entries.Where(e => e.Message.Contains("default/gone", StringComparison.Ordinal)).ToList();
        Assert.Equal(2, failures.Count);
        Assert.All(failures, e => Assert.Equal(error ? LogLevel.Error : LogLevel.Information, e.Level));
    }
}
