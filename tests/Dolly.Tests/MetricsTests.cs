using System.Globalization;
using System.Net;
using System.Text.RegularExpressions;
using Dolly.Controllers.Model;
using Dolly.Metrics;
using Dolly.Storage;
using Names = Dolly.Controllers.Model.Names;
using k8s;
using k8s.Models;
using Microsoft.Extensions.Logging.Abstractions;

namespace Dolly.Tests;

/// <summary>
/// /metrics of the embedded stack after a known scenario (a snapshot, a restore, a refused restore, the
/// snapshot's deletion): upstream's series under their exact names, labels and buckets, and the pool's gauges.
/// </summary>
public sealed partial class MetricsTests : CliTestBase
{
    private const string Ns = "default";
    private const string Driver = "csi.dolly.io";
    private static readonly TimeSpan Patience = TimeSpan.FromSeconds(60);

    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    [Fact]
    public async Task AfterASnapshotARestoreAndARefusedRestore_TheSeriesCountThem()
    {
        using var pool = Pool.Create(PoolDir).Value;
        await using var stack = await LocalStack.StartAsync(
            pool,
            new LocalStackOptions { Port = 0, Metrics = new IPEndPoint(IPAddress.Loopback, 0) },
            NullLoggerFactory.Instance,
            Ct);
        Assert.Equal("/metrics", stack.MetricsUrl!.AbsolutePath);
        Assert.True(IPAddress.IsLoopback(IPAddress.Parse(stack.MetricsUrl.Host)));
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
        var fromSnapshot = new V1TypedLocalObjectReference { ApiGroup = Names.SnapshotGroup, Kind = "VolumeSnapshot", Name = "snap" };
        await CreateClaimAsync(kube, "restore", "1Gi", fromSnapshot);
        await CreateClaimAsync(kube, "too-small", "512Mi", fromSnapshot);
        await UntilAsync(async () => (await kube.CoreV1.ReadNamespacedPersistentVolumeClaimAsync("restore", Ns, cancellationToken: Ct)).Status?.Phase == "Bound", "claim restore Bound");
        await UntilAsync(
            async () => (await kube.CoreV1.ListNamespacedEventAsync(Ns, cancellationToken: Ct)).Items.Any(e => e.InvolvedObject?.Name == "too-small" && e.Reason == "ProvisioningFailed"),
            "a ProvisioningFailed event of claim too-small");

        using var http = new HttpClient();
        var scrape = await ScrapeAsync(http, stack.MetricsUrl);
        var snapshotOps = Labels(("driver_name", Driver), ("snapshot_type", "dynamic"), ("operation_status", "success"));
        Assert.Equal(1, scrape.Value("snapshot_controller_operation_total_seconds_count", snapshotOps.With("operation_name", "CreateSnapshot")));
        Assert.Equal(1, scrape.Value("snapshot_controller_operation_total_seconds_count", snapshotOps.With("operation_name", "CreateSnapshotAndReady")));
        Assert.Null(scrape.Find("snapshot_controller_operation_total_seconds_count", snapshotOps.With("operation_name", "DeleteSnapshot")));
        Assert.Equal(0, scrape.Value("snapshot_controller_operations_in_flight", Labels()));
        // Upstream's buckets, and upstream's label set and nothing else on every series.
        Assert.Equal(
            ["0.1", "0.25", "0.5", "1", "2.5", "5", "10", "15", "30", "60", "120", "300", "600", "+Inf"],
            scrape.Samples.Where(s => s.Name == "snapshot_controller_operation_total_seconds_bucket" && s.Labels["operation_name"] == "CreateSnapshot").Select(s => s.Labels["le"]));
        Assert.All(
            scrape.Samples.Where(s => s.Name == "snapshot_controller_operation_total_seconds_count"),
            s => Assert.Equal(["driver_name", "operation_name", "operation_status", "snapshot_type"], s.Labels.Keys.Order(StringComparer.Ordinal)));
        Assert.Equal(
            ["0.1", "0.25", "0.5", "1", "2.5", "5", "10", "15", "25", "50", "120", "300", "600", "+Inf"],
            scrape.Samples.Where(s => s.Name == "csi_sidecar_operations_seconds_bucket" && s.Labels["method_name"] == "/csi.v1.Controller/CreateSnapshot").Select(s => s.Labels["le"]));
        Assert.All(
            scrape.Samples.Where(s => s.Name == "csi_sidecar_operations_seconds_count"),
            s => Assert.Equal(["driver_name", "grpc_status_code", "method_name"], s.Labels.Keys.Order(StringComparer.Ordinal)));

        var csiOk = Labels(("driver_name", Driver), ("grpc_status_code", "OK"));
        Assert.Equal(1, scrape.Value("csi_sidecar_operations_seconds_count", csiOk.With("method_name", "/csi.v1.Controller/CreateSnapshot")));
        // The claim and the restore; the refused restore never reaches the driver.
        Assert.Equal(2, scrape.Value("csi_sidecar_operations_seconds_count", csiOk.With("method_name", "/csi.v1.Controller/CreateVolume")));
        Assert.DoesNotContain(scrape.Samples, s => s.Name == "csi_sidecar_operations_seconds_count" && s.Labels["grpc_status_code"] != "OK");

        // The pool's gauges say what the pool says: three 1 GiB devices (the claim, its snapshot, the restore).
        var info = pool.GetInfo();
        Assert.Equal(3L << 30, info.LogicalBytes);
        Assert.Equal(info.LogicalBytes, scrape.Value(PoolMetrics.LogicalBytes, Labels()));
        Assert.Equal(PoolMetrics.Allocated(info), scrape.Value(PoolMetrics.AllocatedBytes, Labels()));
        Assert.Equal(info.DataFileBytes, scrape.Value(PoolMetrics.PhysicalBytes, Labels()));
        Assert.Equal(info.MetadataBytes, scrape.Value(PoolMetrics.MetadataBytes, Labels()));
        Assert.Equal(PoolMetrics.Free(info), scrape.Value(PoolMetrics.FreeBytes, Labels()));

        // Deleting the snapshot (its restore is done) is one DeleteSnapshot operation and one CSI DeleteSnapshot call.
        await kube.CustomObjects.DeleteNamespacedCustomObjectAsync(Names.SnapshotGroup, "v1", Ns, "volumesnapshots", "snap", cancellationToken: Ct);
        // The CSI call (content controller) and the end of the operation (snapshot controller) come in either order.
        await UntilAsync(
            async () => await ScrapeAsync(http, stack.MetricsUrl) is var s
                && s.Find("csi_sidecar_operations_seconds_count", csiOk.With("method_name", "/csi.v1.Controller/DeleteSnapshot")) is not null
                && s.Find("snapshot_controller_operation_total_seconds_count", snapshotOps.With("operation_name", "DeleteSnapshot")) is not null,
            "the DeleteSnapshot operation and CSI call in /metrics");
        scrape = await ScrapeAsync(http, stack.MetricsUrl);
        Assert.Equal(1, scrape.Value("snapshot_controller_operation_total_seconds_count", snapshotOps.With("operation_name", "DeleteSnapshot")));
        Assert.Equal(1, scrape.Value("csi_sidecar_operations_seconds_count", csiOk.With("method_name", "/csi.v1.Controller/DeleteSnapshot")));
        Assert.Equal(0, scrape.Value("snapshot_controller_operations_in_flight", Labels()));
        Assert.Equal(2L << 30, scrape.Value(PoolMetrics.LogicalBytes, Labels()));
    }

