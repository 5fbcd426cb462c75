using k8s;
using k8s.Autorest;
using k8s.Models;

namespace Dolly.Controllers.Tests;

/// <summary>
/// StatefulSets on the embedded API server get the claims kube-controller-manager would make: seed 001's consumer
/// replicas restore the snapshot's data, scaling and deletion follow the retention policy, and a claim someone else
/// made under the same name is never touched.
/// </summary>
public sealed class StatefulSetClaimsTests : IAsyncLifetime
{
    private const string Ns = "default";
    private const long MiB = 1024 * 1024;

    /// <summary>The mark the controller puts on the claims it made.</summary>
    private const string StatefulSetClaimsAnnotation = "dolly.io/statefulset";
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    private ControllerHarness? _h;

    private Kubernetes K => _h!.Client;

    public async ValueTask InitializeAsync() => _h = await ControllerHarness.StartAsync("sts", Ct);

    public async ValueTask DisposeAsync()
    {
        if (_h is not null)
        {
            await _h.DisposeAsync();
        }
    }

    private static async Task Until(Func<Task<bool>> probe, Func<Task<string>> what, int seconds = 60)
    {
        var deadline = DateTime.UtcNow.AddSeconds(seconds);
        while (DateTime.UtcNow < deadline)
        {
            if (await probe())
            {
                return;
            }

            await Task.Delay(50, Ct);
        }

        Assert.Fail(await what());
    }

    private async Task<V1PersistentVolumeClaim?> Claim(string name)
    {
        try
        {
            return await K.CoreV1.ReadNamespacedPersistentVolumeClaimAsync(name, Ns, cancellationToken: Ct);
        }
        catch (HttpOperationException ex) when (ex.Response.StatusCode == System.Net.HttpStatusCode.NotFound)
        {
            return null;
        }
    }

    /// <summary>The names of the claims in the namespace, sorted, for comparing and for failure messages.</summary>
    private async Task<string> ClaimNames() =>
        string.Join(",", (await K.CoreV1.ListNamespacedPersistentVolumeClaimAsync(Ns, cancellationToken: Ct)).Items.Select(c => c.Metadata.Name).Order(StringComparer.Ordinal));

    private async Task UntilClaims(string expected) =>
        await Until(async () => await ClaimNames() == expected, async () => $"claims never became [{expected}]: [{await ClaimNames()}]");

    private async Task<string> HandleOf(string claim)
    {
        var c = await K.CoreV1.ReadNamespacedPersistentVolumeClaimAsync(claim, Ns, cancellationToken: Ct);
        return (await K.CoreV1.ReadPersistentVolumeAsync(c.Spec.VolumeName, cancellationToken: Ct)).Spec.Csi.VolumeHandle;
    }

    private async Task UntilBound(string claim) =>
        await Until(async () => await Claim(claim) is { Status.Phase: "Bound" }, async () => $"claim {claim} never bound: {(await Claim(claim))?.Status?.Phase ?? "absent"}");

    private static V1StatefulSet Set(string name, int replicas, string whenDeleted = "Retain", string whenScaled = "Retain", int? start = null, V1TypedLocalObjectReference? source = null) => new()
    {
        Metadata = new V1ObjectMeta { Name = name },
        Spec = new V1StatefulSetSpec
        {
            ServiceName = name,
            Replicas = replicas,
            Ordinals = start is { } s ? new V1StatefulSetOrdinals { Start = s } : null,
            Selector = new V1LabelSelector { MatchLabels = new Dictionary<string, string> { ["app"] = name } },
            PersistentVolumeClaimRetentionPolicy = new V1StatefulSetPersistentVolumeClaimRetentionPolicy { WhenDeleted = whenDeleted, WhenScaled = whenScaled },
            Template = new V1PodTemplateSpec
            {
                Metadata = new V1ObjectMeta { Labels = new Dictionary<string, string> { ["app"] = name } },
                Spec = new V1PodSpec
                {
                    Containers = [new V1Container { Name = "app", Image = "busybox", VolumeMounts = [new V1VolumeMount { Name = "data", MountPath = "/data" }] }],
                },
            },
            VolumeClaimTemplates =
            [
                new V1PersistentVolumeClaim
                {
                    Metadata = new V1ObjectMeta { Name = "data", Labels = new Dictionary<string, string> { ["tier"] = "storage" } },
                    Spec = DriverStack.Claim("data", "1Gi", source).Spec,
                },
            ],
        },
    };

