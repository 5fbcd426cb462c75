using System.Globalization;
using System.Text.Json.Nodes;
using Dolly.Controllers.Metrics;
using Dolly.Controllers.Model;
using Dolly.Controllers.Runtime;
using Microsoft.Extensions.Logging;
using k8s;
using k8s.Models;

namespace Dolly.Controllers;

/// <summary>
/// The snapshot controller's part for VolumeSnapshots: resolves the class (or the driver's default),
/// creates the content of a dynamic snapshot, binds a pre-provisioned content only after the two-way
/// reference check, keeps the finalizers, copies status from content to snapshot, and on deletion waits
/// for restores in progress, then deletes the content when its policy says so. Errors go to status.error
/// and to Events; nothing is ever written to a content that belongs to another snapshot.
/// </summary>
internal sealed class SnapshotController : Reconciler
{
    private readonly ControllerContext _c;

    public SnapshotController(ControllerContext context)
        : base("snapshot-controller", context.Options.RetryBaseDelay, context.Options.RetryMaxDelay, context.Loggers.CreateLogger<SnapshotController>())
    {
        _c = context;
        var cluster = context.Cluster;
        cluster.Snapshots.OnChange((old, s) =>
        {
            if (s is not null)
            {
                Queue.Add(Informer<VolumeSnapshot>.Key(s));
            }
            else if (old?.Spec.Source.PersistentVolumeClaimName is { Length: > 0 } claim)
            {
                // A snapshot gone (perhaps without ever holding finalizers): its claim may be free to go now.
                Queue.Add(ClaimPrefix + Informer<VolumeSnapshot>.Key(old.Metadata.NamespaceProperty, claim));
            }
        });
        cluster.Contents.OnChange((old, now) =>
        {
            foreach (var content in new[] { old, now })
            {
                if (content is null)
                {
                    continue;
                }

                var r = content.Spec.VolumeSnapshotRef;
                if (!string.IsNullOrEmpty(r.Name))
                {
                    Queue.Add(Informer<VolumeSnapshot>.Key(r.NamespaceProperty, r.Name));
                }

                // Snapshots that name this content, including ones it does not belong to.
                foreach (var s in cluster.Snapshots.List())
                {
                    if (s.Spec.Source.VolumeSnapshotContentName == content.Metadata.Name || s.Status?.BoundVolumeSnapshotContentName == content.Metadata.Name)
                    {
                        Queue.Add(Informer<VolumeSnapshot>.Key(s));
                    }
                }
            }
        });
        cluster.Claims.OnChange((old, now) =>
        {
            var claim = now ?? old!;
            if (now is not null && Cluster.HasFinalizer(now.Metadata, Names.PvcAsSourceFinalizer))
            {
                Queue.Add(ClaimPrefix + Informer<V1PersistentVolumeClaim>.Key(now));
            }

            foreach (var s in cluster.Snapshots.List())
            {
                if (s.Metadata.NamespaceProperty == claim.Metadata.NamespaceProperty && s.Spec.Source.PersistentVolumeClaimName == claim.Metadata.Name)
                {
                    Queue.Add(Informer<VolumeSnapshot>.Key(s));
                }
            }

            // A snapshot waiting to be deleted until a restore from it is done.
            if (DataSourceSnapshot(claim) is { } source && cluster.Snapshots.Get(source.Namespace, source.Name) is { Metadata.DeletionTimestamp: not null })
            {
                Queue.Add(Informer<VolumeSnapshot>.Key(source.Namespace, source.Name));
            }
        });
        cluster.Volumes.OnChange((_, pv) =>
        {
            if (pv?.Spec?.ClaimRef is { } r)
            {
                foreach (var s in cluster.Snapshots.List())
                {
                    if (s.Metadata.NamespaceProperty == r.NamespaceProperty && s.Spec.Source.PersistentVolumeClaimName == r.Name)
                    {
                        Queue.Add(Informer<VolumeSnapshot>.Key(s));
                    }
                }
            }
        });
        cluster.SnapshotClasses.OnChange((_, _) =>
        {
            foreach (var s in cluster.Snapshots.List())
            {
                if (string.IsNullOrEmpty(s.Status?.BoundVolumeSnapshotContentName))
                {
                    Queue.Add(Informer<VolumeSnapshot>.Key(s));
                }
            }
        });
    }

