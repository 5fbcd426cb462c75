using System.Text.Json;
using Microsoft.Playwright;

namespace Dolly.Web.Tests;

/// <summary>
/// The web view in headless Chromium (Debian's, driven by Playwright) over a real <c>dolly up</c>, after
/// kubectl made a claim with data, a snapshot of it, a restore in its namespace and one in another (with a
/// ReferenceGrant), a clone, and a restore too small to succeed. The page must load without console errors,
/// draw exactly the expected lineage with the Kubernetes names, show a claim made while it is open, and show
/// the numbers that <c>dolly volume list -o json</c> and <c>dolly snapshot list -o json</c> print.
/// </summary>
public sealed class WebViewBrowserTests : IAsyncLifetime
{
    public const string Chromium = "/usr/bin/chromium";
    private const int MiB = 1 << 20;

    private DollyUpProcess? _up;

    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    /// <summary>Where the run writes its screenshots: $DOLLY_SCREENSHOTS, else TestResults beside the tests.</summary>
    public static string ScreenshotDirectory =>
        Environment.GetEnvironmentVariable("DOLLY_SCREENSHOTS") is { Length: > 0 } dir ? dir : Path.Combine(AppContext.BaseDirectory, "TestResults");

    public async ValueTask InitializeAsync()
    {
        Assert.True(File.Exists(Chromium), $"{Chromium} is missing: run scripts/install-test-deps.sh (apt package chromium)");
        _up = await DollyUpProcess.StartAsync();
    }

    public async ValueTask DisposeAsync()
    {
        if (_up is not null)
        {
            await _up.DisposeAsync();
        }
    }

