using System.Security.Cryptography;
using System.Text;
using System.Text.Json.Nodes;
using Dolly.Controllers.Model;
using Dolly.Controllers.Runtime;
using k8s.Models;
using Microsoft.Extensions.Logging;

namespace Dolly.Controllers;

/// <summary>
/// The snapshot controller's group part: binds a VolumeGroupSnapshot to a content (a new one over the claims its
/// selector matches, in the named or the default class, or the pre-provisioned one it names), then, once the
/// driver has cut the group, makes a VolumeSnapshotContent and a VolumeSnapshot per member bound to each other.
/// The group is ready only when every member is. Members carry a finalizer that keeps them from being deleted on
/// their own; deleting the group lifts it, deletes them and then, per policy, the group content.
/// </summary>
internal sealed class GroupSnapshotController : Reconciler
{
    private const string Failed = "GroupSnapshotCreationFailed";
    private const string Misbound = "GroupSnapshotContentMisbound";

    private readonly ControllerContext _c;

    public GroupSnapshotController(ControllerContext context)
        : base("group-snapshot-controller", context.Options.RetryBaseDelay, context.Options.RetryMaxDelay, context.Loggers.CreateLogger<GroupSnapshotController>())
    {
        _c = context;
        var cluster = context.Cluster;
        cluster.GroupSnapshots.OnChange((_, g) =>
        {
            if (g is not null)
            {
                Queue.Add(Informer<VolumeGroupSnapshot>.Key(g));
            }
        });
        cluster.GroupContents.OnChange((old, now) =>
        {
            foreach (var r in new[] { old?.Spec.VolumeGroupSnapshotRef, now?.Spec.VolumeGroupSnapshotRef })
            {
                if (!string.IsNullOrEmpty(r?.Name))
                {
                    Queue.Add(Informer<VolumeGroupSnapshot>.Key(r.NamespaceProperty, r.Name));
                }
            }
        });
        cluster.Snapshots.OnChange((old, now) =>
        {
            if ((now ?? old)?.Metadata is { } meta && meta.Labels?.TryGetValue(GroupNames.GroupLabel, out string? group) == true)
            {
                Queue.Add(Informer<VolumeGroupSnapshot>.Key(meta.NamespaceProperty, group));
            }
        });

        // A claim that appears, binds or changes labels, or a class that appears, may be what an unbound group
        // snapshot waits for.
        cluster.Claims.OnChange((_, claim) =>
        {
            if (claim is not null)
            {
                RetryUnbound(Indexes.UnboundGroupSnapshotByNamespace, claim.Metadata.NamespaceProperty);
            }
        });

        // A class concerns the unbound group snapshots that name it, and those that take their driver's default.
        cluster.GroupClasses.OnChange((old, now) =>
        {
            RetryUnbound(Indexes.UnboundGroupSnapshotByClass, (now ?? old)?.Metadata.Name ?? "");
            RetryUnbound(Indexes.UnboundGroupSnapshotByClass, "");
        });
    }

    private void RetryUnbound(string index, string value)
    {
        foreach (var g in _c.Cluster.GroupSnapshots.ByIndex(index, value))
        {
            Queue.Add(Informer<VolumeGroupSnapshot>.Key(g));
        }
    }

