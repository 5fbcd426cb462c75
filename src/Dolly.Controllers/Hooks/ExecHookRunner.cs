using System.Globalization;
using System.Net.WebSockets;
using k8s.Autorest;
using k8s.Models;

namespace Dolly.Controllers.Hooks;

/// <summary>A pod the hooks run in, with its containers in spec order (the first is the default).</summary>
internal sealed record HookPod(string Namespace, string Name, IReadOnlyList<string> Containers)
{
    public string Key => Namespace + "/" + Name;
}

/// <summary>Before or after the cut.</summary>
internal enum HookPhase
{
    Pre,
    Post,
}

/// <summary>One hook run in one pod: how it went.</summary>
/// <param name="Phase">Before or after the cut.</param>
/// <param name="Pod">The pod, <c>namespace/name</c>.</param>
/// <param name="Container">The container it ran in.</param>
/// <param name="Command">The command, its words joined by spaces.</param>
/// <param name="Failure">Why it failed; null when it succeeded.</param>
/// <param name="Fatal">It failed and its onError is Fail.</param>
internal sealed record HookRun(HookPhase Phase, string Pod, string Container, string Command, string? Failure, bool Fatal)
{
    public string Describe() =>
        $"{(Phase == HookPhase.Pre ? "pre" : "post")} hook [{Command}] in {Pod} container {Container}: {Failure ?? "ok"}";
}

/// <summary>What happened around one cut.</summary>
/// <param name="Runs">Every hook run, in the order run.</param>
/// <param name="CutAttempted">Whether the cut was asked for (a fatal pre hook stops it).</param>
/// <param name="CutError">Why the cut failed, when it did.</param>
internal sealed record HookReport(IReadOnlyList<HookRun> Runs, bool CutAttempted, string? CutError)
{
    /// <summary>A pre hook failed with onError Fail, so there was no cut.</summary>
    public HookRun? Abort => CutAttempted ? null : Runs.FirstOrDefault(r => r.Phase == HookPhase.Pre && r.Fatal);

    /// <summary>A post hook failed with onError Fail: the snapshot is good, the application may not be resumed.</summary>
    public HookRun? PostFailure => Runs.FirstOrDefault(r => r.Phase == HookPhase.Post && r.Fatal);

    /// <summary>For the claim's status and the snapshot's annotation: counts, then every failure.</summary>
    public string Summary()
    {
        int pre = Runs.Count(r => r.Phase == HookPhase.Pre);
        int post = Runs.Count(r => r.Phase == HookPhase.Post);
        int pods = Runs.Select(r => r.Pod).Distinct(StringComparer.Ordinal).Count();
        var failures = Runs.Where(r => r.Failure is not null).Select(r => r.Describe()).ToList();
        string counts = string.Create(CultureInfo.InvariantCulture, $"exec hooks in {pods} pod{(pods == 1 ? "" : "s")}: {pre - Runs.Count(r => r.Phase == HookPhase.Pre && r.Failure is not null)}/{pre} pre ok, {post - Runs.Count(r => r.Phase == HookPhase.Post && r.Failure is not null)}/{post} post ok");
        return failures.Count == 0 ? counts : counts + "; " + string.Join("; ", failures);
    }
}

