using System.Collections.Concurrent;
using System.Globalization;
using System.Net;
using System.Text.Json.Nodes;
using Dolly.Controllers.Model;
using Dolly.Controllers.Runtime;
using k8s;
using k8s.Autorest;
using k8s.Models;
using Microsoft.Extensions.Logging;

namespace Dolly.Controllers.Schedules;

/// <summary>
/// Runs SnapshotSchedules and ClusterSnapshotSchedules: at each due time (read in the schedule's time zone) one
/// VolumeSnapshot per selected bound claim, named <c>&lt;claim&gt;-&lt;schedule&gt;-&lt;UTC yyyyMMddHHmm&gt;</c>
/// and labelled with the schedule; after downtime a single catch-up run for the latest missed time; then
/// retention, which never deletes a snapshot something holds. All time comes from the options' TimeProvider.
/// A run is idempotent: the names derive from the run time, so a run repeated after a crash finds its snapshots.
/// </summary>
internal sealed partial class ScheduleController : Reconciler
{
    private const string NamespacedPrefix = ScheduleNames.NamespacedKind + ":";
    private const string ClusterPrefix = ScheduleNames.ClusterKind + ":";
    private const int MaxSnapshotName = 253;
    private const int CreateParallelism = 8;

    /// <summary>The longest sleep between looks at a schedule, so a clock that jumps is noticed within the hour.</summary>
    private static readonly TimeSpan MaxSleep = TimeSpan.FromHours(1);

    private readonly ControllerContext _c;
    private readonly TimeProvider _time;
    private readonly IReadOnlyList<ISnapshotHolder> _holders;
    private readonly UnchangedCheck _unchanged;
    private readonly ScheduleExecHooks _hooks;

    public ScheduleController(ControllerContext context)
        : base("snapshot-schedules", context.Options.RetryBaseDelay, context.Options.RetryMaxDelay, context.Loggers.CreateLogger<ScheduleController>())
    {
        _c = context;
        _time = context.Options.TimeProvider;
        _holders = SnapshotHolders.For(context.Cluster);
        _unchanged = new UnchangedCheck(context);
        _hooks = new ScheduleExecHooks(context);
        var cluster = context.Cluster;
        cluster.Schedules.OnChange((_, s) => Enqueue(s));
        cluster.ClusterSchedules.OnChange((_, s) => Enqueue(s));

        // A class created (or removed) may make a schedule that names it valid (or not).
        cluster.SnapshotClasses.OnChange((old, now) =>
        {
            string? name = (now ?? old)?.Metadata.Name;
            foreach (var s in name is null ? [] : cluster.Schedules.ByIndex(Indexes.ScheduleByClass, name).Concat(cluster.ClusterSchedules.ByIndex(Indexes.ScheduleByClass, name)))
            {
                Enqueue(s);
            }
        });
        cluster.Snapshots.OnChange((old, now) =>
        {
            EnqueueOwner(old);
            EnqueueOwner(now);
            if ((now ?? old) is { } s)
            {
                _hooks.Changed(s.Metadata.NamespaceProperty + "/" + s.Metadata.Name);
                EnqueueGroupOwner(s);
            }
        });
        cluster.GroupSnapshots.OnChange((old, now) =>
        {
            EnqueueOwner(old?.Metadata);
            EnqueueOwner(now?.Metadata);
            if ((now ?? old) is { } g)
            {
                _hooks.Changed(GroupKeyPrefix + g.Metadata.NamespaceProperty + "/" + g.Metadata.Name);
            }
        });

        // A claim that binds releases the snapshot it restored from; a new restore holds one.
        cluster.Claims.OnChange((old, now) =>
        {
            foreach (var claim in new[] { old, now })
            {
                if (claim is not null && Provisioner.Source(claim) is { Kind: "VolumeSnapshot", ApiGroup: Names.SnapshotGroup } s)
                {
                    if (cluster.Snapshots.Get(s.Namespace, s.Name) is { } source)
                    {
                        EnqueueOwner(source);
                        EnqueueGroupOwner(source);
                    }
                }
            }
        });
    }

    private void Enqueue(SnapshotSchedule? s)
    {
        if (s is not null)
        {
            Queue.Add(s.IsCluster ? ClusterPrefix + s.Metadata.Name : NamespacedPrefix + s.Metadata.NamespaceProperty + "/" + s.Metadata.Name);
        }
    }

