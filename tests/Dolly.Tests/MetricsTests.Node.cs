using Dolly.Controllers;
using Dolly.Csi;
using Dolly.Csi.V1;
using Grpc.Core;

namespace Dolly.Tests;

/// <summary><c>dolly node --metrics</c>: the CSI calls the node plugin serves, a failed one under its status code.</summary>
public sealed partial class MetricsTests
{
    [Fact]
    public async Task NodeMetrics_CountTheCsiCallsServed_AFailureUnderItsCode()
    {
        string csi = Path.Combine(Root, "node-csi.sock");
        var output = new StringWriter();
        var errors = new StringWriter();
        var host = new CliHost(new SyncWriter(output), new SyncWriter(errors), () => Stream.Null, () => Stream.Null, false, false, _ => null);
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(Ct);
        var run = Cli.RunAsync(
            ["node", "--node-id", "worker-1", "--csi-socket", csi, "--nbd", "unix:" + Path.Combine(Root, "nbd.sock"), "--state-dir", Path.Combine(Root, "node"), "--metrics", "127.0.0.1:0"],
            host,
            stop.Token);
        Uri? url = null;
        await UntilAsync(
            () =>
            {
                Assert.False(run.IsCompleted, $"dolly node ended early: {output}{errors}");
                var m = System.Text.RegularExpressions.Regex.Match(output.ToString(), @"  metrics      (http://127\.0\.0\.1:\d+/metrics) \(Prometheus, unauthenticated\)");
                url = m.Success ? new Uri(m.Groups[1].Value) : null;
                return Task.FromResult(url is not null);
            },
            "the node's metrics URL");

        using (var channel = DollyControllers.ConnectCsi(csi))
        {
            var info = await new Identity.IdentityClient(channel).GetPluginInfoAsync(new GetPluginInfoRequest(), cancellationToken: Ct);
            Assert.Equal(CsiServerOptions.DefaultDriverName, info.Name);
            var refused = await Assert.ThrowsAsync<RpcException>(async () => await new Node.NodeClient(channel).NodeUnstageVolumeAsync(new NodeUnstageVolumeRequest(), cancellationToken: Ct));
            Assert.Equal(StatusCode.InvalidArgument, refused.StatusCode);
        }

        using var http = new HttpClient();
        var scrape = await ScrapeAsync(http, url!);
        var driver = Labels(("driver_name", CsiServerOptions.DefaultDriverName));
        Assert.Equal(1, scrape.Value(CsiMetrics.OperationSeconds + "_count", driver.With("method_name", "/csi.v1.Identity/GetPluginInfo").With("grpc_status_code", "OK")));
        Assert.Equal(1, scrape.Value(CsiMetrics.OperationSeconds + "_count", driver.With("method_name", "/csi.v1.Node/NodeUnstageVolume").With("grpc_status_code", "InvalidArgument")));
        Assert.Equal(
            ["0.1", "0.25", "0.5", "1", "2.5", "5", "10", "15", "25", "50", "120", "300", "600", "+Inf"],
            scrape.Samples.Where(s => s.Name == CsiMetrics.OperationSeconds + "_bucket" && s.Labels["method_name"] == "/csi.v1.Identity/GetPluginInfo").Select(s => s.Labels["le"]));

        await stop.CancelAsync();
        Assert.Equal(ExitCodes.Ok, await run.WaitAsync(TimeSpan.FromSeconds(60), Ct));
    }

    [Fact]
    public async Task NodeMetrics_OffLoopbackWithoutAllowRemote_IsRefused() =>
        await Fails(
            ExitCodes.InvalidArgument,
            "is not a loopback address",
            "node", "--node-id", "worker-1", "--csi-socket", Path.Combine(Root, "node-csi.sock"), "--nbd", "unix:/run/nbd.sock", "--metrics", "0.0.0.0:9850");
}
