using Dolly.Csi.V1;
using Grpc.Core;

namespace Dolly.Csi;

/// <summary>
/// The CSI Identity service: who the driver is and what it offers. A node-only server (no pool) offers
/// none of the plugin-wide services: the Node service needs no capability to be advertised.
/// </summary>
internal sealed class IdentityService(CsiServerOptions options, bool servesController) : Identity.IdentityBase
{
    public override Task<GetPluginInfoResponse> GetPluginInfo(GetPluginInfoRequest request, ServerCallContext context) =>
        Task.FromResult(new GetPluginInfoResponse { Name = options.DriverName, VendorVersion = options.VendorVersion });

    public override Task<GetPluginCapabilitiesResponse> GetPluginCapabilities(GetPluginCapabilitiesRequest request, ServerCallContext context)
    {
        // Volumes are reachable from every node (NBD over the network), so no accessibility constraints.
        var response = new GetPluginCapabilitiesResponse();
        if (!servesController)
        {
            return Task.FromResult(response);
        }

        response.Capabilities.Add(new PluginCapability
        {
            Service = new PluginCapability.Types.Service { Type = PluginCapability.Types.Service.Types.Type.ControllerService },
        });
        response.Capabilities.Add(new PluginCapability
        {
            Service = new PluginCapability.Types.Service { Type = PluginCapability.Types.Service.Types.Type.GroupControllerService },
        });
        response.Capabilities.Add(new PluginCapability
        {
            Service = new PluginCapability.Types.Service { Type = PluginCapability.Types.Service.Types.Type.SnapshotMetadataService },
        });

        // Volumes grow while attached only in the pool; an attachment keeps the size NBD reported when it
        // opened, so the file system grows at the next stage: offline expansion.
        response.Capabilities.Add(new PluginCapability
        {
            VolumeExpansion = new PluginCapability.Types.VolumeExpansion { Type = PluginCapability.Types.VolumeExpansion.Types.Type.Offline },
        });
        return Task.FromResult(response);
    }

    // The pool (when there is one) is open before the server starts listening, so a driver that answers is
    // ready; a node-only server reaches its NBD server per attach and reports that there, not here.
    public override Task<ProbeResponse> Probe(ProbeRequest request, ServerCallContext context) =>
        Task.FromResult(new ProbeResponse { Ready = true });
}
