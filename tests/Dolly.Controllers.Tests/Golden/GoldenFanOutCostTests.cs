using System.Collections.Concurrent;
using Dolly.Controllers.Golden;
using Grpc.Core;
using Grpc.Core.Interceptors;

namespace Dolly.Controllers.Tests.Golden;

/// <summary>
/// What a fan-out costs the engine: publishing a snapshot to many namespaces makes pre-provisioned contents of the
/// one driver snapshot, so the controllers make no CSI call that writes the pool (no CreateSnapshot, CreateVolume
/// or DeleteSnapshot, so no pool commit and no fdatasync per namespace), only a read-only ListSnapshots per content.
/// </summary>
public sealed class GoldenFanOutCostTests : IAsyncLifetime
{
    private const int Namespaces = 24;
    private readonly CsiCalls _calls = new();
    private ControllerHarness? _h;

    /// <summary>Counts the controllers' CSI calls by method.</summary>
    private sealed class CsiCalls : Interceptor
    {
        public ConcurrentDictionary<string, int> Calls { get; } = new(StringComparer.Ordinal);

        public override AsyncUnaryCall<TResponse> AsyncUnaryCall<TRequest, TResponse>(
            TRequest request, ClientInterceptorContext<TRequest, TResponse> context, AsyncUnaryCallContinuation<TRequest, TResponse> continuation)
        {
            Calls.AddOrUpdate(context.Method.Name, 1, (_, n) => n + 1);
            return continuation(request, context);
        }
    }

    public async ValueTask InitializeAsync() => _h = await ControllerHarness.StartAsync("golden-cost", TestContext.Current.CancellationToken, _calls);

    public async ValueTask DisposeAsync()
    {
        if (_h is not null)
        {
            await _h.DisposeAsync();
        }
    }

    [Fact]
    public async Task PublishingToManyNamespaces_WritesNothingToThePool()
    {
        var g = new GoldenStack(_h!);
        await g.NamespaceAsync("prod");
        await g.ClaimWithDataAsync("prod", "db", 0x42);
        await g.CreateSnapshotAsync("prod", "base", "db");
        await Eventually.Until(async () => await g.SnapshotAsync("prod", "base") is { Status.ReadyToUse: true }, "prod/base ready");
        for (int i = 0; i < Namespaces; i++)
        {
            await g.NamespaceAsync($"team-{i}", new() { ["golden"] = "yes" });
        }

        var before = new Dictionary<string, int>(_calls.Calls, StringComparer.Ordinal);
        await g.CreateGoldenAsync("wide", new
        {
            source = new { volumeSnapshot = new { @namespace = "prod", name = "base" } },
            namespaceSelector = new { matchLabels = new Dictionary<string, string> { ["golden"] = "yes" } },
            snapshotName = "base",
        });
        await g.StatusAsync("wide", x => x.Status?.Ready == $"{Namespaces}/{Namespaces}" && GoldenStack.Condition(x, GoldenNames.Ready)?.Status == "True", "published everywhere", seconds: 60);

        var made = _calls.Calls.ToDictionary(kv => kv.Key, kv => kv.Value - before.GetValueOrDefault(kv.Key), StringComparer.Ordinal);
        Assert.Equal(0, made.GetValueOrDefault("CreateSnapshot"));
        Assert.Equal(0, made.GetValueOrDefault("CreateVolume"));
        Assert.Equal(0, made.GetValueOrDefault("DeleteSnapshot"));
        Assert.Equal(0, made.GetValueOrDefault("DeleteVolume"));

        // Each of the 2 contents per namespace is checked once by the csi-snapshotter part (a retry may add one).
        Assert.InRange(made.GetValueOrDefault("ListSnapshots"), 2 * Namespaces, 3 * Namespaces);
        Assert.Equal(2 * Namespaces, (await g.ContentsAsync(GoldenNames.GoldenLabel + "=wide")).Count);
    }
}
