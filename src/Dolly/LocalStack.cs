using Dolly.Api;
using Dolly.Controllers;
using Dolly.Controllers.Metrics;
using Dolly.Csi;
using Dolly.Metrics;
using Dolly.Nbd;
using Dolly.Storage;
using Grpc.Net.Client;
using k8s;
using Microsoft.Extensions.Logging;

namespace Dolly;

/// <summary>What <see cref="LocalStack"/> starts over a pool.</summary>
internal sealed record LocalStackOptions
{
    /// <summary>Address of the embedded API server.</summary>
    public string Address { get; init; } = "127.0.0.1";

    /// <summary>Port of the embedded API server; 0 picks a free one.</summary>
    public int Port { get; init; } = 6443;

    /// <summary>An API server to use instead of embedding one (a real cluster); the volume binder then stays off.</summary>
    public KubernetesClientConfiguration? External { get; init; }

    /// <summary>The NBD server to run; null runs none.</summary>
    public NbdServerOptions? Nbd { get; init; }

    /// <summary>
    /// The node id of the CSI Node service; null serves no Node service. The node attaches volumes through
    /// this stack's own NBD server, so it needs <see cref="Nbd"/>.
    /// </summary>
    public string? NodeId { get; init; }

    /// <summary>How the CSI Node service attaches volumes.</summary>
    public NodeAttachMode NodeAttach { get; init; } = NodeAttachMode.Auto;

    /// <summary>Where to serve /metrics (loopback only, unauthenticated); null serves none.</summary>
    public System.Net.IPEndPoint? Metrics { get; init; }

    /// <summary>Whether to serve the web view at /ui on the <see cref="Metrics"/> listener.</summary>
    public bool Web { get; init; }

    /// <summary>This replica's identity for leader election and events.</summary>
    public string Identity { get; init; } = Environment.MachineName + "_" + Environment.ProcessId;
}

/// <summary>
/// What <c>dolly up</c> runs over one open pool, started in this order and stopped in the reverse one: the
/// embedded API server (state in <c>&lt;pool&gt;-api/</c>, unless <see cref="LocalStackOptions.External"/>
/// names one), the CSI driver on <c>&lt;pool&gt;/csi.sock</c>, optionally the NBD server, and the controllers,
/// which reach the API server through its kubeconfig and the driver through the CSI socket exactly as they
/// would in a cluster. <c>dolly up</c> serves it until Ctrl-C; <c>dolly demo</c> drives it for a few seconds.
/// The pool stays the caller's: the stack never disposes it.
/// </summary>
internal sealed class LocalStack : IAsyncDisposable
{
    /// <summary>How long start-up waits for an external API server's /version before going on without it.</summary>
    private static readonly TimeSpan VersionTimeout = TimeSpan.FromSeconds(10);

    private readonly CancellationTokenSource _stopControllers;
    private ApiServer? _api;
    private CsiServer? _csi;
    private NbdServer? _nbd;
    private Kubernetes? _client;
    private GrpcChannel? _channel;
    private Task? _controllers;
    private ControllerMetrics? _controllerMetrics;
    private PoolMetrics? _poolMetrics;
    private NbdMetrics? _nbdMetrics;
    private CsiMetrics? _csiMetrics;
    private MetricsServer? _metrics;
    private Web.WebView? _web;
    private bool _disposed;

    private LocalStack(CancellationToken ct) => _stopControllers = CancellationTokenSource.CreateLinkedTokenSource(ct);

    /// <summary>The embedded API server; null with an external one.</summary>
    public ApiServer? Api => _api;

    /// <summary>The CSI driver (Identity, Controller, GroupController, SnapshotMetadata, and Node when asked).</summary>
    public CsiServer Csi => _csi ?? throw new InvalidOperationException("the stack is not started");

    /// <summary>The NBD server; null when none was asked for.</summary>
    public NbdServer? Nbd => _nbd;

    /// <summary>How the controllers (and any other client of this process) reach the API server.</summary>
    public KubernetesClientConfiguration Config { get; private set; } = null!;

    /// <summary>A client of the API server, as kubectl would be one.</summary>
    public Kubernetes Client => _client ?? throw new InvalidOperationException("the stack is not started");

    /// <summary>The scrape URL of /metrics; null when none is served.</summary>
    public Uri? MetricsUrl => _metrics?.Url;

    /// <summary>The web view; null when none is served.</summary>
    public Web.WebView? WebView => _web;

