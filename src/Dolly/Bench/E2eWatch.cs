using System.Collections.Concurrent;
using System.Diagnostics;
using k8s;
using k8s.Autorest;
using k8s.Models;

namespace Dolly.Bench;

/// <summary>
/// One watch over every object of a kind, started from a list's resourceVersion so nothing is missed, that
/// resolves expectations ("tell me when ns/name first satisfies this") with the <see cref="Stopwatch"/>
/// timestamp of the event that showed it, and remembers when each object was first seen. A benchmark waits
/// on the watch the way a user's <c>kubectl wait</c> would, never by polling.
/// </summary>
internal sealed class E2eWatch<T> : IAsyncDisposable
    where T : class, IKubernetesObject<V1ObjectMeta>
{
    private const int MaxConsecutiveFailures = 3;

    private readonly Func<CancellationToken, Task<(IList<T> Items, string ResourceVersion)>> _list;
    private readonly Func<string, CancellationToken, IAsyncEnumerable<(WatchEventType, T)>> _watch;
    private readonly ConcurrentDictionary<string, Expectation> _expected = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<string, long> _firstSeen = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<string, T> _last = new(StringComparer.Ordinal);
    private readonly CancellationTokenSource _stop = new();
    private readonly TaskCompletionSource _listed = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private Task _loop = Task.CompletedTask;
    private volatile Exception? _fault;

    public E2eWatch(
        string kind,
        Func<CancellationToken, Task<(IList<T> Items, string ResourceVersion)>> list,
        Func<string, CancellationToken, IAsyncEnumerable<(WatchEventType, T)>> watch)
    {
        Kind = kind;
        _list = list;
        _watch = watch;
    }

    public string Kind { get; }

    private sealed record Expectation(Func<T, bool> Done, TaskCompletionSource<long> Result);

    /// <summary>Starts listing and watching; completes once the first list is in.</summary>
    public Task StartAsync()
    {
        _loop = Task.Run(() => RunAsync(_stop.Token));
        return _listed.Task;
    }

    /// <summary>
    /// The timestamp of the first event showing <paramref name="name"/> satisfying <paramref name="done"/>.
    /// Register before creating the object: the event that satisfies it can come at any time after.
    /// </summary>
    public Task<long> Expect(string? ns, string name, Func<T, bool> done)
    {
        string key = Key(ns, name);
        var expectation = new Expectation(done, new TaskCompletionSource<long>(TaskCreationOptions.RunContinuationsAsynchronously));
        if (_fault is { } fault)
        {
            expectation.Result.TrySetException(fault);
            return expectation.Result.Task;
        }

        if (!_expected.TryAdd(key, expectation))
        {
            throw new InvalidOperationException($"{Kind} {key} is already awaited");
        }

        // Already there and satisfied (the watch ran ahead): resolve now.
        if (_last.TryGetValue(key, out var seen) && done(seen) && _expected.TryRemove(new KeyValuePair<string, Expectation>(key, expectation)))
        {
            expectation.Result.TrySetResult(Stopwatch.GetTimestamp());
        }

        return expectation.Result.Task;
    }

    /// <summary>When the watch first saw the object (its creation as a watching client sees it).</summary>
    public long? FirstSeen(string? ns, string name) => _firstSeen.TryGetValue(Key(ns, name), out long t) ? t : null;

    /// <summary>The last version of the object the watch saw.</summary>
    public T? Last(string? ns, string name) => _last.GetValueOrDefault(Key(ns, name));

    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync().ConfigureAwait(false);
        await _loop.ConfigureAwait(false);
        _stop.Dispose();
    }

    private static string Key(string? ns, string name) => string.IsNullOrEmpty(ns) ? name : ns + "/" + name;

    private async Task RunAsync(CancellationToken ct)
    {
        string? resourceVersion = null;
        int failures = 0;
        while (!ct.IsCancellationRequested)
        {
            try
            {
                if (resourceVersion is null)
                {
                    var (items, rv) = await _list(ct).ConfigureAwait(false);
                    long now = Stopwatch.GetTimestamp();
                    foreach (var item in items)
                    {
                        Observe(item, now);
                    }

                    resourceVersion = rv;
                    _listed.TrySetResult();
                }

                await foreach (var (type, item) in _watch(resourceVersion, ct).ConfigureAwait(false))
                {
                    long now = Stopwatch.GetTimestamp();
                    failures = 0;
                    if (item?.Metadata?.ResourceVersion is { Length: > 0 } rv)
                    {
                        resourceVersion = rv;
                    }

                    if (type == WatchEventType.Error)
                    {
                        // Most likely 410 Gone (the resourceVersion expired): list again.
                        resourceVersion = null;
                        break;
                    }

                    if (type is WatchEventType.Added or WatchEventType.Modified && item is not null)
                    {
                        Observe(item, now);
                    }
                }
            }
            catch (OperationCanceledException) when (ct.IsCancellationRequested)
            {
                return;
            }
            catch (Exception ex) when (ex is HttpOperationException or HttpRequestException or IOException or KubernetesException or System.Text.Json.JsonException)
            {
                // A broken watch is reopened from the last resourceVersion; one that keeps breaking fails every waiter.
                if (++failures >= MaxConsecutiveFailures)
                {
                    Fail(new IOException($"the watch on {Kind} failed {failures} times in a row: {ex.Message}", ex));
                    return;
                }

                resourceVersion = null;
            }
        }
    }

    private void Observe(T item, long timestamp)
    {
        string key = Key(item.Metadata.NamespaceProperty, item.Metadata.Name);
        _firstSeen.TryAdd(key, timestamp);
        _last[key] = item;
        if (_expected.TryGetValue(key, out var e) && e.Done(item) && _expected.TryRemove(new KeyValuePair<string, Expectation>(key, e)))
        {
            e.Result.TrySetResult(timestamp);
        }
    }

    private void Fail(Exception ex)
    {
        _fault = ex;
        _listed.TrySetException(ex);
        foreach (var key in _expected.Keys)
        {
            if (_expected.TryRemove(key, out var e))
            {
                e.Result.TrySetException(ex);
            }
        }
    }
}
