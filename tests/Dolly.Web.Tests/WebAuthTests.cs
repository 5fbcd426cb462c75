using System.Net;
using System.Text.Json;
using System.Text.RegularExpressions;

namespace Dolly.Web.Tests;

/// <summary>
/// Who gets into /ui of a real <c>dolly up</c>: only a browser holding the cookie of a redeemed one-time
/// login link, asking under a loopback host name; and what the JSON log says of it.
/// </summary>
public sealed partial class WebAuthTests(WebAuthTests.Up fixture) : IClassFixture<WebAuthTests.Up>
{
    private readonly DollyUpProcess _up = fixture.Process;

    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    /// <summary>One dolly up for the class (its tests run one after another); each test takes its own login link.</summary>
    public sealed class Up : IAsyncLifetime
    {
        public DollyUpProcess Process { get; private set; } = null!;

        public async ValueTask InitializeAsync() => Process = await DollyUpProcess.StartAsync();

        public ValueTask DisposeAsync() => Process.DisposeAsync();
    }

    private static HttpClient NewClient(CookieContainer? jar = null) =>
        new(new HttpClientHandler { AllowAutoRedirect = false, UseCookies = jar is not null, CookieContainer = jar ?? new CookieContainer() });

    [Theory]
    [InlineData("/ui/")]
    [InlineData("/ui/volumes")]
    [InlineData("/ui/snapshots")]
    [InlineData("/ui/lineage")]
    [InlineData("/ui/events")]
    public async Task WithoutTheCookie_EveryPageIsRefused_AndShowsNoData(string path)
    {
        using var http = NewClient();
        using var response = await http.GetAsync(new Uri(_up.Listener, path), Ct);
        Assert.Equal(HttpStatusCode.Unauthorized, response.StatusCode);
        string body = await response.Content.ReadAsStringAsync(Ct);
        Assert.Contains("login link", body, StringComparison.Ordinal);
        Assert.DoesNotContain("data-device", body, StringComparison.Ordinal);
    }

    [Fact]
    public async Task ACookieThisProcessDidNotIssue_IsRefused()
    {
        var jar = new CookieContainer();
        jar.Add(_up.Listener, new Cookie("dolly-ui-session", "bm90LWEtc2Vzc2lvbi1idXQtbG9va3MtbGlrZS1vbmUtMTIzNDU2", "/ui"));
        using var http = NewClient(jar);
        using var response = await http.GetAsync(new Uri(_up.Listener, "/ui/volumes"), Ct);
        Assert.Equal(HttpStatusCode.Unauthorized, response.StatusCode);
    }

    [Fact]
    public async Task TheLoginLink_SetsAStrictHttpOnlyCookie_WorksOnce_AndTheNextLinkIsPrinted()
    {
        var jar = new CookieContainer();
        using var http = NewClient(jar);
        var link = await _up.TakeLoginAsync();
        using (var login = await http.GetAsync(link, Ct))
        {
            Assert.Equal(HttpStatusCode.OK, login.StatusCode);
            string setCookie = Assert.Single(login.Headers.GetValues("Set-Cookie"));
            var attributes = setCookie.Split(';', StringSplitOptions.TrimEntries);
            Assert.StartsWith("dolly-ui-session=", attributes[0], StringComparison.Ordinal);
            Assert.True(attributes[0].Length > "dolly-ui-session=".Length + 40, setCookie);
            Assert.Contains("httponly", attributes, StringComparer.OrdinalIgnoreCase);
            Assert.Contains("samesite=strict", attributes, StringComparer.OrdinalIgnoreCase);
            Assert.Contains("path=/ui", attributes, StringComparer.OrdinalIgnoreCase);
            // A session cookie: gone with the browser, never written to disk with an expiry.
            Assert.DoesNotContain(attributes, a => a.StartsWith("expires", StringComparison.OrdinalIgnoreCase) || a.StartsWith("max-age", StringComparison.OrdinalIgnoreCase));
            Assert.Equal("no-referrer", Assert.Single(login.Headers.GetValues("Referrer-Policy")));
        }

        using (var page = await http.GetAsync(new Uri(_up.Listener, "/ui/volumes"), Ct))
        {
            Assert.Equal(HttpStatusCode.OK, page.StatusCode);
            Assert.Contains("<h1>Volumes</h1>", await page.Content.ReadAsStringAsync(Ct), StringComparison.Ordinal);
        }

        // The same link again, from another browser: refused, and it makes no session.
        var otherJar = new CookieContainer();
        using var other = NewClient(otherJar);
        using (var again = await other.GetAsync(link, Ct))
        {
            Assert.Equal(HttpStatusCode.Forbidden, again.StatusCode);
            Assert.False(again.Headers.Contains("Set-Cookie"));
        }

        // dolly up printed the next link, which works (once) for that other browser.
        Uri? next = null;
        Assert.True(await Eventually(() => (next = NextLink(_up.Stdout, link)) is not null), "no next login link on stdout:\n" + _up.Stdout);
        Assert.Equal(next, await _up.TakeLoginAsync());
        using (var second = await other.GetAsync(next, Ct))
        {
            Assert.Equal(HttpStatusCode.OK, second.StatusCode);
        }

        using (var page = await other.GetAsync(new Uri(_up.Listener, "/ui/"), Ct))
        {
            Assert.Equal(HttpStatusCode.OK, page.StatusCode);
        }

        // The first browser's session still holds.
        using (var page = await http.GetAsync(new Uri(_up.Listener, "/ui/lineage"), Ct))
        {
            Assert.Equal(HttpStatusCode.OK, page.StatusCode);
        }
    }

