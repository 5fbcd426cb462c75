using CsCheck;

namespace Dolly.Controllers.Tests.Golden;

/// <summary>
/// Random label changes on namespaces while a GoldenSnapshot publishes: no object of it ever appears in a namespace
/// that never opted in, and once things settle every namespace that opts in has the snapshot, ready.
/// </summary>
public sealed class GoldenNoLeakTests : IAsyncLifetime
{
    private const int Namespaces = 6;
    private static readonly string?[] Tiers = [null, "gold", "silver", "bronze"];

    private ControllerHarness? _h;

    public async ValueTask InitializeAsync() => _h = await ControllerHarness.StartAsync("golden-leak", TestContext.Current.CancellationToken);

    public async ValueTask DisposeAsync()
    {
        if (_h is not null)
        {
            await _h.DisposeAsync();
        }
    }

    [Fact]
    public async Task RandomLabelChanges_NeverLeakIntoANamespaceThatDidNotOptIn()
    {
        var g = new GoldenStack(_h!);
        await g.NamespaceAsync("prod");
        await g.ClaimWithDataAsync("prod", "db", 0x5A);
        await g.CreateSnapshotAsync("prod", "base", "db");
        await Eventually.Until(async () => await g.SnapshotAsync("prod", "base") is { Status.ReadyToUse: true }, "prod/base ready");
        var labels = new Dictionary<string, string?>(StringComparer.Ordinal);
        for (int i = 0; i < Namespaces; i++)
        {
            await g.NamespaceAsync(Ns(i));
            labels[Ns(i)] = null;
        }

        // Opt in: tier gold or silver by label, or ns-5 by name.
        await g.CreateGoldenAsync("leak", new
        {
            source = new { volumeSnapshot = new { @namespace = "prod", name = "base" } },
            namespaceSelector = new { matchExpressions = new[] { new { key = "tier", @operator = "In", values = new[] { "gold", "silver" } } } },
            namespaces = new[] { Ns(5) },
            snapshotName = "shared",
        });
        var everOptedIn = new HashSet<string>(StringComparer.Ordinal) { Ns(5) };

        async Task CheckNoLeakAsync()
        {
            foreach (string ns in labels.Keys.Append("prod").Append("default"))
            {
                var objects = await g.ObjectsInAsync(ns, "leak");
                Assert.True(objects.Count == 0 || everOptedIn.Contains(ns), $"{ns} never opted in but has {string.Join(", ", objects)}");
            }
        }

        var step = Gen.Select(Gen.Int[0, Namespaces - 1], Gen.Int[0, Tiers.Length - 1]);
        await step.List[1, 8].SampleAsync(
            async steps =>
            {
                foreach (var (i, tier) in steps)
                {
                    string ns = Ns(i);
                    labels[ns] = Tiers[tier];
                    if (Tiers[tier] is "gold" or "silver")
                    {
                        // Recorded before the change, so a publish racing the label is never mistaken for a leak.
                        everOptedIn.Add(ns);
                    }

                    await g.LabelNamespaceAsync(ns, "tier", Tiers[tier]);
                    await CheckNoLeakAsync();
                }

                // Settled: every namespace that opts in now has the snapshot, ready; the rest have nothing new.
                var optedIn = labels.Where(kv => kv.Value is "gold" or "silver" || kv.Key == Ns(5)).Select(kv => kv.Key).Order(StringComparer.Ordinal).ToList();
                var golden = await g.StatusAsync("leak", x => x.Status?.Ready == $"{optedIn.Count}/{optedIn.Count}" && x.Status.NamespaceCount == optedIn.Count, $"ready in {string.Join(", ", optedIn)}");
                Assert.Equal(optedIn, golden.Status!.Namespaces!.Where(n => n.Message is null).Select(n => n.Name));
                foreach (string ns in optedIn)
                {
                    Assert.Equal(true, (await g.SnapshotAsync(ns, "shared"))?.Status?.ReadyToUse);
                }

                await CheckNoLeakAsync();
            },
            iter: 5,
            threads: 1);
    }

    private static string Ns(int i) => "ns-" + i.ToString(System.Globalization.CultureInfo.InvariantCulture);
}