    private void EnqueueOwner(VolumeSnapshot? snapshot) => EnqueueOwner(snapshot?.Metadata);

    /// <summary>The schedule whose label <paramref name="meta"/> (a snapshot's or a group snapshot's) carries.</summary>
    private void EnqueueOwner(V1ObjectMeta? meta)
    {
        if (meta?.Labels is not { } labels)
        {
            return;
        }

        if (labels.TryGetValue(ScheduleNames.ScheduleLabel, out var name))
        {
            Queue.Add(NamespacedPrefix + meta.NamespaceProperty + "/" + name);
        }

        if (labels.TryGetValue(ScheduleNames.ClusterScheduleLabel, out var clusterName))
        {
            Queue.Add(ClusterPrefix + clusterName);
        }
    }

    protected override async Task<Outcome> ReconcileAsync(string key, CancellationToken cancellationToken)
    {
        var schedule = key.StartsWith(ClusterPrefix, StringComparison.Ordinal)
            ? _c.Cluster.ClusterSchedules.Get(key[ClusterPrefix.Length..])
            : _c.Cluster.Schedules.Get(key[NamespacedPrefix.Length..]);
        if (schedule is null || schedule.Metadata.DeletionTimestamp is not null)
        {
            // The snapshots of a deleted schedule stay: they are the user's data, not the schedule's.
            return Outcome.Done;
        }

        var status = schedule.Status ?? new SnapshotScheduleStatus();
        var (timing, error) = ScheduleTiming.Parse(schedule.Spec);
        error ??= LabelSelectors.Problem(schedule.Spec.ClaimSelector, "spec.claimSelector")
            ?? (schedule.IsCluster ? LabelSelectors.Problem(schedule.Spec.NamespaceSelector, "spec.namespaceSelector") : null)
            ?? (schedule.Spec.SnapshotClassName is { Length: > 0 } cls && _c.Cluster.SnapshotClasses.Get(cls) is null
                ? $"spec.snapshotClassName \"{cls}\" names no VolumeSnapshotClass; no snapshot is taken until it exists (every run would leave one that never becomes ready)"
                : null)
            ?? HooksProblem(schedule.Spec.Hooks)
            ?? GroupProblem(schedule.Spec);
        if (timing is null || error is not null)
        {
            if (status.Error != error)
            {
                await _c.Events.RecordAsync(schedule, EventRecorder.Warning, "InvalidSchedule", error!, cancellationToken).ConfigureAwait(false);
            }

            await WriteStatusAsync(schedule, Next(status, s => { s.Error = error; s.NextRun = null; }), cancellationToken).ConfigureAwait(false);
            return Outcome.Done;
        }

        var now = _time.GetUtcNow();
        bool suspended = schedule.Spec.Suspend == true;
        bool runNow = Cluster.Annotation(schedule.Metadata, ScheduleNames.RunNowAnnotation) is not null;
        var anchor = status.LastRun is { } last ? Utc(last) : Utc(schedule.Metadata.CreationTimestamp ?? now.UtcDateTime);
        var due = suspended ? null : timing.LatestDue(anchor, now);
        var run = runNow ? now : due;
        var next = Next(status, s => s.Error = null);
        if (run is { } at)
        {
            var results = await RunAsync(schedule, at, cancellationToken).ConfigureAwait(false);
            next.Claims = results;
            next.LastRun = (at > anchor ? at : anchor).UtcDateTime;
            var counts = results.GroupBy(r => r.Result, StringComparer.Ordinal).Select(g => $"{g.Count()} {g.Key.ToLowerInvariant()}");
            string summary = $"run {at.UtcDateTime.ToString("yyyy-MM-dd'T'HH:mm'Z'", CultureInfo.InvariantCulture)}{(runNow ? " (run-now)" : due < now.AddMinutes(-1) ? " (catch-up)" : "")}: {(results.Count == 0 ? "no claim selected" : string.Join(", ", counts))}";
            await _c.Events.RecordAsync(schedule, results.Any(r => r.Result == Failed) ? EventRecorder.Warning : EventRecorder.Normal, "ScheduledRun", summary, cancellationToken).ConfigureAwait(false);
        }

        FreezeResults(next);
        var nextRun = suspended ? null : timing.Next(now > anchor ? now : anchor);
        next.NextRun = nextRun?.UtcDateTime;
        await CheckUnchangedAsync(schedule, next, cancellationToken).ConfigureAwait(false);
        var (kept, recheck) = await ApplyRetentionAsync(schedule, timing, now, cancellationToken).ConfigureAwait(false);
        next.Kept = kept;
        next.KeptCount = kept.Count;
        await WriteStatusAsync(schedule, next, cancellationToken).ConfigureAwait(false);

        if (runNow)
        {
            // After the status, so a crash in between repeats the run (same snapshots) rather than losing it.
            var fresh = CurrentOf(schedule);
            var patch = new JsonObject { ["metadata"] = new JsonObject { ["annotations"] = new JsonObject { [ScheduleNames.RunNowAnnotation] = null } } };
            await PatchAsync(fresh, patch, status: false, cancellationToken).ConfigureAwait(false);
        }

        var wake = new[] { nextRun, recheck }.Where(t => t is not null).Select(t => t!.Value).DefaultIfEmpty(DateTimeOffset.MaxValue).Min();
        var sleep = wake == DateTimeOffset.MaxValue ? MaxSleep : wake - _time.GetUtcNow();
        return Outcome.After(sleep > MaxSleep ? MaxSleep : Max(sleep, TimeSpan.FromMilliseconds(10)));
    }