    private Task<V1StatefulSet> Scale(string name, int replicas) =>
        K.AppsV1.PatchNamespacedStatefulSetAsync(new V1Patch($"{{\"spec\":{{\"replicas\":{replicas}}}}}", V1Patch.PatchType.MergePatch), name, Ns, cancellationToken: Ct);

    private async Task<string> Events(string name, string reason) =>
        string.Join('\n', (await K.CoreV1.ListNamespacedEventAsync(Ns, fieldSelector: $"involvedObject.name={name},reason={reason}", cancellationToken: Ct)).Items.Select(e => e.Message));

    [Fact]
    public async Task SeedConsumerReplicas_RestoreTheSnapshot_OnEveryOrdinal()
    {
        // Seed 001: a claim with data, a snapshot of it, and a StatefulSet (OrderedReady, the default) restoring it.
        await K.CoreV1.CreateNamespacedPersistentVolumeClaimAsync(DriverStack.Claim("data", "1Gi"), Ns, cancellationToken: Ct);
        await UntilBound("data");
        var hello = new byte[64 * 1024];
        new Random(7).NextBytes(hello);
        _h!.Stack.Pool.OpenDevice(await HandleOf("data")).Value.Write(MiB, hello).ThrowIfFailed();
        await K.CustomObjects.CreateNamespacedCustomObjectAsync(
            new Dictionary<string, object>
            {
                ["apiVersion"] = "snapshot.storage.k8s.io/v1",
                ["kind"] = "VolumeSnapshot",
                ["metadata"] = new Dictionary<string, object> { ["name"] = "data-snap" },
                ["spec"] = new Dictionary<string, object> { ["source"] = new Dictionary<string, object> { ["persistentVolumeClaimName"] = "data" } },
            },
            "snapshot.storage.k8s.io",
            "v1",
            Ns,
            "volumesnapshots",
            cancellationToken: Ct);
        var set = Set("consumer", 3, source: new V1TypedLocalObjectReference { ApiGroup = "snapshot.storage.k8s.io", Kind = "VolumeSnapshot", Name = "data-snap" });
        set.Spec.PersistentVolumeClaimRetentionPolicy = null;
        await K.AppsV1.CreateNamespacedStatefulSetAsync(set, Ns, cancellationToken: Ct);

        await UntilClaims("data,data-consumer-0,data-consumer-1,data-consumer-2");
        foreach (int ordinal in new[] { 0, 1, 2 })
        {
            string name = $"data-consumer-{ordinal}";
            await UntilBound(name);
            var claim = (await Claim(name))!;
            Assert.Equal("consumer", claim.Metadata.Labels["app"]);
            Assert.Equal("storage", claim.Metadata.Labels["tier"]);
            Assert.Equal("data-snap", claim.Spec.DataSource.Name);
            Assert.Equal("dolly", claim.Spec.StorageClassName);
            Assert.Equal(["ReadWriteOnce"], claim.Spec.AccessModes);
            Assert.Null(claim.Metadata.OwnerReferences); // whenDeleted defaults to Retain

            var read = new byte[hello.Length];
            _h.Stack.Pool.OpenDevice(await HandleOf(name)).Value.Read(MiB, read).ThrowIfFailed();
            Assert.Equal(hello, read);
        }
    }

