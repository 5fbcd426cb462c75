using System.Text.Json;
using Dolly.Controllers.Model;
using Dolly.Controllers.Schedules;
using k8s;
using k8s.Autorest;
using k8s.Models;
using Microsoft.Extensions.Time.Testing;

namespace Dolly.Controllers.Tests.Schedules;

/// <summary>
/// Snapshot schedules on the embedded stack (API server, controllers, CSI driver over a real pool) with a fake
/// clock: run-now, scheduled runs that make real ready snapshots, one catch-up run after a long gap, retention
/// that waits for what a pending restore or the keep annotation holds, suspend, skip-unchanged through the
/// driver's SnapshotMetadata service, cluster-wide schedules, and invalid specs reported in status.
/// </summary>
public sealed class ScheduleControllerTests : IAsyncLifetime
{
    private const string Ns = "default";

    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    private readonly FakeTimeProvider _clock = new(DateTimeOffset.UtcNow);
    private ControllerHarness? _h;
    private int _touches;

    private Kubernetes K => _h!.Client;

    public async ValueTask InitializeAsync() => _h = await ControllerHarness.StartAsync("schedules", Ct, time: _clock);

    public async ValueTask DisposeAsync()
    {
        if (_h is not null)
        {
            await _h.DisposeAsync();
        }
    }

