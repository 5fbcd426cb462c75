using System.Globalization;
using System.Text.Json.Nodes;
using Dolly.Controllers.Model;
using Dolly.Controllers.Runtime;
using Microsoft.Extensions.Logging;
using Dolly.Csi.V1;
using Grpc.Core;
using k8s;
using k8s.Models;

namespace Dolly.Controllers;

/// <summary>
/// The external provisioner's part for claims of this driver's StorageClasses: checks the data source
/// (a VolumeSnapshot to restore, a claim to clone, in the claim's namespace or, through dataSourceRef,
/// another one that grants it with a ReferenceGrant), calls CreateVolume with it and creates the PV with
/// the claimRef, CSI handle, capacity and reclaim policy. A source that fails a check leaves the claim
/// Pending with a ProvisioningFailed event that says why; nothing is created.
/// </summary>
internal sealed class Provisioner : Reconciler
{
    private readonly ControllerContext _c;

    public Provisioner(ControllerContext context)
        : base("provisioner", context.Options.RetryBaseDelay, context.Options.RetryMaxDelay, context.Loggers.CreateLogger<Provisioner>())
    {
        _c = context;
        var cluster = context.Cluster;
        cluster.Claims.OnChange((_, claim) =>
        {
            if (claim is null)
            {
                return;
            }

            Queue.Add(Informer<V1PersistentVolumeClaim>.Key(claim));

            // Clones waiting for this claim to be bound.
            EnqueuePending(cluster.Claims.ByIndex(Indexes.ClaimByDataSource, Indexes.DataSourceValue(Names.ClaimKind, claim.Metadata.NamespaceProperty, claim.Metadata.Name)));
        });
        cluster.Snapshots.OnChange((_, s) =>
        {
            if (s is not null)
            {
                EnqueuePending(cluster.Claims.ByIndex(Indexes.ClaimByDataSource, Indexes.DataSourceValue(Names.SnapshotKind, s.Metadata.NamespaceProperty, s.Metadata.Name)));
            }
        });
        cluster.Volumes.OnChange((_, pv) =>
        {
            if (pv?.Spec?.ClaimRef is { Name.Length: > 0 } r)
            {
                // Clones wait for their source's PV.
                EnqueuePending(cluster.Claims.ByIndex(Indexes.ClaimByDataSource, Indexes.DataSourceValue(Names.ClaimKind, r.NamespaceProperty, r.Name)));
            }
        });

        // A grant concerns the waiting claims whose source is in its namespace; a class, those that ask for it (or
        // for the default class, which it may be or have been).
        cluster.Grants.OnChange((old, now) => EnqueuePending(cluster.Claims.ByIndex(Indexes.PendingClaimBySourceNamespace, (now ?? old)!.Metadata.NamespaceProperty)));
        cluster.StorageClasses.OnChange((old, now) =>
        {
            EnqueuePending(cluster.Claims.ByIndex(Indexes.PendingClaimByClass, (now ?? old)!.Metadata.Name));
            EnqueuePending(cluster.Claims.ByIndex(Indexes.PendingClaimByClass, ""));
        });
    }

    private void EnqueuePending(IReadOnlyList<V1PersistentVolumeClaim> claims)
    {
        foreach (var claim in claims)
        {
            if (string.IsNullOrEmpty(claim.Spec?.VolumeName) && claim.Metadata.DeletionTimestamp is null)
            {
                Queue.Add(Informer<V1PersistentVolumeClaim>.Key(claim));
            }
        }
    }

    /// <summary>A claim's data source: dataSourceRef when set (it may name another namespace), else dataSource.</summary>
    internal sealed record DataSource(string ApiGroup, string Kind, string Name, string Namespace, bool ViaRef);

    internal static DataSource? Source(V1PersistentVolumeClaim claim)
    {
        string ns = claim.Metadata.NamespaceProperty;
        if (claim.Spec?.DataSourceRef is { } r && !string.IsNullOrEmpty(r.Name))
        {
            return new DataSource(r.ApiGroup ?? "", r.Kind, r.Name, string.IsNullOrEmpty(r.NamespaceProperty) ? ns : r.NamespaceProperty, true);
        }

        if (claim.Spec?.DataSource is { } d && !string.IsNullOrEmpty(d.Name))
        {
            return new DataSource(d.ApiGroup ?? "", d.Kind, d.Name, ns, false);
        }

        return null;
    }

