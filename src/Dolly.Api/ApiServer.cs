using System.Net;
using System.Text.Json.Nodes;
using Dolly.Api.Http;
using Dolly.Api.Resources;
using Dolly.Api.Security;
using Dolly.Api.Semantics;
using Dolly.Api.Storage;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace Dolly.Api;

/// <summary>Where and how the embedded API server runs.</summary>
/// <param name="StateDirectory">Holds the database, the CA, the serving certificate, the token and the kubeconfig.</param>
/// <param name="ListenAddress">The IP address to listen on; loopback by default.</param>
/// <param name="Port">The TCP port; 0 picks a free one (tests).</param>
public sealed record ApiServerOptions(string StateDirectory, string ListenAddress = "127.0.0.1", int Port = 6443)
{
    /// <summary>How many recent changes are kept for watches resuming from a resourceVersion; older ones get 410 Gone.</summary>
    public int WatchWindow { get; init; } = 10_000;

    /// <summary>How often a watch that allows bookmarks receives one.</summary>
    public TimeSpan BookmarkInterval { get; init; } = TimeSpan.FromSeconds(60);

    /// <summary>Watches without timeoutSeconds end after a random time between this and twice this.</summary>
    public TimeSpan MinRequestTimeout { get; init; } = TimeSpan.FromMinutes(30);
}

/// <summary>
/// An embedded Kubernetes-compatible API server: HTTPS with a self-generated CA, bearer-token authentication,
/// objects in SQLite, and the REST, watch, discovery and OpenAPI surface that kubectl and KubernetesClient use.
/// </summary>
public sealed class ApiServer : IAsyncDisposable
{
    private readonly ApiServerOptions _options;
    private readonly ILoggerFactory _loggerFactory;
    private readonly ILogger _logger;
    private readonly TimeProvider _time;
    private readonly CancellationTokenSource _stopping = new();
    private WebApplication? _app;
    private ObjectStore? _store;
    private Credentials? _credentials;
    private Task? _controllers;
    private readonly IPAddress _address;
    private FileStream? _lock;
    private bool _stopped;

    /// <summary>Creates a server; nothing happens until <see cref="StartAsync"/>.</summary>
    public ApiServer(ApiServerOptions options, ILoggerFactory? loggerFactory = null, TimeProvider? timeProvider = null)
    {
        ArgumentNullException.ThrowIfNull(options);
        if (!IPAddress.TryParse(options.ListenAddress, out var address))
        {
            throw new ArgumentException("ListenAddress must be an IP address: " + options.ListenAddress, nameof(options));
        }

        if (options.Port is < 0 or > 65535)
        {
            throw new ArgumentOutOfRangeException(nameof(options), options.Port, "Port must be between 0 and 65535");
        }

        _address = address;
        _options = options;
        _loggerFactory = loggerFactory ?? NullLoggerFactory.Instance;
        _logger = _loggerFactory.CreateLogger("Dolly.Api");
        _time = timeProvider ?? TimeProvider.System;
        Metrics = new Http.ApiMetrics(_time);
        KubeconfigPath = Path.Combine(Path.GetFullPath(options.StateDirectory), "kubeconfig");
    }

    /// <summary>The server's request and watch series, for a metrics exporter.</summary>
    public Http.ApiMetrics Metrics { get; }

    /// <summary>The URL clients use, e.g. https://127.0.0.1:6443; null until started.</summary>
    public Uri? Url { get; private set; }

    /// <summary>The kubeconfig written on start (cluster, user and context "dolly").</summary>
    public string KubeconfigPath { get; }

    /// <summary>The PEM file of the CA that signed the serving certificate.</summary>
    public string CaCertificatePath => Path.Combine(Path.GetFullPath(_options.StateDirectory), "ca.crt");

    /// <summary>Opens the state, starts listening and writes the kubeconfig.</summary>
    public async Task StartAsync(CancellationToken cancellationToken)
    {
        ObjectDisposedException.ThrowIf(_stopped, this);
        if (_app is not null)
        {
            throw new InvalidOperationException("the API server is already started");
        }

        string state = Path.GetFullPath(_options.StateDirectory);
        Directory.CreateDirectory(state);
        try
        {
            await StartCoreAsync(state, cancellationToken).ConfigureAwait(false);
        }
        catch
        {
            // Leave nothing half-open (database, lock, controllers) when binding or opening the state fails.
            _stopped = true;
            await ReleaseAsync(CancellationToken.None).ConfigureAwait(false);
            throw;
        }
    }

