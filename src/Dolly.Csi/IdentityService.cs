using Dolly.Csi.V1;
using Grpc.Core;

namespace Dolly.Csi;

/// <summary>The CSI Identity service: who the driver is and what it offers.</summary>
internal sealed class IdentityService(CsiServerOptions options) : Identity.IdentityBase
{
    public override Task<GetPluginInfoResponse> GetPluginInfo(GetPluginInfoRequest request, ServerCallContext context) =>
        Task.FromResult(new GetPluginInfoResponse { Name = options.DriverName, VendorVersion = options.VendorVersion });

    public override Task<GetPluginCapabilitiesResponse> GetPluginCapabilities(GetPluginCapabilitiesRequest request, ServerCallContext context)
    {
        // Volumes are reachable from every node (NBD over the network), so no accessibility constraints.
        var response = new GetPluginCapabilitiesResponse();
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
        return Task.FromResult(response);
    }

    // The pool is open before the server starts listening, so a driver that answers is ready.
    public override Task<ProbeResponse> Probe(ProbeRequest request, ServerCallContext context) =>
        Task.FromResult(new ProbeResponse { Ready = true });
}
