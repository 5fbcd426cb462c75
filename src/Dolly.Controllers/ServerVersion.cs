using System.Globalization;
using k8s.Models;

namespace Dolly.Controllers;

/// <summary>
/// What Dolly can tell about a Kubernetes API server from its <c>/version</c>: whether it drops the CRD
/// validation rules (<c>x-kubernetes-validations</c>) that Dolly's CRDs carry. Kubernetes enforces them from
/// 1.25 (the CRDValidationExpressions feature, beta and on by default there); 1.24 and older accept the CRDs and
/// silently drop the rules, so the server no longer refuses a VolumeSnapshot with two sources or a changed
/// source, and only the controllers' own checks remain.
/// </summary>
public static class ServerVersion
{
    /// <summary>The first Kubernetes minor version (1.x) that enforces CRD validation rules by default.</summary>
    public const int FirstEnforcingValidationRules = 25;

    /// <summary>The server's (major, minor), or null when its answer does not say (a distribution's own scheme).</summary>
    public static (int Major, int Minor)? Parse(VersionInfo? version)
    {
        // Distributions append to the minor version ("24+" on GKE and EKS); the leading digits are the version.
        if (version is null || Leading(version.Major) is not { } major || Leading(version.Minor) is not { } minor)
        {
            return null;
        }

        return (major, minor);
    }

    /// <summary>A warning for a server that drops CRD validation rules, or null when it enforces them or cannot be told.</summary>
    public static string? ValidationRulesWarning(VersionInfo? version)
    {
        if (Parse(version) is not { } v || v.Major != 1 || v.Minor >= FirstEnforcingValidationRules)
        {
            return null;
        }

        return $"the API server is Kubernetes {version!.GitVersion ?? $"{v.Major}.{v.Minor}"}: it enforces CRD validation rules (x-kubernetes-validations) only from 1.{FirstEnforcingValidationRules} " +
            "and drops them silently before, so snapshot objects that break them (two sources, a changed source or handle) are stored as written. " +
            $"Use Kubernetes 1.{FirstEnforcingValidationRules} or later (deploy/kubernetes/README.md)";
    }

    private static int? Leading(string? text)
    {
        if (string.IsNullOrEmpty(text))
        {
            return null;
        }

        int digits = 0;
        while (digits < text.Length && char.IsAsciiDigit(text[digits]))
        {
            digits++;
        }

        return digits > 0 && int.TryParse(text.AsSpan(0, digits), NumberStyles.None, CultureInfo.InvariantCulture, out int value) ? value : null;
    }
}
