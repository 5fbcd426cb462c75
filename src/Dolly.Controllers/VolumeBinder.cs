using System.Text.Json.Nodes;
using Dolly.Controllers.Model;
using Dolly.Controllers.Runtime;
using Microsoft.Extensions.Logging;
using k8s;
using k8s.Models;

namespace Dolly.Controllers;

/// <summary>
/// What kube-controller-manager does for volumes, for the embedded API server where none runs: binds a
/// claim to the PV made for it (or to a matching Available PV, or the one it names), keeps the phases of
/// both (Pending, Bound, Lost; Available, Bound, Released), announces claims that wait for the external
/// provisioner, and holds <c>kubernetes.io/pvc-protection</c> on a claim until no pod uses it.
/// </summary>
internal sealed class VolumeBinder : Reconciler
{
    private const string ClaimPrefix = "pvc:";
    private const string VolumePrefix = "pv:";
    private readonly ControllerContext _c;

    public VolumeBinder(ControllerContext context)
        : base("volume-binder", context.Options.RetryBaseDelay, context.Options.RetryMaxDelay, context.Loggers.CreateLogger<VolumeBinder>())
    {
        _c = context;
        var cluster = context.Cluster;
        cluster.Claims.OnChange((old, now) =>
        {
            var claim = now ?? old!;
            Queue.Add(ClaimPrefix + Informer<V1PersistentVolumeClaim>.Key(claim));
            foreach (var pv in cluster.Volumes.ByIndex(Indexes.VolumeByClaim, Informer<V1PersistentVolumeClaim>.Key(claim)))
            {
                Queue.Add(VolumePrefix + pv.Metadata.Name);
            }
        });
        cluster.Volumes.OnChange((old, now) =>
        {
            var pv = now ?? old!;
            Queue.Add(VolumePrefix + pv.Metadata.Name);
            if (pv.Spec?.ClaimRef is { } r && !string.IsNullOrEmpty(r.Name))
            {
                Queue.Add(ClaimPrefix + Informer<V1PersistentVolumeClaim>.Key(r.NamespaceProperty, r.Name));
            }

            if (now?.Spec?.ClaimRef is null)
            {
                // An Available PV may suit a waiting claim of its class (or of the default class, which it may be).
                var waiting = cluster.Claims.ByIndex(Indexes.PendingClaimByClass, pv.Spec?.StorageClassName ?? "")
                    .Concat(cluster.Claims.ByIndex(Indexes.PendingClaimByClass, ""));
                foreach (var claim in waiting)
                {
                    Queue.Add(ClaimPrefix + Informer<V1PersistentVolumeClaim>.Key(claim));
                }
            }
        });
    }

    protected override Task<Outcome> ReconcileAsync(string key, CancellationToken cancellationToken) =>
        key.StartsWith(ClaimPrefix, StringComparison.Ordinal)
            ? ReconcileClaimAsync(key[ClaimPrefix.Length..], cancellationToken)
            : ReconcileVolumeAsync(key[VolumePrefix.Length..], cancellationToken);

