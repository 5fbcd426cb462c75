using System.Globalization;
using Dolly.Controllers.Model;
using Dolly.Controllers.Runtime;
using Dolly.Controllers.Schedules;
using k8s;
using k8s.Models;
using Microsoft.Extensions.Logging.Abstractions;

namespace Dolly.Controllers.Tests;

/// <summary>
/// The group snapshot and schedule controllers' event handlers against a fake cluster (caches fed through
/// <see cref="Informer{T}.Deliver"/>, no API server): an event queues exactly the objects it concerns, found through an
/// index, and no handler walks a cache, however many unrelated objects the cluster holds.
/// </summary>
public sealed class IndexedLookupTests : IDisposable
{
    private const int Namespaces = 40;
    private const int GroupsPerNamespace = 25;

    private readonly Kubernetes _client = new(new KubernetesClientConfiguration { Host = "http://127.0.0.1:9" });
    private readonly Grpc.Net.Client.GrpcChannel _csi = DollyControllers.ConnectCsi("/nonexistent/dolly-csi.sock");
    private readonly Cluster _cluster;
    private readonly ControllerContext _context;
    private long _rv;

    public IndexedLookupTests()
    {
        _cluster = new Cluster(_client, NullLoggerFactory.Instance);
        var events = new EventRecorder(_client, "test", "test", NullLogger.Instance);
        _context = new ControllerContext(_cluster, events, _csi.CreateCallInvoker(), new ControllerOptions(), NullLoggerFactory.Instance);
    }

    public void Dispose()
    {
        _client.Dispose();
        _csi.Dispose();
    }

    private string Rv() => (++_rv).ToString(CultureInfo.InvariantCulture);

    private static string Ns(int i) => "ns-" + i.ToString(CultureInfo.InvariantCulture);

    private VolumeGroupSnapshot Group(string ns, string name, string? className, string? bound) => new()
    {
        Metadata = new V1ObjectMeta { Name = name, NamespaceProperty = ns, Uid = ns + "-" + name, ResourceVersion = Rv() },
        Spec = new VolumeGroupSnapshotSpec
        {
            Source = new VolumeGroupSnapshotSource { Selector = new V1LabelSelector { MatchLabels = new Dictionary<string, string> { ["app"] = name } } },
            VolumeGroupSnapshotClassName = className,
        },
        Status = bound is null ? null : new VolumeGroupSnapshotStatus { BoundVolumeGroupSnapshotContentName = bound },
    };

    /// <summary>
    /// Many group snapshots in many namespaces: per namespace, one bound, some naming class "fast", "slow", or
    /// none (the driver's default). Returns the keys, by what they are.
    /// </summary>
    private List<VolumeGroupSnapshot> SeedGroups()
    {
        var all = new List<VolumeGroupSnapshot>();
        for (int n = 0; n < Namespaces; n++)
        {
            for (int g = 0; g < GroupsPerNamespace; g++)
            {
                string? cls = (g % 3) switch { 0 => null, 1 => "fast", _ => "slow" };
                var group = Group(Ns(n), "g" + g.ToString(CultureInfo.InvariantCulture), cls, g == 0 ? "groupcontent-" + Ns(n) : null);
                _cluster.GroupSnapshots.Deliver(WatchEventType.Added, group);
                all.Add(group);
            }
        }

        return all;
    }

    private static async Task<List<string>> Drain<TKey>(WorkQueue<TKey> queue)
        where TKey : notnull
    {
        var keys = new List<string>();
        while (queue.Count > 0)
        {
            var key = await queue.TakeAsync(TestContext.Current.CancellationToken);
            queue.Done(key);
            keys.Add(key.ToString()!);
        }

        keys.Sort(StringComparer.Ordinal);
        return keys;
    }

    private long Walks() =>
        _cluster.Claims.Walks + _cluster.Volumes.Walks + _cluster.Snapshots.Walks + _cluster.Contents.Walks + _cluster.GroupSnapshots.Walks
        + _cluster.GroupContents.Walks + _cluster.GroupClasses.Walks + _cluster.SnapshotClasses.Walks + _cluster.Schedules.Walks
        + _cluster.ClusterSchedules.Walks + _cluster.Namespaces.Walks;

