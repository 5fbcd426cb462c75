using System.Text.Json;
using Dolly.Controllers.Golden;
using Dolly.Controllers.Model;
using k8s;
using k8s.Models;

namespace Dolly.Controllers.Tests.Golden;

/// <summary>The API calls the GoldenSnapshot tests share, over a <see cref="ControllerHarness"/>.</summary>
internal sealed class GoldenStack(ControllerHarness h)
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    public Kubernetes K => h.Client;

    public ControllerHarness Harness => h;

    public static T Deserialize<T>(object o) => KubernetesJson.Deserialize<T>(((JsonElement)o).GetRawText());

    public async Task NamespaceAsync(string name, Dictionary<string, string>? labels = null) =>
        await K.CoreV1.CreateNamespaceAsync(new V1Namespace { Metadata = new V1ObjectMeta { Name = name, Labels = labels } }, cancellationToken: Ct);

    public async Task LabelNamespaceAsync(string name, string key, string? value) =>
        await K.CoreV1.PatchNamespaceAsync(new V1Patch(KubernetesJson.Serialize(new { metadata = new { labels = new Dictionary<string, string?> { [key] = value } } }), V1Patch.PatchType.MergePatch), name, cancellationToken: Ct);

    /// <summary>A bound claim of class dolly whose first 4 KiB hold <paramref name="fill"/>.</summary>
    public async Task<V1PersistentVolumeClaim> ClaimWithDataAsync(string ns, string name, byte fill)
    {
        await K.CoreV1.CreateNamespacedPersistentVolumeClaimAsync(DriverStack.Claim(name, "64Mi"), ns, cancellationToken: Ct);
        var claim = await Eventually.Until(async () => await K.CoreV1.ReadNamespacedPersistentVolumeClaimAsync(name, ns, cancellationToken: Ct) is { Status.Phase: "Bound" } c ? c : null, $"claim {ns}/{name} bound");
        await WriteAsync(claim, fill);
        return claim;
    }

    public async Task WriteAsync(V1PersistentVolumeClaim claim, byte fill)
    {
        var pv = await K.CoreV1.ReadPersistentVolumeAsync(claim.Spec.VolumeName, cancellationToken: Ct);
        var device = h.Stack.Pool.OpenDevice(pv.Spec.Csi.VolumeHandle).Value;
        Assert.True(device.Write(0, Enumerable.Repeat(fill, 4096).ToArray()).IsOk);
        Assert.True(device.Flush().IsOk);
    }

    /// <summary>The first byte of the volume of a bound claim.</summary>
    public async Task<byte> FirstByteAsync(string ns, string claim)
    {
        var c = await K.CoreV1.ReadNamespacedPersistentVolumeClaimAsync(claim, ns, cancellationToken: Ct);
        var pv = await K.CoreV1.ReadPersistentVolumeAsync(c.Spec.VolumeName, cancellationToken: Ct);
        var device = h.Stack.Pool.OpenDevice(pv.Spec.Csi.VolumeHandle).Value;
        var buffer = new byte[4096];
        Assert.True(device.Read(0, buffer).IsOk);
        Assert.All(buffer, b => Assert.Equal(buffer[0], b));
        return buffer[0];
    }

    public async Task CreateGoldenAsync(string name, object spec, Dictionary<string, string>? annotations = null)
    {
        var meta = new Dictionary<string, object> { ["name"] = name };
        if (annotations is not null)
        {
            meta["annotations"] = annotations;
        }

        await K.CustomObjects.CreateClusterCustomObjectAsync(
            new Dictionary<string, object> { ["apiVersion"] = GoldenNames.ApiVersion, ["kind"] = GoldenNames.Kind, ["metadata"] = meta, ["spec"] = spec },
            GoldenNames.Group, GoldenNames.Version, GoldenNames.Plural, cancellationToken: Ct);
    }

    public async Task PatchGoldenAsync(string name, object patch) =>
        await K.CustomObjects.PatchClusterCustomObjectAsync(new V1Patch(KubernetesJson.Serialize(patch), V1Patch.PatchType.MergePatch), GoldenNames.Group, GoldenNames.Version, GoldenNames.Plural, name, cancellationToken: Ct);

    public async Task<GoldenSnapshot> ReadGoldenAsync(string name) =>
        Deserialize<GoldenSnapshot>(await K.CustomObjects.GetClusterCustomObjectAsync(GoldenNames.Group, GoldenNames.Version, GoldenNames.Plural, name, Ct));

    /// <summary>Waits for a status that satisfies <paramref name="until"/>.</summary>
    public Task<GoldenSnapshot> StatusAsync(string name, Func<GoldenSnapshot, bool> until, string what, int seconds = 30)
    {
        GoldenSnapshot? last = null;
        return Eventually.Until(
            async () =>
            {
                last = await ReadGoldenAsync(name);
                return until(last) ? last : null;
            },
            () => $"golden {name}: {what}; last status {KubernetesJson.Serialize(last?.Status)}",
            seconds);
    }

    public static V1Condition? Condition(GoldenSnapshot g, string type) => g.Status?.Conditions?.FirstOrDefault(c => c.Type == type);

    public async Task<List<VolumeSnapshot>> SnapshotsAsync(string? ns = null, string? labelSelector = null)
    {
        var list = ns is null
            ? await K.CustomObjects.ListClusterCustomObjectAsync(Names.SnapshotGroup, "v1", "volumesnapshots", labelSelector: labelSelector, cancellationToken: Ct)
            : await K.CustomObjects.ListNamespacedCustomObjectAsync(Names.SnapshotGroup, "v1", ns, "volumesnapshots", labelSelector: labelSelector, cancellationToken: Ct);
        return [.. Deserialize<CustomObjectList<VolumeSnapshot>>(list).Items];
    }

    public async Task<List<VolumeSnapshotContent>> ContentsAsync(string? labelSelector = null) =>
        [.. Deserialize<CustomObjectList<VolumeSnapshotContent>>(await K.CustomObjects.ListClusterCustomObjectAsync(Names.SnapshotGroup, "v1", "volumesnapshotcontents", labelSelector: labelSelector, cancellationToken: Ct)).Items];

    public async Task<VolumeSnapshot?> SnapshotAsync(string ns, string name) =>
        (await SnapshotsAsync(ns)).FirstOrDefault(s => s.Metadata.Name == name);

    public async Task CreateSnapshotAsync(string ns, string name, string claim) =>
        await K.CustomObjects.CreateNamespacedCustomObjectAsync(
            new Dictionary<string, object> { ["apiVersion"] = "snapshot.storage.k8s.io/v1", ["kind"] = "VolumeSnapshot", ["metadata"] = new Dictionary<string, object> { ["name"] = name }, ["spec"] = new Dictionary<string, object> { ["source"] = new Dictionary<string, object> { ["persistentVolumeClaimName"] = claim } } },
            Names.SnapshotGroup, "v1", ns, "volumesnapshots", cancellationToken: Ct);

    public async Task<List<Corev1Event>> EventsAsync(string golden) =>
        [.. (await K.CoreV1.ListNamespacedEventAsync("default", cancellationToken: Ct)).Items.Where(e => e.InvolvedObject.Name == golden && e.InvolvedObject.Kind == GoldenNames.Kind)];

    /// <summary>Everything a golden snapshot may make in a namespace: VolumeSnapshots and claims with its label.</summary>
    public async Task<List<string>> ObjectsInAsync(string ns, string golden)
    {
        string selector = GoldenNames.GoldenLabel + "=" + golden;
        var snapshots = (await SnapshotsAsync(ns, selector)).Select(s => "VolumeSnapshot/" + s.Metadata.Name);
        var claims = (await K.CoreV1.ListNamespacedPersistentVolumeClaimAsync(ns, labelSelector: selector, cancellationToken: Ct)).Items.Select(c => "PersistentVolumeClaim/" + c.Metadata.Name);
        return [.. snapshots.Concat(claims).Order(StringComparer.Ordinal)];
    }
}
