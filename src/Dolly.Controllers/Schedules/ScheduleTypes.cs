using System.Text.Json.Serialization;
using k8s;
using k8s.Models;

namespace Dolly.Controllers.Schedules;

// dolly.io/v1alpha1 SnapshotSchedule (namespaced) and ClusterSnapshotSchedule (cluster-scoped). Both kinds share
// one shape; only a ClusterSnapshotSchedule reads namespaceSelector. Field names are the wire names.

/// <summary>Snapshots of the selected claims on a cron schedule, with retention.</summary>
public sealed class SnapshotSchedule : IKubernetesObject<V1ObjectMeta>
{
    /// <summary>Group and version.</summary>
    [JsonPropertyName("apiVersion")] public string ApiVersion { get; set; } = ScheduleNames.ApiVersion;

    /// <summary><see cref="ScheduleNames.NamespacedKind"/> or <see cref="ScheduleNames.ClusterKind"/>.</summary>
    [JsonPropertyName("kind")] public string Kind { get; set; } = ScheduleNames.NamespacedKind;

    /// <summary>Standard object metadata; the run-now annotation lives here.</summary>
    [JsonPropertyName("metadata")] public V1ObjectMeta Metadata { get; set; } = new();

    /// <summary>When, what and how long to keep.</summary>
    [JsonPropertyName("spec")] public SnapshotScheduleSpec Spec { get; set; } = new();

    /// <summary>What the controller did and keeps.</summary>
    [JsonPropertyName("status")] public SnapshotScheduleStatus? Status { get; set; }

    /// <summary>Whether this is a ClusterSnapshotSchedule.</summary>
    [JsonIgnore] public bool IsCluster => Kind == ScheduleNames.ClusterKind;
}

/// <summary>Spec of a schedule.</summary>
public sealed class SnapshotScheduleSpec
{
    /// <summary>A five-field cron expression or a macro such as <c>@hourly</c> or <c>@daily</c>.</summary>
    [JsonPropertyName("schedule")] public string Schedule { get; set; } = "";

    /// <summary>IANA time zone the expression is read in; UTC when empty.</summary>
    [JsonPropertyName("timeZone")] public string? TimeZone { get; set; }

    /// <summary>The claims to snapshot; every claim (of the namespace, or of the selected namespaces) when empty.</summary>
    [JsonPropertyName("claimSelector")] public V1LabelSelector? ClaimSelector { get; set; }

    /// <summary>ClusterSnapshotSchedule only: the namespaces whose claims are selected; all when empty.</summary>
    [JsonPropertyName("namespaceSelector")] public V1LabelSelector? NamespaceSelector { get; set; }

    /// <summary>The VolumeSnapshotClass of the snapshots; the driver's default when empty.</summary>
    [JsonPropertyName("snapshotClassName")] public string? SnapshotClassName { get; set; }

    /// <summary>No scheduled runs while true (run-now still runs; retention still applies).</summary>
    [JsonPropertyName("suspend")] public bool? Suspend { get; set; }

    /// <summary>
    /// No new snapshot when no block of the claim changed since this schedule's previous one: the new snapshot is
    /// compared with it through the driver's SnapshotMetadata service and deleted when identical.
    /// </summary>
    [JsonPropertyName("skipUnchanged")] public bool? SkipUnchanged { get; set; }

    /// <summary>Which snapshots to keep; all when absent.</summary>
    [JsonPropertyName("retention")] public RetentionSpec? Retention { get; set; }

    /// <summary>Consistency hooks around each snapshot's cut.</summary>
    [JsonPropertyName("hooks")] public ScheduleHooks? Hooks { get; set; }

    /// <summary>
    /// One VolumeGroupSnapshot per namespace and run of all the selected claims (cut at one instant) instead of one
    /// VolumeSnapshot each; retention then counts group snapshots.
    /// </summary>
    [JsonPropertyName("group")] public bool? Group { get; set; }

    /// <summary>With <see cref="Group"/>: the VolumeGroupSnapshotClass; the driver's default when empty.</summary>
    [JsonPropertyName("volumeGroupSnapshotClassName")] public string? VolumeGroupSnapshotClassName { get; set; }
}

/// <summary>
/// Consistency hooks: with <see cref="Freeze"/>, each snapshot is annotated <c>dolly.io/freeze: "true"</c> (with
/// the timeout and onError), so it is cut while the node that stages the claim holds its file system frozen.
/// </summary>
public sealed class ScheduleHooks
{
    /// <summary>Freeze each claim's mounted file system around its snapshot's cut.</summary>
    [JsonPropertyName("freeze")] public bool? Freeze { get; set; }