    /// <summary>The StorageClass a claim asks for: its storageClassName, or the default class when it names none.</summary>
    internal static V1StorageClass? ClassOf(Cluster cluster, V1PersistentVolumeClaim claim)
    {
        string? name = claim.Spec?.StorageClassName;
        if (name is null)
        {
            var defaults = cluster.StorageClasses.List().Where(c => Cluster.Annotation(c.Metadata, Names.DefaultStorageClassAnnotation) == "true").ToList();
            return defaults.Count == 1 ? defaults[0] : null;
        }

        return name.Length == 0 ? null : cluster.StorageClasses.Get(name);
    }

    protected override async Task<Outcome> ReconcileAsync(string key, CancellationToken cancellationToken)
    {
        var claim = _c.Cluster.Claims.Get(key);
        if (claim is null)
        {
            return Outcome.Done;
        }

        bool holding = Cluster.HasFinalizer(claim.Metadata, Names.ProvisioningFinalizer);
        if (!holding && (claim.Metadata.DeletionTimestamp is not null || !string.IsNullOrEmpty(claim.Spec?.VolumeName)))
        {
            return Outcome.Done;
        }

        string? className = claim.Spec?.StorageClassName;
        var storageClass = ClassOf(_c.Cluster, claim);
        if (storageClass is null)
        {
            if (!string.IsNullOrEmpty(className) && _c.Options.BindVolumes)
            {
                // Nobody else would say it when there is no kube-controller-manager.
                await FailAsync(claim, $"storageclass.storage.k8s.io \"{className}\" not found", cancellationToken).ConfigureAwait(false);
            }

            return Outcome.Done;
        }

        if (storageClass.Provisioner != _c.Options.DriverName)
        {
            return Outcome.Done;
        }

        string volumeName = Names.VolumeName(claim.Metadata.Uid);
        if (_c.Cluster.Volumes.Get(volumeName) is not null)
        {
            // The PV accounts for the volume now (its reclaim policy decides its fate): let the claim go.
            await LetGoAsync(claim, cancellationToken).ConfigureAwait(false);
            return Outcome.Done;
        }

        if (claim.Metadata.DeletionTimestamp is not null)
        {
            // Deleted while CreateVolume may have run: repeat it exactly (it is idempotent) and make the PV, whose
            // claim is gone, so the volume is reclaimed the ordinary way instead of leaking.
            return await FinishForDeletedClaimAsync(claim, storageClass, volumeName, cancellationToken).ConfigureAwait(false);
        }

        long? request = Quantities.Request(claim);
        if (request is null or <= 0)
        {
            await FailAsync(claim, "spec.resources.requests.storage must be set to a positive size", cancellationToken).ConfigureAwait(false);
            return Outcome.Done;
        }

        string volumeMode = claim.Spec?.VolumeMode ?? "Filesystem";
        VolumeContentSource? contentSource = null;
        string? admitted = holding ? Cluster.Annotation(claim.Metadata, Names.ProvisioningSourceAnnotation) : null;
        if (Source(claim) is { } source)
        {
            var (resolved, problem) = ResolveSource(claim, source, storageClass, request.Value, volumeMode, admitted);
            if (problem is not null)
            {
                await FailAsync(claim, problem, cancellationToken).ConfigureAwait(false);
                throw new RetryLaterException(problem);
            }

            if (resolved is null)
            {
                // A kind left to a volume populator.
                return Outcome.Done;
            }

            contentSource = resolved;
        }

        string claimName = $"{claim.Metadata.NamespaceProperty}/{claim.Metadata.Name}";
        await _c.Events.RecordAsync(claim, EventRecorder.Normal, "Provisioning", $"External provisioner is provisioning volume for claim \"{claimName}\"", cancellationToken).ConfigureAwait(false);

        // Before the driver creates anything, the claim records that it is being provisioned, and from what.
        string recorded = contentSource?.Snapshot is { } snap ? SnapshotSourceRecord(snap.SnapshotId) : contentSource?.Volume is { } vol ? "volume:" + vol.VolumeId : "";
        long capacity = holding && long.TryParse(Cluster.Annotation(claim.Metadata, Names.ProvisioningCapacityAnnotation), CultureInfo.InvariantCulture, out long first)
            ? first
            : request.Value;
        if (!holding || Cluster.Annotation(claim.Metadata, Names.ProvisioningSourceAnnotation) != recorded
            || Cluster.Annotation(claim.Metadata, Names.ProvisioningCapacityAnnotation) is null)
        {
            var finalizers = new JsonArray([.. (claim.Metadata.Finalizers ?? []).Where(f => f != Names.ProvisioningFinalizer).Append(Names.ProvisioningFinalizer).Select(f => (JsonNode)JsonValue.Create(f))]);
            claim = await _c.Cluster.PatchClaimAsync(
                claim,
                new JsonObject
                {
                    ["metadata"] = new JsonObject
                    {
                        ["finalizers"] = finalizers,
                        ["annotations"] = new JsonObject
                        {
                            [Names.ProvisioningSourceAnnotation] = recorded,
                            [Names.ProvisioningCapacityAnnotation] = capacity.ToString(CultureInfo.InvariantCulture),
                        },
                    },
                },
                status: false,
                cancellationToken).ConfigureAwait(false);
            if (contentSource?.Snapshot is not null)
            {
                claim = await ConfirmRestoreAsync(claim, Source(claim)!, cancellationToken).ConfigureAwait(false);
            }
        }

        var create = CreateRequest(claim, storageClass, volumeName, capacity, volumeMode, contentSource);
        CreateVolumeResponse created;
        try
        {
            created = await _c.Csi.CreateVolumeAsync(create, _c.CsiCall(cancellationToken)).ConfigureAwait(false);
        }
        catch (RpcException ex) when (!cancellationToken.IsCancellationRequested)
        {
            string message = $"failed to provision volume with StorageClass \"{storageClass.Metadata.Name}\": {ControllerContext.Describe(ex)}";
            await FailAsync(claim, message, cancellationToken).ConfigureAwait(false);
            throw new RetryLaterException(message, ex);
        }

        await CreatePersistentVolumeAsync(claim, storageClass, volumeName, volumeMode, created, cancellationToken).ConfigureAwait(false);
        await _c.Events.RecordAsync(claim, EventRecorder.Normal, "ProvisioningSucceeded", $"Successfully provisioned volume {volumeName}", cancellationToken).ConfigureAwait(false);
        await LetGoAsync(claim, cancellationToken).ConfigureAwait(false);
        return Outcome.Done;
    }