    private const string Created = "Created";
    private const string Skipped = "Skipped";
    private const string Failed = "Failed";

    /// <summary>One snapshot per selected claim for the run at <paramref name="at"/>.</summary>
    private async Task<List<ClaimRunResult>> RunAsync(SnapshotSchedule schedule, DateTimeOffset at, CancellationToken ct)
    {
        if (schedule.Spec.Group == true)
        {
            return await RunGroupsAsync(schedule, at, ct).ConfigureAwait(false);
        }

        var claims = SelectedClaims(schedule).OrderBy(c => c.Metadata.NamespaceProperty, StringComparer.Ordinal).ThenBy(c => c.Metadata.Name, StringComparer.Ordinal).ToList();
        var results = new ConcurrentDictionary<int, ClaimRunResult>();
        await Parallel.ForEachAsync(
            Enumerable.Range(0, claims.Count),
            new ParallelOptions { MaxDegreeOfParallelism = CreateParallelism, CancellationToken = ct },
            async (i, token) => results[i] = await SnapshotClaimAsync(schedule, claims[i], at, token).ConfigureAwait(false)).ConfigureAwait(false);
        return [.. Enumerable.Range(0, claims.Count).Select(i => results[i])];
    }

    private IEnumerable<V1PersistentVolumeClaim> SelectedClaims(SnapshotSchedule schedule)
    {
        var namespaces = schedule.IsCluster
            ? _c.Cluster.Namespaces.List().Where(n => LabelSelectors.Matches(schedule.Spec.NamespaceSelector, n.Metadata.Labels)).Select(n => n.Metadata.Name).ToHashSet(StringComparer.Ordinal)
            : [schedule.Metadata.NamespaceProperty];
        return namespaces.SelectMany(_c.Cluster.Claims.InNamespace).Where(c => LabelSelectors.Matches(schedule.Spec.ClaimSelector, c.Metadata.Labels));
    }

