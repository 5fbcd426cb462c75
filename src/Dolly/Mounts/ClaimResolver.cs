using System.Net;
using Dolly.Csi.V1;
using k8s;
using k8s.Autorest;
using k8s.Exceptions;
using k8s.Models;
using AccessModeKind = Dolly.Csi.V1.VolumeCapability.Types.AccessMode.Types.Mode;

namespace Dolly.Mounts;

/// <summary>
/// The CSI view of one PersistentVolumeClaim, as kubelet builds it from the claim and its PersistentVolume:
/// the volume id, its context, and the capability to stage and publish it with.
/// </summary>
internal sealed record ClaimVolume(
    string Namespace,
    string Claim,
    string PersistentVolume,
    string VolumeId,
    Dictionary<string, string> VolumeContext,
    bool Block,
    string? FsType,
    IReadOnlyList<string> MountFlags,
    string AccessMode,
    bool ClaimIsReadOnlyMany,
    bool PersistentVolumeReadOnly,
    bool ResizePending = false,
    string? VolumeCapacity = null)
{
    /// <summary>The CSI capability: block, or mount with the file system type and mount options; and the access mode.</summary>
    public VolumeCapability Capability()
    {
        var capability = new VolumeCapability
        {
            AccessMode = new VolumeCapability.Types.AccessMode { Mode = CsiAccessMode(AccessMode) },
        };
        if (Block)
        {
            capability.Block = new VolumeCapability.Types.BlockVolume();
        }
        else
        {
            capability.Mount = new VolumeCapability.Types.MountVolume { FsType = FsType ?? string.Empty };
            capability.Mount.MountFlags.Add(MountFlags);
        }

        return capability;
    }

    /// <summary>The CSI access mode of a Kubernetes one (kubelet's mapping).</summary>
    public static AccessModeKind CsiAccessMode(string mode) => mode switch
    {
        "ReadWriteOnce" => AccessModeKind.SingleNodeWriter,
        "ReadWriteOncePod" => AccessModeKind.SingleNodeSingleWriter,
        "ReadOnlyMany" => AccessModeKind.MultiNodeReaderOnly,
        "ReadWriteMany" => AccessModeKind.MultiNodeMultiWriter,
        _ => AccessModeKind.Unknown,
    };
}

/// <summary>Reads a claim and its volume from the API server of a running <c>dolly up</c>.</summary>
internal static class ClaimResolver
{
    /// <summary>The driver whose volumes <c>dolly mount</c> can attach.</summary>
    public const string DriverName = Csi.CsiServerOptions.DefaultDriverName;

    /// <summary>Splits <c>NAMESPACE/PVC</c>, checking both halves are Kubernetes object names.</summary>
    public static (string Namespace, string Claim) Parse(string text)
    {
        string[] parts = text.Split('/');
        if (parts.Length != 2 || parts[0].Length == 0 || parts[1].Length == 0)
        {
            throw new CliFailureException(ExitCodes.InvalidName, $"'{text}' is not NAMESPACE/PVC (for example default/data)");
        }

        if (!IsDnsLabel(parts[0]))
        {
            throw new CliFailureException(ExitCodes.InvalidName, $"'{parts[0]}' is not a namespace name: lower-case letters, digits and '-', starting and ending with a letter or digit, at most 63 characters");
        }

        if (!IsDnsSubdomain(parts[1]))
        {
            throw new CliFailureException(ExitCodes.InvalidName, $"'{parts[1]}' is not a PersistentVolumeClaim name: lower-case letters, digits, '-' and '.', starting and ending with a letter or digit, at most 253 characters");
        }

        return (parts[0], parts[1]);
    }

    /// <summary>A client for the API server the kubeconfig names.</summary>
    public static Kubernetes Connect(string kubeconfig)
    {
        if (!File.Exists(kubeconfig))
        {
            throw new CliFailureException(ExitCodes.NotRunning, $"no kubeconfig at {kubeconfig}: is `dolly up` running? (it writes one there; --kubeconfig names another)");
        }

        try
        {
            return new Kubernetes(KubernetesClientConfiguration.BuildConfigFromConfigFile(kubeconfig));
        }
        catch (KubeConfigException ex)
        {
            throw new CliFailureException(ExitCodes.InvalidArgument, $"kubeconfig {kubeconfig} is not usable: {ex.Message}");
        }
    }