/// <summary>
/// Runs exec hooks around a cut. Pre hooks run pod by pod (pods in the order given, each pod's hooks in spec order);
/// the first that fails with onError Fail stops them and the cut. Post hooks then run in every pod a pre hook was
/// started in (all pods when there are no pre hooks), the last pod entered first, whatever happened: a failed or
/// timed-out pre hook, a failed cut, a cancelled run. They run under their own timeouts only, not the caller's
/// token, so what a pre hook did (a paused writer, a held lock) is always undone. Every timeout is read from the
/// TimeProvider, so a fake clock drives them in tests.
/// </summary>
internal sealed class ExecHookRunner(IPodExec exec, TimeProvider time)
{
    /// <summary>Runs <paramref name="pre"/>, <paramref name="cut"/> (which returns null or why it failed), then <paramref name="post"/>.</summary>
    public async Task<HookReport> AroundAsync(
        IReadOnlyList<HookPod> pods, IList<ExecHook>? pre, IList<ExecHook>? post, Func<CancellationToken, Task<string?>> cut, CancellationToken ct)
    {
        ArgumentNullException.ThrowIfNull(pods);
        ArgumentNullException.ThrowIfNull(cut);
        pre ??= [];
        post ??= [];
        var runs = new List<HookRun>();
        var entered = new List<HookPod>();
        bool attempted = false;
        string? cutError = null;
        try
        {
            bool stop = false;
            foreach (var pod in pods)
            {
                if (pre.Count > 0)
                {
                    entered.Add(pod);
                }

                foreach (var hook in pre)
                {
                    var run = await RunAsync(HookPhase.Pre, pod, hook, ct).ConfigureAwait(false);
                    runs.Add(run);
                    if (run.Fatal)
                    {
                        stop = true;
                        break;
                    }
                }

                if (stop)
                {
                    break;
                }
            }

            if (!stop)
            {
                if (pre.Count == 0)
                {
                    entered.AddRange(pods);
                }

                attempted = true;
                cutError = await cut(ct).ConfigureAwait(false);
            }
        }
        finally
        {
            for (int i = entered.Count - 1; i >= 0; i--)
            {
                foreach (var hook in post)
                {
                    runs.Add(await RunAsync(HookPhase.Post, entered[i], hook, CancellationToken.None).ConfigureAwait(false));
                }
            }
        }

        return new HookReport(runs, attempted, cutError);
    }

    private async Task<HookRun> RunAsync(HookPhase phase, HookPod pod, ExecHook hook, CancellationToken ct)
    {
        string container = string.IsNullOrEmpty(hook.Container) ? (pod.Containers.Count > 0 ? pod.Containers[0] : "") : hook.Container;
        string command = string.Join(' ', hook.Command);
        bool fatal = hook.OnError != ExecHookNames.Continue;
        if (!pod.Containers.Contains(container, StringComparer.Ordinal))
        {
            return new HookRun(phase, pod.Key, container, command, $"the pod has no container \"{container}\" (it has {string.Join(", ", pod.Containers)})", fatal);
        }

        var timeout = ExecHookNames.TimeoutOf(hook);
        using var deadline = new CancellationTokenSource(timeout, time);
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(ct, deadline.Token);
        string? failure;
        try
        {
            var result = await exec.RunAsync(new ExecTarget(pod.Namespace, pod.Name, container), [.. hook.Command], linked.Token).ConfigureAwait(false);
            failure = result.Succeeded ? null : result.Describe();
        }
        catch (OperationCanceledException) when (deadline.IsCancellationRequested && !ct.IsCancellationRequested)
        {
            failure = $"timed out after {Format(timeout)} (the stream was closed; the command may still be running in the container)";
        }
        catch (HttpOperationException ex)
        {
            string detail = ex.Body is V1Status { Message: { Length: > 0 } m } ? m : ex.Response?.Content ?? ex.Message;
            failure = $"exec refused: {(int?)ex.Response?.StatusCode} {detail}";
        }
        catch (ExecProtocolException ex)
        {
            failure = "the exec stream broke the protocol: " + ex.Message;
        }
        catch (Exception ex) when (ex is WebSocketException or HttpRequestException or IOException)
        {
            failure = "the exec connection failed: " + ex.Message;
        }

        return new HookRun(phase, pod.Key, container, command, failure, failure is not null && fatal);
    }

    private static string Format(TimeSpan t) =>
        t.TotalSeconds < 60 || t.Seconds != 0 ? string.Create(CultureInfo.InvariantCulture, $"{(long)t.TotalSeconds}s") : string.Create(CultureInfo.InvariantCulture, $"{(long)t.TotalMinutes}m");
}
