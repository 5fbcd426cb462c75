using System.Globalization;
using System.Runtime.CompilerServices;
using System.Threading.Channels;
using Dolly.Controllers.Runtime;
using k8s;
using k8s.Models;
using Microsoft.Extensions.Logging.Abstractions;

namespace Dolly.Controllers.Tests;

/// <summary>
/// The informer's secondary indexes against a model: after any mix of listed objects, watch events, write-throughs
/// and relists, every index answers exactly what a walk over the cache would.
/// </summary>
public sealed class InformerIndexTests
{
    private const string BySource = "by-source";
    private static readonly string[] Namespaces = ["a", "b", "c"];
    private static readonly string[] Sources = ["s1", "s2", "s3", ""];

    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    private static V1PersistentVolumeClaim Claim(string ns, string name, string uid, long rv, string source) => new()
    {
        Metadata = new V1ObjectMeta { Name = name, NamespaceProperty = ns, Uid = uid, ResourceVersion = rv.ToString(CultureInfo.InvariantCulture) },
        Spec = new V1PersistentVolumeClaimSpec
        {
            DataSource = source.Length == 0 ? null : new V1TypedLocalObjectReference { Kind = "VolumeSnapshot", Name = source },
        },
    };

    private static IEnumerable<string> SourceOf(V1PersistentVolumeClaim c) =>
        c.Spec?.DataSource?.Name is { Length: > 0 } s ? [c.Metadata.NamespaceProperty + "/" + s] : [];

    private sealed class FakeApi
    {
        public List<V1PersistentVolumeClaim> Items { get; } = [];

        public Channel<(WatchEventType, V1PersistentVolumeClaim)> Events { get; } = Channel.CreateUnbounded<(WatchEventType, V1PersistentVolumeClaim)>();

        public Task<(IList<V1PersistentVolumeClaim>, string)> List(CancellationToken ct)
        {
            lock (Items)
            {
                return Task.FromResult<(IList<V1PersistentVolumeClaim>, string)>(([.. Items], "1"));
            }
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

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    [InlineData(4)]
    [InlineData(5)]
    public async Task EveryIndex_AnswersWhatAWalkOverTheCacheWould(int seed)
    {
        var random = new Random(seed);
        var api = new FakeApi();
        long rv = 1;
        int uids = 0;

        // The server's truth, by key: what the watch and the relists report.
        var truth = new Dictionary<string, V1PersistentVolumeClaim>(StringComparer.Ordinal);
        for (int i = 0; i < 20; i++)
        {
            var c = Claim(Namespaces[random.Next(3)], "c" + random.Next(12), "u" + ++uids, ++rv, Sources[random.Next(4)]);
            truth[c.Metadata.NamespaceProperty + "/" + c.Metadata.Name] = c;
        }

        api.Items.AddRange(truth.Values);
        var informer = new Informer<V1PersistentVolumeClaim>("PersistentVolumeClaim", api.List, api.Watch, NullLogger.Instance);
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(Ct);
        var run = informer.RunAsync(stop.Token);
        await informer.Synced.WaitAsync(TimeSpan.FromSeconds(60), Ct);

        // Added after the first list: built from what is cached.
        informer.AddIndex(BySource, SourceOf);
        Check(informer);
        Assert.Throws<ArgumentException>(() => informer.AddIndex(BySource, SourceOf));
        Assert.Throws<ArgumentException>(() => informer.ByIndex("no-such-index", "x"));

        for (int step = 0; step < 150; step++)
        {
            string ns = Namespaces[random.Next(3)];
            string name = "c" + random.Next(12);
            string key = ns + "/" + name;
            truth.TryGetValue(key, out var current);
            switch (random.Next(5))
            {
                case 0 or 1:
                    // A change through the watch: a new object, or a new version with another source.
                    var next = Claim(ns, name, current?.Metadata.Uid ?? "u" + ++uids, ++rv, Sources[random.Next(4)]);
                    truth[key] = next;
                    await api.Events.Writer.WriteAsync((current is null ? WatchEventType.Added : WatchEventType.Modified, next), Ct);
                    break;
                case 2 when current is not null:
                    truth.Remove(key);
                    await api.Events.Writer.WriteAsync((WatchEventType.Deleted, Claim(ns, name, current.Metadata.Uid, ++rv, "")), Ct);
                    break;
                case 3 when current is not null:
                    // A controller's own write, in the cache before the watch brings it.
                    var written = Claim(ns, name, current.Metadata.Uid, ++rv, Sources[random.Next(4)]);
                    truth[key] = written;
                    informer.Remember(written);
                    await api.Events.Writer.WriteAsync((WatchEventType.Modified, written), Ct);
                    break;
                case 4 when random.Next(4) == 0:
                    // The watch expires: a relist replaces the cache (dropping what vanished meanwhile).
                    lock (api.Items)
                    {
                        api.Items.Clear();
                        api.Items.AddRange(truth.Values);
                    }

                    await api.Events.Writer.WriteAsync((WatchEventType.Error, Claim("", "", "", 0, "")), Ct);
                    break;
                default:
                    break;
            }

            await Settled(informer, truth);
            Check(informer);
        }

        await stop.CancelAsync();
        await run;
    }

    /// <summary>Waits until the cache holds exactly the server's objects at their versions.</summary>
    private static async Task Settled(Informer<V1PersistentVolumeClaim> informer, Dictionary<string, V1PersistentVolumeClaim> truth)
    {
        bool Same() =>
            informer.List().Count() == truth.Count
            && truth.All(t => informer.Get(t.Key)?.Metadata.ResourceVersion == t.Value.Metadata.ResourceVersion);

        // A deadline, not a count of short sleeps (1000 sleeps of 5 ms is seconds, which a busy machine can exceed).
        var deadline = DateTime.UtcNow.AddSeconds(60);
        while (!Same() && DateTime.UtcNow < deadline)
        {
            await Task.Delay(5, Ct);
        }

        Assert.True(Same(), $"the informer never caught up with the server's objects: it holds {informer.List().Count()} of {truth.Count}, {truth.Count(t => informer.Get(t.Key)?.Metadata.ResourceVersion != t.Value.Metadata.ResourceVersion)} at another version");
    }

    private static void Check(Informer<V1PersistentVolumeClaim> informer)
    {
        var all = informer.List().ToList();
        foreach (string ns in Namespaces)
        {
            Assert.Equal(
                Keys(all.Where(c => c.Metadata.NamespaceProperty == ns)),
                Keys(informer.InNamespace(ns)));
            foreach (string source in Sources.Where(s => s.Length > 0))
            {
                string value = ns + "/" + source;
                Assert.Equal(Keys(all.Where(c => SourceOf(c).Contains(value))), Keys(informer.ByIndex(BySource, value)));
            }
        }
    }

    private static List<string> Keys(IEnumerable<V1PersistentVolumeClaim> claims) =>
        [.. claims.Select(c => c.Metadata.NamespaceProperty + "/" + c.Metadata.Name + "@" + c.Metadata.ResourceVersion).Order(StringComparer.Ordinal)];
}