    [Fact]
    public async Task TheScenario_LoadsCleanly_DrawsTheLineage_UpdatesLive_AndMatchesTheCli()
    {
        var up = _up!;
        (await up.Apply(Scenario.Classes)).ShouldSucceed();
        (await up.Apply(Scenario.Claim)).ShouldSucceed();
        await up.WaitFor("pvc/data", "shop", ".status.phase", "Bound");
        string data = await Handle(up, "shop", "data");

        // Data through the NBD server, as a pod would write it: 4 MiB, then the snapshot, then 1 MiB over
        // the snapshotted range and 2 MiB past it, so that both have blocks of their own.
        await WriteAsync(up, data, 0x11, 0, 4 * MiB);
        (await up.Apply(Scenario.Snapshot)).ShouldSucceed();
        await up.WaitFor("volumesnapshot/data-snap", "shop", ".status.readyToUse", "true");
        string snap = await up.Field("volumesnapshotcontent/" + await up.Field("volumesnapshot/data-snap", "shop", ".status.boundVolumeSnapshotContentName"), "shop", ".status.snapshotHandle");
        await WriteAsync(up, data, 0x22, MiB, MiB);
        await WriteAsync(up, data, 0x33, 16 * MiB, 2 * MiB);

        (await up.Apply(Scenario.Restores)).ShouldSucceed();
        await up.WaitFor("pvc/restored", "shop", ".status.phase", "Bound");
        await up.WaitFor("pvc/copy", "shop", ".status.phase", "Bound");
        await up.WaitFor("pvc/from-shop", "audit", ".status.phase", "Bound");
        string restored = await Handle(up, "shop", "restored");
        string copy = await Handle(up, "shop", "copy");
        string fromShop = await Handle(up, "audit", "from-shop");

        // Blocks of their own for the clone (1 MiB past the end of the data) and a restore (2 MiB over it).
        await WriteAsync(up, copy, 0x44, 32 * MiB, MiB);
        await WriteAsync(up, restored, 0x55, 0, 2 * MiB);

        var consoleErrors = new List<string>();
        using var playwright = await Playwright.CreateAsync();
        await using var browser = await playwright.Chromium.LaunchAsync(new() { ExecutablePath = Chromium, Headless = true, Args = ["--no-sandbox"] });
        var page = await browser.NewPageAsync(new() { ViewportSize = new() { Width = 1400, Height = 900 } });
        // The suite shares two cores with every other test assembly: waits are for conditions, with room to spare.
        page.SetDefaultTimeout(60_000);
        Assertions.SetDefaultExpectTimeout(30_000);
        page.Console += (_, m) =>
        {
            if (m.Type == "error")
            {
                consoleErrors.Add(m.Text);
            }
        };
        page.PageError += (_, e) => consoleErrors.Add(e);
        page.RequestFailed += (_, r) =>
        {
            // The event stream is cut when a page is left; anything else failing is an error.
            if (!r.Url.EndsWith("/ui/events", StringComparison.Ordinal))
            {
                consoleErrors.Add($"request failed: {r.Url} {r.Failure}");
            }
        };

        // The printed link logs the browser in and lands on the overview.
        var login = await page.GotoAsync(up.FirstLogin.ToString());
        Assert.Equal(200, login?.Status);
        // The logged-in page moves on by itself; poll the address rather than wait for one navigation event,
        // which can be missed when the move lands before the wait starts.
        await Assertions.Expect(page).ToHaveURLAsync(new Uri(up.Listener, "/ui/").ToString(), new() { Timeout = 60_000 });
        await Assertions.Expect(page.Locator("h1")).ToHaveTextAsync("Pool");
        await Assertions.Expect(page.Locator("#live")).ToHaveTextAsync("live");
        Assert.Equal("4", await page.Locator("#pool-volumes dd").TextContentAsync());
        Assert.Equal("1", await page.Locator("#pool-snapshots dd").TextContentAsync());

        // The lineage of the claim's volume: exactly these nodes and edges, with the Kubernetes names.
        await page.GotoAsync(new Uri(up.Listener, "/ui/lineage?of=" + data).ToString());
        var nodes = await page.Locator("svg.graph g.node").EvaluateAllAsync<string[][]>("ns => ns.map(n => [n.dataset.node, n.dataset.kind, n.dataset.k8s])");
        Assert.Equal(
            new[]
            {
                new[] { data, "volume", "shop/data" },
                new[] { copy, "volume", "shop/copy" },
                new[] { snap, "snapshot", "shop/data-snap" },
                new[] { fromShop, "volume", "audit/from-shop" },
                new[] { restored, "volume", "shop/restored" },
            }.OrderBy(n => n[0], StringComparer.Ordinal),
            nodes.OrderBy(n => n[0], StringComparer.Ordinal));
        var edges = await page.Locator("svg.graph g.edge").EvaluateAllAsync<string[][]>("es => es.map(e => [e.dataset.from, e.dataset.to, e.dataset.kind])");
        Assert.Equal(
            new[]
            {
                new[] { data, snap, "snapshot" },
                new[] { data, copy, "clone" },
                new[] { snap, restored, "restore" },
                new[] { snap, fromShop, "restore" },
            }.OrderBy(e => e[1], StringComparer.Ordinal),
            edges.OrderBy(e => e[1], StringComparer.Ordinal));
        Directory.CreateDirectory(ScreenshotDirectory);
        await page.ScreenshotAsync(new() { Path = Path.Combine(ScreenshotDirectory, "web-view-lineage.png"), FullPage = true });

        // Live: a claim made while the volumes page is open appears without a reload.
        await page.GotoAsync(new Uri(up.Listener, "/ui/volumes").ToString());
        await Assertions.Expect(page.Locator("#live")).ToHaveTextAsync("live");
        await page.EvaluateAsync("() => { window.__notReloaded = true; }");
        (await up.Apply(Scenario.Late)).ShouldSucceed();
        await Assertions.Expect(page.Locator("td[data-field=kubernetes]", new() { HasTextString = "shop/late" })).ToBeVisibleAsync(new() { Timeout = 60_000 });
        Assert.True(await page.EvaluateAsync<bool>("() => window.__notReloaded === true"), "the page was reloaded rather than updated");
        await page.ScreenshotAsync(new() { Path = Path.Combine(ScreenshotDirectory, "web-view-volumes.png"), FullPage = true });
        var volumeRows = await Rows(page);
        await page.GotoAsync(new Uri(up.Listener, "/ui/snapshots").ToString());
        var snapshotRows = await Rows(page);
        await page.GotoAsync(new Uri(up.Listener, "/ui/").ToString());
        await Assertions.Expect(page.Locator("#live")).ToHaveTextAsync("live");
        Assert.Empty(consoleErrors);

        // The restore that cannot succeed is retried, and its log lines name the claim.
        Assert.Contains(up.LogObjects(), e =>
            e.GetProperty("Category").GetString() == "Dolly.Controllers.Provisioner"
            && e.GetProperty("State").TryGetProperty("Key", out var key) && key.GetString() == "shop/too-small");

        // The CLI's numbers, once dolly up has let go of the pool, are the page's.
        await up.StopAsync();
        var cliVolumes = Cli((await up.Dolly("volume", "list", "-o", "json")).ShouldSucceed().Stdout);
        var cliSnapshots = Cli((await up.Dolly("snapshot", "list", "-o", "json")).ShouldSucceed().Stdout);
        Assert.Equal(cliVolumes, volumeRows);
        Assert.Equal(cliSnapshots, snapshotRows);
        Assert.Equal(5, volumeRows.Count); // data, its clone, two restores, and the late claim
        // What the scenario wrote, so the numbers compared above are not all zeros: the volume holds 6 MiB and
        // shares all of it with its clone; the clone and the restore own what was written to them alone.
        Assert.Equal(new Space(1L << 30, 6 * MiB, 0), volumeRows[data]);
        Assert.Equal(new Space(1L << 30, 7 * MiB, MiB), volumeRows[copy]);
        Assert.Equal(new Space(1L << 30, 4 * MiB, 2 * MiB), volumeRows[restored]);
        Assert.Equal(new Space(1L << 30, 4 * MiB, 0), snapshotRows[snap]);
    }

