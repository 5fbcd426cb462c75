using System.Buffers;
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

    private static readonly SearchValues<char> HexDigits = SearchValues.Create("0123456789abcdef");

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

        string hash = Hash(csiName);
        return prefix.Length == 0 ? hash : $"{prefix}-{hash}";
    }

    /// <summary>
    /// The pool name of the member snapshot of volume <paramref name="volumeId"/> in the group snapshot
    /// <paramref name="groupId"/> (a pool name): the group name, cut to fit, followed by a short hash of the
    /// volume id. Deterministic, so a retried group create finds the members it made.
    /// </summary>
    public static string ToGroupMemberName(string groupId, string volumeId)
    {
        ArgumentException.ThrowIfNullOrEmpty(groupId);
        ArgumentException.ThrowIfNullOrEmpty(volumeId);
        return $"{GroupMemberPrefix(groupId)}-{Hash(volumeId)}";
    }

    /// <summary>
    /// Whether <paramref name="name"/> has the shape of a member name of group <paramref name="groupId"/>:
    /// the group's prefix, a '-', and a hash; says nothing about which volume it was taken of.
    /// </summary>
    public static bool IsGroupMemberName(string groupId, string name)
    {
        ArgumentException.ThrowIfNullOrEmpty(groupId);
        ArgumentNullException.ThrowIfNull(name);
        string prefix = GroupMemberPrefix(groupId);
        return name.Length == prefix.Length + 1 + HashLength
            && name.StartsWith(prefix, StringComparison.Ordinal)
            && name[prefix.Length] == '-'
            && name.AsSpan(prefix.Length + 1).IndexOfAnyExcept(HexDigits) < 0;
    }

    private static string GroupMemberPrefix(string groupId)
    {
        int room = Names.MaxLength - HashLength - 1;
        return groupId.Length > room ? groupId[..room].TrimEnd('-', '.') : groupId;
    }

    private static string Hash(string text) => Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(text)))[..HashLength];
}
