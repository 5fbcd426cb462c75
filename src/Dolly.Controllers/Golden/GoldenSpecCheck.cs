using System.Text.RegularExpressions;
using Cronos;
using Selectors = Dolly.Controllers.Schedules.LabelSelectors;
using k8s.Models;

namespace Dolly.Controllers.Golden;

/// <summary>Which of the three sources a spec names.</summary>
internal enum GoldenSourceKind
{
    VolumeSnapshot,
    PersistentVolumeClaim,
    SnapshotHandle,
}

/// <summary>
/// A GoldenSnapshot's spec, checked: exactly one source, the schedule (Cronos, with its time zone), the
/// selectors, names that Kubernetes accepts for what is made from them, the claim template. <see cref="Parse"/>
/// names every problem it finds, so a user fixes them in one go; nothing is published while any remains.
/// </summary>
internal sealed partial class GoldenSpecCheck
{
    /// <summary>Room left in a 63-character label value or a 253-character name for <c>-r&lt;N&gt;</c>.</summary>
    private const int RevisionSuffixRoom = 8;
    private const int MaxName = 253;

    private static readonly string[] AccessModes = ["ReadWriteOnce", "ReadOnlyMany", "ReadWriteMany", "ReadWriteOncePod"];
    private static readonly string[] VolumeModes = ["Filesystem", "Block"];
    private static readonly string[] RefreshPolicies = [GoldenNames.Never, GoldenNames.OnNextAttach];

    private GoldenSpecCheck(GoldenSourceKind kind, CronExpression? cron, TimeZoneInfo zone, long? claimSize, int historyLimit)
    {
        Kind = kind;
        Cron = cron;
        Zone = zone;
        ClaimSize = claimSize;
        HistoryLimit = historyLimit;
    }

    public GoldenSourceKind Kind { get; }

    /// <summary>The schedule of a claim source; null when revisions are cut only on create and publish-now.</summary>
    public CronExpression? Cron { get; }

    public TimeZoneInfo Zone { get; }

    /// <summary>spec.claim.size in bytes; null when it defaults to the restoreSize.</summary>
    public long? ClaimSize { get; }

    public int HistoryLimit { get; }

    /// <summary>The checked spec, or every reason it is invalid.</summary>
    public static (GoldenSpecCheck? Spec, string? Error) Parse(GoldenSnapshotSpec spec)
    {
        ArgumentNullException.ThrowIfNull(spec);
        var errors = new List<string>();
        var source = spec.Source ?? new GoldenSource();
        var named = new List<GoldenSourceKind>();
        if (source.VolumeSnapshot is not null)
        {
            named.Add(GoldenSourceKind.VolumeSnapshot);
            CheckRef(source.VolumeSnapshot, "spec.source.volumeSnapshot", errors);
        }

        if (source.PersistentVolumeClaim is not null)
        {
            named.Add(GoldenSourceKind.PersistentVolumeClaim);
            CheckRef(source.PersistentVolumeClaim, "spec.source.persistentVolumeClaim", errors);
        }

        if (!string.IsNullOrEmpty(source.SnapshotHandle))
        {
            named.Add(GoldenSourceKind.SnapshotHandle);
        }
        else if (!string.IsNullOrEmpty(source.Driver))
        {
            errors.Add("spec.source.driver is set without spec.source.snapshotHandle: it names the driver of a snapshot handle");
        }

        if (named.Count != 1)
        {
            errors.Add(named.Count == 0
                ? "spec.source names no source: give exactly one of volumeSnapshot, persistentVolumeClaim or snapshotHandle"
                : $"spec.source names {named.Count} sources ({string.Join(", ", named.Select(Field))}): give exactly one");
        }

        CronExpression? cron = null;
        if (!string.IsNullOrWhiteSpace(spec.Schedule))
        {
            if (named is not [GoldenSourceKind.PersistentVolumeClaim])
            {
                errors.Add("spec.schedule is set but the source is not a persistentVolumeClaim: only a claim can be snapshotted on a schedule");
            }

            try
            {
                cron = CronExpression.Parse(spec.Schedule.Trim(), CronFormat.Standard);
            }
            catch (CronFormatException ex)
            {
                errors.Add($"spec.schedule \"{spec.Schedule}\" is not a cron expression: {ex.Message}");
            }
        }

        TimeZoneInfo zone = TimeZoneInfo.Utc;
        if (!string.IsNullOrEmpty(spec.TimeZone))
        {
            try
            {
                zone = TimeZoneInfo.FindSystemTimeZoneById(spec.TimeZone);
            }
            catch (Exception ex) when (ex is TimeZoneNotFoundException or InvalidTimeZoneException)
            {
                errors.Add($"spec.timeZone \"{spec.TimeZone}\" is not a known IANA time zone (for example Europe/Berlin or America/New_York)");
            }
        }

        if (spec.NamespaceSelector is null && spec.Namespaces is not { Count: > 0 })
        {
            errors.Add("neither spec.namespaceSelector nor spec.namespaces is set: name the namespaces that receive this golden snapshot");
        }

        if (Selectors.Problem(spec.NamespaceSelector, "spec.namespaceSelector") is { } selectorProblem)
        {
            errors.Add(selectorProblem);
        }

        foreach (string ns in spec.Namespaces ?? [])
        {
            if (!IsLabel(ns))
            {
                errors.Add($"spec.namespaces entry \"{ns}\" is not a namespace name (a DNS label)");
            }
        }

        if (!IsSubdomain(spec.SnapshotName) || spec.SnapshotName.Length > MaxName - RevisionSuffixRoom)
        {
            errors.Add($"spec.snapshotName \"{spec.SnapshotName}\" is not a name a VolumeSnapshot can have with a -r<N> suffix (lowercase DNS subdomain of at most {MaxName - RevisionSuffixRoom} characters)");
        }

        long? size = null;
        if (spec.Claim is { } claim)
        {
            size = CheckClaim(claim, errors);
        }

        if (spec.RevisionHistoryLimit is < 1)
        {
            errors.Add($"spec.revisionHistoryLimit is {spec.RevisionHistoryLimit}: it must be at least 1 (the current revision)");
        }

        return errors.Count > 0
            ? (null, string.Join("; ", errors))
            : (new GoldenSpecCheck(named[0], cron, zone, size, spec.RevisionHistoryLimit ?? GoldenNames.DefaultHistoryLimit), null);
    }

