using System.Diagnostics;

namespace Dolly.Tests;

public sealed class NbdCommandTests : CliTestBase
{
    [Fact]
    public async Task Uri_UnixTcpAndTls_PrintsWhatClientsAccept()
    {
        await Ok("volume", "create", "v", "--size", "1Mi");
        var unix = await Ok("nbd", "uri", "v");
        Assert.Equal($"nbd+unix:///v?socket={Path.Combine(PoolDir, "nbd.sock")}", unix.Out.Trim());
        Assert.Equal("nbd+unix:///v?socket=/run/x.sock", (await Ok("nbd", "uri", "v", "--socket", "/run/x.sock")).Out.Trim());
        Assert.Equal("nbd://127.0.0.1:10809/v", (await Ok("nbd", "uri", "v", "--tcp", "127.0.0.1:10809")).Out.Trim());
        Assert.Equal("nbds://[::1]:10809/v", (await Ok("nbd", "uri", "v", "--tcp", "[::1]:10809", "--tls")).Out.Trim());
    }

    [Fact]
    public async Task Uri_UnknownVolume_FailsNamingIt()
    {
        await Ok("volume", "create", "v", "--size", "1Mi");
        await Fails(ExitCodes.NotFound, "'w'", "nbd", "uri", "w");
    }

    [Fact]
    public async Task Uri_BadNameOrAddress_FailsNamingIt()
    {
        await Ok("volume", "create", "v", "--size", "1Mi");
        await Fails(ExitCodes.InvalidName, "'../v'", "nbd", "uri", "../v");
        await Fails(ExitCodes.InvalidArgument, "'localhost'", "nbd", "uri", "v", "--tcp", "localhost");
    }

    [Fact]
    public async Task Serve_NonLoopbackWithoutTls_IsRefused()
    {
        await Ok("volume", "create", "v", "--size", "1Mi");
        await Fails(ExitCodes.InvalidArgument, "refusing to listen on 0.0.0.0:10809 without TLS", "nbd", "serve", "--tcp", "0.0.0.0:10809");
    }

    [Fact]
    public async Task Serve_BadLimits_AreRefusedNamingThem()
    {
        await Ok("volume", "create", "v", "--size", "1Mi");
        await Fails(ExitCodes.InvalidArgument, "limits must be positive", "nbd", "serve", "--max-connections", "0");
        await Fails(ExitCodes.InvalidArgument, "limits must be positive", "nbd", "serve", "--max-payload", "1Ki");
        await Fails(ExitCodes.InvalidArgument, "limits must be positive", "nbd", "serve", "--max-payload", "32Mi", "--max-in-flight", "1Mi");
        await Fails(ExitCodes.InvalidArgument, "--max-payload", "nbd", "serve", "--max-payload", "big");
        await Fails(ExitCodes.InvalidArgument, "buffer budget", "nbd", "serve", "--max-buffer", "64Mi");
        await Fails(ExitCodes.InvalidArgument, "buffer budget", "nbd", "serve", "--max-connections", "1000");
        await Fails(ExitCodes.InvalidArgument, "--idle-timeout", "nbd", "serve", "--idle-timeout", "-1");
    }

    [Fact]
    public async Task Serve_TlsOptions_BadCombinationsAreNamed()
    {
        await Ok("volume", "create", "v", "--size", "1Mi");
        await Fails(ExitCodes.InvalidArgument, "--tls-cert and --tls-key go together", "nbd", "serve", "--tls-cert", "/nope.pem");
        await Fails(ExitCodes.InvalidArgument, "cannot load the TLS certificate '/nope.pem'", "nbd", "serve", "--tls-cert", "/nope.pem", "--tls-key", "/nope.key");
    }

