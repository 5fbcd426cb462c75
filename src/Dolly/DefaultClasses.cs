using Dolly.Controllers.Model;
using k8s;
using k8s.Models;

namespace Dolly;

/// <summary>
/// The classes a Dolly installation starts with (as deploy/kubernetes and the acceptance scenarios' 00-classes.yaml
/// define them): StorageClass <c>dolly</c> and the default VolumeSnapshotClass <c>dolly-snapshots</c>, both of
/// driver <c>csi.dolly.io</c>. The demo and <c>bench e2e</c> create them through the API. <c>dolly up</c> with its
/// embedded API server installs the default VolumeGroupSnapshotClass <c>dolly-group-snapshots</c>.
/// </summary>
internal static class DefaultClasses
{
    public const string GroupSnapshotClassName = "dolly-group-snapshots";

    public const string Driver = "csi.dolly.io";
    public const string StorageClassName = "dolly";
    public const string SnapshotClassName = "dolly-snapshots";

    /// <summary>Provisions with Dolly, deletes volumes with their claims, binds at once, allows expansion.</summary>
    public static V1StorageClass StorageClass() => new()
    {
        ApiVersion = "storage.k8s.io/v1",
        Kind = "StorageClass",
        Metadata = new V1ObjectMeta { Name = StorageClassName },
        Provisioner = Driver,
        ReclaimPolicy = "Delete",
        VolumeBindingMode = "Immediate",
        AllowVolumeExpansion = true,
    };

    /// <summary>The driver's default snapshot class; snapshots go with their VolumeSnapshot.</summary>
    public static VolumeSnapshotClass SnapshotClass() => new()
    {
        Metadata = new V1ObjectMeta
        {
            Name = SnapshotClassName,
            Annotations = new Dictionary<string, string> { [Names.DefaultSnapshotClassAnnotation] = "true" },
        },
        Driver = Driver,
        DeletionPolicy = "Delete",
    };

    /// <summary>The driver's default group snapshot class; members go with their group.</summary>
    public static VolumeGroupSnapshotClass GroupSnapshotClass() => new()
    {
        Metadata = new V1ObjectMeta
        {
            Name = GroupSnapshotClassName,
            Annotations = new Dictionary<string, string> { [GroupNames.DefaultClassAnnotation] = "true" },
        },
        Driver = Driver,
        DeletionPolicy = "Delete",
    };

    /// <summary>
    /// Creates <see cref="GroupSnapshotClass"/> unless a default group snapshot class of the driver exists (a second
    /// default would make every group snapshot without a class fail); true when it created it.
    /// </summary>
    public static async Task<bool> EnsureGroupSnapshotClassAsync(IKubernetes client, CancellationToken ct)
    {
        object listed = await client.CustomObjects.ListClusterCustomObjectAsync(GroupNames.Group, GroupNames.Version, GroupClassesPlural, cancellationToken: ct).ConfigureAwait(false);
        var items = KubernetesJson.Deserialize<System.Text.Json.JsonElement>(KubernetesJson.Serialize(listed)).GetProperty("items").EnumerateArray()
            .Select(e => KubernetesJson.Deserialize<VolumeGroupSnapshotClass>(e.GetRawText()));
        if (items.Any(c => c.Driver == Driver && c.Metadata.Annotations?.TryGetValue(GroupNames.DefaultClassAnnotation, out var v) == true && v == "true"))
        {
            return false;
        }

        try
        {
            await client.CustomObjects.CreateClusterCustomObjectAsync(GroupSnapshotClass(), GroupNames.Group, GroupNames.Version, GroupClassesPlural, cancellationToken: ct).ConfigureAwait(false);
            return true;
        }
        catch (k8s.Autorest.HttpOperationException ex) when (ex.Response.StatusCode == System.Net.HttpStatusCode.Conflict)
        {
            // A class of that name exists (not a default one): it is the user's to keep as it is.
            return false;
        }
    }

    private const string GroupClassesPlural = "volumegroupsnapshotclasses";
}