    private async Task<ClaimRunResult> SnapshotClaimAsync(SnapshotSchedule schedule, V1PersistentVolumeClaim claim, DateTimeOffset at, CancellationToken ct)
    {
        var result = new ClaimRunResult { Namespace = claim.Metadata.NamespaceProperty, Name = claim.Metadata.Name };
        if (claim.Metadata.DeletionTimestamp is not null)
        {
            return Set(result, Skipped, null, "the claim is being deleted");
        }

        if (claim.Status?.Phase != "Bound")
        {
            return Set(result, Skipped, null, $"the claim is not bound (phase {claim.Status?.Phase ?? "Pending"})");
        }

        string name = ScheduleNames.SnapshotName(claim.Metadata.Name, schedule.Metadata.Name, at);
        if (name.Length > MaxSnapshotName)
        {
            return Set(result, Failed, null, $"the snapshot name {name} is longer than {MaxSnapshotName} characters: shorten the claim or schedule name");
        }

        string label = ScheduleNames.LabelFor(schedule.IsCluster);
        var annotations = new Dictionary<string, string> { [ScheduleNames.RunTimeAnnotation] = at.UtcDateTime.ToString("yyyy-MM-dd'T'HH:mm:ss'Z'", CultureInfo.InvariantCulture) };
        if (schedule.Spec.SkipUnchanged == true && Previous(schedule, claim, name) is { } previous)
        {
            annotations[ScheduleNames.CompareWithAnnotation] = previous.Metadata.Name;
        }

        if (schedule.Spec.Hooks is { Freeze: true } hooks)
        {
            annotations[FreezeNames.FreezeAnnotation] = "true";
            annotations[FreezeNames.OnErrorAnnotation] = hooks.OnError ?? FreezeNames.Fail;
            if (hooks.FreezeTimeout is { } timeout)
            {
                annotations[FreezeNames.TimeoutAnnotation] = timeout;
            }
        }

        var snapshot = new VolumeSnapshot
        {
            Metadata = new V1ObjectMeta
            {
                Name = name,
                NamespaceProperty = claim.Metadata.NamespaceProperty,
                Labels = new Dictionary<string, string> { [label] = schedule.Metadata.Name },
                Annotations = annotations,
            },
            Spec = new VolumeSnapshotSpec
            {
                Source = new VolumeSnapshotSource { PersistentVolumeClaimName = claim.Metadata.Name },
                VolumeSnapshotClassName = string.IsNullOrEmpty(schedule.Spec.SnapshotClassName) ? null : schedule.Spec.SnapshotClassName,
            },
        };
        if (schedule.Spec.Hooks is { HasExec: true } exec)
        {
            return await SnapshotWithHooksAsync(schedule, claim, snapshot, exec, result, ct).ConfigureAwait(false);
        }

        return await CreateSnapshotAsync(schedule, snapshot, ct).ConfigureAwait(false) is { } refused
            ? Set(result, Failed, null, refused)
            : Set(result, Created, name, null);
    }

    /// <summary>Creates a scheduled snapshot; null when it exists now (made by this run before), else why not.</summary>
    private async Task<string?> CreateSnapshotAsync(SnapshotSchedule schedule, VolumeSnapshot snapshot, CancellationToken ct)
    {
        string ns = snapshot.Metadata.NamespaceProperty;
        string name = snapshot.Metadata.Name;
        string label = ScheduleNames.LabelFor(schedule.IsCluster);
        try
        {
            object written = await _c.Cluster.Client.CustomObjects.CreateNamespacedCustomObjectAsync(
                snapshot, Names.SnapshotGroup, "v1", ns, "volumesnapshots", cancellationToken: ct).ConfigureAwait(false);
            _c.Cluster.Snapshots.Remember(KubernetesJson.Deserialize<VolumeSnapshot>(KubernetesJson.Serialize(written)));
            return null;
        }
        catch (HttpOperationException ex) when (ex.Response.StatusCode == HttpStatusCode.Conflict)
        {
            // This run made it before (a run repeated after a crash), or someone else owns the name.
            var existing = _c.Cluster.Snapshots.Get(ns, name);
            bool ours = existing is null
                || (existing.Metadata.Labels?.TryGetValue(label, out var owner) == true && owner == schedule.Metadata.Name && existing.Spec.Source.PersistentVolumeClaimName == snapshot.Spec.Source.PersistentVolumeClaimName);
            return ours ? null : $"a VolumeSnapshot {ns}/{name} already exists and was not made by this schedule";
        }
        catch (HttpOperationException ex) when (ex.Response.StatusCode is HttpStatusCode.Forbidden or HttpStatusCode.UnprocessableEntity or HttpStatusCode.BadRequest or HttpStatusCode.NotFound)
        {
            return $"creating VolumeSnapshot {ns}/{name} was refused: {(int)ex.Response.StatusCode} {ex.Response.Content}";
        }
    }

