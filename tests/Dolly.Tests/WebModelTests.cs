using Dolly.Storage;
using Dolly.Web;

namespace Dolly.Tests;

/// <summary>
/// The web view's model against the pool it follows: after random creates, snapshots, clones, restores and
/// deletions (names reused too), the incrementally kept lineage and pages must equal what a fresh reading of
/// <see cref="Pool.ListDevices"/> gives, and the space shown is the engine's.
/// </summary>
public sealed class WebModelTests : CliTestBase
{
    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    public void AfterRandomChanges_TheIncrementalLineageEqualsOneBuiltFromScratch(int seed)
    {
        using var pool = Pool.Create(PoolDir).Value;
        var model = new WebModel(pool, TimeProvider.System);
        var random = new Random(seed);
        for (int step = 0; step < 300; step++)
        {
            var devices = pool.ListDevices();
            string name = "d" + random.Next(40);
            var existing = devices.FirstOrDefault(d => d.Name == name);
            int op = random.Next(4);
            if (existing is not null && op == 0)
            {
                pool.Delete(name).OrFail();
            }
            else if (existing is null && devices.Count > 0 && op >= 2)
            {
                var source = devices[random.Next(devices.Count)];
                (source.Kind == DeviceKind.Volume && op == 2 ? pool.CreateSnapshot(source.Name, name) : pool.Clone(source.Name, name)).OrFail();
            }
            else if (existing is null)
            {
                pool.CreateVolume(name, 1 << 20).OrFail();
            }

            long before = model.Version;
            bool changed = model.Refresh(sample: false);
            Assert.True(changed == (model.Version != before));
            if (step % 7 == 0 || step == 299)
            {
                Check(pool, model);
            }
        }
    }

    [Fact]
    public void WithoutAChangeInThePool_ARefreshChangesNothing_AndASampleIsKept()
    {
        using var pool = Pool.Create(PoolDir).Value;
        var model = new WebModel(pool, TimeProvider.System);
        Assert.True(model.Refresh(sample: false));
        long version = model.Version;
        Assert.False(model.Refresh(sample: false));
        Assert.Equal(version, model.Version);
        Assert.False(model.ChangedSince(version).IsCompleted);
        pool.CreateVolume("v", 1 << 20).OrFail();
        var waiting = model.ChangedSince(version);
        Assert.True(model.Refresh(sample: true));
        Assert.True(waiting.IsCompleted);
        var sample = Assert.Single(model.Samples());
        Assert.Equal(1 << 20, sample.Logical);
    }

    [Fact]
    public void TheSpaceSamples_KeepTheNewestHour_OldestFirst()
    {
        using var pool = Pool.Create(PoolDir).Value;
        var time = new Microsoft.Extensions.Time.Testing.FakeTimeProvider(DateTimeOffset.Parse("2026-01-01T00:00:00Z", System.Globalization.CultureInfo.InvariantCulture));
        var model = new WebModel(pool, time);
        for (int i = 0; i < WebModel.SampleCapacity + 10; i++)
        {
            model.Refresh(sample: true);
            time.Advance(TimeSpan.FromSeconds(5));
        }

        var samples = model.Samples();
        Assert.Equal(WebModel.SampleCapacity, samples.Count);
        Assert.Equal(time.Start.AddSeconds(5 * 10), samples[0].At);
        Assert.True(samples.Zip(samples.Skip(1)).All(p => p.First.At < p.Second.At));
    }

    private static void Check(Pool pool, WebModel model)
    {
        var devices = pool.ListDevices().ToDictionary(d => d.Name, StringComparer.Ordinal);
        string? Parent(DeviceInfo d) => d.SourceName is { } p && devices.ContainsKey(p) ? p : null;

        // Pages: every volume and snapshot, by name, with the engine's space.
        foreach (var kind in new[] { DeviceKind.Volume, DeviceKind.Snapshot })
        {
            var (page, total) = model.Page(kind, 0, 1000);
            Assert.Equal(devices.Values.Where(d => d.Kind == kind).Select(d => d.Name).Order(StringComparer.Ordinal), page.Select(d => d.Name));
            Assert.Equal(page.Count, total);
        }

        // Trees: one per root, each holding exactly the root's descendants, parents before children, depth one more than the parent's.
        var (trees, count) = model.Trees(0, 1000);
        Assert.Equal(devices.Values.Where(d => Parent(d) is null).Select(d => d.Name).Order(StringComparer.Ordinal), trees.Select(t => t.Nodes[0].Device.Name));
        Assert.Equal(trees.Count, count);
        Assert.Equal(devices.Keys.Order(StringComparer.Ordinal), trees.SelectMany(t => t.Nodes.Select(n => n.Device.Name)).Order(StringComparer.Ordinal));
        foreach (var tree in trees)
        {
            var depth = new Dictionary<string, int>(StringComparer.Ordinal);
            foreach (var (d, level) in tree.Nodes)
            {
                if (Parent(d) is { } p)
                {
                    Assert.True(depth.TryGetValue(p, out int parentLevel), $"{d.Name} comes before its source {p}");
                    Assert.Equal(parentLevel + 1, level);
                }
                else
                {
                    Assert.Equal(0, level);
                }

                depth[d.Name] = level;
                Assert.Equal(tree.Nodes[0].Device.Name, model.TreeContaining(d.Name)!.Nodes[0].Device.Name);
                var (snapshots, volumes) = model.ChildCounts(d.Name);
                Assert.Equal(devices.Values.Count(c => Parent(c) == d.Name && c.Kind == DeviceKind.Snapshot), snapshots);
                Assert.Equal(devices.Values.Count(c => Parent(c) == d.Name && c.Kind == DeviceKind.Volume), volumes);
                Assert.Equal(pool.GetSpace(d.Name).Value, model.Space(d.Name));
            }
        }
    }
}