    private async Task<Outcome> ReconcileClaimAsync(string key, CancellationToken ct)
    {
        var claim = _c.Cluster.Claims.Get(key);
        if (claim is null)
        {
            return Outcome.Done;
        }

        if (claim.Metadata.DeletionTimestamp is not null)
        {
            return await ReleaseProtectionAsync(claim, ct).ConfigureAwait(false);
        }

        // Each write to a claim is a new version that every watcher sees (`kubectl get pvc -w` prints a line for
        // each): the protection finalizer rides along with the write that announces the provisioner or binds.
        string? volumeName = claim.Spec?.VolumeName;
        if (string.IsNullOrEmpty(volumeName))
        {
            var pv = _c.Cluster.Volumes.ByIndex(Indexes.VolumeByClaimUid, claim.Metadata.Uid).FirstOrDefault(v => v.Metadata.DeletionTimestamp is null)
                ?? await ReserveAvailableAsync(claim, ct).ConfigureAwait(false);
            if (pv is null)
            {
                await WaitForProvisionerAsync(claim, ct).ConfigureAwait(false);
                return Outcome.Done;
            }

            await BindAsync(claim, pv, ct).ConfigureAwait(false);
            return Outcome.Done;
        }

        if (Cluster.FinalizerPatch(claim.Metadata, Names.PvcProtectionFinalizer, true) is { } protect)
        {
            claim = await _c.Cluster.PatchClaimAsync(claim, protect, status: false, ct).ConfigureAwait(false);
        }

        var bound = _c.Cluster.Volumes.Get(volumeName);
        if (bound is null || bound.Metadata.DeletionTimestamp is not null)
        {
            if (claim.Status?.Phase == "Bound")
            {
                await SetClaimPhaseAsync(claim, "Lost", ct).ConfigureAwait(false);
                await _c.Events.RecordAsync(claim, EventRecorder.Warning, "ClaimLost", $"Bound claim has lost its PersistentVolume {volumeName}. Data on the volume is lost!", ct).ConfigureAwait(false);
            }

            return Outcome.Done;
        }

        if (bound.Spec.ClaimRef is null || (string.IsNullOrEmpty(bound.Spec.ClaimRef.Uid) && bound.Spec.ClaimRef.Name == claim.Metadata.Name && bound.Spec.ClaimRef.NamespaceProperty == claim.Metadata.NamespaceProperty))
        {
            // A claim that names its PV: take it if nobody else has.
            bound = await _c.Cluster.PatchVolumeAsync(bound, new JsonObject { ["spec"] = new JsonObject { ["claimRef"] = ClaimRef(claim) } }, status: false, ct).ConfigureAwait(false);
        }

        if (bound.Spec.ClaimRef?.Uid != claim.Metadata.Uid)
        {
            await _c.Events.RecordAsync(claim, EventRecorder.Warning, "FailedBinding", $"volume \"{volumeName}\" already bound to a different claim.", ct).ConfigureAwait(false);
            return Outcome.Done;
        }

        await BindAsync(claim, bound, ct).ConfigureAwait(false);
        return Outcome.Done;
    }

    private async Task BindAsync(V1PersistentVolumeClaim claim, V1PersistentVolume pv, CancellationToken ct)
    {
        if (pv.Status?.Phase != "Bound")
        {
            await _c.Cluster.PatchVolumeAsync(pv, new JsonObject { ["status"] = new JsonObject { ["phase"] = "Bound" } }, status: true, ct).ConfigureAwait(false);
        }

        // The PV provisioned for this very claim accounts for its volume: the provisioner's finalizer goes in this write.
        var finalizers = Finalizers(claim, dropProvisioning: pv.Metadata.Name == Names.VolumeName(claim.Metadata.Uid));
        if (claim.Spec?.VolumeName != pv.Metadata.Name || Cluster.Annotation(claim.Metadata, Names.BindCompletedAnnotation) != "yes" || finalizers is not null)
        {
            var annotations = new JsonObject { [Names.BindCompletedAnnotation] = "yes" };
            if (string.IsNullOrEmpty(claim.Spec?.VolumeName))
            {
                annotations[Names.BoundByControllerAnnotation] = "yes";
            }

            var metadata = new JsonObject { ["annotations"] = annotations };
            if (finalizers is not null)
            {
                metadata["finalizers"] = finalizers;
            }

            claim = await _c.Cluster.PatchClaimAsync(
                claim,
                new JsonObject
                {
                    ["metadata"] = metadata,
                    ["spec"] = new JsonObject { ["volumeName"] = pv.Metadata.Name },
                },
                status: false,
                ct).ConfigureAwait(false);
        }

        if (claim.Status?.Phase != "Bound")
        {
            var status = new JsonObject
            {
                ["phase"] = "Bound",
                ["accessModes"] = new JsonArray([.. (pv.Spec.AccessModes ?? []).Select(m => (JsonNode)JsonValue.Create(m))]),
            };
            if (pv.Spec.Capacity is { } capacity && capacity.TryGetValue("storage", out var size))
            {
                status["capacity"] = new JsonObject { ["storage"] = size.ToString() };
            }

            await _c.Cluster.PatchClaimAsync(claim, new JsonObject { ["status"] = status }, status: true, ct).ConfigureAwait(false);
        }
    }

