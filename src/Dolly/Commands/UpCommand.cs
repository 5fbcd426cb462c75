using System.CommandLine;
using System.Security.Cryptography.X509Certificates;
using Dolly.Controllers;
using Dolly.Nbd;
using k8s;
using Microsoft.Extensions.Logging;

namespace Dolly.Commands;

/// <summary>
/// <c>dolly up</c>: everything on one machine with one state directory: the Kubernetes-compatible API server
/// (kubeconfig written for kubectl), Dolly's controllers, the CSI driver and the NBD server over the pool.
/// With <c>--kubeconfig</c> or <c>--in-cluster</c> the controllers use that API server instead of an embedded one.
/// </summary>
internal static class UpCommand
{
    private sealed record UpRequest(
        string Address,
        int Port,
        bool Verbose,
        string? Kubeconfig,
        bool InCluster,
        bool NoNode,
        bool LeaderElect,
        string[] NbdTcp,
        string? NbdCert,
        string? NbdKey,
        string? NbdClientCa,
        bool InitPool,
        Dolly.Csi.NodeAttachMode Attach,
        string Metrics,
        bool MetricsRemote,
        string LogFormat);

    /// <summary>The <c>--metrics</c> value that serves no metrics.</summary>
    private const string MetricsOff = "off";

    public static Command Build(CliContext context)
    {
        var address = new Option<string>("--address") { Description = "Address of the embedded API server", DefaultValueFactory = _ => "127.0.0.1", HelpName = "IP" };
        var port = new Option<int>("--port") { Description = "Port of the embedded API server (0 picks a free one)", DefaultValueFactory = _ => 6443 };
        var verbose = new Option<bool>("--verbose", "-v") { Description = "Log requests, connections and controller actions" };
        var kubeconfig = new Option<string?>("--kubeconfig") { Description = "Use the API server of this kubeconfig instead of embedding one (a real cluster)", HelpName = "FILE" };
        var inCluster = new Option<bool>("--in-cluster") { Description = "Use the API server of the cluster this pod runs in instead of embedding one" };
        var noNode = new Option<bool>("--no-node") { Description = "Do not serve the CSI Node service here (nodes run `dolly node`)" };
        var leaderElect = new Option<bool>("--leader-elect") { Description = "Run the controllers only while holding the Lease dolly-system/dolly-controllers (several replicas)" };
        var nbdTcp = new Option<string[]>("--nbd-tcp") { Description = "Also serve NBD on this TCP address (repeatable); other than loopback needs --nbd-tls-cert", HelpName = "ADDR:PORT", AllowMultipleArgumentsPerToken = false };
        var nbdCert = new Option<string?>("--nbd-tls-cert") { Description = "PEM certificate for NBD STARTTLS; with it, TCP clients must use TLS", HelpName = "FILE" };
        var nbdKey = new Option<string?>("--nbd-tls-key") { Description = "PEM private key of --nbd-tls-cert", HelpName = "FILE" };
        var nbdClientCa = new Option<string?>("--nbd-tls-client-ca") { Description = "PEM CA certificate; NBD clients must present a certificate it issued", HelpName = "FILE" };
        var initPool = new Option<bool>("--init-pool") { Description = "Create the pool when its directory is missing or empty (a first start in a cluster)" };
        var attach = NodeCommand.AttachOption();
        var logFormat = Logging.LogSetup.FormatOption();
        var metrics = new Option<string>("--metrics")
        {
            Description = $"Serve Prometheus metrics at http://ADDR:PORT/metrics, unauthenticated, so loopback only (port 0 picks a free one; '{MetricsOff}' serves none)",
            DefaultValueFactory = _ => Dolly.Metrics.MetricsServer.DefaultAddress,
            HelpName = "ADDR:PORT",
        };
        var metricsRemote = new Option<bool>("--metrics-allow-remote")
        {
            Description = "Let --metrics name any address, for a Prometheus in the cluster (as the snapshot-controller's --http-endpoint); /metrics stays unauthenticated and the web view is then not served",
        };
        var up = new Command(
            "up",
            "Run Dolly on this machine until Ctrl-C: the Kubernetes-compatible API server (HTTPS, token; a kubeconfig is written next to the pool), " +
            "the controllers (snapshots, provisioning, restore, clone, expansion, binding), the CSI driver (csi.sock in the pool directory) and the NBD server (nbd.sock). " +
            "State: the pool directory and, beside it, the API server's directory (the pool's name + '-api').")
        {
            address, port, verbose, kubeconfig, inCluster, noNode, leaderElect, nbdTcp, nbdCert, nbdKey, nbdClientCa, initPool, attach, metrics, metricsRemote, logFormat,
        };
        up.SetAction((parse, ct) => RunAsync(
            context,
            parse,
            new UpRequest(
                parse.GetValue(address)!,
                parse.GetValue(port),
                parse.GetValue(verbose),
                parse.GetValue(kubeconfig),
                parse.GetValue(inCluster),
                parse.GetValue(noNode),
                parse.GetValue(leaderElect),
                parse.GetValue(nbdTcp) ?? [],
                parse.GetValue(nbdCert),
                parse.GetValue(nbdKey),
                parse.GetValue(nbdClientCa),
                parse.GetValue(initPool),
                NodeCommand.ParseAttach(parse.GetValue(attach)),
                parse.GetValue(metrics)!,
                parse.GetValue(metricsRemote),
                parse.GetValue(logFormat)!),
            ct));
        return up;
    }

