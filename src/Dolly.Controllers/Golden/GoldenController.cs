using System.Collections.Concurrent;
using System.Text.Json.Nodes;
using Dolly.Controllers.Model;
using Dolly.Controllers.Runtime;
using k8s;
using k8s.Models;
using Microsoft.Extensions.Logging;

namespace Dolly.Controllers.Golden;

/// <summary>
/// Runs GoldenSnapshots: turns the source into revisions (<see cref="GoldenSources"/>), publishes the current one to
/// every opted-in namespace (<see cref="GoldenFanOut"/>), moves OnNextAttach consumers to the current revision when
/// their volume is not attached (<see cref="GoldenConsumers"/>), and retires revisions beyond revisionHistoryLimit once nothing
/// holds them (<see cref="GoldenRetention"/>). A namespace that does not opt in is never written to
/// (<see cref="GoldenTargets"/>); one that stops opting in keeps what it has.
/// </summary>
internal sealed class GoldenController : Reconciler
{
    private const int FanOutParallelism = 16;

    /// <summary>
    /// How often a golden snapshot with consumers waiting for (or refused) a refresh looks again: the driver applies
    /// a refresh when the volume's last NBD client lets go, which no Kubernetes object tells.
    /// </summary>
    internal static readonly TimeSpan RefreshPoll = TimeSpan.FromSeconds(5);

    /// <summary>The longest sleep between looks at a scheduled golden snapshot, so a clock that jumps is noticed within the hour.</summary>
    private static readonly TimeSpan MaxSleep = TimeSpan.FromHours(1);

    private readonly ControllerContext _c;
    private readonly TimeProvider _time;
    private readonly GoldenSources _sources;
    private readonly GoldenFanOut _fanOut;
    private readonly GoldenConsumers _consumers;

    public GoldenController(ControllerContext context, IGoldenRefresher? refresher = null)
        : base("golden-snapshots", context.Options.RetryBaseDelay, context.Options.RetryMaxDelay, context.Loggers.CreateLogger<GoldenController>())
    {
        _c = context;
        _time = context.Options.TimeProvider;
        _sources = new GoldenSources(context);
        _fanOut = new GoldenFanOut(context);
        _consumers = new GoldenConsumers(context, refresher ?? new GoldenRefresher(context));
        var cluster = context.Cluster;
        cluster.Goldens.OnChange((old, now) => Enqueue((now ?? old)?.Metadata.Name));
        cluster.Namespaces.OnChange((old, now) =>
        {
            foreach (var g in cluster.Goldens.List())
            {
                if ((old is not null && GoldenTargets.OptsIn(g.Spec, old)) || (now is not null && GoldenTargets.OptsIn(g.Spec, now)))
                {
                    Enqueue(g.Metadata.Name);
                }
            }
        });
        cluster.Snapshots.OnChange((old, now) =>
        {
            foreach (var s in new[] { old, now })
            {
                if (s is null)
                {
                    continue;
                }

                Enqueue(GoldenObjects.GoldenOf(s.Metadata));
                foreach (var g in cluster.Goldens.List())
                {
                    // Its source, or a user's snapshot in the way of one of its names (a conflict that may have cleared).
                    if ((g.Spec.Source.VolumeSnapshot is { } v && v.Namespace == s.Metadata.NamespaceProperty && v.Name == s.Metadata.Name)
                        || s.Metadata.Name == g.Spec.SnapshotName || s.Metadata.Name.StartsWith(g.Spec.SnapshotName + "-r", StringComparison.Ordinal))
                    {
                        Enqueue(g.Metadata.Name);
                    }
                }
            }
        });
        cluster.Contents.OnChange((old, now) => Enqueue(GoldenObjects.GoldenOf((now ?? old)!.Metadata)));
        cluster.Claims.OnChange((old, now) =>
        {
            if (now is null && old is not null && _consumers.Forget(old))
            {
                // Any golden snapshot's look withdraws it: the request is named by the claim, not the golden.
                Enqueue(cluster.Goldens.List().FirstOrDefault()?.Metadata.Name);
            }

            foreach (var claim in new[] { old, now })
            {
                if (claim is null)
                {
                    continue;
                }

                string ns = claim.Metadata.NamespaceProperty;
                Enqueue(GoldenObjects.GoldenOf(claim.Metadata));
                if (Provisioner.Source(claim) is { Kind: "VolumeSnapshot", ApiGroup: Names.SnapshotGroup } s && s.Namespace == ns && cluster.Snapshots.Get(ns, s.Name) is { } snapshot)
                {
                    Enqueue(GoldenObjects.GoldenOf(snapshot.Metadata));
                }

                foreach (var g in cluster.Goldens.List())
                {
                    if ((g.Spec.Source.PersistentVolumeClaim is { } p && p.Namespace == ns && p.Name == claim.Metadata.Name) || g.Spec.Claim?.Name == claim.Metadata.Name)
                    {
                        Enqueue(g.Metadata.Name);
                    }
                }
            }
        });
    }

