using System.Globalization;

namespace Dolly.Csi;

/// <summary>
/// List pagination. A token is the position of the next entry in the name-ordered list: entries deleted
/// between pages shift later ones back, which can skip an entry but never repeats one or fails the walk.
/// </summary>
internal static class Paging
{
    public static (IReadOnlyList<T> Page, string NextToken) Page<T>(IReadOnlyList<T> items, int maxEntries, string startingToken, string rpc)
    {
        if (maxEntries < 0)
        {
            throw CsiStatus.InvalidArgument($"{rpc}: max_entries must not be negative ({maxEntries})");
        }

        int start = 0;
        if (!string.IsNullOrEmpty(startingToken)
            && (!int.TryParse(startingToken, NumberStyles.None, CultureInfo.InvariantCulture, out start) || start > items.Count))
        {
            throw CsiStatus.Fail(Grpc.Core.StatusCode.Aborted, $"{rpc}: starting_token '{startingToken}' is not one this driver issued, or the list has shrunk past it");
        }

        int count = maxEntries == 0 ? items.Count - start : Math.Min(maxEntries, items.Count - start);
        int end = start + count;
        return (items.Skip(start).Take(count).ToList(), end < items.Count ? end.ToString(CultureInfo.InvariantCulture) : "");
    }
}
