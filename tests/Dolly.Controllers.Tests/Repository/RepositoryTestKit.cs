using System.Text.Json;
using Dolly.Controllers.Model;
using Dolly.Controllers.Repository;
using k8s;
using k8s.Models;

namespace Dolly.Controllers.Tests.Repository;

/// <summary>What the repository tests do through one cluster (a <see cref="ControllerHarness"/>): its objects, by the API.</summary>
internal sealed class RepositoryTestKit(ControllerHarness harness)
{
    public const string Ns = "default";

    /// <summary>Long enough for a loaded CI machine; the tests wait on conditions, never on time.</summary>
    public const int Patience = 120;

    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    public ControllerHarness Harness => harness;

    public Kubernetes K => harness.Client;

    public async Task SecretAsync(string name, Dictionary<string, byte[]> data) =>
        await K.CoreV1.CreateNamespacedSecretAsync(new V1Secret { Metadata = new V1ObjectMeta { Name = name }, Data = data }, Ns, cancellationToken: Ct);

    /// <summary>A SnapshotRepository from its spec as the API carries it.</summary>
    public async Task RepositoryAsync(string name, Dictionary<string, object> spec) =>
        await K.CustomObjects.CreateClusterCustomObjectAsync(
            new Dictionary<string, object> { ["apiVersion"] = RepositoryNames.ApiVersion, ["kind"] = RepositoryNames.Kind, ["metadata"] = new Dictionary<string, object> { ["name"] = name }, ["spec"] = spec },
            RepositoryNames.Group, RepositoryNames.Version, RepositoryNames.Plural, cancellationToken: Ct);

    /// <summary>The spec of a directory repository whose key is in Secret <paramref name="keySecret"/>.</summary>
    public static Dictionary<string, object> DirectorySpec(string path, string keySecret) => new()
    {
        ["directory"] = new Dictionary<string, object> { ["path"] = path },
        ["encryption"] = new Dictionary<string, object> { ["keySecretRef"] = new Dictionary<string, object> { ["namespace"] = Ns, ["name"] = keySecret } },
    };

    public async Task<SnapshotRepository> ReadRepositoryAsync(string name) =>
        Deserialize<SnapshotRepository>(await K.CustomObjects.GetClusterCustomObjectAsync(RepositoryNames.Group, RepositoryNames.Version, RepositoryNames.Plural, name, Ct));

    /// <summary>Waits for the repository's Ready condition to have <paramref name="reason"/>.</summary>
    public Task<SnapshotRepository> RepositoryReasonAsync(string name, string reason) =>
        Eventually.Until(
            async () => await ReadRepositoryAsync(name) is { Status.Conditions: [{ } c] } r && c.Reason == reason ? r : null,
            $"SnapshotRepository {name} with reason {reason}",
            Patience);

    /// <summary>A VolumeSnapshotClass of Dolly's driver uploading to <paramref name="repository"/> (no parameter when null).</summary>
    public async Task SnapshotClassAsync(string name, string? repository) =>
        await K.CustomObjects.CreateClusterCustomObjectAsync(
            new Dictionary<string, object?>
            {
                ["apiVersion"] = "snapshot.storage.k8s.io/v1",
                ["kind"] = "VolumeSnapshotClass",
                ["metadata"] = new Dictionary<string, object> { ["name"] = name },
                ["driver"] = "csi.dolly.io",
                ["deletionPolicy"] = "Delete",
                ["parameters"] = repository is null ? null : new Dictionary<string, string> { [RepositoryNames.ClassParameter] = repository },
            },
            Names.SnapshotGroup, "v1", "volumesnapshotclasses", cancellationToken: Ct);

    /// <summary>A bound claim; returns its volume's handle.</summary>
    public async Task<string> ClaimAsync(string name, string size, V1TypedLocalObjectReference? source = null)
    {
        await K.CoreV1.CreateNamespacedPersistentVolumeClaimAsync(DriverStack.Claim(name, size, source), Ns, cancellationToken: Ct);
        var bound = await Eventually.Until(async () => await K.CoreV1.ReadNamespacedPersistentVolumeClaimAsync(name, Ns, cancellationToken: Ct) is { Status.Phase: "Bound" } c ? c : null, $"claim {name} bound", Patience);
        var pv = await K.CoreV1.ReadPersistentVolumeAsync(bound.Spec.VolumeName, cancellationToken: Ct);
        return pv.Spec.Csi.VolumeHandle;
    }

