using System.CommandLine;
using Dolly.Csi;
using Dolly.Nbd;

namespace Dolly.Commands;

/// <summary>
/// <c>dolly node</c>: the CSI plugin of one node of a cluster (the node DaemonSet). It serves Identity and
/// Node only, on kubelet's plugin socket, and attaches volumes from the NBD server of the machine that
/// holds the pool; no pool is opened here.
/// </summary>
internal static class NodeCommand
{
    public const string DefaultStateDirectory = "/var/lib/dolly/node";

    public static Command Build(CliContext context)
    {
        var nodeId = new Option<string?>("--node-id") { Description = "This node's id, as kubelet knows the node. Default: $NODE_NAME, else the machine name", HelpName = "ID" };
        var csiSocket = new Option<string>("--csi-socket") { Description = "Unix socket kubelet reaches the plugin on, e.g. /var/lib/kubelet/plugins/csi.dolly.io/csi.sock", HelpName = "PATH", Required = true };
        var nbd = new Option<string>("--nbd") { Description = "The NBD server exporting the volumes: unix:PATH, or HOST:PORT (TLS; needs --nbd-tls-ca)", HelpName = "ADDR", Required = true };
        var ca = new Option<string?>("--nbd-tls-ca") { Description = "PEM CA certificate that issued the NBD server's certificate", HelpName = "FILE" };
        var cert = new Option<string?>("--nbd-tls-cert") { Description = "PEM client certificate of this node, for an NBD server that requires one", HelpName = "FILE" };
        var key = new Option<string?>("--nbd-tls-key") { Description = "PEM private key of --nbd-tls-cert", HelpName = "FILE" };
        var stateDir = new Option<string>("--state-dir") { Description = "Where staged volumes are recorded (keep it across restarts)", HelpName = "DIR", DefaultValueFactory = _ => DefaultStateDirectory };
        var attach = AttachOption();
        var verbose = new Option<bool>("--verbose", "-v") { Description = "Log every RPC and attachment" };
        var logFormat = Logging.LogSetup.FormatOption();
        var metrics = new Option<string?>("--metrics")
        {
            Description = "Serve Prometheus metrics (the CSI calls served) at http://ADDR:PORT/metrics, unauthenticated: loopback only unless --metrics-allow-remote. Default: none",
            HelpName = "ADDR:PORT",
        };
        var metricsRemote = new Option<bool>("--metrics-allow-remote") { Description = "Let --metrics name any address, for a Prometheus in the cluster scraping the pod" };
        var node = new Command(
            "node",
            "Run the CSI node plugin of a cluster node until SIGTERM or Ctrl-C: Identity and Node services on --csi-socket, attaching volumes " +
            "(kernel nbd through nbd-client where /dev/nbd0 exists, else nbdfuse + loop device; see --attach) from the NBD server given by --nbd. " +
            "Needs root, and the nbd module with nbd-client, or /dev/fuse and loop devices.")
        {
            nodeId, csiSocket, nbd, ca, cert, key, stateDir, attach, verbose, logFormat, metrics, metricsRemote,
        };
        node.SetAction((parse, ct) => RunAsync(
            context,
            new NodeRequest(
                parse.GetValue(nodeId),
                parse.GetValue(csiSocket)!,
                parse.GetValue(nbd)!,
                parse.GetValue(ca),
                parse.GetValue(cert),
                parse.GetValue(key),
                parse.GetValue(stateDir)!,
                ParseAttach(parse.GetValue(attach)),
                parse.GetValue(verbose),
                parse.GetValue(logFormat)!,
                parse.GetValue(metrics),
                parse.GetValue(metricsRemote)),
            ct));
        return node;
    }

    private sealed record NodeRequest(string? NodeId, string CsiSocket, string Nbd, string? Ca, string? Cert, string? Key, string StateDir, NodeAttachMode Attach, bool Verbose, string LogFormat, string? Metrics, bool MetricsRemote);

    /// <summary>The --attach option of <c>dolly node</c> and <c>dolly up</c>.</summary>
    internal static Option<string> AttachOption()
    {
        var attach = new Option<string>("--attach")
        {
            Description = "How volumes are attached: kernel (nbd module and nbd-client), nbdfuse (FUSE file under a loop device), or auto: kernel where /dev/nbd0 and nbd-client exist, else nbdfuse",
            HelpName = "auto|kernel|nbdfuse",
            DefaultValueFactory = _ => "auto",
        };
        attach.AcceptOnlyFromAmong("auto", "kernel", "nbdfuse");
        return attach;
    }

    /// <summary>The mode an --attach value names; the option accepts nothing else.</summary>
    internal static NodeAttachMode ParseAttach(string? value) => value switch
    {
        "kernel" => NodeAttachMode.Kernel,
        "nbdfuse" => NodeAttachMode.Nbdfuse,
        _ => NodeAttachMode.Auto,
    };