    /// <summary>The first scheduled time strictly after <paramref name="after"/>; null without a schedule.</summary>
    public DateTimeOffset? Next(DateTimeOffset after) =>
        Cron?.GetNextOccurrence(after.UtcDateTime, Zone, inclusive: false) is { } next ? new DateTimeOffset(next, TimeSpan.Zero) : null;

    private static long? CheckClaim(GoldenClaimTemplate claim, List<string> errors)
    {
        if (!IsSubdomain(claim.Name))
        {
            errors.Add($"spec.claim.name \"{claim.Name}\" is not a claim name (a lowercase DNS subdomain)");
        }

        foreach (string mode in claim.AccessModes ?? [])
        {
            if (!AccessModes.Contains(mode, StringComparer.Ordinal))
            {
                errors.Add($"spec.claim.accessModes entry \"{mode}\" is not one of {string.Join(", ", AccessModes)}");
            }
        }

        if (claim.VolumeMode is { } volumeMode && !VolumeModes.Contains(volumeMode, StringComparer.Ordinal))
        {
            errors.Add($"spec.claim.volumeMode \"{volumeMode}\" is not one of {string.Join(", ", VolumeModes)}");
        }

        if (claim.RefreshPolicy is { } policy && !RefreshPolicies.Contains(policy, StringComparer.Ordinal))
        {
            errors.Add($"spec.claim.refreshPolicy \"{policy}\" is not one of {string.Join(", ", RefreshPolicies)}");
        }

        foreach (string key in claim.Labels?.Keys ?? [])
        {
            if (key is GoldenNames.GoldenLabel or GoldenNames.RevisionLabel)
            {
                errors.Add($"spec.claim.labels sets {key}, which the controller sets itself");
            }
        }

        if (string.IsNullOrEmpty(claim.Size))
        {
            return null;
        }

        try
        {
            long? bytes = Quantities.ToBytes(new ResourceQuantity(claim.Size));
            if (bytes is > 0)
            {
                return bytes;
            }
        }
        catch (FormatException)
        {
        }

        errors.Add($"spec.claim.size \"{claim.Size}\" is not a positive quantity such as 10Gi");
        return null;
    }

    private static void CheckRef(GoldenObjectRef reference, string field, List<string> errors)
    {
        if (!IsLabel(reference.Namespace))
        {
            errors.Add($"{field}.namespace \"{reference.Namespace}\" is not a namespace name");
        }

        if (!IsSubdomain(reference.Name))
        {
            errors.Add($"{field}.name \"{reference.Name}\" is not an object name");
        }
    }

    private static string Field(GoldenSourceKind kind) => kind switch
    {
        GoldenSourceKind.VolumeSnapshot => "volumeSnapshot",
        GoldenSourceKind.PersistentVolumeClaim => "persistentVolumeClaim",
        _ => "snapshotHandle",
    };

    internal static bool IsLabel(string? s) => s is { Length: > 0 and <= 63 } && DnsLabel().IsMatch(s);

    internal static bool IsSubdomain(string? s) => s is { Length: > 0 and <= MaxName } && DnsSubdomain().IsMatch(s);

    [GeneratedRegex("^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")]
    private static partial Regex DnsLabel();

    [GeneratedRegex("^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")]
    private static partial Regex DnsSubdomain();
}
