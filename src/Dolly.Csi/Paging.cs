using Dolly.Storage;

namespace Dolly.Csi;

/// <summary>
/// List pagination over name-ordered lists. A token carries the last name of the page it ends, so the next
/// page starts after that name whatever was created or deleted in between: nothing is repeated, and an
/// entry is only missed if it was deleted. The marker makes tokens that this driver did not issue (any
/// pool name starts with a letter or digit) fail with ABORTED, as CSI asks.
/// </summary>
internal static class Paging
{
    private const char Marker = '~';

    public static (IReadOnlyList<DeviceInfo> Page, string NextToken) Page(IReadOnlyList<DeviceInfo> items, int maxEntries, string startingToken, string rpc)
    {
        if (maxEntries < 0)
        {
            throw CsiStatus.InvalidArgument($"{rpc}: max_entries must not be negative ({maxEntries})");
        }

        int start = 0;
        if (!string.IsNullOrEmpty(startingToken))
        {
            if (startingToken[0] != Marker || Names.Validate(startingToken[1..]) is not null)
            {
                throw CsiStatus.Fail(Grpc.Core.StatusCode.Aborted, $"{rpc}: starting_token '{startingToken}' is not one this driver issued");
            }

            string after = startingToken[1..];
            while (start < items.Count && string.CompareOrdinal(items[start].Name, after) <= 0)
            {
                start++;
            }
        }

        int count = maxEntries == 0 ? items.Count - start : Math.Min(maxEntries, items.Count - start);
        int end = start + count;
        var page = items.Skip(start).Take(count).ToList();
        return (page, end < items.Count ? Marker + items[end - 1].Name : "");
    }
}
