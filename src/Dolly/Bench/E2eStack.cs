using System.Diagnostics;
using System.Text;
using System.Text.Json;
using k8s;
using k8s.Models;

namespace Dolly.Bench;

/// <summary>
/// <c>dolly up --port 0</c> run in-process on a scratch pool, exactly as the CLI runs it (API server,
/// controllers, CSI driver, NBD server), with a KubernetesClient built from the kubeconfig it writes.
/// Disposing cancels it, as Ctrl-C would, and waits for it to stop and commit the pool.
/// </summary>
internal sealed class E2eStack : IAsyncDisposable
{
    private static readonly TimeSpan StartTimeout = TimeSpan.FromSeconds(60);
    private static readonly TimeSpan StopTimeout = TimeSpan.FromSeconds(60);

    private readonly CancellationTokenSource _stop;
    private readonly Task<int> _running;
    private readonly SyncWriter _out;
    private readonly SyncWriter _err;
    private readonly Action<string> _log;
    private Kubernetes? _client;

    private E2eStack(string poolDirectory, CancellationTokenSource stop, Task<int> running, SyncWriter output, SyncWriter error, Action<string> log)
    {
        PoolDirectory = poolDirectory;
        _stop = stop;
        _running = running;
        _out = output;
        _err = error;
        _log = log;
    }

    public string PoolDirectory { get; }

    public string KubeconfigPath => Path.Combine(CliContext.BesidePool(PoolDirectory, "-api"), "kubeconfig");

    public string NbdSocket => Path.Combine(PoolDirectory, "nbd.sock");

    /// <summary>A client of the embedded API server, from the kubeconfig <c>up</c> wrote.</summary>
    public Kubernetes Client => _client ?? throw new InvalidOperationException("dolly up is not ready yet");

    /// <summary>Seconds from the start of <c>up</c> until /readyz answered.</summary>
    public double StartSeconds { get; private set; }

    /// <summary>
    /// Runs <c>dolly up</c> with the pool <paramref name="poolDirectory"/> (created by <c>up</c>, as the
    /// default pool is) and waits until its kubeconfig and CSI socket exist and /readyz answers 200.
    /// </summary>
    public static async Task<E2eStack> StartAsync(string poolDirectory, bool verbose, Action<string> log, CancellationToken ct)
    {
        var output = new SyncWriter();
        var error = new SyncWriter();
        var host = new CliHost(output, error, () => Stream.Null, () => Stream.Null, false, false, name => name == "DOLLY_POOL" ? poolDirectory : null);
        var stop = CancellationTokenSource.CreateLinkedTokenSource(ct);
        long started = Stopwatch.GetTimestamp();
        string[] args = verbose ? ["up", "--port", "0", "--metrics", "127.0.0.1:0", "--verbose"] : ["up", "--port", "0", "--metrics", "127.0.0.1:0"];
        var running = Task.Run(() => Cli.RunAsync(args, host, stop.Token), CancellationToken.None);
        var stack = new E2eStack(poolDirectory, stop, running, output, error, log);
        try
        {
            await stack.WaitReadyAsync(ct).ConfigureAwait(false);
            stack.StartSeconds = Stopwatch.GetElapsedTime(started).TotalSeconds;
            return stack;
        }
        catch
        {
            await stack.DisposeAsync().ConfigureAwait(false);
            throw;
        }
    }

    private async Task WaitReadyAsync(CancellationToken ct)
    {
        var deadline = Stopwatch.StartNew();
        string csiSocket = Path.Combine(PoolDirectory, "csi.sock");
        while (!(_out.ToString().Contains("Dolly is up", StringComparison.Ordinal) && File.Exists(KubeconfigPath) && File.Exists(csiSocket)))
        {
            ThrowIfEnded();
            if (deadline.Elapsed > StartTimeout)
            {
                throw new CliFailureException(ExitCodes.Unexpected, $"dolly up did not start within {StartTimeout.TotalSeconds:0} s (no kubeconfig at {KubeconfigPath} or no {csiSocket}){Tail()}");
            }

            await Task.Delay(20, ct).ConfigureAwait(false);
        }

        var config = KubernetesClientConfiguration.BuildConfigFromConfigFile(KubeconfigPath);
        _client = new Kubernetes(config);
        while (true)
        {
            ThrowIfEnded();
            using var probe = new HttpRequestMessage(HttpMethod.Get, new Uri(Client.BaseUri, "readyz"));
            if (config.AccessToken is { } token)
            {
                probe.Headers.Authorization = new System.Net.Http.Headers.AuthenticationHeaderValue("Bearer", token);
            }

            try
            {
                using var response = await Client.HttpClient.SendAsync(probe, ct).ConfigureAwait(false);
                if (response.IsSuccessStatusCode)
                {
                    return;
                }
            }
            catch (HttpRequestException) when (deadline.Elapsed <= StartTimeout)
            {
            }
            catch (HttpRequestException ex)
            {
                throw new CliFailureException(ExitCodes.Unexpected, $"the API server of dolly up at {Client.BaseUri} does not answer /readyz: {ex.Message}{Tail()}");
            }

            if (deadline.Elapsed > StartTimeout)
            {
                throw new CliFailureException(ExitCodes.Unexpected, $"the API server of dolly up at {Client.BaseUri} was not ready within {StartTimeout.TotalSeconds:0} s{Tail()}");
            }

            await Task.Delay(20, ct).ConfigureAwait(false);
        }
    }

