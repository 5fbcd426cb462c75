using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Text;
using System.Text.Json;
using Dolly.Bench;
using Dolly.Controllers.Model;
using Dolly.Storage;
using Spectre.Console;
using k8s;
using k8s.Autorest;
using k8s.Models;
using Microsoft.Extensions.Logging.Abstractions;
using Names = Dolly.Controllers.Model.Names;

namespace Dolly.Commands;

/// <summary>
/// The second act of <c>dolly demo</c>: Dolly's main job, instant copies of Kubernetes volumes, through the
/// real stack. What <c>dolly up</c> runs (API server, CSI driver, controllers; no NBD server, since nothing is
/// mounted) starts in this process over the demo's pool; objects are applied with the official
/// KubernetesClient, as kubectl would apply them, and every wait is a watch, as <c>kubectl wait</c> is. The
/// pool object is shared with the CSI driver, so the payload is written and read back through the engine,
/// where a pod would use its mount.
/// </summary>
internal sealed class DemoKubernetesAct(CliContext context, Pool pool)
{
    private const string Ns = "demo";
    private const string Driver = DefaultClasses.Driver;
    private const string StorageClass = DefaultClasses.StorageClassName;
    private const string SnapshotClass = DefaultClasses.SnapshotClassName;
    private const string SnapshotVersion = "v1";
    private const int PayloadSize = 4096;
    private static readonly TimeSpan WaitTimeout = TimeSpan.FromSeconds(60);

    private LocalStack _stack = null!;
    private E2eWatch<V1PersistentVolumeClaim> _claims = null!;
    private E2eWatch<VolumeSnapshot> _snapshots = null!;

    private Kubernetes Kube => _stack.Client;

    private TextWriter Out => context.Host.Out;

    /// <summary>What the summary reports: milliseconds from apply to the condition a watch saw.</summary>
    private sealed record Timings(double Bound, double SnapshotReady, double RestoreBound, double CloneBound, double Refused);

    /// <summary>
    /// Runs the act, numbering its steps after <paramref name="step"/>; returns the last step's number. A
    /// failure is a <see cref="CliFailureException"/> naming what failed, after the stack is stopped.
    /// </summary>
    public async Task<int> RunAsync(int step, CancellationToken ct)
    {
        try
        {
            return await RunStackAsync(step, ct).ConfigureAwait(false);
        }
        catch (HttpOperationException ex) when (ex.Response.StatusCode == HttpStatusCode.Conflict && ex.Request.RequestUri?.AbsolutePath == "/api/v1/namespaces")
        {
            throw new CliFailureException(
                ExitCodes.AlreadyExists,
                $"namespace '{Ns}' already exists in the API server state '{CliContext.BesidePool(pool.Directory, "-api")}': the demo needs a pool whose Kubernetes objects it owns (run it without --pool for a scratch pool)");
        }
        catch (HttpOperationException ex)
        {
            throw new CliFailureException(ExitCodes.Unexpected, $"the API server refused {ex.Request.Method} {ex.Request.RequestUri?.AbsolutePath}: {(int)ex.Response.StatusCode} {ApiMessage(ex)}");
        }
        catch (HttpRequestException ex)
        {
            throw new CliFailureException(ExitCodes.Unexpected, $"lost the connection to the API server: {ex.Message}");
        }
    }

