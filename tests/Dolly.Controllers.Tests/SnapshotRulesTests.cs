using System.Net;
using System.Text.Json;
using Dolly.Controllers.Model;
using k8s;
using k8s.Autorest;
using k8s.Models;

namespace Dolly.Controllers.Tests;

/// <summary>
/// The snapshot controller's binding and refusal rules as a table: each row states the objects it starts from, the
/// VolumeSnapshot applied, and what must follow (ready or the status error, the event reason, and what became of
/// the contents). All rows share one stack (ControllerHarness); each names its own objects.
/// </summary>
public sealed class SnapshotRulesTests(SnapshotRulesTests.Stack stack) : IClassFixture<SnapshotRulesTests.Stack>
{
    private const string Ns = "default";
    private const string Group = Names.SnapshotGroup;
    private const string Version = "v1";

    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    /// <summary>One stack for every row.</summary>
    public sealed class Stack : IAsyncLifetime
    {
        internal ControllerHarness Harness { get; private set; } = null!;

        public async ValueTask InitializeAsync() => Harness = await ControllerHarness.StartAsync("rules", TestContext.Current.CancellationToken);

        public async ValueTask DisposeAsync() => await Harness.DisposeAsync();
    }

    /// <summary>What a row expects of its snapshot: ready, or an error containing <paramref name="Error"/> with an event of <paramref name="Reason"/>.</summary>
    public sealed record Expected(bool Ready, string? Error = null, string? Reason = null);

    /// <summary>
    /// A row: <paramref name="Arrange"/> makes the objects it starts from and returns the snapshot's spec.source (and
    /// class); <paramref name="Then"/> checks what else must hold afterwards.
    /// </summary>
    private sealed record Rule(Func<Rig, Task<VolumeSnapshotSpec>> Arrange, Expected Expected, Func<Rig, VolumeSnapshot, Task>? Then = null);

    /// <summary>The row's view of the cluster: its name prefix and the test's client.</summary>
    private sealed record Rig(string Prefix, Kubernetes Kube);