    /// <summary>
    /// A restore is recorded on its claim (finalizer and source) before anything is created, and only then is the
    /// snapshot read again from the API server: the snapshot controller finishes a snapshot's deletion only after
    /// a fresh read of the claims finds no recorded restore from it, so either it saw this record and waits for the
    /// restore, or the deletion had begun before this read, and then the restore is refused here, its record taken
    /// back in one write so it holds nothing. Never both proceed; never both wait.
    /// </summary>
    private async Task<V1PersistentVolumeClaim> ConfirmRestoreAsync(V1PersistentVolumeClaim claim, DataSource source, CancellationToken ct)
    {
        var snapshot = await _c.Cluster.ReadSnapshotAsync(source.Namespace, source.Name, ct).ConfigureAwait(false);
        if (snapshot is not null && snapshot.Metadata.DeletionTimestamp is null)
        {
            return claim;
        }

        var finalizers = new JsonArray([.. (claim.Metadata.Finalizers ?? []).Where(f => f != Names.ProvisioningFinalizer).Select(f => (JsonNode)JsonValue.Create(f))]);
        await _c.Cluster.PatchClaimAsync(
            claim,
            new JsonObject
            {
                ["metadata"] = new JsonObject
                {
                    ["finalizers"] = finalizers,
                    ["annotations"] = new JsonObject { [Names.ProvisioningSourceAnnotation] = null, [Names.ProvisioningCapacityAnnotation] = null },
                },
            },
            status: false,
            ct).ConfigureAwait(false);
        string problem = snapshot is null
            ? $"VolumeSnapshot {source.Namespace}/{source.Name} was deleted before the restore began"
            : DeletedSnapshotProblem($"{source.Namespace}/{source.Name}");
        await FailAsync(claim, problem, ct).ConfigureAwait(false);
        throw new RetryLaterException(problem);
    }

    private static string DeletedSnapshotProblem(string name) =>
        $"VolumeSnapshot {name} is being deleted and cannot be restored: its deletion began before this claim's restore did";

