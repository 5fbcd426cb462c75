using Dolly.Controllers.Golden;
using k8s;

namespace Dolly.Controllers.Tests.Golden;

/// <summary>One stack for every bad-input case: a source claim with data and a ready snapshot of it, and two namespaces that opt in.</summary>
public sealed class GoldenBadInputFixture : IAsyncLifetime
{
    private ControllerHarness? _h;

    internal GoldenStack G { get; private set; } = null!;

    /// <summary>The driver handle of prod/base.</summary>
    public string Handle { get; private set; } = "";

    public async ValueTask InitializeAsync()
    {
        var ct = TestContext.Current.CancellationToken;
        _h = await ControllerHarness.StartAsync("golden-bad", ct);
        G = new GoldenStack(_h);
        await G.NamespaceAsync("prod");
        await G.ClaimWithDataAsync("prod", "db", 0x77);
        await G.CreateSnapshotAsync("prod", "base", "db");
        var ready = await Eventually.Until(async () => await G.SnapshotAsync("prod", "base") is { Status.ReadyToUse: true } s ? s : null, "prod/base ready");
        Handle = (await G.ContentsAsync()).Single(c => c.Metadata.Name == ready.Status!.BoundVolumeSnapshotContentName).Status!.SnapshotHandle!;
        await G.CreateSnapshotAsync("prod", "never-ready", "no-such-claim");
        await G.NamespaceAsync("team-a", new() { ["golden"] = "yes" });
        await G.NamespaceAsync("team-b", new() { ["golden"] = "yes" });
    }

    public async ValueTask DisposeAsync()
    {
        if (_h is not null)
        {
            await _h.DisposeAsync();
        }
    }
}

/// <summary>
/// Every bad input of a GoldenSnapshot gives Ready=False with a reason, a message naming the problem and a Warning
/// event, and nothing in any namespace; fixed, the same object publishes.
/// </summary>
public sealed class GoldenBadInputTests(GoldenBadInputFixture fx) : IClassFixture<GoldenBadInputFixture>
{
    private static readonly object Selector = new { matchLabels = new Dictionary<string, string> { ["golden"] = "yes" } };
    private static readonly object Base = new { volumeSnapshot = new { @namespace = "prod", name = "base" } };

    public static TheoryData<string, string, string> Cases => new()
    {
        { "both-sources", "InvalidSpec", "spec.source names 2 sources (volumeSnapshot, persistentVolumeClaim): give exactly one" },
        { "no-source", "InvalidSpec", "spec.source names no source: give exactly one of volumeSnapshot, persistentVolumeClaim or snapshotHandle" },
        { "bad-selector", "InvalidSpec", "spec.namespaceSelector.matchExpressions[golden] has operator \"Like\": it must be one of In, NotIn, Exists, DoesNotExist" },
        { "no-namespaces", "InvalidSpec", "neither spec.namespaceSelector nor spec.namespaces is set: name the namespaces that receive this golden snapshot" },
        { "schedule-not-claim", "InvalidSpec", "spec.schedule is set but the source is not a persistentVolumeClaim: only a claim can be snapshotted on a schedule" },
        { "bad-cron", "InvalidSpec", "spec.schedule \"every day\" is not a cron expression" },
        { "bad-zone", "InvalidSpec", "spec.timeZone \"Mars/Olympus\" is not a known IANA time zone" },
        { "bad-size", "InvalidSpec", "spec.claim.size \"ten gigs\" is not a positive quantity such as 10Gi" },
        { "bad-policy", "InvalidSpec", "spec.claim.refreshPolicy \"Sometimes\" is not one of Never, OnNextAttach" },
        { "bad-name", "InvalidSpec", "spec.snapshotName \"Base_Copy\" is not a name a VolumeSnapshot can have" },
        { "zero-history", "InvalidSpec", "spec.revisionHistoryLimit is 0: it must be at least 1 (the current revision)" },
        { "missing-snapshot", "SourceMissing", "the source VolumeSnapshot prod/nope does not exist" },
        { "unready-snapshot", "SourceNotReady", "the source VolumeSnapshot prod/never-ready is not ready to use" },
        { "missing-claim", "SourceMissing", "the source claim prod/nope does not exist" },
        { "other-driver", "SourceNotDolly", "spec.source.driver ebs.csi.aws.com is not Dolly's driver csi.dolly.io: only a Dolly snapshot can be published" },
        { "missing-handle", "SourceMissing", "snapshot handle snapshot-does-not-exist does not exist on driver csi.dolly.io" },
        { "selector-matches-nothing", "NoNamespaces", "no namespace opts in: spec.namespaceSelector matches no namespace and spec.namespaces names none that exists" },
        { "claim-too-small", "ClaimTooSmall", "spec.claim.size 1Mi is below the restoreSize 64Mi of revision 1: no claim is made until it is at least that" },
    };