    /// <summary>Reserves the smallest Available PV that fits a claim with no provisioner-made PV, as static provisioning does.</summary>
    private async Task<V1PersistentVolume?> ReserveAvailableAsync(V1PersistentVolumeClaim claim, CancellationToken ct)
    {
        long request = Quantities.Request(claim) ?? 0;
        string className = claim.Spec?.StorageClassName ?? Provisioner.ClassOf(_c.Cluster, claim)?.Metadata.Name ?? "";
        string mode = claim.Spec?.VolumeMode ?? "Filesystem";
        var modes = claim.Spec?.AccessModes ?? [];
        var candidate = _c.Cluster.Volumes.ByIndex(Indexes.AvailableVolume, "")
            .Where(v => v.Spec?.ClaimRef is null && v.Metadata.DeletionTimestamp is null && v.Status?.Phase is null or "Available"
                && (v.Spec?.StorageClassName ?? "") == className
                && (v.Spec?.VolumeMode ?? "Filesystem") == mode
                && (Quantities.Capacity(v) ?? 0) >= request
                && modes.All(m => v.Spec?.AccessModes?.Contains(m) == true))
            .OrderBy(v => Quantities.Capacity(v) ?? 0)
            .ThenBy(v => v.Metadata.Name, StringComparer.Ordinal)
            .FirstOrDefault();
        if (candidate is null || claim.Spec?.DataSource is not null || claim.Spec?.DataSourceRef is not null)
        {
            return null;
        }

        return await _c.Cluster.PatchVolumeAsync(candidate, new JsonObject { ["spec"] = new JsonObject { ["claimRef"] = ClaimRef(claim) } }, status: false, ct).ConfigureAwait(false);
    }

    private async Task WaitForProvisionerAsync(V1PersistentVolumeClaim claim, CancellationToken ct)
    {
        var storageClass = Provisioner.ClassOf(_c.Cluster, claim);
        bool announce = storageClass?.Provisioner is { Length: > 0 } named && Cluster.Annotation(claim.Metadata, Names.StorageProvisionerAnnotation) != named;
        var metadata = new JsonObject();
        if (announce)
        {
            metadata["annotations"] = new JsonObject { [Names.StorageProvisionerAnnotation] = storageClass!.Provisioner, [Names.BetaStorageProvisionerAnnotation] = storageClass.Provisioner };
        }

        if (Finalizers(claim, dropProvisioning: false) is { } finalizers)
        {
            metadata["finalizers"] = finalizers;
        }

        if (metadata.Count > 0)
        {
            claim = await _c.Cluster.PatchClaimAsync(claim, new JsonObject { ["metadata"] = metadata }, status: false, ct).ConfigureAwait(false);
        }

        if (announce)
        {
            string provisioner = storageClass!.Provisioner;
            await _c.Events.RecordAsync(
                claim,
                EventRecorder.Normal,
                "ExternalProvisioning",
                $"Waiting for a volume to be created either by the external provisioner '{provisioner}' or manually by the system administrator. If volume creation is delayed, please verify that the provisioner is running and correctly registered.",
                ct).ConfigureAwait(false);
        }

        if (claim.Status?.Phase is null)
        {
            await SetClaimPhaseAsync(claim, "Pending", ct).ConfigureAwait(false);
        }
    }

