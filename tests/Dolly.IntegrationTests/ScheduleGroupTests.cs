namespace Dolly.IntegrationTests;

/// <summary>
/// Group schedules through kubectl on a real <c>dolly up</c>: a SnapshotSchedule with <c>group: true</c> run now
/// makes one VolumeGroupSnapshot of exactly the selected claims, reports it per claim, and a member restores the
/// data written before the run; a schedule with exec hooks says on this API server, which runs no pods, that they
/// cannot run.
/// </summary>
[Collection("dolly-up")]
public sealed class ScheduleGroupTests(DollyUp up)
{
    private const string Ns = "sched-group";

    private async Task SetUpAsync()
    {
        if (up.Unavailable is { } why)
        {
            Assert.Skip(why);
        }

        await AcceptanceTests.ClassesAsync(up);
        await up.OnceAsync("sched-group", async () =>
        {
            (await up.Apply($"apiVersion: v1\nkind: Namespace\nmetadata: {{name: {Ns}}}\n")).ShouldSucceed();
            await ClaimAsync("ledger-wal", "ledger");
            await ClaimAsync("ledger-data", "ledger");
            await ClaimAsync("scratch", "tmp");
        });
    }

    private async Task ClaimAsync(string name, string app, string? fromSnapshot = null)
    {
        string source = fromSnapshot is null ? "" : $"\n  dataSource: {{apiGroup: snapshot.storage.k8s.io, kind: VolumeSnapshot, name: {fromSnapshot}}}";
        (await up.Apply($$$"""
            apiVersion: v1
            kind: PersistentVolumeClaim
            metadata: {name: {{{name}}}, namespace: {{{Ns}}}, labels: {app: {{{app}}}}}
            spec:
              storageClassName: dolly
              accessModes: [ReadWriteOnce]
              resources: {requests: {storage: 1Gi}}{{{source}}}
            """)).ShouldSucceed();
        await up.WaitFor("pvc/" + name, Ns, ".status.phase", "Bound");
    }

    [Fact]
    public async Task GroupSchedule_RunNow_OneGroupSnapshotOfTheSelectedClaims_MembersRestore()
    {
        await SetUpAsync();
        await up.WithMounted(Ns, "ledger-wal", dir => File.WriteAllTextAsync(Path.Combine(dir, "seq"), "41\n"));
        await up.WithMounted(Ns, "ledger-data", dir => File.WriteAllTextAsync(Path.Combine(dir, "seq"), "41\n"));

        (await up.Apply($$$"""
            apiVersion: dolly.io/v1alpha1
            kind: SnapshotSchedule
            metadata:
              name: ledger
              namespace: {{{Ns}}}
              annotations: {dolly.io/run-now: ""}
            spec:
              schedule: "@daily"
              group: true
              claimSelector: {matchLabels: {app: ledger}}
              retention: {maxCount: 3}
            """)).ShouldSucceed();
        await up.WaitFor("snapshotschedule/ledger", Ns, ".status.claims[0].result", "Created");
        string group = await up.Field("snapshotschedule/ledger", Ns, ".status.claims[0].groupSnapshot");
        Assert.StartsWith("ledger-", group, StringComparison.Ordinal);
        Assert.Equal(group + " " + group, await up.Field("snapshotschedule/ledger", Ns, ".status.claims[*].groupSnapshot"));
        Assert.Equal("ledger-data ledger-wal", await up.Field("snapshotschedule/ledger", Ns, ".status.claims[*].name"));
        await up.WaitFor("volumegroupsnapshot/" + group, Ns, ".status.readyToUse", "true");
        Assert.Equal("ledger", await up.Field("volumegroupsnapshot/" + group, Ns, ".metadata.labels.dolly\\.io/snapshot-schedule"));

        // Members of exactly the selected claims (not scratch), each of which restores what was written.
        var members = (await up.Kubectl("get", "volumesnapshot", "-n", Ns, "-l", "dolly.io/volume-group-snapshot=" + group,
            "-o", "jsonpath={range .items[*]}{.metadata.name}={.metadata.annotations.dolly\\.io/source-persistent-volume-claim}{\"\\n\"}{end}")).ShouldSucceed()
            .Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => l.Split('=')).ToDictionary(p => p[1], p => p[0], StringComparer.Ordinal);
        Assert.Equal(["ledger-data", "ledger-wal"], members.Keys.Order(StringComparer.Ordinal));
        await ClaimAsync("wal-copy", "copy", members["ledger-wal"]);
        string restored = "";
        await up.WithMounted(Ns, "wal-copy", async dir => restored = await File.ReadAllTextAsync(Path.Combine(dir, "seq")), readOnly: true);
        Assert.Equal("41\n", restored);

        // The printer columns and the kept group snapshot, through kubectl.
        await up.WaitFor("snapshotschedule/ledger", Ns, ".status.kept[0].kind", "VolumeGroupSnapshot");
        Assert.Equal(group, await up.Field("snapshotschedule/ledger", Ns, ".status.kept[0].name"));
        var table = (await up.Kubectl("get", "snapshotschedule", "ledger", "-n", Ns)).ShouldSucceed().Stdout;
        Assert.Contains("@daily", table, StringComparison.Ordinal);
    }

    [Fact]
    public async Task ExecHooks_OnDollyUp_SayTheyCannotRun_AndTakeNoSnapshot()
    {
        await SetUpAsync();
        (await up.Apply($$$"""
            apiVersion: dolly.io/v1alpha1
            kind: SnapshotSchedule
            metadata:
              name: hooked
              namespace: {{{Ns}}}
              annotations: {dolly.io/run-now: ""}
            spec:
              schedule: "@daily"
              claimSelector: {matchLabels: {app: tmp}}
              hooks:
                pre: [{command: [sh, -c, "pg_ctl checkpoint"], timeout: 1m}]
                post: [{command: ["true"]}]
            """)).ShouldSucceed();
        await up.WaitFor("snapshotschedule/hooked", Ns, ".status.claims[0].result", "Failed");
        string message = await up.Field("snapshotschedule/hooked", Ns, ".status.claims[0].message");
        Assert.StartsWith("exec hooks cannot run: this API server (the embedded one of dolly up) runs no pods", message, StringComparison.Ordinal);
        Assert.Equal("", (await up.Kubectl("get", "volumesnapshot", "-n", Ns, "-l", "dolly.io/snapshot-schedule=hooked", "-o", "name")).ShouldSucceed().Stdout.Trim());
    }
}
