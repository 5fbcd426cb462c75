using Grpc.Core;
using Grpc.Core.Interceptors;
using k8s;
using Microsoft.Extensions.Logging.Abstractions;

namespace Dolly.Controllers.Tests;

/// <summary>
/// Dolly's controllers running against a <see cref="DriverStack"/>, with the default classes created: the set-up the
/// stack tests share. The controllers' CSI calls go through <c>interceptor</c> when a test injects faults or counts
/// calls. Disposing stops the controllers first, then the stack.
/// </summary>
internal sealed class ControllerHarness : IAsyncDisposable
{
    private readonly CancellationTokenSource _stop = new();
    private Task? _controllers;

    private ControllerHarness(DriverStack stack)
    {
        Stack = stack;
        Client = stack.NewClient();
    }

    public DriverStack Stack { get; }

    /// <summary>The test's client of the API server.</summary>
    public Kubernetes Client { get; }

    public static async Task<ControllerHarness> StartAsync(
        string identity, CancellationToken ct, Interceptor? interceptor = null, TimeProvider? time = null, bool node = false, Action<Dolly.Controllers.Runtime.Cluster>? cache = null, bool podsRun = true, Dolly.Controllers.Hooks.IPodExec? podExec = null)
    {
        var harness = new ControllerHarness(await DriverStack.StartAsync($"dolly-{identity}-", ct, node));
        var options = new ControllerOptions
        {
            BindVolumes = true,
            DriverServesNode = node,
            Identity = identity,
            RetryBaseDelay = TimeSpan.FromMilliseconds(50),
            RetryMaxDelay = TimeSpan.FromMilliseconds(500),
            TimeProvider = time ?? TimeProvider.System,
            CacheCreated = cache,
            PodsRunContainers = podsRun,
            PodExec = podExec,
        };
        CallInvoker csi = interceptor is null ? harness.Stack.Csi : harness.Stack.Channel.Intercept(interceptor);
        harness._controllers = DollyControllers.RunAsync(harness.Client, csi, options, NullLoggerFactory.Instance, harness._stop.Token);
        await DriverStack.CreateClassesAsync(harness.Client, ct);
        return harness;
    }

    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync();
        if (_controllers is not null)
        {
            await _controllers;
        }

        Client.Dispose();
        await Stack.DisposeAsync();
        _stop.Dispose();
    }
}

/// <summary>Polling for a state the controllers reach asynchronously (the API server's watch has no "until").</summary>
internal static class Eventually
{
    /// <summary>
    /// Polls <paramref name="probe"/> until it gives a value (not null, and not <c>false</c>) or the time is up; the
    /// timeout's message names what never happened and the last value seen.
    /// </summary>
    public static async Task<T> Until<T>(Func<Task<T?>> probe, Func<string> what, int seconds = 60)
    {
        var ct = TestContext.Current.CancellationToken;
        var deadline = DateTime.UtcNow.AddSeconds(seconds);
        T? last = default;
        while (DateTime.UtcNow < deadline)
        {
            last = await probe();
            if (last is not null && !(last is bool b && !b))
            {
                return last;
            }

            await Task.Delay(50, ct);
        }

        throw new TimeoutException(what() + " (last: " + last + ")");
    }

    public static Task<T> Until<T>(Func<Task<T?>> probe, string what, int seconds = 60) => Until(probe, () => what, seconds);
}