    private async Task<int> RunStackAsync(int step, CancellationToken ct)
    {
        Say(++step, "Start, in this process and over the same pool, what 'dolly up' runs: the API server (a free port), the CSI driver and the controllers. No NBD server: nothing is mounted.");
        long started = Stopwatch.GetTimestamp();
        var stack = await LocalStack.StartAsync(pool, new LocalStackOptions { Port = 0 }, NullLoggerFactory.Instance, ct).ConfigureAwait(false);
        await using var stackLifetime = stack.ConfigureAwait(false);
        _stack = stack;
        Out.WriteLine($"API server   {stack.Api!.Url} (kubeconfig {stack.Api.KubeconfigPath})");
        Out.WriteLine($"CSI driver   {Driver} on {stack.Csi.SocketPath} (Identity, Controller, GroupController, SnapshotMetadata)");
        Out.WriteLine("controllers  snapshot, snapshotter, group snapshot, provisioner, resizer, volume binder, StatefulSet claims; dolly.io: schedules, golden snapshots, reverts");
        Out.WriteLine($"started in {Took(started)}");

        var (last, t) = await RunStepsAsync(step, ct).ConfigureAwait(false);

        Say(++last, "Stop the controllers, the CSI driver and the API server.");
        started = Stopwatch.GetTimestamp();
        await stack.DisposeAsync().ConfigureAwait(false);
        Out.WriteLine($"stopped in {Took(started)}");

        Out.WriteLine();
        Out.WriteLine("In Kubernetes terms (from apply to what 'kubectl wait' sees):");
        Out.WriteLine($"   1 GiB claim Bound            {Duration(t.Bound),10}");
        Out.WriteLine($"   VolumeSnapshot readyToUse    {Duration(t.SnapshotReady),10}");
        Out.WriteLine($"   restore claim Bound          {Duration(t.RestoreBound),10}   holds the snapshot's bytes");
        Out.WriteLine($"   clone claim Bound            {Duration(t.CloneBound),10}   holds the source's bytes at clone time");
        Out.WriteLine($"   too-small restore refused    {Duration(t.Refused),10}   stays Pending, with a ProvisioningFailed event");
        return last;
    }

