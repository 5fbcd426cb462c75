using CsCheck;
using Dolly.Controllers.Schedules;

namespace Dolly.Controllers.Tests.Schedules;

/// <summary>
/// Retention of each kind, per claim and in the schedule's time zone; held snapshots are kept with their holder as
/// the reason; and, for any policy and any holders, a held snapshot is never deleted and the claim keeps its newest.
/// </summary>
public sealed class RetentionTests
{
    private static readonly DateTimeOffset Now = new(2026, 12, 7, 12, 0, 0, TimeSpan.Zero);

    private static readonly string[] Zones = ["UTC", "Europe/Berlin", "Pacific/Chatham"];

    private static RetainedSnapshot Snap(string name, DateTimeOffset time, bool ready = true, string claim = "ns/db", params string[] holders) =>
        new("ns", name, claim, time, ready, holders);

    private static RetentionPolicy Policy(int? maxCount = null, string? maxAge = null, int? hourly = null, int? daily = null, int? weekly = null, int? monthly = null)
    {
        var (policy, errors) = RetentionPolicy.Parse(new RetentionSpec { MaxCount = maxCount, MaxAge = maxAge, Hourly = hourly, Daily = daily, Weekly = weekly, Monthly = monthly });
        Assert.Empty(errors);
        return policy!;
    }

    private static Dictionary<string, string?> Decide(IEnumerable<RetainedSnapshot> snapshots, RetentionPolicy policy, string zone = "UTC") =>
        Retention.Decide(snapshots, policy, TimeZoneInfo.FindSystemTimeZoneById(zone), Now).ToDictionary(d => d.Snapshot.Name, d => d.KeepReason);

    /// <summary>One snapshot a day at 00:00 UTC for <paramref name="days"/> days back from today, newest first: d0, d1, ...</summary>
    private static List<RetainedSnapshot> Daily(int days, string claim = "ns/db") =>
        [.. Enumerable.Range(0, days).Select(i => Snap("d" + i, Now.Date.AddDays(-i), claim: claim))];

    [Fact]
    public void NoPolicy_KeepsEverything()
    {
        var kept = Decide(Daily(5), Policy());
        Assert.All(kept.Values, r => Assert.Equal("retention: no limit", r));
    }

    [Fact]
    public void MaxCount_KeepsTheNewest()
    {
        var kept = Decide(Daily(5), Policy(maxCount: 2));
        Assert.Equal("retention: maxCount 2", kept["d0"]);
        Assert.Equal("retention: maxCount 2", kept["d1"]);
        Assert.All(new[] { "d2", "d3", "d4" }, n => Assert.Null(kept[n]));
    }

    [Fact]
    public void MaxAge_KeepsTheYounger_AndBothLimitsMustHold()
    {
        // Now is 12:00; d0 is 12 h old, d1 36 h, d2 60 h.
        var byAge = Decide(Daily(4), Policy(maxAge: "36h"));
        Assert.Equal("retention: maxAge 36h", byAge["d0"]);
        Assert.Equal("retention: maxAge 36h", byAge["d1"]);
        Assert.Null(byAge["d2"]);
        Assert.Null(byAge["d3"]);

        var both = Decide(Daily(4), Policy(maxCount: 1, maxAge: "3d"));
        Assert.Equal("retention: maxCount 1, maxAge 3d", both["d0"]);
        Assert.Null(both["d1"]);
    }

    [Fact]
    public void MaxAge_NeverLeavesAClaimWithoutItsNewestReadySnapshot()
    {
        var kept = Decide([Snap("old", Now.AddDays(-10)), Snap("older", Now.AddDays(-11))], Policy(maxAge: "1d"));
        Assert.Equal("retention: newest ready snapshot of the claim", kept["old"]);
        Assert.Null(kept["older"]);
    }

    [Fact]
    public void Hourly_KeepsTheNewestOfEachOfTheLastHours()
    {
        // Every 20 minutes from 08:00 to 11:40.
        var snaps = Enumerable.Range(0, 12).Select(i => Snap($"s{i:00}", Now.AddHours(-4).AddMinutes(20 * i))).ToList();
        var kept = Decide(snaps, Policy(hourly: 3));
        Assert.Equal(["s05", "s08", "s11"], kept.Where(k => k.Value is not null).Select(k => k.Key).Order(StringComparer.Ordinal));
        Assert.Equal("retention: hourly 2026-12-07T11", kept["s11"]);
        Assert.Equal("retention: hourly 2026-12-07T09", kept["s05"]);
    }

