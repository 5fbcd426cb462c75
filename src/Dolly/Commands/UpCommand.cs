using System.CommandLine;
using System.Security.Cryptography.X509Certificates;
using Dolly.Api;
using Dolly.Controllers;
using Dolly.Csi;
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
        bool InitPool);

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
        var up = new Command(
            "up",
            "Run Dolly on this machine until Ctrl-C: the Kubernetes-compatible API server (HTTPS, token; a kubeconfig is written next to the pool), " +
            "the controllers (snapshots, provisioning, restore, clone, expansion, binding), the CSI driver (csi.sock in the pool directory) and the NBD server (nbd.sock). " +
            "State: the pool directory and, beside it, the API server's directory (the pool's name + '-api').")
        {
            address, port, verbose, kubeconfig, inCluster, noNode, leaderElect, nbdTcp, nbdCert, nbdKey, nbdClientCa, initPool,
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
                parse.GetValue(initPool)),
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

        using var loggers = LoggerFactory.Create(b => b
            .AddSimpleConsole(o =>
            {
                o.SingleLine = true;
                o.TimestampFormat = "HH:mm:ss ";
            })
            .SetMinimumLevel(request.Verbose ? LogLevel.Information : LogLevel.Warning));

        if (!request.LeaderElect)
        {
            return await RunLeadingAsync(context, parse, request, external, endpoints, certificate, clientCa, loggers, ct).ConfigureAwait(false);
        }

        // Several replicas: only the Lease holder opens the pool and serves; the others wait to take over.
        using var client = new Kubernetes(external!);
        var lease = new ControllerOptions
        {
            LeaseNamespace = Environment.GetEnvironmentVariable("POD_NAMESPACE") is { Length: > 0 } podNamespace ? podNamespace : "dolly-system",
            Identity = Identity(),
        };
        await context.Host.Out.WriteLineAsync($"waiting for the Lease {lease.LeaseNamespace}/{lease.LeaseName} as {lease.Identity}").ConfigureAwait(false);
        await context.Host.Out.FlushAsync(ct).ConfigureAwait(false);
        int code = ExitCodes.Ok;
        bool lost = await DollyControllers.RunWhileLeadingAsync(
            client,
            lease,
            loggers,
            async leading => code = await RunLeadingAsync(context, parse, request, external, endpoints, certificate, clientCa, loggers, leading).ConfigureAwait(false),
            ct).ConfigureAwait(false);
        if (lost)
        {
            await context.Host.Error.WriteLineAsync($"dolly up: lost the Lease {lease.LeaseNamespace}/{lease.LeaseName}; stopped serving and exiting so a fresh process competes again").ConfigureAwait(false);
            return ExitCodes.Unexpected;
        }

        return code;
    }

    private static string Identity() =>
        (Environment.GetEnvironmentVariable("POD_NAME") is { Length: > 0 } podName ? podName : Environment.MachineName) + "_" + Environment.ProcessId;

    /// <summary>Opens the pool and serves everything until cancelled (with leader election: while leading).</summary>
    private static async Task<int> RunLeadingAsync(
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
        using var pool = context.OpenPool(parse, request.InitPool);
        ApiServer? api = null;
        if (external is null)
        {
            string stateDir = CliContext.BesidePool(pool.Directory, "-api");
            try
            {
                api = new ApiServer(new ApiServerOptions(stateDir, request.Address, request.Port), loggers);
            }
            catch (ArgumentException ex)
            {
                throw new CliFailureException(ExitCodes.InvalidArgument, ex.Message);
            }
        }

        try
        {
            if (api is not null)
            {
                try
                {
                    await api.StartAsync(ct).ConfigureAwait(false);
                }
                catch (Exception ex) when (ex is IOException or InvalidOperationException)
                {
                    throw new CliFailureException(ExitCodes.IoError, $"cannot start the API server on {request.Address}:{request.Port}: {ex.Message}");
                }
            }

            return await ServeAsync(context, pool, api, external, request, endpoints, certificate, clientCa, loggers, ct).ConfigureAwait(false);
        }
        finally
        {
            if (api is not null)
            {
                await api.StopAsync(CancellationToken.None).ConfigureAwait(false);
                await api.DisposeAsync().ConfigureAwait(false);
            }
        }
    }

    private static async Task<int> ServeAsync(
        CliContext context,
        Storage.Pool pool,
        ApiServer? api,
        KubernetesClientConfiguration? external,
        UpRequest request,
        List<System.Net.IPEndPoint> endpoints,
        X509Certificate2? certificate,
        X509Certificate2? clientCa,
        ILoggerFactory loggers,
        CancellationToken ct)
    {
        // The node service attaches volumes through this process's own NBD server (nbdfuse + loop here,
        // where no /dev/nbd exists), so it gets the NBD socket; the node is this machine.
        string nbdSocket = Path.Combine(pool.Directory, "nbd.sock");
        var csi = new CsiServer(
            pool,
            new CsiServerOptions
            {
                SocketPath = Path.Combine(pool.Directory, "csi.sock"),
                NodeId = request.NoNode ? null : Environment.MachineName,
                NbdSocketPath = request.NoNode ? null : nbdSocket,
            },
            loggers);
        await using var csiLifetime = csi.ConfigureAwait(false);
        try
        {
            await csi.StartAsync(ct).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is IOException or InvalidOperationException)
        {
            throw new CliFailureException(ExitCodes.IoError, $"cannot start the CSI driver on {csi.SocketPath}: {ex.Message}");
        }

        var nbdOptions = new NbdServerOptions
        {
            UnixSocketPath = nbdSocket,
            TcpEndpoints = endpoints,
            Certificate = certificate,
            ClientCertificateAuthority = clientCa,
        };
        if (nbdOptions.Validate() is { } problem)
        {
            throw new CliFailureException(ExitCodes.InvalidArgument, problem);
        }

        var nbd = new NbdServer(new ExportCatalog(pool), nbdOptions, loggers.CreateLogger<NbdServer>());
        await using var nbdLifetime = nbd.ConfigureAwait(false);
        try
        {
            nbd.Start();
        }
        catch (InvalidOperationException ex)
        {
            throw new CliFailureException(ExitCodes.IoError, ex.Message);
        }

        var config = external ?? KubernetesClientConfiguration.BuildConfigFromConfigFile(api!.KubeconfigPath);
        using var client = new Kubernetes(config);
        using var channel = DollyControllers.ConnectCsi(csi.SocketPath);
        using var stopControllers = CancellationTokenSource.CreateLinkedTokenSource(ct);
        // With --leader-elect this process already holds the Lease: the controllers need no election of their own.
        var controllerOptions = new ControllerOptions { BindVolumes = api is not null, Identity = Identity() };
        var controllers = DollyControllers.RunAsync(client, channel.CreateCallInvoker(), controllerOptions, loggers, stopControllers.Token);

        var o = context.Host.Out;
        await o.WriteLineAsync("Dolly is up (Ctrl-C stops it)").ConfigureAwait(false);
        if (api is not null)
        {
            await o.WriteLineAsync($"  API server   {api.Url}").ConfigureAwait(false);
            await o.WriteLineAsync($"  kubeconfig   {api.KubeconfigPath}").ConfigureAwait(false);
        }
        else
        {
            await o.WriteLineAsync($"  API server   {config.Host} (external{(request.LeaderElect ? ", leader election on dolly-system/dolly-controllers" : "")})").ConfigureAwait(false);
        }

        await o.WriteLineAsync($"  controllers  snapshot, snapshotter, provisioner, resizer{(api is not null ? ", volume binder" : "")}").ConfigureAwait(false);
        await o.WriteLineAsync($"  pool         {pool.Directory}").ConfigureAwait(false);
        await o.WriteLineAsync($"  NBD          {nbdOptions.UnixSocketPath}{string.Concat(nbd.LocalEndpoints.OfType<System.Net.IPEndPoint>().Select(e => $", tcp {e}"))}").ConfigureAwait(false);
        await o.WriteLineAsync($"  CSI          {csi.SocketPath} (Identity, Controller, GroupController, {(request.NoNode ? "" : "Node, ")}SnapshotMetadata)").ConfigureAwait(false);
        if (api is not null)
        {
            await o.WriteLineAsync($"try: export KUBECONFIG={api.KubeconfigPath}; kubectl get namespaces").ConfigureAwait(false);
        }

        await o.FlushAsync(ct).ConfigureAwait(false);
        try
        {
            await controllers.WaitAsync(ct).ConfigureAwait(false);

            // The controllers end by themselves only on a failure they could not ride out.
            await context.Host.Error.WriteLineAsync("dolly up: the controllers stopped unexpectedly; exiting").ConfigureAwait(false);
            return ExitCodes.Unexpected;
        }
        catch (OperationCanceledException)
        {
            await o.WriteLineAsync("stopping: controllers, NBD connections, the CSI driver and the API server; committing the pool").ConfigureAwait(false);
        }
        finally
        {
            await stopControllers.CancelAsync().ConfigureAwait(false);
            try
            {
                await controllers.ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
            }
        }

        return ExitCodes.Ok;
    }
}