    /// <summary>
    /// The claim's finalizers with <c>kubernetes.io/pvc-protection</c> added and, when asked, Dolly's provisioning
    /// finalizer dropped; null when that changes nothing.
    /// </summary>
    private static JsonArray? Finalizers(V1PersistentVolumeClaim claim, bool dropProvisioning)
    {
        var current = claim.Metadata.Finalizers ?? [];
        var next = current.Where(f => !(dropProvisioning && f == Names.ProvisioningFinalizer)).ToList();
        if (!next.Contains(Names.PvcProtectionFinalizer))
        {
            next.Add(Names.PvcProtectionFinalizer);
        }

        return next.SequenceEqual(current, StringComparer.Ordinal) ? null : new JsonArray([.. next.Select(f => (JsonNode)JsonValue.Create(f))]);
    }

    private async Task<Outcome> ReleaseProtectionAsync(V1PersistentVolumeClaim claim, CancellationToken ct)
    {
        if (!Cluster.HasFinalizer(claim.Metadata, Names.PvcProtectionFinalizer))
        {
            return Outcome.Done;
        }

        var pods = await _c.Cluster.Client.CoreV1.ListNamespacedPodAsync(claim.Metadata.NamespaceProperty, cancellationToken: ct).ConfigureAwait(false);
        var users = pods.Items
            .Where(p => p.Status?.Phase is not ("Succeeded" or "Failed")
                && p.Spec?.Volumes?.Any(v => v.PersistentVolumeClaim?.ClaimName == claim.Metadata.Name) == true)
            .Select(p => p.Metadata.Name)
            .ToList();
        if (users.Count > 0)
        {
            // Pods come and go without a watch here; look again shortly.
            return Outcome.After(TimeSpan.FromSeconds(5));
        }

        await _c.Cluster.PatchClaimAsync(claim, Cluster.FinalizerPatch(claim.Metadata, Names.PvcProtectionFinalizer, false)!, status: false, ct).ConfigureAwait(false);
        return Outcome.Done;
    }

    private async Task<Outcome> ReconcileVolumeAsync(string name, CancellationToken ct)
    {
        var pv = _c.Cluster.Volumes.Get(name);
        if (pv is null || pv.Metadata.DeletionTimestamp is not null)
        {
            return Outcome.Done;
        }

        string phase;
        var r = pv.Spec?.ClaimRef;
        if (r is null)
        {
            phase = "Available";
        }
        else
        {
            var claim = _c.Cluster.Claims.Get(r.NamespaceProperty, r.Name);
            if (string.IsNullOrEmpty(r.Uid))
            {
                phase = "Available";
            }
            else if (claim is null || claim.Metadata.Uid != r.Uid)
            {
                phase = "Released";
            }
            else
            {
                phase = claim.Spec?.VolumeName == pv.Metadata.Name ? "Bound" : pv.Status?.Phase ?? "Available";
            }
        }

        if (pv.Status?.Phase != phase && !(pv.Status?.Phase == "Failed" && phase == "Released"))
        {
            await _c.Cluster.PatchVolumeAsync(pv, new JsonObject { ["status"] = new JsonObject { ["phase"] = phase } }, status: true, ct).ConfigureAwait(false);
        }

        return Outcome.Done;
    }

    private async Task SetClaimPhaseAsync(V1PersistentVolumeClaim claim, string phase, CancellationToken ct) =>
        await _c.Cluster.PatchClaimAsync(claim, new JsonObject { ["status"] = new JsonObject { ["phase"] = phase } }, status: true, ct).ConfigureAwait(false);

    private static JsonObject ClaimRef(V1PersistentVolumeClaim claim) => new()
    {
        ["apiVersion"] = "v1",
        ["kind"] = "PersistentVolumeClaim",
        ["name"] = claim.Metadata.Name,
        ["namespace"] = claim.Metadata.NamespaceProperty,
        ["uid"] = claim.Metadata.Uid,
        ["resourceVersion"] = claim.Metadata.ResourceVersion,
    };
}
