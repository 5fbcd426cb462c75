namespace Dolly.Api.Tests;

/// <summary>apply, get (table and yaml), label with selector, explain and delete, with the real kubectl, on every served kind.</summary>
public sealed class KubectlEveryKindTests(ServerFixture fx) : IClassFixture<ServerFixture>
{
    public static TheoryData<string, string, string> Kinds => new()
    {
        { "namespaces", "ns-kind", "apiVersion: v1\nkind: Namespace\nmetadata: {name: ns-kind}\n" },
        { "persistentvolumeclaims", "pvc-kind", "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: pvc-kind, namespace: default}\nspec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}, storageClassName: dolly}\n" },
        { "persistentvolumes", "pv-kind", "apiVersion: v1\nkind: PersistentVolume\nmetadata: {name: pv-kind}\nspec: {capacity: {storage: 1Gi}, accessModes: [ReadWriteOnce], csi: {driver: csi.dolly.io, volumeHandle: vol-1}}\n" },
        { "events", "ev-kind", "apiVersion: v1\nkind: Event\nmetadata: {name: ev-kind, namespace: default}\ninvolvedObject: {kind: PersistentVolumeClaim, name: x, namespace: default}\nreason: Tested\nmessage: hello\ntype: Normal\n" },
        { "storageclasses", "sc-kind", "apiVersion: storage.k8s.io/v1\nkind: StorageClass\nmetadata: {name: sc-kind}\nprovisioner: csi.dolly.io\n" },
        { "csidrivers", "csi.dolly.io", "apiVersion: storage.k8s.io/v1\nkind: CSIDriver\nmetadata: {name: csi.dolly.io}\nspec: {attachRequired: false}\n" },
        { "leases", "lease-kind", "apiVersion: coordination.k8s.io/v1\nkind: Lease\nmetadata: {name: lease-kind, namespace: default}\nspec: {holderIdentity: me, leaseDurationSeconds: 15}\n" },
        { "volumesnapshotclasses", "vsclass-kind", "apiVersion: snapshot.storage.k8s.io/v1\nkind: VolumeSnapshotClass\nmetadata: {name: vsclass-kind}\ndriver: csi.dolly.io\ndeletionPolicy: Delete\n" },
        { "volumesnapshots", "vs-kind", "apiVersion: snapshot.storage.k8s.io/v1\nkind: VolumeSnapshot\nmetadata: {name: vs-kind, namespace: default}\nspec: {source: {persistentVolumeClaimName: data}}\n" },
        { "volumesnapshotcontents", "vsc-kind", "apiVersion: snapshot.storage.k8s.io/v1\nkind: VolumeSnapshotContent\nmetadata: {name: vsc-kind}\nspec: {deletionPolicy: Retain, driver: csi.dolly.io, source: {snapshotHandle: h1}, volumeSnapshotRef: {name: vs-kind, namespace: default}}\n" },
        { "volumegroupsnapshotclasses", "vgsclass-kind", "apiVersion: groupsnapshot.storage.k8s.io/v1\nkind: VolumeGroupSnapshotClass\nmetadata: {name: vgsclass-kind}\ndriver: csi.dolly.io\ndeletionPolicy: Delete\n" },
        { "volumegroupsnapshots", "vgs-kind", "apiVersion: groupsnapshot.storage.k8s.io/v1\nkind: VolumeGroupSnapshot\nmetadata: {name: vgs-kind, namespace: default}\nspec: {source: {selector: {matchLabels: {app: db}}}}\n" },
        { "volumegroupsnapshotcontents", "vgsc-kind", "apiVersion: groupsnapshot.storage.k8s.io/v1\nkind: VolumeGroupSnapshotContent\nmetadata: {name: vgsc-kind}\nspec: {deletionPolicy: Retain, driver: csi.dolly.io, source: {volumeHandles: [v1]}, volumeGroupSnapshotRef: {name: vgs-kind, namespace: default}}\n" },
        { "referencegrants", "grant-kind", "apiVersion: gateway.networking.k8s.io/v1beta1\nkind: ReferenceGrant\nmetadata: {name: grant-kind, namespace: default}\nspec: {from: [{group: '', kind: PersistentVolumeClaim, namespace: team-a}], to: [{group: snapshot.storage.k8s.io, kind: VolumeSnapshot}]}\n" },
        { "snapshotschedules", "sched-kind", "apiVersion: dolly.io/v1alpha1\nkind: SnapshotSchedule\nmetadata: {name: sched-kind, namespace: default}\nspec: {schedule: '@daily', timeZone: Europe/Berlin, claimSelector: {matchLabels: {app: db}}, retention: {maxCount: 3, maxAge: 7d}}\n" },
        { "clustersnapshotschedules", "csched-kind", "apiVersion: dolly.io/v1alpha1\nkind: ClusterSnapshotSchedule\nmetadata: {name: csched-kind}\nspec: {schedule: '0 3 * * *', namespaceSelector: {matchLabels: {backup: 'yes'}}, retention: {daily: 7, weekly: 4}}\n" },
        { "goldensnapshots", "golden-kind", "apiVersion: dolly.io/v1alpha1\nkind: GoldenSnapshot\nmetadata: {name: golden-kind}\nspec: {source: {snapshotHandle: snap-1}, namespaceSelector: {matchLabels: {sandbox: 'yes'}}, namespaces: [qa], snapshotName: base, claim: {name: db, size: 10Gi, refreshPolicy: OnNextAttach}, revisionHistoryLimit: 2}\n" },
        { "pods", "pod-kind", "apiVersion: v1\nkind: Pod\nmetadata: {name: pod-kind, namespace: default}\nspec: {containers: [{name: c, image: 'registry.k8s.io/pause:3.10'}]}\n" },
        { "services", "svc-kind", "apiVersion: v1\nkind: Service\nmetadata: {name: svc-kind, namespace: default}\nspec: {selector: {app: web}, ports: [{port: 80, targetPort: 8080}]}\n" },
        { "serviceaccounts", "sa-kind", "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: sa-kind, namespace: default}\n" },
        { "configmaps", "cm-kind", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cm-kind, namespace: default}\ndata: {a: one, b: two}\n" },
        { "secrets", "secret-kind", "apiVersion: v1\nkind: Secret\nmetadata: {name: secret-kind, namespace: default}\ntype: Opaque\ndata: {password: aHVudGVyMg==}\n" },
        { "deployments", "deploy-kind", "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: deploy-kind, namespace: default}\nspec: {selector: {matchLabels: {app: deploy-kind}}, template: {metadata: {labels: {app: deploy-kind}}, spec: {containers: [{name: c, image: 'registry.k8s.io/pause:3.10'}]}}}\n" },
        { "daemonsets", "ds-kind", "apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {name: ds-kind, namespace: default}\nspec: {selector: {matchLabels: {app: ds-kind}}, template: {metadata: {labels: {app: ds-kind}}, spec: {containers: [{name: c, image: 'registry.k8s.io/pause:3.10'}]}}}\n" },
        { "statefulsets", "sts-kind", "apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: sts-kind, namespace: default}\nspec: {serviceName: sts-kind, replicas: 2, selector: {matchLabels: {app: sts-kind}}, template: {metadata: {labels: {app: sts-kind}}, spec: {containers: [{name: c, image: 'registry.k8s.io/pause:3.10'}]}}}\n" },
        { "replicasets", "rs-kind", "apiVersion: apps/v1\nkind: ReplicaSet\nmetadata: {name: rs-kind, namespace: default}\nspec: {selector: {matchLabels: {app: rs-kind}}, template: {metadata: {labels: {app: rs-kind}}, spec: {containers: [{name: c, image: 'registry.k8s.io/pause:3.10'}]}}}\n" },
        { "roles", "role-kind", "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {name: role-kind, namespace: default}\nrules: [{apiGroups: [''], resources: [configmaps], verbs: [get, list]}]\n" },
        { "clusterroles", "clusterrole-kind", "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: clusterrole-kind}\nrules: [{apiGroups: [snapshot.storage.k8s.io], resources: [volumesnapshots], verbs: ['*']}]\n" },
        { "rolebindings", "rolebinding-kind", "apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {name: rolebinding-kind, namespace: default}\nroleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: role-kind}\nsubjects: [{kind: ServiceAccount, name: sa-kind, namespace: default}]\n" },
        { "clusterrolebindings", "clusterrolebinding-kind", "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata: {name: clusterrolebinding-kind}\nroleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: clusterrole-kind}\nsubjects: [{kind: User, name: jane, apiGroup: rbac.authorization.k8s.io}]\n" },
        { "customresourcedefinitions", "gadgets.example.dolly.io", "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata: {name: gadgets.example.dolly.io}\nspec: {group: example.dolly.io, scope: Cluster, names: {plural: gadgets, kind: Gadget}, versions: [{name: v1, served: true, storage: true, schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}}]}\n" },
    };