    /// <summary>The snapshot a claim restores from (dataSourceRef first, then dataSource), or null.</summary>
    public static (string Namespace, string Name)? DataSourceSnapshot(V1PersistentVolumeClaim claim)
    {
        if (claim.Spec?.DataSourceRef is { } r && r.Kind == "VolumeSnapshot" && r.ApiGroup == Names.SnapshotGroup)
        {
            return (string.IsNullOrEmpty(r.NamespaceProperty) ? claim.Metadata.NamespaceProperty : r.NamespaceProperty, r.Name);
        }

        if (claim.Spec?.DataSource is { } d && d.Kind == "VolumeSnapshot" && d.ApiGroup == Names.SnapshotGroup)
        {
            return (claim.Metadata.NamespaceProperty, d.Name);
        }

        return null;
    }

    private const string ClaimPrefix = "claim:";

    protected override async Task<Outcome> ReconcileAsync(string key, CancellationToken cancellationToken)
    {
        if (key.StartsWith(ClaimPrefix, StringComparison.Ordinal))
        {
            string claimKey = key[ClaimPrefix.Length..];
            int slash = claimKey.IndexOf('/', StringComparison.Ordinal);
            await ReleaseClaimAsync(claimKey[..slash], claimKey[(slash + 1)..], cancellationToken).ConfigureAwait(false);
            return Outcome.Done;
        }

        var snapshot = _c.Cluster.Snapshots.Get(key);
        if (snapshot is null)
        {
            return Outcome.Done;
        }

        if (snapshot.Metadata.DeletionTimestamp is not null)
        {
            await DeleteAsync(snapshot, cancellationToken).ConfigureAwait(false);
            return Outcome.Done;
        }

        var source = snapshot.Spec.Source;
        bool fromClaim = !string.IsNullOrEmpty(source.PersistentVolumeClaimName);
        bool fromContent = !string.IsNullOrEmpty(source.VolumeSnapshotContentName);
        if (fromClaim == fromContent)
        {
            await FailAsync(snapshot, "SnapshotValidationError", "spec.source must name exactly one of persistentVolumeClaimName and volumeSnapshotContentName", cancellationToken).ConfigureAwait(false);
            return Outcome.Done;
        }

        StartOperations(snapshot, fromClaim);
        string? bound = snapshot.Status?.BoundVolumeSnapshotContentName;
        if (string.IsNullOrEmpty(bound))
        {
            if (fromContent)
            {
                await BindPreProvisionedAsync(snapshot, source.VolumeSnapshotContentName!, cancellationToken).ConfigureAwait(false);
            }
            else
            {
                await CreateContentAsync(snapshot, source.PersistentVolumeClaimName!, cancellationToken).ConfigureAwait(false);
            }

            return Outcome.Done;
        }

        var content = _c.Cluster.Contents.Get(bound);
        if (content is null)
        {
            await FailAsync(snapshot, "SnapshotContentMissing", $"VolumeSnapshotContent {bound} is missing", cancellationToken).ConfigureAwait(false);
            return Outcome.Done;
        }

        if (!BelongsTo(content, snapshot, allowEmptyUid: false))
        {
            await FailAsync(snapshot, "SnapshotMisbound", $"VolumeSnapshotContent {bound} is bound to another snapshot ({Describe(content.Spec.VolumeSnapshotRef)})", cancellationToken).ConfigureAwait(false);
            return Outcome.Done;
        }

        snapshot = await EnsureFinalizersAsync(snapshot, content.Spec.DeletionPolicy, cancellationToken).ConfigureAwait(false);
        snapshot = await SyncStatusAsync(snapshot, content, cancellationToken).ConfigureAwait(false);
        RecordOperations(snapshot);
        if (snapshot.Status?.ReadyToUse == true && fromClaim)
        {
            await ReleaseClaimAsync(snapshot.Metadata.NamespaceProperty, source.PersistentVolumeClaimName!, cancellationToken).ConfigureAwait(false);
        }

        return Outcome.Done;
    }

