namespace Dolly.Controllers.Model;

/// <summary>The finalizers, annotations, reasons and naming rules shared with the upstream controllers.</summary>
public static class Names
{
    /// <summary>Group of the snapshot kinds.</summary>
    public const string SnapshotGroup = "snapshot.storage.k8s.io";

    /// <summary>Kind of a VolumeSnapshot (as a data source names it).</summary>
    public const string SnapshotKind = "VolumeSnapshot";

    /// <summary>Kind of a PersistentVolumeClaim (as a data source or a ReferenceGrant names it).</summary>
    public const string ClaimKind = "PersistentVolumeClaim";

    /// <summary>Finalizer on a content while its driver snapshot may still need deleting.</summary>
    public const string ContentBoundFinalizer = "snapshot.storage.kubernetes.io/volumesnapshotcontent-bound-protection";

    /// <summary>Finalizer on a bound snapshot whose content is deleted with it.</summary>
    public const string SnapshotBoundFinalizer = "snapshot.storage.kubernetes.io/volumesnapshot-bound-protection";

    /// <summary>Finalizer on a snapshot while it may be the source of a restore.</summary>
    public const string SnapshotAsSourceFinalizer = "snapshot.storage.kubernetes.io/volumesnapshot-as-source-protection";

    /// <summary>Finalizer on a claim while a snapshot of it is being cut.</summary>
    public const string PvcAsSourceFinalizer = "snapshot.storage.kubernetes.io/pvc-as-source-protection";

    /// <summary>Finalizer on a snapshot while a volume is being restored from it.</summary>
    public const string ProvisionerSnapshotSourceFinalizer = "provisioner.storage.kubernetes.io/volumesnapshot-as-source-protection";

    /// <summary>Finalizer on a claim while a clone of it is being made.</summary>
    public const string CloningFinalizer = "provisioner.storage.kubernetes.io/cloning-protection";

    /// <summary>Finalizer on a provisioned PV until its CSI volume is deleted.</summary>
    public const string PvDeletionFinalizer = "external-provisioner.volume.kubernetes.io/finalizer";

    /// <summary>
    /// Finalizer on a claim from just before CreateVolume until its PV exists, so a claim deleted in between
    /// (or a controller restarted in between) never leaves a volume that no PV accounts for.
    /// </summary>
    public const string ProvisioningFinalizer = "dolly.io/provisioning-protection";

    /// <summary>
    /// On a claim being provisioned: the CSI content source CreateVolume was called with
    /// (<c>snapshot:ID</c>, <c>volume:ID</c> or empty), so the call can be repeated identically after the source
    /// itself is gone.
    /// </summary>
    public const string ProvisioningSourceAnnotation = "dolly.io/provisioning-source";

    /// <summary>
    /// On a claim being provisioned: the bytes CreateVolume was first asked for. Retries ask for the same, so a
    /// request changed meanwhile cannot turn an idempotent retry into a conflict; the resizer grows it later.
    /// </summary>
    public const string ProvisioningCapacityAnnotation = "dolly.io/provisioning-capacity";

    /// <summary>Finalizer on a claim while a pod uses it.</summary>
    public const string PvcProtectionFinalizer = "kubernetes.io/pvc-protection";

    /// <summary>Annotation that marks the default VolumeSnapshotClass of a driver.</summary>
    public const string DefaultSnapshotClassAnnotation = "snapshot.storage.kubernetes.io/is-default-class";

    /// <summary>Annotation that marks the default StorageClass.</summary>
    public const string DefaultStorageClassAnnotation = "storageclass.kubernetes.io/is-default-class";

    /// <summary>Set on a content before CreateSnapshot and removed after, so a timed-out snapshot is never leaked.</summary>
    public const string BeingCreatedAnnotation = "snapshot.storage.kubernetes.io/volumesnapshot-being-created";

    /// <summary>Set on a content whose snapshot is being deleted.</summary>
    public const string BeingDeletedAnnotation = "snapshot.storage.kubernetes.io/volumesnapshot-being-deleted";

    /// <summary>On a content: a restore may use another volume mode than the source's.</summary>
    public const string AllowVolumeModeChangeAnnotation = "snapshot.storage.kubernetes.io/allow-volume-mode-change";

    /// <summary>On a PV: the provisioner that made it.</summary>
    public const string ProvisionedByAnnotation = "pv.kubernetes.io/provisioned-by";

    /// <summary>On a claim: the provisioner expected to make its volume.</summary>
    public const string StorageProvisionerAnnotation = "volume.kubernetes.io/storage-provisioner";

    /// <summary>The older spelling of <see cref="StorageProvisionerAnnotation"/>, still read by tools.</summary>
    public const string BetaStorageProvisionerAnnotation = "volume.beta.kubernetes.io/storage-provisioner";

    /// <summary>On a claim and a PV: binding finished.</summary>
    public const string BindCompletedAnnotation = "pv.kubernetes.io/bind-completed";

    /// <summary>On a claim and a PV: the controller, not the user, bound them.</summary>
    public const string BoundByControllerAnnotation = "pv.kubernetes.io/bound-by-controller";

    /// <summary>StorageClass parameter naming the file system.</summary>
    public const string FsTypeParameter = "csi.storage.k8s.io/fstype";

    /// <summary>Prefix of StorageClass parameters meant for the provisioner, not the driver.</summary>
    public const string ReservedParameterPrefix = "csi.storage.k8s.io/";

    /// <summary>Name of the content made for a dynamic snapshot.</summary>
    public static string ContentName(string snapshotUid) => "snapcontent-" + snapshotUid;

    /// <summary>CSI name of the snapshot cut for a dynamic snapshot.</summary>
    public static string CsiSnapshotName(string snapshotUid) => "snapshot-" + snapshotUid;

    /// <summary>Name of the PV provisioned for a claim (also its CSI volume name).</summary>
    public static string VolumeName(string claimUid) => "pvc-" + claimUid;
}
