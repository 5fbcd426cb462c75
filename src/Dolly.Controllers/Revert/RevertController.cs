using System.Net;
using System.Text.Json.Nodes;
using Dolly.Controllers.Model;
using Dolly.Controllers.Runtime;
using Dolly.V1;
using Grpc.Core;
using k8s;
using k8s.Autorest;
using k8s.Models;
using Microsoft.Extensions.Logging;

namespace Dolly.Controllers.Revert;

/// <summary>
/// Runs VolumeReverts. A revert is checked (claim, snapshot, driver, lineage and size: the last two by the driver,
/// without changing anything), then waits until nothing holds the claim's volume (no NBD client, no pod using the
/// claim), takes the safety snapshot (a VolumeSnapshot) and, once it is ready, asks the driver to replace the
/// volume's content with the snapshot's, on condition that the volume was not written since the safety snapshot.
/// Succeeded and Failed are final: a revert never runs twice. A refusal changes nothing and is a condition and an
/// event naming the problem.
/// </summary>
internal sealed class RevertController : Reconciler
{
    /// <summary>How often a waiting revert looks again (at holders, or at the safety snapshot).</summary>
    private static readonly TimeSpan Poll = TimeSpan.FromSeconds(1);

    private const string ConditionType = "Reverted";

    private readonly ControllerContext _c;
    private readonly VolumeContentService.VolumeContentServiceClient _content;

    public RevertController(ControllerContext context)
        : base("volume-reverts", context.Options.RetryBaseDelay, context.Options.RetryMaxDelay, context.Loggers.CreateLogger<RevertController>())
    {
        _c = context;
        _content = new VolumeContentService.VolumeContentServiceClient(context.CsiInvoker);
        var cluster = context.Cluster;
        cluster.Reverts.OnChange((_, r) => Enqueue(r));

        // A claim binding or a snapshot becoming ready may let a waiting revert go on.
        cluster.Claims.OnChange((old, now) => EnqueueFor((now ?? old)?.Metadata, r => r.Spec.ClaimName));
        cluster.Snapshots.OnChange((old, now) => EnqueueFor((now ?? old)?.Metadata, r => r.Spec.VolumeSnapshotName));
        cluster.Snapshots.OnChange((old, now) =>
        {
            if ((now ?? old)?.Metadata.Labels?.TryGetValue(RevertNames.SafetySnapshotLabel, out var revert) == true)
            {
                Queue.Add((now ?? old)!.Metadata.NamespaceProperty + "/" + revert);
            }
        });
    }

    private void Enqueue(VolumeRevert? r)
    {
        if (r is not null)
        {
            Queue.Add(r.Metadata.NamespaceProperty + "/" + r.Metadata.Name);
        }
    }

    private void EnqueueFor(V1ObjectMeta? meta, Func<VolumeRevert, string> name)
    {
        if (meta is null)
        {
            return;
        }

        foreach (var r in _c.Cluster.Reverts.List().Where(r => r.Metadata.NamespaceProperty == meta.NamespaceProperty && name(r) == meta.Name))
        {
            Enqueue(r);
        }
    }

