using Dolly.Storage;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace Dolly.Csi;

/// <summary>
/// Serves the CSI Identity, Controller, GroupController and SnapshotMetadata services, Dolly's own
/// dolly.v1.VolumeContentService (and Node, when <see cref="CsiServerOptions.ServesNode"/>, with Dolly's own node
/// service, dolly.node.v1.DollyNode) for one <see cref="Pool"/> over a unix socket, HTTP/2
/// only (gRPC), with Kestrel. The pool stays owned by the caller. Without a pool (a node of a cluster
/// whose pool is elsewhere) it serves Identity and Node only.
/// </summary>
public sealed class CsiServer : IAsyncDisposable
{
    private readonly Pool? _pool;
    private readonly CsiServerOptions _options;
    private readonly ILoggerFactory _loggerFactory;
    private readonly ILogger _logger;
    private WebApplication? _app;
    private ContentRequests? _contentRequests;
    private RepositoryTransfers? _repositoryTransfers;

    /// <summary>Creates a server; nothing listens until <see cref="StartAsync"/>.</summary>
    public CsiServer(Pool pool, CsiServerOptions options, ILoggerFactory? loggerFactory = null)
    {
        ArgumentNullException.ThrowIfNull(pool);
        ArgumentNullException.ThrowIfNull(options);
        ArgumentException.ThrowIfNullOrEmpty(options.SocketPath);
        _pool = pool;
        _options = options;
        _loggerFactory = loggerFactory ?? NullLoggerFactory.Instance;
        _logger = _loggerFactory.CreateLogger<CsiServer>();
    }

    /// <summary>
    /// Creates a node-only server: Identity and Node, attaching volumes from the NBD server in
    /// <see cref="CsiServerOptions.Nbd"/> (typically TCP with TLS to the machine holding the pool).
    /// <paramref name="options"/> must set <see cref="CsiServerOptions.NodeId"/> and an NBD server.
    /// </summary>
    public CsiServer(CsiServerOptions options, ILoggerFactory? loggerFactory = null)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentException.ThrowIfNullOrEmpty(options.SocketPath);
        if (!options.ServesNode)
        {
            throw new ArgumentException("a CSI server without a pool serves the Node service only: set NodeId and the NBD server (Nbd or NbdSocketPath)", nameof(options));
        }