    /// <summary>
    /// Drops the provisioning finalizer once the claim's PV exists. With the volume binder on, the write that
    /// binds the claim drops it too (one write instead of two; each write shows up in `kubectl get pvc -w`), so
    /// here it is dropped only from a claim being deleted (never bound) or already bound.
    /// </summary>
    private Task LetGoAsync(V1PersistentVolumeClaim claim, CancellationToken ct) =>
        _c.Options.BindVolumes && claim.Metadata.DeletionTimestamp is null && string.IsNullOrEmpty(claim.Spec?.VolumeName)
            ? Task.CompletedTask
            : ReleaseAsync(claim, ct);

    /// <summary>What a claim restoring from the snapshot with this driver handle records in <see cref="Names.ProvisioningSourceAnnotation"/>.</summary>
    internal static string SnapshotSourceRecord(string snapshotHandle) => SnapshotRecordPrefix + snapshotHandle;

    /// <summary>Whether the claim recorded a restore (from any snapshot): it is past admission, and a deletion of its snapshot waits for it.</summary>
    internal static bool RecordedRestore(V1PersistentVolumeClaim claim) =>
        Cluster.HasFinalizer(claim.Metadata, Names.ProvisioningFinalizer)
        && Cluster.Annotation(claim.Metadata, Names.ProvisioningSourceAnnotation) is { } recorded
        && recorded.StartsWith(SnapshotRecordPrefix, StringComparison.Ordinal);

    private const string SnapshotRecordPrefix = "snapshot:";

    private static CreateVolumeRequest CreateRequest(V1PersistentVolumeClaim claim, V1StorageClass storageClass, string volumeName, long request, string volumeMode, VolumeContentSource? contentSource)
    {
        var create = new CreateVolumeRequest
        {
            Name = volumeName,
            CapacityRange = new CapacityRange { RequiredBytes = request },
            VolumeContentSource = contentSource,
        };
        create.VolumeCapabilities.Add(Capability(volumeMode, storageClass, claim.Spec?.AccessModes));
        foreach (var (k, v) in storageClass.Parameters ?? new Dictionary<string, string>())
        {
            if (!k.StartsWith(Names.ReservedParameterPrefix, StringComparison.Ordinal))
            {
                create.Parameters[k] = v;
            }
        }

        return create;
    }

    private async Task<Outcome> FinishForDeletedClaimAsync(V1PersistentVolumeClaim claim, V1StorageClass storageClass, string volumeName, CancellationToken ct)
    {
        // The cache may lag: a PV made (and perhaps already being reclaimed) means there is nothing to finish.
        try
        {
            await _c.Cluster.Client.CoreV1.ReadPersistentVolumeAsync(volumeName, cancellationToken: ct).ConfigureAwait(false);
            await ReleaseAsync(claim, ct).ConfigureAwait(false);
            return Outcome.Done;
        }
        catch (k8s.Autorest.HttpOperationException ex) when (ex.Response.StatusCode == System.Net.HttpStatusCode.NotFound)
        {
        }

        string recorded = Cluster.Annotation(claim.Metadata, Names.ProvisioningSourceAnnotation) ?? "";
        VolumeContentSource? source = recorded.StartsWith(SnapshotRecordPrefix, StringComparison.Ordinal)
            ? new VolumeContentSource { Snapshot = new VolumeContentSource.Types.SnapshotSource { SnapshotId = recorded[SnapshotRecordPrefix.Length..] } }
            : recorded.StartsWith("volume:", StringComparison.Ordinal)
                ? new VolumeContentSource { Volume = new VolumeContentSource.Types.VolumeSource { VolumeId = recorded["volume:".Length..] } }
                : null;
        string volumeMode = claim.Spec?.VolumeMode ?? "Filesystem";
        long capacity = long.TryParse(Cluster.Annotation(claim.Metadata, Names.ProvisioningCapacityAnnotation), CultureInfo.InvariantCulture, out long first)
            ? first
            : Quantities.Request(claim) ?? 0;
        var create = CreateRequest(claim, storageClass, volumeName, capacity, volumeMode, source);
        CreateVolumeResponse created;
        try
        {
            created = await _c.Csi.CreateVolumeAsync(create, _c.CsiCall(ct)).ConfigureAwait(false);
        }
        catch (RpcException ex) when (!ct.IsCancellationRequested && ex.StatusCode is StatusCode.NotFound)
        {
            // The source is gone, so no volume can be made from it now; one made earlier would have been found
            // by name first. Nothing to reclaim.
            await ReleaseAsync(claim, ct).ConfigureAwait(false);
            return Outcome.Done;
        }
        catch (RpcException ex) when (!ct.IsCancellationRequested)
        {
            string message = $"claim deleted while its volume was being provisioned; finishing the volume so it can be reclaimed failed: {ControllerContext.Describe(ex)}";
            await FailAsync(claim, message, ct).ConfigureAwait(false);
            throw new RetryLaterException(message, ex);
        }

        await CreatePersistentVolumeAsync(claim, storageClass, volumeName, volumeMode, created, ct).ConfigureAwait(false);
        await ReleaseAsync(claim, ct).ConfigureAwait(false);
        return Outcome.Done;
    }

