using System.Reflection;

namespace Dolly.Csi;

/// <summary>Settings of the CSI driver's gRPC endpoint.</summary>
public sealed record CsiServerOptions
{
    /// <summary>The name every Dolly CSI object (CSIDriver, StorageClass provisioner) refers to.</summary>
    public const string DefaultDriverName = "csi.dolly.io";

    /// <summary>The unix socket to listen on; created with mode 0600, replaced if a stale one is left over.</summary>
    public required string SocketPath { get; init; }

    /// <summary>The driver name reported by GetPluginInfo.</summary>
    public string DriverName { get; init; } = DefaultDriverName;

    /// <summary>The version reported by GetPluginInfo; defaults to this assembly's informational version.</summary>
    public string VendorVersion { get; init; } =
        typeof(CsiServerOptions).Assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion ?? "0.0.0";

    /// <summary>The size of a volume whose CreateVolume gives no capacity and no source: 1 GiB.</summary>
    public long DefaultVolumeSize { get; init; } = 1L << 30;
}
