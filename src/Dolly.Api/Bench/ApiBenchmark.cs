using System.Diagnostics;
using System.Globalization;
using System.Net.Http.Headers;
using System.Text;

namespace Dolly.Api.Bench;

/// <summary>What <see cref="ApiBenchmark.RunAsync"/> measures and how.</summary>
/// <param name="Objects">How many VolumeSnapshots to create (the figure is 10,000).</param>
/// <param name="Parallelism">Concurrent create requests.</param>
/// <param name="WatchSamples">Writes timed from request to watch event.</param>
/// <param name="Kubectl">The kubectl to time `get volumesnapshots -A` with; null or missing skips that figure.</param>
public sealed record ApiBenchmarkOptions(int Objects = 10_000, int Parallelism = 8, int WatchSamples = 500, string? Kubectl = "kubectl");

/// <summary>Figures of one benchmark run.</summary>
/// <param name="Objects">Objects created.</param>
/// <param name="CreatesPerSecond">Creates acknowledged per second (each one durable in SQLite before the reply).</param>
/// <param name="KubectlGetAllSeconds">Wall time of `kubectl get volumesnapshots -A` over all objects, or null when skipped.</param>
/// <param name="WatchLatencyP50Milliseconds">Median time from sending a create to receiving its watch event.</param>
/// <param name="WatchLatencyP99Milliseconds">99th percentile of the same.</param>
/// <param name="ResidentBytes">Working set of this process with all objects loaded.</param>
public sealed record ApiBenchmarkResult(
    int Objects, double CreatesPerSecond, double? KubectlGetAllSeconds, double WatchLatencyP50Milliseconds,
    double WatchLatencyP99Milliseconds, long ResidentBytes);

/// <summary>
/// The API server benchmark behind `dolly bench api`: a fresh server in a temporary state directory, then creates,
/// a kubectl listing, watch latency and memory, all over the real HTTPS endpoint.
/// </summary>
public static class ApiBenchmark
{
    private const string Collection = "/apis/snapshot.storage.k8s.io/v1/namespaces/default/volumesnapshots";

    /// <summary>Runs the benchmark; the temporary state directory is removed afterwards.</summary>
    public static async Task<ApiBenchmarkResult> RunAsync(ApiBenchmarkOptions options, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(options);
        string dir = Path.Combine(Path.GetTempPath(), "dolly-bench-api-" + Guid.NewGuid().ToString("N")[..12]);
        try
        {
            var server = new ApiServer(new ApiServerOptions(dir, "127.0.0.1", 0));
            await using (server.ConfigureAwait(false))
            {
                await server.StartAsync(cancellationToken).ConfigureAwait(false);
                string token = (await File.ReadAllTextAsync(Path.Combine(dir, "token"), cancellationToken).ConfigureAwait(false)).Trim();
                using var http = Client(server, token);
                using var watchHttp = Client(server, token);

                var clock = Stopwatch.StartNew();
                await Parallel.ForAsync(0, options.Objects, new ParallelOptions { MaxDegreeOfParallelism = options.Parallelism, CancellationToken = cancellationToken },
                    async (i, ct) => await CreateAsync(http, "bench-" + i.ToString(CultureInfo.InvariantCulture), ct).ConfigureAwait(false)).ConfigureAwait(false);
                double createsPerSecond = options.Objects / clock.Elapsed.TotalSeconds;

                double? kubectlSeconds = await TimeKubectlAsync(options.Kubectl, server.KubeconfigPath, dir, cancellationToken).ConfigureAwait(false);
                var (p50, p99) = await WatchLatencyAsync(http, watchHttp, options.WatchSamples, cancellationToken).ConfigureAwait(false);
                GC.Collect();
                using var self = Process.GetCurrentProcess();
                return new ApiBenchmarkResult(options.Objects, createsPerSecond, kubectlSeconds, p50, p99, self.WorkingSet64);
            }
        }
        finally
        {
            if (Directory.Exists(dir))
            {
                Directory.Delete(dir, recursive: true);
            }
        }
    }

