using System.Globalization;
using Cronos;

namespace Dolly.Controllers.Schedules;

/// <summary>
/// A schedule's spec, checked: the cron expression (Cronos, five fields or a macro), the time zone and the
/// retention policy. <see cref="Parse"/> names every problem it finds, so a user fixes them in one go.
/// </summary>
internal sealed class ScheduleTiming
{
    private ScheduleTiming(CronExpression cron, TimeZoneInfo zone, RetentionPolicy retention)
    {
        Cron = cron;
        Zone = zone;
        Retention = retention;
    }

    public CronExpression Cron { get; }

    public TimeZoneInfo Zone { get; }

    public RetentionPolicy Retention { get; }

    /// <summary>The checked spec, or the reasons it is invalid.</summary>
    public static (ScheduleTiming? Timing, string? Error) Parse(SnapshotScheduleSpec spec)
    {
        ArgumentNullException.ThrowIfNull(spec);
        var errors = new List<string>();
        CronExpression? cron = null;
        if (string.IsNullOrWhiteSpace(spec.Schedule))
        {
            errors.Add("spec.schedule is empty: give a cron expression such as \"0 3 * * *\" or a macro such as @hourly");
        }
        else
        {
            try
            {
                cron = CronExpression.Parse(spec.Schedule.Trim(), CronFormat.Standard);
            }
            catch (CronFormatException ex)
            {
                errors.Add($"spec.schedule \"{spec.Schedule}\" is not a cron expression: {ex.Message}");
            }
        }

        TimeZoneInfo? zone = null;
        string zoneName = string.IsNullOrEmpty(spec.TimeZone) ? "UTC" : spec.TimeZone;
        try
        {
            zone = TimeZoneInfo.FindSystemTimeZoneById(zoneName);
        }
        catch (Exception ex) when (ex is TimeZoneNotFoundException or InvalidTimeZoneException)
        {
            errors.Add($"spec.timeZone \"{zoneName}\" is not a known IANA time zone (for example Europe/Berlin or America/New_York)");
        }

        var (retention, retentionErrors) = RetentionPolicy.Parse(spec.Retention);
        errors.AddRange(retentionErrors);
        return errors.Count > 0 || cron is null || zone is null
            ? (null, string.Join("; ", errors))
            : (new ScheduleTiming(cron, zone, retention!), null);
    }

    /// <summary>The first scheduled time strictly after <paramref name="after"/>, or null if there is none.</summary>
    public DateTimeOffset? Next(DateTimeOffset after) =>
        Cron.GetNextOccurrence(after.UtcDateTime, Zone, inclusive: false) is { } next ? new DateTimeOffset(next, TimeSpan.Zero) : null;

    /// <summary>
    /// The latest scheduled time in (<paramref name="since"/>, <paramref name="now"/>], or null when none is due. After
    /// downtime this is the one catch-up run: every earlier missed time is skipped, never made up in a burst.
    /// </summary>
    public DateTimeOffset? LatestDue(DateTimeOffset since, DateTimeOffset now)
    {
        if (Next(since) is not { } first || first > now)
        {
            return null;
        }

        // Look back a short window first, so a long downtime under a minutely schedule does not walk every
        // missed minute; widen only when the window holds no occurrence (a rare expression).
        foreach (var window in new[] { TimeSpan.FromDays(2), TimeSpan.FromDays(400), TimeSpan.MaxValue })
        {
            var from = window == TimeSpan.MaxValue || now - since <= window ? since : now - window;
            DateTimeOffset? latest = null;
            for (var t = Next(from); t is { } at && at <= now; t = Next(at))
            {
                latest = at;
            }

            if (latest is not null)
            {
                return latest;
            }
        }

        return first;
    }
}

/// <summary>A checked <see cref="RetentionSpec"/>; all null means keep everything.</summary>
internal sealed record RetentionPolicy(int? MaxCount, TimeSpan? MaxAge, int? Hourly, int? Daily, int? Weekly, int? Monthly)
{
    /// <summary>The longest maxAge accepted (a century); longer is surely a typo.</summary>
    private static readonly TimeSpan MaxRetention = TimeSpan.FromDays(36525);

    public bool KeepsAll => MaxCount is null && MaxAge is null && Hourly is null && Daily is null && Weekly is null && Monthly is null;

    public static (RetentionPolicy? Policy, List<string> Errors) Parse(RetentionSpec? spec)
    {
        var errors = new List<string>();
        if (spec is null)
        {
            return (new RetentionPolicy(null, null, null, null, null, null), errors);
        }

        foreach (var (name, value) in new[] { ("maxCount", spec.MaxCount), ("hourly", spec.Hourly), ("daily", spec.Daily), ("weekly", spec.Weekly), ("monthly", spec.Monthly) })
        {
            if (value is < 1)
            {
                errors.Add($"spec.retention.{name} is {value}: it must be at least 1 (leave it out for no limit)");
            }
        }

        TimeSpan? maxAge = null;
        if (spec.MaxAge is not null)
        {
            if (ParseAge(spec.MaxAge) is { } age)
            {
                maxAge = age;
            }
            else
            {
                errors.Add($"spec.retention.maxAge \"{spec.MaxAge}\" is not a positive duration of at most a century such as 36h, 7d, 2w or 1h30m (units m, h, d, w)");
            }
        }

        return (new RetentionPolicy(spec.MaxCount, maxAge, spec.Hourly, spec.Daily, spec.Weekly, spec.Monthly), errors);
    }

    /// <summary>A sequence of number-unit pairs (units m, h, d, w), such as <c>1d12h</c>; null when malformed or zero.</summary>
    public static TimeSpan? ParseAge(string text)
    {
        var total = TimeSpan.Zero;
        int i = 0;
        if (text.Length == 0)
        {
            return null;
        }

        while (i < text.Length)
        {
            int start = i;
            while (i < text.Length && char.IsAsciiDigit(text[i]))
            {
                i++;
            }

            if (i == start || i == text.Length || i - start > 6)
            {
                return null;
            }

            long n = long.Parse(text.AsSpan(start, i - start), NumberStyles.None, CultureInfo.InvariantCulture);
            long minutes = text[i] switch
            {
                'm' => n,
                'h' => n * 60,
                'd' => n * 60 * 24,
                'w' => n * 60 * 24 * 7,
                _ => -1,
            };
            if (minutes < 0)
            {
                return null;
            }

            total += TimeSpan.FromMinutes(minutes);
            if (total > MaxRetention)
            {
                return null;
            }

            i++;
        }

        return total > TimeSpan.Zero ? total : null;
    }

    /// <summary>The policy as a user wrote it, for status reasons.</summary>
    public static string FormatAge(TimeSpan age) =>
        age.TotalDays >= 1 && age.Ticks % TimeSpan.TicksPerDay == 0 ? $"{(long)age.TotalDays}d"
        : age.TotalHours >= 1 && age.Ticks % TimeSpan.TicksPerHour == 0 ? $"{(long)age.TotalHours}h"
        : $"{(long)age.TotalMinutes}m";
}