    // ---- metrics (upstream's operation semantics) ----------------------------------------------------

    private static string SnapshotType(VolumeSnapshot snapshot) =>
        string.IsNullOrEmpty(snapshot.Spec.Source.VolumeSnapshotContentName) ? SnapshotOperations.Dynamic : SnapshotOperations.PreProvisioned;

    private void StartOperations(VolumeSnapshot snapshot, bool dynamic)
    {
        if (_c.Options.Metrics is not { } metrics)
        {
            return;
        }

        string uid = snapshot.Metadata.Uid;
        if (dynamic && snapshot.Status?.CreationTime is null)
        {
            metrics.Operations.Start(SnapshotOperations.Create, uid, _c.Options.DriverName, SnapshotOperations.Dynamic);
        }

        if (snapshot.Status?.ReadyToUse != true)
        {
            metrics.Operations.Start(SnapshotOperations.CreateAndReady, uid, _c.Options.DriverName, SnapshotType(snapshot));
        }
    }

    private void RecordOperations(VolumeSnapshot snapshot)
    {
        if (_c.Options.Metrics is not { } metrics)
        {
            return;
        }

        if (snapshot.Status?.CreationTime is not null)
        {
            metrics.Operations.Record(SnapshotOperations.Create, snapshot.Metadata.Uid, SnapshotOperations.Success);
        }

        if (snapshot.Status?.ReadyToUse == true)
        {
            metrics.Operations.Record(SnapshotOperations.CreateAndReady, snapshot.Metadata.Uid, SnapshotOperations.Success);
        }
    }

    // ---- dynamic ------------------------------------------------------------------------------------

