using System.Diagnostics;

namespace Dolly.Repository.Storage;

/// <summary>
/// A real S3 server on loopback for tests and for trying the repository: Ceph's radosgw on a single-node Ceph
/// cluster whose whole state (config, monitor, OSD, logs) lives in one directory. It drives
/// scripts/rgw-dev-server.sh, embedded in this assembly, so the script users run and the one tests run are the same.
/// </summary>
/// <remarks>
/// The daemons outlive this object: they belong to the state directory, not to a process, so a test run or a
/// <c>dolly repo dev-server</c> can reattach to them; <see cref="StopAsync"/> or <see cref="DestroyAsync"/> ends them.
/// </remarks>
public sealed class S3DevServer
{
    /// <summary>The embedded script's resource name.</summary>
    internal const string ScriptResource = "Dolly.Repository.rgw-dev-server.sh";

    /// <summary>The exit code of <c>status</c> when the S3 endpoint does not answer.</summary>
    private const int NotAnswering = 3;

    private static readonly Lazy<string> Script = new(LoadScript);

    /// <summary>A dev server kept in <paramref name="stateDirectory"/> (created on first start).</summary>
    public S3DevServer(string stateDirectory)
    {
        ArgumentException.ThrowIfNullOrEmpty(stateDirectory);
        StateDirectory = Path.GetFullPath(stateDirectory);
    }

    /// <summary>The directory holding the cluster.</summary>
    public string StateDirectory { get; }

    /// <summary>
    /// Creates the cluster and its S3 user on first use, starts whatever is not running, and answers the endpoint and
    /// keys once radosgw answers HTTP.
    /// </summary>
    public async Task<S3DevServerEndpoint> StartAsync(CancellationToken cancellationToken)
    {
        var output = await RunAsync("start", cancellationToken).ConfigureAwait(false);
        return S3DevServerEndpoint.Parse(output, StateDirectory);
    }

    /// <summary>The endpoint and keys of a cluster created earlier (running or not).</summary>
    public async Task<S3DevServerEndpoint> GetEndpointAsync(CancellationToken cancellationToken)
    {
        var output = await RunAsync("env", cancellationToken).ConfigureAwait(false);
        return S3DevServerEndpoint.Parse(output, StateDirectory);
    }

    /// <summary>Stops radosgw, the OSD and the monitor; the data stays for the next start.</summary>
    public Task StopAsync(CancellationToken cancellationToken) => RunAsync("stop", cancellationToken);

    /// <summary>Stops radosgw alone: the S3 endpoint refuses connections while the cluster keeps the data.</summary>
    public Task StopGatewayAsync(CancellationToken cancellationToken) => RunAsync("stop-rgw", cancellationToken);

    /// <summary>Starts radosgw again on the same port, returning once it answers.</summary>
    public Task StartGatewayAsync(CancellationToken cancellationToken) => RunAsync("start-rgw", cancellationToken);

    /// <summary>Stops everything and deletes the state directory.</summary>
    public Task DestroyAsync(CancellationToken cancellationToken) => RunAsync("destroy", cancellationToken);

    /// <summary>Whether the S3 endpoint answers, and a line per daemon saying whether it runs.</summary>
    public async Task<(bool Answering, string Report)> StatusAsync(CancellationToken cancellationToken)
    {
        var (exitCode, stdout, stderr) = await ExecuteAsync("status", cancellationToken).ConfigureAwait(false);
        return exitCode switch
        {
            0 => (true, stdout),
            NotAnswering => (false, stdout),
            _ => throw new InvalidOperationException($"rgw-dev-server.sh status {StateDirectory} failed ({exitCode}): {stderr.Trim()}"),
        };
    }

    /// <summary>The process id of the running radosgw, or null (fault tests freeze it with SIGSTOP).</summary>
    public int? GatewayProcessId()
    {
        var path = Path.Combine(StateDirectory, "run", "client.rgw.dev.pid");
        return File.Exists(path) && int.TryParse(File.ReadAllText(path).Trim(), System.Globalization.CultureInfo.InvariantCulture, out var pid) ? pid : null;
    }