    [Theory]
    [InlineData("0.0.0.0:9849", "is not a loopback address")]
    [InlineData("192.0.2.1:9849", "is not a loopback address")]
    [InlineData("localhost:9849", "is not an address and port")]
    [InlineData("127.0.0.1", "is not an address and port")]
    public async Task MetricsOffLoopbackOrMalformed_IsRefusedBeforeAnythingStarts(string address, string message)
    {
        await Ok("pool", "init");
        await Fails(ExitCodes.InvalidArgument, message, "up", "--port", "0", "--metrics", address);
    }

    [Fact]
    public async Task AMetricsPortInUse_IsNamed_AndNothingStaysUp()
    {
        await Ok("pool", "init");
        using var taken = new System.Net.Sockets.TcpListener(IPAddress.Loopback, 0);
        taken.Start();
        string address = taken.LocalEndpoint.ToString()!;
        await Fails(ExitCodes.IoError, $"cannot serve metrics on {address}", "up", "--port", "0", "--metrics", address);
        // The pool was closed again: a command that needs it exclusively runs.
        await Ok("volume", "create", "after", "--size", "1Mi");
    }

    private static Task<V1PersistentVolumeClaim> CreateClaimAsync(Kubernetes kube, string name, string size, V1TypedLocalObjectReference? source) =>
        kube.CoreV1.CreateNamespacedPersistentVolumeClaimAsync(
            new V1PersistentVolumeClaim
            {
                Metadata = new V1ObjectMeta { Name = name, NamespaceProperty = Ns },
                Spec = new V1PersistentVolumeClaimSpec
                {
                    StorageClassName = DefaultClasses.StorageClassName,
                    AccessModes = ["ReadWriteOnce"],
                    Resources = new V1VolumeResourceRequirements { Requests = new Dictionary<string, ResourceQuantity> { ["storage"] = new ResourceQuantity(size) } },
                    DataSource = source,
                },
            },
            Ns,
            cancellationToken: Ct);