    [Fact]
    public void Daily_BucketsByTheScheduleTimeZone()
    {
        // 22:30 and 23:30 UTC on Dec 5 are Dec 5 in UTC but 23:30 and 00:30 (Dec 6) in Berlin.
        var snaps = new[] { Snap("a", new DateTimeOffset(2026, 12, 5, 22, 30, 0, TimeSpan.Zero)), Snap("b", new DateTimeOffset(2026, 12, 5, 23, 30, 0, TimeSpan.Zero)) };
        var utc = Decide(snaps, Policy(daily: 2));
        Assert.Equal("retention: daily 2026-12-05", utc["b"]);
        Assert.Null(utc["a"]);

        var berlin = Decide(snaps, Policy(daily: 2), "Europe/Berlin");
        Assert.Equal("retention: daily 2026-12-06", berlin["b"]);
        Assert.Equal("retention: daily 2026-12-05", berlin["a"]);
    }

    [Fact]
    public void Weekly_UsesIsoWeeks()
    {
        // 2026-12-07 is a Monday (week 50); the Sunday before is week 49, as is the Monday before it.
        var snaps = new[] { Snap("mon50", Now), Snap("sun49", Now.AddDays(-1)), Snap("mon49", Now.AddDays(-7)), Snap("sun48", Now.AddDays(-8)) };
        var kept = Decide(snaps, Policy(weekly: 2));
        Assert.Equal("retention: weekly 2026-W50", kept["mon50"]);
        Assert.Equal("retention: weekly 2026-W49", kept["sun49"]);
        Assert.Null(kept["mon49"]);
        Assert.Null(kept["sun48"]);
    }

    [Fact]
    public void Monthly_AndPeriodRulesAddToTheLimits()
    {
        var kept = Decide(Daily(70), Policy(maxCount: 3, monthly: 3));
        Assert.Equal(["d0", "d1", "d2", "d37", "d7"], kept.Where(k => k.Value is not null).Select(k => k.Key).Order(StringComparer.Ordinal));
        Assert.Equal("retention: maxCount 3, monthly 2026-12", kept["d0"]);
        Assert.Equal("retention: maxCount 3", kept["d1"]);
        Assert.Equal("retention: monthly 2026-11", kept["d7"]);
        Assert.Equal("retention: monthly 2026-10", kept["d37"]);
        Assert.Null(kept["d68"]);
    }

    [Fact]
    public void RetentionCountsPerClaim_AndNotReadySnapshotsAreKeptUncounted()
    {
        var snaps = Daily(3, "ns/a").Select(s => s with { Name = "a-" + s.Name })
            .Concat(Daily(3, "ns/b").Select(s => s with { Name = "b-" + s.Name }))
            .Append(Snap("a-cutting", Now.AddMinutes(1), ready: false, claim: "ns/a"))
            .ToList();
        var kept = Decide(snaps, Policy(maxCount: 1));
        Assert.Equal(["a-cutting", "a-d0", "b-d0"], kept.Where(k => k.Value is not null).Select(k => k.Key).Order(StringComparer.Ordinal));
        Assert.Equal("not ready yet", kept["a-cutting"]);
    }

    [Fact]
    public void HeldSnapshots_AreKept_WithTheHolderAsReason()
    {
        var snaps = new[]
        {
            Snap("new", Now),
            Snap("restoring", Now.AddDays(-1), holders: ["in use: restore source of team-a/db-copy"]),
            Snap("pinned", Now.AddDays(-2), holders: ["held: annotation dolly.io/keep", "in use: restore source of ns/x"]),
            Snap("free", Now.AddDays(-3)),
        };
        var kept = Decide(snaps, Policy(maxCount: 1));
        Assert.Equal("in use: restore source of team-a/db-copy", kept["restoring"]);
        Assert.Equal("held: annotation dolly.io/keep, in use: restore source of ns/x", kept["pinned"]);
        Assert.Null(kept["free"]);
    }