    private static readonly Dictionary<string, Rule> Rules = new(StringComparer.Ordinal)
    {
        ["dynamic snapshot of a bound claim: content made for it, finalizers, ready"] = new(
            async r => FromClaim((await BoundClaimAsync(r, "src")).Metadata.Name),
            new Expected(Ready: true),
            async (r, s) =>
            {
                var content = await ReadContentAsync(r, s.Status!.BoundVolumeSnapshotContentName!);
                Assert.Equal(Names.ContentName(s.Metadata.Uid), content!.Metadata.Name);
                Assert.Equal((s.Metadata.Name, Ns, s.Metadata.Uid), (content.Spec.VolumeSnapshotRef.Name, content.Spec.VolumeSnapshotRef.NamespaceProperty, content.Spec.VolumeSnapshotRef.Uid));
                Assert.Equal("snaps", s.Spec.VolumeSnapshotClassName);
                Assert.Contains(Names.SnapshotAsSourceFinalizer, s.Metadata.Finalizers!);
                Assert.Contains(Names.SnapshotBoundFinalizer, s.Metadata.Finalizers!);
            }),
        ["the source claim does not exist"] = new(
            _ => Task.FromResult(FromClaim("absent")),
            new Expected(false, "PersistentVolumeClaim default/absent does not exist", "SnapshotCreationFailed"),
            NoContentFor),
        ["the source claim is not bound"] = new(
            async r =>
            {
                var claim = DriverStack.Claim(r.Prefix + "-unbound", "1Gi");
                claim.Spec.StorageClassName = "no-such-class";
                await r.Kube.CoreV1.CreateNamespacedPersistentVolumeClaimAsync(claim, Ns, cancellationToken: Ct);
                return FromClaim(claim.Metadata.Name);
            },
            new Expected(false, "not Bound: a snapshot needs a bound claim", "SnapshotCreationFailed"),
            NoContentFor),
        ["the named class does not exist"] = new(
            async r => FromClaim((await BoundClaimAsync(r, "src")).Metadata.Name, "no-such-snapshot-class"),
            new Expected(false, "VolumeSnapshotClass no-such-snapshot-class does not exist", "SnapshotCreationFailed"),
            NoContentFor),
        ["the named class is another driver's"] = new(
            async r =>
            {
                await CreateClassAsync(r.Kube, r.Prefix + "-other", "other.csi.example.com", isDefault: false);
                return FromClaim((await BoundClaimAsync(r, "src")).Metadata.Name, r.Prefix + "-other");
            },
            new Expected(false, "is for driver other.csi.example.com", "SnapshotCreationFailed"),
            NoContentFor),
        ["the named content does not exist"] = new(
            r => Task.FromResult(FromContent(r.Prefix + "-absent")),
            new Expected(false, "does not exist", "SnapshotContentMissing")),
        ["the named content is dynamic (no snapshotHandle): never bound by name"] = new(
            async r =>
            {
                var theirs = await ReadySnapshotAsync(r, "theirs", FromClaim((await BoundClaimAsync(r, "src")).Metadata.Name));
                return FromContent(theirs.Status!.BoundVolumeSnapshotContentName!);
            },
            new Expected(false, "is not pre-provisioned", "SnapshotContentMisbound")),
        ["the named pre-provisioned content names another snapshot: no theft"] = new(
            async r =>
            {
                string handle = await HandleAsync(r);
                await CreateContentAsync(r.Kube, r.Prefix + "-content", handle, snapshotName: r.Prefix + "-someone-else", uid: "");
                return FromContent(r.Prefix + "-content");
            },
            new Expected(false, "belongs to VolumeSnapshot default/", "SnapshotContentMisbound"),
            async (r, s) =>
            {
                var content = await ReadContentAsync(r, r.Prefix + "-content");
                Assert.Equal((r.Prefix + "-someone-else", ""), (content!.Spec.VolumeSnapshotRef.Name, content.Spec.VolumeSnapshotRef.Uid ?? ""));
            }),
        ["a pre-provisioned content naming the snapshot: bound, its uid filled in, ready"] = new(
            async r =>
            {
                string handle = await HandleAsync(r);
                await CreateContentAsync(r.Kube, r.Prefix + "-content", handle, snapshotName: r.Prefix + "-snap", uid: "");
                return FromContent(r.Prefix + "-content");
            },
            new Expected(Ready: true),
            async (r, s) =>
            {
                var content = await ReadContentAsync(r, r.Prefix + "-content");
                Assert.Equal(s.Metadata.Uid, content!.Spec.VolumeSnapshotRef.Uid);
                Assert.Equal(r.Prefix + "-content", s.Status!.BoundVolumeSnapshotContentName);
            }),
        ["a pre-provisioned content naming the snapshot but another UID: no theft"] = new(
            async r =>
            {
                string handle = await HandleAsync(r);
                await CreateContentAsync(r.Kube, r.Prefix + "-content", handle, snapshotName: r.Prefix + "-snap", uid: "6a1c0ffe-0000-4000-8000-000000000001");
                return FromContent(r.Prefix + "-content");
            },
            new Expected(false, "belongs to VolumeSnapshot default/", "SnapshotContentMisbound"),
            async (r, s) =>
            {
                var content = await ReadContentAsync(r, r.Prefix + "-content");
                Assert.Equal("6a1c0ffe-0000-4000-8000-000000000001", content!.Spec.VolumeSnapshotRef.Uid);
                Assert.True(string.IsNullOrEmpty(s.Status?.BoundVolumeSnapshotContentName));
            }),
        ["a pre-provisioned content naming a snapshot of that name in another namespace: no theft"] = new(
            async r =>
            {
                string handle = await HandleAsync(r);
                await CreateContentAsync(r.Kube, r.Prefix + "-content", handle, snapshotName: r.Prefix + "-snap", uid: "", ns: "elsewhere");
                return FromContent(r.Prefix + "-content");
            },
            new Expected(false, "belongs to VolumeSnapshot elsewhere/", "SnapshotContentMisbound"),
            async (r, s) =>
            {
                var content = await ReadContentAsync(r, r.Prefix + "-content");
                Assert.Equal(("elsewhere", ""), (content!.Spec.VolumeSnapshotRef.NamespaceProperty, content.Spec.VolumeSnapshotRef.Uid ?? ""));
            }),
        ["status flows from the content: creationTime and restoreSize"] = new(
            async r => FromClaim((await BoundClaimAsync(r, "src")).Metadata.Name),
            new Expected(Ready: true),
            async (r, s) =>
            {
                var content = await ReadContentAsync(r, s.Status!.BoundVolumeSnapshotContentName!);
                Assert.Equal(1L << 30, content!.Status!.RestoreSize);
                Assert.Equal(1L << 30, s.Status.RestoreSize!.ToInt64());
                var cut = DateTimeOffset.FromUnixTimeMilliseconds(content.Status.CreationTime!.Value / 1_000_000).UtcDateTime;
                Assert.Equal(cut.ToString("yyyy-MM-ddTHH:mm:ss", System.Globalization.CultureInfo.InvariantCulture), s.Status.CreationTime!.Value.ToUniversalTime().ToString("yyyy-MM-ddTHH:mm:ss", System.Globalization.CultureInfo.InvariantCulture));
            }),
        ["deletion policy Delete: the content goes with the snapshot"] = new(
            async r => FromClaim((await BoundClaimAsync(r, "src")).Metadata.Name),
            new Expected(Ready: true),
            async (r, s) =>
            {
                string contentName = s.Status!.BoundVolumeSnapshotContentName!;
                await DeleteSnapshotAsync(r, s.Metadata.Name);
                await Eventually.Until(async () => await ReadSnapshotAsync(r, s.Metadata.Name) is null, () => $"snapshot {s.Metadata.Name} never went");
                await Eventually.Until(async () => await ReadContentAsync(r, contentName) is null, () => $"content {contentName} never went");
            }),
        ["deletion policy Retain: the content and its snapshot handle outlive the snapshot"] = new(
            async r =>
            {
                await CreateClassAsync(r.Kube, r.Prefix + "-keep", "csi.dolly.io", isDefault: false, policy: "Retain");
                return FromClaim((await BoundClaimAsync(r, "src")).Metadata.Name, r.Prefix + "-keep");
            },
            new Expected(Ready: true),
            async (r, s) =>
            {
                string contentName = s.Status!.BoundVolumeSnapshotContentName!;
                await DeleteSnapshotAsync(r, s.Metadata.Name);
                await Eventually.Until(async () => await ReadSnapshotAsync(r, s.Metadata.Name) is null, () => $"snapshot {s.Metadata.Name} never went");
                var content = await ReadContentAsync(r, contentName);
                Assert.NotNull(content);
                Assert.Null(content.Metadata.DeletionTimestamp);
                Assert.Equal("Retain", content.Spec.DeletionPolicy);
                Assert.False(string.IsNullOrEmpty(content.Status?.SnapshotHandle));
            }),
        ["deletion waits while a pending claim restores from the snapshot (SnapshotDeletePending), then completes"] = new(
            async r => FromClaim((await BoundClaimAsync(r, "src")).Metadata.Name),
            new Expected(Ready: true),
            async (r, s) =>
            {
                // A class another provisioner serves: the claim stays Pending, restoring from the snapshot.
                await r.Kube.StorageV1.CreateStorageClassAsync(
                    new V1StorageClass { Metadata = new V1ObjectMeta { Name = r.Prefix + "-foreign" }, Provisioner = "other.csi.example.com" }, cancellationToken: Ct);
                var restore = DriverStack.Claim(r.Prefix + "-restore", "1Gi", new V1TypedLocalObjectReference { ApiGroup = Group, Kind = "VolumeSnapshot", Name = s.Metadata.Name });
                restore.Spec.StorageClassName = r.Prefix + "-foreign";
                await r.Kube.CoreV1.CreateNamespacedPersistentVolumeClaimAsync(restore, Ns, cancellationToken: Ct);
                await DeleteSnapshotAsync(r, s.Metadata.Name);
                await Eventually.Until(
                    async () => (await r.Kube.CoreV1.ListNamespacedEventAsync(Ns, fieldSelector: $"involvedObject.name={s.Metadata.Name},reason={Reasons.SnapshotDeletePending}", cancellationToken: Ct)).Items.Count > 0,
                    () => $"no {Reasons.SnapshotDeletePending} event for {s.Metadata.Name}");
                var held = await ReadSnapshotAsync(r, s.Metadata.Name);
                Assert.NotNull(held?.Metadata.DeletionTimestamp);
                Assert.NotNull(await ReadContentAsync(r, s.Status!.BoundVolumeSnapshotContentName!));

                // The restore given up: the deletion completes, content included.
                await r.Kube.CoreV1.DeleteNamespacedPersistentVolumeClaimAsync(restore.Metadata.Name, Ns, cancellationToken: Ct);
                await Eventually.Until(async () => await ReadSnapshotAsync(r, s.Metadata.Name) is null, () => $"snapshot {s.Metadata.Name} never went after the restore was deleted");
                await Eventually.Until(async () => await ReadContentAsync(r, s.Status!.BoundVolumeSnapshotContentName!) is null, () => "its content never went");
            }),
    };

