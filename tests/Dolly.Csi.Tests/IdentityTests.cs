using Dolly.Csi.V1;

namespace Dolly.Csi.Tests;

public sealed class IdentityTests : CsiTestBase
{
    [Fact]
    public async Task GetPluginInfo_ReturnsDriverNameAndVersion()
    {
        var info = await Identity.GetPluginInfoAsync(new GetPluginInfoRequest(), cancellationToken: Token);
        Assert.Equal("csi.dolly.io", info.Name);
        Assert.Equal("test", info.VendorVersion);
    }

    [Fact]
    public async Task GetPluginCapabilities_OffersControllerGroupControllerAndSnapshotMetadataServices()
    {
        var caps = await Identity.GetPluginCapabilitiesAsync(new GetPluginCapabilitiesRequest(), cancellationToken: Token);
        Assert.Contains(caps.Capabilities, c => c.Service?.Type == PluginCapability.Types.Service.Types.Type.ControllerService);
        Assert.Contains(caps.Capabilities, c => c.Service?.Type == PluginCapability.Types.Service.Types.Type.GroupControllerService);
        Assert.Contains(caps.Capabilities, c => c.Service?.Type == PluginCapability.Types.Service.Types.Type.SnapshotMetadataService);
        Assert.DoesNotContain(caps.Capabilities, c => c.Service?.Type == PluginCapability.Types.Service.Types.Type.VolumeAccessibilityConstraints);
        Assert.Contains(caps.Capabilities, c => c.VolumeExpansion?.Type == PluginCapability.Types.VolumeExpansion.Types.Type.Offline);
    }

    [Fact]
    public async Task Probe_ReportsReady()
    {
        var probe = await Identity.ProbeAsync(new ProbeRequest(), cancellationToken: Token);
        Assert.True(probe.Ready);
    }
}