    private void Enqueue(string? name)
    {
        if (!string.IsNullOrEmpty(name))
        {
            Queue.Add(name);
        }
    }

    protected override async Task<Outcome> ReconcileAsync(string key, CancellationToken cancellationToken)
    {
        var golden = _c.Cluster.Goldens.Get(key);
        if (golden is null)
        {
            return Outcome.Done;
        }

        if (golden.Metadata.DeletionTimestamp is not null)
        {
            await ReleaseAllAsync(golden, cancellationToken).ConfigureAwait(false);
            return Outcome.Done;
        }

        if (Cluster.FinalizerPatch(golden.Metadata, GoldenNames.GoldenFinalizer, true) is { } add)
        {
            golden = await _c.Cluster.PatchGoldenAsync(golden, add, status: false, cancellationToken).ConfigureAwait(false);
        }

        var now = _time.GetUtcNow();
        var previous = golden.Status ?? new GoldenSnapshotStatus();
        var next = GoldenObjects.Copy(previous);
        next.ObservedGeneration = golden.Metadata.Generation;
        next.Source = Describe(golden.Spec.Source);
        var (check, error) = GoldenSpecCheck.Parse(golden.Spec);
        if (check is not null && golden.Metadata.Name.Length > GoldenObjects.MaxGoldenName)
        {
            (check, error) = (null, $"metadata.name is {golden.Metadata.Name.Length} characters: at most {GoldenObjects.MaxGoldenName}, so the names of its contents fit");
        }

        if (check is null)
        {
            var invalid = new GoldenProblem("InvalidSpec", error!);
            await ReportAsync(golden, previous, next, invalid, ready: false, progressing: null, cancellationToken).ConfigureAwait(false);
            await WriteStatusAsync(golden, next, cancellationToken).ConfigureAwait(false);
            return Outcome.Done;
        }

        var step = await _sources.AdvanceAsync(golden, check, next, now, cancellationToken).ConfigureAwait(false);
        if (step.Published is { } published)
        {
            await _c.Events.RecordAsync(golden, EventRecorder.Normal, "Published", $"revision {published.Revision} (snapshot {published.SnapshotHandle}, restoreSize {published.RestoreSize}) from {next.Source}", cancellationToken).ConfigureAwait(false);
        }
        else if (step.Cutting && previous.Revisions?.Any(r => string.IsNullOrEmpty(r.SnapshotHandle)) != true)
        {
            await _c.Events.RecordAsync(golden, EventRecorder.Normal, "Cutting", $"snapshotting {next.Source} for revision {next.Revisions![0].Revision}", cancellationToken).ConfigureAwait(false);
        }

        var targets = GoldenTargets.Select(golden.Spec, _c.Cluster.Namespaces.List());
        next.NamespaceCount = targets.Count;
        var current = next.Revisions?.FirstOrDefault(r => r.Revision == next.CurrentRevision && !string.IsNullOrEmpty(r.SnapshotHandle));
        var problem = step.Problem;
        if (targets.Count == 0)
        {
            problem ??= new GoldenProblem("NoNamespaces", "no namespace opts in: spec.namespaceSelector matches no namespace and spec.namespaces names none that exists");
        }

        long? claimBytes = null;
        if (current is not null && golden.Spec.Claim is not null)
        {
            long restore = Quantities.ToBytes(current.RestoreSize) ?? 0;
            if (check.ClaimSize is { } size && size < restore)
            {
                problem ??= new GoldenProblem("ClaimTooSmall", $"spec.claim.size {golden.Spec.Claim.Size} is below the restoreSize {current.RestoreSize} of revision {current.Revision}: no claim is made until it is at least that");
            }
            else
            {
                claimBytes = check.ClaimSize ?? restore;
            }
        }

        // Fan out, then look again at what exists: one pass over the caches for every namespace.
        var outcomes = current is null ? [] : await FanOutAsync(golden, current, targets, claimBytes, cancellationToken).ConfigureAwait(false);
        var index = GoldenIndex.Build(golden, _c.Cluster);
        var active = targets.Where(t => t.Blocked is null).Select(t => t.Namespace).ToHashSet(StringComparer.Ordinal);
        var statuses = outcomes.Select(o => o.Status).ToList();
        if (current is null)
        {
            statuses.AddRange(targets.Select(t => new GoldenNamespaceStatus { Name = t.Namespace, Message = t.Blocked }));
        }

        var targeted = targets.Select(t => t.Namespace).ToHashSet(StringComparer.Ordinal);
        statuses.AddRange(index.Snapshots.Keys.Where(ns => !targeted.Contains(ns)).Order(StringComparer.Ordinal).Select(ns => _fanOut.Leftover(golden, ns)));
        var refreshes = await _consumers.TrackAsync(golden, current, index, active, statuses, cancellationToken).ConfigureAwait(false);
        next.Namespaces = statuses;
        foreach (var r in next.Revisions ?? [])
        {
            r.Namespaces = [.. statuses.Where(s => s.Revision == r.Revision).Select(s => s.Name)];
        }

        await RetireAsync(golden, check, next, index, active, cancellationToken).ConfigureAwait(false);
        await CollectContentsAsync(golden, next, index, active, cancellationToken).ConfigureAwait(false);

        next.Ready = $"{statuses.Count(s => targeted.Contains(s.Name) && s.SnapshotReady && s.Revision == next.CurrentRevision && next.CurrentRevision is not null)}/{targets.Count}";
        bool conflict = outcomes.Any(o => o.Conflict);
        bool rolledOut = current is not null && outcomes.Where(o => active.Contains(o.Status.Name)).All(o => o.Status.Revision == current.Revision && o.Status.SnapshotReady);
        problem ??= conflict ? new GoldenProblem("Conflict", $"{outcomes.Count(o => o.Conflict)} namespace(s) have objects in the way (see status.namespaces)") : null;
        bool ready = current is not null && rolledOut && problem is null;
        string? progressing = step.Cutting ? "Cutting" : current is not null && !rolledOut ? "RollingOut" : refreshes.Waiting > 0 ? "Refreshing" : null;
        await ReportAsync(golden, previous, next, problem, ready, progressing, cancellationToken, refreshes.Waiting).ConfigureAwait(false);
        await ReportNamespacesAsync(golden, previous, next, cancellationToken).ConfigureAwait(false);
        await WriteStatusAsync(golden, next, cancellationToken).ConfigureAwait(false);

        TimeSpan? wake = refreshes.LookAgain ? RefreshPoll : null;
        if (next.NextPublish is { } due)
        {
            var sleep = new DateTimeOffset(DateTime.SpecifyKind(due, DateTimeKind.Utc)) - _time.GetUtcNow();
            sleep = sleep > MaxSleep ? MaxSleep : sleep < TimeSpan.FromMilliseconds(10) ? TimeSpan.FromMilliseconds(10) : sleep;
            wake = wake is { } w && w < sleep ? w : sleep;
        }

        return wake is { } after ? Outcome.After(after) : Outcome.Done;
    }

