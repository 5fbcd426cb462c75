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
            var scrape = Stopwatch.StartNew();
            string metrics = await http.GetStringAsync(new Uri(up.Listener, "/metrics"), Ct);
            report.Add($"/metrics scrape: {scrape.Elapsed.TotalMilliseconds:F0} ms ({metrics.Length} bytes)");

            using var playwright = await Playwright.CreateAsync();
            await using var browser = await playwright.Chromium.LaunchAsync(new() { ExecutablePath = WebViewBrowserTests.Chromium, Headless = true, Args = ["--no-sandbox"] });
            var page = await browser.NewPageAsync();
            await page.GotoAsync(up.FirstLogin.ToString());
            await page.WaitForURLAsync(new Uri(up.Listener, "/ui/").ToString());
            foreach (var (path, total) in new[] { ("/ui/", -1), ("/ui/volumes", volumes), ("/ui/snapshots", volumes), ("/ui/lineage", volumes), ($"/ui/volumes?page={volumes / 50}", volumes) })
            {
                await page.GotoAsync(new Uri(up.Listener, path).ToString());
                double paint = await page.EvaluateAsync<double>("() => performance.getEntriesByName('first-contentful-paint')[0]?.startTime ?? -1");
                double load = await page.EvaluateAsync<double>("() => performance.getEntriesByType('navigation')[0].responseEnd - performance.getEntriesByType('navigation')[0].requestStart");
                report.Add($"{path}: first contentful paint {paint:F0} ms, response {load:F0} ms");
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
