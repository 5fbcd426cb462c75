using System.Globalization;
using System.Net;
using System.Text.Json.Nodes;
using Dolly.Controllers.Model;
using Dolly.Controllers.Runtime;
using Dolly.Csi.NodeV1;
using Dolly.Csi.V1;
using Grpc.Core;
using k8s;
using k8s.Autorest;
using k8s.Models;

namespace Dolly.Controllers.Schedules;

/// <summary>What a VolumeSnapshot's freeze annotations ask for.</summary>
/// <param name="Timeout">The node's deadline: it thaws by itself this long after the freeze.</param>
/// <param name="ContinueOnError">Cut without the freeze when freezing fails (onError Continue) rather than fail the snapshot.</param>
internal sealed record FreezeRequest(TimeSpan Timeout, bool ContinueOnError)
{
    /// <summary>The node's default deadline.</summary>
    public static readonly TimeSpan DefaultTimeout = TimeSpan.FromSeconds(2);

    /// <summary>The longest deadline the node accepts.</summary>
    public static readonly TimeSpan MaxTimeout = TimeSpan.FromSeconds(60);

    /// <summary>
    /// The freeze a snapshot's annotations ask for: null when <see cref="FreezeNames.FreezeAnnotation"/> is absent or
    /// "false"; an error naming the annotation when one is malformed.
    /// </summary>
    public static (FreezeRequest? Request, string? Error) Of(IDictionary<string, string>? annotations)
    {
        string? Get(string name) => annotations is { } a && a.TryGetValue(name, out var v) ? v : null;
        string? freeze = Get(FreezeNames.FreezeAnnotation);
        if (freeze is null || freeze == "false")
        {
            return (null, null);
        }

        if (freeze != "true")
        {
            return (null, $"annotation {FreezeNames.FreezeAnnotation} is \"{freeze}\": it must be \"true\" or \"false\"");
        }

        var timeout = DefaultTimeout;
        if (Get(FreezeNames.TimeoutAnnotation) is { } text)
        {
            if (ParseTimeout(text) is not { } t)
            {
                return (null, $"annotation {FreezeNames.TimeoutAnnotation} is \"{text}\": it must be a duration of 1ms to 60s such as 500ms, 2s or 1s500ms");
            }

            timeout = t;
        }

        return Get(FreezeNames.OnErrorAnnotation) switch
        {
            null or FreezeNames.Fail => (new FreezeRequest(timeout, false), null),
            FreezeNames.Continue => (new FreezeRequest(timeout, true), null),
            var other => (null, $"annotation {FreezeNames.OnErrorAnnotation} is \"{other}\": it must be {FreezeNames.Fail} or {FreezeNames.Continue}"),
        };
    }

    /// <summary>A duration made of <c>&lt;n&gt;ms</c> and <c>&lt;n&gt;s</c> parts, within 1 ms..60 s; null otherwise.</summary>
    public static TimeSpan? ParseTimeout(string text)
    {
        long ms = 0;
        int i = 0;
        if (text.Length == 0)
        {
            return null;
        }

        while (i < text.Length)
        {
            int start = i;
            while (i < text.Length && char.IsAsciiDigit(text[i]))
            {
                i++;
            }

            if (i == start || i - start > 6 || !long.TryParse(text.AsSpan(start, i - start), NumberStyles.None, CultureInfo.InvariantCulture, out long n))
            {
                return null;
            }

            if (text.AsSpan(i).StartsWith("ms", StringComparison.Ordinal))
            {
                ms += n;
                i += 2;
            }
            else if (i < text.Length && text[i] == 's')
            {
                ms += n * 1000;
                i++;
            }
            else
            {
                return null;
            }
        }

        var span = TimeSpan.FromMilliseconds(ms);
        return span >= TimeSpan.FromMilliseconds(1) && span <= MaxTimeout ? span : null;
    }
}

/// <summary>The freeze annotations and their values.</summary>
public static class FreezeNames
{
    /// <summary>On a VolumeSnapshot: <c>"true"</c> freezes the claim's mounted file system around the cut.</summary>
    public const string FreezeAnnotation = "dolly.io/freeze";

    /// <summary>On a VolumeSnapshot: the node's thaw deadline (default 2s).</summary>
    public const string TimeoutAnnotation = "dolly.io/freeze-timeout";