    public static TheoryData<string> RuleNames => [.. Rules.Keys];

    [Theory]
    [MemberData(nameof(RuleNames))]
    public async Task Rule_GivesItsOutcome(string name)
    {
        string prefix = "r" + Math.Abs(StringComparer.Ordinal.GetHashCode(name) % 100_000).ToString(System.Globalization.CultureInfo.InvariantCulture);
        var rig = new Rig(prefix, stack.Harness.Client);
        var rule = Rules[name];
        var spec = await rule.Arrange(rig);
        string snapshot = prefix + "-snap";
        var expected = rule.Expected;
        VolumeSnapshot result;
        if (expected.Ready)
        {
            result = await ReadySnapshotAsync(rig, "snap", spec);
        }
        else
        {
            await CreateSnapshotAsync(rig.Kube, snapshot, spec);
            result = await Eventually.Until(
                async () => await ReadSnapshotAsync(rig, snapshot) is { Status.Error.Message: { } m } s && m.Contains(expected.Error!, StringComparison.Ordinal) ? s : null,
                () => $"snapshot {snapshot} never reported an error containing \"{expected.Error}\"");
            Assert.NotEqual(true, result.Status!.ReadyToUse);
            await Eventually.Until(
                async () => (await rig.Kube.CoreV1.ListNamespacedEventAsync(Ns, fieldSelector: $"involvedObject.name={snapshot},reason={expected.Reason}", cancellationToken: Ct)).Items.Count > 0,
                () => $"no {expected.Reason} event for snapshot {snapshot}");
        }

        if (rule.Then is { } then)
        {
            await then(rig, result);
        }
    }

