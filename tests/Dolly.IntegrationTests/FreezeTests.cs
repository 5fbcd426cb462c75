using System.Globalization;
using System.Text;
using Dolly.Controllers;
using Dolly.Csi;
using Dolly.Csi.NodeV1;

namespace Dolly.IntegrationTests;

/// <summary>
/// Freeze windows for real on <c>dolly up</c>: a claim mounted with <c>dolly mount</c>, a writer appending
/// fixed-size records and fsyncing each, VolumeSnapshots cut with and without <c>dolly.io/freeze</c>. Each
/// snapshot's image, read back through dolly up's NBD server (the bytes a restore clones), is checked with the
/// ext tools: frozen ones must need no journal recovery, pass <c>e2fsck -fn</c> and end on a complete record;
/// unfrozen ones are only counted (how often recovery would run), as that is luck. Also: a caller that opens a
/// freeze window and then hangs is thawed by the node's deadline, one that disappears at once.
/// </summary>
[Collection("dolly-up")]
public sealed class FreezeTests(DollyUp up)
{
    private const string Ns = "freeze";
    private const int RecordSize = 128;
    private const string FileName = "journal.log";

    /// <summary>Frozen snapshots cut for timing (the p99 of their windows is reported).</summary>
    private const int TimedRounds = 40;

    /// <summary>Snapshots of each kind whose images are checked.</summary>
    private const int CheckedRounds = 4;

    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    private async Task SetUpAsync()
    {
        if (up.Unavailable is { } why)
        {
            Assert.Skip(why);
        }

        if (!new[] { "nbdcopy", "debugfs", "fsfreeze" }.All(p => File.Exists("/usr/bin/" + p) || File.Exists("/usr/sbin/" + p)))
        {
            Assert.Skip("nbdcopy, debugfs or fsfreeze is missing (scripts/install-test-deps.sh installs them)");
        }

        await AcceptanceTests.ClassesAsync(up);
        await up.OnceAsync("freeze", async () =>
        {
            (await up.Apply($"apiVersion: v1\nkind: Namespace\nmetadata: {{name: {Ns}}}\n")).ShouldSucceed();
            (await up.Apply($$$"""
                apiVersion: v1
                kind: PersistentVolumeClaim
                metadata: {name: journal, namespace: {{{Ns}}}}
                spec:
                  storageClassName: dolly
                  accessModes: [ReadWriteOnce]
                  resources: {requests: {storage: 128Mi}}
                """)).ShouldSucceed();
            await up.WaitFor("pvc/journal", Ns, ".status.phase", "Bound");
        });
    }

    [Fact]
    public async Task FrozenSnapshots_AreClean_UnderAnFsyncingWriter()
    {
        await SetUpAsync();
        var output = TestContext.Current.TestOutputHelper!;
        var windows = new List<long>();
        var checkedSnapshots = new List<(string Name, bool Frozen)>();
        await up.WithMounted(Ns, "journal", async dir =>
        {
            using var stop = CancellationTokenSource.CreateLinkedTokenSource(Ct);
            var writer = Task.Run(() => Write(Path.Combine(dir, FileName), stop.Token), CancellationToken.None);
            try
            {
                for (int i = 0; i < TimedRounds + CheckedRounds; i++)
                {
                    bool check = i < CheckedRounds * 2;
                    bool frozen = !check || i % 2 == 0;
                    string name = $"j-{i:D3}";
                    await SnapshotAsync(name, frozen);
                    if (frozen)
                    {
                        windows.Add(long.Parse(await up.Field("volumesnapshot/" + name, Ns, ".metadata.annotations.dolly\\.io/frozen-microseconds"), CultureInfo.InvariantCulture));
                    }

                    if (check)
                    {
                        checkedSnapshots.Add((name, frozen));
                    }
                    else
                    {
                        (await up.Kubectl("delete", "volumesnapshot", name, "-n", Ns, "--wait=false")).ShouldSucceed();
                    }

                    Assert.False(writer.IsCompleted, "the writer stopped: " + writer.Exception);
                }
            }
            finally
            {
                await stop.CancelAsync();
                long records = await writer;
                output.WriteLine($"writer appended and fsync'd {records} records of {RecordSize} bytes during the run");
            }
        });

        int recoveriesUnfrozen = 0;
        var problems = new List<string>();
        foreach (var (name, frozen) in checkedSnapshots)
        {
            var image = await ImageAsync(name);
            output.WriteLine($"{name} ({(frozen ? "frozen" : "not frozen")}): {image}");
            if (frozen && !image.Clean)
            {
                problems.Add($"{name}: {image}");
            }

            if (!frozen && image.NeedsRecovery)
            {
                recoveriesUnfrozen++;
            }
        }

        windows.Sort();
        long p99 = windows[(int)Math.Ceiling(0.99 * windows.Count) - 1];
        output.WriteLine($"freeze window over {windows.Count} frozen snapshots: p50 {windows[windows.Count / 2]} us, p99 {p99} us, max {windows[^1]} us (target p99 <= 20000 us)");
        output.WriteLine($"without freeze: {recoveriesUnfrozen} of {checkedSnapshots.Count(c => !c.Frozen)} images needed journal recovery");
        Assert.True(problems.Count == 0, "frozen snapshots that are not clean:\n" + string.Join('\n', problems));
    }