    public async Task SnapshotAsync(string name, string claim, string className) =>
        await K.CustomObjects.CreateNamespacedCustomObjectAsync(
            new VolumeSnapshot { Metadata = new V1ObjectMeta { Name = name }, Spec = new VolumeSnapshotSpec { Source = new VolumeSnapshotSource { PersistentVolumeClaimName = claim }, VolumeSnapshotClassName = className } },
            Names.SnapshotGroup, "v1", Ns, "volumesnapshots", cancellationToken: Ct);

    /// <summary>A VolumeSnapshot bound to a pre-provisioned content of Dolly's driver with <paramref name="handle"/>, as a user restoring elsewhere writes them.</summary>
    public async Task PreProvisionedAsync(string name, string handle)
    {
        await K.CustomObjects.CreateClusterCustomObjectAsync(
            new VolumeSnapshotContent
            {
                Metadata = new V1ObjectMeta { Name = "content-" + name },
                Spec = new VolumeSnapshotContentSpec
                {
                    Driver = "csi.dolly.io",
                    DeletionPolicy = "Retain",
                    Source = new VolumeSnapshotContentSource { SnapshotHandle = handle },
                    VolumeSnapshotRef = new V1ObjectReference { Name = name, NamespaceProperty = Ns },
                },
            },
            Names.SnapshotGroup, "v1", "volumesnapshotcontents", cancellationToken: Ct);
        await K.CustomObjects.CreateNamespacedCustomObjectAsync(
            new VolumeSnapshot { Metadata = new V1ObjectMeta { Name = name }, Spec = new VolumeSnapshotSpec { Source = new VolumeSnapshotSource { VolumeSnapshotContentName = "content-" + name } } },
            Names.SnapshotGroup, "v1", Ns, "volumesnapshots", cancellationToken: Ct);
    }

    public async Task<VolumeSnapshot> ReadSnapshotAsync(string name) =>
        Deserialize<VolumeSnapshot>(await K.CustomObjects.GetNamespacedCustomObjectAsync(Names.SnapshotGroup, "v1", Ns, "volumesnapshots", name, Ct));

    public async Task<VolumeSnapshotContent> ReadContentAsync(string name) =>
        Deserialize<VolumeSnapshotContent>(await K.CustomObjects.GetClusterCustomObjectAsync(Names.SnapshotGroup, "v1", "volumesnapshotcontents", name, Ct));

    /// <summary>The content bound to snapshot <paramref name="snapshot"/>, once it is bound.</summary>
    public async Task<VolumeSnapshotContent> ContentOfAsync(string snapshot)
    {
        var s = await Eventually.Until(async () => await ReadSnapshotAsync(snapshot) is { Status.BoundVolumeSnapshotContentName: { } } b ? b : null, $"snapshot {snapshot} bound", Patience);
        return await ReadContentAsync(s.Status!.BoundVolumeSnapshotContentName!);
    }

    /// <summary>Waits until the content of <paramref name="snapshot"/> has annotation <paramref name="name"/> = <paramref name="value"/>.</summary>
    public Task<VolumeSnapshotContent> ContentAnnotatedAsync(string snapshot, string name, string value) =>
        Eventually.Until(
            async () => await ContentOfAsync(snapshot) is { } c && c.Metadata.Annotations?.TryGetValue(name, out var v) == true && v == value ? c : null,
            $"the content of {snapshot} with {name}={value}",
            Patience);

    public async Task<List<Corev1Event>> EventsAsync(string involved) =>
        [.. (await K.CoreV1.ListNamespacedEventAsync(Ns, cancellationToken: Ct)).Items.Where(e => e.InvolvedObject.Name == involved)];

    /// <summary>Waits for an event on <paramref name="involved"/> with <paramref name="reason"/> whose message mentions <paramref name="mention"/>.</summary>
    public Task<Corev1Event> EventAsync(string involved, string reason, string mention) =>
        Eventually.Until(
            async () => (await EventsAsync(involved)).FirstOrDefault(e => e.Reason == reason && e.Message.Contains(mention, StringComparison.Ordinal)),
            $"event {reason} on {involved} mentioning {mention}",
            Patience);

    public static byte[] Pattern(int seed, int length)
    {
        var data = new byte[length];
        new Random(seed).NextBytes(data);
        return data;
    }

    public void Write(string device, long offset, byte[] data) => harness.Stack.Pool.OpenDevice(device).Value.Write(offset, data).ThrowIfFailed();

    public byte[] Read(string device, long offset, int length)
    {
        var data = new byte[length];
        harness.Stack.Pool.OpenDevice(device).Value.Read(offset, data).ThrowIfFailed();
        return data;
    }

    public static T Deserialize<T>(object o) => o is JsonElement e ? KubernetesJson.Deserialize<T>(e.GetRawText()) : KubernetesJson.Deserialize<T>(KubernetesJson.Serialize(o));
}
