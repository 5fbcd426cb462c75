using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;

namespace Dolly.Tests;

/// <summary><c>dolly node</c>: argument checking, and a run that serves the CSI socket until cancelled.</summary>
public sealed class NodeCommandTests : CliTestBase
{
    [Fact]
    public async Task Help_ListsEveryOption()
    {
        var r = await Ok("node", "--help");
        foreach (string option in new[] { "--node-id", "--csi-socket", "--nbd", "--nbd-tls-ca", "--nbd-tls-cert", "--nbd-tls-key", "--state-dir", "--attach" })
        {
            Assert.Contains(option, r.Out, StringComparison.Ordinal);
        }

        Assert.Contains("/var/lib/dolly/node", r.Out, StringComparison.Ordinal);
        Assert.Contains("auto|kernel|nbdfuse", r.Out, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Attach_UnknownMode_IsAUsageError()
    {
        var r = await Dolly("node", "--csi-socket", Path.Combine(Root, "csi.sock"), "--nbd", "unix:/run/nbd.sock", "--attach", "iscsi");
        Assert.Equal(ExitCodes.Usage, r.ExitCode);
        Assert.Contains("iscsi", r.Err, StringComparison.Ordinal);
        Assert.False(File.Exists(Path.Combine(Root, "csi.sock")));
    }

    [Fact]
    public async Task RequiredOptions_Missing_AreUsageErrors()
    {
        var r = await Dolly("node", "--nbd", "unix:/run/nbd.sock");
        Assert.Equal(ExitCodes.Usage, r.ExitCode);
        Assert.Contains("--csi-socket", r.Err, StringComparison.Ordinal);

        r = await Dolly("node", "--csi-socket", Path.Combine(Root, "csi.sock"));
        Assert.Equal(ExitCodes.Usage, r.ExitCode);
        Assert.Contains("--nbd", r.Err, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("nbd-host", "is not an NBD address")]
    [InlineData("nbd-host:0", "is not an NBD address")]
    [InlineData("nbd-host:99999", "is not an NBD address")]
    [InlineData("unix:", "names no socket")]
    [InlineData("::1:10809", "is not an NBD address")]
    [InlineData("dolly-nbd.dolly-system.svc:10809", "needs TLS: give the CA certificate")]
    public async Task BadNbdAddress_IsInvalidArgument(string address, string message)
    {
        await Fails(ExitCodes.InvalidArgument, message, "node", "--csi-socket", Path.Combine(Root, "csi.sock"), "--nbd", address);
        Assert.False(File.Exists(Path.Combine(Root, "csi.sock")));
    }

    [Fact]
    public async Task TlsFiles_Inconsistent_OrUnreadable_AreInvalidArgument()
    {
        string csi = Path.Combine(Root, "csi.sock");
        var (ca, cert, key) = WritePki();
        await Fails(ExitCodes.InvalidArgument, "--nbd-tls-cert and --nbd-tls-key go together", "node", "--csi-socket", csi, "--nbd", "nbd:10809", "--nbd-tls-ca", ca, "--nbd-tls-cert", cert);
        await Fails(ExitCodes.InvalidArgument, "--nbd-tls-cert needs --nbd-tls-ca", "node", "--csi-socket", csi, "--nbd", "nbd:10809", "--nbd-tls-cert", cert, "--nbd-tls-key", key);
        await Fails(ExitCodes.InvalidArgument, "TLS settings apply to a TCP address only", "node", "--csi-socket", csi, "--nbd", "unix:/run/nbd.sock", "--nbd-tls-ca", ca);
        await Fails(ExitCodes.InvalidArgument, "cannot read the NBD server's CA certificate " + Path.Combine(Root, "missing.crt"), "node", "--csi-socket", csi, "--nbd", "nbd:10809", "--nbd-tls-ca", Path.Combine(Root, "missing.crt"));
        await Fails(ExitCodes.InvalidArgument, $"cannot load the node's client certificate {cert} with key {ca}", "node", "--csi-socket", csi, "--nbd", "nbd:10809", "--nbd-tls-ca", ca, "--nbd-tls-cert", cert, "--nbd-tls-key", ca);
        await Fails(ExitCodes.InvalidArgument, "--node-id is empty", "node", "--node-id", " ", "--csi-socket", csi, "--nbd", "unix:/run/nbd.sock");
        Assert.False(File.Exists(csi));
    }

    [Fact]
    public async Task Run_ServesTheSocket_UntilCancelled_NodeIdFromNodeName()
    {
        string csi = Path.Combine(Root, "plugins", "csi.dolly.io", "csi.sock");
        var (ca, cert, key) = WritePki();
        var output = new StringWriter();
        var errors = new StringWriter();
        var env = new Dictionary<string, string?> { ["NODE_NAME"] = "worker-7" };
        var host = new CliHost(output, errors, () => Stream.Null, () => Stream.Null, OutIsTerminal: false, ErrorIsTerminal: false, name => env.GetValueOrDefault(name));
        using var cts = CancellationTokenSource.CreateLinkedTokenSource(TestContext.Current.CancellationToken);
        var run = Cli.RunAsync(
            ["node", "--csi-socket", csi, "--nbd", "dolly-nbd.dolly-system.svc:10809", "--nbd-tls-ca", ca, "--nbd-tls-cert", cert, "--nbd-tls-key", key, "--state-dir", Path.Combine(Root, "node")],
            host,
            cts.Token);

        var waited = System.Diagnostics.Stopwatch.StartNew();
        while (!File.Exists(csi) && !run.IsCompleted && waited.Elapsed < TimeSpan.FromSeconds(60))
        {
            await Task.Delay(20, TestContext.Current.CancellationToken);
        }

        Assert.True(File.Exists(csi), $"no socket: {output}{errors}");
        await cts.CancelAsync();
        Assert.Equal(ExitCodes.Ok, await run);
        string text = output.ToString();
        Assert.Contains("node         worker-7", text, StringComparison.Ordinal);
        Assert.Contains("NBD server   nbds://dolly-nbd.dolly-system.svc:10809 (TLS, client certificate)", text, StringComparison.Ordinal);
        Assert.Contains("(Identity, Node)", text, StringComparison.Ordinal);
        Assert.Contains("attach       auto: ", text, StringComparison.Ordinal);
        Assert.False(File.Exists(csi));
    }

    /// <summary>A self-signed CA certificate, and a client certificate with its key, as PEM files.</summary>
    private (string Ca, string Cert, string Key) WritePki()
    {
        using var caKey = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var caRequest = new CertificateRequest("CN=test CA", caKey, HashAlgorithmName.SHA256);
        caRequest.CertificateExtensions.Add(new X509BasicConstraintsExtension(true, false, 0, true));
        using var ca = caRequest.CreateSelfSigned(DateTimeOffset.UtcNow.AddDays(-1), DateTimeOffset.UtcNow.AddDays(1));
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        using var client = new CertificateRequest("CN=node", key, HashAlgorithmName.SHA256).Create(ca, DateTimeOffset.UtcNow.AddDays(-1), DateTimeOffset.UtcNow.AddDays(1), [1, 2, 3]);
        string caFile = Path.Combine(Root, "ca.crt");
        string certFile = Path.Combine(Root, "tls.crt");
        string keyFile = Path.Combine(Root, "tls.key");
        File.WriteAllText(caFile, ca.ExportCertificatePem());
        File.WriteAllText(certFile, client.ExportCertificatePem());
        File.WriteAllText(keyFile, key.ExportPkcs8PrivateKeyPem());
        return (caFile, certFile, keyFile);
    }
}