    [Fact]
    public async Task ClaimEvent_QueuesOnlyTheUnboundGroupSnapshotsOfItsNamespace_WithoutAWalk()
    {
        var groups = SeedGroups();
        var controller = new GroupSnapshotController(_context);
        long before = Walks();

        var claim = new V1PersistentVolumeClaim { Metadata = new V1ObjectMeta { Name = "db", NamespaceProperty = Ns(7), Uid = "claim-db", ResourceVersion = Rv() } };
        _cluster.Claims.Deliver(WatchEventType.Added, claim);

        var expected = groups.Where(g => g.Metadata.NamespaceProperty == Ns(7) && g.Status is null).Select(g => Ns(7) + "/" + g.Metadata.Name).Order(StringComparer.Ordinal).ToList();
        Assert.Equal(GroupsPerNamespace - 1, expected.Count);
        Assert.Equal(expected, await Drain(controller.Queue));
        Assert.Equal(before, Walks());
    }

    [Fact]
    public async Task GroupSnapshotBinding_LeavesTheUnboundIndex_SoLaterClaimEventsSkipIt()
    {
        SeedGroups();
        var controller = new GroupSnapshotController(_context);
        var bound = Group(Ns(3), "g1", "fast", "groupcontent-x");
        _cluster.GroupSnapshots.Deliver(WatchEventType.Modified, bound);
        Assert.Equal([Ns(3) + "/g1"], await Drain(controller.Queue));

        _cluster.Claims.Deliver(WatchEventType.Added, new V1PersistentVolumeClaim { Metadata = new V1ObjectMeta { Name = "c", NamespaceProperty = Ns(3), Uid = "claim-c", ResourceVersion = Rv() } });
        var queued = await Drain(controller.Queue);
        Assert.Equal(GroupsPerNamespace - 2, queued.Count);
        Assert.DoesNotContain(Ns(3) + "/g1", queued);
        Assert.DoesNotContain(Ns(3) + "/g0", queued);
    }

    [Theory]
    [InlineData("fast")]
    [InlineData("slow")]
    [InlineData("unnamed")]
    public async Task GroupClassEvent_QueuesOnlyUnboundGroupSnapshotsNamingItOrTheDefault_WithoutAWalk(string className)
    {
        var groups = SeedGroups();
        var controller = new GroupSnapshotController(_context);
        long before = Walks();

        var cls = new VolumeGroupSnapshotClass
        {
            Metadata = new V1ObjectMeta
            {
                Name = className,
                Uid = "class-" + className,
                ResourceVersion = Rv(),
                Annotations = new Dictionary<string, string> { [GroupNames.DefaultClassAnnotation] = "true" },
            },
            Driver = "csi.dolly.io",
        };
        _cluster.GroupClasses.Deliver(WatchEventType.Added, cls);

        var expected = groups
            .Where(g => g.Status is null && (g.Spec.VolumeGroupSnapshotClassName is null || g.Spec.VolumeGroupSnapshotClassName == className))
            .Select(g => g.Metadata.NamespaceProperty + "/" + g.Metadata.Name).Order(StringComparer.Ordinal).ToList();
        Assert.Equal(expected, await Drain(controller.Queue));
        Assert.Equal(before, Walks());

        // Deleting the class concerns the same group snapshots.
        _cluster.GroupClasses.Deliver(WatchEventType.Deleted, cls);
        Assert.Equal(expected, await Drain(controller.Queue));
        Assert.Equal(before, Walks());
    }

    [Fact]
    public void DefaultGroupClassIndex_FollowsTheAnnotationAndDriver()
    {
        VolumeGroupSnapshotClass Class(string name, string driver, string? isDefault) => new()
        {
            Metadata = new V1ObjectMeta
            {
                Name = name,
                Uid = "uid-" + name,
                ResourceVersion = Rv(),
                Annotations = isDefault is null ? null : new Dictionary<string, string> { [GroupNames.DefaultClassAnnotation] = isDefault },
            },
            Driver = driver,
        };

        _cluster.GroupClasses.Deliver(WatchEventType.Added, Class("a", "csi.dolly.io", "true"));
        _cluster.GroupClasses.Deliver(WatchEventType.Added, Class("b", "csi.dolly.io", "false"));
        _cluster.GroupClasses.Deliver(WatchEventType.Added, Class("c", "other.example.com", "true"));
        _cluster.GroupClasses.Deliver(WatchEventType.Added, Class("d", "csi.dolly.io", null));
        string Defaults(string driver) => string.Join(',', _cluster.GroupClasses.ByIndex(Indexes.DefaultGroupClassByDriver, driver).Select(c => c.Metadata.Name).Order(StringComparer.Ordinal));
        Assert.Equal("a", Defaults("csi.dolly.io"));
        Assert.Equal("c", Defaults("other.example.com"));

        // The annotation taken away (or put on) moves the class out of (or into) the index.
        _cluster.GroupClasses.Deliver(WatchEventType.Modified, Class("a", "csi.dolly.io", "false"));
        _cluster.GroupClasses.Deliver(WatchEventType.Modified, Class("d", "csi.dolly.io", "true"));
        Assert.Equal("d", Defaults("csi.dolly.io"));
    }