    private async Task CreateContentAsync(VolumeSnapshot snapshot, string claimName, CancellationToken ct)
    {
        string ns = snapshot.Metadata.NamespaceProperty;
        var claim = _c.Cluster.Claims.Get(ns, claimName);
        if (claim is null)
        {
            await FailAsync(snapshot, "SnapshotCreationFailed", $"the source PersistentVolumeClaim {ns}/{claimName} does not exist", ct).ConfigureAwait(false);
            return;
        }

        if (claim.Metadata.DeletionTimestamp is not null)
        {
            await FailAsync(snapshot, "SnapshotCreationFailed", $"the source PersistentVolumeClaim {ns}/{claimName} is being deleted", ct).ConfigureAwait(false);
            return;
        }

        if (claim.Status?.Phase != "Bound" || string.IsNullOrEmpty(claim.Spec?.VolumeName))
        {
            await FailAsync(snapshot, "SnapshotCreationFailed", $"the source PersistentVolumeClaim {ns}/{claimName} is {claim.Status?.Phase ?? "Pending"}, not Bound: a snapshot needs a bound claim", ct).ConfigureAwait(false);
            return;
        }

        var volume = _c.Cluster.Volumes.Get(claim.Spec.VolumeName);
        if (volume is null)
        {
            await FailAsync(snapshot, "SnapshotCreationFailed", $"PersistentVolume {claim.Spec.VolumeName} of claim {ns}/{claimName} does not exist", ct).ConfigureAwait(false);
            return;
        }

        var claimRef = volume.Spec.ClaimRef;
        if (claimRef is null || claimRef.Name != claimName || claimRef.NamespaceProperty != ns || claimRef.Uid != claim.Metadata.Uid)
        {
            await FailAsync(snapshot, "SnapshotCreationFailed", $"PersistentVolume {volume.Metadata.Name} is not bound to claim {ns}/{claimName}", ct).ConfigureAwait(false);
            return;
        }

        if (volume.Spec.Csi is null)
        {
            await FailAsync(snapshot, "SnapshotCreationFailed", $"PersistentVolume {volume.Metadata.Name} is not a CSI volume, so it cannot be snapshotted", ct).ConfigureAwait(false);
            return;
        }

        string driver = volume.Spec.Csi.Driver;
        VolumeSnapshotClass? snapshotClass;
        string? className = snapshot.Spec.VolumeSnapshotClassName;
        if (string.IsNullOrEmpty(className))
        {
            var defaults = _c.Cluster.SnapshotClasses.List()
                .Where(k => k.Driver == driver && Cluster.Annotation(k.Metadata, Names.DefaultSnapshotClassAnnotation) == "true")
                .Select(k => k.Metadata.Name)
                .Order(StringComparer.Ordinal)
                .ToList();
            if (defaults.Count != 1)
            {
                string why = defaults.Count == 0
                    ? $"no default VolumeSnapshotClass for driver {driver}: name one in spec.volumeSnapshotClassName or annotate one with {Names.DefaultSnapshotClassAnnotation}: \"true\""
                    : $"{defaults.Count} default VolumeSnapshotClasses for driver {driver} ({string.Join(", ", defaults)}): exactly one may carry {Names.DefaultSnapshotClassAnnotation}: \"true\"";
                await FailAsync(snapshot, "SetDefaultSnapshotClassFailed", why, ct).ConfigureAwait(false);
                return;
            }

            // Record the class chosen, as upstream does; the update brings the snapshot back here.
            await _c.Cluster.PatchSnapshotAsync(snapshot, new JsonObject { ["spec"] = new JsonObject { ["volumeSnapshotClassName"] = defaults[0] } }, status: false, ct).ConfigureAwait(false);
            return;
        }

        snapshotClass = _c.Cluster.SnapshotClasses.Get(className);
        if (snapshotClass is null)
        {
            await FailAsync(snapshot, "SnapshotCreationFailed", $"VolumeSnapshotClass {className} does not exist", ct).ConfigureAwait(false);
            return;
        }

        if (snapshotClass.Driver != driver)
        {
            await FailAsync(snapshot, "SnapshotCreationFailed", $"VolumeSnapshotClass {className} is for driver {snapshotClass.Driver}, but PersistentVolume {volume.Metadata.Name} belongs to driver {driver}", ct).ConfigureAwait(false);
            return;
        }

        snapshot = await EnsureFinalizersAsync(snapshot, snapshotClass.DeletionPolicy, ct).ConfigureAwait(false);
        await SetFinalizerAsync(claim, Names.PvcAsSourceFinalizer, true, ct).ConfigureAwait(false);

        var wanted = new VolumeSnapshotContent
        {
            Metadata = new V1ObjectMeta { Name = Names.ContentName(snapshot.Metadata.Uid) },
            Spec = new VolumeSnapshotContentSpec
            {
                VolumeSnapshotRef = new V1ObjectReference
                {
                    ApiVersion = "snapshot.storage.k8s.io/v1",
                    Kind = "VolumeSnapshot",
                    Name = snapshot.Metadata.Name,
                    NamespaceProperty = ns,
                    Uid = snapshot.Metadata.Uid,
                    ResourceVersion = snapshot.Metadata.ResourceVersion,
                },
                DeletionPolicy = snapshotClass.DeletionPolicy,
                Driver = driver,
                VolumeSnapshotClassName = className,
                Source = new VolumeSnapshotContentSource { VolumeHandle = volume.Spec.Csi.VolumeHandle },
                SourceVolumeMode = volume.Spec.VolumeMode ?? "Filesystem",
            },
        };
        var (content, _) = await _c.Cluster.CreateContentAsync(wanted, ct).ConfigureAwait(false);
        if (!BelongsTo(content, snapshot, allowEmptyUid: false) || string.IsNullOrEmpty(content.Spec.Source.VolumeHandle))
        {
            await FailAsync(snapshot, "SnapshotContentMisbound", $"VolumeSnapshotContent {content.Metadata.Name} already exists and belongs to {Describe(content.Spec.VolumeSnapshotRef)}", ct).ConfigureAwait(false);
            return;
        }

        await _c.Cluster.PatchSnapshotAsync(
            snapshot,
            new JsonObject { ["status"] = new JsonObject { ["boundVolumeSnapshotContentName"] = content.Metadata.Name, ["readyToUse"] = false } },
            status: true,
            ct).ConfigureAwait(false);
    }