    /// <summary>
    /// Drops the provisioning finalizer once the PV exists. Retried here against fresh reads rather than by
    /// re-running the reconcile: a second pass could find the PV already reclaimed and make the volume again.
    /// </summary>
    private async Task ReleaseAsync(V1PersistentVolumeClaim claim, CancellationToken ct)
    {
        for (int attempt = 0; ; attempt++)
        {
            if (Cluster.FinalizerPatch(claim.Metadata, Names.ProvisioningFinalizer, false) is not { } patch)
            {
                return;
            }

            try
            {
                await _c.Cluster.PatchClaimAsync(claim, patch, status: false, ct).ConfigureAwait(false);
                return;
            }
            catch (k8s.Autorest.HttpOperationException ex) when (ex.Response.StatusCode == System.Net.HttpStatusCode.Conflict && attempt < 20)
            {
                claim = await _c.Cluster.Client.CoreV1.ReadNamespacedPersistentVolumeClaimAsync(claim.Metadata.Name, claim.Metadata.NamespaceProperty, cancellationToken: ct).ConfigureAwait(false);
            }
            catch (k8s.Autorest.HttpOperationException ex) when (ex.Response.StatusCode == System.Net.HttpStatusCode.NotFound)
            {
                return;
            }
        }
    }

    private async Task CreatePersistentVolumeAsync(V1PersistentVolumeClaim claim, V1StorageClass storageClass, string volumeName, string volumeMode, CreateVolumeResponse created, CancellationToken ct)
    {
        var attributes = new Dictionary<string, string>(created.Volume.VolumeContext, StringComparer.Ordinal);
        var pv = new V1PersistentVolume
        {
            ApiVersion = "v1",
            Kind = "PersistentVolume",
            Metadata = new V1ObjectMeta
            {
                Name = volumeName,
                Annotations = new Dictionary<string, string> { [Names.ProvisionedByAnnotation] = _c.Options.DriverName },
                Finalizers = [Names.PvDeletionFinalizer],
            },
            Spec = new V1PersistentVolumeSpec
            {
                Capacity = new Dictionary<string, ResourceQuantity> { ["storage"] = Quantities.FromBytes(created.Volume.CapacityBytes) },
                AccessModes = claim.Spec?.AccessModes is { Count: > 0 } modes ? [.. modes] : ["ReadWriteOnce"],
                PersistentVolumeReclaimPolicy = storageClass.ReclaimPolicy ?? "Delete",
                StorageClassName = storageClass.Metadata.Name,
                VolumeMode = volumeMode,
                MountOptions = storageClass.MountOptions is { Count: > 0 } mo ? [.. mo] : null,
                ClaimRef = new V1ObjectReference
                {
                    ApiVersion = "v1",
                    Kind = "PersistentVolumeClaim",
                    Name = claim.Metadata.Name,
                    NamespaceProperty = claim.Metadata.NamespaceProperty,
                    Uid = claim.Metadata.Uid,
                    ResourceVersion = claim.Metadata.ResourceVersion,
                },
                Csi = new V1CSIPersistentVolumeSource
                {
                    Driver = _c.Options.DriverName,
                    VolumeHandle = created.Volume.VolumeId,
                    FsType = volumeMode == "Block" ? null : FsType(storageClass),
                    VolumeAttributes = attributes.Count > 0 ? attributes : null,
                },
            },
        };
        await _c.Cluster.CreateVolumeAsync(pv, ct).ConfigureAwait(false);
    }