    private async Task StartCoreAsync(string state, CancellationToken cancellationToken)
    {
        var address = _address;
        try
        {
            // One server per state directory: a second would hand out the same resourceVersions.
            _lock = new FileStream(Path.Combine(state, "api.lock"), FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None);
        }
        catch (IOException e)
        {
            throw new InvalidOperationException("the state directory " + state + " is in use by another API server", e);
        }

        _credentials = Credentials.LoadOrCreate(state, address, _time);
        _store = new ObjectStore(Path.Combine(state, "api.db"), _options.WatchWindow);
        var registry = new ResourceRegistry();
        var service = new ResourceService(_store, registry, _time);
        Bootstrap(service);
        var listWatch = new ListWatch(service, _time, new WatchSettings(_options.BookmarkInterval, _options.MinRequestTimeout), _stopping.Token);
        var handler = new ApiHandler(_credentials, service, listWatch, () => !_stopping.IsCancellationRequested, Metrics, _logger);
        var controllers = new Controllers(service, _logger);
        _controllers = Task.Run(() => RunControllersAsync(controllers), CancellationToken.None);

        var builder = WebApplication.CreateEmptyBuilder(new WebApplicationOptions { ContentRootPath = state });
        builder.Services.Replace(ServiceDescriptor.Singleton(_loggerFactory));
        builder.Services.AddSingleton(typeof(ILogger<>), typeof(Logger<>));
        builder.Services.AddSingleton<IHostLifetime, EmbeddedLifetime>();
        builder.WebHost.UseKestrelCore();
        var serving = _credentials.Serving;
        builder.WebHost.ConfigureKestrel(k =>
        {
            k.Limits.MaxRequestBodySize = null;
            // Every informer holds a watch stream; many share one HTTP/2 connection (kube-apiserver allows 1000).
            k.Limits.Http2.MaxStreamsPerConnection = 1000;
            k.AddServerHeader = false;
            k.Listen(address, _options.Port, listen =>
            {
                listen.Protocols = HttpProtocols.Http1AndHttp2;
                listen.UseHttps(serving);
            });
        });
        var app = builder.Build();
        app.Run(handler.HandleAsync);
        _app = app;
        await app.StartAsync(cancellationToken).ConfigureAwait(false);

        var bound = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();
        int port = new Uri(bound).Port;
        string host = address.Equals(IPAddress.Any) ? "127.0.0.1"
            : address.Equals(IPAddress.IPv6Any) ? "[::1]"
            : address.AddressFamily == System.Net.Sockets.AddressFamily.InterNetworkV6 ? "[" + address + "]" : address.ToString();
        Url = new Uri("https://" + host + ":" + port.ToString(System.Globalization.CultureInfo.InvariantCulture));
        _credentials.WriteKubeconfig(KubeconfigPath, Url.ToString().TrimEnd('/'));
        ApiServerLog.Listening(_logger, Url, KubeconfigPath);
    }

    private async Task RunControllersAsync(Controllers controllers)
    {
        try
        {
            await controllers.RunAsync(_stopping.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (_stopping.IsCancellationRequested)
        {
            // Shutting down.
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            ApiServerLog.ControllersFailed(_logger, e);
        }
    }

    /// <summary>Creates the standard namespaces and the shipped CRDs on first start, and serves the stored CRDs.</summary>
    private static void Bootstrap(ResourceService service)
    {
        var nsType = service.Registry.Find("", "v1", "namespaces")!;
        foreach (var ns in new[] { "default", "kube-system", "kube-public", "kube-node-lease" })
        {
            if (service.Store.Get("/namespaces", "", ns) is null)
            {
                service.Create(nsType, "", new JsonObject { ["metadata"] = new JsonObject { ["name"] = ns } }, WriteOptions.Default with { FieldManager = "dolly-apiserver" });
            }
        }

        var crdType = service.Registry.Find("apiextensions.k8s.io", "v1", "customresourcedefinitions")!;
        foreach (var crd in ResourceRegistry.BootstrapCrds())
        {
            var stored = service.Store.Get(crdType.StorageKey, "", Json.Name(crd));
            if (stored is null)
            {
                service.Create(crdType, "", (JsonObject)crd.DeepClone(), WriteOptions.Default with { FieldManager = "dolly-apiserver" });
            }
            else if (MissingVersions(service.Get(crdType, "", Json.Name(crd)), crd) is { } upgraded)
            {
                // A state directory from before a version was shipped (groupsnapshot v1beta2): serve it too.
                service.Update(crdType, "", Json.Name(crd), upgraded, null, WriteOptions.Default with { FieldManager = "dolly-apiserver" });
            }
        }

        service.RefreshCrds();
    }

    /// <summary>
    /// The stored CRD with the shipped one's versions when the shipped one serves a version the stored one lacks;
    /// null when nothing is missing. Versions share one schema and storage, so no object needs converting.
    /// </summary>
    private static JsonObject? MissingVersions(JsonObject stored, JsonObject shipped)
    {
        static IEnumerable<string> Names(JsonObject crd) =>
            (crd["spec"]?["versions"] as JsonArray ?? []).Select(v => v?["name"]?.GetValue<string>() ?? "");
        if (Names(shipped).All(n => Names(stored).Contains(n, StringComparer.Ordinal)))
        {
            return null;
        }

        var upgraded = (JsonObject)stored.DeepClone();
        upgraded["spec"]!["versions"] = shipped["spec"]!["versions"]!.DeepClone();
        return upgraded;
    }

    /// <summary>Ends watches, stops listening, stops the controllers and closes the database.</summary>
    public async Task StopAsync(CancellationToken cancellationToken)
    {
        if (_stopped)
        {
            return;
        }

        _stopped = true;
        await ReleaseAsync(cancellationToken).ConfigureAwait(false);
        ApiServerLog.Stopped(_logger);
    }

    private async Task ReleaseAsync(CancellationToken cancellationToken)
    {
        await _stopping.CancelAsync().ConfigureAwait(false);
        if (_app is not null)
        {
            // Watches end on _stopping, so the graceful stop below only waits for short requests in flight.
            await _app.StopAsync(cancellationToken).ConfigureAwait(false);
            await _app.DisposeAsync().ConfigureAwait(false);
            _app = null;
        }

        if (_controllers is not null)
        {
            await _controllers.WaitAsync(cancellationToken).ConfigureAwait(false);
        }

        _store?.Dispose();
        _store = null;
        _credentials?.Dispose();
        _credentials = null;
        if (_lock is not null)
        {
            await _lock.DisposeAsync().ConfigureAwait(false);
            _lock = null;
        }
    }

    /// <summary>Stops the server if it is running.</summary>
    public async ValueTask DisposeAsync()
    {
        await StopAsync(CancellationToken.None).ConfigureAwait(false);
        _stopping.Dispose();
        Metrics.Dispose();
    }
}