    // ---- pre-provisioned ------------------------------------------------------------------------------

    private async Task BindPreProvisionedAsync(VolumeSnapshot snapshot, string contentName, CancellationToken ct)
    {
        var content = _c.Cluster.Contents.Get(contentName);
        if (content is null)
        {
            await FailAsync(snapshot, "SnapshotContentMissing", $"VolumeSnapshotContent {contentName} does not exist", ct).ConfigureAwait(false);
            return;
        }

        if (string.IsNullOrEmpty(content.Spec.Source.SnapshotHandle))
        {
            await FailAsync(snapshot, "SnapshotContentMisbound", $"VolumeSnapshotContent {contentName} is not pre-provisioned (it has no spec.source.snapshotHandle) and cannot be bound by name", ct).ConfigureAwait(false);
            return;
        }

        // The two-way check: the content must name this snapshot (name and namespace) and either carry its
        // UID or none yet. A snapshot that merely names someone else's content gets an error, never the data.
        if (!BelongsTo(content, snapshot, allowEmptyUid: true))
        {
            await FailAsync(
                snapshot,
                "SnapshotContentMisbound",
                $"VolumeSnapshotContent {contentName} belongs to VolumeSnapshot {Describe(content.Spec.VolumeSnapshotRef)}, not {snapshot.Metadata.NamespaceProperty}/{snapshot.Metadata.Name}; its spec.volumeSnapshotRef must name this snapshot",
                ct).ConfigureAwait(false);
            return;
        }

        if (content.Metadata.DeletionTimestamp is not null)
        {
            await FailAsync(snapshot, "SnapshotContentMissing", $"VolumeSnapshotContent {contentName} is being deleted", ct).ConfigureAwait(false);
            return;
        }

        snapshot = await EnsureFinalizersAsync(snapshot, content.Spec.DeletionPolicy, ct).ConfigureAwait(false);
        if (string.IsNullOrEmpty(content.Spec.VolumeSnapshotRef.Uid))
        {
            // The resourceVersion precondition makes this a compare-and-set: two snapshots cannot both claim it.
            await _c.Cluster.PatchContentAsync(
                content,
                new JsonObject { ["spec"] = new JsonObject { ["volumeSnapshotRef"] = new JsonObject { ["uid"] = snapshot.Metadata.Uid } } },
                status: false,
                ct).ConfigureAwait(false);
        }

        await _c.Cluster.PatchSnapshotAsync(
            snapshot,
            new JsonObject { ["status"] = new JsonObject { ["boundVolumeSnapshotContentName"] = contentName, ["readyToUse"] = false } },
            status: true,
            ct).ConfigureAwait(false);
    }

    // ---- status -----------------------------------------------------------------------------------------

