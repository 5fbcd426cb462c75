using System.Runtime.CompilerServices;
using System.Threading.Channels;
using Dolly.Controllers.Runtime;
using k8s;
using k8s.Models;
using Microsoft.Extensions.Logging.Abstractions;

namespace Dolly.Controllers.Tests;

public sealed class InformerTests
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    private static V1PersistentVolumeClaim Claim(string name, string uid, string rv, bool deleting = false, params string[] finalizers) => new()
    {
        Metadata = new V1ObjectMeta
        {
            Name = name,
            NamespaceProperty = "ns",
            Uid = uid,
            ResourceVersion = rv,
            DeletionTimestamp = deleting ? DateTime.UtcNow : null,
            Finalizers = finalizers.Length > 0 ? [.. finalizers] : null,
        },
    };

    private sealed class FakeApi
    {
        public List<V1PersistentVolumeClaim> Items { get; } = [];

        public Channel<(WatchEventType, V1PersistentVolumeClaim)> Events { get; } = Channel.CreateUnbounded<(WatchEventType, V1PersistentVolumeClaim)>();

        public int Lists { get; private set; }

        public Task<(IList<V1PersistentVolumeClaim>, string)> List(CancellationToken ct)
        {
            Lists++;
            return Task.FromResult<(IList<V1PersistentVolumeClaim>, string)>(([.. Items], "1"));
        }

        public async IAsyncEnumerable<(WatchEventType, V1PersistentVolumeClaim)> Watch(string rv, [EnumeratorCancellation] CancellationToken ct)
        {
            while (await Events.Reader.WaitToReadAsync(ct))
            {
                while (Events.Reader.TryRead(out var e))
                {
                    yield return e;
                    if (e.Item1 == WatchEventType.Error)
                    {
                        yield break;
                    }
                }
            }
        }
    }

    private static (Informer<V1PersistentVolumeClaim>, List<(string?, string?)>) Make(FakeApi api)
    {
        var informer = new Informer<V1PersistentVolumeClaim>("PersistentVolumeClaim", api.List, api.Watch, NullLogger.Instance);
        var seen = new List<(string?, string?)>();
        informer.OnChange((old, now) =>
        {
            lock (seen)
            {
                seen.Add((old?.Metadata.ResourceVersion, now?.Metadata.ResourceVersion));
            }
        });
        return (informer, seen);
    }

    private static async Task Until(Func<bool> condition, [System.Runtime.CompilerServices.CallerArgumentExpression(nameof(condition))] string what = "")
    {
        // A deadline, not a count of short sleeps: 500 sleeps of 10 ms is a few seconds, which a busy machine can exceed.
        var deadline = DateTime.UtcNow.AddSeconds(60);
        while (!condition() && DateTime.UtcNow < deadline)
        {
            await Task.Delay(10, Ct);
        }

        Assert.True(condition(), $"not within 60 s: {what}");
    }

    [Fact]
    public async Task ListsThenFollowsTheWatch_HandlersSeeOldAndNew()
    {
        var api = new FakeApi();
        api.Items.Add(Claim("a", "u1", "1"));
        var (informer, seen) = Make(api);
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(Ct);
        var run = informer.RunAsync(stop.Token);
        await informer.Synced.WaitAsync(TimeSpan.FromSeconds(60), Ct);
        Assert.Equal("1", informer.Get("ns/a")!.Metadata.ResourceVersion);

        await api.Events.Writer.WriteAsync((WatchEventType.Modified, Claim("a", "u1", "2")), Ct);
        await api.Events.Writer.WriteAsync((WatchEventType.Added, Claim("b", "u2", "3")), Ct);
        await api.Events.Writer.WriteAsync((WatchEventType.Deleted, Claim("a", "u1", "4")), Ct);
        await Until(() => informer.Get("ns/a") is null && informer.Get("ns/b") is not null);
        lock (seen)
        {
            Assert.Equal([(null, "1"), ("1", "2"), (null, "3"), ("2", null)], seen);
        }

        await stop.CancelAsync();
        await run;
    }

    [Fact]
    public async Task AnObjectTheWatchDeleted_IsNeverRememberedBackFromALateWrite()
    {
        var api = new FakeApi();
        api.Items.Add(Claim("a", "u1", "1", deleting: true, "kubernetes.io/pvc-protection"));
        var (informer, _) = Make(api);
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(Ct);
        var run = informer.RunAsync(stop.Token);
        await informer.Synced.WaitAsync(TimeSpan.FromSeconds(60), Ct);

        await api.Events.Writer.WriteAsync((WatchEventType.Deleted, Claim("a", "u1", "3", deleting: true)), Ct);
        await Until(() => informer.Get("ns/a") is null);

        // The reply to the write that removed the finalizer arrives after the watch said it is gone.
        informer.Remember(Claim("a", "u1", "2", deleting: true, "other-finalizer"));
        Assert.Null(informer.Get("ns/a"));
        informer.Remember(Claim("a", "u9", "5", deleting: true));
        Assert.Null(informer.Get("ns/a"));

        // A new object with the same name (a new UID) is remembered.
        informer.Remember(Claim("a", "u9", "6"));
        Assert.Equal("u9", informer.Get("ns/a")!.Metadata.Uid);
        await stop.CancelAsync();
        await run;
    }

    [Fact]
    public async Task RememberKeepsTheNewerOfCacheAndWrite()
    {
        var api = new FakeApi();
        api.Items.Add(Claim("a", "u1", "10"));
        var (informer, _) = Make(api);
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(Ct);
        var run = informer.RunAsync(stop.Token);
        await informer.Synced.WaitAsync(TimeSpan.FromSeconds(60), Ct);
        informer.Remember(Claim("a", "u1", "9"));
        Assert.Equal("10", informer.Get("ns/a")!.Metadata.ResourceVersion);
        informer.Remember(Claim("a", "u1", "11"));
        Assert.Equal("11", informer.Get("ns/a")!.Metadata.ResourceVersion);
        await stop.CancelAsync();
        await run;
    }

    [Fact]
    public async Task AnExpiredWatch_ListsAgain_AndDropsWhatVanishedMeanwhile()
    {
        var api = new FakeApi();
        api.Items.Add(Claim("a", "u1", "1"));
        api.Items.Add(Claim("b", "u2", "1"));
        var (informer, seen) = Make(api);
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(Ct);
        var run = informer.RunAsync(stop.Token);
        await informer.Synced.WaitAsync(TimeSpan.FromSeconds(60), Ct);

        api.Items.RemoveAt(1);
        await api.Events.Writer.WriteAsync((WatchEventType.Error, Claim("", "", "")), Ct);
        await Until(() => informer.Get("ns/b") is null);
        Assert.Equal(2, api.Lists);
        Assert.NotNull(informer.Get("ns/a"));
        lock (seen)
        {
            Assert.Contains(("1", (string?)null), seen);
        }

        await stop.CancelAsync();
        await run;
    }
}
