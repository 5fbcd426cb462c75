using Dolly.Controllers.Schedules;

namespace Dolly.Controllers.Tests.Schedules;

/// <summary>
/// When a schedule is due, in its time zone: cron expressions and macros, daylight saving transitions in both
/// directions (as Vixie cron and Cronos define them: a time skipped by the spring jump still runs, right after the
/// gap; a time repeated by the autumn jump runs once unless the expression is an interval), and one catch-up run
/// after downtime.
/// </summary>
public sealed class ScheduleTimingTests
{
    private static DateTimeOffset Utc(string text) => DateTimeOffset.Parse(text, System.Globalization.CultureInfo.InvariantCulture).ToUniversalTime();

    private static ScheduleTiming Timing(string schedule, string? zone = null)
    {
        var (timing, error) = ScheduleTiming.Parse(new SnapshotScheduleSpec { Schedule = schedule, TimeZone = zone });
        Assert.True(timing is not null, error);
        return timing;
    }

    /// <summary>The runs after a time, in UTC.</summary>
    public static TheoryData<string, string?, string, string[]> Runs() => new()
    {
        { "@hourly", null, "2026-12-07T10:00:00Z", ["2026-12-07T11:00:00Z", "2026-12-07T12:00:00Z"] },
        { "@daily", null, "2026-12-07T10:00:00Z", ["2026-12-08T00:00:00Z", "2026-12-09T00:00:00Z"] },
        { "15 3 * * 1", "UTC", "2026-12-07T10:00:00Z", ["2026-12-14T03:15:00Z", "2026-12-21T03:15:00Z"] },

        // Berlin is UTC+1 in winter and UTC+2 in summer.
        { "0 3 * * *", "Europe/Berlin", "2026-01-10T00:00:00Z", ["2026-01-10T02:00:00Z", "2026-01-11T02:00:00Z"] },
        { "0 3 * * *", "Europe/Berlin", "2026-07-10T00:00:00Z", ["2026-07-10T01:00:00Z", "2026-07-11T01:00:00Z"] },

        // Spring forward, Berlin 2026-03-29 02:00 -> 03:00: 02:30 does not exist; the run happens at 03:00 CEST.
        { "30 2 * * *", "Europe/Berlin", "2026-03-28T12:00:00Z", ["2026-03-29T01:00:00Z", "2026-03-30T00:30:00Z"] },

        // Fall back, Berlin 2026-10-25 03:00 -> 02:00: 02:30 happens twice; a daily job runs once, at the first.
        { "30 2 * * *", "Europe/Berlin", "2026-10-24T12:00:00Z", ["2026-10-25T00:30:00Z", "2026-10-26T01:30:00Z"] },

        // ... while an hourly (interval) job runs in both of the repeated hours.
        { "0 * * * *", "America/New_York", "2026-11-01T04:30:00Z", ["2026-11-01T05:00:00Z", "2026-11-01T06:00:00Z", "2026-11-01T07:00:00Z"] },

        // Spring forward, New York 2026-03-08 02:00 -> 03:00: the hourly job has no 02:00 and does not run twice at 03:00.
        { "0 * * * *", "America/New_York", "2026-03-08T06:30:00Z", ["2026-03-08T07:00:00Z", "2026-03-08T08:00:00Z"] },
        { "30 2 * * *", "America/New_York", "2026-03-07T12:00:00Z", ["2026-03-08T07:00:00Z", "2026-03-09T06:30:00Z"] },
    };

    [Theory]
    [MemberData(nameof(Runs))]
    public void Next_FollowsTheExpressionInTheTimeZone(string schedule, string? zone, string after, string[] expected)
    {
        var timing = Timing(schedule, zone);
        var runs = new List<DateTimeOffset>();
        var t = Utc(after);
        for (int i = 0; i < expected.Length; i++)
        {
            t = timing.Next(t) ?? throw new InvalidOperationException("no next run");
            runs.Add(t);
        }

        Assert.Equal(expected.Select(Utc), runs);
    }