    /// <summary>
    /// Checks a data source the way the upstream provisioner does. Returns the CSI content source, or
    /// (null, null) for a kind this provisioner leaves to a populator, or a problem to report.
    /// </summary>
    private (VolumeContentSource? Source, string? Problem) ResolveSource(V1PersistentVolumeClaim claim, DataSource source, V1StorageClass storageClass, long request, string volumeMode, string? admitted)
    {
        bool isSnapshot = source.Kind == "VolumeSnapshot" && source.ApiGroup == Names.SnapshotGroup;
        bool isClaim = source.Kind == "PersistentVolumeClaim" && source.ApiGroup.Length == 0;
        if (!isSnapshot && !isClaim)
        {
            return (null, null);
        }

        string ns = claim.Metadata.NamespaceProperty;
        if (source.Namespace != ns)
        {
            if (!Granted(ns, source))
            {
                return (null, $"accessing {source.Kind} {source.Namespace}/{source.Name} from namespace {ns} needs a ReferenceGrant in namespace {source.Namespace} " +
                    $"allowing PersistentVolumeClaims from namespace {ns} (from: group \"\", kind PersistentVolumeClaim, namespace {ns}; to: group \"{source.ApiGroup}\", kind {source.Kind}); none was found");
            }
        }

        return isSnapshot ? ResolveSnapshot(source, storageClass, request, volumeMode, admitted) : ResolveClaim(claim, source, request, volumeMode);
    }

    private bool Granted(string fromNamespace, DataSource source) =>
        _c.Cluster.Grants.InNamespace(source.Namespace).Any(g =>
            g.Spec.From.Any(f => f.Group.Length == 0 && f.Kind == Names.ClaimKind && f.Namespace == fromNamespace)
            && g.Spec.To.Any(t => t.Group == source.ApiGroup && t.Kind == source.Kind && (string.IsNullOrEmpty(t.Name) || t.Name == source.Name)));

    // admitted: the source the claim recorded for its restore, if it did. A restore recorded from this snapshot
    // proceeds even once the snapshot's deletion has begun (the deletion waits for it); any other is refused.
    private (VolumeContentSource?, string?) ResolveSnapshot(DataSource source, V1StorageClass storageClass, long request, string volumeMode, string? admitted)
    {
        string name = $"{source.Namespace}/{source.Name}";
        var snapshot = _c.Cluster.Snapshots.Get(source.Namespace, source.Name);
        if (snapshot is null)
        {
            return (null, $"error getting handle for DataSource Type VolumeSnapshot by Name {source.Name}: VolumeSnapshot {name} does not exist");
        }

        string? bound = snapshot.Status?.BoundVolumeSnapshotContentName;
        var content = string.IsNullOrEmpty(bound) ? null : _c.Cluster.Contents.Get(bound);
        if (snapshot.Metadata.DeletionTimestamp is not null
            && (content?.Status?.SnapshotHandle is not { Length: > 0 } handle || admitted != SnapshotSourceRecord(handle)))
        {
            return (null, DeletedSnapshotProblem(name));
        }

        if (content is null)
        {
            return (null, $"VolumeSnapshot {name} is not bound to a VolumeSnapshotContent yet");
        }

        if (!SnapshotController.BelongsTo(content, snapshot, allowEmptyUid: false))
        {
            return (null, $"VolumeSnapshotContent {content.Metadata.Name} does not point back to VolumeSnapshot {name}");
        }

        if (content.Spec.Driver != storageClass.Provisioner)
        {
            return (null, $"VolumeSnapshot {name} is on driver {content.Spec.Driver}, but StorageClass {storageClass.Metadata.Name} provisions with {storageClass.Provisioner}");
        }

        if (snapshot.Status?.ReadyToUse != true || content.Status?.ReadyToUse != true || string.IsNullOrEmpty(content.Status.SnapshotHandle))
        {
            return (null, $"VolumeSnapshot {name} is not ready to use yet");
        }

        long? restoreSize = content.Status.RestoreSize ?? Quantities.ToBytes(snapshot.Status.RestoreSize);
        if (restoreSize is { } size && request < size)
        {
            return (null, $"requested volume size {request} is less than the size {size} for the source snapshot {source.Name}");
        }

        string sourceMode = content.Spec.SourceVolumeMode ?? "Filesystem";
        if (sourceMode != volumeMode && Cluster.Annotation(content.Metadata, Names.AllowVolumeModeChangeAnnotation) != "true")
        {
            return (null, $"cannot restore VolumeSnapshot {name} of a {sourceMode} volume into a {volumeMode} claim: the volume modes differ and VolumeSnapshotContent {content.Metadata.Name} lacks {Names.AllowVolumeModeChangeAnnotation}: \"true\"");
        }

        return (new VolumeContentSource { Snapshot = new VolumeContentSource.Types.SnapshotSource { SnapshotId = content.Status.SnapshotHandle } }, null);
    }

