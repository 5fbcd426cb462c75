using System.Globalization;
using System.Net;
using System.Text.Json.Nodes;
using Dolly.Controllers.Model;
using Dolly.Controllers.Runtime;
using k8s;
using k8s.Autorest;
using k8s.Models;

namespace Dolly.Controllers.Schedules;

/// <summary>
/// <c>group: true</c>: per run, one VolumeGroupSnapshot per namespace of all its selected claims, named
/// <c>&lt;schedule&gt;-&lt;UTC yyyyMMddHHmm&gt;</c>, whose selector is the schedule's claimSelector; the group
/// snapshot controller cuts the members at one instant. Retention counts group snapshots per namespace, and a group
/// snapshot is held while anything holds one of its members.
/// </summary>
internal sealed partial class ScheduleController
{
    /// <summary>Kind in status.kept of a group snapshot.</summary>
    private const string GroupKind = "VolumeGroupSnapshot";

    /// <summary>Retention's series of a namespace's group snapshots: <c>&lt;namespace&gt;/</c> and this (no claim name has a space).</summary>
    private const string GroupSeries = " group snapshots";

    /// <summary>Waiter keys of group snapshots, apart from the snapshots' <c>namespace/name</c>.</summary>
    private const string GroupKeyPrefix = "group:";

    private const string GroupSnapshotsPlural = "volumegroupsnapshots";

    /// <summary>Why the spec's group settings are invalid; null when valid.</summary>
    internal static string? GroupProblem(SnapshotScheduleSpec spec) => spec switch
    {
        { Group: not true, VolumeGroupSnapshotClassName: { Length: > 0 } } =>
            "spec.volumeGroupSnapshotClassName is set but spec.group is not true: set group: true for group snapshots, or remove the class",
        { Group: true, SkipUnchanged: true } =>
            "spec.skipUnchanged compares a claim's snapshots one by one and cannot remove one member of a group snapshot: use it without group: true",
        { Group: true, Hooks.Freeze: true } =>
            "spec.hooks.freeze freezes one claim's file system around its own cut; with group: true use hooks.pre/hooks.post to quiesce the application around the group's cut",
        _ => null,
    };

    private async Task<List<ClaimRunResult>> RunGroupsAsync(SnapshotSchedule schedule, DateTimeOffset at, CancellationToken ct)
    {
        var results = new List<ClaimRunResult>();
        foreach (var claims in SelectedClaims(schedule).GroupBy(c => c.Metadata.NamespaceProperty, StringComparer.Ordinal).OrderBy(g => g.Key, StringComparer.Ordinal))
        {
            results.AddRange(await GroupRunAsync(schedule, claims.Key, [.. claims.OrderBy(c => c.Metadata.Name, StringComparer.Ordinal)], at, ct).ConfigureAwait(false));
        }

        return results;
    }

