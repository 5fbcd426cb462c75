using System.Globalization;
using System.Runtime.CompilerServices;
using System.Text;

namespace Dolly.IntegrationTests;

/// <summary>
/// Group snapshots and in-place revert through kubectl and <c>dolly mount</c> on a real <c>dolly up</c>: a writer
/// alternating between two mounted claims shows no cross-volume tear in their group snapshot, and a revert waits
/// while its claim is mounted, goes once it is unmounted, and leaves a safety snapshot that restores what it replaced.
/// </summary>
[Collection("dolly-up")]
public sealed class RevertTests(DollyUp up)
{
    private const string Ns = "undo";

    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    private async Task SetUpAsync()
    {
        if (up.Unavailable is { } why)
        {
            Assert.Skip(why);
        }

        await AcceptanceTests.ClassesAsync(up);
        await up.OnceAsync("undo", async () =>
        {
            (await up.Apply($"apiVersion: v1\nkind: Namespace\nmetadata: {{name: {Ns}}}\n")).ShouldSucceed();

            // dolly up installs the default group class.
            Assert.Equal("true", await up.Field("volumegroupsnapshotclass/dolly-group-snapshots", null, ".metadata.annotations.groupsnapshot\\.storage\\.kubernetes\\.io/is-default-class"));
        });
    }

    private async Task ClaimAsync(string name, string? fromSnapshot = null, Dictionary<string, string>? labels = null)
    {
        string source = fromSnapshot is null ? "" : $"\n  dataSource: {{apiGroup: snapshot.storage.k8s.io, kind: VolumeSnapshot, name: {fromSnapshot}}}";
        string labelText = labels is null ? "" : ", labels: {" + string.Join(", ", labels.Select(l => $"{l.Key}: {l.Value}")) + "}";
        (await up.Apply($$$"""
            apiVersion: v1
            kind: PersistentVolumeClaim
            metadata: {name: {{{name}}}, namespace: {{{Ns}}}{{{labelText}}}}
            spec:
              storageClassName: dolly
              accessModes: [ReadWriteOnce]
              resources: {requests: {storage: 1Gi}}{{{source}}}
            """)).ShouldSucceed();
        await up.WaitFor("pvc/" + name, Ns, ".status.phase", "Bound");
    }

    private async Task SnapshotAsync(string name, string claim)
    {
        (await up.Apply($$$"""
            apiVersion: snapshot.storage.k8s.io/v1
            kind: VolumeSnapshot
            metadata: {name: {{{name}}}, namespace: {{{Ns}}}}
            spec: {source: {persistentVolumeClaimName: {{{claim}}}}}
            """)).ShouldSucceed();
        await up.WaitFor("volumesnapshot/" + name, Ns, ".status.readyToUse", "true");
    }

    private async Task<string> MountAsync(string claim)
    {
        string dir = Path.Combine(up.Root, "mnt", Ns + "-" + claim + "-" + Guid.NewGuid().ToString("N")[..6]);
        (await up.Dolly("mount", $"{Ns}/{claim}", dir)).ShouldSucceed();
        return dir;
    }

    [Fact]
    public async Task GroupSnapshot_OfTwoMountedClaimsUnderAnAlternatingWriter_RestoresWithoutCrossVolumeTear()
    {
        await SetUpAsync();
        var labels = new Dictionary<string, string> { ["app"] = "ledger" };
        await ClaimAsync("wal", labels: labels);
        await ClaimAsync("data", labels: labels);
        string wal = await MountAsync("wal");
        string data = await MountAsync("data");
        long written;
        try
        {
            // Sequence number n goes to wal, durably, then to data: at any instant data <= wal <= data + 1.
            using var stop = new CancellationTokenSource();
            // Progress is waited for, not slept on: on a busy machine the writer may not have written anything 1.5 s
            // in, and the snapshot would then be cut before it started.
            var done = new StrongBox<long>();
            var writer = Task.Run(() => Alternate(wal, data, done, stop.Token), Ct);
            Assert.True(await DollyUp.Eventually(() => Task.FromResult(Volatile.Read(ref done.Value) > 0)), "the writer never wrote");
            (await up.Apply($$$"""
                apiVersion: groupsnapshot.storage.k8s.io/v1beta2
                kind: VolumeGroupSnapshot
                metadata: {name: ledger-1, namespace: {{{Ns}}}}
                spec:
                  source:
                    selector:
                      matchLabels: {app: ledger}
                """)).ShouldSucceed();
            await up.WaitFor("volumegroupsnapshot/ledger-1", Ns, ".status.readyToUse", "true");
            long atReady = Volatile.Read(ref done.Value);
            Assert.True(await DollyUp.Eventually(() => Task.FromResult(Volatile.Read(ref done.Value) > atReady)), $"the writer stopped at {atReady}");
            await stop.CancelAsync();
            written = await writer;
        }
        finally
        {
            (await up.Dolly("unmount", wal)).ShouldSucceed();
            (await up.Dolly("unmount", data)).ShouldSucceed();
        }

        // The members, and which claim each is of; a claim restored from each.
        var members = (await up.Kubectl("get", "volumesnapshot", "-n", Ns, "-l", "dolly.io/volume-group-snapshot=ledger-1",
            "-o", "jsonpath={range .items[*]}{.metadata.name}={.metadata.annotations.dolly\\.io/source-persistent-volume-claim}{\"\\n\"}{end}")).ShouldSucceed()
            .Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => l.Split('=')).ToDictionary(p => p[1], p => p[0], StringComparer.Ordinal);
        Assert.Equal(["data", "wal"], members.Keys.Order(StringComparer.Ordinal));
        await ClaimAsync("wal-restored", members["wal"]);
        await ClaimAsync("data-restored", members["data"]);
        long w = 0, d = 0;
        await up.WithMounted(Ns, "wal-restored", async dir => w = await ReadSequenceAsync(dir), readOnly: true);
        await up.WithMounted(Ns, "data-restored", async dir => d = await ReadSequenceAsync(dir), readOnly: true);