    [Fact]
    public async Task HungCaller_IsThawedByTheDeadline_GoneCaller_AtOnce()
    {
        await SetUpAsync();
        var output = TestContext.Current.TestOutputHelper!;
        string volume = await up.Field("pvc/journal", Ns, ".spec.volumeName");
        string handle = await up.Field("pv/" + volume, null, ".spec.csi.volumeHandle");
        await up.WithMounted(Ns, "journal", async dir =>
        {
            using var channel = DollyControllers.ConnectCsi(Path.Combine(up.Pool, "csi.sock"));
            var node = new DollyNode.DollyNodeClient(channel);

            // Hung: the stream stays open, no thaw ever comes; the node thaws at the 3 s deadline (the probe itself
            // is a process start, so the upper bound leaves room for a loaded machine).
            using (var hung = node.FreezeWindow(cancellationToken: Ct))
            {
                var asked = DateTime.UtcNow;
                await hung.RequestStream.WriteAsync(Freeze(handle, 3000), Ct);
                Assert.True(await hung.ResponseStream.MoveNext(Ct));
                Assert.True(await IsFrozenAsync(dir), "not frozen after the frozen answer");
                // Without the deadline it would stay frozen until the channel closes; the upper bound only has to
                // tell those apart, and a busy machine can be seconds late with the timer and the probe.
                Assert.True(await DollyUp.Eventually(async () => !await IsFrozenAsync(dir), 60), "never thawed by the deadline");
                double after = (DateTime.UtcNow - asked).TotalMilliseconds;
                output.WriteLine($"a hung caller's freeze was seen thawed {after:F0} ms after it was asked for (deadline 3000 ms)");
                Assert.InRange(after, 2900, 30_000);
            }

            // Gone: a caller that dies (its connection reset) long before the deadline is thawed at once.
            var gone = node.FreezeWindow(cancellationToken: Ct);
            await gone.RequestStream.WriteAsync(Freeze(handle, 60_000), Ct);
            Assert.True(await gone.ResponseStream.MoveNext(Ct));
            Assert.True(await IsFrozenAsync(dir));
            gone.Dispose();
            channel.Dispose();
            Assert.True(await DollyUp.Eventually(async () => !await IsFrozenAsync(dir), 30), "not thawed after the caller went away (its 60 s deadline not reached)");
        });
    }

    [Fact]
    public async Task Schedule_WithFreeze_FiresOnTheMinute_FrozenAndReported()
    {
        await SetUpAsync();
        var output = TestContext.Current.TestOutputHelper!;
        await up.WithMounted(Ns, "journal", async dir =>
        {
            (await up.Apply($$$"""
                apiVersion: dolly.io/v1alpha1
                kind: SnapshotSchedule
                metadata: {name: minutely, namespace: {{{Ns}}}}
                spec:
                  schedule: "* * * * *"
                  hooks: {freeze: true, freezeTimeout: 1s}
                  retention: {maxCount: 2}
                """)).ShouldSucceed();
            try
            {
                // The first run at the next minute boundary: its snapshot is frozen, and the schedule says so.
                Assert.True(
                    await DollyUp.Eventually(async () => (await up.Field("snapshotschedule/minutely", Ns, ".status.claims[0].frozenMicroseconds")).Length > 0, 100),
                    "no frozen scheduled snapshot: " + await up.Field("snapshotschedule/minutely", Ns, ".status"));
                string snapshot = await up.Field("snapshotschedule/minutely", Ns, ".status.claims[0].snapshot");
                string due = await up.Field("volumesnapshot/" + snapshot, Ns, ".metadata.annotations.dolly\\.io/scheduled-time");
                string created = await up.Field("volumesnapshot/" + snapshot, Ns, ".metadata.creationTimestamp");
                string frozen = await up.Field("snapshotschedule/minutely", Ns, ".status.claims[0].freeze");
                var lag = DateTimeOffset.Parse(created, CultureInfo.InvariantCulture) - DateTimeOffset.Parse(due, CultureInfo.InvariantCulture);
                output.WriteLine($"schedule firing lag (due {due} -> VolumeSnapshot created {created}, 1 s resolution): {lag.TotalSeconds:F0} s; {frozen}");
                Assert.StartsWith("frozen ", frozen, StringComparison.Ordinal);
                // Less than half the period: this minute's run, not the next one's (a busy machine can be seconds late).
                Assert.InRange(lag.TotalSeconds, 0, 30);
            }
            finally
            {
                (await up.Kubectl("delete", "snapshotschedule", "minutely", "-n", Ns)).ShouldSucceed();
            }
        });
    }

    private static FreezeWindowRequest Freeze(string volume, uint timeoutMs) =>
        new() { Freeze = new FreezeWindowRequest.Types.Freeze { VolumeId = volume, TimeoutMs = timeoutMs } };

