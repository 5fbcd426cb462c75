namespace Dolly.Web.Tests;

/// <summary>The objects of the browser scenario, applied with kubectl as a user would.</summary>
internal static class Scenario
{
    public const string Classes = """
        apiVersion: storage.k8s.io/v1
        kind: StorageClass
        metadata:
          name: dolly
        provisioner: csi.dolly.io
        reclaimPolicy: Delete
        volumeBindingMode: Immediate
        allowVolumeExpansion: true
        ---
        apiVersion: snapshot.storage.k8s.io/v1
        kind: VolumeSnapshotClass
        metadata:
          name: dolly-snapshots
          annotations:
            snapshot.storage.kubernetes.io/is-default-class: "true"
        driver: csi.dolly.io
        deletionPolicy: Delete
        """;

    public const string Claim = """
        apiVersion: v1
        kind: Namespace
        metadata:
          name: shop
        ---
        apiVersion: v1
        kind: PersistentVolumeClaim
        metadata:
          name: data
          namespace: shop
        spec:
          storageClassName: dolly
          accessModes: [ReadWriteOnce]
          resources:
            requests:
              storage: 1Gi
        """;

    public const string Snapshot = """
        apiVersion: snapshot.storage.k8s.io/v1
        kind: VolumeSnapshot
        metadata:
          name: data-snap
          namespace: shop
        spec:
          volumeSnapshotClassName: dolly-snapshots
          source:
            persistentVolumeClaimName: data
        """;

    /// <summary>A restore, a clone, a restore in another namespace (granted), and one too small to succeed.</summary>
    public const string Restores = """
        apiVersion: v1
        kind: PersistentVolumeClaim
        metadata:
          name: restored
          namespace: shop
        spec:
          storageClassName: dolly
          accessModes: [ReadWriteOnce]
          dataSource:
            apiGroup: snapshot.storage.k8s.io
            kind: VolumeSnapshot
            name: data-snap
          resources:
            requests:
              storage: 1Gi
        ---
        apiVersion: v1
        kind: PersistentVolumeClaim
        metadata:
          name: copy
          namespace: shop
        spec:
          storageClassName: dolly
          accessModes: [ReadWriteOnce]
          dataSource:
            kind: PersistentVolumeClaim
            name: data
          resources:
            requests:
              storage: 1Gi
        ---
        apiVersion: v1
        kind: PersistentVolumeClaim
        metadata:
          name: too-small
          namespace: shop
        spec:
          storageClassName: dolly
          accessModes: [ReadWriteOnce]
          dataSource:
            apiGroup: snapshot.storage.k8s.io
            kind: VolumeSnapshot
            name: data-snap
          resources:
            requests:
              storage: 512Mi
        ---
        apiVersion: v1
        kind: Namespace
        metadata:
          name: audit
        ---
        apiVersion: gateway.networking.k8s.io/v1beta1
        kind: ReferenceGrant
        metadata:
          name: audit-may-restore
          namespace: shop
        spec:
          from:
          - group: ""
            kind: PersistentVolumeClaim
            namespace: audit
          to:
          - group: snapshot.storage.k8s.io
            kind: VolumeSnapshot
        ---
        apiVersion: v1
        kind: PersistentVolumeClaim
        metadata:
          name: from-shop
          namespace: audit
        spec:
          storageClassName: dolly
          accessModes: [ReadWriteOnce]
          dataSourceRef:
            apiGroup: snapshot.storage.k8s.io
            kind: VolumeSnapshot
            name: data-snap
            namespace: shop
          resources:
            requests:
              storage: 1Gi
        """;

    public const string Late = """
        apiVersion: v1
        kind: PersistentVolumeClaim
        metadata:
          name: late
          namespace: shop
        spec:
          storageClassName: dolly
          accessModes: [ReadWriteOnce]
          resources:
            requests:
              storage: 2Gi
        """;
}