    /// <summary>The one-time login link of the web view (each use makes a new one); null when none is served.</summary>
    public Uri? WebLoginUrl => _web is null || _metrics is null ? null : new Uri(_metrics.Root, $"{Web.WebView.LoginPath}?token={_web.Login.CurrentToken}");

    /// <summary>The controllers; this task ends by itself only on a failure they could not ride out.</summary>
    public Task Controllers => _controllers ?? throw new InvalidOperationException("the stack is not started");

    /// <summary>
    /// Starts everything over <paramref name="pool"/>. A part that cannot start is a
    /// <see cref="CliFailureException"/> naming it, and whatever had started is stopped again.
    /// </summary>
    public static async Task<LocalStack> StartAsync(Pool pool, LocalStackOptions options, ILoggerFactory loggers, CancellationToken ct)
    {
        var stack = new LocalStack(ct);
        try
        {
            await stack.StartCoreAsync(pool, options, loggers, ct).ConfigureAwait(false);
            return stack;
        }
        catch
        {
            await stack.DisposeAsync().ConfigureAwait(false);
            throw;
        }
    }

    private async Task StartCoreAsync(Pool pool, LocalStackOptions options, ILoggerFactory loggers, CancellationToken ct)
    {
        if (options.External is null)
        {
            string stateDir = CliContext.BesidePool(pool.Directory, "-api");
            try
            {
                _api = new ApiServer(new ApiServerOptions(stateDir, options.Address, options.Port), loggers);
            }
            catch (ArgumentException ex)
            {
                throw new CliFailureException(ExitCodes.InvalidArgument, ex.Message);
            }

            try
            {
                await _api.StartAsync(ct).ConfigureAwait(false);
            }
            catch (Exception ex) when (ex is IOException or InvalidOperationException)
            {
                throw new CliFailureException(ExitCodes.IoError, $"cannot start the API server on {options.Address}:{options.Port}: {ex.Message}");
            }
        }

        // Every step checks the one token: a stop that arrives between steps (or during one that ignores it)
        // ends the start here, and StartAsync stops what had started.
        ct.ThrowIfCancellationRequested();
        bool node = options.NodeId is not null && options.Nbd is not null;

        // Shared: the NBD server records who holds each volume; the driver applies content requests only to volumes nobody holds.
        var attachments = new ExportAttachments();
        _csiMetrics = options.Metrics is null ? null : new CsiMetrics();
        _csi = new CsiServer(
            pool,
            new CsiServerOptions
            {
                SocketPath = Path.Combine(pool.Directory, "csi.sock"),
                NodeId = node ? options.NodeId : null,
                NbdSocketPath = node ? options.Nbd!.UnixSocketPath : null,
                NodeAttach = options.NodeAttach,
                Attachments = attachments,
                Metrics = _csiMetrics,
            },
            loggers);
        try
        {
            await _csi.StartAsync(ct).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is IOException or InvalidOperationException)
        {
            throw new CliFailureException(ExitCodes.IoError, $"cannot start the CSI driver on {_csi.SocketPath}: {ex.Message}");
        }

        ct.ThrowIfCancellationRequested();
        if (options.Nbd is { } nbdOptions)
        {
            if (options.Metrics is not null)
            {
                _nbdMetrics = new NbdMetrics();
                nbdOptions = nbdOptions with { Metrics = _nbdMetrics };
            }

            if (nbdOptions.Validate() is { } problem)
            {
                throw new CliFailureException(ExitCodes.InvalidArgument, problem);
            }

            _nbd = new NbdServer(new ExportCatalog(pool, attachments), nbdOptions, loggers.CreateLogger<NbdServer>());
            _nbdMetrics?.TrackConnections(_nbd);
            try
            {
                _nbd.Start();
            }
            catch (InvalidOperationException ex)
            {
                throw new CliFailureException(ExitCodes.IoError, ex.Message);
            }
        }

        ct.ThrowIfCancellationRequested();
        Config = options.External ?? KubernetesClientConfiguration.BuildConfigFromConfigFile(_api!.KubeconfigPath);
        _client = new Kubernetes(Config);
        if (options.External is not null)
        {
            await WarnAboutServerAsync(_client, loggers.CreateLogger<LocalStack>(), ct).ConfigureAwait(false);
        }

        ct.ThrowIfCancellationRequested();
        if (options.Metrics is { } metricsEndpoint)
        {
            _controllerMetrics = new ControllerMetrics();
            _poolMetrics = new PoolMetrics(pool);
            if (options.Web)
            {
                _web = new Web.WebView(pool, _client, loggers, TimeProvider.System);
                _web.Start();
            }

            try
            {
                List<MetricsServer.MeterSource> sources =
                [
                    new(ControllerMetrics.MeterName, _controllerMetrics.Owns),
                    new(PoolMetrics.MeterName, _poolMetrics.Owns),
                    new(CsiMetrics.MeterName, _csiMetrics!.Owns),
                ];
                if (_api is not null)
                {
                    sources.Add(new(Dolly.Api.Http.ApiMetrics.MeterName, _api.Metrics.Owns));
                }

                if (_nbdMetrics is not null)
                {
                    sources.Add(new(NbdMetrics.MeterName, _nbdMetrics.Owns));
                }

                _metrics = await MetricsServer.StartAsync(metricsEndpoint, sources, _web, loggers, ct).ConfigureAwait(false);
            }
            catch (Exception ex) when (ex is IOException or InvalidOperationException)
            {
                throw new CliFailureException(ExitCodes.IoError, $"cannot serve metrics on {metricsEndpoint}: {ex.Message}");
            }
        }

        ct.ThrowIfCancellationRequested();
        _channel = DollyControllers.ConnectCsi(_csi.SocketPath);
        var controllerOptions = new ControllerOptions
        {
            BindVolumes = _api is not null,
            DriverServesNode = node,
            PodsRunContainers = _api is null,
            Identity = options.Identity,
            Metrics = _controllerMetrics,
        };
        _controllers = DollyControllers.RunAsync(_client, _channel.CreateCallInvoker(), controllerOptions, loggers, _stopControllers.Token);
    }

