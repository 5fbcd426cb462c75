namespace Dolly.V1;

/// <summary>
/// Repository snapshot handles: <c>dolly-repo.&lt;repository id&gt;.&lt;manifest id&gt;</c>, both 32 lowercase hex
/// digits. Self-describing (any cluster can tell which repository and which manifest it names), and a valid
/// pool name, so a restored copy lives in the pool under the handle itself and the CSI calls that take a
/// snapshot id find it with no mapping to keep.
/// </summary>
public static class RepositoryHandles
{
    /// <summary>What every repository handle starts with.</summary>
    public const string Prefix = "dolly-repo.";

    private const int IdLength = 32;

    /// <summary>The handle of manifest <paramref name="manifestId"/> of repository <paramref name="repositoryId"/>.</summary>
    public static string Format(string repositoryId, string manifestId)
    {
        if (!IsId(repositoryId) || !IsId(manifestId))
        {
            throw new ArgumentException($"'{repositoryId}' and '{manifestId}' must both be 32 lowercase hex digits");
        }

        return Prefix + repositoryId + "." + manifestId;
    }

    /// <summary>Whether <paramref name="handle"/> looks like a repository handle (its prefix), well-formed or not.</summary>
    public static bool HasPrefix(string? handle) => handle is not null && handle.StartsWith(Prefix, StringComparison.Ordinal);

    /// <summary>The two ids of a well-formed handle; false (and a reason) otherwise.</summary>
    public static bool TryParse(string? handle, out string repositoryId, out string manifestId, out string problem)
    {
        repositoryId = manifestId = problem = string.Empty;
        if (!HasPrefix(handle))
        {
            problem = $"'{handle}' is not a repository snapshot handle (it does not start with '{Prefix}')";
            return false;
        }

        var parts = handle![Prefix.Length..].Split('.');
        if (parts.Length != 2 || !IsId(parts[0]) || !IsId(parts[1]))
        {
            problem = $"'{handle}' is not a repository snapshot handle ({Prefix}<repository id>.<manifest id>, both 32 lowercase hex digits)";
            return false;
        }

        (repositoryId, manifestId) = (parts[0], parts[1]);
        return true;
    }

    private static bool IsId(string? s) => s is { Length: IdLength } && s.All(char.IsAsciiHexDigitLower);
}
