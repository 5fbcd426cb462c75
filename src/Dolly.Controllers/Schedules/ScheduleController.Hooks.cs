using System.Net;
using System.Text.Json.Nodes;
using Dolly.Controllers.Hooks;
using Dolly.Controllers.Model;
using Dolly.Controllers.Runtime;
using k8s.Autorest;
using k8s.Models;

namespace Dolly.Controllers.Schedules;

/// <summary>A scheduled cut with exec hooks: pre hooks, the cut (created and seen cut), post hooks that always run.</summary>
internal sealed partial class ScheduleController
{
    /// <summary>
    /// One cut of <paramref name="pods"/>' claims between the hooks. <paramref name="create"/> makes the object
    /// (null, or why not); <paramref name="key"/> and <paramref name="cutProbe"/> tell when it is cut. The object is
    /// created marked <see cref="ExecHookNames.PostPendingAnnotation"/> when there are post hooks, and unmarked once
    /// they ran, so a controller that restarts in between runs them (see <see cref="PostPendingAsync"/>).
    /// </summary>
    private async Task<(HookReport Report, bool Created)> CutWithHooksAsync(
        IReadOnlyList<HookPod> pods, ScheduleHooks hooks, Func<CancellationToken, Task<string?>> create, string key, Func<(bool, string?)> cutProbe, CancellationToken ct)
    {
        bool created = false;
        var report = await _hooks.AroundAsync(pods, hooks, async token =>
        {
            if (await create(token).ConfigureAwait(false) is { } refused)
            {
                return refused;
            }

            created = true;
            return await _hooks.WaitCutAsync(key, cutProbe, token).ConfigureAwait(false);
        }, ct).ConfigureAwait(false);
        return (report, created);
    }

    private async Task<ClaimRunResult> SnapshotWithHooksAsync(SnapshotSchedule schedule, V1PersistentVolumeClaim claim, VolumeSnapshot snapshot, ScheduleHooks hooks, ClaimRunResult result, CancellationToken ct)
    {
        string ns = snapshot.Metadata.NamespaceProperty;
        string name = snapshot.Metadata.Name;
        string key = ns + "/" + name;
        if (_hooks.Unavailable is { } why)
        {
            if (AnyFails(hooks))
            {
                return Set(result, Failed, null, why);
            }

            result.Hooks = "not run (every hook has onError Continue): " + why;
            return await CreateSnapshotAsync(schedule, snapshot, ct).ConfigureAwait(false) is { } refused ? Set(result, Failed, null, refused) : Set(result, Created, name, null);
        }

        if (_c.Cluster.Snapshots.Get(ns, name) is { } existing)
        {
            // This run made it before: only post hooks a restart interrupted are left to run.
            result.Hooks = await PostPendingAsync(
                existing.Metadata, async t => (await _c.Cluster.ReadSnapshotAsync(ns, name, t).ConfigureAwait(false))?.Metadata, ns, [claim.Metadata.Name], hooks, key, () => SnapshotCut(ns, name), PatchSnapshotAnnotationsAsync(existing), ct).ConfigureAwait(false);
            return Set(result, Created, name, null);
        }

        var pods = await _hooks.PodsMountingAsync(ns, new HashSet<string>(StringComparer.Ordinal) { claim.Metadata.Name }, ct).ConfigureAwait(false);
        if (pods.Count == 0)
        {
            result.Hooks = "no running pod mounts the claim, so no exec hook ran";
            return await CreateSnapshotAsync(schedule, snapshot, ct).ConfigureAwait(false) is { } refused ? Set(result, Failed, null, refused) : Set(result, Created, name, null);
        }

        MarkPostPending(snapshot.Metadata, hooks);
        var (report, created) = await CutWithHooksAsync(pods, hooks, token => CreateSnapshotAsync(schedule, snapshot, token), key, () => SnapshotCut(ns, name), ct).ConfigureAwait(false);
        result.Hooks = report.Summary();
        if (created && _c.Cluster.Snapshots.Get(ns, name) is { } made)
        {
            await PatchSnapshotAnnotationsAsync(made)(HookAnnotations(report), ct).ConfigureAwait(false);
            if (report.CutError is not null)
            {
                // Not known to be cut between the hooks: not the consistent snapshot that was asked for.
                await DeleteAsync(made, ct).ConfigureAwait(false);
            }
        }

        return Verdict(report, name) is { } failed ? Set(result, Failed, report.PostFailure is null ? null : name, failed) : Set(result, Created, name, null);
    }