    /// <summary>On a VolumeSnapshot: <see cref="Fail"/> (default) or <see cref="Continue"/> when the freeze fails.</summary>
    public const string OnErrorAnnotation = "dolly.io/freeze-on-error";

    /// <summary>Written on a VolumeSnapshot after its cut: how the freeze went, in words.</summary>
    public const string ResultAnnotation = "dolly.io/freeze-result";

    /// <summary>Written on a VolumeSnapshot after a frozen cut: microseconds from FIFREEZE to FITHAW.</summary>
    public const string FrozenMicrosecondsAnnotation = "dolly.io/frozen-microseconds";

    /// <summary>A failed freeze fails the snapshot (it is retried).</summary>
    public const string Fail = "Fail";

    /// <summary>A failed freeze is reported and the snapshot cut without it.</summary>
    public const string Continue = "Continue";
}

/// <summary>
/// A snapshot cut inside a freeze window: the node that stages the volume freezes its file system, the driver
/// cuts, the node thaws; the node measures the window and thaws by its own deadline if this process dies or
/// hangs. The node is reached through <see cref="ControllerOptions.DriverServesNode"/> (dolly up: the driver's
/// own socket); a volume staged nowhere has no mounted file system, so its cut needs no freeze.
/// </summary>
internal sealed class FreezeHook(ControllerContext c)
{
    private readonly DollyNode.DollyNodeClient? _node = c.Options.DriverServesNode ? new DollyNode.DollyNodeClient(c.CsiInvoker) : null;

    /// <summary>How a frozen cut went.</summary>
    /// <param name="Response">The driver's answer to CreateSnapshot.</param>
    /// <param name="Summary">For the result annotation and the event.</param>
    /// <param name="FrozenMicroseconds">The measured window; null when nothing was frozen.</param>
    /// <param name="Warning">Whether the event is a warning (the freeze failed and the cut went ahead).</param>
    public sealed record Outcome(CreateSnapshotResponse Response, string Summary, ulong? FrozenMicroseconds, bool Warning);

    /// <summary>
    /// Cuts through <paramref name="cut"/> inside a freeze window. A freeze that fails throws
    /// <see cref="FreezeFailedException"/> (nothing cut, or the cut undone) unless the request continues on error.
    /// </summary>
    public async Task<Outcome> CutAsync(string volumeHandle, FreezeRequest request, Func<Task<CreateSnapshotResponse>> cut, Func<string, Task> undo, CancellationToken ct)
    {
        if (_node is null)
        {
            return await FreezeFailedAsync(request, "this deployment's controllers reach no node's freeze service (only `dolly up` serving its own node does)", cut).ConfigureAwait(false);
        }

        // The RPC deadline is a backstop; the node's own deadline is what bounds the freeze.
        using var call = _node.FreezeWindow(deadline: DateTime.UtcNow + request.Timeout + c.Options.CsiTimeout, cancellationToken: ct);
        try
        {
            await call.RequestStream.WriteAsync(new FreezeWindowRequest { Freeze = new FreezeWindowRequest.Types.Freeze { VolumeId = volumeHandle, TimeoutMs = (uint)request.Timeout.TotalMilliseconds } }, ct).ConfigureAwait(false);
            if (!await call.ResponseStream.MoveNext(ct).ConfigureAwait(false) || call.ResponseStream.Current.Frozen is null)
            {
                return await FreezeFailedAsync(request, "the node ended the freeze window without freezing", cut).ConfigureAwait(false);
            }
        }
        catch (RpcException ex) when (ex.StatusCode == StatusCode.NotFound && !ct.IsCancellationRequested)
        {
            // Staged on no node: nothing has the file system mounted, so it is at rest and the cut is clean.
            return new Outcome(await cut().ConfigureAwait(false), "not frozen: the volume is not staged on any node, so no file system of it is mounted", null, false);
        }
        catch (RpcException ex) when (!ct.IsCancellationRequested)
        {
            return await FreezeFailedAsync(request, ControllerContext.Describe(ex), cut).ConfigureAwait(false);
        }

        string mount = call.ResponseStream.Current.Frozen.MountPath;
        CreateSnapshotResponse response;
        try
        {
            response = await cut().ConfigureAwait(false);
        }
        finally
        {
            // Ending the stream thaws even when the write fails; the node's deadline covers the rest.
            try
            {
                await call.RequestStream.WriteAsync(new FreezeWindowRequest { Thaw = new FreezeWindowRequest.Types.Thaw() }, ct).ConfigureAwait(false);
                await call.RequestStream.CompleteAsync().ConfigureAwait(false);
            }
            catch (Exception e) when (e is RpcException or InvalidOperationException)
            {
                // The stream is already over (the node answered with an error); the read below says how.
            }
        }

        FreezeWindowResponse.Types.Thawed? thawed = null;
        try
        {
            if (await call.ResponseStream.MoveNext(ct).ConfigureAwait(false))
            {
                thawed = call.ResponseStream.Current.Thawed;
            }
        }
        catch (RpcException ex) when (!ct.IsCancellationRequested)
        {
            return await CutNotCoveredAsync(request, response, $"the thaw was not confirmed ({ControllerContext.Describe(ex)})", undo).ConfigureAwait(false);
        }

        if (thawed is null)
        {
            return await CutNotCoveredAsync(request, response, "the thaw was not confirmed", undo).ConfigureAwait(false);
        }

        if (thawed.DeadlineExpired)
        {
            return await CutNotCoveredAsync(request, response, $"the node thawed {mount} at its {request.Timeout.TotalMilliseconds} ms deadline before the cut finished", undo).ConfigureAwait(false);
        }

        return new Outcome(response, $"frozen {thawed.FrozenMicroseconds} us: {mount} frozen on the node around the cut", thawed.FrozenMicroseconds, false);
    }