    /// <summary>Everything between starting and stopping the stack; returns the last step's number and the timings.</summary>
    private async Task<(int Step, Timings Timings)> RunStepsAsync(int step, CancellationToken ct)
    {
        long started;
        Say(++step, "The classes, as 'kubectl apply' would create them, and a namespace. The demo talks to the API server with the official KubernetesClient, so it needs no kubectl.");
        Echo("kubectl apply -f classes.yaml   # StorageClass dolly (provisioner csi.dolly.io), VolumeSnapshotClass dolly-snapshots (the default)");
        started = Stopwatch.GetTimestamp();
        bool newClass = await CreateAsync(() => Kube.StorageV1.CreateStorageClassAsync(DefaultClasses.StorageClass(), cancellationToken: ct)).ConfigureAwait(false);
        Out.WriteLine($"storageclass.storage.k8s.io/{StorageClass} {(newClass ? "created" : "already there, kept")} in {Took(started)}");
        started = Stopwatch.GetTimestamp();
        bool newSnapshotClass = await CreateAsync(() => Kube.CustomObjects.CreateClusterCustomObjectAsync(
            DefaultClasses.SnapshotClass(),
            Names.SnapshotGroup,
            SnapshotVersion,
            "volumesnapshotclasses",
            cancellationToken: ct)).ConfigureAwait(false);
        Out.WriteLine($"volumesnapshotclass.snapshot.storage.k8s.io/{SnapshotClass} {(newSnapshotClass ? "created" : "already there, kept")} in {Took(started)}");
        Echo($"kubectl create namespace {Ns}");
        started = Stopwatch.GetTimestamp();
        await Kube.CoreV1.CreateNamespaceAsync(new V1Namespace { Metadata = new V1ObjectMeta { Name = Ns } }, cancellationToken: ct).ConfigureAwait(false);
        Out.WriteLine($"namespace/{Ns} created in {Took(started)}");

        await using var claims = new E2eWatch<V1PersistentVolumeClaim>(
            "PersistentVolumeClaim",
            async c =>
            {
                var l = await Kube.CoreV1.ListNamespacedPersistentVolumeClaimAsync(Ns, cancellationToken: c).ConfigureAwait(false);
                return (l.Items, l.Metadata.ResourceVersion);
            },
            (rv, c) => Kube.CoreV1.WatchListNamespacedPersistentVolumeClaimAsync(Ns, allowWatchBookmarks: true, resourceVersion: rv, timeoutSeconds: 3600, cancellationToken: c));
        await using var snapshots = new E2eWatch<VolumeSnapshot>(
            "VolumeSnapshot",
            async c =>
            {
                var list = (JsonElement)await Kube.CustomObjects.ListNamespacedCustomObjectAsync(Names.SnapshotGroup, SnapshotVersion, Ns, "volumesnapshots", cancellationToken: c).ConfigureAwait(false);
                var items = list.GetProperty("items").EnumerateArray().Select(e => KubernetesJson.Deserialize<VolumeSnapshot>(e.GetRawText())).ToList();
                return (items, list.GetProperty("metadata").GetProperty("resourceVersion").GetString() ?? string.Empty);
            },
            WatchSnapshotsAsync);
        (_claims, _snapshots) = (claims, snapshots);
        await Task.WhenAll(claims.StartAsync(), snapshots.StartAsync()).ConfigureAwait(false);

        Say(++step, "A 1 GiB PersistentVolumeClaim 'data'. The provisioner creates its volume through CSI; the binder binds it.");
        Echo($"kubectl apply -n {Ns} -f data.yaml   # PersistentVolumeClaim data: 1Gi of class {StorageClass}");
        Echo($"kubectl wait -n {Ns} pvc/data --for=jsonpath='{{.status.phase}}'=Bound");
        var (boundMs, data) = await ApplyClaimAsync("data", "1Gi", null, ct).ConfigureAwait(false);
        Out.WriteLine($"persistentvolumeclaim/data Bound to {Volume(data)} in {Duration(boundMs)}");

        Say(++step, "Write into it. A pod would write through its mount; the demo shares the pool with the CSI driver, so it writes through the engine.");
        byte[] original = Payload("Hello from Dolly\n");
        started = Stopwatch.GetTimestamp();
        Write(data.Handle, original);
        Out.WriteLine($"wrote \"Hello from Dolly\" (padded to 4 KiB) at offset 0 of {data.Handle} and flushed in {Took(started)}");

        Say(++step, "Snapshot it. The CSI driver's snapshot shares the volume's block map: the time does not depend on its size or data.");
        Echo($"kubectl apply -n {Ns} -f snapshot.yaml   # VolumeSnapshot data-snap of claim data (default class)");
        Echo($"kubectl wait -n {Ns} volumesnapshot/data-snap --for=jsonpath='{{.status.readyToUse}}'=true");
        var ready = _snapshots.Expect(Ns, "data-snap", s => s.Status?.ReadyToUse == true);
        started = Stopwatch.GetTimestamp();
        await Kube.CustomObjects.CreateNamespacedCustomObjectAsync(
            new VolumeSnapshot
            {
                Metadata = new V1ObjectMeta { Name = "data-snap", NamespaceProperty = Ns },
                Spec = new VolumeSnapshotSpec { Source = new VolumeSnapshotSource { PersistentVolumeClaimName = "data" } },
            },
            Names.SnapshotGroup,
            SnapshotVersion,
            Ns,
            "volumesnapshots",
            cancellationToken: ct).ConfigureAwait(false);
        double snapshotMs = Ms(started, await WaitAsync(ready, "VolumeSnapshot demo/data-snap", "status.readyToUse true", () => Status(_snapshots.Last(Ns, "data-snap")?.Status), ct).ConfigureAwait(false));
        var snapshot = _snapshots.Last(Ns, "data-snap")!;
        Out.WriteLine($"volumesnapshot/data-snap readyToUse in {Duration(snapshotMs)} (content {snapshot.Status?.BoundVolumeSnapshotContentName}, restoreSize {snapshot.Status?.RestoreSize})");

        Say(++step, "Restore the snapshot into a new claim, and clone 'data' into another, both at once.");
        Echo($"kubectl apply -n {Ns} -f restore.yaml   # PersistentVolumeClaim data-restore: 1Gi, dataSource VolumeSnapshot data-snap");
        Echo($"kubectl apply -n {Ns} -f clone.yaml     # PersistentVolumeClaim data-clone: 1Gi, dataSource PersistentVolumeClaim data");
        Echo($"kubectl wait -n {Ns} pvc/data-restore pvc/data-clone --for=jsonpath='{{.status.phase}}'=Bound");
        var restoring = ApplyClaimAsync("data-restore", "1Gi", new V1TypedLocalObjectReference { ApiGroup = Names.SnapshotGroup, Kind = "VolumeSnapshot", Name = "data-snap" }, ct);
        var cloning = ApplyClaimAsync("data-clone", "1Gi", new V1TypedLocalObjectReference { Kind = "PersistentVolumeClaim", Name = "data" }, ct);
        var (restoreMs, restore) = await restoring.ConfigureAwait(false);
        var (cloneMs, clone) = await cloning.ConfigureAwait(false);
        Out.WriteLine($"persistentvolumeclaim/data-restore Bound to {Volume(restore)} in {Duration(restoreMs)}");
        Out.WriteLine($"persistentvolumeclaim/data-clone Bound to {Volume(clone)} in {Duration(cloneMs)}");

        Say(++step, "Overwrite 'data', then read the first 4 KiB of each volume back through the engine.");
        byte[] changed = Payload("Goodbye from Dolly, overwritten\n");
        started = Stopwatch.GetTimestamp();
        Write(data.Handle, changed);
        Out.WriteLine($"wrote \"Goodbye from Dolly, overwritten\" at offset 0 of {data.Handle} and flushed in {Took(started)}");
        var table = CliContext.NewTable("CLAIM", "VOLUME", "FIRST LINE", "HOLDS");
        bool copiesKept = true;
        foreach (var (claim, handle, expected, what) in new[]
        {
            ("data", data.Handle, changed, "the new bytes"),
            ("data-restore", restore.Handle, original, "the snapshot's bytes"),
            ("data-clone", clone.Handle, original, "the bytes at clone time"),
        })
        {
            byte[] read = Read(handle);
            bool same = read.AsSpan().SequenceEqual(expected);
            copiesKept &= same;
            table.AddRow(claim, handle, Markup.Escape(FirstLine(read)), same ? what : "MISMATCH");
        }

        context.Out.Write(table);
        if (!copiesKept)
        {
            throw new CliFailureException(ExitCodes.Corrupt, "a volume read back other bytes than the demo wrote (see MISMATCH above)");
        }

        Out.WriteLine("   the restore and the clone hold the original 4 KiB byte for byte; only 'data' changed");

        Say(++step, "A bad input: a restore asking for 512Mi from the 1Gi snapshot. The provisioner refuses it; the claim stays Pending and an event says why.");
        Echo($"kubectl apply -n {Ns} -f too-small.yaml   # PersistentVolumeClaim too-small: 512Mi, dataSource VolumeSnapshot data-snap");
        Echo($"kubectl get events -n {Ns} --field-selector involvedObject.name=too-small,reason=ProvisioningFailed");
        started = Stopwatch.GetTimestamp();
        var refusedEvent = WaitForEventAsync("too-small", "ProvisioningFailed", ct);
        await CreateClaimAsync("too-small", "512Mi", new V1TypedLocalObjectReference { ApiGroup = Names.SnapshotGroup, Kind = "VolumeSnapshot", Name = "data-snap" }, ct).ConfigureAwait(false);
        var (refused, refusedAt) = await refusedEvent.ConfigureAwait(false);
        double refusedMs = Ms(started, refusedAt);
        var tooSmall = await Kube.CoreV1.ReadNamespacedPersistentVolumeClaimAsync("too-small", Ns, cancellationToken: ct).ConfigureAwait(false);
        Out.WriteLine($"{refused.Type} {refused.Reason} persistentvolumeclaim/too-small: {refused.Message} (after {Duration(refusedMs)})");
        Out.WriteLine($"persistentvolumeclaim/too-small is {tooSmall.Status?.Phase ?? "(no phase)"}{(tooSmall.Spec?.VolumeName is { Length: > 0 } v ? $" (bound to {v})" : ": no volume was created")}");
        if (tooSmall.Status?.Phase is { } phase && phase != "Pending")
        {
            throw new CliFailureException(ExitCodes.Unexpected, $"persistentvolumeclaim/too-small should stay Pending, but it is {phase}");
        }

        return (step, new Timings(boundMs, snapshotMs, restoreMs, cloneMs, refusedMs));
    }