    protected override async Task<Outcome> ReconcileAsync(string key, CancellationToken cancellationToken)
    {
        var group = _c.Cluster.GroupSnapshots.Get(key);
        if (group is null)
        {
            return Outcome.Done;
        }

        if (group.Metadata.DeletionTimestamp is not null)
        {
            return await DeleteAsync(group, cancellationToken).ConfigureAwait(false);
        }

        string? bound = group.Status?.BoundVolumeGroupSnapshotContentName;
        if (string.IsNullOrEmpty(bound))
        {
            if (group.Spec.Source.VolumeGroupSnapshotContentName is { Length: > 0 } contentName)
            {
                await BindPreProvisionedAsync(group, contentName, cancellationToken).ConfigureAwait(false);
            }
            else
            {
                await CreateContentAsync(group, cancellationToken).ConfigureAwait(false);
            }

            return Outcome.Done;
        }

        var content = _c.Cluster.GroupContents.Get(bound);
        if (content is null || !BelongsTo(content, group))
        {
            await FailAsync(group, Misbound, content is null ? $"VolumeGroupSnapshotContent {bound} is missing" : $"VolumeGroupSnapshotContent {bound} does not point back at this group snapshot", cancellationToken).ConfigureAwait(false);
            return Outcome.Done;
        }

        group = await SetFinalizerAsync(group, cancellationToken).ConfigureAwait(false);
        var status = content.Status;
        if (string.IsNullOrEmpty(status?.VolumeGroupSnapshotHandle) || status.VolumeSnapshotInfoList is not { Count: > 0 } members)
        {
            if (status?.Error?.Message is { } message && group.Status?.Error?.Message != message)
            {
                await FailAsync(group, Failed, message, cancellationToken).ConfigureAwait(false);
            }

            return Outcome.Done;
        }

        bool allReady = true;
        foreach (var member in members)
        {
            var snapshot = await EnsureMemberAsync(group, content, status.VolumeGroupSnapshotHandle, member, cancellationToken).ConfigureAwait(false);
            allReady &= snapshot?.Status?.ReadyToUse == true;
        }

        bool ready = allReady && status.ReadyToUse == true;
        var patch = new JsonObject();
        if (group.Status?.ReadyToUse != ready)
        {
            patch["readyToUse"] = ready;
        }

        if (status.CreationTime is { } created && group.Status?.CreationTime != created)
        {
            patch["creationTime"] = GroupContentController.FormatTime(created);
        }

        if (ready && group.Status?.Error is not null)
        {
            patch["error"] = null;
        }

        if (patch.Count > 0)
        {
            await _c.Cluster.PatchGroupSnapshotAsync(group, new JsonObject { ["status"] = patch }, status: true, cancellationToken).ConfigureAwait(false);
            if (ready)
            {
                await _c.Events.RecordAsync(group, EventRecorder.Normal, "GroupSnapshotReady", $"Group snapshot {key} of {members.Count} volumes is ready to use.", cancellationToken).ConfigureAwait(false);
            }
        }

        return Outcome.Done;
    }

    // ---- dynamic -----------------------------------------------------------------------------------------

