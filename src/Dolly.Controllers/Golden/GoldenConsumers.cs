using System.Collections.Concurrent;
using System.Text.Json.Nodes;
using Dolly.Controllers.Runtime;
using k8s.Models;

namespace Dolly.Controllers.Golden;

/// <summary>How the OnNextAttach consumers of one golden snapshot stand after a look.</summary>
/// <param name="Waiting">Consumers whose refresh is requested and waits for their volume to be let go.</param>
/// <param name="Blocked">Consumers whose refresh was refused or could not be asked for (looked at again later).</param>
internal readonly record struct GoldenRefreshSummary(int Waiting, int Blocked)
{
    public bool LookAgain => Waiting + Blocked > 0;
}

/// <summary>
/// The consumer claims of a golden snapshot: records on each the revision its data holds (annotation
/// <see cref="GoldenNames.ClaimRevisionAnnotation"/>) and moves the OnNextAttach ones in opted-in namespaces to the
/// current revision through <see cref="IGoldenRefresher"/>. Before a request is made, the claim is annotated with
/// the revision asked for (<see cref="GoldenNames.RefreshRequestAnnotation"/>), so no driver request ever exists that
/// the claim does not name: a superseded, opted-out or finished request is withdrawn or forgotten from that record,
/// and the volume's revision is recorded on the claim before the driver's request is forgotten.
/// </summary>
internal sealed class GoldenConsumers(ControllerContext context, IGoldenRefresher refresher)
{
    private readonly ControllerContext _c = context;

    /// <summary>Requests of claims deleted while they stood (claim uid to revision): withdrawn at the next look.</summary>
    private readonly ConcurrentDictionary<string, int> _orphans = new(StringComparer.Ordinal);

    /// <summary>
    /// A claim is gone: a refresh request it named is withdrawn at the next look, so the driver keeps no record
    /// of a request that nothing names any more. Returns whether there was one.
    /// </summary>
    public bool Forget(V1PersistentVolumeClaim claim)
    {
        if (GoldenObjects.RefreshRequest(claim) is not { } revision || string.IsNullOrEmpty(claim.Metadata.Uid))
        {
            return false;
        }

        _orphans[claim.Metadata.Uid] = revision;
        return true;
    }

    private async Task ReleaseOrphansAsync(CancellationToken ct)
    {
        foreach (var (uid, revision) in _orphans)
        {
            if ((await refresher.ReleaseAsync(uid, revision, ct).ConfigureAwait(false)).State != GoldenRefreshState.Unreachable)
            {
                _orphans.TryRemove(new KeyValuePair<string, int>(uid, revision));
            }
        }
    }

    /// <summary>Looks at every consumer; adds each waiting or refused refresh to its namespace's status.</summary>
    public async Task<GoldenRefreshSummary> TrackAsync(
        GoldenSnapshot golden, GoldenRevision? current, GoldenIndex index, HashSet<string> active, List<GoldenNamespaceStatus> statuses, CancellationToken ct)
    {
        await ReleaseOrphansAsync(ct).ConfigureAwait(false);
        var byName = statuses.ToDictionary(s => s.Name, StringComparer.Ordinal);
        int waiting = 0, blocked = _orphans.IsEmpty ? 0 : 1;
        foreach (var (ns, consumers) in index.Consumers)
        {
            foreach (var consumer in consumers)
            {
                var (state, note) = await TrackOneAsync(golden, current, consumer, active.Contains(ns), ct).ConfigureAwait(false);
                if (note is null)
                {
                    continue;
                }

                waiting += state == GoldenRefreshState.Requested ? 1 : 0;
                blocked += state is GoldenRefreshState.Refused or GoldenRefreshState.Unreachable ? 1 : 0;
                if (byName.TryGetValue(ns, out var status))
                {
                    status.RefreshPending = [.. status.RefreshPending ?? [], note];
                }
            }
        }

        return new GoldenRefreshSummary(waiting, blocked);
    }

