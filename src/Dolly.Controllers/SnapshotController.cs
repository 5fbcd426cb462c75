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
        SourceClaims = new SnapshotSourceClaims(context);
        var cluster = context.Cluster;

        // Every handler looks up only the snapshots related to the event through the informers' indexes
        // (Cluster.Indexes): an event costs the same with ten snapshots in the cluster or a hundred thousand.
        cluster.Snapshots.OnChange((old, s) =>
        {
            if (s is not null)
            {
                Queue.Add(Informer<VolumeSnapshot>.Key(s));
            }
            else if (old?.Spec.Source.PersistentVolumeClaimName is { Length: > 0 } claim)
            {
                // A snapshot gone (perhaps without ever holding finalizers): its claim may be free to go now.
                SourceClaims.Queue.Add(new ObjectKey(old.Metadata.NamespaceProperty, claim));
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
                EnqueueAll(cluster.Snapshots.ByIndex(Indexes.SnapshotByContent, content.Metadata.Name));
            }
        });
        cluster.Claims.OnChange((old, now) =>
        {
            var claim = now ?? old!;
            if (now is not null && Cluster.HasFinalizer(now.Metadata, Names.PvcAsSourceFinalizer))
            {
                SourceClaims.Queue.Add(ObjectKey.Of(now));
            }

            EnqueueAll(cluster.Snapshots.ByIndex(Indexes.SnapshotBySourceClaim, Informer<V1PersistentVolumeClaim>.Key(claim)));

            // A snapshot waiting to be deleted until a restore from it is done.
            foreach (var c in new[] { old, now })
            {
                if (c is not null && DataSourceSnapshot(c) is { } source && cluster.Snapshots.Get(source.Namespace, source.Name) is { Metadata.DeletionTimestamp: not null })
                {
                    Queue.Add(Informer<VolumeSnapshot>.Key(source.Namespace, source.Name));
                }
            }
        });
        cluster.Volumes.OnChange((_, pv) =>
        {
            if (pv?.Spec?.ClaimRef is { Name.Length: > 0 } r)
            {
                EnqueueAll(cluster.Snapshots.ByIndex(Indexes.SnapshotBySourceClaim, Indexes.Key(r.NamespaceProperty, r.Name)));
            }
        });
        cluster.SnapshotClasses.OnChange((old, now) =>
        {
            // Unbound snapshots that name this class, and those that take the default one.
            string? name = (now ?? old)?.Metadata.Name;
            if (!string.IsNullOrEmpty(name))
            {
                EnqueueAll(cluster.Snapshots.ByIndex(Indexes.UnboundSnapshotByClass, name));
            }

            EnqueueAll(cluster.Snapshots.ByIndex(Indexes.UnboundSnapshotByClass, ""));
        });
    }

    /// <summary>The controller of the pvc-as-source finalizer of the claims snapshots are cut from (its own queue of claim keys).</summary>
    public SnapshotSourceClaims SourceClaims { get; }

    private void EnqueueAll(IReadOnlyList<VolumeSnapshot> snapshots)
    {
        foreach (var s in snapshots)
        {
            Queue.Add(Informer<VolumeSnapshot>.Key(s));
        }
    }

    /// <summary>The snapshot a claim restores from (dataSourceRef first, then dataSource), or null.</summary>
    public static (string Namespace, string Name)? DataSourceSnapshot(V1PersistentVolumeClaim claim)
    {
        if (claim.Spec?.DataSourceRef is { } r && r.Kind == Names.SnapshotKind && r.ApiGroup == Names.SnapshotGroup)
        {
            return (string.IsNullOrEmpty(r.NamespaceProperty) ? claim.Metadata.NamespaceProperty : r.NamespaceProperty, r.Name);
        }

        if (claim.Spec?.DataSource is { } d && d.Kind == Names.SnapshotKind && d.ApiGroup == Names.SnapshotGroup)
        {
            return (claim.Metadata.NamespaceProperty, d.Name);
        }

        return null;
    }

    protected override async Task<Outcome> ReconcileAsync(string key, CancellationToken cancellationToken)
    {
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
            await FailAsync(snapshot, Reasons.SnapshotValidationError, "spec.source must name exactly one of persistentVolumeClaimName and volumeSnapshotContentName", cancellationToken).ConfigureAwait(false);
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
            await FailAsync(snapshot, Reasons.SnapshotContentMissing, $"VolumeSnapshotContent {bound} is missing", cancellationToken).ConfigureAwait(false);
            return Outcome.Done;
        }

        if (!BelongsTo(content, snapshot, allowEmptyUid: false))
        {
            await FailAsync(snapshot, Reasons.SnapshotMisbound, $"VolumeSnapshotContent {bound} is bound to another snapshot ({Describe(content.Spec.VolumeSnapshotRef)})", cancellationToken).ConfigureAwait(false);
            return Outcome.Done;
        }

        snapshot = await EnsureFinalizersAsync(snapshot, content.Spec.DeletionPolicy, cancellationToken).ConfigureAwait(false);
        snapshot = await SyncStatusAsync(snapshot, content, cancellationToken).ConfigureAwait(false);
        RecordOperations(snapshot);
        if (snapshot.Status?.ReadyToUse == true && fromClaim)
        {
            await SourceClaims.ReleaseAsync(new ObjectKey(snapshot.Metadata.NamespaceProperty, source.PersistentVolumeClaimName!), cancellationToken).ConfigureAwait(false);
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
            await FailAsync(snapshot, Reasons.SnapshotCreationFailed, $"the source PersistentVolumeClaim {ns}/{claimName} does not exist", ct).ConfigureAwait(false);
            return;
        }

        if (claim.Metadata.DeletionTimestamp is not null)
        {
            await FailAsync(snapshot, Reasons.SnapshotCreationFailed, $"the source PersistentVolumeClaim {ns}/{claimName} is being deleted", ct).ConfigureAwait(false);
            return;
        }

        if (claim.Status?.Phase != "Bound" || string.IsNullOrEmpty(claim.Spec?.VolumeName))
        {
            await FailAsync(snapshot, Reasons.SnapshotCreationFailed, $"the source PersistentVolumeClaim {ns}/{claimName} is {claim.Status?.Phase ?? "Pending"}, not Bound: a snapshot needs a bound claim", ct).ConfigureAwait(false);
            return;
        }

        var volume = _c.Cluster.Volumes.Get(claim.Spec.VolumeName);
        if (volume is null)
        {
            await FailAsync(snapshot, Reasons.SnapshotCreationFailed, $"PersistentVolume {claim.Spec.VolumeName} of claim {ns}/{claimName} does not exist", ct).ConfigureAwait(false);
            return;
        }

        var claimRef = volume.Spec.ClaimRef;
        if (claimRef is null || claimRef.Name != claimName || claimRef.NamespaceProperty != ns || claimRef.Uid != claim.Metadata.Uid)
        {
            await FailAsync(snapshot, Reasons.SnapshotCreationFailed, $"PersistentVolume {volume.Metadata.Name} is not bound to claim {ns}/{claimName}", ct).ConfigureAwait(false);
            return;
        }

        if (volume.Spec.Csi is null)
        {
            await FailAsync(snapshot, Reasons.SnapshotCreationFailed, $"PersistentVolume {volume.Metadata.Name} is not a CSI volume, so it cannot be snapshotted", ct).ConfigureAwait(false);
            return;
        }

        string driver = volume.Spec.Csi.Driver;
        VolumeSnapshotClass? snapshotClass;
        string? className = snapshot.Spec.VolumeSnapshotClassName;
        if (string.IsNullOrEmpty(className))
        {
            var defaults = _c.Cluster.SnapshotClasses.ByIndex(Indexes.DefaultSnapshotClassByDriver, driver)
                .Select(k => k.Metadata.Name)
                .Order(StringComparer.Ordinal)
                .ToList();
            if (defaults.Count != 1)
            {
                string why = defaults.Count == 0
                    ? $"no default VolumeSnapshotClass for driver {driver}: name one in spec.volumeSnapshotClassName or annotate one with {Names.DefaultSnapshotClassAnnotation}: \"true\""
                    : $"{defaults.Count} default VolumeSnapshotClasses for driver {driver} ({string.Join(", ", defaults)}): exactly one may carry {Names.DefaultSnapshotClassAnnotation}: \"true\"";
                await FailAsync(snapshot, Reasons.SetDefaultSnapshotClassFailed, why, ct).ConfigureAwait(false);
                return;
            }

            // Record the class chosen, as upstream does; the update brings the snapshot back here.
            await _c.Cluster.PatchSnapshotAsync(snapshot, new MergePatch().Spec(defaults[0], "volumeSnapshotClassName"), ct).ConfigureAwait(false);
            return;
        }

        snapshotClass = _c.Cluster.SnapshotClasses.Get(className);
        if (snapshotClass is null)
        {
            await FailAsync(snapshot, Reasons.SnapshotCreationFailed, $"VolumeSnapshotClass {className} does not exist", ct).ConfigureAwait(false);
            return;
        }

        if (snapshotClass.Driver != driver)
        {
            await FailAsync(snapshot, Reasons.SnapshotCreationFailed, $"VolumeSnapshotClass {className} is for driver {snapshotClass.Driver}, but PersistentVolume {volume.Metadata.Name} belongs to driver {driver}", ct).ConfigureAwait(false);
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
                    Kind = Names.SnapshotKind,
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
            await FailAsync(snapshot, Reasons.SnapshotContentMisbound, $"VolumeSnapshotContent {content.Metadata.Name} already exists and belongs to {Describe(content.Spec.VolumeSnapshotRef)}", ct).ConfigureAwait(false);
            return;
        }

        await _c.Cluster.PatchSnapshotAsync(snapshot, BindingPatch(content.Metadata.Name), ct).ConfigureAwait(false);
    }

    // ---- pre-provisioned ------------------------------------------------------------------------------

    private async Task BindPreProvisionedAsync(VolumeSnapshot snapshot, string contentName, CancellationToken ct)
    {
        var content = _c.Cluster.Contents.Get(contentName);
        if (content is null)
        {
            await FailAsync(snapshot, Reasons.SnapshotContentMissing, $"VolumeSnapshotContent {contentName} does not exist", ct).ConfigureAwait(false);
            return;
        }

        if (string.IsNullOrEmpty(content.Spec.Source.SnapshotHandle))
        {
            await FailAsync(snapshot, Reasons.SnapshotContentMisbound, $"VolumeSnapshotContent {contentName} is not pre-provisioned (it has no spec.source.snapshotHandle) and cannot be bound by name", ct).ConfigureAwait(false);
            return;
        }

        // The two-way check: the content must name this snapshot (name and namespace) and either carry its
        // UID or none yet. A snapshot that merely names someone else's content gets an error, never the data.
        if (!BelongsTo(content, snapshot, allowEmptyUid: true))
        {
            await FailAsync(
                snapshot,
                Reasons.SnapshotContentMisbound,
                $"VolumeSnapshotContent {contentName} belongs to VolumeSnapshot {Describe(content.Spec.VolumeSnapshotRef)}, not {snapshot.Metadata.NamespaceProperty}/{snapshot.Metadata.Name}; its spec.volumeSnapshotRef must name this snapshot",
                ct).ConfigureAwait(false);
            return;
        }

        if (content.Metadata.DeletionTimestamp is not null)
        {
            await FailAsync(snapshot, Reasons.SnapshotContentMissing, $"VolumeSnapshotContent {contentName} is being deleted", ct).ConfigureAwait(false);
            return;
        }

        snapshot = await EnsureFinalizersAsync(snapshot, content.Spec.DeletionPolicy, ct).ConfigureAwait(false);
        if (string.IsNullOrEmpty(content.Spec.VolumeSnapshotRef.Uid))
        {
            // The resourceVersion precondition makes this a compare-and-set: two snapshots cannot both claim it.
            await _c.Cluster.PatchContentAsync(content, new MergePatch().Spec(snapshot.Metadata.Uid, "volumeSnapshotRef", "uid"), ct).ConfigureAwait(false);
        }

        await _c.Cluster.PatchSnapshotAsync(snapshot, BindingPatch(contentName), ct).ConfigureAwait(false);
    }

    // ---- status -----------------------------------------------------------------------------------------

    private async Task<VolumeSnapshot> SyncStatusAsync(VolumeSnapshot snapshot, VolumeSnapshotContent content, CancellationToken ct)
    {
        var current = snapshot.Status ?? new VolumeSnapshotStatus();
        var from = content.Status;
        var patch = new MergePatch();
        bool ready = from?.ReadyToUse == true;
        bool wasReady = current.ReadyToUse == true;
        if (current.ReadyToUse != ready)
        {
            patch.Status("readyToUse", ready);
        }

        bool created = false;
        if (current.CreationTime is null && from?.CreationTime is long ns)
        {
            var time = DateTime.UnixEpoch.AddTicks(ns / 100);
            patch.Status("creationTime", time.ToString("yyyy-MM-ddTHH:mm:ssZ", CultureInfo.InvariantCulture));
            created = true;
        }

        if (current.RestoreSize is null && from?.RestoreSize is long size)
        {
            patch.Status("restoreSize", Quantities.FromBytes(size).ToString());
        }

        if (ready && current.Error is not null)
        {
            patch.Status("error", null);
        }
        else if (!ready && from?.Error?.Message is { } message && current.Error?.Message != message)
        {
            patch.Status("error", ErrorNode(message));
        }

        if (patch.IsEmpty)
        {
            return snapshot;
        }

        var written = await _c.Cluster.PatchSnapshotAsync(snapshot, patch, ct).ConfigureAwait(false);
        string name = $"{snapshot.Metadata.NamespaceProperty}/{snapshot.Metadata.Name}";
        if (created)
        {
            await _c.Events.RecordAsync(written, EventRecorder.Normal, Reasons.SnapshotCreated, $"Snapshot {name} was successfully created by the CSI driver.", ct).ConfigureAwait(false);
        }

        if (ready && !wasReady)
        {
            await _c.Events.RecordAsync(written, EventRecorder.Normal, Reasons.SnapshotReady, $"Snapshot {name} is ready to use.", ct).ConfigureAwait(false);
        }

        return written;
    }

    private async Task FailAsync(VolumeSnapshot snapshot, string reason, string message, CancellationToken ct)
    {
        if (snapshot.Status?.Error?.Message != message || snapshot.Status?.ReadyToUse == true)
        {
            await _c.Cluster.PatchSnapshotAsync(snapshot, new MergePatch().Status("readyToUse", false).Status("error", ErrorNode(message)), ct).ConfigureAwait(false);
        }

        await _c.Events.RecordAsync(snapshot, EventRecorder.Warning, reason, message, ct).ConfigureAwait(false);
    }

    private JsonObject ErrorNode(string message) => ErrorNode(message, _c.Options.TimeProvider);

    /// <summary>A status.error as the upstream controllers write it, stamped with <paramref name="time"/>'s now.</summary>
    internal static JsonObject ErrorNode(string message, TimeProvider time) => new()
    {
        ["time"] = time.GetUtcNow().ToString("yyyy-MM-ddTHH:mm:ssZ", CultureInfo.InvariantCulture),
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
        var naming = _c.Cluster.Claims.ByIndex(Indexes.ClaimByDataSource, Indexes.DataSourceValue(Names.SnapshotKind, meta.NamespaceProperty, meta.Name));
        var restoring = Restoring(naming, meta);
        if (restoring.Count == 0)
        {
            restoring = Restoring(await ReadPossibleRestoresAsync(meta, naming.Select(c => c.Metadata.NamespaceProperty), ct).ConfigureAwait(false), meta);
        }

        if (restoring.Count > 0)
        {
            await _c.Events.RecordAsync(
                snapshot,
                EventRecorder.Warning,
                Reasons.SnapshotDeletePending,
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
        if (content is not null && BelongsTo(content, snapshot, allowEmptyUid: false) && content.Spec.DeletionPolicy == PolicyValues.Delete && content.Metadata.DeletionTimestamp is null)
        {
            if (Cluster.Annotation(content.Metadata, Names.BeingDeletedAnnotation) != PolicyValues.Yes)
            {
                content = await _c.Cluster.PatchContentAsync(content, new MergePatch().Annotation(Names.BeingDeletedAnnotation, PolicyValues.Yes), ct).ConfigureAwait(false);
            }

            await _c.Cluster.DeleteContentAsync(content, ct).ConfigureAwait(false);
        }

        var finalizers = (meta.Finalizers ?? []).Where(f => f is not Names.SnapshotAsSourceFinalizer and not Names.SnapshotBoundFinalizer).ToList();
        await _c.Cluster.PatchSnapshotAsync(snapshot, new MergePatch().Finalizers(finalizers), ct).ConfigureAwait(false);
        _c.Options.Metrics?.Operations.Record(SnapshotOperations.Delete, meta.Uid, SnapshotOperations.Success);

        if (snapshot.Spec.Source.PersistentVolumeClaimName is { Length: > 0 } claimName)
        {
            await SourceClaims.ReleaseAsync(new ObjectKey(meta.NamespaceProperty, claimName), ct).ConfigureAwait(false);
        }
    }

    /// <summary>
    /// The claims that could restore from the snapshot, read from the API server: those of its namespace, of every
    /// namespace a ReferenceGrant there lets restore from it (the grants read afresh as well, so one made a moment ago
    /// counts) and of <paramref name="alsoIn"/> (where cached claims name it, so a grant withdrawn after it admitted a
    /// restore still counts). Only these can record a restore from it (the provisioner checks the grant first), so the
    /// read costs what those namespaces hold, not what the whole cluster holds.
    /// </summary>
    private async Task<List<V1PersistentVolumeClaim>> ReadPossibleRestoresAsync(V1ObjectMeta snapshot, IEnumerable<string> alsoIn, CancellationToken ct)
    {
        string ns = snapshot.NamespaceProperty;
        var namespaces = new SortedSet<string>(alsoIn, StringComparer.Ordinal) { ns };
        foreach (var grant in await _c.Cluster.ReadGrantsAsync(ns, ct).ConfigureAwait(false))
        {
            if (grant.Spec.To.Any(t => t.Group == Names.SnapshotGroup && t.Kind == Names.SnapshotKind && (string.IsNullOrEmpty(t.Name) || t.Name == snapshot.Name)))
            {
                namespaces.UnionWith(grant.Spec.From.Where(f => f.Group.Length == 0 && f.Kind == Names.ClaimKind && f.Namespace.Length > 0).Select(f => f.Namespace));
            }
        }

        var claims = new List<V1PersistentVolumeClaim>();
        foreach (string from in namespaces)
        {
            var list = await _c.Cluster.Client.CoreV1.ListNamespacedPersistentVolumeClaimAsync(from, cancellationToken: ct).ConfigureAwait(false);
            claims.AddRange(list.Items);
        }

        return claims;
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

        if (deletionPolicy == PolicyValues.Delete && !wanted.Contains(Names.SnapshotBoundFinalizer))
        {
            wanted.Add(Names.SnapshotBoundFinalizer);
        }

        if (wanted.Count == current.Count)
        {
            return snapshot;
        }

        return await _c.Cluster.PatchSnapshotAsync(snapshot, new MergePatch().Finalizers(wanted), ct).ConfigureAwait(false);
    }

    private async Task SetFinalizerAsync(V1PersistentVolumeClaim claim, string finalizer, bool present, CancellationToken ct)
    {
        if (MergePatch.Finalizer(claim.Metadata, finalizer, present) is { } patch)
        {
            await _c.Cluster.PatchClaimAsync(claim, patch, ct).ConfigureAwait(false);
        }
    }

    /// <summary>The status write that binds a snapshot to its content (not ready until the content says so).</summary>
    private static MergePatch BindingPatch(string content) =>
        new MergePatch().Status("boundVolumeSnapshotContentName", content).Status("readyToUse", false);

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
