namespace Dolly.Api.Tests;

/// <summary>Start, stop and the state directory: files written, one server per directory, clean failure.</summary>
public sealed class LifecycleTests
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    [Fact]
    public async Task Start_WritesCredentialsAndKubeconfig_SecondServerOnSameStateIsRefused()
    {
        string dir = Path.Combine(Path.GetTempPath(), "dolly-api-life-" + Guid.NewGuid().ToString("N")[..8]);
        try
        {
            await using (var server = new ApiServer(ServerFixture.DefaultOptions(dir)))
            {
                await server.StartAsync(Ct);
                Assert.NotNull(server.Url);
                Assert.Equal("https", server.Url!.Scheme);
                Assert.Equal(Path.Combine(dir, "kubeconfig"), server.KubeconfigPath);
                string kubeconfig = await File.ReadAllTextAsync(server.KubeconfigPath, Ct);
                Assert.Contains("server: " + server.Url.ToString().TrimEnd('/'), kubeconfig, StringComparison.Ordinal);
                Assert.Contains("certificate-authority-data: ", kubeconfig, StringComparison.Ordinal);
                foreach (var file in new[] { "ca.crt", "ca.key", "server.crt", "server.key", "token", "api.db" })
                {
                    Assert.True(File.Exists(Path.Combine(dir, file)), file);
                }

                if (!OperatingSystem.IsWindows())
                {
                    Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(Path.Combine(dir, "token")));
                    Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(Path.Combine(dir, "ca.key")));
                }

                await using var second = new ApiServer(ServerFixture.DefaultOptions(dir));
                var e = await Assert.ThrowsAsync<InvalidOperationException>(() => second.StartAsync(Ct));
                Assert.Contains("in use", e.Message, StringComparison.Ordinal);
            }

            // After a clean stop the directory can be opened again.
            await using var again = new ApiServer(ServerFixture.DefaultOptions(dir));
            await again.StartAsync(Ct);
            await again.StopAsync(Ct);
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    public void Options_InvalidAddressOrPort_AreRejected()
    {
        Assert.Throws<ArgumentException>(() => new ApiServer(new ApiServerOptions("x", "localhost", 6443)));
        Assert.Throws<ArgumentOutOfRangeException>(() => new ApiServer(new ApiServerOptions("x", "127.0.0.1", 70000)));
    }

    [Fact]
    public async Task Stop_WithOpenWatches_EndsThemPromptly()
    {
        string dir = Path.Combine(Path.GetTempPath(), "dolly-api-stop-" + Guid.NewGuid().ToString("N")[..8]);
        try
        {
            var server = new ApiServer(ServerFixture.DefaultOptions(dir));
            await server.StartAsync(Ct);
            var handler = new HttpClientHandler { ServerCertificateCustomValidationCallback = (_, _, _, _) => true };
            using var http = new HttpClient(handler) { BaseAddress = server.Url, Timeout = Timeout.InfiniteTimeSpan };
            http.DefaultRequestHeaders.Authorization = new System.Net.Http.Headers.AuthenticationHeaderValue("Bearer", File.ReadAllText(Path.Combine(dir, "token")).Trim());
            var streams = new List<Stream>();
            for (int i = 0; i < 3; i++)
            {
                var response = await http.GetAsync(new Uri("/api/v1/namespaces?watch=true", UriKind.Relative), HttpCompletionOption.ResponseHeadersRead, Ct);
                streams.Add(await response.Content.ReadAsStreamAsync(Ct));
            }

            // A watch that held the stop would hold it for the host's graceful shutdown timeout (30 s); the bound
            // sits well below that and well above what stopping takes on a busy machine (5 s was not).
            var clock = System.Diagnostics.Stopwatch.StartNew();
            await server.StopAsync(Ct).WaitAsync(TimeSpan.FromSeconds(60), Ct);
            Assert.True(clock.Elapsed < TimeSpan.FromSeconds(20), "stop took " + clock.Elapsed);
            await server.DisposeAsync();
            foreach (var stream in streams)
            {
                await stream.DisposeAsync();
            }
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }
}
