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

    /// <summary>Where the calls served are timed; null records nothing.</summary>
    public CsiMetrics? Metrics { get; init; }

    /// <summary>The version reported by GetPluginInfo; defaults to this assembly's informational version.</summary>
    public string VendorVersion { get; init; } =
        typeof(CsiServerOptions).Assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion ?? "0.0.0";

    /// <summary>The size of a volume whose CreateVolume gives no capacity and no source: 1 GiB.</summary>
    public long DefaultVolumeSize { get; init; } = 1L << 30;

    /// <summary>
    /// This node's id, reported by NodeGetInfo. The Node service is served only when this and an NBD server
    /// (<see cref="Nbd"/> or <see cref="NbdSocketPath"/>) are both set.
    /// </summary>
    public string? NodeId { get; init; }

    /// <summary>The unix socket of the NBD server exporting the pool's volumes; shorthand for <see cref="Nbd"/> = <see cref="NbdEndpoint.Unix"/>.</summary>
    public string? NbdSocketPath { get; init; }

    /// <summary>
    /// The NBD server the Node service attaches volumes through: a unix socket, or TCP with TLS when the
    /// pool is on another machine (a node-only server). Takes precedence over <see cref="NbdSocketPath"/>.
    /// </summary>
    public NbdEndpoint? Nbd { get; init; }

    /// <summary>The NBD server the Node service uses, from <see cref="Nbd"/> or <see cref="NbdSocketPath"/>; null when none is set.</summary>
    public NbdEndpoint? NbdServer => Nbd ?? (string.IsNullOrEmpty(NbdSocketPath) ? null : NbdEndpoint.Unix(NbdSocketPath));

    /// <summary>
    /// Where the Node service keeps its per-volume records and nbdfuse mount points; defaults to
    /// <c>node</c> next to <see cref="SocketPath"/>.
    /// </summary>
    public string? NodeStateDirectory { get; init; }

    /// <summary>
    /// How the Node service attaches volumes: <see cref="NodeAttachMode.Auto"/> (the default) picks the kernel's
    /// NBD driver where <c>/dev/nbd0</c> and <c>nbd-client</c> exist, nbdfuse and a loop device elsewhere.
    /// </summary>
    public NodeAttachMode NodeAttach { get; init; } = NodeAttachMode.Auto;

    /// <summary>Where the kernel NBD path looks for devices, sysfs and nbd-client; tests point it at a fake tree.</summary>
    internal KernelNbd KernelNbd { get; init; } = KernelNbd.System;

    /// <summary>Null when this machine can attach through the kernel NBD driver; otherwise what it lacks (the device, nbd-client), in words for an operator.</summary>
    public string? KernelNbdMissing() => KernelNbd.Missing();

    /// <summary>The clock of freeze deadlines (a fake one in tests).</summary>
    internal TimeProvider TimeProvider { get; init; } = TimeProvider.System;

    /// <summary>Whether the Node service is configured.</summary>
    public bool ServesNode => !string.IsNullOrEmpty(NodeId) && NbdServer is not null;

    /// <summary>
    /// Who holds which volume: the NBD server's attachment records, shared with it. A content request
    /// (dolly.v1.VolumeContentService) is applied only while nobody holds the volume. Null when this process serves no
    /// NBD: then nobody can hold a volume through it.
    /// </summary>
    public Dolly.Nbd.ExportAttachments? Attachments { get; init; }

    /// <summary>
    /// Where snapshot repository uploads keep their journals (resuming after a crash) and the record of what was
    /// uploaded (the parent of the next incremental upload); defaults to <c>repository</c> next to <see cref="SocketPath"/>.
    /// </summary>
    public string? RepositoryStateDirectory { get; init; }
}
