using System.Collections.Concurrent;
using Dolly.Repository.Storage;
using static Dolly.Repository.Tests.S3ObjectStoreTests;

namespace Dolly.Repository.Tests;

/// <summary>
/// The real radosgw stopped, frozen and restarted under a store: failures are Unreachable and name the endpoint,
/// nothing acknowledged is lost, nothing half-written is readable, and the same store works again afterwards.
/// </summary>
[Collection(RgwCollection.Name)]
public sealed class S3ObjectStoreRgwFaultTests(RgwFixture rgw) : IAsyncLifetime
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    public ValueTask InitializeAsync() => ValueTask.CompletedTask;

    // A test that fails halfway must not leave the gateway down for the rest of the collection.
    public async ValueTask DisposeAsync() => await rgw.EnsureGatewayRunningAsync();

    [Fact]
    public async Task GatewayStopped_EveryOperationUnreachable_ThenSameStoreRecoversAfterRestart()
    {
        var bucket = await rgw.NewBucketAsync(Ct);
        using var store = rgw.Store(bucket, adjust: o => o with { MaxRetries = 1 });
        var before = Bytes(50_000, seed: 11);
        await store.PutAsync("k", before, Ct);

        await rgw.Server.StopGatewayAsync(Ct);
        foreach (var operation in OperationNames)
        {
            var ex = await Assert.ThrowsAsync<ObjectStoreException>(() => Run(store, operation));
            Assert.Equal(ObjectStoreError.Unreachable, ex.Error);
            Assert.Contains(rgw.Endpoint.Endpoint.Authority, ex.Message, StringComparison.Ordinal);
        }

        await rgw.Server.StartGatewayAsync(Ct);

        Assert.Equal(before, await store.GetAsync("k", Ct));
        var after = Bytes(1000, seed: 12);
        await store.PutAsync("k2", after, Ct);
        Assert.Equal(after, await store.GetAsync("k2", Ct));
    }

    [Fact]
    public async Task GatewayStoppedDuringUploads_AcknowledgedObjectsSurviveAndNoneIsPartial()
    {
        var bucket = await rgw.NewBucketAsync(Ct);
        using var store = rgw.Store(bucket, adjust: o => o with { MaxRetries = 1 });
        var acknowledged = new ConcurrentDictionary<string, int>(StringComparer.Ordinal);
        var failed = new ConcurrentBag<(string Key, int Seed, ObjectStoreException Error)>();
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(Ct);
        const int Size = 512 * 1024;

        // Four writers, as an upload keeps several PUTs in flight, each until its first failure.
        var writers = Enumerable.Range(0, 4).Select(w => Task.Run(
            async () =>
            {
                for (var i = 0; !stop.IsCancellationRequested; i++)
                {
                    var key = $"w{w}/{i:d5}";
                    var seed = (w * 100_000) + i;
                    try
                    {
                        await store.PutAsync(key, Bytes(Size, seed), CancellationToken.None);
                        acknowledged[key] = seed;
                    }
                    catch (ObjectStoreException ex)
                    {
                        failed.Add((key, seed, ex));
                        return;
                    }
                }
            },
            Ct)).ToList();

        while (acknowledged.Count < 20)
        {
            await Task.Delay(20, Ct);
        }

        await rgw.Server.StopGatewayAsync(Ct);
        await Task.WhenAny(Task.WhenAll(writers), Task.Delay(TimeSpan.FromMinutes(2), Ct));
        await stop.CancelAsync();
        Assert.True(writers.All(w => w.IsCompleted), "the writers did not all fail while radosgw was stopped");
        await rgw.Server.StartGatewayAsync(Ct);

        Assert.Equal(4, failed.Count);
        Assert.All(failed, f => Assert.Equal(ObjectStoreError.Unreachable, f.Error.Error));
        foreach (var (key, seed) in acknowledged)
        {
            Assert.Equal(Bytes(Size, seed), await store.GetAsync(key, Ct));
        }

        // A PUT cut off by the stop either completed on the server (its answer lost) or left nothing: never a part.
        foreach (var (key, seed, _) in failed)
        {
            var stored = await store.GetAsync(key, Ct);
            Assert.True(stored is null || stored.AsSpan().SequenceEqual(Bytes(Size, seed)), $"{key} holds {stored?.Length} bytes, neither nothing nor the whole object");
        }

        var listed = await ToListAsync(store.ListAsync("", Ct));
        Assert.Superset(acknowledged.Keys.ToHashSet(StringComparer.Ordinal), listed.Select(o => o.Key).ToHashSet(StringComparer.Ordinal));
        Assert.All(listed, o => Assert.Equal(Size, o.Size));
    }

    [Fact]
    public async Task GatewayFrozen_RequestTimesOutAsUnreachable_ThenAnswersWhenThawed()
    {
        var bucket = await rgw.NewBucketAsync(Ct);
        // The timeout is what ends the frozen request, but the same store's requests before and after the freeze must
        // not hit it: with 2 s, radosgw answering slowly on a busy machine failed the first PUT.
        using var store = rgw.Store(bucket, adjust: o => o with { RequestTimeout = TimeSpan.FromSeconds(15), MaxRetries = 0 });
        var data = Bytes(1000, seed: 13);
        await store.PutAsync("k", data, Ct);
        var pid = rgw.Server.GatewayProcessId() ?? throw new InvalidOperationException("radosgw has no pid file");

        // SIGSTOP: the kernel still accepts connections, but nothing answers, as with a hung or overloaded server.
        RgwFixture.Signal("STOP", pid);
        ObjectStoreException ex;
        try
        {
            ex = await Assert.ThrowsAsync<ObjectStoreException>(() => store.GetAsync("k", Ct));
        }
        finally
        {
            RgwFixture.Signal("CONT", pid);
        }

        Assert.Equal(ObjectStoreError.Unreachable, ex.Error);
        Assert.Contains(rgw.Endpoint.Endpoint.Authority, ex.Message, StringComparison.Ordinal);
        Assert.Equal(data, await store.GetAsync("k", Ct));
    }
}