    /// <summary>(schedule, last run, now, the one run due or null).</summary>
    public static TheoryData<string, string, string, string?> Due() => new()
    {
        // Nothing due yet.
        { "@hourly", "2026-12-07T10:00:00Z", "2026-12-07T10:59:59Z", null },

        // Exactly due.
        { "@hourly", "2026-12-07T10:00:00Z", "2026-12-07T11:00:00Z", "2026-12-07T11:00:00Z" },

        // Down for three days: one catch-up run, for the latest missed time.
        { "@daily", "2026-12-01T00:00:00Z", "2026-12-04T05:00:00Z", "2026-12-04T00:00:00Z" },

        // Down for a year under a minutely schedule: still one run, the latest minute.
        { "* * * * *", "2025-12-07T10:00:00Z", "2026-12-07T10:00:30Z", "2026-12-07T10:00:00Z" },

        // A yearly expression missed long ago: the look-back widens until it finds it.
        { "0 0 1 1 *", "2020-06-01T00:00:00Z", "2026-12-07T10:00:00Z", "2026-01-01T00:00:00Z" },

        // Leap day only: missed in 2024; 2028 is not there yet.
        { "0 0 29 2 *", "2023-01-01T00:00:00Z", "2026-12-07T10:00:00Z", "2024-02-29T00:00:00Z" },
    };

    [Theory]
    [MemberData(nameof(Due))]
    public void LatestDue_IsOneRunForTheLatestMissedTime(string schedule, string since, string now, string? expected)
    {
        var due = Timing(schedule).LatestDue(Utc(since), Utc(now));
        Assert.Equal(expected is null ? null : Utc(expected), due);
    }

    /// <summary>(spec field values, text the error must contain).</summary>
    public static TheoryData<string, string?, string?, int?, string> Invalid() => new()
    {
        { "", null, null, null, "spec.schedule is empty" },
        { "61 * * * *", null, null, null, "spec.schedule \"61 * * * *\" is not a cron expression" },
        { "@sometimes", null, null, null, "spec.schedule \"@sometimes\" is not a cron expression" },
        { "0 0 * * * *", null, null, null, "is not a cron expression" },
        { "@daily", "Mars/Olympus", null, null, "spec.timeZone \"Mars/Olympus\" is not a known IANA time zone" },
        { "@daily", null, "7x", null, "spec.retention.maxAge \"7x\" is not a positive duration" },
        { "@daily", null, "0d", null, "spec.retention.maxAge \"0d\"" },
        { "@daily", null, "99999w", null, "at most a century" },
        { "@daily", null, null, 0, "spec.retention.maxCount is 0: it must be at least 1" },
    };

    [Theory]
    [MemberData(nameof(Invalid))]
    public void Parse_NamesTheProblem(string schedule, string? zone, string? maxAge, int? maxCount, string expected)
    {
        var spec = new SnapshotScheduleSpec { Schedule = schedule, TimeZone = zone, Retention = new RetentionSpec { MaxAge = maxAge, MaxCount = maxCount } };
        var (timing, error) = ScheduleTiming.Parse(spec);
        Assert.Null(timing);
        Assert.Contains(expected, error, StringComparison.Ordinal);
    }

    [Fact]
    public void Parse_ReportsEveryProblemAtOnce()
    {
        var (_, error) = ScheduleTiming.Parse(new SnapshotScheduleSpec { Schedule = "bad", TimeZone = "Nowhere/Land", Retention = new RetentionSpec { Daily = -1 } });
        Assert.Contains("spec.schedule", error, StringComparison.Ordinal);
        Assert.Contains("spec.timeZone", error, StringComparison.Ordinal);
        Assert.Contains("spec.retention.daily is -1", error, StringComparison.Ordinal);
    }

    public static TheoryData<string, double?> Ages() => new()
    {
        { "30m", 30 },
        { "36h", 36 * 60 },
        { "7d", 7 * 24 * 60 },
        { "2w", 14 * 24 * 60 },
        { "1h30m", 90 },
        { "1d12h", 36 * 60 },
        { "", null },
        { "h", null },
        { "12", null },
        { "1.5h", null },
        { "-1h", null },
        { "1H", null },
        { "1h ", null },
    };

    [Theory]
    [MemberData(nameof(Ages))]
    public void ParseAge(string text, double? minutes) =>
        Assert.Equal(minutes is null ? null : TimeSpan.FromMinutes(minutes.Value), RetentionPolicy.ParseAge(text));
}