    private async Task CreateContentAsync(VolumeGroupSnapshot group, CancellationToken ct)
    {
        string ns = group.Metadata.NamespaceProperty;
        if (group.Spec.Source.Selector is not { } selector)
        {
            await FailAsync(group, Failed, "spec.source must name exactly one of selector and volumeGroupSnapshotContentName", ct).ConfigureAwait(false);
            return;
        }

        var claims = _c.Cluster.Claims.InNamespace(ns)
            .Where(c => LabelSelectors.Matches(selector, c.Metadata.Labels))
            .OrderBy(c => c.Metadata.Name, StringComparer.Ordinal)
            .ToList();
        if (claims.Count == 0)
        {
            await FailAsync(group, Failed, $"no PersistentVolumeClaim in namespace {ns} matches the selector {LabelSelectors.Describe(selector)}", ct).ConfigureAwait(false);
            return;
        }

        var handles = new List<string>(claims.Count);
        string? driver = null;
        foreach (var claim in claims)
        {
            string name = $"{ns}/{claim.Metadata.Name}";
            string? problem = null;
            var volume = string.IsNullOrEmpty(claim.Spec?.VolumeName) ? null : _c.Cluster.Volumes.Get(claim.Spec.VolumeName);
            if (claim.Metadata.DeletionTimestamp is not null)
            {
                problem = $"PersistentVolumeClaim {name} is being deleted";
            }
            else if (claim.Status?.Phase != "Bound" || volume is null)
            {
                problem = $"PersistentVolumeClaim {name} is not Bound";
            }
            else if (volume.Spec.Csi is not { } csi || string.IsNullOrEmpty(csi.VolumeHandle))
            {
                problem = $"PersistentVolumeClaim {name} is bound to PersistentVolume {volume.Metadata.Name}, which is not a CSI volume";
            }
            else if (driver is not null && csi.Driver != driver)
            {
                problem = $"PersistentVolumeClaim {name} is a volume of driver {csi.Driver}, the others of {driver}: one group snapshot is cut by one driver";
            }
            else
            {
                driver = csi.Driver;
                handles.Add(csi.VolumeHandle);
            }

            if (problem is not null)
            {
                await FailAsync(group, Failed, problem, ct).ConfigureAwait(false);
                return;
            }
        }

        (var groupClass, group) = await ResolveClassAsync(group, driver!, ct).ConfigureAwait(false);
        if (groupClass is null)
        {
            return;
        }

        var wanted = new VolumeGroupSnapshotContent
        {
            Metadata = new V1ObjectMeta { Name = GroupNames.ContentName(group.Metadata.Uid) },
            Spec = new VolumeGroupSnapshotContentSpec
            {
                VolumeGroupSnapshotRef = new V1ObjectReference
                {
                    ApiVersion = GroupNames.ApiVersion,
                    Kind = "VolumeGroupSnapshot",
                    Name = group.Metadata.Name,
                    NamespaceProperty = ns,
                    Uid = group.Metadata.Uid,
                },
                DeletionPolicy = groupClass.DeletionPolicy,
                Driver = groupClass.Driver,
                VolumeGroupSnapshotClassName = groupClass.Metadata.Name,
                Source = new VolumeGroupSnapshotContentSource { VolumeHandles = [.. handles.Order(StringComparer.Ordinal)] },
            },
        };
        group = await SetFinalizerAsync(group, ct).ConfigureAwait(false);
        var content = await _c.Cluster.CreateGroupContentAsync(wanted, ct).ConfigureAwait(false);
        if (!BelongsTo(content, group))
        {
            await FailAsync(group, Misbound, $"VolumeGroupSnapshotContent {content.Metadata.Name} already exists and belongs to {content.Spec.VolumeGroupSnapshotRef.NamespaceProperty}/{content.Spec.VolumeGroupSnapshotRef.Name}", ct).ConfigureAwait(false);
            return;
        }

        await _c.Cluster.PatchGroupSnapshotAsync(
            group,
            new JsonObject { ["status"] = new JsonObject { ["boundVolumeGroupSnapshotContentName"] = content.Metadata.Name, ["readyToUse"] = false } },
            status: true,
            ct).ConfigureAwait(false);
    }

    /// <summary>The named class, or the one default class of <paramref name="driver"/> (then written into the spec, as upstream does).</summary>
    private async Task<(VolumeGroupSnapshotClass? Class, VolumeGroupSnapshot Group)> ResolveClassAsync(VolumeGroupSnapshot group, string driver, CancellationToken ct)
    {
        if (group.Spec.VolumeGroupSnapshotClassName is { Length: > 0 } className)
        {
            var named = _c.Cluster.GroupClasses.Get(className);
            string? problem = named is null ? $"VolumeGroupSnapshotClass {className} does not exist"
                : named.Driver != driver ? $"VolumeGroupSnapshotClass {className} is of driver {named.Driver}, but the claims are volumes of {driver}"
                : null;
            if (problem is not null)
            {
                await FailAsync(group, Failed, problem, ct).ConfigureAwait(false);
                return (null, group);
            }

            return (named, group);
        }

        var defaults = _c.Cluster.GroupClasses.ByIndex(Indexes.DefaultGroupClassByDriver, driver)
            .OrderBy(c => c.Metadata.Name, StringComparer.Ordinal)
            .ToList();
        if (defaults.Count != 1)
        {
            string message = defaults.Count == 0
                ? $"cannot find a default VolumeGroupSnapshotClass for driver {driver}"
                : $"{defaults.Count} default VolumeGroupSnapshotClasses exist for driver {driver} ({string.Join(", ", defaults.Select(c => c.Metadata.Name))}); name one in spec.volumeGroupSnapshotClassName";
            await FailAsync(group, "SetDefaultGroupSnapshotClassFailed", message, ct).ConfigureAwait(false);
            return (null, group);
        }

        group = await _c.Cluster.PatchGroupSnapshotAsync(group, new JsonObject { ["spec"] = new JsonObject { ["volumeGroupSnapshotClassName"] = defaults[0].Metadata.Name } }, status: false, ct).ConfigureAwait(false);
        return (defaults[0], group);
    }

