using System.Diagnostics;
using System.Net;
using Dolly.Api.Http;
using Dolly.Controllers.Metrics;
using Dolly.Controllers.Model;
using Dolly.Metrics;
using Dolly.Nbd;
using Dolly.Storage;
using k8s;
using k8s.Autorest;
using k8s.Models;
using Microsoft.Extensions.Logging.Abstractions;
using Names = Dolly.Controllers.Model.Names;

namespace Dolly.Tests;

/// <summary>
/// Dolly's own series and the controller-runtime, client-go and kube-apiserver ones, scraped from the stack's
/// /metrics after the operations that drive them: NBD I/O by a real client (qemu-io), a snapshot, a refused
/// restore (a failing reconcile), a request for a claim that does not exist (a 404), and the space a snapshot shares.
/// </summary>
public sealed partial class MetricsTests
{
    private const int Written = 1 << 20;

    [Fact]
    public async Task AfterNbdIoASnapshotAndFailures_DollysSeriesCountThem_WithTheirLabels()
    {
        if (!File.Exists("/usr/bin/qemu-io"))
        {
            Assert.Skip("qemu-io (qemu-utils) is not installed; scripts/install-test-deps.sh installs it");
        }

        using var pool = Pool.Create(PoolDir).Value;
        _ = pool.CreateVolume("plain", 4 << 20).Value;
        string socket = Path.Combine(Root, "nbd.sock");
        await using var stack = await LocalStack.StartAsync(
            pool,
            new LocalStackOptions { Port = 0, Metrics = new IPEndPoint(IPAddress.Loopback, 0), Nbd = new NbdServerOptions { UnixSocketPath = socket } },
            NullLoggerFactory.Instance,
            Ct);
        var kube = stack.Client;
        await kube.StorageV1.CreateStorageClassAsync(DefaultClasses.StorageClass(), cancellationToken: Ct);
        await kube.CustomObjects.CreateClusterCustomObjectAsync(DefaultClasses.SnapshotClass(), Names.SnapshotGroup, "v1", "volumesnapshotclasses", cancellationToken: Ct);
        await CreateClaimAsync(kube, "data", "1Gi", null);
        await UntilAsync(async () => (await kube.CoreV1.ReadNamespacedPersistentVolumeClaimAsync("data", Ns, cancellationToken: Ct)).Status?.Phase == "Bound", "claim data Bound");
        await kube.CustomObjects.CreateNamespacedCustomObjectAsync(
            new VolumeSnapshot
            {
                Metadata = new V1ObjectMeta { Name = "snap", NamespaceProperty = Ns },
                Spec = new VolumeSnapshotSpec { Source = new VolumeSnapshotSource { PersistentVolumeClaimName = "data" } },
            },
            Names.SnapshotGroup,
            "v1",
            Ns,
            "volumesnapshots",
            cancellationToken: Ct);

        // A restore smaller than its snapshot: the provisioner refuses it and retries with backoff.
        await CreateClaimAsync(kube, "too-small", "512Mi", new V1TypedLocalObjectReference { ApiGroup = Names.SnapshotGroup, Kind = "VolumeSnapshot", Name = "snap" });
        var missing = await Assert.ThrowsAsync<HttpOperationException>(() => kube.CoreV1.ReadNamespacedPersistentVolumeClaimAsync("no-such-claim", Ns, cancellationToken: Ct));
        Assert.Equal(HttpStatusCode.NotFound, missing.Response.StatusCode);

        // A CSI call the driver refuses, made straight to its socket.
        using (var channel = Controllers.DollyControllers.ConnectCsi(stack.Csi.SocketPath))
        {
            var refused = await Assert.ThrowsAsync<Grpc.Core.RpcException>(async () => await new Csi.V1.Controller.ControllerClient(channel).DeleteSnapshotAsync(new Csi.V1.DeleteSnapshotRequest(), cancellationToken: Ct));
            Assert.Equal(Grpc.Core.StatusCode.InvalidArgument, refused.StatusCode);
        }

        // A real NBD client writes 1 MiB and reads it back; then the volume's snapshot shares every block.
        await QemuIoAsync(socket, "plain", $"write -P 0x5a 0 {Written}", $"read -P 0x5a 0 {Written}");
        _ = pool.CreateSnapshot("plain", "plain-snap").Value;

        using var http = new HttpClient();
        var apiLabels = Labels(("group", ""), ("version", "v1"), ("subresource", ""), ("component", "apiserver"));
        var notFound = apiLabels.With("verb", "GET").With("resource", "persistentvolumeclaims").With("scope", "resource").With("code", "404");
        await UntilAsync(
            async () => await ScrapeAsync(http, stack.MetricsUrl!) is var s
                && s.Find(ControllerMetrics.ReconcileErrors, Labels(("controller", "provisioner"))) is not null
                && s.Find(NbdMetrics.Connections, Labels()) is { Value: 0 }
                && s.Find(PoolMetrics.DeviceAllocatedBytes, Labels(("device", "plain-snap"), ("kind", "snapshot"))) is not null
                && s.Find(ApiMetrics.RequestTotal, notFound) is not null,
            "the provisioner's failure, the NBD client's disconnect, the new snapshot and the 404 in /metrics");
        var scrape = await ScrapeAsync(http, stack.MetricsUrl!);

        // NBD: the bytes the client moved, per export and command; every request timed.
        var write = Labels(("export", "plain"), ("command", "write"));
        var read = Labels(("export", "plain"), ("command", "read"));
        Assert.Equal(Written, scrape.Value(NbdMetrics.Bytes, write));
        Assert.Equal(Written, scrape.Value(NbdMetrics.Bytes, read));
        Assert.InRange(scrape.Value(NbdMetrics.Requests, write), 1, Written / 512);
        Assert.Equal(scrape.Value(NbdMetrics.Requests, write), scrape.Value(NbdMetrics.Seconds + "_count", write));
        Assert.Equal(scrape.Value(NbdMetrics.Requests, read), scrape.Value(NbdMetrics.Seconds + "_count", read));
        Assert.All(scrape.Samples.Where(s => s.Name == NbdMetrics.Requests), s => Assert.Equal(["command", "export"], s.Labels.Keys.Order(StringComparer.Ordinal)));
        Assert.DoesNotContain(scrape.Samples, s => s.Name == NbdMetrics.Requests && s.Labels["export"] != "plain");

        // Controllers: successes, the provisioner's refusals counted as errors and retries, a depth per queue.
        Assert.True(scrape.Value(ControllerMetrics.ReconcileTotal, Labels(("controller", "snapshot-controller"), ("result", "success"))) >= 1);
        double refusals = scrape.Value(ControllerMetrics.ReconcileErrors, Labels(("controller", "provisioner")));
        Assert.True(refusals >= 1);
        Assert.True(scrape.Value(ControllerMetrics.ReconcileTotal, Labels(("controller", "provisioner"), ("result", "error"))) >= refusals);
        Assert.True(scrape.Value(ControllerMetrics.QueueRetries, Labels(("name", "provisioner"))) >= 1);
        Assert.Null(scrape.Find(ControllerMetrics.ReconcileErrors, Labels(("controller", "snapshot-controller"))));
        Assert.True(scrape.Value(ControllerMetrics.ReconcileSeconds + "_count", Labels(("controller", "snapshot-controller"))) >= 1);
        var queues = scrape.Samples.Where(s => s.Name == ControllerMetrics.QueueDepth).Select(s => s.Labels["name"]).ToHashSet(StringComparer.Ordinal);
        Assert.Superset(new HashSet<string>(["snapshot-controller", "csi-snapshotter", "provisioner", "resizer", "volume-binder", "snapshot-schedules", "golden-snapshots", "volume-reverts"], StringComparer.Ordinal), queues);

        // API server: the 404 under its verb and resource, the test's own create, open watches, no watch in the latencies.
        Assert.True(scrape.Value(ApiMetrics.RequestTotal, notFound) >= 1);
        Assert.Equal(
            1,
            scrape.Value(ApiMetrics.RequestTotal, apiLabels.With("group", Names.SnapshotGroup).With("verb", "POST").With("resource", "volumesnapshots").With("scope", "namespace").With("code", "201")));
        Assert.True(scrape.Value(ApiMetrics.LongRunning, apiLabels.With("verb", "WATCH").With("resource", "persistentvolumeclaims").With("scope", "cluster")) >= 1);
        Assert.True(scrape.Value(ApiMetrics.RequestSeconds + "_count", apiLabels.With("verb", "LIST").With("resource", "persistentvolumeclaims").With("scope", "cluster")) >= 1);
        Assert.DoesNotContain(scrape.Samples, s => s.Name == ApiMetrics.RequestSeconds + "_count" && s.Labels["verb"] == "WATCH");

        // The driver's side of CSI: the controllers' calls, and the refused one under its code.
        var served = Labels(("driver_name", Driver));
        Assert.True(scrape.Value(Csi.CsiMetrics.OperationSeconds + "_count", served.With("method_name", "/csi.v1.Controller/CreateVolume").With("grpc_status_code", "OK")) >= 1);
        Assert.Equal(1, scrape.Value(Csi.CsiMetrics.OperationSeconds + "_count", served.With("method_name", "/csi.v1.Controller/DeleteSnapshot").With("grpc_status_code", "InvalidArgument")));

        // Space: each device's figures as the engine reports them, and sharing saves the snapshot's copy.
        var plain = pool.GetSpace("plain").Value;
        Assert.Equal(Written, plain.Allocated);
        Assert.Equal(plain.Allocated, scrape.Value(PoolMetrics.DeviceAllocatedBytes, Labels(("device", "plain"), ("kind", "volume"))));
        Assert.Equal(0, scrape.Value(PoolMetrics.DeviceExclusiveBytes, Labels(("device", "plain"), ("kind", "volume"))));
        Assert.Equal(Written, scrape.Value(PoolMetrics.DeviceAllocatedBytes, Labels(("device", "plain-snap"), ("kind", "snapshot"))));
        foreach (var device in pool.ListDevices())
        {
            var space = pool.GetSpace(device.Name).Value;
            var labels = Labels(("device", device.Name), ("kind", PoolMetrics.Kind(device.Kind)));
            Assert.Equal(space.Allocated, scrape.Value(PoolMetrics.DeviceAllocatedBytes, labels));
            Assert.Equal(space.Exclusive, scrape.Value(PoolMetrics.DeviceExclusiveBytes, labels));
        }

        Assert.Equal(Written, scrape.Value(PoolMetrics.SavedBytes, Labels()));

        // A deleted device's series go with it; nothing is saved any more.
        pool.Delete("plain-snap").ThrowIfFailed();
        await UntilAsync(
            async () => await ScrapeAsync(http, stack.MetricsUrl!) is var s
                && !s.Samples.Any(x => x.Name.StartsWith("dolly_device_", StringComparison.Ordinal) && x.Labels["device"] == "plain-snap")
                && s.Find(PoolMetrics.SavedBytes, Labels()) is { Value: 0 },
            "the deleted snapshot's series gone and no bytes saved");
        scrape = await ScrapeAsync(http, stack.MetricsUrl!);
        Assert.Equal(Written, scrape.Value(PoolMetrics.DeviceExclusiveBytes, Labels(("device", "plain"), ("kind", "volume"))));
    }

    private static async Task QemuIoAsync(string socket, string export, params string[] commands)
    {
        var psi = new ProcessStartInfo("qemu-io") { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (string command in commands)
        {
            psi.ArgumentList.Add("-c");
            psi.ArgumentList.Add(command);
        }

        psi.ArgumentList.Add("-f");
        psi.ArgumentList.Add("raw");
        psi.ArgumentList.Add($"nbd+unix:///{export}?socket={socket}");
        using var p = Process.Start(psi)!;
        var output = p.StandardOutput.ReadToEndAsync(Ct);
        string error = await p.StandardError.ReadToEndAsync(Ct);
        await p.WaitForExitAsync(Ct);
        string text = await output;
        Assert.True(p.ExitCode == 0 && !text.Contains("fail", StringComparison.OrdinalIgnoreCase), $"qemu-io: {text}{error}");
    }
}