    /// <summary>Why spec.hooks is invalid; null when it is valid or absent.</summary>
    internal static string? HooksProblem(ScheduleHooks? hooks) => hooks switch
    {
        null => null,
        { FreezeTimeout: { } t } when FreezeRequest.ParseTimeout(t) is null =>
            $"spec.hooks.freezeTimeout \"{t}\" is not a duration of 1ms to 60s such as 500ms, 2s or 1s500ms",
        { OnError: { } e } when e is not (FreezeNames.Fail or FreezeNames.Continue) =>
            $"spec.hooks.onError \"{e}\" must be {FreezeNames.Fail} or {FreezeNames.Continue}",
        _ => Hooks.ExecHookNames.Problem(hooks.Pre, "spec.hooks.pre") ?? Hooks.ExecHookNames.Problem(hooks.Post, "spec.hooks.post"),
    };

    /// <summary>Copies each claim's freeze outcome, written on its snapshot after the cut, into the run's results.</summary>
    private void FreezeResults(SnapshotScheduleStatus status)
    {
        foreach (var r in status.Claims ?? [])
        {
            if (r.Snapshot is { } name && _c.Cluster.Snapshots.Get(r.Namespace, name) is { } s && Cluster.Annotation(s.Metadata, FreezeNames.ResultAnnotation) is { } summary)
            {
                r.Freeze = summary;
                r.FrozenMicroseconds = long.TryParse(Cluster.Annotation(s.Metadata, FreezeNames.FrozenMicrosecondsAnnotation), NumberStyles.None, CultureInfo.InvariantCulture, out long us) ? us : null;
            }
        }
    }

    private static ClaimRunResult Set(ClaimRunResult r, string result, string? snapshot, string? message)
    {
        r.Result = result;
        r.Snapshot = snapshot;
        r.Message = message;
        return r;
    }

    /// <summary>
    /// Deletes what the policy and the holders allow; returns what is kept and why, and when a kept snapshot next
    /// ages out of maxAge (so the schedule is looked at again then).
    /// </summary>
    private async Task<(List<KeptSnapshot> Kept, DateTimeOffset? Recheck)> ApplyRetentionAsync(SnapshotSchedule schedule, ScheduleTiming timing, DateTimeOffset now, CancellationToken ct)
    {
        var mine = Mine(schedule).ToDictionary(s => (s.Metadata.NamespaceProperty, s.Metadata.Name));
        var groups = MyGroups(schedule).ToDictionary(g => (g.Metadata.NamespaceProperty, g.Metadata.Name));
        var retained = mine.Values.Select(s => new RetainedSnapshot(
            s.Metadata.NamespaceProperty,
            s.Metadata.Name,
            s.Metadata.NamespaceProperty + "/" + s.Spec.Source.PersistentVolumeClaimName,
            RunTime(s),
            s.Status?.ReadyToUse == true && Cluster.Annotation(s.Metadata, ScheduleNames.CompareWithAnnotation) is null,
            SnapshotHolders.Of(_holders, s))).Concat(groups.Values.Select(RetainedGroup)).ToList();
        var isGroup = retained.ToDictionary(r => r, r => r.Claim.EndsWith(GroupSeries, StringComparison.Ordinal));
        var decisions = Retention.Decide(retained, timing.Retention, timing.Zone, now);
        foreach (var d in decisions.Where(d => d.Delete))
        {
            if (isGroup[d.Snapshot])
            {
                await DeleteGroupAsync(groups[(d.Snapshot.Namespace, d.Snapshot.Name)], ct).ConfigureAwait(false);
            }
            else
            {
                await DeleteAsync(mine[(d.Snapshot.Namespace, d.Snapshot.Name)], ct).ConfigureAwait(false);
            }
        }

        var kept = decisions.Where(d => !d.Delete)
            .OrderBy(d => d.Snapshot.Namespace, StringComparer.Ordinal).ThenBy(d => d.Snapshot.Name, StringComparer.Ordinal)
            .Select(d => new KeptSnapshot { Namespace = d.Snapshot.Namespace, Name = d.Snapshot.Name, Reason = d.KeepReason!, Kind = isGroup[d.Snapshot] ? GroupKind : null }).ToList();
        DateTimeOffset? recheck = null;
        if (timing.Retention.MaxAge is { } age)
        {
            foreach (var d in decisions.Where(d => !d.Delete && d.Snapshot.Ready && d.Snapshot.Time + age > now))
            {
                recheck = recheck is { } r && r <= d.Snapshot.Time + age ? r : d.Snapshot.Time + age;
            }
        }

        return (kept, recheck);
    }