    private static async Task<int> RunAsync(CliContext context, ParseResult parse, UpRequest request, CancellationToken ct)
    {
        if (request.Kubeconfig is not null && request.InCluster)
        {
            throw new CliFailureException(ExitCodes.InvalidArgument, "--kubeconfig and --in-cluster exclude each other: name one API server");
        }

        if (request.LeaderElect && request.Kubeconfig is null && !request.InCluster)
        {
            throw new CliFailureException(ExitCodes.InvalidArgument, "--leader-elect needs --kubeconfig or --in-cluster: replicas elect a leader on a shared API server, and an embedded one has a single replica");
        }

        if ((request.NbdCert is null) != (request.NbdKey is null))
        {
            throw new CliFailureException(ExitCodes.InvalidArgument, "--nbd-tls-cert and --nbd-tls-key go together");
        }

        if (request.Kubeconfig is not null && !File.Exists(request.Kubeconfig))
        {
            throw new CliFailureException(ExitCodes.NotFound, $"--kubeconfig '{request.Kubeconfig}' does not exist");
        }

        var endpoints = request.NbdTcp.Select(t => NbdCommands.ParseEndpoint(t, "--nbd-tcp")).ToList();
        _ = MetricsEndpoint(request); // refused before anything starts
        using var certificate = request.NbdCert is null ? null : NbdCommands.LoadCertificate(request.NbdCert, request.NbdKey!);
        using var clientCa = request.NbdClientCa is null ? null : NbdCommands.LoadCa(request.NbdClientCa);
        bool embedded = request.Kubeconfig is null && !request.InCluster;
        KubernetesClientConfiguration? external = null;
        if (!embedded)
        {
            try
            {
                external = request.InCluster ? KubernetesClientConfiguration.InClusterConfig() : KubernetesClientConfiguration.BuildConfigFromConfigFile(request.Kubeconfig);
            }
            catch (Exception ex) when (ex is k8s.Exceptions.KubeConfigException or YamlDotNet.Core.YamlException or IOException or InvalidOperationException or UnauthorizedAccessException)
            {
                throw new CliFailureException(ExitCodes.InvalidArgument, $"cannot configure the Kubernetes client ({(request.InCluster ? "in-cluster" : request.Kubeconfig)}): {ex.Message}");
            }
        }

        using var loggers = Logging.LogSetup.Create(request.LogFormat, request.Verbose);

        try
        {
            return await RunCoreAsync(context, parse, request, external, endpoints, certificate, clientCa, loggers, ct).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (ct.IsCancellationRequested)
        {
            // Stopped while starting (or waiting for the Lease): whatever had started is stopped and the pool closed.
            await context.Host.Out.WriteLineAsync("stopped while starting").ConfigureAwait(false);
            return ExitCodes.Ok;
        }
    }

    private static System.Net.IPEndPoint? MetricsEndpoint(UpRequest request) =>
        request.Metrics == MetricsOff ? null : Dolly.Metrics.MetricsServer.ParseAddress(request.Metrics, "--metrics", request.MetricsRemote);

    private static async Task<int> RunCoreAsync(
        CliContext context,
        ParseResult parse,
        UpRequest request,
        KubernetesClientConfiguration? external,
        List<System.Net.IPEndPoint> endpoints,
        X509Certificate2? certificate,
        X509Certificate2? clientCa,
        ILoggerFactory loggers,
        CancellationToken ct)
    {
        if (!request.LeaderElect)
        {
            return await ServeAsync(context, parse, request, external, endpoints, certificate, clientCa, loggers, ct).ConfigureAwait(false);
        }

        // Several replicas: only the Lease holder opens the pool and serves; the others wait to take over.
        using var client = new Kubernetes(external!);
        var lease = new ControllerOptions
        {
            LeaseNamespace = context.Host.GetEnvironmentVariable("POD_NAMESPACE") is { Length: > 0 } podNamespace ? podNamespace : "dolly-system",
            Identity = Identity(context.Host),
        };
        await context.Host.Out.WriteLineAsync($"waiting for the Lease {lease.LeaseNamespace}/{lease.LeaseName} as {lease.Identity}").ConfigureAwait(false);
        await context.Host.Out.FlushAsync(ct).ConfigureAwait(false);
        int code = ExitCodes.Ok;
        bool lost = await DollyControllers.RunWhileLeadingAsync(
            client,
            lease,
            loggers,
            async leading => code = await ServeAsync(context, parse, request, external, endpoints, certificate, clientCa, loggers, leading).ConfigureAwait(false),
            ct).ConfigureAwait(false);
        if (lost)
        {
            await context.Host.Error.WriteLineAsync($"dolly up: lost the Lease {lease.LeaseNamespace}/{lease.LeaseName}; stopped serving and exiting so a fresh process competes again").ConfigureAwait(false);
            return ExitCodes.Unexpected;
        }

        return code;
    }

    /// <summary>This replica in the Lease and in events: the pod's name (POD_NAME) or the machine's, and the process id.</summary>
    private static string Identity(CliHost host) =>
        (host.GetEnvironmentVariable("POD_NAME") is { Length: > 0 } podName ? podName : Environment.MachineName) + "_" + Environment.ProcessId;

    /// <summary>Opens the pool and serves everything until cancelled (with --leader-elect: while leading).</summary>
    private static async Task<int> ServeAsync(
        CliContext context,
        ParseResult parse,
        UpRequest request,
        KubernetesClientConfiguration? external,
        List<System.Net.IPEndPoint> endpoints,
        X509Certificate2? certificate,
        X509Certificate2? clientCa,
        ILoggerFactory loggers,
        CancellationToken ct)
    {
        ct.ThrowIfCancellationRequested();
        using var pool = context.OpenPool(parse, request.InitPool);

        // Opening a pool (a journal replay, a migration) does not take a token: a signal during it is seen here.
        ct.ThrowIfCancellationRequested();

        // The node service attaches volumes through this process's own NBD server (kernel nbd or nbdfuse + loop,
        // as --attach says), so it gets the NBD socket; the node is this machine.
        var nbdOptions = new NbdServerOptions
        {
            UnixSocketPath = Path.Combine(pool.Directory, "nbd.sock"),
            TcpEndpoints = endpoints,
            Certificate = certificate,
            ClientCertificateAuthority = clientCa,
        };
        var options = new LocalStackOptions
        {
            Address = request.Address,
            Port = request.Port,
            External = external,
            Nbd = nbdOptions,
            NodeId = request.NoNode ? null : Environment.MachineName,
            NodeAttach = request.Attach,
            Identity = Identity(context.Host),
            Metrics = MetricsEndpoint(request),
            // The web view's login cookie must not cross a network in clear text.
            Web = MetricsEndpoint(request) is { } served && System.Net.IPAddress.IsLoopback(served.Address),
        };
        await using var stack = await LocalStack.StartAsync(pool, options, loggers, ct).ConfigureAwait(false);
        ct.ThrowIfCancellationRequested();
        var api = stack.Api;
        if (api is not null)
        {
            // The embedded server starts empty; a default group class lets a VolumeGroupSnapshot name none.
            await DefaultClasses.EnsureGroupSnapshotClassAsync(stack.Client, ct).ConfigureAwait(false);
        }

        var o = context.Host.Out;
        await o.WriteLineAsync("Dolly is up (Ctrl-C stops it)").ConfigureAwait(false);
        if (api is not null)
        {
            await o.WriteLineAsync($"  API server   {api.Url}").ConfigureAwait(false);
            await o.WriteLineAsync($"  kubeconfig   {api.KubeconfigPath}").ConfigureAwait(false);
        }
        else
        {
            await o.WriteLineAsync($"  API server   {stack.Config.Host} (external{(request.LeaderElect ? ", leader election on dolly-system/dolly-controllers" : "")})").ConfigureAwait(false);
        }

        await o.WriteLineAsync($"  controllers  snapshot, snapshotter, group snapshot, provisioner, resizer{(api is not null ? ", volume binder, StatefulSet claims" : "")}; dolly.io: schedules, golden snapshots, reverts").ConfigureAwait(false);
        await o.WriteLineAsync($"  pool         {pool.Directory}").ConfigureAwait(false);
        await o.WriteLineAsync($"  NBD          {nbdOptions.UnixSocketPath}{string.Concat(stack.Nbd!.LocalEndpoints.OfType<System.Net.IPEndPoint>().Select(e => $", tcp {e}"))}").ConfigureAwait(false);
        await o.WriteLineAsync($"  CSI          {stack.Csi.SocketPath} (Identity, Controller, GroupController, {(request.NoNode ? "" : "Node, ")}SnapshotMetadata)").ConfigureAwait(false);
        if (stack.MetricsUrl is { } metricsUrl)
        {
            await o.WriteLineAsync($"  metrics      {metricsUrl} (Prometheus, unauthenticated{(System.Net.IPAddress.IsLoopback(System.Net.IPAddress.Parse(metricsUrl.Host.Trim('[', ']'))) ? ", loopback" : "")})").ConfigureAwait(false);
        }

        if (stack.WebLoginUrl is { } login)
        {
            await o.WriteLineAsync($"  web view     {login} (one-time login link)").ConfigureAwait(false);
            var root = stack.MetricsUrl!;
            stack.WebView!.Login.TokenIssued += token =>
            {
                // Each link works once: the terminal always shows one that still does.
                o.WriteLine($"web view: that login link is used up; the next one is {new Uri(root, $"{Dolly.Web.WebView.LoginPath}?token={token}")}");
                o.Flush();
            };
        }

        if (!request.NoNode)
        {
            await o.WriteLineAsync($"  attach       {NodeCommand.AttachSummary(new Dolly.Csi.CsiServerOptions { SocketPath = stack.Csi.SocketPath, NodeAttach = request.Attach })}").ConfigureAwait(false);
        }
        if (api is not null)
        {
            await o.WriteLineAsync($"try: export KUBECONFIG={api.KubeconfigPath}; kubectl get namespaces").ConfigureAwait(false);
        }

        await o.FlushAsync(ct).ConfigureAwait(false);
        try
        {
            await stack.Controllers.WaitAsync(ct).ConfigureAwait(false);

            // Controllers that saw the stop first end quietly: that is the stop, not a failure.
            ct.ThrowIfCancellationRequested();

            // The controllers end by themselves only on a failure they could not ride out.
            await context.Host.Error.WriteLineAsync("dolly up: the controllers stopped unexpectedly; exiting").ConfigureAwait(false);
            return ExitCodes.Unexpected;
        }
        catch (OperationCanceledException)
        {
            // Disposing the stack (on the way out) stops the parts in this order.
            await o.WriteLineAsync("stopping: controllers, NBD connections, the CSI driver and the API server; committing the pool").ConfigureAwait(false);
        }

        return ExitCodes.Ok;
    }
}