    [Theory]
    [MemberData(nameof(Kinds))]
    public async Task EveryVerb_OnKind(string resource, string name, string manifest)
    {
        bool namespaced = manifest.Contains("namespace: default}", StringComparison.Ordinal);
        string[] scope = namespaced ? ["-n", "default"] : [];
        var created = (await fx.KubectlWithInputAsync(manifest, "apply", "-f", "-")).ShouldSucceed();
        Assert.Contains(" created", created.Stdout, StringComparison.Ordinal);
        var unchanged = (await fx.KubectlWithInputAsync(manifest, "apply", "-f", "-")).ShouldSucceed();
        Assert.Contains(" unchanged", unchanged.Stdout, StringComparison.Ordinal);

        var table = (await fx.KubectlAsync(["get", resource, name, .. scope])).ShouldSucceed();
        Assert.Matches(resource == "events" ? @"LAST SEEN\s+TYPE" : @"^NAME\s", table.Stdout);
        var yaml = (await fx.KubectlAsync(["get", resource, name, "-o", "yaml", .. scope])).ShouldSucceed();
        Assert.Contains("uid: ", yaml.Stdout, StringComparison.Ordinal);
        Assert.Contains("resourceVersion: ", yaml.Stdout, StringComparison.Ordinal);

        (await fx.KubectlAsync(["label", resource, name, "tested=yes", .. scope])).ShouldSucceed();
        var selected = (await fx.KubectlAsync(["get", resource, "-l", "tested=yes", "-o", "name", .. scope])).ShouldSucceed();
        Assert.Contains("/" + name, selected.Stdout, StringComparison.Ordinal);
        (await fx.KubectlAsync(["patch", resource, name, "--type", "merge", "-p", """{"metadata":{"annotations":{"patched":"yes"}}}""", .. scope])).ShouldSucceed();
        (await fx.KubectlAsync(["describe", resource, name, .. scope])).ShouldSucceed();

        (await fx.KubectlAsync(["delete", resource, name, "--timeout=60s", .. scope])).ShouldSucceed();
        var gone = (await fx.KubectlAsync(["get", resource, name, .. scope])).ShouldFail();
        Assert.Contains("NotFound", gone.Stderr, StringComparison.Ordinal);
    }
}