    /// <summary>Creates a claim and waits, on the watch, until it is Bound; returns the milliseconds and its volume.</summary>
    private async Task<(double Ms, (string Pv, string Handle) Volume)> ApplyClaimAsync(string name, string size, V1TypedLocalObjectReference? source, CancellationToken ct)
    {
        var bound = _claims.Expect(Ns, name, c => c.Status?.Phase == "Bound");
        long started = Stopwatch.GetTimestamp();
        await CreateClaimAsync(name, size, source, ct).ConfigureAwait(false);
        long at = await WaitAsync(bound, $"PersistentVolumeClaim {Ns}/{name}", "status.phase Bound", () => Status(_claims.Last(Ns, name)?.Status), ct).ConfigureAwait(false);
        string pvName = _claims.Last(Ns, name)?.Spec?.VolumeName ?? string.Empty;
        var pv = await Kube.CoreV1.ReadPersistentVolumeAsync(pvName, cancellationToken: ct).ConfigureAwait(false);
        string handle = pv.Spec?.Csi?.VolumeHandle
            ?? throw new CliFailureException(ExitCodes.Unexpected, $"PersistentVolume {pvName} of claim {Ns}/{name} has no spec.csi.volumeHandle");
        return (Ms(started, at), (pvName, handle));
    }