    /// <summary>The node thaws by itself this long after the freeze whatever happens (1ms..60s, default 2s).</summary>
    [JsonPropertyName("freezeTimeout")] public string? FreezeTimeout { get; set; }

    /// <summary><c>Fail</c> (default): a failed freeze fails that snapshot; <c>Continue</c>: it is cut unfrozen and the failure reported.</summary>
    [JsonPropertyName("onError")] public string? OnError { get; set; }

    /// <summary>Commands run through pods/exec in the pods that mount a selected claim, before the cut.</summary>
    [JsonPropertyName("pre")] public IList<Hooks.ExecHook>? Pre { get; set; }

    /// <summary>Commands run after the cut in every pod a pre hook was started in; they always run, to undo what pre did.</summary>
    [JsonPropertyName("post")] public IList<Hooks.ExecHook>? Post { get; set; }

    /// <summary>Whether any exec hook is set.</summary>
    [JsonIgnore] public bool HasExec => Pre is { Count: > 0 } || Post is { Count: > 0 };
}

/// <summary>
/// Retention, per claim: the newest <see cref="MaxCount"/> snapshots no older than <see cref="MaxAge"/>, plus the
/// newest snapshot of each of the last N hours, days, ISO weeks and months (in the schedule's time zone).
/// </summary>
public sealed class RetentionSpec
{
    /// <summary>At most this many of the newest snapshots of a claim (period rules may keep more).</summary>
    [JsonPropertyName("maxCount")] public int? MaxCount { get; set; }

    /// <summary>No older than this, for example <c>36h</c>, <c>7d</c>, <c>2w</c> or <c>1h30m</c>.</summary>
    [JsonPropertyName("maxAge")] public string? MaxAge { get; set; }

    /// <summary>The newest snapshot of each of the last N hours that have one.</summary>
    [JsonPropertyName("hourly")] public int? Hourly { get; set; }

    /// <summary>The newest snapshot of each of the last N days that have one.</summary>
    [JsonPropertyName("daily")] public int? Daily { get; set; }

    /// <summary>The newest snapshot of each of the last N ISO weeks that have one.</summary>
    [JsonPropertyName("weekly")] public int? Weekly { get; set; }

    /// <summary>The newest snapshot of each of the last N months that have one.</summary>
    [JsonPropertyName("monthly")] public int? Monthly { get; set; }
}

/// <summary>Status of a schedule.</summary>
public sealed class SnapshotScheduleStatus
{
    /// <summary>The time of the last run (the scheduled time; the time of the request for run-now).</summary>
    [JsonPropertyName("lastRun")] public DateTime? LastRun { get; set; }

    /// <summary>The next scheduled run, in UTC; absent while suspended or invalid.</summary>
    [JsonPropertyName("nextRun")] public DateTime? NextRun { get; set; }

    /// <summary>What the last run did for each claim.</summary>
    [JsonPropertyName("claims")] public IList<ClaimRunResult>? Claims { get; set; }

    /// <summary>Every snapshot of this schedule that exists, and why it is kept.</summary>
    [JsonPropertyName("kept")] public IList<KeptSnapshot>? Kept { get; set; }

    /// <summary>How many snapshots are kept (for the printer column).</summary>
    [JsonPropertyName("keptCount")] public int? KeptCount { get; set; }

    /// <summary>Why the schedule cannot run (an invalid spec); absent when it can.</summary>
    [JsonPropertyName("error")] public string? Error { get; set; }
}

/// <summary>The last run's result for one claim.</summary>
public sealed class ClaimRunResult
{
    /// <summary>Namespace of the claim.</summary>
    [JsonPropertyName("namespace")] public string Namespace { get; set; } = "";

    /// <summary>Name of the claim.</summary>
    [JsonPropertyName("name")] public string Name { get; set; } = "";

    /// <summary>The snapshot made (or already there) for this run.</summary>
    [JsonPropertyName("snapshot")] public string? Snapshot { get; set; }

    /// <summary><c>Created</c>, <c>Skipped</c> or <c>Failed</c>.</summary>
    [JsonPropertyName("result")] public string Result { get; set; } = "";

    /// <summary>Why it was skipped or failed.</summary>
    [JsonPropertyName("message")] public string? Message { get; set; }

    /// <summary>With hooks.freeze: how the freeze around the cut went, once the snapshot is cut.</summary>
    [JsonPropertyName("freeze")] public string? Freeze { get; set; }

