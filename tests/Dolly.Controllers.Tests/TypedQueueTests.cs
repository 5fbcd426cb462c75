using Dolly.Controllers.Runtime;
using Microsoft.Extensions.Time.Testing;

namespace Dolly.Controllers.Tests;

/// <summary>The typed work queue on a fake clock: delays, per-key backoff and the shared retry bucket, with no sleeping.</summary>
public sealed class TypedQueueTests
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    [Theory]
    [InlineData("ns/name", "ns", "name")]
    [InlineData("name", "", "name")]
    [InlineData("ns/a.b-c", "ns", "a.b-c")]
    public void ObjectKey_RoundTripsTheCacheKey(string text, string ns, string name)
    {
        var key = ObjectKey.Parse(text);
        Assert.Equal(new ObjectKey(ns, name), key);
        Assert.Equal(text, key.ToString());
    }

    [Fact]
    public async Task AddAfter_WaitsForTheFakeClock()
    {
        var clock = new FakeTimeProvider();
        using var queue = new WorkQueue<ObjectKey>(TimeSpan.FromSeconds(1), TimeSpan.FromMinutes(1), clock);
        var key = new ObjectKey("ns", "late");
        queue.AddAfter(key, TimeSpan.FromSeconds(10));
        clock.Advance(TimeSpan.FromSeconds(9));
        Assert.Equal(0, queue.Count);
        clock.Advance(TimeSpan.FromSeconds(1));
        Assert.Equal(1, queue.Count);
        Assert.Equal(key, await queue.TakeAsync(Ct));
    }

    [Fact]
    public async Task TheSameKeyQueuedTwice_IsHandedOutOnce_AndKeysOfTwoNamespacesAreDistinct()
    {
        using var queue = new WorkQueue<ObjectKey>(TimeSpan.FromSeconds(1), TimeSpan.FromMinutes(1), new FakeTimeProvider());
        queue.Add(new ObjectKey("a", "x"));
        queue.Add(new ObjectKey("a", "x"));
        queue.Add(new ObjectKey("b", "x"));
        Assert.Equal(2, queue.Count);
        Assert.Equal(new ObjectKey("a", "x"), await queue.TakeAsync(Ct));
        Assert.Equal(new ObjectKey("b", "x"), await queue.TakeAsync(Ct));
    }

    [Fact]
    public void RetriesBeyondTheBurst_AreSpreadAtTheBucketsRate()
    {
        var clock = new FakeTimeProvider();
        var bucket = new RetryBucket(rate: 10, burst: 3, clock);
        using var queue = new WorkQueue<string>(TimeSpan.FromMilliseconds(1), TimeSpan.FromSeconds(10), clock, StringComparer.Ordinal, bucket);

        // Distinct keys each fail once: their own backoff is 1 ms, so only the bucket holds them back.
        var delays = Enumerable.Range(0, 6).Select(i => queue.AddWithBackoff("k" + i).TotalMilliseconds).ToList();
        Assert.Equal([1, 1, 1, 100, 200, 300], delays);

        // Time refills the bucket, up to the burst.
        clock.Advance(TimeSpan.FromSeconds(10));
        Assert.Equal(1, queue.AddWithBackoff("fresh").TotalMilliseconds);
    }

    [Fact]
    public void AKeysOwnBackoff_WinsWhenLongerThanTheBucketsWait()
    {
        var clock = new FakeTimeProvider();
        using var queue = new WorkQueue<string>(TimeSpan.FromSeconds(1), TimeSpan.FromSeconds(8), clock, StringComparer.Ordinal);
        Assert.Equal([1, 2, 4, 8, 8], Enumerable.Range(0, 5).Select(_ => queue.AddWithBackoff("k").TotalSeconds));
    }

    [Fact]
    public async Task AfterDispose_NothingIsHandedOut_AndAddAfterIsHarmless()
    {
        var clock = new FakeTimeProvider();
        var queue = new WorkQueue<string>(TimeSpan.FromSeconds(1), TimeSpan.FromSeconds(8), clock, StringComparer.Ordinal);
        queue.AddAfter("k", TimeSpan.FromSeconds(1));
        queue.Dispose();
        queue.AddAfter("k", TimeSpan.FromSeconds(1));
        clock.Advance(TimeSpan.FromSeconds(2));
        await Assert.ThrowsAnyAsync<Exception>(async () => await queue.TakeAsync(Ct));
    }
}