    /// <summary>Any snapshots, any holders, any policy: nothing held is deleted, and each claim keeps its newest ready snapshot.</summary>
    [Fact]
    public void Property_NothingHeldIsEverDeleted()
    {
        var snapshot = Gen.Select(Gen.Int[0, 3], Gen.Int[0, 24 * 90], Gen.Bool, Gen.Int[0, 2], (claim, hoursAgo, ready, holders) => (claim, hoursAgo, ready, holders));
        var policy = Gen.Select(Gen.Int[0, 4], Gen.Int[0, 3], Gen.Int[0, 3], Gen.Int[0, 3], Gen.Int[0, 3], Gen.Int[0, 60], (count, hourly, daily, weekly, monthly, days) =>
            new RetentionPolicy(count == 0 ? null : count, days == 0 ? null : TimeSpan.FromDays(days), hourly == 0 ? null : hourly, daily == 0 ? null : daily, weekly == 0 ? null : weekly, monthly == 0 ? null : monthly));
        Gen.Select(snapshot.List[0, 40], policy, Gen.Int[0, 2].Select(i => Zones[i])).Sample(input =>
        {
            var (raw, p, zone) = input;
            var snaps = raw.Select((s, i) => new RetainedSnapshot("ns", $"s{i}", $"ns/c{s.claim}", Now.AddHours(-s.hoursAgo), s.ready, [.. Enumerable.Range(0, s.holders).Select(h => $"holder {h}")])).ToList();
            var decisions = Retention.Decide(snaps, p, TimeZoneInfo.FindSystemTimeZoneById(zone), Now);
            Assert.Equal(snaps.Count, decisions.Count);
            Assert.All(decisions.Where(d => d.Delete), d => Assert.Empty(d.Snapshot.Holders));
            Assert.All(decisions.Where(d => d.Delete), d => Assert.True(d.Snapshot.Ready));
            foreach (var claim in snaps.Where(s => s.Ready).GroupBy(s => s.Claim))
            {
                var newest = claim.OrderByDescending(s => s.Time).ThenByDescending(s => s.Name, StringComparer.Ordinal).First();
                Assert.False(decisions.Single(d => d.Snapshot == newest).Delete);
            }
        });
    }

    /// <summary>
    /// Random interleavings of runs, restores that start and bind, keep annotations set and cleared, time passing and
    /// retention passes: at every pass, nothing then in use is deleted, and a snapshot released is deleted by the
    /// next pass when the policy no longer keeps it.
    /// </summary>
    [Fact]
    public void Property_RandomInterleavings_NeverDeleteWhatIsInUse()
    {
        var step = Gen.Select(Gen.Int[0, 5], Gen.Int[0, 1000], (kind, pick) => (kind, pick));
        Gen.Select(step.List[1, 120], Gen.Int[1, 3]).Sample(input =>
        {
            var (steps, maxCount) = input;
            var policy = new RetentionPolicy(maxCount, null, null, null, null, null);
            var now = Now;
            var live = new List<string>();
            var times = new Dictionary<string, DateTimeOffset>();
            var restoring = new Dictionary<string, int>();
            var keep = new HashSet<string>();
            int made = 0;
            foreach (var (kind, pick) in steps)
            {
                string? target = live.Count > 0 ? live[pick % live.Count] : null;
                switch (kind)
                {
                    case 0:
                        string name = $"s{made++}";
                        live.Add(name);
                        times[name] = now;
                        break;
                    case 1 when target is not null:
                        restoring[target] = restoring.GetValueOrDefault(target) + 1;
                        break;
                    case 2 when target is not null && restoring.GetValueOrDefault(target) > 0:
                        restoring[target]--;
                        break;
                    case 3 when target is not null:
                        if (!keep.Add(target))
                        {
                            keep.Remove(target);
                        }

                        break;
                    case 4:
                        now = now.AddHours(1 + (pick % 48));
                        break;
                    default:
                        var snaps = live.Select(n => new RetainedSnapshot("ns", n, "ns/db", times[n], true,
                            [.. Enumerable.Repeat("in use: restore", restoring.GetValueOrDefault(n)), .. keep.Contains(n) ? new[] { "held: keep" } : []])).ToList();
                        var decisions = Retention.Decide(snaps, policy, TimeZoneInfo.Utc, now);
                        var newest = live.OrderByDescending(n => times[n]).ThenByDescending(n => n, StringComparer.Ordinal).Take(maxCount).ToHashSet();
                        foreach (var d in decisions)
                        {
                            string n = d.Snapshot.Name;
                            bool held = restoring.GetValueOrDefault(n) > 0 || keep.Contains(n);
                            Assert.False(d.Delete && held, $"{n} deleted while in use");
                            Assert.Equal(!held && !newest.Contains(n), d.Delete);
                            if (d.Delete)
                            {
                                live.Remove(n);
                            }
                        }

                        break;
                }
            }
        });
    }
}