    /// <summary>One consumer; returns the note for status.refreshPending, or null when it waits for nothing.</summary>
    private async Task<(GoldenRefreshState State, string? Note)> TrackOneAsync(GoldenSnapshot golden, GoldenRevision? current, GoldenConsumer consumer, bool active, CancellationToken ct)
    {
        var claim = consumer.Claim;
        int? held = GoldenIndex.RevisionOf(consumer);
        if (GoldenObjects.ClaimRevision(claim) is null && held is { } first)
        {
            claim = await _c.Cluster.PatchClaimAsync(claim, GoldenSources.Annotate(GoldenNames.ClaimRevisionAnnotation, GoldenSources.Format(first)), status: false, ct).ConfigureAwait(false);
        }

        bool wanted = current is not null && held is { } h && h < current.Revision && active && claim.Metadata.DeletionTimestamp is null
            && GoldenObjects.RefreshesOnNextAttach(claim) && claim.Status?.Phase == "Bound";
        if (GoldenObjects.RefreshRequest(claim) is { } asked && (!wanted || asked != current!.Revision))
        {
            // Superseded by a newer revision, opted out, or the namespace left: the old request goes first (the
            // driver takes one content change per volume at a time). It may have been applied meanwhile.
            var released = await ReleaseAsync(golden, claim, asked, held, ct).ConfigureAwait(false);
            if (released.Claim is null)
            {
                return (GoldenRefreshState.Unreachable, $"{claim.Metadata.Name} (revision {held}): {released.Problem}; retrying");
            }

            claim = released.Claim;
            held = GoldenObjects.ClaimRevision(claim) ?? held;
            wanted = wanted && held < current!.Revision;
        }

        if (!wanted)
        {
            return (GoldenRefreshState.Done, null);
        }

        string prefix = $"{claim.Metadata.Name} (revision {held})";
        int revision = current!.Revision;
        if (Check(claim, current) is { } problem)
        {
            return (GoldenRefreshState.Refused, $"{prefix}: refresh to revision {revision} refused: {problem}");
        }

        if (GoldenObjects.RefreshRequest(claim) != revision)
        {
            claim = await _c.Cluster.PatchClaimAsync(claim, GoldenSources.Annotate(GoldenNames.RefreshRequestAnnotation, GoldenSources.Format(revision)), status: false, ct).ConfigureAwait(false);
        }

        string volume = _c.Cluster.Volumes.Get(claim.Spec.VolumeName)!.Spec.Csi.VolumeHandle;
        var result = await refresher.RequestAsync(new GoldenRefresh($"{claim.Metadata.NamespaceProperty}/{claim.Metadata.Name}", claim.Metadata.Uid, volume, revision, current.SnapshotHandle!), ct).ConfigureAwait(false);
        switch (result.State)
        {
            case GoldenRefreshState.Done:
                claim = await RecordRefreshedAsync(golden, claim, revision, held, ct).ConfigureAwait(false);
                var forgotten = await ReleaseAsync(golden, claim, revision, revision, ct).ConfigureAwait(false);
                return forgotten.Claim is null ? (GoldenRefreshState.Unreachable, $"{claim.Metadata.Name} (revision {revision}): {forgotten.Problem}; retrying") : (GoldenRefreshState.Done, null);
            case GoldenRefreshState.Requested:
                return (GoldenRefreshState.Requested, $"{prefix}: takes revision {revision} at its next attach ({result.Message})");
            case GoldenRefreshState.Unreachable:
                return (GoldenRefreshState.Unreachable, $"{prefix}: refresh to revision {revision} not asked for yet: {result.Message}; retrying");
            default:
                return (GoldenRefreshState.Refused, $"{prefix}: refresh to revision {revision} refused: {result.Message}");
        }
    }