    private async Task<List<NamespaceOutcome>> FanOutAsync(GoldenSnapshot golden, GoldenRevision current, List<GoldenTarget> targets, long? claimBytes, CancellationToken ct)
    {
        var index = GoldenIndex.Build(golden, _c.Cluster);
        var results = new ConcurrentDictionary<int, NamespaceOutcome>();
        await Parallel.ForEachAsync(
            Enumerable.Range(0, targets.Count),
            new ParallelOptions { MaxDegreeOfParallelism = FanOutParallelism, CancellationToken = ct },
            async (i, token) => results[i] = await _fanOut.EnsureAsync(golden, current, targets[i], index, claimBytes, token).ConfigureAwait(false)).ConfigureAwait(false);
        return [.. Enumerable.Range(0, targets.Count).Select(i => results[i])];
    }

    /// <summary>What holds revision <paramref name="revision"/> beyond the history limit.</summary>
    private static List<string> Holders(GoldenIndex index, HashSet<string> active, int revision, int? current)
    {
        var held = new List<string>();
        foreach (var (ns, snapshots) in index.Snapshots)
        {
            var on = snapshots.Where(s => GoldenObjects.RevisionOf(s.Metadata) == revision).ToList();
            if (on.Count == 0)
            {
                continue;
            }

            if (!active.Contains(ns))
            {
                held.Add($"namespace {ns} keeps it (no longer opted in, or being deleted)");
                continue;
            }

            if (on.Any(s => GoldenObjects.SlotOf(s.Metadata) == GoldenSlot.Current))
            {
                held.Add($"namespace {ns} is still on it");
            }

            foreach (var s in on.Where(s => Cluster.Annotation(s.Metadata, Schedules.ScheduleNames.KeepAnnotation) is { } v && !string.Equals(v, "false", StringComparison.OrdinalIgnoreCase)))
            {
                held.Add($"pinned: {ns}/{s.Metadata.Name} has annotation {Schedules.ScheduleNames.KeepAnnotation}");
            }
        }

        foreach (var (ns, consumers) in index.Consumers)
        {
            foreach (var consumer in consumers.Where(x => GoldenIndex.RevisionOf(x) == revision))
            {
                if (GoldenFanOut.Restoring(consumer.Claim))
                {
                    held.Add($"restoring: claim {ns}/{consumer.Claim.Metadata.Name}");
                }
                else if (GoldenObjects.RefreshesOnNextAttach(consumer.Claim) && revision != current && consumer.Claim.Metadata.DeletionTimestamp is null)
                {
                    held.Add($"not yet refreshed: claim {ns}/{consumer.Claim.Metadata.Name}");
                }
            }
        }

        return held;
    }

