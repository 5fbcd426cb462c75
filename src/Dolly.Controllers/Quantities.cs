using System.Globalization;
using k8s.Models;

namespace Dolly.Controllers;

/// <summary>Byte counts as Kubernetes quantities and back.</summary>
internal static class Quantities
{
    private static readonly string[] BinarySuffixes = ["Ki", "Mi", "Gi", "Ti", "Pi", "Ei"];

    /// <summary>The canonical quantity for a byte count: the largest binary suffix that divides it exactly (1073741824 is "1Gi").</summary>
    public static ResourceQuantity FromBytes(long bytes)
    {
        string text = bytes.ToString(CultureInfo.InvariantCulture);
        long value = bytes;
        for (int i = 0; value != 0 && value % 1024 == 0 && i < BinarySuffixes.Length; i++)
        {
            value /= 1024;
            text = value.ToString(CultureInfo.InvariantCulture) + BinarySuffixes[i];
        }

        return new ResourceQuantity(text);
    }

    /// <summary>The byte count of a quantity, rounded up to a whole byte; null when absent.</summary>
    public static long? ToBytes(ResourceQuantity? quantity)
    {
        if (quantity is null)
        {
            return null;
        }

        decimal d = quantity.ToDecimal();
        return (long)Math.Ceiling(d);
    }

    /// <summary>The storage request of a claim, or null.</summary>
    public static long? Request(V1PersistentVolumeClaim claim) =>
        claim.Spec?.Resources?.Requests is { } r && r.TryGetValue("storage", out var q) ? ToBytes(q) : null;

    /// <summary>The capacity of a volume, or null.</summary>
    public static long? Capacity(V1PersistentVolume volume) =>
        volume.Spec?.Capacity is { } c && c.TryGetValue("storage", out var q) ? ToBytes(q) : null;
}
