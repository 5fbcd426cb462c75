using System.Diagnostics;
using Dolly.Repository.Storage;

namespace Dolly.Repository.Tests;

/// <summary>The tests that share one real radosgw; xunit runs a collection's tests one at a time.</summary>
[CollectionDefinition(Name)]
public sealed class RgwCollection : ICollectionFixture<RgwFixture>
{
    /// <summary>The collection name.</summary>
    public const string Name = "radosgw";
}

/// <summary>
/// One single-node Ceph cluster with radosgw for the whole test run (scripts/rgw-dev-server.sh through
/// <see cref="S3DevServer"/>), destroyed at the end. Set DOLLY_TEST_RGW_DIR to keep one between runs (it is then
/// started if needed and left running), which saves the ~30 s a fresh cluster takes.
/// </summary>
public sealed class RgwFixture : IAsyncLifetime
{
    private const string ReuseVariable = "DOLLY_TEST_RGW_DIR";
    private static readonly string[] Programs = ["ceph-mon", "ceph-osd", "radosgw", "radosgw-admin", "ceph", "monmaptool"];
    private static readonly TimeSpan StartTimeout = TimeSpan.FromMinutes(4);

    private string? _skipReason;
    private bool _owned;
    private S3DevServer? _server;
    private S3DevServerEndpoint? _endpoint;

    /// <summary>The dev server (for stopping and restarting radosgw in fault tests).</summary>
    public S3DevServer Server => _server ?? throw new InvalidOperationException(_skipReason ?? "the fixture is not initialized");

    /// <summary>The S3 endpoint and keys.</summary>
    public S3DevServerEndpoint Endpoint => _endpoint ?? throw new InvalidOperationException(_skipReason ?? "the fixture is not initialized");

    /// <summary>How long the cluster took to come up (measured once per run).</summary>
    public TimeSpan StartupTime { get; private set; }

    /// <inheritdoc />
    public async ValueTask InitializeAsync()
    {
        var missing = Programs.Where(p => Find(p) is null).ToList();
        if (missing.Count > 0)
        {
            _skipReason = $"{string.Join(", ", missing)} not installed; scripts/install-test-deps.sh installs Ceph's radosgw";
            return;
        }

        var reuse = Environment.GetEnvironmentVariable(ReuseVariable);
        _owned = string.IsNullOrEmpty(reuse);
        var directory = _owned ? Path.Combine(Path.GetTempPath(), "dolly-rgw-test-" + Guid.NewGuid().ToString("N")[..12]) : reuse!;
        _server = new S3DevServer(directory);
        using var timeout = new CancellationTokenSource(StartTimeout);
        var started = Stopwatch.GetTimestamp();
        _endpoint = await _server.StartAsync(timeout.Token);
        StartupTime = Stopwatch.GetElapsedTime(started);
    }

    /// <inheritdoc />
    public async ValueTask DisposeAsync()
    {
        if (_server is not null && _owned)
        {
            using var timeout = new CancellationTokenSource(TimeSpan.FromMinutes(2));
            await _server.DestroyAsync(timeout.Token);
        }
    }

    /// <summary>Skips the calling test when Ceph is not installed.</summary>
    public void Require()
    {
        if (_skipReason is not null)
        {
            Assert.Skip(_skipReason);
        }
    }

    /// <summary>A store on <paramref name="bucket"/>; <paramref name="adjust"/> changes options (keys, timeouts).</summary>
    public S3ObjectStore Store(string bucket, string prefix = "", Func<S3ObjectStoreOptions, S3ObjectStoreOptions>? adjust = null)
    {
        Require();
        var options = Endpoint.ToOptions(bucket, prefix);
        return new S3ObjectStore(adjust is null ? options : adjust(options));
    }

    /// <summary>Creates a bucket no other test uses and answers its name.</summary>
    public async Task<string> NewBucketAsync(CancellationToken cancellationToken)
    {
        Require();
        var bucket = "t-" + Guid.NewGuid().ToString("N")[..20];
        using var store = Store(bucket);
        Assert.True(await store.CreateBucketAsync(cancellationToken));
        return bucket;
    }

    /// <summary>Creates another S3 user (radosgw-admin) and answers the dev server's endpoint with its keys.</summary>
    public async Task<S3DevServerEndpoint> NewUserAsync(CancellationToken cancellationToken)
    {
        Require();
        var uid = "other-" + Guid.NewGuid().ToString("N")[..8];
        var psi = new ProcessStartInfo(Find("radosgw-admin")!)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (var a in new[] { "--conf", Path.Combine(Server.StateDirectory, "ceph.conf"), "user", "create", "--uid", uid, "--display-name", uid })
        {
            psi.ArgumentList.Add(a);
        }

        using var process = Process.Start(psi)!;
        var stdout = process.StandardOutput.ReadToEndAsync(cancellationToken);
        var stderr = process.StandardError.ReadToEndAsync(cancellationToken);
        await process.WaitForExitAsync(cancellationToken);
        Assert.True(process.ExitCode == 0, $"radosgw-admin user create failed: {await stderr}");
        using var json = System.Text.Json.JsonDocument.Parse(await stdout);
        var keys = json.RootElement.GetProperty("keys")[0];
        return Endpoint with { AccessKey = keys.GetProperty("access_key").GetString()!, SecretKey = keys.GetProperty("secret_key").GetString()! };
    }

    /// <summary>Starts radosgw if a fault test left it stopped or frozen.</summary>
    public async Task EnsureGatewayRunningAsync()
    {
        if (Server.GatewayProcessId() is { } pid)
        {
            Signal("CONT", pid);
        }

        using var timeout = new CancellationTokenSource(StartTimeout);
        await Server.StartGatewayAsync(timeout.Token);
    }

    /// <summary>Sends a signal (STOP, CONT) to a process.</summary>
    public static void Signal(string signal, int pid)
    {
        using var kill = Process.Start(new ProcessStartInfo("kill", ["-" + signal, pid.ToString(System.Globalization.CultureInfo.InvariantCulture)]) { UseShellExecute = false })
            ?? throw new InvalidOperationException("cannot run kill");
        kill.WaitForExit();
    }

    private static string? Find(string name) =>
        (Environment.GetEnvironmentVariable("PATH") ?? string.Empty).Split(':', StringSplitOptions.RemoveEmptyEntries)
            .Concat(["/usr/sbin", "/sbin"])
            .Select(d => Path.Combine(d, name))
            .FirstOrDefault(File.Exists);
}
