using System.Net;
using Dolly.Storage;
using k8s;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Logging;

namespace Dolly.Web;

/// <summary>
/// The web view at <c>/ui</c>, served on the loopback-only listener of <c>/metrics</c> (plain HTTP, so a
/// browser opens it without a certificate warning, and never reachable off the machine except through a tunnel
/// such as <c>ssh -L</c>). Loopback is not trust: every page needs the session cookie got by redeeming the
/// one-time login link that <c>dolly up</c> prints, and only Host headers naming loopback are answered, so a
/// web page elsewhere cannot read it through DNS rebinding. The cookie is HttpOnly, SameSite=Strict and
/// limited to <c>/ui</c>. Everything is read-only: no request changes the pool or the cluster.
/// </summary>
internal sealed partial class WebView : IAsyncDisposable
{
    public const string Prefix = "/ui";
    public const string CookieName = "dolly-ui-session";
    public const string LoginPath = Prefix + "/login";

    /// <summary>How often the devices are compared with the pool's; a sample of its space is taken every <see cref="SampleEvery"/> ticks.</summary>
    public static readonly TimeSpan Tick = TimeSpan.FromSeconds(1);
    public const int SampleEvery = 5;

    /// <summary>An open event stream with nothing to say writes a comment this often, so proxies keep it open.</summary>
    private static readonly TimeSpan KeepAlive = TimeSpan.FromSeconds(15);

    private const string Csp = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

    private readonly WebModel _model;
    private readonly KubeNames? _kube;
    private readonly ILogger _logger;
    private readonly TimeProvider _time;
    private readonly CancellationTokenSource _stop = new();
    private Task _background = Task.CompletedTask;

    public WebView(Pool pool, IKubernetes? client, ILoggerFactory loggers, TimeProvider time)
    {
        _time = time;
        _logger = loggers.CreateLogger<WebView>();
        _model = new WebModel(pool, time);
        _kube = client is null ? null : new KubeNames(client, _logger, _model.Touch);
    }

    public WebLogin Login { get; } = new();

    /// <summary>Starts following the pool and the cluster.</summary>
    public void Start()
    {
        _model.Refresh(sample: true);
        _background = Task.WhenAll(FollowPoolAsync(_stop.Token), _kube?.RunAsync(_stop.Token) ?? Task.CompletedTask);
    }

    private async Task FollowPoolAsync(CancellationToken ct)
    {
        using var timer = new PeriodicTimer(Tick, _time);
        int ticks = 0;
        try
        {
            while (await timer.WaitForNextTickAsync(ct).ConfigureAwait(false))
            {
                try
                {
                    _model.Refresh(sample: ++ticks % SampleEvery == 0);
                }
                catch (ObjectDisposedException)
                {
                    return; // the pool closed under us: the stack is stopping
                }
            }
        }
        catch (OperationCanceledException)
        {
        }
    }

    /// <summary>Adds the view's routes to <paramref name="app"/>.</summary>
    public void Map(WebApplication app)
    {
        var stopping = app.Lifetime.ApplicationStopping;
        app.Use(async (context, next) =>
        {
            if (!context.Request.Path.StartsWithSegments(Prefix, StringComparison.Ordinal))
            {
                await next(context).ConfigureAwait(false);
                return;
            }

            var headers = context.Response.Headers;
            headers.ContentSecurityPolicy = Csp;
            headers.XContentTypeOptions = "nosniff";
            headers.XFrameOptions = "DENY";
            headers["Referrer-Policy"] = "no-referrer";
            headers.CacheControl = "no-store";
            if (!IsLoopbackHost(context.Request.Host.Host) || context.Connection.RemoteIpAddress is not { } remote || !IPAddress.IsLoopback(remote))
            {
                await Refuse(context, StatusCodes.Status403Forbidden, "Refused", "The web view answers only on loopback, under a loopback host name (127.0.0.1, [::1] or localhost); reach it from elsewhere through a tunnel such as ssh -L.").ConfigureAwait(false);
                return;
            }

            string path = context.Request.Path.Value ?? "";
            if (path == Prefix)
            {
                // Routing sees /ui and /ui/ as one template; the overview lives at /ui/ so relative links work.
                context.Response.Redirect(Prefix + "/");
                return;
            }

            if (path == LoginPath || path.StartsWith(Prefix + "/assets/", StringComparison.Ordinal) || Login.IsSession(context.Request.Cookies[CookieName]))
            {
                await next(context).ConfigureAwait(false);
                return;
            }

            await Refuse(context, StatusCodes.Status401Unauthorized, "Log in first", "Open the one-time login link that dolly up printed (it prints a new one each time one is used).").ConfigureAwait(false);
        });

        app.MapGet(LoginPath, (HttpContext context) =>
        {
            if (Login.Redeem(context.Request.Query["token"]) is not { } session)
            {
                return Html(StatusCodes.Status403Forbidden, WebPages.Message("Login link not valid", "This link was already used, or is not one this dolly up printed. Use the newest link dolly up printed."));
            }

            context.Response.Cookies.Append(CookieName, session, new CookieOptions
            {
                HttpOnly = true,
                SameSite = SameSiteMode.Strict,
                Path = Prefix,
                IsEssential = true,
            });
            WebViewLog.LoggedIn(_logger, context.Connection.RemoteIpAddress?.ToString() ?? "?");

            // A page that moves on, rather than a redirect: a SameSite=Strict cookie set in answer to a navigation
            // started elsewhere (a terminal, another site) is sent with the next navigation this page starts.
            return Html(StatusCodes.Status200OK, WebPages.LoggedIn());
        });
        app.MapGet(Prefix + "/", (HttpContext c) => Page(c, "Overview", () => WebPages.Overview(_model)));
        app.MapGet(Prefix + "/volumes", (HttpContext c) => Page(c, "Volumes", () => WebPages.Devices(_model, _kube, DeviceKind.Volume, PageNumber(c))));
        app.MapGet(Prefix + "/snapshots", (HttpContext c) => Page(c, "Snapshots", () => WebPages.Devices(_model, _kube, DeviceKind.Snapshot, PageNumber(c))));
        app.MapGet(Prefix + "/lineage", (HttpContext c) => Page(c, "Lineage", () => WebPages.Lineage(_model, _kube, NonEmpty(c.Request.Query["of"]), PageNumber(c))));
        app.MapGet(Prefix + "/events", (HttpContext c) => EventsAsync(c, stopping));
        app.MapGet(Prefix + "/assets/{name}", (string name) => WebAssets.Get(name) is { } asset ? Results.Bytes(asset.Content, asset.ContentType) : Results.NotFound());
    }