    [Theory]
    [MemberData(nameof(Cases))]
    public async Task BadInput_IsReported_AndNothingIsCreated(string name, string reason, string message)
    {
        var g = fx.G;
        await g.CreateGoldenAsync(name, Spec(name));
        var golden = await g.StatusAsync(name, x => GoldenStack.Condition(x, GoldenNames.Ready) is { Status: "False" } c && c.Reason == reason, $"Ready=False {reason}");
        Assert.Contains(message, GoldenStack.Condition(golden, GoldenNames.Ready)!.Message, StringComparison.Ordinal);
        Assert.Equal(golden.Metadata.Generation, golden.Status!.ObservedGeneration);
        var warning = await Eventually.Until(async () => (await g.EventsAsync(name)).FirstOrDefault(e => e.Type == "Warning" && e.Reason == reason), $"the {reason} event");
        Assert.Contains(message, warning.Message, StringComparison.Ordinal);
        foreach (string ns in new[] { "team-a", "team-b", "prod", "default" })
        {
            var objects = await g.ObjectsInAsync(ns, name);
            Assert.True(reason == "ClaimTooSmall" ? objects.All(o => o.StartsWith("VolumeSnapshot/", StringComparison.Ordinal)) : objects.Count == 0, $"{ns}: {string.Join(", ", objects)}");
        }

        if (reason == "ClaimTooSmall")
        {
            // The snapshots are published all the same; only the claims wait for a size that fits.
            Assert.Equal(["VolumeSnapshot/" + name, "VolumeSnapshot/" + name + "-r1"], await g.ObjectsInAsync("team-a", name));
        }
    }

    [Fact]
    public async Task Fixed_ThePublishingStarts_AndTheProblemClears()
    {
        var g = fx.G;
        await g.CreateGoldenAsync("fixed-later", new { source = new { volumeSnapshot = new { @namespace = "prod", name = "base" } }, namespaceSelector = Selector, snapshotName = "fixed", claim = new { name = "fixed", storageClassName = "dolly", size = "1Mi" } });
        await g.StatusAsync("fixed-later", x => GoldenStack.Condition(x, GoldenNames.Ready)?.Reason == "ClaimTooSmall", "too small");
        await g.PatchGoldenAsync("fixed-later", new { spec = new { claim = new { size = "128Mi" } } });
        var golden = await g.StatusAsync("fixed-later", x => GoldenStack.Condition(x, GoldenNames.Ready)?.Status == "True" && x.Status!.Namespaces!.All(n => n.ClaimPhase == "Bound"), "published with claims", seconds: 60);
        Assert.Equal("2/2", golden.Status!.Ready);
        var claim = await g.K.CoreV1.ReadNamespacedPersistentVolumeClaimAsync("fixed", "team-a", cancellationToken: TestContext.Current.CancellationToken);
        Assert.Equal("128Mi", claim.Spec.Resources.Requests["storage"].ToString());
        Assert.Equal(0x77, await g.FirstByteAsync("team-b", "fixed"));
    }

