using System.Globalization;
using System.Net;
using k8s;
using k8s.Autorest;
using k8s.Models;

namespace Dolly.Api.Tests;

/// <summary>Concurrent writers with optimistic concurrency, checked against a watcher that must see every change in order.</summary>
public sealed class ConcurrencyTests(ServerFixture fx) : IClassFixture<ServerFixture>
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    [Fact]
    public async Task ConcurrentIncrements_NoLostUpdates_WatchSeesEveryRevisionInOrder()
    {
        using var client = fx.Client();
        await client.CoreV1.CreateNamespaceAsync(new V1Namespace { Metadata = new V1ObjectMeta { Name = "race" } }, cancellationToken: Ct);
        var lease = await client.CoordinationV1.CreateNamespacedLeaseAsync(new V1Lease
        {
            Metadata = new V1ObjectMeta { Name = "counter" },
            Spec = new V1LeaseSpec { LeaseTransitions = 0 },
        }, "race", cancellationToken: Ct);

        using var cts = CancellationTokenSource.CreateLinkedTokenSource(Ct);
        cts.CancelAfter(TimeSpan.FromSeconds(120));
        var seen = new List<(long Rv, int Value)>();
        const int writers = 6, perWriter = 25, total = writers * perWriter;
        var watching = Task.Run(async () =>
        {
            await foreach (var (type, item) in client.CoordinationV1.WatchListNamespacedLeaseAsync("race", resourceVersion: lease.Metadata.ResourceVersion, cancellationToken: cts.Token))
            {
                seen.Add((long.Parse(item.Metadata.ResourceVersion, CultureInfo.InvariantCulture), item.Spec.LeaseTransitions ?? -1));
                if (item.Spec.LeaseTransitions == total)
                {
                    return;
                }
            }
        }, cts.Token);

        int conflicts = 0;
        await Parallel.ForAsync(0, writers, cts.Token, async (w, ct) =>
        {
            using var c = fx.Client();
            for (int i = 0; i < perWriter; i++)
            {
                while (true)
                {
                    var current = await c.CoordinationV1.ReadNamespacedLeaseAsync("counter", "race", cancellationToken: ct);
                    current.Spec.LeaseTransitions = (current.Spec.LeaseTransitions ?? 0) + 1;
                    try
                    {
                        await c.CoordinationV1.ReplaceNamespacedLeaseAsync(current, "counter", "race", cancellationToken: ct);
                        break;
                    }
                    catch (HttpOperationException e) when (e.Response.StatusCode == HttpStatusCode.Conflict)
                    {
                        Interlocked.Increment(ref conflicts);
                    }
                }
            }
        });

        await watching.WaitAsync(TimeSpan.FromSeconds(120), Ct);
        var final = await client.CoordinationV1.ReadNamespacedLeaseAsync("counter", "race", cancellationToken: Ct);
        Assert.Equal(total, final.Spec.LeaseTransitions);
        Assert.Equal(Enumerable.Range(1, total), seen.Select(s => s.Value));
        Assert.True(seen.Zip(seen.Skip(1)).All(p => p.First.Rv < p.Second.Rv), "watch revisions must increase");
        Assert.Equal(final.Metadata.ResourceVersion, seen[^1].Rv.ToString(CultureInfo.InvariantCulture));
    }
}
