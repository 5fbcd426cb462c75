using Dolly.Controllers.Model;
using Dolly.Controllers.Runtime;
using Microsoft.Extensions.Logging;
using Dolly.Csi.V1;
using Grpc.Core;
using k8s.Models;

namespace Dolly.Controllers;

/// <summary>
/// The provisioner's other half: a PV it made whose claim is gone (phase Released) and whose reclaim
/// policy is Delete has its CSI volume deleted, then the PV. A PV deleted by hand has its volume deleted
/// first (policy Delete) before the provisioner's finalizer lets it go. Retain keeps the volume.
/// </summary>
internal sealed class VolumeReaper : Reconciler
{
    private readonly ControllerContext _c;

    public VolumeReaper(ControllerContext context)
        : base("volume-reaper", context.Options.RetryBaseDelay, context.Options.RetryMaxDelay, context.Loggers.CreateLogger<VolumeReaper>())
    {
        _c = context;
        context.Cluster.Volumes.OnChange((_, pv) =>
        {
            if (pv is not null)
            {
                Queue.Add(pv.Metadata.Name);
            }
        });
    }

    protected override async Task<Outcome> ReconcileAsync(string key, CancellationToken cancellationToken)
    {
        var pv = _c.Cluster.Volumes.Get(key);
        if (pv?.Spec?.Csi is null || pv.Spec.Csi.Driver != _c.Options.DriverName
            || Cluster.Annotation(pv.Metadata, Names.ProvisionedByAnnotation) != _c.Options.DriverName)
        {
            return Outcome.Done;
        }

        bool deleteData = pv.Spec.PersistentVolumeReclaimPolicy == "Delete";
        if (pv.Metadata.DeletionTimestamp is not null)
        {
            if (!Cluster.HasFinalizer(pv.Metadata, Names.PvDeletionFinalizer))
            {
                return Outcome.Done;
            }

            if (deleteData)
            {
                await DeleteVolumeAsync(pv, cancellationToken).ConfigureAwait(false);
            }

            if (Cluster.FinalizerPatch(pv.Metadata, Names.PvDeletionFinalizer, false) is { } patch)
            {
                await _c.Cluster.PatchVolumeAsync(pv, patch, status: false, cancellationToken).ConfigureAwait(false);
            }

            return Outcome.Done;
        }

        if (pv.Status?.Phase == "Released" && deleteData)
        {
            await DeleteVolumeAsync(pv, cancellationToken).ConfigureAwait(false);
            await _c.Cluster.DeleteVolumeAsync(pv, cancellationToken).ConfigureAwait(false);
        }

        return Outcome.Done;
    }

    private async Task DeleteVolumeAsync(V1PersistentVolume pv, CancellationToken ct)
    {
        try
        {
            await _c.Csi.DeleteVolumeAsync(new DeleteVolumeRequest { VolumeId = pv.Spec.Csi.VolumeHandle }, _c.CsiCall(ct)).ConfigureAwait(false);
        }
        catch (RpcException ex) when (!ct.IsCancellationRequested)
        {
            string message = $"failed to delete volume {pv.Spec.Csi.VolumeHandle}: {ControllerContext.Describe(ex)}";
            await _c.Events.RecordAsync(pv, EventRecorder.Warning, "VolumeFailedDelete", message, ct).ConfigureAwait(false);
            throw new RetryLaterException(message, ex);
        }
    }
}