    private Task<V1PersistentVolumeClaim> CreateClaimAsync(string name, string size, V1TypedLocalObjectReference? source, CancellationToken ct) =>
        Kube.CoreV1.CreateNamespacedPersistentVolumeClaimAsync(
            new V1PersistentVolumeClaim
            {
                ApiVersion = "v1",
                Kind = "PersistentVolumeClaim",
                Metadata = new V1ObjectMeta { Name = name, NamespaceProperty = Ns },
                Spec = new V1PersistentVolumeClaimSpec
                {
                    StorageClassName = StorageClass,
                    AccessModes = ["ReadWriteOnce"],
                    Resources = new V1VolumeResourceRequirements { Requests = new Dictionary<string, ResourceQuantity> { ["storage"] = new ResourceQuantity(size) } },
                    DataSource = source,
                },
            },
            Ns,
            cancellationToken: ct);

    /// <summary>True when the object was created, false when one of that name was already there.</summary>
    private static async Task<bool> CreateAsync<T>(Func<Task<T>> create)
    {
        try
        {
            await create().ConfigureAwait(false);
            return true;
        }
        catch (HttpOperationException ex) when (ex.Response.StatusCode == HttpStatusCode.Conflict)
        {
            return false;
        }
    }

    private async IAsyncEnumerable<(WatchEventType, VolumeSnapshot)> WatchSnapshotsAsync(string rv, [System.Runtime.CompilerServices.EnumeratorCancellation] CancellationToken ct)
    {
        await foreach (var (type, item) in Kube.CustomObjects.WatchListNamespacedCustomObjectAsync(
            Names.SnapshotGroup, SnapshotVersion, Ns, "volumesnapshots", allowWatchBookmarks: true, resourceVersion: rv, timeoutSeconds: 3600, cancellationToken: ct).ConfigureAwait(false))
        {
            yield return (type, item is JsonElement e ? KubernetesJson.Deserialize<VolumeSnapshot>(e.GetRawText()) : KubernetesJson.Deserialize<VolumeSnapshot>(KubernetesJson.Serialize(item)));
        }
    }

