using System.Text.Json.Nodes;
using Dolly.Controllers.Runtime;
using Microsoft.Extensions.Logging;
using Dolly.Csi.V1;
using Grpc.Core;
using k8s.Models;

namespace Dolly.Controllers;

/// <summary>
/// The external resizer's part: when a bound claim of this driver asks for more than its PV holds and its
/// StorageClass allows expansion, ControllerExpandVolume grows the volume, the PV's capacity follows, and
/// the claim's status either shows the new capacity or, when the file system must grow on the node, the
/// FileSystemResizePending condition (the next stage on a node finishes it).
/// </summary>
internal sealed class Resizer : Reconciler
{
    private readonly ControllerContext _c;

    public Resizer(ControllerContext context)
        : base("resizer", context.Options.RetryBaseDelay, context.Options.RetryMaxDelay, context.Loggers.CreateLogger<Resizer>())
    {
        _c = context;
        context.Cluster.Claims.OnChange((_, claim) =>
        {
            if (claim is not null && !string.IsNullOrEmpty(claim.Spec?.VolumeName))
            {
                Queue.Add(Informer<V1PersistentVolumeClaim>.Key(claim));
            }
        });
    }

    protected override async Task<Outcome> ReconcileAsync(string key, CancellationToken cancellationToken)
    {
        var claim = _c.Cluster.Claims.Get(key);
        if (claim is null || claim.Metadata.DeletionTimestamp is not null || claim.Status?.Phase != "Bound" || string.IsNullOrEmpty(claim.Spec?.VolumeName))
        {
            return Outcome.Done;
        }

        var pv = _c.Cluster.Volumes.Get(claim.Spec.VolumeName);
        if (pv?.Spec?.Csi is null || pv.Spec.Csi.Driver != _c.Options.DriverName)
        {
            return Outcome.Done;
        }

        long? request = Quantities.Request(claim);
        long? capacity = Quantities.Capacity(pv);
        if (request is null || capacity is null || request <= capacity)
        {
            return Outcome.Done;
        }

        var storageClass = Provisioner.ClassOf(_c.Cluster, claim);
        if (storageClass?.AllowVolumeExpansion != true)
        {
            await _c.Events.RecordAsync(
                claim,
                EventRecorder.Warning,
                "VolumeResizeFailed",
                $"cannot grow the claim to {request} bytes: StorageClass {storageClass?.Metadata.Name ?? claim.Spec.StorageClassName ?? "(none)"} does not set allowVolumeExpansion: true",
                cancellationToken).ConfigureAwait(false);
            return Outcome.Done;
        }

        await _c.Events.RecordAsync(claim, EventRecorder.Normal, "Resizing", $"External resizer is resizing volume {pv.Metadata.Name}", cancellationToken).ConfigureAwait(false);
        string mode = pv.Spec.VolumeMode ?? "Filesystem";
        var expand = new ControllerExpandVolumeRequest
        {
            VolumeId = pv.Spec.Csi.VolumeHandle,
            CapacityRange = new CapacityRange { RequiredBytes = request.Value },
            VolumeCapability = Provisioner.Capability(mode, storageClass, pv.Spec.AccessModes),
        };
        ControllerExpandVolumeResponse expanded;
        try
        {
            expanded = await _c.Csi.ControllerExpandVolumeAsync(expand, _c.CsiCall(cancellationToken)).ConfigureAwait(false);
        }
        catch (RpcException ex) when (!cancellationToken.IsCancellationRequested)
        {
            string message = $"resize volume \"{pv.Metadata.Name}\" by resizer \"{_c.Options.DriverName}\" failed: {ControllerContext.Describe(ex)}";
            await _c.Events.RecordAsync(claim, EventRecorder.Warning, "VolumeResizeFailed", message, cancellationToken).ConfigureAwait(false);
            throw new RetryLaterException(message, ex);
        }

        string size = Quantities.FromBytes(expanded.CapacityBytes).ToString();
        await _c.Cluster.PatchVolumeAsync(pv, new JsonObject { ["spec"] = new JsonObject { ["capacity"] = new JsonObject { ["storage"] = size } } }, status: false, cancellationToken).ConfigureAwait(false);

        bool onNode = expanded.NodeExpansionRequired && mode == "Filesystem";
        var status = new JsonObject();
        if (onNode)
        {
            status["conditions"] = new JsonArray(new JsonObject
            {
                ["type"] = "FileSystemResizePending",
                ["status"] = "True",
                ["lastTransitionTime"] = _c.Options.TimeProvider.GetUtcNow().UtcDateTime.ToString("yyyy-MM-ddTHH:mm:ssZ", System.Globalization.CultureInfo.InvariantCulture),
                ["message"] = "Waiting for user to (re-)start a pod to finish file system resize of volume on node.",
            });
        }
        else
        {
            status["capacity"] = new JsonObject { ["storage"] = size };
            status["conditions"] = new JsonArray();
        }

        var written = await _c.Cluster.PatchClaimAsync(claim, new JsonObject { ["status"] = status }, status: true, cancellationToken).ConfigureAwait(false);
        await _c.Events.RecordAsync(
            written,
            EventRecorder.Normal,
            onNode ? "FileSystemResizeRequired" : "VolumeResizeSuccessful",
            onNode ? "Require file system resize of volume on node" : $"Resize volume succeeded: {pv.Metadata.Name} is now {size}",
            cancellationToken).ConfigureAwait(false);
        return Outcome.Done;
    }
}