    /// <summary>Warns when the cluster's API server is one that drops the CRDs' validation rules.</summary>
    private static async Task WarnAboutServerAsync(Kubernetes client, ILogger logger, CancellationToken ct)
    {
        k8s.Models.VersionInfo version;

        // A server that accepts and never answers must not hold up the start for the client's 100 s timeout.
        using var bounded = CancellationTokenSource.CreateLinkedTokenSource(ct);
        bounded.CancelAfter(VersionTimeout);
        try
        {
            version = await client.Version.GetCodeAsync(bounded.Token).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is k8s.Autorest.HttpOperationException or HttpRequestException || (ex is OperationCanceledException && !ct.IsCancellationRequested))
        {
            // Not knowing the version is no reason not to start; the controllers' own calls report a server that is down.
            LocalStackLog.VersionUnknown(logger, ex.Message);
            return;
        }

        if (ServerVersion.ValidationRulesWarning(version) is { } warning)
        {
            LocalStackLog.OldServer(logger, warning);
        }
    }

    /// <summary>
    /// Stops the controllers first (so nothing is half-reconciled against a vanishing driver), then NBD
    /// connections, the CSI driver and the API server. A controller failure other than cancellation is
    /// rethrown once everything is stopped.
    /// </summary>
    public async ValueTask DisposeAsync()
    {
        if (_disposed)
        {
            return;
        }

        _disposed = true;
        await _stopControllers.CancelAsync().ConfigureAwait(false);
        try
        {
            if (_controllers is not null)
            {
                try
                {
                    await _controllers.ConfigureAwait(false);
                }
                catch (OperationCanceledException)
                {
                }
            }
        }
        finally
        {
            _channel?.Dispose();
            _client?.Dispose();
            if (_metrics is not null)
            {
                await _metrics.DisposeAsync().ConfigureAwait(false);
            }

            if (_web is not null)
            {
                await _web.DisposeAsync().ConfigureAwait(false);
            }

            _poolMetrics?.Dispose();
            _controllerMetrics?.Dispose();
            if (_nbd is not null)
            {
                await _nbd.DisposeAsync().ConfigureAwait(false);
            }

            _nbdMetrics?.Dispose();
            _csiMetrics?.Dispose();

            if (_csi is not null)
            {
                await _csi.DisposeAsync().ConfigureAwait(false);
            }

            if (_api is not null)
            {
                await _api.StopAsync(CancellationToken.None).ConfigureAwait(false);
                await _api.DisposeAsync().ConfigureAwait(false);
            }

            _stopControllers.Dispose();
        }
    }
}

internal static partial class LocalStackLog
{
    [LoggerMessage(1, LogLevel.Warning, "{Warning}")]
    public static partial void OldServer(ILogger logger, string warning);

    [LoggerMessage(2, LogLevel.Information, "could not read the API server's version: {Message}")]
    public static partial void VersionUnknown(ILogger logger, string message);
}