    private static HttpClient Client(ApiServer server, string token)
    {
        var ca = System.Security.Cryptography.X509Certificates.X509Certificate2.CreateFromPem(File.ReadAllText(server.CaCertificatePath));
        var handler = new SocketsHttpHandler();
        handler.SslOptions.RemoteCertificateValidationCallback = (_, cert, _, _) =>
        {
            using var chain = new System.Security.Cryptography.X509Certificates.X509Chain();
            chain.ChainPolicy.TrustMode = System.Security.Cryptography.X509Certificates.X509ChainTrustMode.CustomRootTrust;
            chain.ChainPolicy.CustomTrustStore.Add(ca);
            chain.ChainPolicy.RevocationMode = System.Security.Cryptography.X509Certificates.X509RevocationMode.NoCheck;
            return cert is System.Security.Cryptography.X509Certificates.X509Certificate2 c && chain.Build(c);
        };
        var http = new HttpClient(handler, disposeHandler: true) { BaseAddress = server.Url, Timeout = Timeout.InfiniteTimeSpan };
        http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", token);
        return http;
    }

    private static async Task CreateAsync(HttpClient http, string name, CancellationToken cancellationToken)
    {
        string body = "{\"apiVersion\":\"snapshot.storage.k8s.io/v1\",\"kind\":\"VolumeSnapshot\",\"metadata\":{\"name\":\"" + name +
                      "\"},\"spec\":{\"source\":{\"persistentVolumeClaimName\":\"data\"}}}";
        using var content = new StringContent(body, Encoding.UTF8, "application/json");
        using var response = await http.PostAsync(new Uri(Collection, UriKind.Relative), content, cancellationToken).ConfigureAwait(false);
        response.EnsureSuccessStatusCode();
    }

    private static async Task<double?> TimeKubectlAsync(string? kubectl, string kubeconfig, string dir, CancellationToken cancellationToken)
    {
        if (string.IsNullOrEmpty(kubectl))
        {
            return null;
        }

        var psi = new ProcessStartInfo(kubectl) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        psi.Environment["KUBECONFIG"] = kubeconfig;
        foreach (var arg in new[] { "--cache-dir", Path.Combine(dir, "kube-cache"), "get", "volumesnapshots", "-A" })
        {
            psi.ArgumentList.Add(arg);
        }

        try
        {
            // The first run fills kubectl's discovery cache; the second is the one timed.
            double seconds = 0;
            for (int run = 0; run < 2; run++)
            {
                var clock = Stopwatch.StartNew();
                using var process = Process.Start(psi)!;
                var drain = process.StandardOutput.ReadToEndAsync(cancellationToken);
                var errors = process.StandardError.ReadToEndAsync(cancellationToken);
                await process.WaitForExitAsync(cancellationToken).ConfigureAwait(false);
                await drain.ConfigureAwait(false);
                await errors.ConfigureAwait(false);
                seconds = clock.Elapsed.TotalSeconds;
                if (process.ExitCode != 0)
                {
                    return null;
                }
            }

            return seconds;
        }
        catch (System.ComponentModel.Win32Exception)
        {
            // No kubectl on this machine: the figure is skipped.
            return null;
        }
    }

    private static async Task<(double P50, double P99)> WatchLatencyAsync(HttpClient http, HttpClient watchHttp, int samples, CancellationToken cancellationToken)
    {
        using var listResponse = await http.GetAsync(new Uri(Collection + "?limit=1", UriKind.Relative), cancellationToken).ConfigureAwait(false);
        string list = await listResponse.Content.ReadAsStringAsync(cancellationToken).ConfigureAwait(false);
        using var listDoc = System.Text.Json.JsonDocument.Parse(list);
        string rv = listDoc.RootElement.GetProperty("metadata").GetProperty("resourceVersion").GetString()!;
        using var watch = await watchHttp.GetAsync(new Uri(Collection + "?watch=true&resourceVersion=" + rv, UriKind.Relative),
            HttpCompletionOption.ResponseHeadersRead, cancellationToken).ConfigureAwait(false);
        using var reader = new StreamReader(await watch.Content.ReadAsStreamAsync(cancellationToken).ConfigureAwait(false));
        var latencies = new List<double>(samples);
        for (int i = 0; i < samples; i++)
        {
            var clock = Stopwatch.StartNew();
            var create = CreateAsync(http, "watch-" + i.ToString(CultureInfo.InvariantCulture), cancellationToken);
            _ = await reader.ReadLineAsync(cancellationToken).ConfigureAwait(false);
            latencies.Add(clock.Elapsed.TotalMilliseconds);
            await create.ConfigureAwait(false);
        }

        latencies.Sort();
        return samples == 0 ? (0, 0) : (latencies[samples / 2], latencies[Math.Min(samples - 1, (int)(samples * 0.99))]);
    }
}
