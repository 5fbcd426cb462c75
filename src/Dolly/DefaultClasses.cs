using Dolly.Controllers.Model;
using k8s.Models;

namespace Dolly;

/// <summary>
/// The classes a Dolly installation starts with (as deploy/kubernetes and the acceptance scenarios' 00-classes.yaml
/// define them): StorageClass <c>dolly</c> and the default VolumeSnapshotClass <c>dolly-snapshots</c>, both of
/// driver <c>csi.dolly.io</c>. The demo and <c>bench e2e</c> create them through the API.
/// </summary>
internal static class DefaultClasses
{
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
}