    [Fact]
    public async Task NamespaceBeingDeleted_GetsNothingNew_AndIsReported()
    {
        var g = fx.G;
        var ct = TestContext.Current.CancellationToken;
        await g.NamespaceAsync("leaving");

        // A finalizer on something inside keeps the namespace Terminating for as long as the test needs.
        await g.K.CoreV1.CreateNamespacedConfigMapAsync(new k8s.Models.V1ConfigMap { Metadata = new k8s.Models.V1ObjectMeta { Name = "hold", Finalizers = ["test.dolly.io/hold"] } }, "leaving", cancellationToken: ct);
        await g.K.CoreV1.DeleteNamespaceAsync("leaving", cancellationToken: ct);
        await Eventually.Until(async () => (await g.K.CoreV1.ReadNamespaceAsync("leaving", cancellationToken: ct)).Status?.Phase == "Terminating", "leaving Terminating");
        try
        {
            await g.CreateGoldenAsync("to-leaving", new { source = Base, namespaces = new[] { "team-a", "leaving" }, snapshotName = "to-leaving" });
            var golden = await g.StatusAsync("to-leaving", x => x.Status?.Ready == "1/2" && x.Status.Namespaces?.Any(n => n.Name == "leaving" && n.Message is not null) == true, "leaving reported, team-a published");
            Assert.Equal("the namespace is being deleted: nothing new is published to it", golden.Status!.Namespaces!.Single(n => n.Name == "leaving").Message);
            Assert.Empty(await g.ObjectsInAsync("leaving", "to-leaving"));
            Assert.Equal(["VolumeSnapshot/to-leaving", "VolumeSnapshot/to-leaving-r1"], await g.ObjectsInAsync("team-a", "to-leaving"));
            await Eventually.Until(async () => (await g.EventsAsync("to-leaving")).Any(e => e.Type == "Warning" && e.Reason == "NamespaceBlocked" && e.Message.StartsWith("namespace leaving: the namespace is being deleted", StringComparison.Ordinal)), "the NamespaceBlocked event");
        }
        finally
        {
            await g.K.CoreV1.PatchNamespacedConfigMapAsync(new k8s.Models.V1Patch("{\"metadata\":{\"finalizers\":null}}", k8s.Models.V1Patch.PatchType.MergePatch), "hold", "leaving", cancellationToken: ct);
        }
    }

    private object Spec(string name) => name switch
    {
        "both-sources" => new { source = new { volumeSnapshot = new { @namespace = "prod", name = "base" }, persistentVolumeClaim = new { @namespace = "prod", name = "db" } }, namespaceSelector = Selector, snapshotName = name },
        "no-source" => new { source = new { }, namespaceSelector = Selector, snapshotName = name },
        "bad-selector" => new { source = Base, namespaceSelector = new { matchExpressions = new[] { new { key = "golden", @operator = "Like", values = new[] { "yes" } } } }, snapshotName = name },
        "no-namespaces" => new { source = Base, snapshotName = name },
        "schedule-not-claim" => new { source = Base, schedule = "@daily", namespaceSelector = Selector, snapshotName = name },
        "bad-cron" => new { source = new { persistentVolumeClaim = new { @namespace = "prod", name = "db" } }, schedule = "every day", namespaceSelector = Selector, snapshotName = name },
        "bad-zone" => new { source = new { persistentVolumeClaim = new { @namespace = "prod", name = "db" } }, schedule = "@daily", timeZone = "Mars/Olympus", namespaceSelector = Selector, snapshotName = name },
        "bad-size" => new { source = Base, namespaceSelector = Selector, snapshotName = name, claim = new { name = "copy", size = "ten gigs" } },
        "bad-policy" => new { source = Base, namespaceSelector = Selector, snapshotName = name, claim = new { name = "copy", refreshPolicy = "Sometimes" } },
        "bad-name" => new { source = Base, namespaceSelector = Selector, snapshotName = "Base_Copy" },
        "zero-history" => new { source = Base, namespaceSelector = Selector, snapshotName = name, revisionHistoryLimit = 0 },
        "missing-snapshot" => new { source = new { volumeSnapshot = new { @namespace = "prod", name = "nope" } }, namespaceSelector = Selector, snapshotName = name },
        "unready-snapshot" => new { source = new { volumeSnapshot = new { @namespace = "prod", name = "never-ready" } }, namespaceSelector = Selector, snapshotName = name },
        "missing-claim" => new { source = new { persistentVolumeClaim = new { @namespace = "prod", name = "nope" } }, namespaceSelector = Selector, snapshotName = name },
        "other-driver" => new { source = new { snapshotHandle = fx.Handle, driver = "ebs.csi.aws.com" }, namespaceSelector = Selector, snapshotName = name },
        "missing-handle" => new { source = new { snapshotHandle = "snapshot-does-not-exist" }, namespaceSelector = Selector, snapshotName = name },
        "selector-matches-nothing" => new { source = Base, namespaceSelector = new { matchLabels = new Dictionary<string, string> { ["golden"] = "nobody" } }, snapshotName = name },
        "claim-too-small" => new { source = new { snapshotHandle = fx.Handle }, namespaceSelector = Selector, snapshotName = name, claim = new { name = "copy", storageClassName = "dolly", size = "1Mi" } },
        _ => throw new ArgumentOutOfRangeException(nameof(name), name, null),
    };
}