    /// <summary>
    /// The first event with this reason about the claim, and when the watch saw it. Listing first and watching
    /// from the list's resourceVersion misses nothing, whenever the controllers record it.
    /// </summary>
    private async Task<(Corev1Event Event, long At)> WaitForEventAsync(string claim, string reason, CancellationToken ct)
    {
        bool Matches(Corev1Event e) => e.InvolvedObject?.Name == claim && e.InvolvedObject.Kind == "PersistentVolumeClaim" && e.Reason == reason;
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(ct);
        timeout.CancelAfter(WaitTimeout);
        try
        {
            var list = await Kube.CoreV1.ListNamespacedEventAsync(Ns, cancellationToken: timeout.Token).ConfigureAwait(false);
            if (list.Items.FirstOrDefault(Matches) is { } already)
            {
                return (already, Stopwatch.GetTimestamp());
            }

            await foreach (var (type, e) in Kube.CoreV1.WatchListNamespacedEventAsync(
                Ns, allowWatchBookmarks: true, resourceVersion: list.Metadata.ResourceVersion, timeoutSeconds: (int)WaitTimeout.TotalSeconds, cancellationToken: timeout.Token).ConfigureAwait(false))
            {
                if (type is WatchEventType.Added or WatchEventType.Modified && Matches(e))
                {
                    return (e, Stopwatch.GetTimestamp());
                }
            }
        }
        catch (OperationCanceledException) when (!ct.IsCancellationRequested)
        {
        }

        throw new CliFailureException(ExitCodes.Unexpected, $"no {reason} event for PersistentVolumeClaim {Ns}/{claim} within {WaitTimeout.TotalSeconds:0} s");
    }

    /// <summary>Waits for a watch expectation; on timeout the message names the object, the condition and its last status.</summary>
    private static async Task<long> WaitAsync(Task<long> done, string what, string condition, Func<string> lastStatus, CancellationToken ct)
    {
        try
        {
            return await done.WaitAsync(WaitTimeout, ct).ConfigureAwait(false);
        }
        catch (TimeoutException)
        {
            throw new CliFailureException(ExitCodes.Unexpected, $"{what} did not reach {condition} within {WaitTimeout.TotalSeconds:0} s (last status: {lastStatus()})");
        }
    }

    private void Write(string volume, byte[] payload)
    {
        var device = pool.OpenDevice(volume).OrFail();
        device.Write(0, payload).OrFail();
        device.Flush().OrFail();
    }

    private byte[] Read(string volume)
    {
        var bytes = new byte[PayloadSize];
        pool.OpenDevice(volume).OrFail().Read(0, bytes).OrFail();
        return bytes;
    }

    /// <summary>A line of text, zero-padded to one 4 KiB sector.</summary>
    private static byte[] Payload(string text)
    {
        var bytes = new byte[PayloadSize];
        Encoding.UTF8.GetBytes(text, bytes);
        return bytes;
    }

    private static string FirstLine(byte[] bytes)
    {
        int end = bytes.AsSpan().IndexOfAny((byte)'\n', (byte)0);
        return end == 0 ? "(zeros)" : Encoding.UTF8.GetString(bytes, 0, end < 0 ? bytes.Length : end);
    }

    private void Say(int step, string text)
    {
        Out.WriteLine();
        Out.WriteLine($"{step}. {text}");
    }

    private void Echo(string command) => DemoCommand.EchoLine(context, "$ " + command);

    private static string ApiMessage(HttpOperationException ex)
    {
        string body = ex.Response.Content is { Length: > 0 } c ? c : ex.Message;
        try
        {
            return JsonDocument.Parse(body).RootElement.GetProperty("message").GetString() ?? body;
        }
        catch (Exception parse) when (parse is JsonException or KeyNotFoundException or InvalidOperationException)
        {
            return body;
        }
    }

    /// <summary>The PersistentVolume, and its CSI volumeHandle (the pool's volume) when that has another name.</summary>
    private static string Volume((string Pv, string Handle) volume) =>
        volume.Pv == volume.Handle ? $"volume {volume.Pv}" : $"volume {volume.Pv} (pool volume {volume.Handle})";

    private static string Status(object? status) => status is null ? "none" : KubernetesJson.Serialize(status);

    private static double Ms(long from, long to) => Stopwatch.GetElapsedTime(from, to).TotalMilliseconds;

    private static string Took(long started) => Duration(Stopwatch.GetElapsedTime(started).TotalMilliseconds);

    private static string Duration(double ms) => ms >= 1000
        ? (ms / 1000).ToString("0.00", CultureInfo.InvariantCulture) + " s"
        : ms.ToString("0.0", CultureInfo.InvariantCulture) + " ms";
}