    private static async Task<Outcome> FreezeFailedAsync(FreezeRequest request, string why, Func<Task<CreateSnapshotResponse>> cut)
    {
        if (!request.ContinueOnError)
        {
            throw new FreezeFailedException($"the freeze failed, so the snapshot was not cut (onError {FreezeNames.Fail}): {why}");
        }

        return new Outcome(await cut().ConfigureAwait(false), $"not frozen (onError {FreezeNames.Continue}): {why}", null, true);
    }

    private static async Task<Outcome> CutNotCoveredAsync(FreezeRequest request, CreateSnapshotResponse response, string why, Func<string, Task> undo)
    {
        if (!request.ContinueOnError)
        {
            // The cut may hold a file system that was not frozen: not the snapshot that was asked for.
            await undo(response.Snapshot.SnapshotId).ConfigureAwait(false);
            throw new FreezeFailedException($"the snapshot was cut but not inside the freeze, so it was deleted again (onError {FreezeNames.Fail}): {why}");
        }

        return new Outcome(response, $"not frozen throughout (onError {FreezeNames.Continue}): {why}", null, true);
    }

    /// <summary>Writes the outcome on the snapshot (annotations, which only this writes, so no compare-and-set) and as an event.</summary>
    public async Task ReportAsync(VolumeSnapshot snapshot, Outcome outcome, CancellationToken ct)
    {
        var annotations = new JsonObject
        {
            [FreezeNames.ResultAnnotation] = outcome.Summary,
            [FreezeNames.FrozenMicrosecondsAnnotation] = outcome.FrozenMicroseconds?.ToString(CultureInfo.InvariantCulture),
        };
        var patch = new V1Patch(new JsonObject { ["metadata"] = new JsonObject { ["annotations"] = annotations } }.ToJsonString(), V1Patch.PatchType.MergePatch);
        try
        {
            object written = await c.Cluster.Client.CustomObjects.PatchNamespacedCustomObjectAsync(
                patch, Names.SnapshotGroup, "v1", snapshot.Metadata.NamespaceProperty, "volumesnapshots", snapshot.Metadata.Name, cancellationToken: ct).ConfigureAwait(false);
            c.Cluster.Snapshots.Remember(KubernetesJson.Deserialize<VolumeSnapshot>(KubernetesJson.Serialize(written)));
        }
        catch (HttpOperationException ex) when (ex.Response.StatusCode == HttpStatusCode.NotFound)
        {
            // Deleted since: the event below still tells.
        }

        await c.Events.RecordAsync(snapshot, outcome.Warning ? EventRecorder.Warning : EventRecorder.Normal, outcome.FrozenMicroseconds is null ? "NotFrozen" : "Frozen", outcome.Summary, ct).ConfigureAwait(false);
    }
}

/// <summary>A freeze that failed with onError Fail: the snapshot is not cut (or its cut was undone).</summary>
internal sealed class FreezeFailedException(string message) : Exception(message);