    // ---- arranging --------------------------------------------------------------------------------------

    private static VolumeSnapshotSpec FromClaim(string claim, string? snapshotClass = null) =>
        new() { Source = new VolumeSnapshotSource { PersistentVolumeClaimName = claim }, VolumeSnapshotClassName = snapshotClass };

    private static VolumeSnapshotSpec FromContent(string content) =>
        new() { Source = new VolumeSnapshotSource { VolumeSnapshotContentName = content } };

    private static async Task<V1PersistentVolumeClaim> BoundClaimAsync(Rig r, string suffix)
    {
        string name = r.Prefix + "-" + suffix;
        await r.Kube.CoreV1.CreateNamespacedPersistentVolumeClaimAsync(DriverStack.Claim(name, "1Gi"), Ns, cancellationToken: Ct);
        return await Eventually.Until(
            async () => await r.Kube.CoreV1.ReadNamespacedPersistentVolumeClaimAsync(name, Ns, cancellationToken: Ct) is { Status.Phase: "Bound" } c ? c : null,
            () => $"claim {name} never bound");
    }

    /// <summary>The driver handle of a fresh snapshot whose content is Retain, so it outlives its VolumeSnapshot.</summary>
    private static async Task<string> HandleAsync(Rig r)
    {
        await CreateClassAsync(r.Kube, r.Prefix + "-retain", "csi.dolly.io", isDefault: false, policy: "Retain");
        var source = await ReadySnapshotAsync(r, "origin", FromClaim((await BoundClaimAsync(r, "src")).Metadata.Name, r.Prefix + "-retain"));
        var content = await ReadContentAsync(r, source.Status!.BoundVolumeSnapshotContentName!);
        return content!.Status!.SnapshotHandle!;
    }

