using System.Net;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text;

namespace Dolly.Api.Security;

/// <summary>
/// The server's CA, serving certificate and bearer token, created on first start and kept as files in the state
/// directory (private keys and the token readable by the owner only). The CA is long lived because kubeconfigs
/// embed it; the serving certificate is re-issued from it whenever it nears expiry or lacks the listen address.
/// </summary>
internal sealed class Credentials : IDisposable
{
    private Credentials(X509Certificate2 ca, X509Certificate2 serving, string token)
    {
        Ca = ca;
        Serving = serving;
        Token = token;
    }

    public X509Certificate2 Ca { get; }

    public X509Certificate2 Serving { get; }

    public string Token { get; }

    public static Credentials LoadOrCreate(string directory, IPAddress listenAddress, TimeProvider time)
    {
        Directory.CreateDirectory(directory);
        var now = time.GetUtcNow();
        string caCrt = Path.Combine(directory, "ca.crt"), caKey = Path.Combine(directory, "ca.key");
        string srvCrt = Path.Combine(directory, "server.crt"), srvKey = Path.Combine(directory, "server.key");
        string tokenPath = Path.Combine(directory, "token");

        if (!File.Exists(caCrt) || !File.Exists(caKey))
        {
            using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
            var req = new CertificateRequest("CN=dolly-ca", key, HashAlgorithmName.SHA256);
            req.CertificateExtensions.Add(new X509BasicConstraintsExtension(true, true, 0, true));
            req.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.KeyCertSign | X509KeyUsageFlags.CrlSign, true));
            req.CertificateExtensions.Add(new X509SubjectKeyIdentifierExtension(req.PublicKey, false));
            using var ca = req.CreateSelfSigned(now.AddMinutes(-5), now.AddYears(10));
            WriteSecret(caKey, key.ExportPkcs8PrivateKeyPem());
            File.WriteAllText(caCrt, ca.ExportCertificatePem());
        }

        var caCert = X509Certificate2.CreateFromPemFile(caCrt, caKey);
        if (!File.Exists(srvCrt) || !File.Exists(srvKey) || !ServingIsUsable(srvCrt, caCert, listenAddress, now))
        {
            IssueServing(caCert, listenAddress, now, srvCrt, srvKey);
        }

        var serving = X509Certificate2.CreateFromPemFile(srvCrt, srvKey);
        if (!File.Exists(tokenPath))
        {
            WriteSecret(tokenPath, Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(32)));
        }

        string token = File.ReadAllText(tokenPath).Trim();
        return new Credentials(caCert, serving, token);
    }

    private static bool ServingIsUsable(string path, X509Certificate2 ca, IPAddress address, DateTimeOffset now)
    {
        using var cert = X509Certificate2.CreateFromPem(File.ReadAllText(path));
        if (cert.NotAfter.ToUniversalTime() < now.UtcDateTime.AddDays(30) || cert.Issuer != ca.Subject)
        {
            return false;
        }

        var san = cert.Extensions.OfType<X509SubjectAlternativeNameExtension>().FirstOrDefault();
        return san is not null && (address.Equals(IPAddress.Any) || address.Equals(IPAddress.IPv6Any) ||
                                   san.EnumerateIPAddresses().Contains(address));
    }

    private static void IssueServing(X509Certificate2 ca, IPAddress address, DateTimeOffset now, string crtPath, string keyPath)
    {
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var req = new CertificateRequest("CN=dolly-apiserver", key, HashAlgorithmName.SHA256);
        var san = new SubjectAlternativeNameBuilder();
        san.AddDnsName("localhost");
        san.AddDnsName("kubernetes");
        san.AddDnsName("kubernetes.default");
        san.AddIpAddress(IPAddress.Loopback);
        san.AddIpAddress(IPAddress.IPv6Loopback);
        if (!IPAddress.IsLoopback(address) && !address.Equals(IPAddress.Any) && !address.Equals(IPAddress.IPv6Any))
        {
            san.AddIpAddress(address);
        }

        req.CertificateExtensions.Add(san.Build());
        req.CertificateExtensions.Add(new X509BasicConstraintsExtension(false, false, 0, true));
        req.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.DigitalSignature, true));
        req.CertificateExtensions.Add(new X509EnhancedKeyUsageExtension([new Oid("1.3.6.1.5.5.7.3.1")], false));
        var serial = RandomNumberGenerator.GetBytes(16);
        serial[0] &= 0x7F;
        var notAfter = now.AddYears(1) < ca.NotAfter ? now.AddYears(1) : new DateTimeOffset(ca.NotAfter.ToUniversalTime());
        using var cert = req.Create(ca, now.AddMinutes(-5), notAfter, serial);
        WriteSecret(keyPath, key.ExportPkcs8PrivateKeyPem());
        File.WriteAllText(crtPath, cert.ExportCertificatePem());
    }

    private static void WriteSecret(string path, string content)
    {
        // Create the file owner-only before any secret byte is written to it.
        var options = new FileStreamOptions { Mode = FileMode.Create, Access = FileAccess.Write };
        if (!OperatingSystem.IsWindows())
        {
            options.UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite;
        }

        using var stream = new FileStream(path, options);
        stream.Write(Encoding.UTF8.GetBytes(content));
        stream.Flush(flushToDisk: true);
    }

    /// <summary>Writes a kubeconfig with cluster, user and context named "dolly".</summary>
    public void WriteKubeconfig(string path, string serverUrl)
    {
        string caData = Convert.ToBase64String(Encoding.ASCII.GetBytes(Ca.ExportCertificatePem()));
        var sb = new StringBuilder();
        sb.Append("apiVersion: v1\nkind: Config\nclusters:\n- name: dolly\n  cluster:\n")
          .Append("    server: ").Append(serverUrl).Append('\n')
          .Append("    certificate-authority-data: ").Append(caData).Append('\n')
          .Append("users:\n- name: dolly\n  user:\n    token: ").Append(Token).Append('\n')
          .Append("contexts:\n- name: dolly\n  context:\n    cluster: dolly\n    user: dolly\n    namespace: default\n")
          .Append("current-context: dolly\npreferences: {}\n");
        WriteSecret(path, sb.ToString());
    }

    /// <summary>Constant-time check of an Authorization header value.</summary>
    public bool IsAuthorized(string? authorization)
    {
        if (authorization is null || !authorization.StartsWith("Bearer ", StringComparison.OrdinalIgnoreCase))
        {
            return false;
        }

        var presented = Encoding.UTF8.GetBytes(authorization[7..].Trim());
        var expected = Encoding.UTF8.GetBytes(Token);
        return CryptographicOperations.FixedTimeEquals(presented, expected);
    }

    public void Dispose()
    {
        Ca.Dispose();
        Serving.Dispose();
    }
}