    private static async Task UntilAsync(Func<Task<bool>> condition, string what)
    {
        var deadline = DateTime.UtcNow + Patience;
        while (!await condition())
        {
            Assert.True(DateTime.UtcNow < deadline, $"timed out waiting for {what}");
            await Task.Delay(50, Ct);
        }
    }

    private static async Task<Scrape> ScrapeAsync(HttpClient http, Uri url)
    {
        using var response = await http.GetAsync(url, Ct);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("text/plain", response.Content.Headers.ContentType?.MediaType);
        string text = await response.Content.ReadAsStringAsync(Ct);
        var samples = new List<Sample>();
        foreach (string line in text.Split('\n'))
        {
            if (line.Length == 0 || line.StartsWith('#'))
            {
                continue;
            }

            var m = SampleLine().Match(line);
            Assert.True(m.Success, "not a sample line: " + line);
            var labels = LabelPair().Matches(m.Groups["labels"].Value).ToDictionary(l => l.Groups[1].Value, l => Regex.Unescape(l.Groups[2].Value), StringComparer.Ordinal);
            samples.Add(new Sample(m.Groups["name"].Value, labels, double.Parse(m.Groups["value"].Value, CultureInfo.InvariantCulture)));
        }

        return new Scrape(samples);
    }

    private static Dictionary<string, string> Labels(params (string Name, string Value)[] labels) =>
        labels.ToDictionary(l => l.Name, l => l.Value, StringComparer.Ordinal);

    [GeneratedRegex(@"^(?<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?<labels>.*)\})? (?<value>\S+)( \d+)?$")]
    private static partial Regex SampleLine();

    [GeneratedRegex(@"([a-zA-Z_][a-zA-Z0-9_]*)=""((?:[^""\\]|\\.)*)""")]
    private static partial Regex LabelPair();

    private sealed record Sample(string Name, Dictionary<string, string> Labels, double Value);

    private sealed record Scrape(List<Sample> Samples)
    {
        /// <summary>The one sample with exactly these labels, or null.</summary>
        public Sample? Find(string name, Dictionary<string, string> labels) =>
            Samples.SingleOrDefault(s => s.Name == name && s.Labels.Count == labels.Count && labels.All(l => s.Labels.TryGetValue(l.Key, out var v) && v == l.Value));

        public double Value(string name, Dictionary<string, string> labels) =>
            (Find(name, labels) ?? throw new Xunit.Sdk.XunitException($"no sample {name}{{{string.Join(",", labels.Select(l => $"{l.Key}=\"{l.Value}\""))}}} among:\n{string.Join("\n", Samples.Where(s => s.Name == name).Select(s => string.Join(",", s.Labels)))}")).Value;
    }
}

internal static class LabelSetExtensions
{
    public static Dictionary<string, string> With(this Dictionary<string, string> labels, string name, string value) =>
        new(labels, StringComparer.Ordinal) { [name] = value };
}