    /// <summary>With hooks.freeze: microseconds the file system was frozen (FIFREEZE to FITHAW), once cut frozen.</summary>
    [JsonPropertyName("frozenMicroseconds")] public long? FrozenMicroseconds { get; set; }

    /// <summary>With group: the run's VolumeGroupSnapshot, which holds this claim's snapshot.</summary>
    [JsonPropertyName("groupSnapshot")] public string? GroupSnapshot { get; set; }

    /// <summary>With hooks.pre or hooks.post: how the exec hooks went.</summary>
    [JsonPropertyName("hooks")] public string? Hooks { get; set; }
}

/// <summary>A snapshot the schedule keeps, and why.</summary>
public sealed class KeptSnapshot
{
    /// <summary>Namespace of the snapshot.</summary>
    [JsonPropertyName("namespace")] public string Namespace { get; set; } = "";

    /// <summary>Name of the snapshot.</summary>
    [JsonPropertyName("name")] public string Name { get; set; } = "";

    /// <summary>Why it is kept, for example <c>retention: daily 2026-12-03</c> or <c>in use: restore source of team-a/db-copy</c>.</summary>
    [JsonPropertyName("reason")] public string Reason { get; set; } = "";

    /// <summary><c>VolumeGroupSnapshot</c> for a group schedule's group snapshots; absent for VolumeSnapshots.</summary>
    [JsonPropertyName("kind")] public string? Kind { get; set; }
}

/// <summary>Names shared by the schedule kinds, their snapshots and their CRDs.</summary>
public static class ScheduleNames
{
    /// <summary>API group of the schedule kinds.</summary>
    public const string Group = "dolly.io";

    /// <summary>API version of the schedule kinds.</summary>
    public const string Version = "v1alpha1";

    /// <summary>apiVersion of the schedule kinds.</summary>
    public const string ApiVersion = Group + "/" + Version;

    /// <summary>The namespaced kind.</summary>
    public const string NamespacedKind = "SnapshotSchedule";

    /// <summary>The cluster-scoped kind.</summary>
    public const string ClusterKind = "ClusterSnapshotSchedule";

    /// <summary>Plural of <see cref="NamespacedKind"/>.</summary>
    public const string NamespacedPlural = "snapshotschedules";

    /// <summary>Plural of <see cref="ClusterKind"/>.</summary>
    public const string ClusterPlural = "clustersnapshotschedules";

    /// <summary>On a schedule: run once now (the controller removes it when the run is done).</summary>
    public const string RunNowAnnotation = "dolly.io/run-now";

    /// <summary>On a snapshot: a user's hold; retention never deletes it while present.</summary>
    public const string KeepAnnotation = "dolly.io/keep";

    /// <summary>Label on the snapshots of a SnapshotSchedule: the schedule's name.</summary>
    public const string ScheduleLabel = "dolly.io/snapshot-schedule";

    /// <summary>Label on the snapshots of a ClusterSnapshotSchedule: the schedule's name.</summary>
    public const string ClusterScheduleLabel = "dolly.io/cluster-snapshot-schedule";

    /// <summary>
    /// Annotation on a scheduled snapshot of a skipUnchanged schedule, until it has been compared: the claim's
    /// previous snapshot, which it is compared with once ready.
    /// </summary>
    public const string CompareWithAnnotation = "dolly.io/compare-with";

    /// <summary>Annotation on a scheduled snapshot: the UTC time of the run that made it (RFC 3339).</summary>
    public const string RunTimeAnnotation = "dolly.io/scheduled-time";

    /// <summary>The label that marks the snapshots of a schedule of this kind.</summary>
    public static string LabelFor(bool cluster) => cluster ? ClusterScheduleLabel : ScheduleLabel;

    /// <summary>A group schedule's VolumeGroupSnapshot of one run: <c>&lt;schedule&gt;-&lt;UTC yyyyMMddHHmm&gt;</c>.</summary>
    public static string GroupSnapshotName(string schedule, DateTimeOffset run) =>
        $"{schedule}-{run.UtcDateTime.ToString("yyyyMMddHHmm", System.Globalization.CultureInfo.InvariantCulture)}";

    /// <summary><c>&lt;claim&gt;-&lt;schedule&gt;-&lt;UTC yyyyMMddHHmm&gt;</c>.</summary>
    public static string SnapshotName(string claim, string schedule, DateTimeOffset run) =>
        $"{claim}-{schedule}-{run.UtcDateTime.ToString("yyyyMMddHHmm", System.Globalization.CultureInfo.InvariantCulture)}";
}
