using System.Security.Cryptography;
using System.Text;
using Dolly.Storage;

namespace Dolly.Csi;

/// <summary>
/// Maps CSI object names onto pool names. Volume and snapshot ids are the pool names themselves, so a
/// restart needs no other state to find them again.
/// </summary>
public static class CsiNames
{
    // 10 hex digits (40 bits) keep accidental collisions between two derived names negligible while
    // leaving most of the 253 characters for the readable part.
    private const int HashLength = 10;

    /// <summary>
    /// The pool name for a CSI name: the name itself when it is already a DNS-1123 subdomain (what the
    /// Kubernetes sidecars send: pvc-&lt;uuid&gt;, snapshot-&lt;uuid&gt;), otherwise a stable derived name:
    /// lower-cased, other characters replaced by '-', followed by a short hash of the original name so two
    /// names that clean up alike stay apart.
    /// </summary>
    public static string ToEngineName(string csiName)
    {
        ArgumentException.ThrowIfNullOrEmpty(csiName);
        if (Names.Validate(csiName) is null)
        {
            return csiName;
        }

        var cleaned = new StringBuilder(csiName.Length);
        foreach (char c in csiName.ToLowerInvariant())
        {
            cleaned.Append(c is (>= 'a' and <= 'z') or (>= '0' and <= '9') ? c : '-');
        }

        string prefix = cleaned.ToString().Trim('-');
        int room = Names.MaxLength - HashLength - 1;
        if (prefix.Length > room)
        {
            prefix = prefix[..room].TrimEnd('-');
        }

        string hash = Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(csiName)))[..HashLength];
        return prefix.Length == 0 ? hash : $"{prefix}-{hash}";
    }
}
