using System.Globalization;

namespace Dolly.Storage;

/// <summary>Validation of device names and sizes.</summary>
public static class Names
{
    /// <summary>The longest name allowed (a Kubernetes DNS subdomain).</summary>
    public const int MaxLength = 253;

    /// <summary>
    /// Checks that <paramref name="name"/> is a DNS-1123 subdomain, as Kubernetes object names are:
    /// lower-case letters, digits, '-' and '.', starting and ending with a letter or digit, at most 253 characters.
    /// Such a name can never be a path ('/', '..') or carry control characters.
    /// </summary>
    public static StorageError? Validate(string? name, string what = "name")
    {
        if (string.IsNullOrEmpty(name))
        {
            return new StorageError(StorageErrorCode.InvalidName, $"{what} must not be empty");
        }

        if (name.Length > MaxLength)
        {
            return new StorageError(StorageErrorCode.InvalidName, $"{what} '{Printable(name[..40])}...' is {name.Length} characters long; at most {MaxLength} are allowed");
        }

        foreach (var label in name.Split('.'))
        {
            if (label.Length == 0 || !IsAlnum(label[0]) || !IsAlnum(label[^1]) || label.Any(c => !IsAlnum(c) && c != '-'))
            {
                return new StorageError(
                    StorageErrorCode.InvalidName,
                    $"{what} '{Printable(name)}' is not valid: use lower-case letters, digits, '-' and '.', starting and ending with a letter or digit (a Kubernetes DNS subdomain name)");
            }
        }

        return null;
    }

    private static bool IsAlnum(char c) => c is (>= 'a' and <= 'z') or (>= '0' and <= '9');

    private static string Printable(string s) =>
        string.Concat(s.Select(c => char.IsControl(c) ? $"\\u{(int)c:x4}" : c.ToString()));
}

/// <summary>Parsing and printing of byte sizes ("10Gi", "512M", "4096").</summary>
public static class ByteSize
{
    /// <summary>The largest volume: 64 TiB.</summary>
    public const long MaxVolumeSize = 64L << 40;

    private static readonly (string Suffix, long Factor)[] Suffixes =
    [
        ("KiB", 1L << 10), ("MiB", 1L << 20), ("GiB", 1L << 30), ("TiB", 1L << 40), ("PiB", 1L << 50),
        ("Ki", 1L << 10), ("Mi", 1L << 20), ("Gi", 1L << 30), ("Ti", 1L << 40), ("Pi", 1L << 50),
        ("KB", 1000L), ("MB", 1000_000L), ("GB", 1000_000_000L), ("TB", 1000_000_000_000L),
        ("k", 1000L), ("K", 1000L), ("M", 1000_000L), ("G", 1000_000_000L), ("T", 1000_000_000_000L), ("P", 1000_000_000_000_000L),
        ("B", 1L),
    ];

    /// <summary>
    /// Parses a size: a whole number of bytes, optionally with a Kubernetes quantity suffix
    /// (Ki, Mi, Gi, Ti, Pi or k, M, G, T, P) or KiB/MiB/GiB/TiB/KB/MB/GB/TB.
    /// </summary>
    public static bool TryParse(string? text, out long bytes, out string error)
    {
        bytes = 0;
        error = string.Empty;
        var s = text?.Trim() ?? string.Empty;
        if (s.Length == 0)
        {
            error = "size is empty";
            return false;
        }

        long factor = 1;
        foreach (var (suffix, f) in Suffixes)
        {
            if (s.EndsWith(suffix, StringComparison.Ordinal))
            {
                factor = f;
                s = s[..^suffix.Length];
                break;
            }
        }

        if (s.Length == 0 || !s.All(char.IsAsciiDigit) || !long.TryParse(s, NumberStyles.None, CultureInfo.InvariantCulture, out var n))
        {
            error = $"size '{text}' is not a number of bytes with an optional unit such as Ki, Mi, Gi, Ti (e.g. 10Gi)";
            return false;
        }

        if (n > long.MaxValue / factor)
        {
            error = $"size '{text}' is too large";
            return false;
        }

        bytes = n * factor;
        return true;
    }

    /// <summary>Formats bytes with a binary unit, e.g. "1.5 GiB".</summary>
    public static string Format(long bytes)
    {
        string[] units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
        double v = bytes;
        int u = 0;
        while (Math.Abs(v) >= 1024 && u < units.Length - 1)
        {
            v /= 1024;
            u++;
        }

        return u == 0 ? $"{bytes} B" : string.Create(CultureInfo.InvariantCulture, $"{v:0.##} {units[u]}");
    }
}