    /// <summary>The whole page, or with <c>?fragment=1</c> only what goes inside &lt;main&gt; (what the script swaps in).</summary>
    private IResult Page(HttpContext context, string title, Func<string> main)
    {
        long version = _model.Version;
        string body = main();
        context.Response.Headers["X-Dolly-Version"] = version.ToString(System.Globalization.CultureInfo.InvariantCulture);
        return Html(StatusCodes.Status200OK, context.Request.Query["fragment"] == "1" ? body : WebPages.Frame(title, title, body, version));
    }

    private static int PageNumber(HttpContext context) =>
        int.TryParse(context.Request.Query["page"], System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out int p) && p >= 1 ? p : 1;

    private static string? NonEmpty(string? s) => string.IsNullOrEmpty(s) ? null : s;

    /// <summary>Server-sent events: <c>change</c> with the model's version each time it moves, at most once a second.</summary>
    private async Task EventsAsync(HttpContext context, CancellationToken stopping)
    {
        using var done = CancellationTokenSource.CreateLinkedTokenSource(context.RequestAborted, stopping, _stop.Token);
        var ct = done.Token;
        context.Response.ContentType = "text/event-stream";
        context.Response.Headers.CacheControl = "no-store";
        var writer = context.Response.BodyWriter;
        long sent = -1;
        try
        {
            while (!ct.IsCancellationRequested)
            {
                long version = _model.Version;
                string message = version != sent ? $"event: change\ndata: {version}\n\n" : ": keep-alive\n\n";
                sent = version;
                await context.Response.WriteAsync(message, ct).ConfigureAwait(false);
                await writer.FlushAsync(ct).ConfigureAwait(false);
                await Task.Delay(Tick, _time, ct).ConfigureAwait(false);
                try
                {
                    await _model.ChangedSince(sent).WaitAsync(KeepAlive, _time, ct).ConfigureAwait(false);
                }
                catch (TimeoutException)
                {
                    // Nothing changed for a while: the next round writes the keep-alive comment.
                }
            }
        }
        catch (OperationCanceledException)
        {
        }
    }

    private static async Task Refuse(HttpContext context, int status, string title, string text)
    {
        context.Response.StatusCode = status;
        context.Response.ContentType = "text/html; charset=utf-8";
        await context.Response.WriteAsync(WebPages.Message(title, text), context.RequestAborted).ConfigureAwait(false);
    }

    private static IResult Html(int status, string html) => Results.Content(html, "text/html; charset=utf-8", System.Text.Encoding.UTF8, status);

    /// <summary>Whether a Host header names loopback: a loopback address or "localhost".</summary>
    public static bool IsLoopbackHost(string host) =>
        string.Equals(host, "localhost", StringComparison.OrdinalIgnoreCase)
        || (IPAddress.TryParse(host.Trim('[', ']'), out var address) && IPAddress.IsLoopback(address));

    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync().ConfigureAwait(false);
        await _background.ConfigureAwait(false);
        _stop.Dispose();
    }

    private static partial class WebViewLog
    {
        [LoggerMessage(1, LogLevel.Information, "web view: a login link was used from {Remote}; a new one was printed")]
        public static partial void LoggedIn(ILogger logger, string remote);
    }
}
