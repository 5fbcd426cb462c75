using System.Diagnostics;
using System.Globalization;
using Dolly.Storage;
using Microsoft.Playwright;

namespace Dolly.Web.Tests;

/// <summary>
/// The web view over a pool of many objects (DOLLY_WEB_SCALE volumes, each with one snapshot, so twice as
/// many objects; off unless set, e.g. 5000 for the 10,000): each page must show them all (paged), and
/// the run records, in TestResults/web-view-scale.txt, Chromium's first contentful paint of each page and the
/// time of a /metrics scrape. Figures are recorded, not asserted: targets are judged on recorded runs.
/// </summary>
public sealed class WebViewScaleTests
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    private static double Median(IEnumerable<double> values)
    {
        var sorted = values.Order().ToList();
        return sorted[sorted.Count / 2];
    }

    [Fact]
    public async Task ManyObjects_EveryPageShowsThem_AndTheFiguresAreRecorded()
    {
        if (!int.TryParse(Environment.GetEnvironmentVariable("DOLLY_WEB_SCALE"), CultureInfo.InvariantCulture, out int volumes) || volumes <= 0)
        {
            Assert.Skip("set DOLLY_WEB_SCALE=N (volumes, each with a snapshot) to run");
        }

        DollyUpProcess? up = null;
        string root = Path.Combine(Path.GetTempPath(), "dolly-web-scale-" + Guid.NewGuid().ToString("N")[..8]);
        var report = new List<string> { $"objects: {2 * volumes} ({volumes} volumes, {volumes} snapshots)" };
        try
        {
            var fill = Stopwatch.StartNew();
            using (var pool = Pool.Create(Path.Combine(root, "pool")).Value)
            {
                for (int i = 0; i < volumes; i++)
                {
                    string v = "vol-" + i.ToString("D5", CultureInfo.InvariantCulture);
                    Assert.True(pool.CreateVolume(v, 1L << 30).IsOk);
                    Assert.True(pool.CreateSnapshot(v, "snap-" + i.ToString("D5", CultureInfo.InvariantCulture)).IsOk);
                }
            }

            report.Add($"filling the pool: {fill.Elapsed.TotalSeconds:F1} s");
            up = await DollyUpProcess.StartAsync(Path.Combine(root, "pool"));

            using var http = new HttpClient();
            var scrapes = new List<double>();
            for (int i = 0; i < 6; i++)
            {
                var scrape = Stopwatch.StartNew();
                _ = await http.GetStringAsync(new Uri(up.Listener, "/metrics"), Ct);
                scrapes.Add(scrape.Elapsed.TotalMilliseconds);
            }

            report.Add($"/metrics scrape: first {scrapes[0]:F0} ms, then median {Median(scrapes.Skip(1)):F0} ms, max {scrapes.Skip(1).Max():F0} ms");

            using var playwright = await Playwright.CreateAsync();
            await using var browser = await playwright.Chromium.LaunchAsync(new() { ExecutablePath = WebViewBrowserTests.Chromium, Headless = true, Args = ["--no-sandbox"] });
            var page = await browser.NewPageAsync();
            await page.GotoAsync(up.FirstLogin.ToString());
            await Assertions.Expect(page).ToHaveURLAsync(new Uri(up.Listener, "/ui/").ToString(), new() { Timeout = 60_000 });
            foreach (var (path, total) in new[] { ("/ui/", -1), ("/ui/volumes", volumes), ("/ui/snapshots", volumes), ("/ui/lineage", volumes), ($"/ui/volumes?page={volumes / 50}", volumes) })
            {
                // Twice: the first visit of a page includes the server's first render of it (JIT, the name order).
                foreach (string visit in new[] { "first", "second" })
                {
                    await page.GotoAsync(new Uri(up.Listener, path).ToString());
                    double paint = await page.EvaluateAsync<double>(
                        "() => new Promise(done => { new PerformanceObserver(l => { const e = l.getEntriesByName('first-contentful-paint')[0]; if (e) { done(e.startTime); } }).observe({ type: 'paint', buffered: true }); setTimeout(() => done(-1), 5000); })");
                    double response = await page.EvaluateAsync<double>("() => { const n = performance.getEntriesByType('navigation')[0]; return n.responseEnd - n.requestStart; }");
                    report.Add($"{path} ({visit} visit): first contentful paint {paint:F0} ms, response {response:F0} ms");
                }

                if (total >= 0)
                {
                    Assert.Equal(total.ToString(CultureInfo.InvariantCulture), await page.Locator(".pager .count").GetAttributeAsync("data-total"));
                }
            }

            Directory.CreateDirectory(WebViewBrowserTests.ScreenshotDirectory);
            await File.WriteAllLinesAsync(Path.Combine(WebViewBrowserTests.ScreenshotDirectory, "web-view-scale.txt"), report, Ct);
            TestContext.Current.SendDiagnosticMessage(string.Join('\n', report));
        }
        finally
        {
            if (up is not null)
            {
                await up.DisposeAsync();
            }

            try
            {
                Directory.Delete(root, recursive: true);
            }
            catch (IOException)
            {
            }
        }
    }
}