    private async Task<List<ClaimRunResult>> GroupRunAsync(SnapshotSchedule schedule, string ns, List<V1PersistentVolumeClaim> claims, DateTimeOffset at, CancellationToken ct)
    {
        List<ClaimRunResult> Each(string result, string? group, string? message, string? hooks = null) =>
            [.. claims.Select(c => new ClaimRunResult { Namespace = ns, Name = c.Metadata.Name, Result = result, GroupSnapshot = group, Message = message, Hooks = hooks })];

        var unready = claims.Where(c => c.Metadata.DeletionTimestamp is not null || c.Status?.Phase != "Bound").ToList();
        if (unready.Count > 0)
        {
            string which = string.Join(", ", unready.Select(c => c.Metadata.DeletionTimestamp is not null ? $"{c.Metadata.Name} is being deleted" : $"{c.Metadata.Name} is {c.Status?.Phase ?? "Pending"}"));
            return Each(Skipped, null, $"no group snapshot: every selected claim must be bound and {which}");
        }

        string name = ScheduleNames.GroupSnapshotName(schedule.Metadata.Name, at);
        string key = GroupKeyPrefix + ns + "/" + name;
        var group = new VolumeGroupSnapshot
        {
            Metadata = new V1ObjectMeta
            {
                Name = name,
                NamespaceProperty = ns,
                Labels = new Dictionary<string, string> { [ScheduleNames.LabelFor(schedule.IsCluster)] = schedule.Metadata.Name },
                Annotations = new Dictionary<string, string> { [ScheduleNames.RunTimeAnnotation] = at.UtcDateTime.ToString("yyyy-MM-dd'T'HH:mm:ss'Z'", CultureInfo.InvariantCulture) },
            },
            Spec = new VolumeGroupSnapshotSpec
            {
                Source = new VolumeGroupSnapshotSource { Selector = schedule.Spec.ClaimSelector ?? new V1LabelSelector() },
                VolumeGroupSnapshotClassName = string.IsNullOrEmpty(schedule.Spec.VolumeGroupSnapshotClassName) ? null : schedule.Spec.VolumeGroupSnapshotClassName,
            },
        };
        if (schedule.Spec.Hooks is not { HasExec: true } hooks)
        {
            return await CreateGroupAsync(schedule, group, ct).ConfigureAwait(false) is { } refused ? Each(Failed, null, refused) : Each(Created, name, null);
        }

        if (_hooks.Unavailable is { } why)
        {
            if (AnyFails(hooks))
            {
                return Each(Failed, null, why);
            }

            string notRun = "not run (every hook has onError Continue): " + why;
            return await CreateGroupAsync(schedule, group, ct).ConfigureAwait(false) is { } refused ? Each(Failed, null, refused, notRun) : Each(Created, name, null, notRun);
        }

        var names = claims.Select(c => c.Metadata.Name).ToHashSet(StringComparer.Ordinal);
        if (_c.Cluster.GroupSnapshots.Get(ns, name) is { } existing)
        {
            string? summary = await PostPendingAsync(
                existing.Metadata, async t => (await _c.Cluster.ReadGroupSnapshotAsync(ns, name, t).ConfigureAwait(false))?.Metadata, ns, names, hooks, key, () => GroupCut(ns, name), PatchGroupAnnotationsAsync(existing), ct).ConfigureAwait(false);
            return Each(Created, name, null, summary);
        }

        var pods = await _hooks.PodsMountingAsync(ns, names, ct).ConfigureAwait(false);
        if (pods.Count == 0)
        {
            const string none = "no running pod mounts the claims, so no exec hook ran";
            return await CreateGroupAsync(schedule, group, ct).ConfigureAwait(false) is { } refused ? Each(Failed, null, refused, none) : Each(Created, name, null, none);
        }

        MarkPostPending(group.Metadata, hooks);
        var (report, created) = await CutWithHooksAsync(pods, hooks, token => CreateGroupAsync(schedule, group, token), key, () => GroupCut(ns, name), ct).ConfigureAwait(false);
        if (created && _c.Cluster.GroupSnapshots.Get(ns, name) is { } made)
        {
            await PatchGroupAnnotationsAsync(made)(HookAnnotations(report), ct).ConfigureAwait(false);
            if (report.CutError is not null)
            {
                await DeleteGroupAsync(made, ct).ConfigureAwait(false);
            }
        }

        return Verdict(report, name) is { } failed
            ? Each(Failed, report.PostFailure is null ? null : name, failed, report.Summary())
            : Each(Created, name, null, report.Summary());
    }

    /// <summary>Creates the run's group snapshot; null when it exists now (made by this run before), else why not.</summary>
    private async Task<string?> CreateGroupAsync(SnapshotSchedule schedule, VolumeGroupSnapshot group, CancellationToken ct)
    {
        string ns = group.Metadata.NamespaceProperty;
        string name = group.Metadata.Name;
        try
        {
            object written = await _c.Cluster.Client.CustomObjects.CreateNamespacedCustomObjectAsync(
                group, GroupNames.Group, GroupNames.Version, ns, GroupSnapshotsPlural, cancellationToken: ct).ConfigureAwait(false);
            _c.Cluster.GroupSnapshots.Remember(KubernetesJson.Deserialize<VolumeGroupSnapshot>(KubernetesJson.Serialize(written)));
            return null;
        }
        catch (HttpOperationException ex) when (ex.Response.StatusCode == HttpStatusCode.Conflict)
        {
            var existing = _c.Cluster.GroupSnapshots.Get(ns, name);
            string label = ScheduleNames.LabelFor(schedule.IsCluster);
            bool ours = existing is null || (existing.Metadata.Labels?.TryGetValue(label, out var owner) == true && owner == schedule.Metadata.Name);
            return ours ? null : $"a VolumeGroupSnapshot {ns}/{name} already exists and was not made by this schedule";
        }
        catch (HttpOperationException ex) when (ex.Response.StatusCode is HttpStatusCode.Forbidden or HttpStatusCode.UnprocessableEntity or HttpStatusCode.BadRequest or HttpStatusCode.NotFound)
        {
            return $"creating VolumeGroupSnapshot {ns}/{name} was refused: {(int)ex.Response.StatusCode} {ex.Response.Content}";
        }
    }

    /// <summary>Whether the group snapshot is cut: (true, null) cut; (true, why) failed or gone.</summary>
    private (bool, string?) GroupCut(string ns, string name) => _c.Cluster.GroupSnapshots.Get(ns, name) switch
    {
        null => (true, "it was deleted before it was cut"),
        { Status.CreationTime: not null } => (true, null),
        { Status.Error.Message: { } error } => (true, error),
        _ => (false, null),
    };