    protected override async Task<Outcome> ReconcileAsync(string key, CancellationToken cancellationToken)
    {
        var revert = _c.Cluster.Reverts.Get(key);
        if (revert is null)
        {
            return Outcome.Done;
        }

        if (revert.Metadata.DeletionTimestamp is not null)
        {
            // Withdrawn at the driver before the object goes, so a deleted revert never happens later.
            if (Cluster.HasFinalizer(revert.Metadata, RevertNames.Finalizer))
            {
                await _content.DeleteContentRequestAsync(new DeleteContentRequestRequest { RequestId = revert.Metadata.Uid }, _c.CsiCall(cancellationToken)).ConfigureAwait(false);
                await SetFinalizerAsync(revert, present: false, cancellationToken).ConfigureAwait(false);
            }

            return Outcome.Done;
        }

        if (revert.Status?.Phase is RevertNames.Succeeded or RevertNames.Failed)
        {
            if (Cluster.HasFinalizer(revert.Metadata, RevertNames.Finalizer))
            {
                // The outcome is in the status; the driver's record is no longer needed.
                await _content.DeleteContentRequestAsync(new DeleteContentRequestRequest { RequestId = revert.Metadata.Uid }, _c.CsiCall(cancellationToken)).ConfigureAwait(false);
                await SetFinalizerAsync(revert, present: false, cancellationToken).ConfigureAwait(false);
            }

            return Outcome.Done;
        }

        var check = await RevertChecks.RunAsync(_c, _content, revert, cancellationToken).ConfigureAwait(false);
        if (check.Problem is { } problem)
        {
            await SetStatusAsync(revert, problem.Final ? RevertNames.Failed : RevertNames.Pending, problem.Reason, problem.Message, null, null, cancellationToken).ConfigureAwait(false);
            return problem.Final ? Outcome.Done : Outcome.After(Poll * 5);
        }

        var target = check.Target!;
        bool safety = revert.Spec.TakeSafetySnapshot != false;
        string? guard = null;
        if (revert.Status?.SafetySnapshotName is null && !Cluster.HasFinalizer(revert.Metadata, RevertNames.Finalizer))
        {
            // Not started: wait until nothing holds the volume, then start.
            var holders = await HoldersAsync(revert, target, cancellationToken).ConfigureAwait(false);
            if (holders.Count > 0)
            {
                await SetStatusAsync(revert, RevertNames.Pending, "VolumeInUse", $"waiting for the volume of claim {revert.Spec.ClaimName} to be let go: {string.Join("; ", holders)}", holders, target, cancellationToken).ConfigureAwait(false);
                return Outcome.After(Poll);
            }

            if (safety)
            {
                var name = await TakeSafetySnapshotAsync(revert, cancellationToken).ConfigureAwait(false);
                if (name is null)
                {
                    return Outcome.Done;
                }

                revert = await SetStatusAsync(revert, RevertNames.Pending, "TakingSafetySnapshot", $"taking safety snapshot {name} of claim {revert.Spec.ClaimName}", null, target, cancellationToken, safetySnapshot: name).ConfigureAwait(false);
            }
        }

        if (safety)
        {
            string name = revert.Status?.SafetySnapshotName ?? RevertNames.SafetySnapshotName(revert.Metadata.Name);
            var snapshot = _c.Cluster.Snapshots.Get(revert.Metadata.NamespaceProperty, name) ?? await _c.Cluster.ReadSnapshotAsync(revert.Metadata.NamespaceProperty, name, cancellationToken).ConfigureAwait(false);
            if (snapshot is null || snapshot.Metadata.DeletionTimestamp is not null)
            {
                await SetStatusAsync(revert, RevertNames.Failed, "SafetySnapshotLost", $"safety snapshot {name} was deleted before the revert; nothing was changed", null, target, cancellationToken).ConfigureAwait(false);
                return Outcome.Done;
            }

            var content = snapshot.Status?.BoundVolumeSnapshotContentName is { } cn ? _c.Cluster.Contents.Get(cn) : null;
            if (snapshot.Status?.ReadyToUse != true || content?.Status?.SnapshotHandle is not { Length: > 0 } handle)
            {
                if (snapshot.Status?.Error?.Message is { } error)
                {
                    await SetStatusAsync(revert, RevertNames.Failed, "SafetySnapshotFailed", $"safety snapshot {name} failed: {error}; nothing was changed", null, target, cancellationToken).ConfigureAwait(false);
                    return Outcome.Done;
                }

                return Outcome.After(Poll);
            }

            guard = handle;
        }

        if (!Cluster.HasFinalizer(revert.Metadata, RevertNames.Finalizer))
        {
            revert = await SetFinalizerAsync(revert, present: true, cancellationToken).ConfigureAwait(false);
        }

        ContentRequestStatus status;
        try
        {
            status = await _content.ReplaceContentAsync(
                new ReplaceContentRequest
                {
                    RequestId = revert.Metadata.Uid,
                    VolumeId = target.VolumeHandle,
                    SnapshotId = target.SnapshotHandle,
                    AllowForeignSnapshot = revert.Spec.AllowForeignSnapshot == true,
                    UnchangedSinceSnapshotId = guard ?? string.Empty,
                },
                _c.CsiCall(cancellationToken)).ConfigureAwait(false);
        }
        catch (RpcException ex) when (!cancellationToken.IsCancellationRequested && RevertChecks.IsFinal(ex.StatusCode))
        {
            await SetStatusAsync(revert, RevertNames.Failed, RevertChecks.ReasonFor(ex.StatusCode), $"the driver refused the revert: {ex.Status.Detail}; nothing was changed", null, target, cancellationToken).ConfigureAwait(false);
            return Outcome.Done;
        }

        switch (status.Phase)
        {
            case ContentRequestPhase.Succeeded:
                var at = status.CompletedAt?.ToDateTime() ?? _c.Options.TimeProvider.GetUtcNow().UtcDateTime;
                string done = $"claim {revert.Spec.ClaimName} reverted to snapshot {revert.Spec.VolumeSnapshotName}{(guard is null ? "" : $"; its content before is in snapshot {revert.Status?.SafetySnapshotName}")}";
                await SetStatusAsync(revert, RevertNames.Succeeded, "Reverted", done, null, target, cancellationToken, completedAt: at).ConfigureAwait(false);
                await RecordOnClaimAsync(revert, EventRecorder.Normal, "Reverted", $"reverted in place to snapshot {revert.Spec.VolumeSnapshotName} by VolumeRevert {revert.Metadata.Name}", cancellationToken).ConfigureAwait(false);
                return Outcome.After(TimeSpan.Zero);
            case ContentRequestPhase.Failed or ContentRequestPhase.Withdrawn:
                await SetStatusAsync(revert, RevertNames.Failed, "RevertFailed", $"{status.Message}", null, target, cancellationToken).ConfigureAwait(false);
                await RecordOnClaimAsync(revert, EventRecorder.Warning, "RevertFailed", $"VolumeRevert {revert.Metadata.Name} failed: {status.Message}", cancellationToken).ConfigureAwait(false);
                return Outcome.After(TimeSpan.Zero);
            default:
                var held = status.Holders.Select(h => h.Client).ToList();
                string why = held.Count > 0
                    ? $"waiting for the volume of claim {revert.Spec.ClaimName} to be let go: {string.Join("; ", held)}"
                    : $"waiting for the driver to apply the revert{(status.Message is { Length: > 0 } m ? ": " + m : "")}";
                await SetStatusAsync(revert, RevertNames.Pending, "VolumeInUse", why, held, target, cancellationToken).ConfigureAwait(false);
                return Outcome.After(Poll);
        }
    }