    private async Task<string> RunAsync(string command, CancellationToken cancellationToken)
    {
        var (exitCode, stdout, stderr) = await ExecuteAsync(command, cancellationToken).ConfigureAwait(false);
        if (exitCode != 0)
        {
            throw new InvalidOperationException($"rgw-dev-server.sh {command} {StateDirectory} failed ({exitCode}): {stderr.Trim()}");
        }

        return stdout;
    }

    private async Task<(int ExitCode, string StdOut, string StdErr)> ExecuteAsync(string command, CancellationToken cancellationToken)
    {
        // bash -c keeps the script in this assembly (no copy on disk to go stale); $0 names it in messages.
        var psi = new ProcessStartInfo("bash")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
            UseShellExecute = false,
        };
        foreach (var a in new[] { "-c", Script.Value, "rgw-dev-server.sh", command, StateDirectory })
        {
            psi.ArgumentList.Add(a);
        }

        using var process = Process.Start(psi) ?? throw new InvalidOperationException("cannot start bash for rgw-dev-server.sh");
        process.StandardInput.Close();
        var stdout = process.StandardOutput.ReadToEndAsync(cancellationToken);
        var stderr = process.StandardError.ReadToEndAsync(cancellationToken);
        try
        {
            await process.WaitForExitAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            // The script is stopped; daemons it already started keep running and belong to the state directory.
            process.Kill(entireProcessTree: true);
            throw;
        }

        return (process.ExitCode, await stdout.ConfigureAwait(false), await stderr.ConfigureAwait(false));
    }

    private static string LoadScript()
    {
        using var stream = typeof(S3DevServer).Assembly.GetManifestResourceStream(ScriptResource)
            ?? throw new InvalidOperationException($"resource {ScriptResource} is missing from {typeof(S3DevServer).Assembly.GetName().Name}");
        using var reader = new StreamReader(stream);
        return reader.ReadToEnd();
    }
}

/// <summary>How to reach a dev server's S3 endpoint.</summary>
/// <param name="Endpoint">The radosgw URL on loopback.</param>
/// <param name="Region">The signing region (the zonegroup name).</param>
/// <param name="AccessKey">The S3 user's access key.</param>
/// <param name="SecretKey">The S3 user's secret key.</param>
public sealed record S3DevServerEndpoint(Uri Endpoint, string Region, string AccessKey, string SecretKey)
{
    /// <summary>Options for a store on <paramref name="bucket"/> (under <paramref name="prefix"/>) of this server.</summary>
    public S3ObjectStoreOptions ToOptions(string bucket, string prefix = "") => new()
    {
        Endpoint = Endpoint,
        Region = Region,
        Bucket = bucket,
        Prefix = prefix,
        AccessKey = AccessKey,
        SecretKey = SecretKey,
        ForcePathStyle = true,
    };

    /// <summary>Reads the <c>NAME=value</c> lines the script prints.</summary>
    internal static S3DevServerEndpoint Parse(string output, string stateDirectory)
    {
        var values = output.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
            .Select(l => l.Split('=', 2))
            .Where(p => p.Length == 2)
            .ToDictionary(p => p[0], p => p[1], StringComparer.Ordinal);
        string Get(string name) => values.TryGetValue(name, out var v) && v.Length > 0
            ? v
            : throw new InvalidOperationException($"rgw-dev-server.sh gave no {name} for {stateDirectory}; output was: {output.Trim()}");
        return new S3DevServerEndpoint(new Uri(Get("DOLLY_S3_ENDPOINT")), Get("DOLLY_S3_REGION"), Get("DOLLY_S3_ACCESS_KEY"), Get("DOLLY_S3_SECRET_KEY"));
    }
}
