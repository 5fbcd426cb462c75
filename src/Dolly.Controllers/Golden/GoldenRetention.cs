namespace Dolly.Controllers.Golden;

/// <summary>What retention decided for one revision.</summary>
internal readonly record struct RevisionVerdict(int Revision, bool Retire, IReadOnlyList<string> HeldBy);

/// <summary>
/// Which revisions a GoldenSnapshot keeps: the newest <c>revisionHistoryLimit</c> cut revisions (the current one
/// among them) and one still being cut; an older one is retired only when nothing holds it (a claim still restoring
/// from it, a pinned snapshot a user keeps, a consumer not yet refreshed, a namespace that keeps it).
/// </summary>
internal static class GoldenRetention
{
    public static List<RevisionVerdict> Decide(IEnumerable<GoldenRevision> revisions, int? current, int limit, Func<int, IReadOnlyList<string>> holders)
    {
        ArgumentNullException.ThrowIfNull(revisions);
        ArgumentNullException.ThrowIfNull(holders);
        var verdicts = new List<RevisionVerdict>();
        int kept = 0;
        foreach (var r in revisions.OrderByDescending(r => r.Revision))
        {
            bool cut = !string.IsNullOrEmpty(r.SnapshotHandle);
            if (!cut || r.Revision == current || (current is { } c && r.Revision > c))
            {
                // Being cut, the current one, or cut but not yet rolled out: never retired.
                kept += cut ? 1 : 0;
                verdicts.Add(new RevisionVerdict(r.Revision, false, []));
                continue;
            }

            if (kept < limit)
            {
                kept++;
                verdicts.Add(new RevisionVerdict(r.Revision, false, []));
                continue;
            }

            var held = holders(r.Revision);
            verdicts.Add(new RevisionVerdict(r.Revision, held.Count == 0, held));
        }

        return verdicts;
    }
}