    /// <summary>What holds the volume: the driver's NBD clients, and pods (not finished) that use the claim.</summary>
    private async Task<List<string>> HoldersAsync(VolumeRevert revert, RevertTarget target, CancellationToken ct)
    {
        var holders = new List<string>();
        var response = await _content.GetVolumeHoldersAsync(new GetVolumeHoldersRequest { VolumeId = target.VolumeHandle }, _c.CsiCall(ct)).ConfigureAwait(false);
        holders.AddRange(response.Holders.Select(h => h.Client));
        var pods = await _c.Cluster.Client.CoreV1.ListNamespacedPodAsync(revert.Metadata.NamespaceProperty, cancellationToken: ct).ConfigureAwait(false);
        foreach (var pod in pods.Items)
        {
            bool uses = pod.Spec?.Volumes?.Any(v => v.PersistentVolumeClaim?.ClaimName == revert.Spec.ClaimName) == true;
            if (uses && pod.Status?.Phase is not ("Succeeded" or "Failed"))
            {
                holders.Add($"pod {pod.Metadata.NamespaceProperty}/{pod.Metadata.Name}{(string.IsNullOrEmpty(pod.Spec!.NodeName) ? "" : " on node " + pod.Spec.NodeName)}");
            }
        }

        return holders;
    }

    /// <summary>Creates the safety snapshot; returns its name, or null when the revert failed (status written).</summary>
    private async Task<string?> TakeSafetySnapshotAsync(VolumeRevert revert, CancellationToken ct)
    {
        string ns = revert.Metadata.NamespaceProperty;
        string name = RevertNames.SafetySnapshotName(revert.Metadata.Name);
        var snapshot = new VolumeSnapshot
        {
            Metadata = new V1ObjectMeta
            {
                Name = name,
                NamespaceProperty = ns,
                Labels = new Dictionary<string, string> { [RevertNames.SafetySnapshotLabel] = revert.Metadata.Name },
            },
            Spec = new VolumeSnapshotSpec { Source = new VolumeSnapshotSource { PersistentVolumeClaimName = revert.Spec.ClaimName } },
        };
        try
        {
            object written = await _c.Cluster.Client.CustomObjects.CreateNamespacedCustomObjectAsync(snapshot, Names.SnapshotGroup, "v1", ns, "volumesnapshots", cancellationToken: ct).ConfigureAwait(false);
            _c.Cluster.Snapshots.Remember(KubernetesJson.Deserialize<VolumeSnapshot>(KubernetesJson.Serialize(written)));
            await _c.Events.RecordAsync(revert, EventRecorder.Normal, "SafetySnapshot", $"took safety snapshot {name} of claim {revert.Spec.ClaimName}", ct).ConfigureAwait(false);
            return name;
        }
        catch (HttpOperationException ex) when (ex.Response.StatusCode == HttpStatusCode.Conflict)
        {
            var existing = await _c.Cluster.ReadSnapshotAsync(ns, name, ct).ConfigureAwait(false);
            if (existing is not null && existing.Metadata.Labels?.TryGetValue(RevertNames.SafetySnapshotLabel, out var owner) == true && owner == revert.Metadata.Name
                && existing.Spec.Source.PersistentVolumeClaimName == revert.Spec.ClaimName)
            {
                return name;
            }

            await SetStatusAsync(revert, RevertNames.Failed, "SafetySnapshotNameTaken", $"VolumeSnapshot {ns}/{name} already exists and is not this revert's safety snapshot; nothing was changed", null, null, ct).ConfigureAwait(false);
            return null;
        }
        catch (HttpOperationException ex) when (ex.Response.StatusCode is HttpStatusCode.Forbidden or HttpStatusCode.UnprocessableEntity or HttpStatusCode.BadRequest)
        {
            await SetStatusAsync(revert, RevertNames.Failed, "SafetySnapshotFailed", $"creating safety snapshot {ns}/{name} was refused: {(int)ex.Response.StatusCode} {ex.Response.Content}; nothing was changed", null, null, ct).ConfigureAwait(false);
            return null;
        }
    }