    private (VolumeContentSource?, string?) ResolveClaim(V1PersistentVolumeClaim claim, DataSource source, long request, string volumeMode)
    {
        string name = $"{source.Namespace}/{source.Name}";
        var sourceClaim = _c.Cluster.Claims.Get(source.Namespace, source.Name);
        if (sourceClaim is null)
        {
            return (null, $"the source PersistentVolumeClaim {name} does not exist");
        }

        if (sourceClaim.Metadata.DeletionTimestamp is not null)
        {
            return (null, $"the source PersistentVolumeClaim {name} is being deleted");
        }

        if (sourceClaim.Status?.Phase != "Bound" || string.IsNullOrEmpty(sourceClaim.Spec?.VolumeName))
        {
            return (null, $"the source PersistentVolumeClaim {name} is not Bound");
        }

        if (string.IsNullOrEmpty(claim.Spec?.StorageClassName) || string.IsNullOrEmpty(sourceClaim.Spec.StorageClassName))
        {
            return (null, $"both the clone and its source PersistentVolumeClaim {name} must name a StorageClass");
        }

        long? sourceSize = Quantities.Request(sourceClaim);
        if (sourceSize is { } size && request < size)
        {
            return (null, $"requested volume size {request} is less than the size {size} for the source PersistentVolumeClaim {source.Name}");
        }

        var volume = _c.Cluster.Volumes.Get(sourceClaim.Spec.VolumeName);
        if (volume?.Spec?.Csi is null || volume.Spec.Csi.Driver != _c.Options.DriverName)
        {
            return (null, $"the source PersistentVolumeClaim {name} is not a volume of driver {_c.Options.DriverName}");
        }

        string sourceMode = volume.Spec.VolumeMode ?? "Filesystem";
        if (sourceMode != volumeMode)
        {
            return (null, $"the source PersistentVolumeClaim {name} has volume mode {sourceMode}, the clone {volumeMode}: they must match");
        }

        return (new VolumeContentSource { Volume = new VolumeContentSource.Types.VolumeSource { VolumeId = volume.Spec.Csi.VolumeHandle } }, null);
    }

    internal static VolumeCapability Capability(string volumeMode, V1StorageClass? storageClass, IEnumerable<string>? accessModes)
    {
        var capability = new VolumeCapability { AccessMode = new VolumeCapability.Types.AccessMode { Mode = AccessMode(accessModes) } };
        if (volumeMode == "Block")
        {
            capability.Block = new VolumeCapability.Types.BlockVolume();
        }
        else
        {
            var mount = new VolumeCapability.Types.MountVolume { FsType = storageClass is null ? "" : FsType(storageClass) ?? "" };
            if (storageClass?.MountOptions is { } options)
            {
                mount.MountFlags.Add(options);
            }

            capability.Mount = mount;
        }

        return capability;
    }

    private static string? FsType(V1StorageClass storageClass) =>
        storageClass.Parameters is { } p && p.TryGetValue(Names.FsTypeParameter, out var fs) && fs.Length > 0 ? fs : "ext4";

    private static VolumeCapability.Types.AccessMode.Types.Mode AccessMode(IEnumerable<string>? modes)
    {
        var set = modes?.ToHashSet(StringComparer.Ordinal) ?? [];
        return set.Contains("ReadWriteMany") ? VolumeCapability.Types.AccessMode.Types.Mode.MultiNodeMultiWriter
            : set.Contains("ReadOnlyMany") && !set.Contains("ReadWriteOnce") ? VolumeCapability.Types.AccessMode.Types.Mode.MultiNodeReaderOnly
            : set.Contains("ReadWriteOncePod") ? VolumeCapability.Types.AccessMode.Types.Mode.SingleNodeSingleWriter
            : VolumeCapability.Types.AccessMode.Types.Mode.SingleNodeWriter;
    }

    private Task FailAsync(V1PersistentVolumeClaim claim, string message, CancellationToken ct) =>
        _c.Events.RecordAsync(claim, EventRecorder.Warning, "ProvisioningFailed", message, ct);
}