    private static async Task<int> RunAsync(CliContext context, NodeRequest request, CancellationToken ct)
    {
        string nodeId = request.NodeId ?? NonEmpty(context.Host.GetEnvironmentVariable("NODE_NAME")) ?? Environment.MachineName;
        if (string.IsNullOrWhiteSpace(nodeId))
        {
            throw new CliFailureException(ExitCodes.InvalidArgument, "--node-id is empty: give the node's name as kubelet knows it");
        }

        var endpoint = ParseEndpoint(request);
        var metricsAt = request.Metrics is null ? null : Metrics.MetricsServer.ParseAddress(request.Metrics, "--metrics", request.MetricsRemote);
        var options = new CsiServerOptions
        {
            SocketPath = Path.GetFullPath(request.CsiSocket),
            NodeId = nodeId,
            Nbd = endpoint,
            NodeStateDirectory = Path.GetFullPath(request.StateDir),
            NodeAttach = request.Attach,
        };

        using var loggers = Logging.LogSetup.Create(request.LogFormat, request.Verbose);
        using var csiMetrics = metricsAt is null ? null : new CsiMetrics();
        options = options with { Metrics = csiMetrics };
        var csi = new CsiServer(options, loggers);
        await using (csi.ConfigureAwait(false))
        {
            Metrics.MetricsServer? metricsServer = null;
            if (metricsAt is { } metricsEndpoint)
            {
                try
                {
                    metricsServer = await Metrics.MetricsServer.StartAsync(metricsEndpoint, [new(CsiMetrics.MeterName, csiMetrics!.Owns)], web: null, loggers, ct).ConfigureAwait(false);
                }
                catch (Exception ex) when (ex is IOException or InvalidOperationException)
                {
                    throw new CliFailureException(ExitCodes.IoError, $"cannot serve metrics on {metricsEndpoint}: {ex.Message}");
                }
            }

            await using var stopMetrics = metricsServer;
            try
            {
                await csi.StartAsync(ct).ConfigureAwait(false);
            }
            catch (Exception ex) when (ex is IOException or InvalidOperationException or UnauthorizedAccessException)
            {
                throw new CliFailureException(ExitCodes.IoError, $"cannot start the CSI node plugin on {options.SocketPath}: {ex.Message}");
            }

            var o = context.Host.Out;
            await o.WriteLineAsync($"Dolly node plugin is up (SIGTERM or Ctrl-C stops it)").ConfigureAwait(false);
            await o.WriteLineAsync($"  node         {nodeId}").ConfigureAwait(false);
            await o.WriteLineAsync($"  CSI          {csi.SocketPath} (Identity, Node)").ConfigureAwait(false);
            await o.WriteLineAsync($"  NBD server   {endpoint}{(endpoint.Tls is null ? string.Empty : endpoint.Tls.CertificateFile is null ? " (TLS)" : " (TLS, client certificate)")}").ConfigureAwait(false);
            await o.WriteLineAsync($"  attach       {AttachSummary(options)}").ConfigureAwait(false);
            await o.WriteLineAsync($"  state        {options.NodeStateDirectory}").ConfigureAwait(false);
            if (metricsServer is not null)
            {
                await o.WriteLineAsync($"  metrics      {metricsServer.Url} (Prometheus, unauthenticated)").ConfigureAwait(false);
            }

            await o.FlushAsync(ct).ConfigureAwait(false);
            try
            {
                await Task.Delay(Timeout.Infinite, ct).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                await o.WriteLineAsync("stopping: the CSI socket closes; mounted volumes stay as kubelet left them").ConfigureAwait(false);
            }
        }

        return ExitCodes.Ok;
    }

    /// <summary>The NBD endpoint from --nbd and the TLS files, each checked now so that a typo fails at start, not at the first attach.</summary>
    private static NbdEndpoint ParseEndpoint(NodeRequest request)
    {
        if ((request.Cert is null) != (request.Key is null))
        {
            throw new CliFailureException(ExitCodes.InvalidArgument, "--nbd-tls-cert and --nbd-tls-key go together");
        }

        if (request.Ca is null && request.Cert is not null)
        {
            throw new CliFailureException(ExitCodes.InvalidArgument, "--nbd-tls-cert needs --nbd-tls-ca: the server's certificate must be verified too");
        }

        var tls = request.Ca is null ? null : new NbdClientTls(request.Ca, request.Cert, request.Key);
        var endpoint = NbdEndpoint.Parse(request.Nbd, tls, out string? error)
            ?? throw new CliFailureException(ExitCodes.InvalidArgument, $"--nbd: {error}");
        if (endpoint.Tls is not null)
        {
            try
            {
                endpoint.LoadTlsOptions().Dispose();
            }
            catch (NbdClientException ex)
            {
                throw new CliFailureException(ExitCodes.InvalidArgument, ex.Message);
            }
        }

        return endpoint;
    }

    /// <summary>What --attach means on this machine, for the start-up summary.</summary>
    internal static string AttachSummary(CsiServerOptions options)
    {
        string? missing = options.KernelNbdMissing();
        return options.NodeAttach switch
        {
            NodeAttachMode.Kernel => missing is null ? "kernel nbd (nbd-client)" : $"kernel nbd (nbd-client): staging will fail, this machine has {missing}",
            NodeAttachMode.Nbdfuse => "nbdfuse + loop device",
            _ => missing is null ? "auto: kernel nbd (nbd-client)" : $"auto: nbdfuse + loop device ({missing})",
        };
    }

    private static string? NonEmpty(string? value) => string.IsNullOrWhiteSpace(value) ? null : value;
}