    private async Task RecordOnClaimAsync(VolumeRevert revert, string type, string reason, string message, CancellationToken ct)
    {
        if (_c.Cluster.Claims.Get(revert.Metadata.NamespaceProperty, revert.Spec.ClaimName) is { } claim)
        {
            await _c.Events.RecordAsync(claim, type, reason, message, ct).ConfigureAwait(false);
        }
    }

    /// <summary>Writes the status when it changed, with an event on the revert for each new reason.</summary>
    private async Task<VolumeRevert> SetStatusAsync(
        VolumeRevert revert, string phase, string reason, string message, IList<string>? holders, RevertTarget? target, CancellationToken ct,
        string? safetySnapshot = null, DateTime? completedAt = null)
    {
        var old = revert.Status ?? new VolumeRevertStatus();
        var oldCondition = old.Conditions?.FirstOrDefault(c => c.Type == ConditionType);
        bool changed = old.Phase != phase || old.Message != message || oldCondition?.Reason != reason
            || !(old.Holders ?? []).SequenceEqual(holders ?? []) || (safetySnapshot is not null && old.SafetySnapshotName != safetySnapshot)
            || (target is not null && (old.VolumeName != target.VolumeName || old.SnapshotHandle != target.SnapshotHandle));
        if (!changed)
        {
            return revert;
        }

        string conditionStatus = phase == RevertNames.Succeeded ? "True" : "False";
        var now = _c.Options.TimeProvider.GetUtcNow().UtcDateTime;
        var condition = new JsonObject
        {
            ["type"] = ConditionType,
            ["status"] = conditionStatus,
            ["reason"] = reason,
            ["message"] = message,
            ["observedGeneration"] = revert.Metadata.Generation ?? 0,
            ["lastTransitionTime"] = (oldCondition is not null && oldCondition.Status == conditionStatus && oldCondition.Reason == reason ? oldCondition.LastTransitionTime : now).ToString("yyyy-MM-dd'T'HH:mm:ss'Z'", System.Globalization.CultureInfo.InvariantCulture),
        };
        var status = new JsonObject
        {
            ["phase"] = phase,
            ["message"] = message,
            ["holders"] = holders is { Count: > 0 } ? new JsonArray([.. holders.Select(h => (JsonNode)JsonValue.Create(h))]) : null,
            ["conditions"] = new JsonArray(condition),
        };
        if (safetySnapshot is not null)
        {
            status["safetySnapshotName"] = safetySnapshot;
        }

        if (target is not null)
        {
            status["volumeName"] = target.VolumeName;
            status["snapshotHandle"] = target.SnapshotHandle;
        }

        if (completedAt is { } t)
        {
            status["completionTime"] = t.ToString("yyyy-MM-dd'T'HH:mm:ss'Z'", System.Globalization.CultureInfo.InvariantCulture);
        }

        var current = _c.Cluster.Reverts.Get(revert.Metadata.NamespaceProperty, revert.Metadata.Name) ?? revert;
        var written = await _c.Cluster.PatchCustomAsync(_c.Cluster.Reverts, current, RevertNames.Group, RevertNames.Version, RevertNames.Plural, new JsonObject { ["status"] = status }, status: true, ct).ConfigureAwait(false);
        if (oldCondition?.Reason != reason || old.Phase != phase)
        {
            string type = phase == RevertNames.Failed ? EventRecorder.Warning : EventRecorder.Normal;
            await _c.Events.RecordAsync(written, type, reason, message, ct).ConfigureAwait(false);
            ControllerLog.Action(Logger, Name, revert.Metadata.NamespaceProperty + "/" + revert.Metadata.Name, $"{phase} ({reason}): {message}");
        }

        return written;
    }

    private async Task<VolumeRevert> SetFinalizerAsync(VolumeRevert revert, bool present, CancellationToken ct)
    {
        var current = _c.Cluster.Reverts.Get(revert.Metadata.NamespaceProperty, revert.Metadata.Name) ?? revert;
        return Cluster.FinalizerPatch(current.Metadata, RevertNames.Finalizer, present) is { } patch
            ? await _c.Cluster.PatchCustomAsync(_c.Cluster.Reverts, current, RevertNames.Group, RevertNames.Version, RevertNames.Plural, patch, status: false, ct).ConfigureAwait(false)
            : current;
    }
}