    [Fact]
    public async Task Schedule_RunsNow_OnTime_CatchesUpOnce_AndRetentionWaitsForHolders()
    {
        await ClaimAsync("db", new() { ["tier"] = "data" });
        await ClaimAsync("web", new() { ["tier"] = "data" });
        await ClaimAsync("scratch", new() { ["tier"] = "tmp" });

        // Run-now: one ready snapshot per selected claim at once, the annotation removed, the next run at the hour.
        var start = _clock.GetUtcNow();
        await CreateScheduleAsync("hourly", "0 * * * *", "Europe/Berlin", runNow: true, retention: new() { ["maxCount"] = 2 });
        var first = await Until(async () => await ReadySnapshotsAsync("hourly") is { Count: 2 } s ? s : null, "the run-now snapshots");
        Assert.Equal(new[] { Stamp("db", "hourly", start), Stamp("web", "hourly", start) }, first.Select(s => s.Metadata.Name).Order(StringComparer.Ordinal));
        Assert.All(first, s => Assert.Equal("hourly", s.Metadata.Labels[ScheduleNames.ScheduleLabel]));
        var status = await Until(
            async () => await ReadScheduleAsync("hourly") is { Status: { Kept.Count: 2 } st } s && st.Kept.All(k => k.Reason != "not ready yet") && s.Metadata.Annotations?.ContainsKey(ScheduleNames.RunNowAnnotation) != true ? st : null,
            "status after run-now");
        Assert.Equal(["db:Created", "web:Created"], status.Claims!.Select(c => $"{c.Name}:{c.Result}"));
        Assert.Equal(NextHour(start), Offset(status.NextRun));
        Assert.All(status.Kept!, k => Assert.Equal("retention: maxCount 2", k.Reason));

        // At the hour: the scheduled run, stamped with the scheduled time.
        var hour1 = NextHour(start);
        await AdvanceToAsync(hour1.AddSeconds(1), "hourly");
        await Until(async () => (await ReadySnapshotsAsync("hourly")).Any(s => s.Metadata.Name == Stamp("db", "hourly", hour1)), "the first scheduled run");

        // Down for five hours: one catch-up run for the latest missed hour, not five.
        var hour6 = hour1.AddHours(5);
        await AdvanceToAsync(hour6.AddMinutes(20), "hourly");
        await Until(async () => (await ReadySnapshotsAsync("hourly")).Any(s => s.Metadata.Name == Stamp("web", "hourly", hour6)), "the catch-up run");
        var afterCatchUp = await Until(async () => await SnapshotsAsync("hourly") is { Count: 4 } s ? s : null, "retention down to two per claim");
        Assert.Equal(
            new[] { Stamp("db", "hourly", hour1), Stamp("db", "hourly", hour6), Stamp("web", "hourly", hour1), Stamp("web", "hourly", hour6) },
            afterCatchUp.Select(s => s.Metadata.Name).Order(StringComparer.Ordinal));
        var runs = (await K.CoreV1.ListNamespacedEventAsync(Ns, cancellationToken: Ct)).Items.Where(e => e.InvolvedObject.Name == "hourly" && e.Reason == "ScheduledRun").Select(e => e.Message).Order(StringComparer.Ordinal).ToList();
        Assert.Equal(3, runs.Count);
        Assert.Single(runs, m => m.Contains("(run-now): 2 created", StringComparison.Ordinal));
        Assert.Single(runs, m => m.Contains("(catch-up): 2 created", StringComparison.Ordinal));

        // Holders: the user pins db's older snapshot; a claim that cannot be provisioned yet (its class is missing)
        // restores from web's older one.
        string pinned = Stamp("db", "hourly", hour1);
        string restoring = Stamp("web", "hourly", hour1);
        await PatchSnapshotAsync(pinned, new { metadata = new { annotations = new Dictionary<string, string> { [ScheduleNames.KeepAnnotation] = "true" } } });
        var copy = DriverStack.Claim("web-copy", "1Gi", new V1TypedLocalObjectReference { ApiGroup = Names.SnapshotGroup, Kind = "VolumeSnapshot", Name = restoring });
        copy.Spec.StorageClassName = "later";
        await K.CoreV1.CreateNamespacedPersistentVolumeClaimAsync(copy, Ns, cancellationToken: Ct);

        var hour7 = hour6.AddHours(1);
        await AdvanceToAsync(hour7, "hourly");
        var held = await Until(
            async () => await ReadScheduleAsync("hourly") is { Status.Kept: { Count: 6 } kept } && kept.All(k => k.Reason != "not ready yet") ? kept : null,
            "the held snapshots reported");
        Assert.Equal("held: annotation dolly.io/keep", held.Single(k => k.Name == pinned).Reason);
        Assert.Equal($"in use: restore source of {Ns}/web-copy", held.Single(k => k.Name == restoring).Reason);
        Assert.Equal(6, (await SnapshotsAsync("hourly")).Count);

        // Released: the class appears, the copy binds, and the policy's verdict is carried out; likewise when the pin goes.
        await K.StorageV1.CreateStorageClassAsync(new V1StorageClass { Metadata = new V1ObjectMeta { Name = "later" }, Provisioner = "csi.dolly.io", ReclaimPolicy = "Delete" }, cancellationToken: Ct);
        await Until(async () => (await K.CoreV1.ReadNamespacedPersistentVolumeClaimAsync("web-copy", Ns, cancellationToken: Ct)).Status?.Phase == "Bound", "the restore bound");
        await Until(async () => (await SnapshotsAsync("hourly")).All(s => s.Metadata.Name != restoring), "the released restore source deleted");
        Assert.Contains(pinned, (await SnapshotsAsync("hourly")).Select(s => s.Metadata.Name));
        await PatchSnapshotAsync(pinned, new { metadata = new { annotations = new Dictionary<string, string?> { [ScheduleNames.KeepAnnotation] = null } } });
        await Until(async () => await SnapshotsAsync("hourly") is { Count: 4 } s && s.All(x => x.Metadata.Name != pinned), "the unpinned snapshot deleted");

        // Suspended: time passes, nothing runs, no next run is shown.
        await PatchScheduleAsync("hourly", new { spec = new { suspend = true } });
        await Until(async () => await ReadScheduleAsync("hourly") is { Spec.Suspend: true, Status.NextRun: null }, "no next run while suspended");
        await AdvanceToAsync(hour7.AddHours(3), "hourly");
        await Task.Delay(500, Ct);
        Assert.Equal(4, (await SnapshotsAsync("hourly")).Count);
    }

