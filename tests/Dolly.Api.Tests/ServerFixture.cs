using System.Diagnostics;
using System.Net.Http.Headers;
using System.Text;
using k8s;

namespace Dolly.Api.Tests;

/// <summary>A running API server on an ephemeral port in a temporary state directory.</summary>
public sealed class ServerFixture : IAsyncLifetime
{
    private readonly string _root = Path.Combine(Path.GetTempPath(), "dolly-api-tests-" + Guid.NewGuid().ToString("N")[..12]);

    public ServerFixture()
    {
        StateDirectory = Path.Combine(_root, "state");
        CacheDirectory = Path.Combine(_root, "kube-cache");
    }

    public string StateDirectory { get; }

    public string CacheDirectory { get; }

    public ApiServer Server { get; private set; } = null!;

    public ApiServerOptions Options { get; private set; } = null!;

    /// <summary>Options the fixture starts with; subclasses of tests can restart with other options.</summary>
    public static ApiServerOptions DefaultOptions(string state) =>
        new(state, "127.0.0.1", 0) { BookmarkInterval = TimeSpan.FromMilliseconds(200) };

    public async ValueTask InitializeAsync()
    {
        Options = DefaultOptions(StateDirectory);
        Server = new ApiServer(Options);
        await Server.StartAsync(CancellationToken.None);
    }

    /// <summary>Stops the server and starts a new one on the same state directory.</summary>
    public async Task RestartAsync(ApiServerOptions? options = null)
    {
        await Server.DisposeAsync();
        Options = options ?? DefaultOptions(StateDirectory);
        Server = new ApiServer(Options);
        await Server.StartAsync(CancellationToken.None);
    }

    public async ValueTask DisposeAsync()
    {
        await Server.DisposeAsync();
        try
        {
            Directory.Delete(_root, recursive: true);
        }
        catch (IOException)
        {
            // A kubectl child that outlived its test may still hold a cache file; the temp dir is cleaned later.
        }
    }

    public string Token => File.ReadAllText(Path.Combine(StateDirectory, "token")).Trim();

    /// <summary>A KubernetesClient configured from the written kubeconfig.</summary>
    public Kubernetes Client()
    {
        var config = KubernetesClientConfiguration.BuildConfigFromConfigFile(Server.KubeconfigPath);
        return new Kubernetes(config);
    }

    /// <summary>An HttpClient trusting the server's CA, optionally with the bearer token.</summary>
    public HttpClient Http(bool authenticated = true)
    {
        var ca = System.Security.Cryptography.X509Certificates.X509Certificate2.CreateFromPem(File.ReadAllText(Server.CaCertificatePath));
        var handler = new HttpClientHandler
        {
            ServerCertificateCustomValidationCallback = (_, cert, _, _) =>
            {
                using var chain = new System.Security.Cryptography.X509Certificates.X509Chain();
                chain.ChainPolicy.TrustMode = System.Security.Cryptography.X509Certificates.X509ChainTrustMode.CustomRootTrust;
                chain.ChainPolicy.CustomTrustStore.Add(ca);
                chain.ChainPolicy.RevocationMode = System.Security.Cryptography.X509Certificates.X509RevocationMode.NoCheck;
                return cert is not null && chain.Build(cert);
            },
        };
        var http = new HttpClient(handler) { BaseAddress = Server.Url };
        if (authenticated)
        {
            http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", Token);
        }

        return http;
    }

    /// <summary>Runs kubectl against the server; returns exit code, stdout and stderr.</summary>
    public Task<KubectlResult> KubectlAsync(params string[] args) => KubectlWithInputAsync(null, args);

    public async Task<KubectlResult> KubectlWithInputAsync(string? stdin, params string[] args)
    {
        var psi = new ProcessStartInfo("kubectl")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = stdin is not null,
            UseShellExecute = false,
        };
        psi.Environment["KUBECONFIG"] = Server.KubeconfigPath;
        psi.ArgumentList.Add("--cache-dir");
        psi.ArgumentList.Add(CacheDirectory);
        foreach (var a in args)
        {
            psi.ArgumentList.Add(a);
        }