    /// <summary>Retires what the history limit and the holders let go; a revision leaves status once nothing of it is left.</summary>
    private async Task RetireAsync(GoldenSnapshot golden, GoldenSpecCheck check, GoldenSnapshotStatus next, GoldenIndex index, HashSet<string> active, CancellationToken ct)
    {
        var verdicts = GoldenRetention.Decide(next.Revisions ?? [], next.CurrentRevision, check.HistoryLimit, r => Holders(index, active, r, next.CurrentRevision));
        var gone = new HashSet<int>();
        foreach (var verdict in verdicts)
        {
            var revision = next.Revisions!.First(r => r.Revision == verdict.Revision);
            revision.HeldBy = verdict.HeldBy.Count > 0 ? [.. verdict.HeldBy] : null;
            if (!verdict.Retire)
            {
                continue;
            }

            var snapshots = index.Snapshots.Values.SelectMany(l => l).Where(s => GoldenObjects.RevisionOf(s.Metadata) == verdict.Revision).ToList();
            var contents = index.Contents.Where(x => GoldenObjects.RevisionOf(x.Metadata) == verdict.Revision).ToList();
            foreach (var s in snapshots.Where(s => s.Metadata.DeletionTimestamp is null))
            {
                await _c.Cluster.DeleteSnapshotAsync(s, ct).ConfigureAwait(false);
            }

            if (snapshots.Count > 0)
            {
                revision.HeldBy = [$"retiring: {snapshots.Count} VolumeSnapshot(s) being deleted"];
                continue;
            }

            foreach (var content in contents.Where(x => x.Metadata.DeletionTimestamp is null))
            {
                await _c.Cluster.DeleteContentAsync(content, ct).ConfigureAwait(false);
            }

            if (revision.Origin is { } origin && !next.Revisions!.Any(r => r.Revision != revision.Revision && r.Origin == origin))
            {
                await _sources.ReleaseAsync(golden, origin, deleteIfOurs: true, ct).ConfigureAwait(false);
            }

            gone.Add(revision.Revision);
            await _c.Events.RecordAsync(golden, EventRecorder.Normal, "Retired", $"revision {revision.Revision} retired: nothing holds it and {check.HistoryLimit} newer revision(s) are kept", ct).ConfigureAwait(false);
            ControllerLog.Action(Logger, Name, golden.Metadata.Name, $"retired revision {revision.Revision}");
        }

        next.Revisions = next.Revisions?.Where(r => !gone.Contains(r.Revision)).ToList();
    }