        Assert.True(w > 0 && w < written, $"the group snapshot was cut while the writer ran (wal {w}, data {d}, {written} written)");
        Assert.True(d <= w && w <= d + 1, $"cross-volume tear: wal holds sequence {w}, data holds {d}; one instant has data <= wal <= data + 1");
    }

    [Fact]
    public async Task Revert_WaitsWhileMounted_AppliedAfterUnmount_DataEqualsTheSnapshot_SafetySnapshotRestores()
    {
        await SetUpAsync();
        await ClaimAsync("db");
        await up.WithMounted(Ns, "db", dir => File.WriteAllTextAsync(Path.Combine(dir, "schema.sql"), "v1: orders(id, total)\n", Ct));
        await SnapshotAsync("before-migration", "db");

        // The migration runs, fails half-way, and the claim is still mounted when the revert is asked for.
        string mounted = await MountAsync("db");
        bool unmounted = false;
        try
        {
            await File.WriteAllTextAsync(Path.Combine(mounted, "schema.sql"), "v2: orders(id, total, BROKEN\n", Ct);
            await File.WriteAllTextAsync(Path.Combine(mounted, "half-done.tmp"), "partial", Ct);
            (await up.Apply($$$"""
                apiVersion: dolly.io/v1alpha1
                kind: VolumeRevert
                metadata: {name: undo-migration, namespace: {{{Ns}}}}
                spec: {claimName: db, volumeSnapshotName: before-migration}
                """)).ShouldSucceed();
            Assert.True(await DollyUp.Eventually(async () => (await up.Field("volumerevert/undo-migration", Ns, ".status.holders")).Contains("NBD client", StringComparison.Ordinal)), up.Log);
            Assert.Equal("Pending", await up.Field("volumerevert/undo-migration", Ns, ".status.phase"));
            await Task.Delay(1000, Ct);
            Assert.Equal("Pending", await up.Field("volumerevert/undo-migration", Ns, ".status.phase"));
            Assert.Equal("v2: orders(id, total, BROKEN\n", await File.ReadAllTextAsync(Path.Combine(mounted, "schema.sql"), Ct));
            var table = (await up.Kubectl("get", "volumerevert", "-n", Ns)).ShouldSucceed().Stdout;
            Assert.Matches(@"NAME\s+CLAIM\s+SNAPSHOT\s+PHASE\s+AGE", table);
            Assert.Matches(@"undo-migration\s+db\s+before-migration\s+Pending", table);

            (await up.Dolly("unmount", mounted)).ShouldSucceed();
            unmounted = true;
        }
        finally
        {
            if (!unmounted)
            {
                await up.Dolly("unmount", mounted);
            }
        }

        await up.WaitFor("volumerevert/undo-migration", Ns, ".status.phase", "Succeeded");
        await up.WithMounted(Ns, "db", async dir =>
        {
            Assert.Equal("v1: orders(id, total)\n", await File.ReadAllTextAsync(Path.Combine(dir, "schema.sql"), Ct));
            Assert.False(File.Exists(Path.Combine(dir, "half-done.tmp")));
        });
        var events = (await up.Kubectl("get", "events", "-n", Ns, "--field-selector", "involvedObject.name=db", "-o", "jsonpath={.items[*].reason}")).ShouldSucceed().Stdout;
        Assert.Contains("Reverted", events, StringComparison.Ordinal);

        // The safety snapshot holds what the revert replaced: restored, it shows the failed migration.
        string safety = await up.Field("volumerevert/undo-migration", Ns, ".status.safetySnapshotName");
        Assert.Equal("true", await up.Field("volumesnapshot/" + safety, Ns, ".status.readyToUse"));
        await ClaimAsync("db-before-undo", safety);
        await up.WithMounted(Ns, "db-before-undo", async dir =>
        {
            Assert.Equal("v2: orders(id, total, BROKEN\n", await File.ReadAllTextAsync(Path.Combine(dir, "schema.sql"), Ct));
            Assert.True(File.Exists(Path.Combine(dir, "half-done.tmp")));
        }, readOnly: true);
    }

    /// <summary>Writes sequence numbers 1, 2, ... to wal then data, each made durable before the next write; returns the last one.</summary>
    private static long Alternate(string wal, string data, StrongBox<long> done, CancellationToken stop)
    {
        using var w = new FileStream(Path.Combine(wal, "seq"), FileMode.Create, FileAccess.Write);
        using var d = new FileStream(Path.Combine(data, "seq"), FileMode.Create, FileAccess.Write);
        long n = 0;
        while (!stop.IsCancellationRequested)
        {
            n++;
            var bytes = Encoding.ASCII.GetBytes(n.ToString("D20", CultureInfo.InvariantCulture));
            foreach (var f in new[] { w, d })
            {
                f.Position = 0;
                f.Write(bytes);
                f.Flush(flushToDisk: true);
            }

            Volatile.Write(ref done.Value, n);
        }

        return n;
    }

    private static async Task<long> ReadSequenceAsync(string dir)
    {
        string text = await File.ReadAllTextAsync(Path.Combine(dir, "seq"), Ct);
        return long.Parse(text, CultureInfo.InvariantCulture);
    }
}
