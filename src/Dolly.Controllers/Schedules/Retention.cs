using System.Globalization;

namespace Dolly.Controllers.Schedules;

/// <summary>One snapshot of a schedule as retention sees it.</summary>
/// <param name="Namespace">Namespace of the snapshot.</param>
/// <param name="Name">Name of the snapshot.</param>
/// <param name="Claim">The claim it is of (<c>namespace/name</c>): retention counts per claim.</param>
/// <param name="Time">The run that made it.</param>
/// <param name="Ready">Whether it is ready to use; one that is not is never deleted nor counted.</param>
/// <param name="Holders">Who holds it (a pending restore, the keep annotation...); it is never deleted while any does.</param>
internal sealed record RetainedSnapshot(string Namespace, string Name, string Claim, DateTimeOffset Time, bool Ready, IReadOnlyList<string> Holders);

/// <summary>What retention decided for one snapshot: keep it (and why) or delete it.</summary>
internal sealed record RetentionDecision(RetainedSnapshot Snapshot, string? KeepReason)
{
    public bool Delete => KeepReason is null;
}

/// <summary>
/// Retention of a schedule's snapshots, per claim. A ready snapshot is kept when it is among the newest
/// <c>maxCount</c> and no older than <c>maxAge</c> (each when set), when it is the newest of one of the last N hours,
/// days, ISO weeks or months that have one (in the schedule's time zone), or when it is the claim's newest ready
/// snapshot (so retention never leaves a claim with none). Not-ready snapshots are kept. A snapshot the policy
/// would delete is kept while anything holds it, with the holder as its reason; it goes once released.
/// </summary>
internal static class Retention
{
    public static List<RetentionDecision> Decide(IEnumerable<RetainedSnapshot> snapshots, RetentionPolicy policy, TimeZoneInfo zone, DateTimeOffset now)
    {
        ArgumentNullException.ThrowIfNull(snapshots);
        ArgumentNullException.ThrowIfNull(policy);
        ArgumentNullException.ThrowIfNull(zone);
        var decisions = new List<RetentionDecision>();
        foreach (var series in snapshots.GroupBy(s => s.Claim, StringComparer.Ordinal))
        {
            var reasons = new Dictionary<RetainedSnapshot, List<string>>();
            void Keep(RetainedSnapshot s, string reason)
            {
                if (!reasons.TryGetValue(s, out var list))
                {
                    reasons[s] = list = [];
                }

                list.Add(reason);
            }

            var ready = series.Where(s => s.Ready).OrderByDescending(s => s.Time).ThenByDescending(s => s.Name, StringComparer.Ordinal).ToList();
            foreach (var s in series.Where(s => !s.Ready))
            {
                Keep(s, "not ready yet");
            }

            if (policy.KeepsAll)
            {
                ready.ForEach(s => Keep(s, "retention: no limit"));
            }
            else
            {
                KeepByLimits(ready, policy, now, Keep);
                KeepByPeriod(ready, policy.Hourly, "hourly", t => t.ToString("yyyy-MM-dd'T'HH", CultureInfo.InvariantCulture), zone, Keep);
                KeepByPeriod(ready, policy.Daily, "daily", t => t.ToString("yyyy-MM-dd", CultureInfo.InvariantCulture), zone, Keep);
                KeepByPeriod(ready, policy.Weekly, "weekly", t => string.Create(CultureInfo.InvariantCulture, $"{ISOWeek.GetYear(t)}-W{ISOWeek.GetWeekOfYear(t):00}"), zone, Keep);
                KeepByPeriod(ready, policy.Monthly, "monthly", t => t.ToString("yyyy-MM", CultureInfo.InvariantCulture), zone, Keep);
                if (ready.Count > 0 && !reasons.ContainsKey(ready[0]))
                {
                    Keep(ready[0], "retention: newest ready snapshot of the claim");
                }
            }

            foreach (var s in series)
            {
                string? reason = reasons.TryGetValue(s, out var list) ? Join(list)
                    : s.Holders.Count > 0 ? string.Join(", ", s.Holders)
                    : null;
                decisions.Add(new RetentionDecision(s, reason));
            }
        }

        return decisions;
    }

    /// <summary>Reasons joined, the common <c>retention: </c> said once: <c>retention: maxCount 3, daily 2026-12-03</c>.</summary>
    private static string Join(List<string> reasons)
    {
        const string Prefix = "retention: ";
        var rules = reasons.Where(r => r.StartsWith(Prefix, StringComparison.Ordinal)).Select(r => r[Prefix.Length..]).ToList();
        var other = reasons.Where(r => !r.StartsWith(Prefix, StringComparison.Ordinal));
        return string.Join(", ", rules.Count > 0 ? other.Prepend(Prefix + string.Join(", ", rules)) : other);
    }

    private static void KeepByLimits(List<RetainedSnapshot> ready, RetentionPolicy policy, DateTimeOffset now, Action<RetainedSnapshot, string> keep)
    {
        if (policy.MaxCount is null && policy.MaxAge is null)
        {
            return;
        }

        var limits = new List<string>();
        if (policy.MaxCount is { } count)
        {
            limits.Add($"maxCount {count}");
        }

        if (policy.MaxAge is { } age)
        {
            limits.Add($"maxAge {RetentionPolicy.FormatAge(age)}");
        }

        string reason = "retention: " + string.Join(", ", limits);
        for (int i = 0; i < ready.Count; i++)
        {
            if ((policy.MaxCount is null || i < policy.MaxCount) && (policy.MaxAge is null || now - ready[i].Time <= policy.MaxAge))
            {
                keep(ready[i], reason);
            }
        }
    }

    private static void KeepByPeriod(List<RetainedSnapshot> ready, int? periods, string name, Func<DateTime, string> bucket, TimeZoneInfo zone, Action<RetainedSnapshot, string> keep)
    {
        if (periods is not { } n)
        {
            return;
        }

        var seen = new HashSet<string>(StringComparer.Ordinal);
        foreach (var s in ready)
        {
            string key = bucket(TimeZoneInfo.ConvertTime(s.Time, zone).DateTime);
            if (seen.Count >= n && !seen.Contains(key))
            {
                break;
            }

            // The list is newest first, so the first snapshot of a bucket is that period's newest.
            if (seen.Add(key))
            {
                keep(s, $"retention: {name} {key}");
            }
        }
    }
}