    private static async Task<VolumeSnapshot> ReadySnapshotAsync(Rig r, string suffix, VolumeSnapshotSpec spec)
    {
        string name = r.Prefix + "-" + suffix;
        await CreateSnapshotAsync(r.Kube, name, spec);
        return await Eventually.Until(
            async () => await ReadSnapshotAsync(r, name) is { Status.ReadyToUse: true } s ? s : null,
            () => $"snapshot {name} never became ready");
    }

    private static Task<object> CreateSnapshotAsync(Kubernetes kube, string name, VolumeSnapshotSpec spec) =>
        kube.CustomObjects.CreateNamespacedCustomObjectAsync(
            new VolumeSnapshot { Metadata = new V1ObjectMeta { Name = name, NamespaceProperty = Ns }, Spec = spec }, Group, Version, Ns, "volumesnapshots", cancellationToken: Ct);

    private static Task<object> CreateClassAsync(Kubernetes kube, string name, string driver, bool isDefault, string policy = "Delete") =>
        kube.CustomObjects.CreateClusterCustomObjectAsync(
            new VolumeSnapshotClass
            {
                Metadata = new V1ObjectMeta
                {
                    Name = name,
                    Annotations = isDefault ? new Dictionary<string, string> { [Names.DefaultSnapshotClassAnnotation] = "true" } : null,
                },
                Driver = driver,
                DeletionPolicy = policy,
            },
            Group,
            Version,
            "volumesnapshotclasses",
            cancellationToken: Ct);

    private static Task<object> CreateContentAsync(Kubernetes kube, string name, string handle, string snapshotName, string uid, string ns = Ns) =>
        kube.CustomObjects.CreateClusterCustomObjectAsync(
            new VolumeSnapshotContent
            {
                Metadata = new V1ObjectMeta { Name = name },
                Spec = new VolumeSnapshotContentSpec
                {
                    VolumeSnapshotRef = new V1ObjectReference { Name = snapshotName, NamespaceProperty = ns, Uid = uid.Length == 0 ? null : uid },
                    DeletionPolicy = "Retain",
                    Driver = "csi.dolly.io",
                    Source = new VolumeSnapshotContentSource { SnapshotHandle = handle },
                },
            },
            Group,
            Version,
            "volumesnapshotcontents",
            cancellationToken: Ct);

    private static Task<object> DeleteSnapshotAsync(Rig r, string name) =>
        r.Kube.CustomObjects.DeleteNamespacedCustomObjectAsync(Group, Version, Ns, "volumesnapshots", name, cancellationToken: Ct);

    // ---- reading ----------------------------------------------------------------------------------------

    private static async Task<VolumeSnapshot?> ReadSnapshotAsync(Rig r, string name)
    {
        try
        {
            var found = (JsonElement)await r.Kube.CustomObjects.GetNamespacedCustomObjectAsync(Group, Version, Ns, "volumesnapshots", name, Ct);
            return KubernetesJson.Deserialize<VolumeSnapshot>(found.GetRawText());
        }
        catch (HttpOperationException ex) when (ex.Response.StatusCode == HttpStatusCode.NotFound)
        {
            return null;
        }
    }

    private static async Task<VolumeSnapshotContent?> ReadContentAsync(Rig r, string name)
    {
        try
        {
            var found = (JsonElement)await r.Kube.CustomObjects.GetClusterCustomObjectAsync(Group, Version, "volumesnapshotcontents", name, Ct);
            return KubernetesJson.Deserialize<VolumeSnapshotContent>(found.GetRawText());
        }
        catch (HttpOperationException ex) when (ex.Response.StatusCode == HttpStatusCode.NotFound)
        {
            return null;
        }
    }

    /// <summary>No content was made for a refused dynamic snapshot (none named after its UID, none bound).</summary>
    private static async Task NoContentFor(Rig r, VolumeSnapshot s)
    {
        Assert.True(string.IsNullOrEmpty(s.Status?.BoundVolumeSnapshotContentName));
        Assert.Null(await ReadContentAsync(r, Names.ContentName(s.Metadata.Uid)));
    }
}