    /// <summary>The schedule's snapshots that are not being deleted.</summary>
    private IEnumerable<VolumeSnapshot> Mine(SnapshotSchedule schedule)
    {
        string label = ScheduleNames.LabelFor(schedule.IsCluster);
        string value = schedule.IsCluster ? schedule.Metadata.Name : Indexes.Key(schedule.Metadata.NamespaceProperty, schedule.Metadata.Name);
        return _c.Cluster.Snapshots.ByIndex(Indexes.SnapshotBySchedule, value).Where(s => s.Metadata.DeletionTimestamp is null
            && s.Metadata.Labels?.TryGetValue(label, out var owner) == true && owner == schedule.Metadata.Name
            && (schedule.IsCluster || s.Metadata.NamespaceProperty == schedule.Metadata.NamespaceProperty));
    }

    /// <summary>The claim's newest ready, compared snapshot of this schedule other than <paramref name="except"/>.</summary>
    private VolumeSnapshot? Previous(SnapshotSchedule schedule, V1PersistentVolumeClaim claim, string except) =>
        Mine(schedule)
            .Where(s => s.Metadata.NamespaceProperty == claim.Metadata.NamespaceProperty && s.Spec.Source.PersistentVolumeClaimName == claim.Metadata.Name
                && s.Metadata.Name != except && s.Status?.ReadyToUse == true && Cluster.Annotation(s.Metadata, ScheduleNames.CompareWithAnnotation) is null)
            .OrderByDescending(RunTime).ThenByDescending(s => s.Metadata.Name, StringComparer.Ordinal)
            .FirstOrDefault();

    /// <summary>
    /// skipUnchanged: each ready snapshot still to be compared is compared with the claim's previous one; when no
    /// block differs and nothing holds it, it is deleted and the claim's result says so; otherwise the mark goes.
    /// </summary>
    private async Task CheckUnchangedAsync(SnapshotSchedule schedule, SnapshotScheduleStatus status, CancellationToken ct)
    {
        foreach (var s in Mine(schedule).Where(s => s.Status?.ReadyToUse == true).ToList())
        {
            if (Cluster.Annotation(s.Metadata, ScheduleNames.CompareWithAnnotation) is not { } baseName)
            {
                continue;
            }

            var previous = _c.Cluster.Snapshots.Get(s.Metadata.NamespaceProperty, baseName);
            var (verdict, problem) = previous is { Metadata.DeletionTimestamp: null, Status.ReadyToUse: true }
                ? await _unchanged.CompareAsync(previous, s, ct).ConfigureAwait(false)
                : (UnchangedCheck.Verdict.Changed, null);
            if (verdict == UnchangedCheck.Verdict.NotYet)
            {
                continue;
            }

            var result = status.Claims?.FirstOrDefault(r => r.Namespace == s.Metadata.NamespaceProperty && r.Snapshot == s.Metadata.Name);
            if (verdict == UnchangedCheck.Verdict.Unchanged && SnapshotHolders.Of(_holders, s).Count == 0)
            {
                if (await DeleteAsync(s, ct).ConfigureAwait(false))
                {
                    string message = $"no block changed since {baseName}";
                    if (result is not null)
                    {
                        Set(result, Skipped, null, message);
                    }

                    await _c.Events.RecordAsync(schedule, EventRecorder.Normal, "SkippedUnchanged", $"{s.Metadata.NamespaceProperty}/{s.Spec.Source.PersistentVolumeClaimName}: {message}", ct).ConfigureAwait(false);
                }

                continue;
            }

            var patch = new JsonObject { ["metadata"] = new JsonObject { ["annotations"] = new JsonObject { [ScheduleNames.CompareWithAnnotation] = null } } };
            await _c.Cluster.PatchSnapshotAsync(s, patch, status: false, ct).ConfigureAwait(false);
            if (problem is not null && result is not null)
            {
                result.Message = problem;
            }
        }
    }