    [Fact]
    [System.Runtime.Versioning.UnsupportedOSPlatform("windows")]
    public async Task Serve_UntilCancelled_ExportsVolumesAndSnapshotsToNbdinfo()
    {
        if (!File.Exists("/usr/bin/nbdinfo"))
        {
            Assert.Skip("nbdinfo (libnbd-bin) is not installed; scripts/install-test-deps.sh installs it");
        }

        await Ok("volume", "create", "v", "--size", "1Mi");
        await Ok("snapshot", "create", "v", "s");
        string socket = Path.Combine(Root, "serve.sock");
        using var stop = new CancellationTokenSource();
        var outText = new StringWriter();
        var errText = new StringWriter();
        var env = new Dictionary<string, string?> { ["DOLLY_POOL"] = PoolDir };
        var host = new CliHost(new SyncWriter(outText), new SyncWriter(errText), () => Stream.Null, () => Stream.Null, false, false, name => env.GetValueOrDefault(name));
        var serving = Cli.RunAsync(["nbd", "serve", "--socket", socket], host, stop.Token);

        var deadline = Stopwatch.StartNew();
        while (!File.Exists(socket))
        {
            Assert.False(serving.IsCompleted, $"serve ended early: {errText}");
            Assert.True(deadline.Elapsed < TimeSpan.FromSeconds(60), "the socket did not appear within 60 s");
            await Task.Delay(20, TestContext.Current.CancellationToken);
        }

        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(socket));
        var psi = new ProcessStartInfo("nbdinfo") { RedirectStandardOutput = true, RedirectStandardError = true };
        psi.ArgumentList.Add("--list");
        psi.ArgumentList.Add($"nbd+unix:///?socket={socket}");
        using var p = Process.Start(psi)!;
        string listing = await p.StandardOutput.ReadToEndAsync(TestContext.Current.CancellationToken);
        await p.WaitForExitAsync(TestContext.Current.CancellationToken);
        Assert.Equal(0, p.ExitCode);
        Assert.Contains("export=\"v\"", listing, StringComparison.Ordinal);
        Assert.Contains("export=\"s\"", listing, StringComparison.Ordinal);
        Assert.Contains($"nbd+unix:///v?socket={socket}", outText.ToString(), StringComparison.Ordinal);

        // While the server holds the pool, uri cannot check the name but still prints the URI.
        var uri = await Ok("nbd", "uri", "v", "--socket", socket);
        Assert.Equal($"nbd+unix:///v?socket={socket}", uri.Out.Trim());

        await stop.CancelAsync();
        Assert.Equal(0, await serving.WaitAsync(TimeSpan.FromSeconds(30), TestContext.Current.CancellationToken));
        Assert.False(File.Exists(socket), "the socket is removed on shutdown");

        // The pool was closed cleanly: another command can open it.
        await Ok("volume", "list");
    }

    [Fact]
    [System.Runtime.Versioning.UnsupportedOSPlatform("windows")]
    public async Task Up_ServesKubectlAndNbdUntilCancelled()
    {
        if (!File.Exists("/usr/bin/nbdinfo") || !File.Exists("/usr/bin/kubectl"))
        {
            Assert.Skip("kubectl or nbdinfo is not installed; scripts/install-test-deps.sh installs them");
        }

        using var stop = new CancellationTokenSource();
        var outText = new StringWriter();
        var errText = new StringWriter();
        var env = new Dictionary<string, string?> { ["DOLLY_POOL"] = PoolDir };
        var host = new CliHost(new SyncWriter(outText), new SyncWriter(errText), () => Stream.Null, () => Stream.Null, false, false, name => env.GetValueOrDefault(name));
        var running = Cli.RunAsync(["up", "--port", "0", "--metrics", "127.0.0.1:0"], host, stop.Token);

        var deadline = Stopwatch.StartNew();
        string? kubeconfig = null;
        while (kubeconfig is null)
        {
            Assert.False(running.IsCompleted, $"up ended early: {errText}");
            Assert.True(deadline.Elapsed < TimeSpan.FromSeconds(60), $"up did not start: {outText}{errText}");
            kubeconfig = outText.ToString().Split('\n').Select(l => l.Trim()).FirstOrDefault(l => l.StartsWith("kubeconfig", StringComparison.Ordinal))?["kubeconfig".Length..].Trim();
            await Task.Delay(50, TestContext.Current.CancellationToken);
        }

        var (code, namespaces) = await Tool("kubectl", "--kubeconfig", kubeconfig, "get", "namespaces", "-o", "name");
        Assert.True(code == 0, namespaces);
        Assert.Contains("namespace/default", namespaces, StringComparison.Ordinal);
        var (nbdCode, listing) = await Tool("nbdinfo", "--list", $"nbd+unix:///?socket={Path.Combine(PoolDir, "nbd.sock")}");
        Assert.True(nbdCode == 0, listing);
        string csiSocket = Path.Combine(PoolDir, "csi.sock");
        Assert.True(File.Exists(csiSocket), "the CSI driver's socket exists");
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(csiSocket));

        await stop.CancelAsync();
        Assert.Equal(0, await running.WaitAsync(TimeSpan.FromSeconds(60), TestContext.Current.CancellationToken));
        await Ok("volume", "list");
    }

    private static async Task<(int Code, string Output)> Tool(string file, params string[] args)
    {
        var psi = new ProcessStartInfo(file) { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in args)
        {
            psi.ArgumentList.Add(a);
        }

        using var p = Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync(TestContext.Current.CancellationToken);
        var stderr = p.StandardError.ReadToEndAsync(TestContext.Current.CancellationToken);
        await p.WaitForExitAsync(TestContext.Current.CancellationToken).WaitAsync(TimeSpan.FromSeconds(60), TestContext.Current.CancellationToken);
        return (p.ExitCode, await stdout + await stderr);
    }
}
