using System.Collections.Concurrent;
using Dolly.Controllers.Hooks;
using Dolly.Controllers.Runtime;
using k8s;

namespace Dolly.Controllers.Schedules;

/// <summary>
/// A schedule's exec hooks around one cut: the running pods that mount the snapshotted claims, the hooks run in
/// them through <see cref="ExecHookRunner"/>, and the wait for the cut itself (the snapshot's
/// <c>status.creationTime</c>, so post hooks never run before the data is cut). On the embedded API server no pod
/// runs a container, so hooks cannot run there; <see cref="Unavailable"/> says so.
/// </summary>
internal sealed class ScheduleExecHooks
{
    /// <summary>How long post hooks wait for the cut before they run anyway (the application is not left quiesced).</summary>
    public static readonly TimeSpan CutWait = TimeSpan.FromMinutes(2);

    private readonly ControllerContext _c;
    private readonly TimeProvider _time;
    private readonly ExecHookRunner? _runner;
    private readonly ConcurrentDictionary<string, TaskCompletionSource> _waiters = new(StringComparer.Ordinal);

    public ScheduleExecHooks(ControllerContext context)
    {
        _c = context;
        _time = context.Options.TimeProvider;
        var exec = context.Options.PodExec ?? (context.Options.PodsRunContainers ? new KubernetesPodExec(context.Cluster.Client) : null);
        _runner = exec is null ? null : new ExecHookRunner(exec, _time);
    }

    /// <summary>Why exec hooks cannot run with these controllers; null when they can.</summary>
    public string? Unavailable => _runner is null
        ? "exec hooks cannot run: this API server (the embedded one of dolly up) runs no pods, so no container can run hooks.pre or hooks.post; remove them (hooks.freeze works here), or run Dolly's controllers on a cluster whose pods run containers"
        : null;

    /// <summary>The running pods of <paramref name="ns"/> that mount any of <paramref name="claims"/>, by name.</summary>
    public async Task<List<HookPod>> PodsMountingAsync(string ns, IReadOnlySet<string> claims, CancellationToken ct)
    {
        var pods = await _c.Cluster.Client.CoreV1.ListNamespacedPodAsync(ns, cancellationToken: ct).ConfigureAwait(false);
        return [.. pods.Items
            .Where(p => p.Metadata.DeletionTimestamp is null && p.Status?.Phase == "Running"
                && p.Spec.Volumes?.Any(v => v.PersistentVolumeClaim?.ClaimName is { } name && claims.Contains(name)) == true)
            .OrderBy(p => p.Metadata.Name, StringComparer.Ordinal)
            .Select(p => new HookPod(ns, p.Metadata.Name, [.. p.Spec.Containers.Select(c => c.Name)]))];
    }

    /// <summary>Runs the hooks around <paramref name="cut"/>; see <see cref="ExecHookRunner.AroundAsync"/>.</summary>
    public Task<HookReport> AroundAsync(IReadOnlyList<HookPod> pods, ScheduleHooks hooks, Func<CancellationToken, Task<string?>> cut, CancellationToken ct) =>
        (_runner ?? throw new InvalidOperationException(Unavailable)).AroundAsync(pods, hooks.Pre, hooks.Post, cut, ct);

    /// <summary>Wakes whoever waits for the object <paramref name="key"/> (<c>namespace/name</c>) to change.</summary>
    public void Changed(string key)
    {
        if (_waiters.TryRemove(key, out var waiter))
        {
            waiter.TrySetResult();
        }
    }

    /// <summary>
    /// Waits until <paramref name="probe"/> gives a verdict: (true, null) cut, (true, error) failed; re-asked on
    /// every change of <paramref name="key"/>. A cut not seen within <see cref="CutWait"/> is reported as such.
    /// </summary>
    public async Task<string?> WaitCutAsync(string key, Func<(bool Done, string? Error)> probe, CancellationToken ct)
    {
        using var deadline = new CancellationTokenSource(CutWait, _time);
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(ct, deadline.Token);
        while (true)
        {
            // Registered before the look, so a change between the look and the wait is not lost.
            var waiter = _waiters.GetOrAdd(key, _ => new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously));
            var (done, error) = probe();
            if (done)
            {
                return error;
            }

            try
            {
                await waiter.Task.WaitAsync(linked.Token).ConfigureAwait(false);
            }
            catch (OperationCanceledException) when (deadline.IsCancellationRequested && !ct.IsCancellationRequested)
            {
                return $"it was not cut within {CutWait.TotalMinutes:0} minutes, so the post hooks ran without waiting for it and it was deleted (it may have been cut after them)";
            }
        }
    }
}