    [Theory]
    [InlineData("")]
    [InlineData("?token=")]
    [InlineData("?token=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")]
    public async Task ALoginWithAWrongOrMissingToken_IsRefused_AndTheRealLinkStillWorks(string query)
    {
        using var http = NewClient(new CookieContainer());
        using (var wrong = await http.GetAsync(new Uri(_up.Listener, "/ui/login" + query), Ct))
        {
            Assert.Equal(HttpStatusCode.Forbidden, wrong.StatusCode);
            Assert.False(wrong.Headers.Contains("Set-Cookie"));
        }

        using var right = await http.GetAsync(await _up.TakeLoginAsync(), Ct);
        Assert.Equal(HttpStatusCode.OK, right.StatusCode);
    }

    [Theory]
    [InlineData("evil.example")]
    [InlineData("192.0.2.10")]
    [InlineData("127.0.0.1.nip.io")]
    public async Task AHostHeaderNotNamingLoopback_IsRefused_EvenWithTheLoginLink(string host)
    {
        // What a page elsewhere would send after rebinding its own name to 127.0.0.1.
        using var http = NewClient(new CookieContainer());
        var link = await _up.TakeLoginAsync();
        using var request = new HttpRequestMessage(HttpMethod.Get, link);
        request.Headers.Host = host + ":" + _up.Listener.Port;
        using var response = await http.SendAsync(request, Ct);
        Assert.Equal(HttpStatusCode.Forbidden, response.StatusCode);
        Assert.False(response.Headers.Contains("Set-Cookie"));

        // The link was not used up by the refused request.
        using var right = await http.GetAsync(link, Ct);
        Assert.Equal(HttpStatusCode.OK, right.StatusCode);
    }

    [Fact]
    public async Task TheJsonLog_IsOneObjectPerLine_WithTimestampLevelCategoryEventIdAndState()
    {
        using var http = NewClient(new CookieContainer());
        using (var login = await http.GetAsync(await _up.TakeLoginAsync(), Ct))
        {
            Assert.Equal(HttpStatusCode.OK, login.StatusCode);
        }

        JsonElement? loggedIn = null;
        Assert.True(
            await Eventually(() => (loggedIn = _up.LogObjects().Cast<JsonElement?>().FirstOrDefault(e => e!.Value.GetProperty("Category").GetString() == "Dolly.Web.WebView")) is not null),
            "no log line of the login:\n" + _up.Stderr);
        var line = loggedIn!.Value;
        Assert.Equal(1, line.GetProperty("EventId").GetInt32());
        Assert.Equal("Information", line.GetProperty("LogLevel").GetString());
        Assert.Equal("web view: a login link was used from 127.0.0.1; a new one was printed", line.GetProperty("Message").GetString());
        Assert.Equal("127.0.0.1", line.GetProperty("State").GetProperty("Remote").GetString());
        Assert.Matches(IsoUtc(), line.GetProperty("Timestamp").GetString()!);
        var stamp = DateTimeOffset.Parse(line.GetProperty("Timestamp").GetString()!, System.Globalization.CultureInfo.InvariantCulture);
        Assert.InRange(stamp, DateTimeOffset.UtcNow.AddMinutes(-5), DateTimeOffset.UtcNow.AddMinutes(1));

        // Every line, from every part of the process, has the same shape.
        var all = _up.LogObjects();
        Assert.Contains(all, e => e.GetProperty("Category").GetString() == "Dolly.Api");
        Assert.Contains(all, e => e.GetProperty("Category").GetString()!.StartsWith("Dolly.Controllers.", StringComparison.Ordinal));
        Assert.All(all, e =>
        {
            Assert.Matches(IsoUtc(), e.GetProperty("Timestamp").GetString()!);
            Assert.Contains(e.GetProperty("LogLevel").GetString(), new[] { "Trace", "Debug", "Information", "Warning", "Error", "Critical" });
            Assert.False(string.IsNullOrEmpty(e.GetProperty("Category").GetString()));
            Assert.Equal(JsonValueKind.Number, e.GetProperty("EventId").ValueKind);
            Assert.Equal(JsonValueKind.String, e.GetProperty("Message").ValueKind);
        });

        // The human summary stays on stdout, and no log object went there.
        Assert.DoesNotContain("\"Category\"", _up.Stdout, StringComparison.Ordinal);
    }

    /// <summary>The link printed right after <paramref name="used"/> was used.</summary>
    private static Uri? NextLink(string stdout, Uri used)
    {
        int at = stdout.IndexOf(used.ToString(), StringComparison.Ordinal);
        return at >= 0 && NextLine().Match(stdout, at) is { Success: true } m ? new Uri(m.Groups[1].Value) : null;
    }

    private static async Task<bool> Eventually(Func<bool> condition)
    {
        var deadline = DateTime.UtcNow.AddSeconds(60);
        while (DateTime.UtcNow < deadline)
        {
            if (condition())
            {
                return true;
            }

            await Task.Delay(100);
        }

        return condition();
    }

    [GeneratedRegex(@"^web view: that login link is used up; the next one is (http://\S+)$", RegexOptions.Multiline)]
    private static partial Regex NextLine();

    [GeneratedRegex(@"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")]
    private static partial Regex IsoUtc();
}