    /// <summary>Whether the file system at <paramref name="dir"/> is frozen: fsfreeze -f of a frozen one fails (a successful one is undone).</summary>
    private async Task<bool> IsFrozenAsync(string dir)
    {
        var freeze = await up.RunAsync("fsfreeze", ["-f", dir], null);
        if (freeze.ExitCode == 0)
        {
            (await up.RunAsync("fsfreeze", ["-u", dir], null)).ShouldSucceed();
            return false;
        }

        Assert.Contains("busy", freeze.Stderr, StringComparison.OrdinalIgnoreCase);
        return true;
    }

    private async Task SnapshotAsync(string name, bool frozen)
    {
        string annotations = frozen ? "annotations: {dolly.io/freeze: \"true\"}" : "annotations: {}";
        (await up.Apply($$$"""
            apiVersion: snapshot.storage.k8s.io/v1
            kind: VolumeSnapshot
            metadata: {name: {{{name}}}, namespace: {{{Ns}}}, {{{annotations}}}}
            spec: {source: {persistentVolumeClaimName: journal}}
            """)).ShouldSucceed();
        await up.WaitFor("volumesnapshot/" + name, Ns, ".status.readyToUse", "true");
        if (frozen)
        {
            Assert.True(
                await DollyUp.Eventually(async () => (await up.Field("volumesnapshot/" + name, Ns, ".metadata.annotations.dolly\\.io/freeze-result")).StartsWith("frozen ", StringComparison.Ordinal)),
                $"{name} was not cut frozen: {await up.Field("volumesnapshot/" + name, Ns, ".metadata.annotations")}");
        }
    }

    /// <summary>Appends records (sequence number, filler, checksum) and fsyncs each until stopped; returns how many.</summary>
    private static long Write(string path, CancellationToken ct)
    {
        using var file = new FileStream(path, FileMode.Create, FileAccess.Write, FileShare.Read);
        long seq = 0;
        while (!ct.IsCancellationRequested)
        {
            file.Write(Record(seq++));
            file.Flush(flushToDisk: true);
        }

        return seq;
    }

    private static byte[] Record(long seq)
    {
        string body = $"{seq:D12} ".PadRight(RecordSize - 10, (char)('a' + (seq % 26)));
        uint sum = 0;
        foreach (char c in body)
        {
            sum = (sum * 31) + c;
        }

        return Encoding.ASCII.GetBytes($"{body}{sum % 100_000_000:D8} \n");
    }

    private sealed record Image(bool NeedsRecovery, int FsckExit, long Length, long Records, string? RecordProblem)
    {
        public bool Clean => !NeedsRecovery && FsckExit == 0 && RecordProblem is null;

        public override string ToString() =>
            $"needs_recovery {NeedsRecovery}, e2fsck -fn exit {FsckExit}, {FileName} {Length} bytes = {Records} records{(RecordProblem is null ? ", all complete" : ", " + RecordProblem)}";
    }

    /// <summary>The snapshot's image (through the NBD server) checked without replaying its journal.</summary>
    private async Task<Image> ImageAsync(string snapshot)
    {
        string content = await up.Field("volumesnapshot/" + snapshot, Ns, ".status.boundVolumeSnapshotContentName");
        string handle = await up.Field("volumesnapshotcontent/" + content, null, ".status.snapshotHandle");
        string image = Path.Combine(up.Root, snapshot + ".img");
        (await up.RunAsync("nbdcopy", [$"nbd+unix:///{CsiNames.ToEngineName(handle)}?socket={Path.Combine(up.Pool, "nbd.sock")}", image], null)).ShouldSucceed();
        try
        {
            var header = (await up.RunAsync("dumpe2fs", ["-h", image], null)).ShouldSucceed();
            string features = header.Stdout.Split('\n').FirstOrDefault(l => l.StartsWith("Filesystem features:", StringComparison.Ordinal)) ?? "";
            bool recovery = features.Contains("needs_recovery", StringComparison.Ordinal);
            var fsck = await up.RunAsync("e2fsck", ["-fn", image], null);
            string dump = image + ".log";
            (await up.RunAsync("debugfs", ["-R", $"dump /{FileName} {dump}", image], null)).ShouldSucceed();
            byte[] data = File.Exists(dump) ? await File.ReadAllBytesAsync(dump, Ct) : [];
            return new Image(recovery, fsck.ExitCode, data.Length, data.Length / RecordSize, RecordProblem(data));
        }
        finally
        {
            File.Delete(image);
            File.Delete(image + ".log");
        }
    }

    /// <summary>Null when the data is whole records 0, 1, 2... each intact; otherwise the first problem.</summary>
    private static string? RecordProblem(byte[] data)
    {
        if (data.Length % RecordSize != 0)
        {
            return $"ends {data.Length % RecordSize} bytes into a record";
        }

        for (long seq = 0; seq < data.Length / RecordSize; seq++)
        {
            if (!data.AsSpan((int)(seq * RecordSize), RecordSize).SequenceEqual(Record(seq)))
            {
                return $"record {seq} is not what was written";
            }
        }

        return null;
    }
}