    [Fact]
    public void SnapshotsByOwnerUid_FindAGroupsMembersOnly()
    {
        VolumeSnapshot Snapshot(string ns, string name, params string[] owners) => new()
        {
            Metadata = new V1ObjectMeta
            {
                Name = name,
                NamespaceProperty = ns,
                Uid = "snap-" + ns + "-" + name,
                ResourceVersion = Rv(),
                OwnerReferences = [.. owners.Select(o => new V1OwnerReference { ApiVersion = GroupNames.ApiVersion, Kind = "VolumeGroupSnapshot", Name = o, Uid = "uid-" + o })],
            },
            Spec = new VolumeSnapshotSpec { Source = new VolumeSnapshotSource { PersistentVolumeClaimName = "x" } },
        };

        for (int i = 0; i < 500; i++)
        {
            _cluster.Snapshots.Deliver(WatchEventType.Added, Snapshot(Ns(i % Namespaces), "s" + i.ToString(CultureInfo.InvariantCulture), "other-" + (i % 7).ToString(CultureInfo.InvariantCulture)));
        }

        _cluster.Snapshots.Deliver(WatchEventType.Added, Snapshot("a", "m1", "g"));
        _cluster.Snapshots.Deliver(WatchEventType.Added, Snapshot("a", "m2", "g", "someone"));
        _cluster.Snapshots.Deliver(WatchEventType.Added, Snapshot("a", "plain"));
        Assert.Equal(["m1", "m2"], _cluster.Snapshots.ByIndex(Indexes.SnapshotByOwnerUid, "uid-g").Select(s => s.Metadata.Name).Order(StringComparer.Ordinal));

        _cluster.Snapshots.Deliver(WatchEventType.Deleted, Snapshot("a", "m1", "g"));
        Assert.Equal(["m2"], _cluster.Snapshots.ByIndex(Indexes.SnapshotByOwnerUid, "uid-g").Select(s => s.Metadata.Name));
    }

    [Fact]
    public async Task SnapshotClassEvent_QueuesOnlyTheSchedulesNamingIt_WithoutAWalk()
    {
        SnapshotSchedule Schedule(string? ns, string name, string? className) => new()
        {
            Kind = ns is null ? ScheduleNames.ClusterKind : ScheduleNames.NamespacedKind,
            Metadata = new V1ObjectMeta { Name = name, NamespaceProperty = ns, Uid = "sched-" + ns + "-" + name, ResourceVersion = Rv() },
            Spec = new SnapshotScheduleSpec { Schedule = "0 * * * *", SnapshotClassName = className },
        };

        for (int i = 0; i < 300; i++)
        {
            string? cls = (i % 3) switch { 0 => null, 1 => "hourly-class", _ => "other" };
            _cluster.Schedules.Deliver(WatchEventType.Added, Schedule(Ns(i % Namespaces), "s" + i.ToString(CultureInfo.InvariantCulture), cls));
        }

        _cluster.ClusterSchedules.Deliver(WatchEventType.Added, Schedule(null, "everywhere", "hourly-class"));
        _cluster.ClusterSchedules.Deliver(WatchEventType.Added, Schedule(null, "elsewhere", "other"));
        var controller = new ScheduleController(_context);
        long before = Walks();

        _cluster.SnapshotClasses.Deliver(WatchEventType.Added, new VolumeSnapshotClass { Metadata = new V1ObjectMeta { Name = "hourly-class", Uid = "vsc", ResourceVersion = Rv() }, Driver = "csi.dolly.io" });

        var queued = await Drain(controller.Queue);
        Assert.Equal(101, queued.Count);
        Assert.Contains(queued, k => k.EndsWith(":everywhere", StringComparison.Ordinal));
        Assert.All(queued, k => Assert.True(
            k.EndsWith(":everywhere", StringComparison.Ordinal)
                || int.Parse(k[(k.LastIndexOf("/s", StringComparison.Ordinal) + 2)..], CultureInfo.InvariantCulture) % 3 == 1,
            $"{k} does not name the class"));
        Assert.Equal(before, Walks());
    }
}