    private static async Task<string> Handle(DollyUpProcess up, string ns, string claim)
    {
        string pv = await up.Field("pvc/" + claim, ns, ".spec.volumeName");
        return (await up.Kubectl("get", "pv", pv, "-o", "jsonpath={.spec.csi.volumeHandle}")).ShouldSucceed().Stdout;
    }

    /// <summary>Writes a pattern to a volume through dolly up's NBD socket with qemu-io.</summary>
    private static async Task WriteAsync(DollyUpProcess up, string export, int pattern, long offset, long length)
    {
        string uri = $"nbd+unix:///{export}?socket={Path.Combine(up.Pool, "nbd.sock")}";
        (await up.RunAsync("qemu-io", ["-f", "raw", "-c", $"write -P {pattern} {offset} {length}", uri], null)).ShouldSucceed();
    }

    /// <summary>Engine name → the numbers of a table row of the page.</summary>
    private static async Task<Dictionary<string, Space>> Rows(IPage page)
    {
        var rows = await page.Locator("tbody tr[data-device]").EvaluateAllAsync<string[][]>(
            "rs => rs.map(r => [r.dataset.device, ...['size', 'allocated', 'exclusive'].map(f => r.querySelector(`td[data-field=${f}]`).dataset.bytes)])");
        return rows.ToDictionary(r => r[0], r => new Space(long.Parse(r[1], System.Globalization.CultureInfo.InvariantCulture), long.Parse(r[2], System.Globalization.CultureInfo.InvariantCulture), long.Parse(r[3], System.Globalization.CultureInfo.InvariantCulture)), StringComparer.Ordinal);
    }

    private static Dictionary<string, Space> Cli(string json) =>
        JsonDocument.Parse(json).RootElement.EnumerateArray().ToDictionary(
            e => e.GetProperty("name").GetString()!,
            e => new Space(e.GetProperty("size").GetInt64(), e.GetProperty("allocated").GetInt64(), e.GetProperty("exclusive").GetInt64()),
            StringComparer.Ordinal);

    private sealed record Space(long Size, long Allocated, long Exclusive);
}