        using var process = Process.Start(psi)!;
        if (stdin is not null)
        {
            await process.StandardInput.WriteAsync(stdin);
            process.StandardInput.Close();
        }

        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(120));
        await process.WaitForExitAsync(timeout.Token);
        return new KubectlResult(process.ExitCode, await stdout, await stderr);
    }

    /// <summary>Starts a long-running kubectl (e.g. get -w) whose output can be polled.</summary>
    public KubectlProcess StartKubectl(params string[] args)
    {
        var psi = new ProcessStartInfo("kubectl")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        psi.Environment["KUBECONFIG"] = Server.KubeconfigPath;
        psi.ArgumentList.Add("--cache-dir");
        psi.ArgumentList.Add(CacheDirectory);
        foreach (var a in args)
        {
            psi.ArgumentList.Add(a);
        }

        return new KubectlProcess(Process.Start(psi)!);
    }
}

public sealed record KubectlResult(int ExitCode, string Stdout, string Stderr)
{
    public KubectlResult ShouldSucceed()
    {
        Assert.True(ExitCode == 0, "kubectl failed (" + ExitCode + "): " + Stderr + Stdout);
        return this;
    }

    public KubectlResult ShouldFail()
    {
        Assert.True(ExitCode != 0, "kubectl unexpectedly succeeded: " + Stdout);
        return this;
    }
}

/// <summary>A kubectl child whose stdout is collected as it arrives.</summary>
public sealed class KubectlProcess : IDisposable
{
    private readonly Process _process;
    private readonly StringBuilder _out = new();
    private readonly Lock _lock = new();

    public KubectlProcess(Process process)
    {
        _process = process;
        _process.OutputDataReceived += (_, e) =>
        {
            if (e.Data is not null)
            {
                lock (_lock)
                {
                    _out.AppendLine(e.Data);
                }
            }
        };
        _process.ErrorDataReceived += (_, e) =>
        {
            if (e.Data is not null)
            {
                lock (_lock)
                {
                    _out.AppendLine("ERR " + e.Data);
                }
            }
        };
        _process.BeginOutputReadLine();
        _process.BeginErrorReadLine();
    }

    public string Output
    {
        get
        {
            lock (_lock)
            {
                return _out.ToString();
            }
        }
    }

    /// <summary>Polls the output until it satisfies <paramref name="condition"/> or the timeout passes.</summary>
    public Task<string> WaitForOutputAsync(Func<string, bool> condition, TimeSpan? timeout = null) =>
        Poll.UntilAsync(() => Output, condition, timeout ?? TimeSpan.FromSeconds(60));

    public void Dispose()
    {
        if (!_process.HasExited)
        {
            _process.Kill(entireProcessTree: true);
            _process.WaitForExit(5000);
        }

        _process.Dispose();
    }
}

/// <summary>Polling with a deadline instead of sleeping: checks often, fails with the last value seen.</summary>
public static class Poll
{
    public static async Task<T> UntilAsync<T>(Func<T> read, Func<T, bool> condition, TimeSpan timeout)
    {
        var deadline = DateTime.UtcNow + timeout;
        T value = read();
        while (!condition(value))
        {
            if (DateTime.UtcNow > deadline)
            {
                Assert.Fail("condition not met within " + timeout + "; last value: " + value);
            }

            await Task.Delay(20);
            value = read();
        }

        return value;
    }

    public static async Task<T> UntilAsync<T>(Func<Task<T>> read, Func<T, bool> condition, TimeSpan timeout)
    {
        var deadline = DateTime.UtcNow + timeout;
        T value = await read();
        while (!condition(value))
        {
            if (DateTime.UtcNow > deadline)
            {
                Assert.Fail("condition not met within " + timeout + "; last value: " + value);
            }

            await Task.Delay(20);
            value = await read();
        }

        return value;
    }
}