    private async Task<VolumeSnapshot> SyncStatusAsync(VolumeSnapshot snapshot, VolumeSnapshotContent content, CancellationToken ct)
    {
        var current = snapshot.Status ?? new VolumeSnapshotStatus();
        var from = content.Status;
        var patch = new JsonObject();
        bool ready = from?.ReadyToUse == true;
        bool wasReady = current.ReadyToUse == true;
        if (current.ReadyToUse != ready)
        {
            patch["readyToUse"] = ready;
        }

        bool created = false;
        if (current.CreationTime is null && from?.CreationTime is long ns)
        {
            var time = DateTime.UnixEpoch.AddTicks(ns / 100);
            patch["creationTime"] = time.ToString("yyyy-MM-ddTHH:mm:ssZ", CultureInfo.InvariantCulture);
            created = true;
        }

        if (current.RestoreSize is null && from?.RestoreSize is long size)
        {
            patch["restoreSize"] = Quantities.FromBytes(size).ToString();
        }

        if (ready && current.Error is not null)
        {
            patch["error"] = null;
        }
        else if (!ready && from?.Error?.Message is { } message && current.Error?.Message != message)
        {
            patch["error"] = ErrorNode(message);
        }

        if (patch.Count == 0)
        {
            return snapshot;
        }

        var written = await _c.Cluster.PatchSnapshotAsync(snapshot, new JsonObject { ["status"] = patch }, status: true, ct).ConfigureAwait(false);
        string name = $"{snapshot.Metadata.NamespaceProperty}/{snapshot.Metadata.Name}";
        if (created)
        {
            await _c.Events.RecordAsync(written, EventRecorder.Normal, "SnapshotCreated", $"Snapshot {name} was successfully created by the CSI driver.", ct).ConfigureAwait(false);
        }

        if (ready && !wasReady)
        {
            await _c.Events.RecordAsync(written, EventRecorder.Normal, "SnapshotReady", $"Snapshot {name} is ready to use.", ct).ConfigureAwait(false);
        }

        return written;
    }

    private async Task FailAsync(VolumeSnapshot snapshot, string reason, string message, CancellationToken ct)
    {
        if (snapshot.Status?.Error?.Message != message || snapshot.Status?.ReadyToUse == true)
        {
            await _c.Cluster.PatchSnapshotAsync(
                snapshot,
                new JsonObject { ["status"] = new JsonObject { ["readyToUse"] = false, ["error"] = ErrorNode(message) } },
                status: true,
                ct).ConfigureAwait(false);
        }

        await _c.Events.RecordAsync(snapshot, EventRecorder.Warning, reason, message, ct).ConfigureAwait(false);
    }

    private static JsonObject ErrorNode(string message) => new()
    {
        ["time"] = DateTime.UtcNow.ToString("yyyy-MM-ddTHH:mm:ssZ", CultureInfo.InvariantCulture),
        ["message"] = message,
    };

    // ---- deletion -------------------------------------------------------------------------------------