    /// <summary>
    /// Runs a benchmark over the stack with the API server's refusals and a lost connection turned into a
    /// <see cref="CliFailureException"/> that says which request and why, with no stack trace.
    /// </summary>
    public static async Task<T> ExplainApiFailuresAsync<T>(Func<Task<T>> run)
    {
        try
        {
            return await run().ConfigureAwait(false);
        }
        catch (k8s.Autorest.HttpOperationException ex)
        {
            string body = ex.Response.Content is { Length: > 0 } c ? c : ex.Message;
            string message = body;
            try
            {
                message = JsonDocument.Parse(body).RootElement.GetProperty("message").GetString() ?? body;
            }
            catch (Exception parse) when (parse is JsonException or KeyNotFoundException or InvalidOperationException)
            {
            }

            throw new CliFailureException(ExitCodes.Unexpected, $"the API server of dolly up refused {ex.Request.Method} {ex.Request.RequestUri?.AbsolutePath}: {(int)ex.Response.StatusCode} {message}");
        }
        catch (HttpRequestException ex)
        {
            throw new CliFailureException(ExitCodes.Unexpected, $"lost the connection to the API server of dolly up: {ex.Message}");
        }
    }

    /// <summary>A watch over the claims of every namespace.</summary>
    public E2eWatch<V1PersistentVolumeClaim> WatchAllClaims() => new(
        "PersistentVolumeClaim",
        async c =>
        {
            var l = await Client.CoreV1.ListPersistentVolumeClaimForAllNamespacesAsync(cancellationToken: c).ConfigureAwait(false);
            return (l.Items, l.Metadata.ResourceVersion);
        },
        (rv, c) => Client.CoreV1.WatchListPersistentVolumeClaimForAllNamespacesAsync(allowWatchBookmarks: true, resourceVersion: rv, timeoutSeconds: 3600, cancellationToken: c));

    /// <summary>Throws when <c>up</c> has ended by itself, with what it printed.</summary>
    public void ThrowIfEnded()
    {
        if (_running.IsCompleted)
        {
            string code = _running.IsCompletedSuccessfully ? $"exit code {_running.Result}" : _running.Exception?.GetBaseException().Message ?? "cancelled";
            throw new CliFailureException(ExitCodes.Unexpected, $"dolly up ended during the benchmark ({code}){Tail()}");
        }
    }

    private string Tail()
    {
        string err = _err.ToString().Trim();
        return err.Length == 0 ? string.Empty : ": " + string.Join(" | ", err.Split('\n').TakeLast(5).Select(l => l.Trim()));
    }

    public async ValueTask DisposeAsync()
    {
        _client?.Dispose();
        await _stop.CancelAsync().ConfigureAwait(false);
        try
        {
            int code = await _running.WaitAsync(StopTimeout).ConfigureAwait(false);
            if (code != ExitCodes.Ok)
            {
                _log($"warning: dolly up exited with code {code}{Tail()}");
            }
        }
        catch (TimeoutException)
        {
            _log($"warning: dolly up did not stop within {StopTimeout.TotalSeconds:0} s");
        }

        _stop.Dispose();
    }

    /// <summary>What <c>up</c> prints, collected from its own tasks while the benchmark reads it.</summary>
    private sealed class SyncWriter : TextWriter
    {
        private readonly StringBuilder _text = new();

        public override Encoding Encoding => Encoding.UTF8;

        public override void Write(char value)
        {
            lock (_text)
            {
                _text.Append(value);
            }
        }

        public override void Write(string? value)
        {
            lock (_text)
            {
                _text.Append(value);
            }
        }

        public override void WriteLine(string? value)
        {
            lock (_text)
            {
                _text.Append(value).Append('\n');
            }
        }

        public override Task WriteLineAsync(string? value)
        {
            WriteLine(value);
            return Task.CompletedTask;
        }

        public override Task WriteAsync(string? value)
        {
            Write(value);
            return Task.CompletedTask;
        }

        public override Task FlushAsync(CancellationToken cancellationToken) => Task.CompletedTask;

        public override string ToString()
        {
            lock (_text)
            {
                return _text.ToString();
            }
        }
    }
}