    [Fact]
    public async Task SkipUnchanged_RemovesTheNewSnapshot_OnlyWhenNoBlockChanged()
    {
        await ClaimAsync("db", new() { ["tier"] = "data" });
        var start = _clock.GetUtcNow();
        string first = Stamp("db", "quiet", start);
        await CreateScheduleAsync("quiet", "0 * * * *", null, runNow: true, skipUnchanged: true);
        await Until(async () => await ReadySnapshotsAsync("quiet") is { Count: 1 } s && s[0].Metadata.Annotations?.ContainsKey(ScheduleNames.CompareWithAnnotation) != true, "the first snapshot, with nothing to compare with");

        // Nothing written since: the next run's snapshot is compared with the first and removed.
        var hour1 = NextHour(start);
        await AdvanceToAsync(hour1, "quiet");
        var skipped = await Until(async () => await ReadScheduleAsync("quiet") is { Status.Claims: [{ Result: "Skipped" } r] } ? r : null, "the unchanged run skipped");
        Assert.Equal($"no block changed since {first}", skipped.Message);
        await Until(async () => (await SnapshotsAsync("quiet")).Select(x => x.Metadata.Name).SequenceEqual([first]), "only the first snapshot left");

        // One block written: the next run's snapshot differs and stays, no longer marked for comparison.
        var claim = await K.CoreV1.ReadNamespacedPersistentVolumeClaimAsync("db", Ns, cancellationToken: Ct);
        var pv = await K.CoreV1.ReadPersistentVolumeAsync(claim.Spec.VolumeName, cancellationToken: Ct);
        var device = _h!.Stack.Pool.OpenDevice(pv.Spec.Csi.VolumeHandle).Value;
        Assert.True(device.Write(1 << 20, Enumerable.Repeat((byte)0x5A, 4096).ToArray()).IsOk);
        Assert.True(device.Flush().IsOk);
        var hour2 = hour1.AddHours(1);
        await AdvanceToAsync(hour2, "quiet");
        var kept = await Until(
            async () => await ReadySnapshotsAsync("quiet") is { Count: 2 } s && s.All(x => x.Metadata.Annotations?.ContainsKey(ScheduleNames.CompareWithAnnotation) != true) ? s : null,
            "the changed run's snapshot kept");
        Assert.Equal([first, Stamp("db", "quiet", hour2)], kept.Select(x => x.Metadata.Name).Order(StringComparer.Ordinal));
        var status = await Until(async () => await ReadScheduleAsync("quiet") is { Status.Claims: [{ Result: "Created" } r] } ? r : null, "the changed run's result");
        Assert.Null(status.Message);
    }

    [Fact]
    public async Task ClusterSchedule_SelectsNamespacesByLabel()
    {
        await K.CoreV1.CreateNamespaceAsync(new V1Namespace { Metadata = new V1ObjectMeta { Name = "team-a", Labels = new Dictionary<string, string> { ["backup"] = "yes" } } }, cancellationToken: Ct);
        await K.CoreV1.CreateNamespaceAsync(new V1Namespace { Metadata = new V1ObjectMeta { Name = "team-b" } }, cancellationToken: Ct);
        await ClaimAsync("db", new(), "team-a");
        await ClaimAsync("db", new(), "team-b");
        var start = _clock.GetUtcNow();
        await K.CustomObjects.CreateClusterCustomObjectAsync(
            new Dictionary<string, object>
            {
                ["apiVersion"] = ScheduleNames.ApiVersion,
                ["kind"] = ScheduleNames.ClusterKind,
                ["metadata"] = new Dictionary<string, object> { ["name"] = "nightly", ["annotations"] = new Dictionary<string, string> { [ScheduleNames.RunNowAnnotation] = "" } },
                ["spec"] = new Dictionary<string, object> { ["schedule"] = "@daily", ["namespaceSelector"] = new Dictionary<string, object> { ["matchLabels"] = new Dictionary<string, string> { ["backup"] = "yes" } } },
            },
            ScheduleNames.Group, ScheduleNames.Version, ScheduleNames.ClusterPlural, cancellationToken: Ct);
        var made = await Until(async () => await SnapshotsAsync("nightly", cluster: true) is { Count: 1 } s && s[0].Status?.ReadyToUse == true ? s : null, "the cluster schedule's snapshot");
        Assert.Equal(("team-a", Stamp("db", "nightly", start)), (made[0].Metadata.NamespaceProperty, made[0].Metadata.Name));
        var schedule = await Until(async () => Deserialize<SnapshotSchedule>(await K.CustomObjects.GetClusterCustomObjectAsync(ScheduleNames.Group, ScheduleNames.Version, ScheduleNames.ClusterPlural, "nightly", Ct)) is { Status.KeptCount: 1 } s ? s : null, "cluster status");
        Assert.Equal("UTC", schedule.Spec.TimeZone);
        Assert.Equal("team-a", schedule.Status!.Kept!.Single().Namespace);
        Assert.Equal(start.UtcDateTime.Date.AddDays(1), schedule.Status.NextRun);
    }