    /// <summary>Deletes this golden snapshot's contents whose VolumeSnapshot is gone and that nothing will bind again.</summary>
    private async Task CollectContentsAsync(GoldenSnapshot golden, GoldenSnapshotStatus next, GoldenIndex index, HashSet<string> active, CancellationToken ct)
    {
        var kept = (next.Revisions ?? []).Select(r => r.Revision).ToHashSet();
        foreach (var content in index.Contents)
        {
            var reference = content.Spec.VolumeSnapshotRef;
            if (content.Metadata.DeletionTimestamp is not null || _c.Cluster.Snapshots.Get(reference.NamespaceProperty, reference.Name) is not null)
            {
                continue;
            }

            int? revision = GoldenObjects.RevisionOf(content.Metadata);
            bool wanted = active.Contains(reference.NamespaceProperty)
                && (GoldenObjects.SlotOf(content.Metadata) == GoldenSlot.Current ? revision == next.CurrentRevision : revision is { } r && kept.Contains(r));
            if (!wanted)
            {
                await _c.Cluster.DeleteContentAsync(content, ct).ConfigureAwait(false);
            }
        }
    }

    /// <summary>A GoldenSnapshot being deleted: the snapshots its revisions came from are let go; what it published stays.</summary>
    private async Task ReleaseAllAsync(GoldenSnapshot golden, CancellationToken ct)
    {
        if (!Cluster.HasFinalizer(golden.Metadata, GoldenNames.GoldenFinalizer))
        {
            return;
        }

        foreach (string origin in (golden.Status?.Revisions ?? []).Select(r => r.Origin).OfType<string>().Distinct(StringComparer.Ordinal))
        {
            await _sources.ReleaseAsync(golden, origin, deleteIfOurs: false, ct).ConfigureAwait(false);
        }

        if (Cluster.FinalizerPatch(golden.Metadata, GoldenNames.GoldenFinalizer, false) is { } remove)
        {
            await _c.Cluster.PatchGoldenAsync(golden, remove, status: false, ct).ConfigureAwait(false);
        }
    }

    /// <summary>Sets Ready and Progressing; a problem not reported before gets a Warning event naming it.</summary>
    private async Task ReportAsync(GoldenSnapshot golden, GoldenSnapshotStatus previous, GoldenSnapshotStatus next, GoldenProblem? problem, bool ready, string? progressing, CancellationToken ct, int refreshing = 0)
    {
        var now = _time.GetUtcNow().UtcDateTime;
        string publishedMessage = $"revision {next.CurrentRevision} is published to {next.NamespaceCount} namespace(s)";
        SetCondition(next, GoldenNames.Ready, ready, ready ? "Published" : problem?.Reason ?? progressing ?? "NotPublished", ready ? publishedMessage : problem?.Message ?? Progress(progressing, next, refreshing), now);
        SetCondition(next, GoldenNames.Progressing, progressing is not null, progressing ?? problem?.Reason ?? "Complete", progressing is not null ? Progress(progressing, next, refreshing) : problem?.Message ?? publishedMessage, now);
        var before = previous.Conditions?.FirstOrDefault(x => x.Type == GoldenNames.Ready);
        if (problem is { } p && (before?.Reason != p.Reason || before.Message != p.Message))
        {
            await _c.Events.RecordAsync(golden, EventRecorder.Warning, p.Reason, p.Message, ct).ConfigureAwait(false);
        }
    }

