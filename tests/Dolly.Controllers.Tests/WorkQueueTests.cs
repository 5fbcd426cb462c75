using System.Collections.Concurrent;
using CsCheck;
using Dolly.Controllers.Runtime;
using Microsoft.Extensions.Time.Testing;

namespace Dolly.Controllers.Tests;

public sealed class WorkQueueTests
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    [Fact]
    public async Task AKeyAddedTwiceWhileWaiting_IsHandedOutOnce()
    {
        using var queue = new WorkQueue(TimeSpan.FromMilliseconds(10), TimeSpan.FromSeconds(1));
        queue.Add("a");
        queue.Add("b");
        queue.Add("a");
        Assert.Equal("a", await queue.TakeAsync(Ct));
        Assert.Equal("b", await queue.TakeAsync(Ct));
        using var none = new CancellationTokenSource(TimeSpan.FromMilliseconds(100));
        await Assert.ThrowsAnyAsync<OperationCanceledException>(async () => await queue.TakeAsync(none.Token));
    }

    [Fact]
    public async Task AKeyAddedWhileBeingProcessed_RunsAgainAfterDone_NotBefore()
    {
        using var queue = new WorkQueue(TimeSpan.FromMilliseconds(10), TimeSpan.FromSeconds(1));
        queue.Add("a");
        string key = await queue.TakeAsync(Ct);
        queue.Add("a");
        queue.Add("a");
        using (var early = new CancellationTokenSource(TimeSpan.FromMilliseconds(100)))
        {
            await Assert.ThrowsAnyAsync<OperationCanceledException>(async () => await queue.TakeAsync(early.Token));
        }

        queue.Done(key);
        Assert.Equal("a", await queue.TakeAsync(Ct));
        queue.Done("a");
        using var none = new CancellationTokenSource(TimeSpan.FromMilliseconds(100));
        await Assert.ThrowsAnyAsync<OperationCanceledException>(async () => await queue.TakeAsync(none.Token));
    }

    [Fact]
    public void Backoff_DoublesPerFailure_UpToTheMaximum_AndForgetStartsOver()
    {
        using var queue = new WorkQueue(TimeSpan.FromMilliseconds(100), TimeSpan.FromMilliseconds(1000));
        var delays = Enumerable.Range(0, 6).Select(_ => queue.AddWithBackoff("k").TotalMilliseconds).ToList();
        Assert.Equal([100, 200, 400, 800, 1000, 1000], delays);
        Assert.Equal(100, queue.AddWithBackoff("other").TotalMilliseconds);
        queue.Forget("k");
        Assert.Equal(100, queue.AddWithBackoff("k").TotalMilliseconds);
    }

    [Fact]
    public async Task AddAfter_HandsTheKeyOutOnlyAfterTheDelay()
    {
        // On a fake clock: on the real one, a busy machine can run the "too early" check after the delay is over.
        var clock = new FakeTimeProvider();
        using var queue = new WorkQueue(TimeSpan.FromMilliseconds(10), TimeSpan.FromSeconds(1), clock);
        queue.AddAfter("late", TimeSpan.FromMilliseconds(300));
        var take = queue.TakeAsync(Ct).AsTask();
        clock.Advance(TimeSpan.FromMilliseconds(299));
        Assert.False(take.IsCompleted, "the key was handed out before its delay");
        Assert.Equal(0, queue.Count);

        clock.Advance(TimeSpan.FromMilliseconds(1));
        Assert.Equal("late", await take.WaitAsync(TimeSpan.FromSeconds(60), Ct));
    }

    /// <summary>
    /// Workers and producers at random: a key is never processed by two workers at once, and every key is
    /// processed at least once after its last add (nothing is lost).
    /// </summary>
    [Fact]
    public void RandomProducersAndWorkers_NeverOverlapAKey_AndNeverLoseAnAdd()
    {
        Gen.Select(Gen.Int[1, 5], Gen.Int[1, 30].Array[1, 200], Gen.Int[1, 4]).Sample(
            (keys, adds, workers) =>
            {
                using var queue = new WorkQueue(TimeSpan.FromMilliseconds(1), TimeSpan.FromMilliseconds(10));
                var busy = new ConcurrentDictionary<string, int>();
                var lastAdd = new ConcurrentDictionary<string, long>();
                var lastStart = new ConcurrentDictionary<string, long>();
                long clock = 0;
                bool overlap = false;
                using var stop = new CancellationTokenSource();
                var tasks = Enumerable.Range(0, workers).Select(_ => Task.Run(async () =>
                {
                    try
                    {
                        while (true)
                        {
                            string key = await queue.TakeAsync(stop.Token);
                            if (busy.AddOrUpdate(key, 1, (_, n) => n + 1) > 1)
                            {
                                overlap = true;
                            }

                            lastStart[key] = Interlocked.Increment(ref clock);
                            await Task.Yield();
                            busy.AddOrUpdate(key, 0, (_, n) => n - 1);
                            queue.Done(key);
                        }
                    }
                    catch (OperationCanceledException)
                    {
                    }
                })).ToArray();

                foreach (int a in adds)
                {
                    string key = "k" + (a % keys);
                    lastAdd[key] = Interlocked.Increment(ref clock);
                    queue.Add(key);
                }

                var deadline = DateTime.UtcNow.AddSeconds(60);
                while (DateTime.UtcNow < deadline && lastAdd.Any(kv => !lastStart.TryGetValue(kv.Key, out long s) || s < kv.Value))
                {
                    Thread.Sleep(1);
                }

                stop.Cancel();
                Task.WaitAll(tasks);
                Assert.False(overlap, "a key was processed by two workers at once");
                foreach (var (key, added) in lastAdd)
                {
                    Assert.True(lastStart.TryGetValue(key, out long started) && started > added, $"{key} added at {added} was not processed afterwards");
                }
            },
            iter: 60);
    }
}