    [Fact]
    public async Task InvalidSchedules_AreReported_OrRefused()
    {
        await CreateScheduleAsync("broken", "0 3 * * *", "Mars/Olympus", runNow: true);
        var error = await Until(async () => (await ReadScheduleAsync("broken")).Status?.Error, "the error in status");
        Assert.Contains("spec.timeZone \"Mars/Olympus\" is not a known IANA time zone", error, StringComparison.Ordinal);
        Assert.Empty(await SnapshotsAsync("broken"));
        var events = await Until(async () => (await K.CoreV1.ListNamespacedEventAsync(Ns, cancellationToken: Ct)).Items.Where(e => e.InvolvedObject.Name == "broken").ToList() is { Count: > 0 } l ? l : null, "the warning event");
        Assert.Contains(events, e => e.Type == "Warning" && e.Reason == "InvalidSchedule");

        // Fixed: the error goes and the schedule runs.
        await PatchScheduleAsync("broken", new { spec = new { timeZone = "Asia/Tokyo" } });
        await Until(async () => await ReadScheduleAsync("broken") is { Status: { Error: null, NextRun: not null } }, "the error cleared");

        // A class that does not exist: no run (each would leave a snapshot that never becomes ready) until it does.
        await CreateScheduleAsync("classy", "@daily", null, runNow: true, snapshotClass: "gold");
        var classError = await Until(async () => (await ReadScheduleAsync("classy")).Status?.Error, "the missing class reported");
        Assert.Contains("spec.snapshotClassName \"gold\" names no VolumeSnapshotClass", classError, StringComparison.Ordinal);
        Assert.Empty(await SnapshotsAsync("classy"));
        await K.CustomObjects.CreateClusterCustomObjectAsync(
            new Dictionary<string, object> { ["apiVersion"] = "snapshot.storage.k8s.io/v1", ["kind"] = "VolumeSnapshotClass", ["metadata"] = new Dictionary<string, object> { ["name"] = "gold" }, ["driver"] = "csi.dolly.io", ["deletionPolicy"] = "Delete" },
            Names.SnapshotGroup, "v1", "volumesnapshotclasses", cancellationToken: Ct);
        await Until(async () => await ReadScheduleAsync("classy") is { Status: { Error: null, NextRun: not null } } s && s.Metadata.Annotations?.ContainsKey(ScheduleNames.RunNowAnnotation) != true, "the schedule running once the class exists");

        // What the schema can tell is refused by the API server itself.
        var refused = await Assert.ThrowsAsync<HttpOperationException>(() => CreateScheduleAsync("bad-age", "@daily", null, runNow: false, retention: new() { ["maxAge"] = "7 days" }));
        Assert.Equal(System.Net.HttpStatusCode.UnprocessableEntity, refused.Response.StatusCode);
        Assert.Contains("maxAge", refused.Response.Content, StringComparison.Ordinal);
    }

    // ---- helpers -----------------------------------------------------------------------------------

    private static string Stamp(string claim, string schedule, DateTimeOffset run) => ScheduleNames.SnapshotName(claim, schedule, run);

    private static DateTimeOffset NextHour(DateTimeOffset t) => new DateTimeOffset(t.Year, t.Month, t.Day, t.Hour, 0, 0, TimeSpan.Zero).AddHours(1);

    private static DateTimeOffset? Offset(DateTime? t) => t is { } v ? new DateTimeOffset(DateTime.SpecifyKind(v, DateTimeKind.Utc)) : null;

    private static T Deserialize<T>(object o) => KubernetesJson.Deserialize<T>(((JsonElement)o).GetRawText());

    /// <summary>Moves the fake clock and makes the controller look (the real requeue timer runs on real time).</summary>
    private async Task AdvanceToAsync(DateTimeOffset at, string schedule)
    {
        _clock.AdjustTime(at);
        await PatchScheduleAsync(schedule, new { metadata = new { annotations = new Dictionary<string, string> { ["test/touch"] = (++_touches).ToString(System.Globalization.CultureInfo.InvariantCulture) } } });
    }