    private async Task DeleteAsync(VolumeSnapshot snapshot, CancellationToken ct)
    {
        var meta = snapshot.Metadata;
        if (!Cluster.HasFinalizer(meta, Names.SnapshotAsSourceFinalizer) && !Cluster.HasFinalizer(meta, Names.SnapshotBoundFinalizer))
        {
            _c.Options.Metrics?.Operations.Drop(meta.Uid);
            return;
        }

        // A member of a group snapshot goes with its group: GroupSnapshotController lifts this finalizer then.
        if (Cluster.HasFinalizer(meta, GroupNames.InGroupFinalizer))
        {
            return;
        }

        // The source of a GoldenSnapshot revision keeps its content (the data every namespace restores from) until the
        // revision is retired: GoldenController lifts this finalizer then.
        if (Cluster.HasFinalizer(meta, Golden.GoldenNames.SourceFinalizer))
        {
            return;
        }

        // A restore already under way keeps the snapshot until its volume exists; a claim that only names the
        // snapshot does not (the provisioner refuses it: the deletion came first). The cache may lag behind a
        // restore recorded a moment ago, so "none" is confirmed with a fresh read before the deletion goes on.
        var restoring = Restoring(_c.Cluster.Claims.List(), meta);
        if (restoring.Count == 0)
        {
            var fresh = await _c.Cluster.Client.CoreV1.ListPersistentVolumeClaimForAllNamespacesAsync(cancellationToken: ct).ConfigureAwait(false);
            restoring = Restoring(fresh.Items, meta);
        }

        if (restoring.Count > 0)
        {
            await _c.Events.RecordAsync(
                snapshot,
                EventRecorder.Warning,
                "SnapshotDeletePending",
                $"Snapshot {meta.NamespaceProperty}/{meta.Name} is being used to restore PersistentVolumeClaim {string.Join(", ", restoring)}; it is deleted once the restore is done",
                ct).ConfigureAwait(false);
            return;
        }

        // Upstream starts the clock here: once no restore holds the snapshot back.
        _c.Options.Metrics?.Operations.Start(SnapshotOperations.Delete, meta.Uid, _c.Options.DriverName, SnapshotType(snapshot));
        string? bound = snapshot.Status?.BoundVolumeSnapshotContentName;
        var content = string.IsNullOrEmpty(bound) ? null : _c.Cluster.Contents.Get(bound);
        if (content is null && string.IsNullOrEmpty(bound) && !string.IsNullOrEmpty(snapshot.Spec.Source.PersistentVolumeClaimName))
        {
            // Deleted between creating its content and recording the binding: the content is still this
            // snapshot's (its name and ref carry the UID), so it goes with it rather than being orphaned.
            content = await _c.Cluster.ReadContentAsync(Names.ContentName(meta.Uid), ct).ConfigureAwait(false);
        }

        // Only a content that points back at this very snapshot (same UID) is ever deleted with it.
        if (content is not null && BelongsTo(content, snapshot, allowEmptyUid: false) && content.Spec.DeletionPolicy == "Delete" && content.Metadata.DeletionTimestamp is null)
        {
            if (Cluster.Annotation(content.Metadata, Names.BeingDeletedAnnotation) != "yes")
            {
                content = await _c.Cluster.PatchContentAsync(
                    content,
                    new JsonObject { ["metadata"] = new JsonObject { ["annotations"] = new JsonObject { [Names.BeingDeletedAnnotation] = "yes" } } },
                    status: false,
                    ct).ConfigureAwait(false);
            }

            await _c.Cluster.DeleteContentAsync(content, ct).ConfigureAwait(false);
        }

        var finalizers = (meta.Finalizers ?? []).Where(f => f is not Names.SnapshotAsSourceFinalizer and not Names.SnapshotBoundFinalizer).ToList();
        await _c.Cluster.PatchSnapshotAsync(
            snapshot,
            new JsonObject { ["metadata"] = new JsonObject { ["finalizers"] = new JsonArray([.. finalizers.Select(f => (JsonNode)JsonValue.Create(f))]) } },
            status: false,
            ct).ConfigureAwait(false);
        _c.Options.Metrics?.Operations.Record(SnapshotOperations.Delete, meta.Uid, SnapshotOperations.Success);

        if (snapshot.Spec.Source.PersistentVolumeClaimName is { Length: > 0 } claimName)
        {
            await ReleaseClaimAsync(meta.NamespaceProperty, claimName, ct).ConfigureAwait(false);
        }
    }

    /// <summary>
    /// The claims a deleted snapshot still waits for: restores from it that Dolly's provisioner recorded before
    /// the deletion (see Provisioner.ConfirmRestoreAsync) and that have no volume yet, and pending claims of
    /// other provisioners, whose progress Dolly cannot see.
    /// </summary>
    private List<string> Restoring(IEnumerable<V1PersistentVolumeClaim> claims, V1ObjectMeta snapshot) =>
        claims
            .Where(c => DataSourceSnapshot(c) is { } s && s.Namespace == snapshot.NamespaceProperty && s.Name == snapshot.Name
                && (Provisioner.ClassOf(_c.Cluster, c) is { } storageClass && storageClass.Provisioner != _c.Options.DriverName
                    ? c.Metadata.DeletionTimestamp is null && string.IsNullOrEmpty(c.Spec?.VolumeName)
                    : Provisioner.RecordedRestore(c)))
            .Select(c => $"{c.Metadata.NamespaceProperty}/{c.Metadata.Name}")
            .Order(StringComparer.Ordinal)
            .ToList();