    /// <summary>The schedule's group snapshots that are not being deleted.</summary>
    private IEnumerable<VolumeGroupSnapshot> MyGroups(SnapshotSchedule schedule)
    {
        string label = ScheduleNames.LabelFor(schedule.IsCluster);
        return _c.Cluster.GroupSnapshots.List().Where(g => g.Metadata.DeletionTimestamp is null
            && g.Metadata.Labels?.TryGetValue(label, out var owner) == true && owner == schedule.Metadata.Name
            && (schedule.IsCluster || g.Metadata.NamespaceProperty == schedule.Metadata.NamespaceProperty));
    }

    /// <summary>The member snapshots of a group snapshot (made by the group snapshot controller, owned by it).</summary>
    private IEnumerable<VolumeSnapshot> Members(VolumeGroupSnapshot group) =>
        _c.Cluster.Snapshots.List().Where(s => s.Metadata.NamespaceProperty == group.Metadata.NamespaceProperty
            && s.Metadata.OwnerReferences?.Any(o => o.Uid == group.Metadata.Uid) == true);

    /// <summary>A group snapshot as retention sees it: held by its own keep annotation and by whatever holds a member.</summary>
    private RetainedSnapshot RetainedGroup(VolumeGroupSnapshot g)
    {
        var holders = new List<string>();
        if (Cluster.Annotation(g.Metadata, ScheduleNames.KeepAnnotation) is { } keep && !string.Equals(keep, "false", StringComparison.OrdinalIgnoreCase))
        {
            holders.Add("held: annotation " + ScheduleNames.KeepAnnotation);
        }

        foreach (var member in Members(g).OrderBy(s => s.Metadata.Name, StringComparer.Ordinal))
        {
            holders.AddRange(SnapshotHolders.Of(_holders, member).Select(h => $"{h} (member {member.Metadata.Name})"));
        }

        var time = Cluster.Annotation(g.Metadata, ScheduleNames.RunTimeAnnotation) is { } text
            && DateTimeOffset.TryParse(text, CultureInfo.InvariantCulture, DateTimeStyles.AssumeUniversal | DateTimeStyles.AdjustToUniversal, out var t)
            ? t
            : Utc(g.Metadata.CreationTimestamp ?? DateTime.UnixEpoch);
        return new RetainedSnapshot(g.Metadata.NamespaceProperty, g.Metadata.Name, g.Metadata.NamespaceProperty + "/" + GroupSeries, time, g.Status?.ReadyToUse == true, holders);
    }

    /// <summary>Deletes the group snapshot (members go with it) unless it changed since judged.</summary>
    private async Task DeleteGroupAsync(VolumeGroupSnapshot group, CancellationToken ct)
    {
        try
        {
            await _c.Cluster.Client.CustomObjects.DeleteNamespacedCustomObjectAsync(
                GroupNames.Group, GroupNames.Version, group.Metadata.NamespaceProperty, GroupSnapshotsPlural, group.Metadata.Name,
                new V1DeleteOptions { Preconditions = new V1Preconditions { Uid = group.Metadata.Uid, ResourceVersion = group.Metadata.ResourceVersion } },
                cancellationToken: ct).ConfigureAwait(false);
            ControllerLog.Action(Logger, Name, group.Metadata.NamespaceProperty + "/" + group.Metadata.Name, "group snapshot deleted by retention");
        }
        catch (HttpOperationException ex) when (ex.Response.StatusCode is HttpStatusCode.NotFound or HttpStatusCode.Conflict)
        {
            // Gone already, or changed since judged: the change brings the schedule back for a fresh decision.
        }
    }

    /// <summary>A member snapshot that changes (a restore from it starts or ends) may change its group's holders.</summary>
    private void EnqueueGroupOwner(VolumeSnapshot snapshot)
    {
        if (snapshot.Metadata.Labels?.TryGetValue(GroupNames.GroupLabel, out var groupName) == true
            && _c.Cluster.GroupSnapshots.Get(snapshot.Metadata.NamespaceProperty, groupName) is { } group)
        {
            EnqueueOwner(group.Metadata);
        }
    }

    private Func<JsonObject, CancellationToken, Task> PatchGroupAnnotationsAsync(VolumeGroupSnapshot group) => async (annotations, ct) =>
    {
        try
        {
            // Not compare-and-set: the group controller writes the group meanwhile, and a conflict here would leave
            // the post-pending mark and run the post hooks again.
            await _c.Cluster.PatchOwnAnnotationsAsync(_c.Cluster.GroupSnapshots, group, GroupNames.Group, GroupNames.Version, GroupSnapshotsPlural, annotations, ct).ConfigureAwait(false);
        }
        catch (HttpOperationException ex) when (ex.Response.StatusCode == HttpStatusCode.NotFound)
        {
            // Deleted since; the schedule's status still tells.
        }
    };
}