    /// <summary>The claim's volume, checked the way kubelet checks it before attaching anything.</summary>
    public static async Task<ClaimVolume> ResolveAsync(Kubernetes client, string ns, string name, CancellationToken ct)
    {
        string claimName = $"{ns}/{name}";
        var pvc = await ReadAsync(client, $"PersistentVolumeClaim {claimName}", c => client.CoreV1.ReadNamespacedPersistentVolumeClaimAsync(name, ns, cancellationToken: c), ct).ConfigureAwait(false);
        string phase = pvc.Status?.Phase ?? "Pending";
        string? volumeName = pvc.Spec?.VolumeName;
        if (phase != "Bound")
        {
            throw new CliFailureException(ExitCodes.NotBound, $"PersistentVolumeClaim {claimName} is {phase}, not Bound{(phase == "Pending" ? ": no volume has been provisioned or bound to it yet" : string.Empty)}");
        }

        if (string.IsNullOrEmpty(volumeName))
        {
            throw new CliFailureException(ExitCodes.NotBound, $"PersistentVolumeClaim {claimName} is Bound but names no PersistentVolume (spec.volumeName is empty)");
        }

        var pv = await ReadAsync(client, $"PersistentVolume {volumeName} (of PersistentVolumeClaim {claimName})", c => client.CoreV1.ReadPersistentVolumeAsync(volumeName, cancellationToken: c), ct).ConfigureAwait(false);
        var spec = pv.Spec ?? new V1PersistentVolumeSpec();
        if (spec.ClaimRef is { } claimRef && (claimRef.NamespaceProperty != ns || claimRef.Name != name))
        {
            throw new CliFailureException(ExitCodes.InvalidArgument, $"PersistentVolume {volumeName} is bound to {claimRef.NamespaceProperty}/{claimRef.Name}, not to {claimName}");
        }

        if (spec.Csi is not { } csi)
        {
            throw new CliFailureException(ExitCodes.InvalidArgument, $"PersistentVolume {volumeName} (of {claimName}) is not a CSI volume; dolly mount attaches volumes of CSI driver {DriverName} only");
        }

        if (csi.Driver != DriverName)
        {
            throw new CliFailureException(ExitCodes.InvalidArgument, $"PersistentVolume {volumeName} (of {claimName}) belongs to CSI driver {csi.Driver}, not {DriverName}");
        }

        if (string.IsNullOrEmpty(csi.VolumeHandle))
        {
            throw new CliFailureException(ExitCodes.InvalidArgument, $"PersistentVolume {volumeName} (of {claimName}) has no spec.csi.volumeHandle");
        }

        string volumeMode = spec.VolumeMode ?? "Filesystem";
        string claimMode = pvc.Spec?.VolumeMode ?? "Filesystem";
        if (volumeMode is not ("Filesystem" or "Block"))
        {
            throw new CliFailureException(ExitCodes.InvalidArgument, $"PersistentVolume {volumeName} has volumeMode {volumeMode}; expected Filesystem or Block");
        }

        if (claimMode != volumeMode)
        {
            throw new CliFailureException(ExitCodes.InvalidArgument, $"PersistentVolumeClaim {claimName} asks for volumeMode {claimMode} but PersistentVolume {volumeName} is {volumeMode}");
        }

        // kubelet publishes with the volume's first access mode.
        string accessMode = spec.AccessModes is { Count: > 0 } modes ? modes[0] : "ReadWriteOnce";
        if (ClaimVolume.CsiAccessMode(accessMode) == AccessModeKind.Unknown)
        {
            throw new CliFailureException(ExitCodes.InvalidArgument, $"PersistentVolume {volumeName} has access mode '{accessMode}'; expected ReadWriteOnce, ReadWriteOncePod, ReadOnlyMany or ReadWriteMany");
        }

        bool block = volumeMode == "Block";
        var claimModes = pvc.Spec?.AccessModes ?? [];
        return new ClaimVolume(
            ns,
            name,
            volumeName,
            csi.VolumeHandle,
            csi.VolumeAttributes is { } attributes ? new Dictionary<string, string>(attributes, StringComparer.Ordinal) : new Dictionary<string, string>(StringComparer.Ordinal),
            block,
            block ? null : (string.IsNullOrEmpty(csi.FsType) ? "ext4" : csi.FsType),
            block ? [] : [.. spec.MountOptions ?? []],
            accessMode,
            claimModes.Count == 1 && claimModes[0] == "ReadOnlyMany",
            csi.ReadOnlyProperty == true,
            pvc.Status?.Conditions?.Any(c => c.Type == "FileSystemResizePending" && c.Status == "True") == true,
            spec.Capacity is { } capacity && capacity.TryGetValue("storage", out var size) ? size.ToString() : null);
    }

    private static async Task<T> ReadAsync<T>(Kubernetes client, string what, Func<CancellationToken, Task<T>> read, CancellationToken ct)
    {
        try
        {
            return await read(ct).ConfigureAwait(false);
        }
        catch (HttpOperationException ex) when (ex.Response.StatusCode == HttpStatusCode.NotFound)
        {
            throw new CliFailureException(ExitCodes.NotFound, $"{what} not found");
        }
        catch (HttpOperationException ex) when (ex.Response.StatusCode is HttpStatusCode.Unauthorized or HttpStatusCode.Forbidden)
        {
            throw new CliFailureException(ExitCodes.InvalidArgument, $"the API server at {client.BaseUri} refused to show {what} ({(int)ex.Response.StatusCode} {ex.Response.StatusCode}): check the kubeconfig");
        }
        catch (HttpOperationException ex)
        {
            throw new CliFailureException(ExitCodes.IoError, $"reading {what} failed ({(int)ex.Response.StatusCode} {ex.Response.StatusCode}): {ex.Response.Content}");
        }
        catch (HttpRequestException ex)
        {
            throw new CliFailureException(ExitCodes.NotRunning, $"cannot reach the API server at {client.BaseUri} ({ex.Message}): is `dolly up` running?");
        }
    }

    private static bool IsDnsLabel(string s) =>
        s.Length <= 63 && IsAlphanumeric(s[0]) && IsAlphanumeric(s[^1]) && s.All(c => IsAlphanumeric(c) || c == '-');

    private static bool IsDnsSubdomain(string s) =>
        s.Length <= 253 && s.Split('.').All(label => label.Length > 0 && IsDnsLabel(label));

    private static bool IsAlphanumeric(char c) => c is (>= 'a' and <= 'z') or (>= '0' and <= '9');
}