    /// <summary>A Warning event for each namespace whose conflict or block is new.</summary>
    private async Task ReportNamespacesAsync(GoldenSnapshot golden, GoldenSnapshotStatus previous, GoldenSnapshotStatus next, CancellationToken ct)
    {
        var before = (previous.Namespaces ?? []).ToDictionary(n => n.Name, n => n.Message, StringComparer.Ordinal);
        foreach (var ns in next.Namespaces ?? [])
        {
            if (ns.Message is { } message && !message.StartsWith("moving", StringComparison.Ordinal) && (!before.TryGetValue(ns.Name, out var old) || old != message))
            {
                string reason = message.Contains("already exists", StringComparison.Ordinal) ? "Conflict" : message.StartsWith("no longer", StringComparison.Ordinal) ? "NamespaceLeft" : "NamespaceBlocked";
                await _c.Events.RecordAsync(golden, EventRecorder.Warning, reason, $"namespace {ns.Name}: {message}", ct).ConfigureAwait(false);
            }
        }
    }

    private static string Progress(string? progressing, GoldenSnapshotStatus next, int refreshing) => progressing switch
    {
        "Cutting" => $"snapshotting the source for revision {next.Revisions?.FirstOrDefault()?.Revision}",
        "RollingOut" => $"moving {next.Namespaces?.Count(n => n.Revision != next.CurrentRevision || !n.SnapshotReady)} namespace(s) to revision {next.CurrentRevision}",
        "Refreshing" => $"{refreshing} OnNextAttach claim(s) take revision {next.CurrentRevision} when their volume is let go (see status.namespaces)",
        _ => "nothing published yet",
    };

    private static void SetCondition(GoldenSnapshotStatus status, string type, bool value, string reason, string message, DateTime now)
    {
        var conditions = status.Conditions ?? [];
        var old = conditions.FirstOrDefault(x => x.Type == type);
        string text = value ? "True" : "False";
        var condition = new V1Condition
        {
            Type = type,
            Status = text,
            Reason = reason,
            Message = message,
            ObservedGeneration = status.ObservedGeneration,
            LastTransitionTime = old is not null && old.Status == text ? old.LastTransitionTime : now,
        };
        status.Conditions = [.. conditions.Where(x => x.Type != type), condition];
        status.Conditions = [.. status.Conditions.OrderBy(x => x.Type, StringComparer.Ordinal)];
    }

    private static string Describe(GoldenSource s) =>
        s.VolumeSnapshot is { } v ? $"VolumeSnapshot {v.Namespace}/{v.Name}"
        : s.PersistentVolumeClaim is { } p ? $"PersistentVolumeClaim {p.Namespace}/{p.Name}"
        : !string.IsNullOrEmpty(s.SnapshotHandle) ? $"snapshot {s.SnapshotHandle}"
        : "none";

    private async Task WriteStatusAsync(GoldenSnapshot golden, GoldenSnapshotStatus status, CancellationToken ct)
    {
        if (KubernetesJson.Serialize(status) == KubernetesJson.Serialize(golden.Status ?? new GoldenSnapshotStatus()))
        {
            return;
        }

        // Explicit nulls, so a merge patch clears what is no longer true.
        var body = (JsonObject)JsonNode.Parse(KubernetesJson.Serialize(status))!;
        foreach (string field in new[] { "currentRevision", "publishedSource", "publishNow", "lastPublished", "nextPublish", "revisions", "namespaces", "conditions", "namespaceCount", "ready" })
        {
            body.TryAdd(field, null);
        }

        var fresh = _c.Cluster.Goldens.Get(golden.Metadata.Name) ?? golden;
        await _c.Cluster.PatchGoldenAsync(fresh, new JsonObject { ["status"] = body }, status: true, ct).ConfigureAwait(false);
    }
}