    // ---- pre-provisioned ---------------------------------------------------------------------------------

    private async Task BindPreProvisionedAsync(VolumeGroupSnapshot group, string contentName, CancellationToken ct)
    {
        var content = _c.Cluster.GroupContents.Get(contentName);
        var r = content?.Spec.VolumeGroupSnapshotRef;
        string? problem = content is null ? $"VolumeGroupSnapshotContent {contentName} does not exist"
            : content.Spec.Source.GroupSnapshotHandles is null ? $"VolumeGroupSnapshotContent {contentName} is not pre-provisioned (it has no spec.source.groupSnapshotHandles) and cannot be bound by name"
            : r!.Name != group.Metadata.Name || r.NamespaceProperty != group.Metadata.NamespaceProperty || (!string.IsNullOrEmpty(r.Uid) && r.Uid != group.Metadata.Uid)
                ? $"VolumeGroupSnapshotContent {contentName} belongs to {r.NamespaceProperty}/{r.Name}, not {group.Metadata.NamespaceProperty}/{group.Metadata.Name}; its spec.volumeGroupSnapshotRef must name this group snapshot"
            : content.Metadata.DeletionTimestamp is not null ? $"VolumeGroupSnapshotContent {contentName} is being deleted"
            : null;
        if (problem is not null)
        {
            await FailAsync(group, Misbound, problem, ct).ConfigureAwait(false);
            return;
        }

        group = await SetFinalizerAsync(group, ct).ConfigureAwait(false);
        if (string.IsNullOrEmpty(r!.Uid))
        {
            // The resourceVersion precondition makes this a compare-and-set: two group snapshots cannot both claim it.
            await _c.Cluster.PatchGroupContentAsync(
                content!,
                new JsonObject { ["spec"] = new JsonObject { ["volumeGroupSnapshotRef"] = new JsonObject { ["uid"] = group.Metadata.Uid } } },
                status: false,
                ct).ConfigureAwait(false);
        }

        await _c.Cluster.PatchGroupSnapshotAsync(
            group,
            new JsonObject { ["status"] = new JsonObject { ["boundVolumeGroupSnapshotContentName"] = contentName, ["readyToUse"] = false } },
            status: true,
            ct).ConfigureAwait(false);
    }

    // ---- members -----------------------------------------------------------------------------------------