    /// <summary>Why the run failed for the claims of this cut; null when it did not.</summary>
    private static string? Verdict(HookReport report, string name) =>
        report.Abort is { } abort ? $"a pre hook failed, so no snapshot was taken: {abort.Describe()}"
        : report.CutError is { } cut ? $"{name} was not cut: {cut}"
        : report.PostFailure is { } post ? $"{name} was cut after the pre hooks and is kept, but a post hook failed: {post.Describe()}"
        : null;

    /// <summary>
    /// For an object this run already made: when it is still marked post-pending (the controller stopped between
    /// the cut and the post hooks), waits for the cut and runs the post hooks in the pods that mount the claims now,
    /// then unmarks it. Returns the hooks' result for the status.
    /// </summary>
    private async Task<string?> PostPendingAsync(
        V1ObjectMeta meta, Func<CancellationToken, Task<V1ObjectMeta?>> readFromServer, string ns, IReadOnlyCollection<string> claims, ScheduleHooks hooks, string key,
        Func<(bool, string?)> cutProbe, Func<JsonObject, CancellationToken, Task> annotate, CancellationToken ct)
    {
        if (Cluster.Annotation(meta, ExecHookNames.PostPendingAnnotation) is null)
        {
            return Cluster.Annotation(meta, ExecHookNames.ResultAnnotation);
        }

        // The cache can still hold the mark this controller removed a moment ago (a run retried after its status
        // write conflicted): only the server's copy tells an interrupted run from a finished one.
        // Gone from the server: its post hooks still run, as they would have after the cut.
        if (await readFromServer(ct).ConfigureAwait(false) is { } current && Cluster.Annotation(current, ExecHookNames.PostPendingAnnotation) is null)
        {
            return Cluster.Annotation(current, ExecHookNames.ResultAnnotation);
        }

        var pods = await _hooks.PodsMountingAsync(ns, claims.ToHashSet(StringComparer.Ordinal), ct).ConfigureAwait(false);
        var postOnly = new ScheduleHooks { Post = hooks.Post };
        var report = await _hooks.AroundAsync(pods, postOnly, token => _hooks.WaitCutAsync(key, cutProbe, token), ct).ConfigureAwait(false);
        string summary = "post hooks run after a restart: " + report.Summary();
        var annotations = HookAnnotations(report);
        annotations[ExecHookNames.ResultAnnotation] = summary;
        await annotate(annotations, ct).ConfigureAwait(false);
        return summary;
    }

    private static bool AnyFails(ScheduleHooks hooks) =>
        (hooks.Pre ?? []).Concat(hooks.Post ?? []).Any(h => h.OnError != ExecHookNames.Continue);

    private static void MarkPostPending(V1ObjectMeta meta, ScheduleHooks hooks)
    {
        if (hooks.Post is { Count: > 0 })
        {
            meta.Annotations ??= new Dictionary<string, string>();
            meta.Annotations[ExecHookNames.PostPendingAnnotation] = "true";
        }
    }

    private static JsonObject HookAnnotations(HookReport report) => new()
    {
        [ExecHookNames.PostPendingAnnotation] = null,
        [ExecHookNames.ResultAnnotation] = report.Summary(),
    };

    /// <summary>Whether the scheduled snapshot is cut: (true, null) cut; (true, why) failed or gone.</summary>
    private (bool, string?) SnapshotCut(string ns, string name) => _c.Cluster.Snapshots.Get(ns, name) switch
    {
        null => (true, "it was deleted before it was cut"),
        { Status.CreationTime: not null } => (true, null),
        { Status.Error.Message: { } error } => (true, error),
        _ => (false, null),
    };

    private Func<JsonObject, CancellationToken, Task> PatchSnapshotAnnotationsAsync(VolumeSnapshot snapshot) => async (annotations, ct) =>
    {
        try
        {
            // Not compare-and-set: the snapshot controller writes the snapshot meanwhile, and a conflict here would
            // leave the post-pending mark and run the post hooks again.
            await _c.Cluster.PatchOwnAnnotationsAsync(_c.Cluster.Snapshots, snapshot, Names.SnapshotGroup, "v1", "volumesnapshots", annotations, ct).ConfigureAwait(false);
        }
        catch (HttpOperationException ex) when (ex.Response.StatusCode == HttpStatusCode.NotFound)
        {
            // Deleted since; the schedule's status still tells.
        }
    };
}
