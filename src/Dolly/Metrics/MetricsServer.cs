using System.Diagnostics.Metrics;
using System.Globalization;
using System.Net;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using OpenTelemetry;
using OpenTelemetry.Metrics;

namespace Dolly.Metrics;

/// <summary>
/// Serves <c>/metrics</c> in the Prometheus text format over plain HTTP, with OpenTelemetry's exporter, for
/// the instruments of one stack only (its controllers', API server's, NBD server's and pool's). It has no
/// authentication, which is why <see cref="ParseAddress"/> accepts loopback addresses only.
/// </summary>
internal sealed class MetricsServer : IAsyncDisposable
{
    /// <summary>Where <c>dolly up</c> serves metrics unless told otherwise.</summary>
    public const string DefaultAddress = "127.0.0.1:9849";

    /// <summary>The path Prometheus scrapes.</summary>
    public const string Path = "/metrics";

    /// <summary>
    /// Series per instrument for those with a series per volume, snapshot or export. The exporter's default (2,000)
    /// would fold the rest of a pool of 10,000 volumes and snapshots into one overflow series.
    /// </summary>
    internal const int PerObjectSeriesLimit = 100_000;

    private readonly WebApplication _app;
    private readonly MeterProvider _provider;

    private MetricsServer(WebApplication app, MeterProvider provider, Uri url)
    {
        _app = app;
        _provider = provider;
        Url = url;
    }

    /// <summary>The scrape URL, e.g. http://127.0.0.1:9849/metrics.</summary>
    public Uri Url { get; }

    /// <summary>The same listener's root, e.g. http://127.0.0.1:9849/.</summary>
    public Uri Root => new(Url, "/");

    /// <summary>
    /// Parses <c>--metrics</c>: an address and port on loopback (port 0 picks a free one). Any other address is
    /// refused, since the endpoint is unauthenticated, unless <paramref name="allowRemote"/> says the operator
    /// chose that (a Prometheus in the cluster scraping the pod, as upstream's sidecars are scraped).
    /// </summary>
    public static IPEndPoint ParseAddress(string text, string option, bool allowRemote = false)
    {
        if (!IPEndPoint.TryParse(text, out var endpoint) || !text.Contains(':', StringComparison.Ordinal))
        {
            throw new CliFailureException(ExitCodes.InvalidArgument, $"{option} '{text}' is not an address and port such as {DefaultAddress}");
        }

        if (!allowRemote && !IPAddress.IsLoopback(endpoint.Address))
        {
            throw new CliFailureException(ExitCodes.InvalidArgument, $"{option} '{text}' is not a loopback address: /metrics has no authentication, so it is served on loopback only unless --metrics-allow-remote says otherwise");
        }

        return endpoint;
    }

    /// <summary>
    /// Starts serving the instruments of <paramref name="sources"/> (each a meter name and the test of whether an
    /// instrument of that name is this stack's), and <paramref name="web"/> (the web view at /ui, which brings its
    /// own authentication) when given.
    /// </summary>
    public static async Task<MetricsServer> StartAsync(IPEndPoint endpoint, IReadOnlyList<MeterSource> sources, Web.WebView? web, ILoggerFactory loggers, CancellationToken ct)
    {
        var provider = Sdk.CreateMeterProviderBuilder()
            .AddMeter([.. sources.Select(s => s.MeterName).Distinct(StringComparer.Ordinal)])
            // Another stack in the same process (tests) has meters of the same names: only this one's count.
            .AddView(instrument => !sources.Any(s => s.Owns(instrument)) ? MetricStreamConfiguration.Drop
                : PerObject(instrument) ? new MetricStreamConfiguration { CardinalityLimit = PerObjectSeriesLimit }
                : null)
            .AddPrometheusExporter(o =>
            {
                // Upstream's names exactly: no _total suffix (no instrument has a unit, so none is appended), and
                // no otel_scope_* labels or target_info series.
                o.DisableTotalNameSuffixForCounters = true;
                o.ScopeInfoEnabled = false;
                o.TargetInfoEnabled = false;
                // Each scrape reads the current values; the exporter would otherwise replay one for 300 ms.
                o.ScrapeResponseCacheDurationMilliseconds = 0;
            })
            .Build();
        var builder = WebApplication.CreateSlimBuilder(new WebApplicationOptions { ApplicationName = "dolly-metrics" });
        builder.Services.Replace(ServiceDescriptor.Singleton(loggers));
        builder.Services.AddSingleton<IHostLifetime, HostLifetime>();
        builder.WebHost.ConfigureKestrel(k =>
        {
            k.AddServerHeader = false;
            k.Listen(endpoint);
        });
        var app = builder.Build();
        app.MapPrometheusScrapingEndpoint(Path, provider, configureBranchedPipeline: null, optionsName: null);
        web?.Map(app);
        try
        {
            await app.StartAsync(ct).ConfigureAwait(false);
        }
        catch
        {
            await app.DisposeAsync().ConfigureAwait(false);
            provider.Dispose();
            throw;
        }

        var bound = new Uri(app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First());
        string host = endpoint.Address.AddressFamily == System.Net.Sockets.AddressFamily.InterNetworkV6 ? "[" + endpoint.Address + "]" : endpoint.Address.ToString();
        return new MetricsServer(app, provider, new Uri("http://" + host + ":" + bound.Port.ToString(CultureInfo.InvariantCulture) + Path));
    }

    public async ValueTask DisposeAsync()
    {
        await _app.StopAsync(CancellationToken.None).ConfigureAwait(false);
        await _app.DisposeAsync().ConfigureAwait(false);
        _provider.Dispose();
    }

    private static bool PerObject(Instrument instrument) =>
        instrument.Name.StartsWith("dolly_device_", StringComparison.Ordinal) || instrument.Name.StartsWith("dolly_nbd_", StringComparison.Ordinal);

    /// <summary>One meter to export, and which of the instruments of that name are this stack's.</summary>
    public sealed record MeterSource(string MeterName, Func<Instrument, bool> Owns);

    /// <summary>Leaves console signals to <c>dolly up</c>, which stops this server itself (as the CSI server's host does).</summary>
    private sealed class HostLifetime : IHostLifetime
    {
        public Task WaitForStartAsync(CancellationToken cancellationToken) => Task.CompletedTask;

        public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;
    }
}