    [Theory]
    [InlineData("Retain", null)]
    [InlineData("Delete", null)]
    [InlineData("Delete", 5)]
    public async Task ScaleDownAndUp_FollowsWhenScaled(string whenScaled, int? start)
    {
        int first = start ?? 0;
        string Name(int i) => $"data-web-{first + i}";
        await K.AppsV1.CreateNamespacedStatefulSetAsync(Set("web", 3, whenScaled: whenScaled, start: start), Ns, cancellationToken: Ct);
        await UntilClaims($"{Name(0)},{Name(1)},{Name(2)}");
        string uid1 = (await Claim(Name(1)))!.Metadata.Uid;

        await Scale("web", 1);
        if (whenScaled == "Delete")
        {
            await UntilClaims(Name(0));
        }
        else
        {
            // Retain: nothing may go. Give the controller the time to act wrongly, then look.
            await Task.Delay(1000, Ct);
            Assert.Equal($"{Name(0)},{Name(1)},{Name(2)}", await ClaimNames());
        }

        await Scale("web", 2);
        await UntilClaims(whenScaled == "Delete" ? $"{Name(0)},{Name(1)}" : $"{Name(0)},{Name(1)},{Name(2)}");
        var again = (await Claim(Name(1)))!;
        if (whenScaled == "Delete")
        {
            Assert.NotEqual(uid1, again.Metadata.Uid);
        }
        else
        {
            Assert.Equal(uid1, again.Metadata.Uid);
        }
    }

    [Theory]
    [InlineData("Delete")]
    [InlineData("Retain")]
    public async Task DeleteStatefulSet_FollowsWhenDeleted(string whenDeleted)
    {
        var created = await K.AppsV1.CreateNamespacedStatefulSetAsync(Set("db", 2, whenDeleted: whenDeleted), Ns, cancellationToken: Ct);
        await UntilClaims("data-db-0,data-db-1");
        await UntilBound("data-db-0");
        var claim = (await Claim("data-db-0"))!;
        if (whenDeleted == "Delete")
        {
            var owner = Assert.Single(claim.Metadata.OwnerReferences);
            Assert.Equal(("StatefulSet", "db", created.Metadata.Uid, true), (owner.Kind, owner.Name, owner.Uid, owner.Controller == true));
        }
        else
        {
            Assert.Null(claim.Metadata.OwnerReferences);
        }

        await K.AppsV1.DeleteNamespacedStatefulSetAsync("db", Ns, cancellationToken: Ct);
        if (whenDeleted == "Delete")
        {
            await UntilClaims("");
            return;
        }

        await Task.Delay(1000, Ct);
        Assert.Equal("data-db-0,data-db-1", await ClaimNames());

        // A StatefulSet made again under that name takes its retained claims back as they are.
        await K.AppsV1.CreateNamespacedStatefulSetAsync(Set("db", 2, whenDeleted: whenDeleted), Ns, cancellationToken: Ct);
        await Task.Delay(1000, Ct);
        Assert.Equal(claim.Metadata.Uid, (await Claim("data-db-0"))!.Metadata.Uid);
        Assert.Equal("data-db-0,data-db-1", await ClaimNames());
    }

    [Fact]
    public async Task ChangingWhenDeleted_AddsAndRemovesTheOwnerReference()
    {
        await K.AppsV1.CreateNamespacedStatefulSetAsync(Set("app", 1), Ns, cancellationToken: Ct);
        await UntilClaims("data-app-0");
        await K.AppsV1.PatchNamespacedStatefulSetAsync(
            new V1Patch("""{"spec":{"persistentVolumeClaimRetentionPolicy":{"whenDeleted":"Delete"}}}""", V1Patch.PatchType.MergePatch), "app", Ns, cancellationToken: Ct);
        await Until(async () => (await Claim("data-app-0"))?.Metadata.OwnerReferences?.Count == 1, async () => "owner reference never added");
        await K.AppsV1.PatchNamespacedStatefulSetAsync(
            new V1Patch("""{"spec":{"persistentVolumeClaimRetentionPolicy":{"whenDeleted":"Retain"}}}""", V1Patch.PatchType.MergePatch), "app", Ns, cancellationToken: Ct);
        await Until(async () => (await Claim("data-app-0"))?.Metadata.OwnerReferences is null or { Count: 0 }, async () => "owner reference never removed");
    }