    /// <summary>The member VolumeSnapshot of <paramref name="member"/>, made with its content when missing; null when another object holds its name.</summary>
    private async Task<VolumeSnapshot?> EnsureMemberAsync(VolumeGroupSnapshot group, VolumeGroupSnapshotContent content, string groupHandle, VolumeSnapshotInfo member, CancellationToken ct)
    {
        string ns = group.Metadata.NamespaceProperty;
        string snapshotHandle = member.SnapshotHandle ?? "";
        string hash = Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(content.Metadata.Uid + "/" + snapshotHandle)))[..20];
        string snapshotName = "snapshot-" + hash;
        string contentName = "snapcontent-" + hash;
        var memberContent = _c.Cluster.Contents.Get(contentName);
        if (memberContent is null)
        {
            (memberContent, _) = await _c.Cluster.CreateContentAsync(
                new VolumeSnapshotContent
                {
                    Metadata = new V1ObjectMeta { Name = contentName, Annotations = new Dictionary<string, string> { [GroupNames.MemberOfGroupAnnotation] = groupHandle } },
                    Spec = new VolumeSnapshotContentSpec
                    {
                        VolumeSnapshotRef = new V1ObjectReference { ApiVersion = "snapshot.storage.k8s.io/v1", Kind = "VolumeSnapshot", Name = snapshotName, NamespaceProperty = ns },
                        DeletionPolicy = content.Spec.DeletionPolicy,
                        Driver = content.Spec.Driver,
                        Source = new VolumeSnapshotContentSource { SnapshotHandle = snapshotHandle },
                    },
                },
                ct).ConfigureAwait(false);
        }

        if (memberContent.Spec.Source.SnapshotHandle != snapshotHandle)
        {
            await FailAsync(group, Misbound, $"VolumeSnapshotContent {contentName} already exists and holds snapshot {memberContent.Spec.Source.SnapshotHandle}, not member {snapshotHandle}", ct).ConfigureAwait(false);
            return null;
        }

        if (memberContent.Status?.VolumeGroupSnapshotHandle != groupHandle)
        {
            await _c.Cluster.PatchContentAsync(memberContent, new JsonObject { ["status"] = new JsonObject { ["volumeGroupSnapshotHandle"] = groupHandle } }, status: true, ct).ConfigureAwait(false);
        }

        var snapshot = _c.Cluster.Snapshots.Get(ns, snapshotName);
        if (snapshot is null)
        {
            var annotations = new Dictionary<string, string>();
            if (ClaimOf(member.VolumeHandle) is { } claim && claim.NamespaceProperty == ns)
            {
                annotations[GroupNames.SourceClaimAnnotation] = claim.Name;
            }

            snapshot = await _c.Cluster.CreateSnapshotAsync(
                new VolumeSnapshot
                {
                    Metadata = new V1ObjectMeta
                    {
                        Name = snapshotName,
                        NamespaceProperty = ns,
                        Labels = new Dictionary<string, string> { [GroupNames.GroupLabel] = group.Metadata.Name },
                        Annotations = annotations,
                        Finalizers = [GroupNames.InGroupFinalizer],
                        OwnerReferences = [new V1OwnerReference { ApiVersion = GroupNames.ApiVersion, Kind = "VolumeGroupSnapshot", Name = group.Metadata.Name, Uid = group.Metadata.Uid, Controller = true }],
                    },
                    Spec = new VolumeSnapshotSpec { Source = new VolumeSnapshotSource { VolumeSnapshotContentName = contentName } },
                },
                ct).ConfigureAwait(false);
        }

        if (!IsMemberOf(snapshot, group))
        {
            await FailAsync(group, Misbound, $"VolumeSnapshot {ns}/{snapshotName} already exists and is no member of this group snapshot", ct).ConfigureAwait(false);
            return null;
        }

        if (snapshot.Status?.VolumeGroupSnapshotName != group.Metadata.Name)
        {
            snapshot = await _c.Cluster.PatchSnapshotAsync(snapshot, new JsonObject { ["status"] = new JsonObject { ["volumeGroupSnapshotName"] = group.Metadata.Name } }, status: true, ct).ConfigureAwait(false);
        }

        return snapshot;
    }

    private V1ObjectReference? ClaimOf(string? volumeHandle) =>
        string.IsNullOrEmpty(volumeHandle) ? null
            : _c.Cluster.Volumes.ByIndex(Indexes.VolumeByHandle, Indexes.Handle(_c.Options.DriverName, volumeHandle))
                .OrderBy(v => v.Metadata.Name, StringComparer.Ordinal).FirstOrDefault()?.Spec.ClaimRef;

    private static bool IsMemberOf(VolumeSnapshot snapshot, VolumeGroupSnapshot group) =>
        snapshot.Metadata.OwnerReferences?.Any(o => o.Uid == group.Metadata.Uid) == true;

    // ---- deletion ----------------------------------------------------------------------------------------

    private async Task<Outcome> DeleteAsync(VolumeGroupSnapshot group, CancellationToken ct)
    {
        if (!Cluster.HasFinalizer(group.Metadata, GroupNames.GroupBoundFinalizer))
        {
            return Outcome.Done;
        }

        // Members first: each lifts its in-group protection and goes through the snapshot controller (which waits
        // for restores from it to finish); their contents' snapshots are deleted with the group below, in one call.
        var members = _c.Cluster.Snapshots.ByIndex(Indexes.SnapshotByOwnerUid, group.Metadata.Uid)
            .Where(s => s.Metadata.NamespaceProperty == group.Metadata.NamespaceProperty && IsMemberOf(s, group)).ToList();
        foreach (var member in members)
        {
            if (Cluster.FinalizerPatch(member.Metadata, GroupNames.InGroupFinalizer, false) is { } lift)
            {
                await _c.Cluster.PatchSnapshotAsync(member, lift, status: false, ct).ConfigureAwait(false);
            }

            if (member.Metadata.DeletionTimestamp is null)
            {
                await _c.Cluster.DeleteSnapshotAsync(member, ct).ConfigureAwait(false);
            }
        }

        if (members.Count > 0)
        {
            return Outcome.After(TimeSpan.FromSeconds(1));
        }

        string? bound = group.Status?.BoundVolumeGroupSnapshotContentName;
        var content = string.IsNullOrEmpty(bound) ? _c.Cluster.GroupContents.Get(GroupNames.ContentName(group.Metadata.Uid)) : _c.Cluster.GroupContents.Get(bound);
        if (content is not null && BelongsTo(content, group) && content.Spec.DeletionPolicy == "Delete" && content.Metadata.DeletionTimestamp is null)
        {
            await _c.Cluster.DeleteGroupContentAsync(content, ct).ConfigureAwait(false);
        }

        if (Cluster.FinalizerPatch(group.Metadata, GroupNames.GroupBoundFinalizer, false) is { } remove)
        {
            await _c.Cluster.PatchGroupSnapshotAsync(group, remove, status: false, ct).ConfigureAwait(false);
        }

        return Outcome.Done;
    }

    // ---- helpers -----------------------------------------------------------------------------------------

    private static bool BelongsTo(VolumeGroupSnapshotContent content, VolumeGroupSnapshot group)
    {
        var r = content.Spec.VolumeGroupSnapshotRef;
        return r.Name == group.Metadata.Name && r.NamespaceProperty == group.Metadata.NamespaceProperty && r.Uid == group.Metadata.Uid;
    }

    private async Task<VolumeGroupSnapshot> SetFinalizerAsync(VolumeGroupSnapshot group, CancellationToken ct) =>
        Cluster.FinalizerPatch(group.Metadata, GroupNames.GroupBoundFinalizer, true) is { } add
            ? await _c.Cluster.PatchGroupSnapshotAsync(group, add, status: false, ct).ConfigureAwait(false)
            : group;

    private async Task FailAsync(VolumeGroupSnapshot group, string reason, string message, CancellationToken ct)
    {
        if (group.Status?.Error?.Message != message)
        {
            var error = new JsonObject { ["time"] = GroupContentController.FormatTime(_c.Options.TimeProvider.GetUtcNow().UtcDateTime), ["message"] = message };
            await _c.Cluster.PatchGroupSnapshotAsync(group, new JsonObject { ["status"] = new JsonObject { ["error"] = error, ["readyToUse"] = false } }, status: true, ct).ConfigureAwait(false);
            await _c.Events.RecordAsync(group, EventRecorder.Warning, reason, message, ct).ConfigureAwait(false);
        }
    }
}