    /// <summary>What the caches can tell is in the way of refreshing <paramref name="claim"/>; null when nothing is.</summary>
    private string? Check(V1PersistentVolumeClaim claim, GoldenRevision current)
    {
        if (string.IsNullOrEmpty(current.SnapshotHandle))
        {
            return $"revision {current.Revision} has no snapshot yet";
        }

        if (current.Driver is { Length: > 0 } driver && driver != _c.Options.DriverName)
        {
            return $"revision {current.Revision} is a snapshot of driver {driver}; only {_c.Options.DriverName} refreshes in place";
        }

        var pv = string.IsNullOrEmpty(claim.Spec?.VolumeName) ? null : _c.Cluster.Volumes.Get(claim.Spec.VolumeName);
        if (pv is null)
        {
            return $"volume {claim.Spec?.VolumeName} of the claim does not exist";
        }

        if (pv.Spec?.Csi?.Driver != _c.Options.DriverName || string.IsNullOrEmpty(pv.Spec.Csi.VolumeHandle))
        {
            return $"its volume {pv.Metadata.Name} is of {(pv.Spec?.Csi?.Driver is { } d ? "driver " + d : "no CSI driver")}, not of {_c.Options.DriverName}";
        }

        long? capacity = Quantities.Capacity(pv);
        long? size = Quantities.ToBytes(current.RestoreSize);
        if (capacity is { } cap && size is { } sz && sz > cap)
        {
            return $"revision {current.Revision} needs {current.RestoreSize} ({sz} bytes) and volume {pv.Metadata.Name} has {cap} bytes; grow the claim to at least {current.RestoreSize}";
        }

        return null;
    }

    /// <summary>The claim now holds <paramref name="revision"/>: recorded on it, with an event on it and on the golden snapshot.</summary>
    private async Task<V1PersistentVolumeClaim> RecordRefreshedAsync(GoldenSnapshot golden, V1PersistentVolumeClaim claim, int revision, int? was, CancellationToken ct)
    {
        claim = await _c.Cluster.PatchClaimAsync(claim, GoldenSources.Annotate(GoldenNames.ClaimRevisionAnnotation, GoldenSources.Format(revision)), status: false, ct).ConfigureAwait(false);
        string name = $"{claim.Metadata.NamespaceProperty}/{claim.Metadata.Name}";
        await _c.Events.RecordAsync(claim, EventRecorder.Normal, "Refreshed", $"its volume now holds revision {revision} of GoldenSnapshot {golden.Metadata.Name} (it held revision {was}; what was written since is discarded)", ct).ConfigureAwait(false);
        await _c.Events.RecordAsync(golden, EventRecorder.Normal, "Refreshed", $"claim {name} now holds revision {revision}", ct).ConfigureAwait(false);
        return claim;
    }

    /// <summary>
    /// Withdraws or forgets the request for <paramref name="asked"/> and clears the claim's record of it; when it had
    /// been applied, records that revision first. Returns the claim, or the problem when the driver did not answer.
    /// </summary>
    private async Task<(V1PersistentVolumeClaim? Claim, string? Problem)> ReleaseAsync(GoldenSnapshot golden, V1PersistentVolumeClaim claim, int asked, int? held, CancellationToken ct)
    {
        var released = await refresher.ReleaseAsync(claim.Metadata.Uid, asked, ct).ConfigureAwait(false);
        if (released.State == GoldenRefreshState.Unreachable)
        {
            return (null, released.Message);
        }

        if (released.State == GoldenRefreshState.Done && (held is null || held < asked))
        {
            claim = await RecordRefreshedAsync(golden, claim, asked, held, ct).ConfigureAwait(false);
        }

        var clear = new JsonObject { ["metadata"] = new JsonObject { ["annotations"] = new JsonObject { [GoldenNames.RefreshRequestAnnotation] = null } } };
        return (await _c.Cluster.PatchClaimAsync(claim, clear, status: false, ct).ConfigureAwait(false), null);
    }
}