    [Fact]
    public async Task UsersClaimOfTheSameName_IsNeitherChangedNorDeleted_AndTheConflictIsReported()
    {
        var mine = DriverStack.Claim("data-web-0", "2Gi");
        mine.Metadata.Labels = new Dictionary<string, string> { ["owner"] = "user" };
        var user = await K.CoreV1.CreateNamespacedPersistentVolumeClaimAsync(mine, Ns, cancellationToken: Ct);
        await UntilBound("data-web-0");

        await K.AppsV1.CreateNamespacedStatefulSetAsync(Set("web", 2, whenDeleted: "Delete", whenScaled: "Delete"), Ns, cancellationToken: Ct);
        await UntilClaims("data-web-0,data-web-1");
        await Until(async () => (await Events("web", "FailedCreate")).Contains("data-web-0", StringComparison.Ordinal), async () => "no conflict event on the StatefulSet");

        await Scale("web", 0);
        await UntilClaims("data-web-0");
        await K.AppsV1.DeleteNamespacedStatefulSetAsync("web", Ns, cancellationToken: Ct);
        await Task.Delay(1000, Ct);

        var after = (await Claim("data-web-0"))!;
        Assert.Equal(user.Metadata.Uid, after.Metadata.Uid);
        Assert.Null(after.Metadata.DeletionTimestamp);
        Assert.Equal(new Dictionary<string, string> { ["owner"] = "user" }, after.Metadata.Labels);
        Assert.Null(after.Metadata.OwnerReferences);
        Assert.DoesNotContain(StatefulSetClaimsAnnotation, after.Metadata.Annotations?.Keys ?? []);
        Assert.Equal("2Gi", after.Spec.Resources.Requests["storage"].ToString());
    }

    [Fact]
    public async Task TemplateMakingAnInvalidClaim_IsReportedOnTheStatefulSet()
    {
        var set = Set("bad", 1);
        set.Spec.VolumeClaimTemplates[0].Spec.AccessModes = null;
        await K.AppsV1.CreateNamespacedStatefulSetAsync(set, Ns, cancellationToken: Ct);
        await Until(
            async () => (await Events("bad", "FailedCreate")).Contains("create Claim data-bad-0 for StatefulSet bad failed: ", StringComparison.Ordinal)
                && (await Events("bad", "FailedCreate")).Contains("spec.accessModes", StringComparison.Ordinal),
            async () => $"no event naming the invalid field: [{await Events("bad", "FailedCreate")}]");
        Assert.Equal("", await ClaimNames());

        // Fixing the template makes the claim.
        await K.AppsV1.DeleteNamespacedStatefulSetAsync("bad", Ns, cancellationToken: Ct);
        await K.AppsV1.CreateNamespacedStatefulSetAsync(Set("bad", 1), Ns, cancellationToken: Ct);
        await UntilClaims("data-bad-0");
    }

    [Theory]
    [InlineData("data-consumer-0", "consumer")]
    [InlineData("my-data-web-app-12", "data-web-app,web-app,app")]
    [InlineData("data-web", "")]
    [InlineData("data-web-", "")]
    [InlineData("data-web-1x", "")]
    [InlineData("data--0", "")]
    [InlineData("data-0", "")]
    public void ClaimName_NamesTheStatefulSetsItCanBelongTo(string claim, string sets)
    {
        Assert.Equal(sets, string.Join(",", StatefulSetClaims.SetsNamedBy(claim)));
        foreach (string set in StatefulSetClaims.SetsNamedBy(claim))
        {
            string template = claim[..claim.IndexOf("-" + set + "-", StringComparison.Ordinal)];
            int ordinal = int.Parse(claim[(claim.LastIndexOf('-') + 1)..], System.Globalization.CultureInfo.InvariantCulture);
            Assert.Equal(claim, StatefulSetClaims.ClaimName(template, set, ordinal));
        }
    }
}