    /// <summary>Deletes the snapshot unless it changed since judged; true when it is gone.</summary>
    private async Task<bool> DeleteAsync(VolumeSnapshot snapshot, CancellationToken ct)
    {
        try
        {
            // The precondition makes the decision and the delete one step: a snapshot changed since it was judged
            // (a finalizer added by a restore starting, the keep annotation set) is not deleted; the change
            // brings it back for a fresh decision.
            await _c.Cluster.Client.CustomObjects.DeleteNamespacedCustomObjectAsync(
                Names.SnapshotGroup, "v1", snapshot.Metadata.NamespaceProperty, "volumesnapshots", snapshot.Metadata.Name,
                new V1DeleteOptions { Preconditions = new V1Preconditions { Uid = snapshot.Metadata.Uid, ResourceVersion = snapshot.Metadata.ResourceVersion } },
                cancellationToken: ct).ConfigureAwait(false);
            ControllerLog.Action(Logger, Name, snapshot.Metadata.NamespaceProperty + "/" + snapshot.Metadata.Name, "deleted by retention");
            return true;
        }
        catch (HttpOperationException ex) when (ex.Response.StatusCode == HttpStatusCode.NotFound)
        {
            return true;
        }
        catch (HttpOperationException ex) when (ex.Response.StatusCode == HttpStatusCode.Conflict)
        {
            ControllerLog.Action(Logger, Name, snapshot.Metadata.NamespaceProperty + "/" + snapshot.Metadata.Name, "changed since judged by retention; judged again");
            return false;
        }
    }

    private static DateTimeOffset RunTime(VolumeSnapshot s) =>
        Cluster.Annotation(s.Metadata, ScheduleNames.RunTimeAnnotation) is { } text
        && DateTimeOffset.TryParse(text, CultureInfo.InvariantCulture, DateTimeStyles.AssumeUniversal | DateTimeStyles.AdjustToUniversal, out var t)
            ? t
            : Utc(s.Metadata.CreationTimestamp ?? DateTime.UnixEpoch);

    private async Task WriteStatusAsync(SnapshotSchedule schedule, SnapshotScheduleStatus status, CancellationToken ct)
    {
        if (KubernetesJson.Serialize(status) == KubernetesJson.Serialize(schedule.Status ?? new SnapshotScheduleStatus()))
        {
            return;
        }

        // Explicit nulls, so a merge patch clears what is no longer true (an old error, a next run while suspended).
        var body = (JsonObject)JsonNode.Parse(KubernetesJson.Serialize(status))!;
        foreach (string field in new[] { "lastRun", "nextRun", "claims", "kept", "keptCount", "error" })
        {
            body.TryAdd(field, null);
        }

        await PatchAsync(CurrentOf(schedule), new JsonObject { ["status"] = body }, status: true, ct).ConfigureAwait(false);
    }

    private SnapshotSchedule CurrentOf(SnapshotSchedule schedule) =>
        (schedule.IsCluster ? _c.Cluster.ClusterSchedules.Get(schedule.Metadata.Name) : _c.Cluster.Schedules.Get(schedule.Metadata.NamespaceProperty, schedule.Metadata.Name)) ?? schedule;

    private Task<SnapshotSchedule> PatchAsync(SnapshotSchedule schedule, JsonObject patch, bool status, CancellationToken ct) =>
        _c.Cluster.PatchCustomAsync(
            schedule.IsCluster ? _c.Cluster.ClusterSchedules : _c.Cluster.Schedules,
            schedule,
            ScheduleNames.Group,
            ScheduleNames.Version,
            schedule.IsCluster ? ScheduleNames.ClusterPlural : ScheduleNames.NamespacedPlural,
            patch,
            status,
            ct);

    /// <summary>A copy of <paramref name="status"/> changed by <paramref name="change"/> (the cached object stays untouched).</summary>
    private static SnapshotScheduleStatus Next(SnapshotScheduleStatus status, Action<SnapshotScheduleStatus> change)
    {
        var copy = KubernetesJson.Deserialize<SnapshotScheduleStatus>(KubernetesJson.Serialize(status));
        change(copy);
        return copy;
    }

    private static DateTimeOffset Utc(DateTime t) => new(DateTime.SpecifyKind(t.Kind == DateTimeKind.Local ? t.ToUniversalTime() : t, DateTimeKind.Utc));

    private static TimeSpan Max(TimeSpan a, TimeSpan b) => a > b ? a : b;
}