        _pool = null;
        _options = options;
        _loggerFactory = loggerFactory ?? NullLoggerFactory.Instance;
        _logger = _loggerFactory.CreateLogger<CsiServer>();
    }

    /// <summary>Whether this server has a pool and so serves the Controller, GroupController and SnapshotMetadata services.</summary>
    public bool ServesController => _pool is not null;

    /// <summary>The unix socket the server listens on.</summary>
    public string SocketPath => _options.SocketPath;

    /// <summary>Starts listening; returns once the socket accepts connections.</summary>
    public async Task StartAsync(CancellationToken cancellationToken = default)
    {
        if (_app is not null)
        {
            throw new InvalidOperationException($"the CSI server on '{SocketPath}' is already started");
        }

        string socket = Path.GetFullPath(SocketPath);
        Directory.CreateDirectory(Path.GetDirectoryName(socket)!);

        Dolly.Nbd.UnixSocketPath.RemoveStale(socket);

        var builder = WebApplication.CreateSlimBuilder(new WebApplicationOptions
        {
            ApplicationName = typeof(CsiServer).Assembly.GetName().Name,
            ContentRootPath = AppContext.BaseDirectory,
        });
        builder.Logging.ClearProviders();
        builder.Services.AddSingleton<IHostLifetime, EmbeddedLifetime>();
        builder.Services.AddSingleton(_loggerFactory);
        builder.Services.AddSingleton(_options);
        builder.Services.AddSingleton(new IdentityService(_options, ServesController));

        // Singletons: the controller serializes check-then-create sequences with one lock per server.
        if (_pool is not null)
        {
            builder.Services.AddSingleton(_pool);
            builder.Services.AddSingleton<ControllerService>();
            builder.Services.AddSingleton<GroupControllerService>();
            builder.Services.AddSingleton<SnapshotMetadataService>();

            // Opened before serving: a request a crash interrupted is finished before any client can attach.
            _contentRequests ??= ContentRequests.Open(_pool, _options.Attachments ?? new Dolly.Nbd.ExportAttachments(), _loggerFactory.CreateLogger<ContentRequests>());
            builder.Services.AddSingleton(_contentRequests);
            builder.Services.AddSingleton<VolumeContentService>();

            // Snapshot repositories: uploads and restores run here, next to the pool.
            _repositoryTransfers ??= new RepositoryTransfers(_pool, RepositoryStateDirectory(_options), TimeProvider.System, _loggerFactory.CreateLogger<RepositoryTransfers>());
            builder.Services.AddSingleton(_repositoryTransfers);
            builder.Services.AddSingleton<SnapshotRepositoryService>();
        }

        if (_options.ServesNode)
        {
            builder.Services.AddSingleton(sp => new NodeService(_pool, _options, sp.GetRequiredService<ILogger<NodeService>>()));

            // A node restarted while it held a file system frozen thaws it before it serves anything.
            var freezer = new NodeFreezer(NodeService.StateDirectory(_options), _options.TimeProvider, _loggerFactory.CreateLogger<NodeFreezer>());
            freezer.ThawLeftovers();
            builder.Services.AddSingleton(new NodeFreezeService(freezer));
        }

        builder.Services.AddGrpc(grpc =>
        {
            grpc.Interceptors.Add<CsiLoggingInterceptor>();
            if (_options.Metrics is { } metrics)
            {
                grpc.Interceptors.Add<CsiMetricsInterceptor>(metrics, _options.DriverName);
            }
        });
        builder.WebHost.ConfigureKestrel(kestrel =>
        {
            kestrel.AddServerHeader = false;
            kestrel.ListenUnixSocket(socket, listen => listen.Protocols = HttpProtocols.Http2);
        });

        var app = builder.Build();
        app.MapGrpcService<IdentityService>();
        if (_pool is not null)
        {
            app.MapGrpcService<ControllerService>();
            app.MapGrpcService<GroupControllerService>();
            app.MapGrpcService<SnapshotMetadataService>();
            app.MapGrpcService<VolumeContentService>();
            app.MapGrpcService<SnapshotRepositoryService>();
        }
        if (_options.ServesNode)
        {
            app.MapGrpcService<NodeService>();
            app.MapGrpcService<NodeFreezeService>();
        }

        await app.StartAsync(cancellationToken).ConfigureAwait(false);

        // Kestrel binds with the process umask; narrow to the owner at once. The CO (kubelet, sidecars)
        // runs as the same user, and nobody else may create or delete volumes.
        if (!OperatingSystem.IsWindows())
        {
            File.SetUnixFileMode(socket, UnixFileMode.UserRead | UnixFileMode.UserWrite);
        }

        _app = app;
        CsiLog.Listening(_logger, _options.DriverName, socket);
    }

    /// <summary>Stops listening, letting calls in flight finish within the token's time.</summary>
    public async Task StopAsync(CancellationToken cancellationToken = default)
    {
        var app = _app;
        if (app is null)
        {
            return;
        }

        _app = null;
        try
        {
            await app.StopAsync(cancellationToken).ConfigureAwait(false);
        }
        finally
        {
            await app.DisposeAsync().ConfigureAwait(false);
            if (File.Exists(SocketPath))
            {
                File.Delete(SocketPath);
            }

            _contentRequests?.Dispose();
            _contentRequests = null;
            if (_repositoryTransfers is not null)
            {
                // Transfers in flight stop (an upload resumes from its journal when asked again).
                await _repositoryTransfers.DisposeAsync().ConfigureAwait(false);
                _repositoryTransfers = null;
            }

            CsiLog.Stopped(_logger, SocketPath);
        }
    }

    /// <summary>Where upload journals live: <see cref="CsiServerOptions.RepositoryStateDirectory"/>, or <c>repository</c> next to the socket.</summary>
    internal static string RepositoryStateDirectory(CsiServerOptions options) =>
        Path.GetFullPath(options.RepositoryStateDirectory ?? Path.Combine(Path.GetDirectoryName(Path.GetFullPath(options.SocketPath))!, "repository"));

    /// <inheritdoc />
    public async ValueTask DisposeAsync() => await StopAsync().ConfigureAwait(false);
}