    // ---- finalizers ------------------------------------------------------------------------------------

    private async Task<VolumeSnapshot> EnsureFinalizersAsync(VolumeSnapshot snapshot, string deletionPolicy, CancellationToken ct)
    {
        var current = snapshot.Metadata.Finalizers ?? [];
        var wanted = new List<string>(current);
        if (!wanted.Contains(Names.SnapshotAsSourceFinalizer))
        {
            wanted.Add(Names.SnapshotAsSourceFinalizer);
        }

        if (deletionPolicy == "Delete" && !wanted.Contains(Names.SnapshotBoundFinalizer))
        {
            wanted.Add(Names.SnapshotBoundFinalizer);
        }

        if (wanted.Count == current.Count)
        {
            return snapshot;
        }

        return await _c.Cluster.PatchSnapshotAsync(
            snapshot,
            new JsonObject { ["metadata"] = new JsonObject { ["finalizers"] = new JsonArray([.. wanted.Select(f => (JsonNode)JsonValue.Create(f))]) } },
            status: false,
            ct).ConfigureAwait(false);
    }

    /// <summary>Drops the claim's snapshot-source finalizer once no snapshot of it is still being cut.</summary>
    private async Task ReleaseClaimAsync(string ns, string claimName, CancellationToken ct)
    {
        var claim = _c.Cluster.Claims.Get(ns, claimName);
        if (claim is null || !Cluster.HasFinalizer(claim.Metadata, Names.PvcAsSourceFinalizer))
        {
            return;
        }

        // Being cut: past its checks (it holds its finalizers, set just before the claim's) or bound, and not
        // ready yet. A snapshot that failed its checks (say, its class is missing) cuts nothing and must not
        // pin the claim.
        bool cutting = _c.Cluster.Snapshots.List().Any(s =>
            s.Metadata.NamespaceProperty == ns && s.Spec.Source.PersistentVolumeClaimName == claimName
            && s.Metadata.DeletionTimestamp is null && s.Status?.ReadyToUse != true
            && (!string.IsNullOrEmpty(s.Status?.BoundVolumeSnapshotContentName) || Cluster.HasFinalizer(s.Metadata, Names.SnapshotAsSourceFinalizer)));
        if (!cutting)
        {
            await SetFinalizerAsync(claim, Names.PvcAsSourceFinalizer, false, ct).ConfigureAwait(false);
        }
    }

    private async Task SetFinalizerAsync(V1PersistentVolumeClaim claim, string finalizer, bool present, CancellationToken ct)
    {
        if (Cluster.FinalizerPatch(claim.Metadata, finalizer, present) is { } patch)
        {
            await _c.Cluster.PatchClaimAsync(claim, patch, status: false, ct).ConfigureAwait(false);
        }
    }

    /// <summary>Whether the content's volumeSnapshotRef names this snapshot (and its UID, or no UID when allowed).</summary>
    public static bool BelongsTo(VolumeSnapshotContent content, VolumeSnapshot snapshot, bool allowEmptyUid)
    {
        var r = content.Spec.VolumeSnapshotRef;
        return r.Name == snapshot.Metadata.Name
            && r.NamespaceProperty == snapshot.Metadata.NamespaceProperty
            && (r.Uid == snapshot.Metadata.Uid || (allowEmptyUid && string.IsNullOrEmpty(r.Uid)));
    }

    private static string Describe(V1ObjectReference r) => $"{r.NamespaceProperty}/{r.Name}" + (string.IsNullOrEmpty(r.Uid) ? "" : $" (uid {r.Uid})");
}
