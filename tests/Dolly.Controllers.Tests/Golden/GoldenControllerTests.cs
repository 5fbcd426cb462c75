using Dolly.Controllers.Golden;
using Dolly.Controllers.Model;
using k8s;
using k8s.Models;
using Microsoft.Extensions.Time.Testing;

namespace Dolly.Controllers.Tests.Golden;

/// <summary>
/// GoldenSnapshots on the embedded stack (API server, controllers, CSI driver over a real pool): publishing from a
/// claim to opted-in namespaces only, the data restored there, namespaces joining and leaving, a second revision,
/// detached OnNextAttach consumers refreshed at once (not in a namespace that left), retirement only after the last holder lets go, the schedule on a fake
/// clock, conflicts with a user's objects, and a source deleted after publishing.
/// </summary>
public sealed class GoldenControllerTests : IAsyncLifetime
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    private readonly FakeTimeProvider _clock = new(new DateTimeOffset(2026, 12, 7, 10, 30, 0, TimeSpan.Zero));
    private ControllerHarness? _h;
    private GoldenStack? _g;

    private GoldenStack G => _g!;

    public async ValueTask InitializeAsync()
    {
        _h = await ControllerHarness.StartAsync("golden", Ct, time: _clock);
        _g = new GoldenStack(_h);
    }

    public async ValueTask DisposeAsync()
    {
        if (_h is not null)
        {
            await _h.DisposeAsync();
        }
    }

    [Fact]
    public async Task FromClaim_PublishesToOptedInNamespacesOnly_RollsOver_AndRetiresOnlyWhenNothingHolds()
    {
        await G.NamespaceAsync("prod");
        var source = await G.ClaimWithDataAsync("prod", "db", 0x11);
        foreach (string ns in new[] { "sandbox-a", "sandbox-b" })
        {
            await G.NamespaceAsync(ns, new() { ["golden"] = "yes" });
        }

        await G.NamespaceAsync("listed");
        await G.NamespaceAsync("other", new() { ["golden"] = "no" });
        await G.CreateGoldenAsync("prod-db", new
        {
            source = new { persistentVolumeClaim = new { @namespace = "prod", name = "db" } },
            namespaceSelector = new { matchLabels = new Dictionary<string, string> { ["golden"] = "yes" } },
            namespaces = new[] { "listed" },
            snapshotName = "prod-db",
            claim = new { name = "db", storageClassName = "dolly", refreshPolicy = "OnNextAttach" },
            revisionHistoryLimit = 1,
        });

        // Revision 1 everywhere that opted in: ready snapshots, a bound claim holding the source's data.
        string[] targets = ["listed", "sandbox-a", "sandbox-b"];
        var g = await G.StatusAsync("prod-db", x => x.Status is { CurrentRevision: 1, Ready: "3/3" } s && s.Namespaces!.All(n => n.ClaimPhase == "Bound"), "revision 1 ready in 3 namespaces with bound claims");
        Assert.Equal("True", GoldenStack.Condition(g, GoldenNames.Ready)!.Status);
        Assert.Equal("False", GoldenStack.Condition(g, GoldenNames.Progressing)!.Status);
        Assert.Equal(targets, g.Status!.Namespaces!.Select(n => n.Name));
        Assert.All(g.Status.Namespaces!, n => Assert.Equal((1, true, 1), (n.Revision!.Value, n.SnapshotReady, n.ClaimRevision!.Value)));
        Assert.Equal("PersistentVolumeClaim prod/db", g.Status.Source);
        Assert.Equal(3, g.Status.NamespaceCount);
        var r1 = Assert.Single(g.Status.Revisions!);
        Assert.Equal("prod/golden-prod-db-r1", r1.Origin);
        Assert.Equal("64Mi", r1.RestoreSize!.ToString());
        foreach (string ns in targets)
        {
            Assert.Equal(0x11, await G.FirstByteAsync(ns, "db"));
            Assert.Equal(["PersistentVolumeClaim/db", "VolumeSnapshot/prod-db", "VolumeSnapshot/prod-db-r1"], await G.ObjectsInAsync(ns, "prod-db"));
        }

        Assert.Empty(await G.ObjectsInAsync("other", "prod-db"));
        Assert.Empty(await G.ObjectsInAsync("default", "prod-db"));

        // Each content is Retain, of the one driver snapshot, and bound to exactly one VolumeSnapshot of its namespace.
        var contents = await G.ContentsAsync(GoldenNames.GoldenLabel + "=prod-db");
        Assert.Equal(6, contents.Count);
        Assert.All(contents, c => Assert.Equal(("Retain", r1.SnapshotHandle), (c.Spec.DeletionPolicy, c.Spec.Source.SnapshotHandle)));
        Assert.Equal(6, contents.Select(c => c.Spec.VolumeSnapshotRef.NamespaceProperty + "/" + c.Spec.VolumeSnapshotRef.Name).Distinct().Count());
        Assert.Equal(targets.Order(StringComparer.Ordinal), contents.Select(c => c.Spec.VolumeSnapshotRef.NamespaceProperty).Distinct().Order(StringComparer.Ordinal));

        // A namespace that opts in later gets it; one that stops opting in keeps what it has.
        await G.LabelNamespaceAsync("other", "golden", "yes");
        await G.LabelNamespaceAsync("sandbox-b", "golden", null);
        g = await G.StatusAsync("prod-db", x => x.Status is { Ready: "3/3" } s && s.Namespaces!.Any(n => n.Name == "other" && n.ClaimPhase == "Bound"), "other opted in, sandbox-b left");
        var left = g.Status!.Namespaces!.Single(n => n.Name == "sandbox-b");
        Assert.StartsWith("no longer opted in", left.Message, StringComparison.Ordinal);
        Assert.Equal(3, (await G.ObjectsInAsync("sandbox-b", "prod-db")).Count);

        // Revision 2 on publish-now: every opted-in namespace moves; sandbox-b stays on 1. The OnNextAttach claims of
        // the opted-in namespaces are not attached, so they take revision 2 at once; sandbox-b's claim is never
        // refreshed (its namespace left) and holds revision 1 (the history limit alone would retire it).
        await G.WriteAsync(source, 0x22);
        await G.PatchGoldenAsync("prod-db", new { metadata = new { annotations = new Dictionary<string, string> { [GoldenNames.PublishNowAnnotation] = "1" } } });
        g = await G.StatusAsync("prod-db", x => x.Status is { CurrentRevision: 2, Ready: "3/3" } s && s.Namespaces!.Count(n => n.ClaimRevision == 2) == 3 && GoldenStack.Condition(x, GoldenNames.Progressing)?.Status == "False", "revision 2 everywhere, the claims refreshed");
        Assert.Equal(["listed", "other", "sandbox-a", "sandbox-b"], g.Status!.Namespaces!.Select(n => n.Name));
        Assert.Equal([2, 2, 2, 1], g.Status.Namespaces!.Select(n => n.Revision!.Value));
        Assert.Equal([2, 2, 2, 1], g.Status.Namespaces!.Select(n => n.ClaimRevision!.Value));
        Assert.All(g.Status.Namespaces!, n => Assert.Null(n.RefreshPending));
        Assert.Equal(0x11, await G.FirstByteAsync("sandbox-b", "db"));
        foreach (string ns in new[] { "listed", "other", "sandbox-a" })
        {
            Assert.Equal(0x22, await G.FirstByteAsync(ns, "db"));
            var refreshed = await G.K.CoreV1.ReadNamespacedPersistentVolumeClaimAsync("db", ns, cancellationToken: Ct);
            Assert.False(refreshed.Metadata.Annotations.ContainsKey(GoldenNames.RefreshRequestAnnotation));
        }

        Assert.Equal(3, (await G.EventsAsync("prod-db")).Count(e => e.Reason == "Refreshed" && e.Message.EndsWith(" now holds revision 2", StringComparison.Ordinal)));
        var held = g.Status.Revisions!.Single(r => r.Revision == 1).HeldBy!;
        Assert.Equal(["namespace sandbox-b keeps it (no longer opted in, or being deleted)", "not yet refreshed: claim sandbox-b/db"], held);
        Assert.Equal(["2", "1"], g.Status.Revisions!.Select(r => r.Revision.ToString(System.Globalization.CultureInfo.InvariantCulture)));
        foreach (string ns in new[] { "listed", "other", "sandbox-a" })
        {
            Assert.Equal(GoldenObjects.ContentName("prod-db", 2, ns, GoldenSlot.Current), (await G.SnapshotAsync(ns, "prod-db"))!.Spec.Source.VolumeSnapshotContentName);
            Assert.NotNull(await G.SnapshotAsync(ns, "prod-db-r1"));
        }

        // A new consumer restores revision 2's data from snapshotName; its claim records the revision.
        var fresh = DriverStack.Claim("fresh", "64Mi", new V1TypedLocalObjectReference { ApiGroup = Names.SnapshotGroup, Kind = "VolumeSnapshot", Name = "prod-db" });
        await G.K.CoreV1.CreateNamespacedPersistentVolumeClaimAsync(fresh, "sandbox-a", cancellationToken: Ct);
        await Eventually.Until(async () => await G.K.CoreV1.ReadNamespacedPersistentVolumeClaimAsync("fresh", "sandbox-a", cancellationToken: Ct) is { Status.Phase: "Bound" } c && c.Metadata.Annotations?[GoldenNames.ClaimRevisionAnnotation] == "2", "the new consumer bound and stamped with revision 2");
        Assert.Equal(0x22, await G.FirstByteAsync("sandbox-a", "fresh"));

        // A spec.claim claim deleted in an opted-in namespace is made again, from the current revision.
        foreach (string ns in new[] { "listed", "other", "sandbox-a" })
        {
            var before = await G.K.CoreV1.ReadNamespacedPersistentVolumeClaimAsync("db", ns, cancellationToken: Ct);
            await G.K.CoreV1.DeleteNamespacedPersistentVolumeClaimAsync("db", ns, cancellationToken: Ct);
            await Eventually.Until(
                async () => (await G.K.CoreV1.ListNamespacedPersistentVolumeClaimAsync(ns, cancellationToken: Ct)).Items.FirstOrDefault(c => c.Metadata.Name == "db") is { Status.Phase: "Bound" } c
                    && c.Metadata.Uid != before.Metadata.Uid && c.Metadata.Annotations?[GoldenNames.ClaimRevisionAnnotation] == "2",
                $"claim {ns}/db made again on revision 2");
        }

        // Holders let go one by one; revision 1 goes only after the last.
        g = await G.StatusAsync("prod-db", x => x.Status!.Revisions!.Single(r => r.Revision == 1).HeldBy!.Count == 2 && x.Status.Namespaces!.All(n => n.ClaimPhase == "Bound" && n.ClaimRevision == (n.Name == "sandbox-b" ? 1 : 2)), "only sandbox-b holds revision 1");
        Assert.Equal(["namespace sandbox-b keeps it (no longer opted in, or being deleted)", "not yet refreshed: claim sandbox-b/db"], g.Status!.Revisions!.Single(r => r.Revision == 1).HeldBy);
        Assert.Equal([2, 2, 2, 1], g.Status.Namespaces!.Select(n => n.ClaimRevision!.Value));
        Assert.Equal(0x22, await G.FirstByteAsync("listed", "db"));
        Assert.NotNull(await G.SnapshotAsync("prod", "golden-prod-db-r1"));

        await G.K.CoreV1.DeleteNamespacedPersistentVolumeClaimAsync("db", "sandbox-b", cancellationToken: Ct);
        g = await G.StatusAsync("prod-db", x => x.Status!.Revisions!.Single(r => r.Revision == 1).HeldBy is [_], "the claim in sandbox-b let go");
        Assert.Equal(["VolumeSnapshot/prod-db", "VolumeSnapshot/prod-db-r1"], await G.ObjectsInAsync("sandbox-b", "prod-db"));
        foreach (var s in await G.SnapshotsAsync("sandbox-b", GoldenNames.GoldenLabel + "=prod-db"))
        {
            await G.K.CustomObjects.DeleteNamespacedCustomObjectAsync(Names.SnapshotGroup, "v1", "sandbox-b", "volumesnapshots", s.Metadata.Name, cancellationToken: Ct);
        }

        g = await G.StatusAsync("prod-db", x => x.Status!.Revisions is [{ Revision: 2 }], "revision 1 retired");
        await Eventually.Until(async () => (await G.SnapshotsAsync(null, GoldenNames.RevisionLabel + "=1")).Count == 0 && (await G.ContentsAsync(GoldenNames.RevisionLabel + "=1")).Count == 0, "revision 1's snapshots, contents and origin gone");
        Assert.Contains(await G.EventsAsync("prod-db"), e => e.Reason == "Retired" && e.Message.StartsWith("revision 1 retired", StringComparison.Ordinal));
        Assert.Contains(await G.EventsAsync("prod-db"), e => e.Reason == "Published" && e.Message.StartsWith("revision 2 ", StringComparison.Ordinal));
        Assert.Equal(0x22, await G.FirstByteAsync("sandbox-a", "fresh"));
    }

    [Fact]
    public async Task Schedule_CutsRevisionsOnTime_InItsTimeZone()
    {
        await G.NamespaceAsync("prod");
        await G.ClaimWithDataAsync("prod", "db", 0x33);
        await G.NamespaceAsync("dev");
        await G.CreateGoldenAsync("nightly", new
        {
            source = new { persistentVolumeClaim = new { @namespace = "prod", name = "db" } },
            schedule = "0 3 * * *",
            timeZone = "Europe/Berlin",
            namespaces = new[] { "dev" },
            snapshotName = "nightly",
        });
        var g = await G.StatusAsync("nightly", x => x.Status is { CurrentRevision: 1, Ready: "1/1" }, "revision 1 on create");
        var expected = new DateTime(2026, 12, 8, 2, 0, 0, DateTimeKind.Utc);
        Assert.Equal(expected, g.Status!.NextPublish);

        _clock.AdjustTime(new DateTimeOffset(expected.AddMinutes(1)));
        await G.PatchGoldenAsync("nightly", new { metadata = new { annotations = new Dictionary<string, string> { ["test/touch"] = "1" } } });
        g = await G.StatusAsync("nightly", x => x.Status is { CurrentRevision: 2, Ready: "1/1" }, "revision 2 at 03:00 Berlin");
        Assert.Equal(expected.AddDays(1), g.Status!.NextPublish);
    }

    [Fact]
    public async Task UsersObjects_AreNeverOverwrittenNorAdopted_ConflictReportedPerNamespace()
    {
        await G.NamespaceAsync("prod");
        await G.ClaimWithDataAsync("prod", "db", 0x44);
        await G.CreateSnapshotAsync("prod", "base", "db");
        await G.NamespaceAsync("mine");
        await G.NamespaceAsync("clean");
        await G.ClaimWithDataAsync("mine", "data", 0x55);
        await G.CreateSnapshotAsync("mine", "golden", "data");
        var users = await Eventually.Until(async () => await G.SnapshotAsync("mine", "golden") is { Status.ReadyToUse: true } s ? s : null, "the user's snapshot ready");
        await G.CreateGoldenAsync("base", new
        {
            source = new { volumeSnapshot = new { @namespace = "prod", name = "base" } },
            namespaces = new[] { "mine", "clean" },
            snapshotName = "golden",
            claim = new { name = "data", storageClassName = "dolly" },
        });
        var g = await G.StatusAsync("base", x => x.Status?.Namespaces?.FirstOrDefault(n => n.Name == "mine")?.Message is not null && x.Status.Namespaces.Any(n => n.Name == "clean" && n.ClaimPhase == "Bound"), "a conflict in mine, clean published");
        var mine = g.Status!.Namespaces!.Single(n => n.Name == "mine");
        Assert.Equal(
            "VolumeSnapshot mine/golden already exists and was not made by this golden snapshot: it is left alone; PersistentVolumeClaim mine/data already exists and was not made by this golden snapshot: it is left alone",
            mine.Message);
        Assert.Equal(("False", "Conflict"), (GoldenStack.Condition(g, GoldenNames.Ready)!.Status, GoldenStack.Condition(g, GoldenNames.Ready)!.Reason));
        Assert.Equal("1/2", g.Status.Ready);
        var after = await G.SnapshotAsync("mine", "golden");
        Assert.Equal((users.Metadata.Uid, users.Metadata.ResourceVersion), (after!.Metadata.Uid, after.Metadata.ResourceVersion));
        Assert.Equal(0x55, await G.FirstByteAsync("mine", "data"));
        Assert.Equal(0x44, await G.FirstByteAsync("clean", "data"));
        Assert.Contains(await G.EventsAsync("base"), e => e.Type == "Warning" && e.Reason == "Conflict" && e.Message.StartsWith("namespace mine: VolumeSnapshot mine/golden already exists", StringComparison.Ordinal));

        // The user removes their objects: the namespace gets the golden snapshot.
        await G.K.CustomObjects.DeleteNamespacedCustomObjectAsync(Names.SnapshotGroup, "v1", "mine", "volumesnapshots", "golden", cancellationToken: Ct);
        await G.K.CoreV1.DeleteNamespacedPersistentVolumeClaimAsync("data", "mine", cancellationToken: Ct);
        g = await G.StatusAsync("base", x => x.Status is { Ready: "2/2" } && GoldenStack.Condition(x, GoldenNames.Ready)?.Status == "True", "published to both once the way is clear", seconds: 60);
        Assert.Equal((byte?)0x44, await Eventually.Until(async () => await G.K.CoreV1.ReadNamespacedPersistentVolumeClaimAsync("data", "mine", cancellationToken: Ct) is { Status.Phase: "Bound" } ? await G.FirstByteAsync("mine", "data") : (byte?)null, "mine's claim restored"));
    }

    [Fact]
    public async Task SourceDeletedAfterPublishing_RevisionsKeepTheirData_UntilRetired()
    {
        await G.NamespaceAsync("prod");
        await G.ClaimWithDataAsync("prod", "db", 0x66);
        await G.CreateSnapshotAsync("prod", "base", "db");
        await G.NamespaceAsync("dev");
        await G.CreateGoldenAsync("kept", new { source = new { volumeSnapshot = new { @namespace = "prod", name = "base" } }, namespaces = new[] { "dev" }, snapshotName = "base" });
        await G.StatusAsync("kept", x => x.Status is { CurrentRevision: 1, Ready: "1/1" }, "published");
        Assert.Contains(GoldenNames.SourceFinalizer, (await G.SnapshotAsync("prod", "base"))!.Metadata.Finalizers);

        await G.K.CustomObjects.DeleteNamespacedCustomObjectAsync(Names.SnapshotGroup, "v1", "prod", "volumesnapshots", "base", cancellationToken: Ct);
        var g = await G.StatusAsync("kept", x => GoldenStack.Condition(x, GoldenNames.Ready)?.Reason == "SourceDeleted", "the deleted source reported");
        Assert.Contains("was deleted after publishing: the published revisions keep their data", GoldenStack.Condition(g, GoldenNames.Ready)!.Message, StringComparison.Ordinal);
        Assert.Contains(await G.EventsAsync("kept"), e => e.Type == "Warning" && e.Reason == "SourceDeleted");

        // The data is still there to restore from.
        var copy = DriverStack.Claim("copy", "64Mi", new V1TypedLocalObjectReference { ApiGroup = Names.SnapshotGroup, Kind = "VolumeSnapshot", Name = "base" });
        await G.K.CoreV1.CreateNamespacedPersistentVolumeClaimAsync(copy, "dev", cancellationToken: Ct);
        await Eventually.Until(async () => (await G.K.CoreV1.ReadNamespacedPersistentVolumeClaimAsync("copy", "dev", cancellationToken: Ct)).Status?.Phase == "Bound", "restored after the source was deleted");
        Assert.Equal(0x66, await G.FirstByteAsync("dev", "copy"));

        // Deleting the golden snapshot lets go of the source, whose deletion completes; what was published stays.
        await G.K.CustomObjects.DeleteClusterCustomObjectAsync(GoldenNames.Group, GoldenNames.Version, GoldenNames.Plural, "kept", cancellationToken: Ct);
        await Eventually.Until(async () => await G.SnapshotAsync("prod", "base") is null, "the source's deletion completed");
        Assert.Equal(["VolumeSnapshot/base", "VolumeSnapshot/base-r1"], await G.ObjectsInAsync("dev", "kept"));
    }
}