    private async Task ClaimAsync(string name, Dictionary<string, string> labels, string ns = Ns)
    {
        var claim = DriverStack.Claim(name, "1Gi");
        claim.Metadata.Labels = labels;
        await K.CoreV1.CreateNamespacedPersistentVolumeClaimAsync(claim, ns, cancellationToken: Ct);
        await Until(async () => (await K.CoreV1.ReadNamespacedPersistentVolumeClaimAsync(name, ns, cancellationToken: Ct)).Status?.Phase == "Bound", $"claim {ns}/{name} bound");
    }

    private async Task CreateScheduleAsync(string name, string cron, string? zone, bool runNow, Dictionary<string, object>? retention = null, bool skipUnchanged = false, string? snapshotClass = null)
    {
        var spec = new Dictionary<string, object> { ["schedule"] = cron, ["claimSelector"] = new Dictionary<string, object> { ["matchLabels"] = new Dictionary<string, string> { ["tier"] = "data" } } };
        if (zone is not null)
        {
            spec["timeZone"] = zone;
        }

        if (retention is not null)
        {
            spec["retention"] = retention;
        }

        if (skipUnchanged)
        {
            spec["skipUnchanged"] = true;
        }

        if (snapshotClass is not null)
        {
            spec["snapshotClassName"] = snapshotClass;
        }

        var meta = new Dictionary<string, object> { ["name"] = name };
        if (runNow)
        {
            meta["annotations"] = new Dictionary<string, string> { [ScheduleNames.RunNowAnnotation] = "" };
        }

        await K.CustomObjects.CreateNamespacedCustomObjectAsync(
            new Dictionary<string, object> { ["apiVersion"] = ScheduleNames.ApiVersion, ["kind"] = ScheduleNames.NamespacedKind, ["metadata"] = meta, ["spec"] = spec },
            ScheduleNames.Group, ScheduleNames.Version, Ns, ScheduleNames.NamespacedPlural, cancellationToken: Ct);
    }

    private async Task<SnapshotSchedule> ReadScheduleAsync(string name) =>
        Deserialize<SnapshotSchedule>(await K.CustomObjects.GetNamespacedCustomObjectAsync(ScheduleNames.Group, ScheduleNames.Version, Ns, ScheduleNames.NamespacedPlural, name, Ct));

    private async Task PatchScheduleAsync(string name, object patch) =>
        await K.CustomObjects.PatchNamespacedCustomObjectAsync(new V1Patch(KubernetesJson.Serialize(patch), V1Patch.PatchType.MergePatch), ScheduleNames.Group, ScheduleNames.Version, Ns, ScheduleNames.NamespacedPlural, name, cancellationToken: Ct);

    private async Task PatchSnapshotAsync(string name, object patch) =>
        await K.CustomObjects.PatchNamespacedCustomObjectAsync(new V1Patch(KubernetesJson.Serialize(patch), V1Patch.PatchType.MergePatch), Names.SnapshotGroup, "v1", Ns, "volumesnapshots", name, cancellationToken: Ct);

    /// <summary>The snapshots of a schedule that are not being deleted.</summary>
    private async Task<List<VolumeSnapshot>> SnapshotsAsync(string schedule, bool cluster = false)
    {
        var list = Deserialize<CustomObjectList<VolumeSnapshot>>(await K.CustomObjects.ListClusterCustomObjectAsync(
            Names.SnapshotGroup, "v1", "volumesnapshots", labelSelector: ScheduleNames.LabelFor(cluster) + "=" + schedule, cancellationToken: Ct));
        return [.. list.Items.Where(s => s.Metadata.DeletionTimestamp is null)];
    }

    private async Task<List<VolumeSnapshot>> ReadySnapshotsAsync(string schedule) =>
        [.. (await SnapshotsAsync(schedule)).Where(s => s.Status?.ReadyToUse == true)];

    private static Task<T> Until<T>(Func<Task<T?>> probe, string what, int seconds = 60)
        => Eventually.Until(probe, what, seconds);

    private static async Task Until(Func<Task<bool>> probe, string what) => await Until<object>(async () => await probe() ? true : null, what);
}
