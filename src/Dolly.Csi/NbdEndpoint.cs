using System.Globalization;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using Dolly.Nbd;

namespace Dolly.Csi;

/// <summary>
/// The client certificates the Node service uses to reach an NBD server over TLS: the CA that issued the
/// server's certificate and, when the server requires one, this node's certificate and key (all PEM files).
/// </summary>
/// <param name="CaFile">The CA certificate the server's certificate must chain to.</param>
/// <param name="CertificateFile">This node's client certificate, or null when the server requires none.</param>
/// <param name="KeyFile">The private key of <paramref name="CertificateFile"/>; set exactly when it is.</param>
public sealed record NbdClientTls(string CaFile, string? CertificateFile = null, string? KeyFile = null);

/// <summary>
/// Where the Node service finds the NBD server exporting the volumes: a unix socket on this machine, or a
/// TCP address, always with TLS, since disk contents cross the network.
/// </summary>
public sealed record NbdEndpoint
{
    private NbdEndpoint(string? socketPath, string? host, int port, NbdClientTls? tls)
    {
        SocketPath = socketPath;
        Host = host;
        Port = port;
        Tls = tls;
    }

    /// <summary>The unix socket, or null for TCP.</summary>
    public string? SocketPath { get; }

    /// <summary>The host name or IP address for TCP, or null for a unix socket.</summary>
    public string? Host { get; }

    /// <summary>The TCP port (0 for a unix socket).</summary>
    public int Port { get; }

    /// <summary>The TLS client settings; set exactly for TCP.</summary>
    public NbdClientTls? Tls { get; }

    /// <summary>An NBD server on a unix socket.</summary>
    public static NbdEndpoint Unix(string socketPath)
    {
        ArgumentException.ThrowIfNullOrEmpty(socketPath);
        return new NbdEndpoint(Path.GetFullPath(socketPath), null, 0, null);
    }

    /// <summary>An NBD server on TCP, reached with STARTTLS.</summary>
    public static NbdEndpoint Tcp(string host, int port, NbdClientTls tls)
    {
        ArgumentException.ThrowIfNullOrEmpty(host);
        ArgumentOutOfRangeException.ThrowIfLessThan(port, 1);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(port, 65535);
        ArgumentNullException.ThrowIfNull(tls);
        ArgumentException.ThrowIfNullOrEmpty(tls.CaFile);
        if ((tls.CertificateFile is null) != (tls.KeyFile is null))
        {
            throw new ArgumentException("a client certificate needs its key and a key needs its certificate", nameof(tls));
        }

        return new NbdEndpoint(null, host, port, tls);
    }

    /// <summary>
    /// Parses <c>unix:PATH</c> or <c>HOST:PORT</c> (an IPv6 address in brackets: <c>[::1]:10809</c>);
    /// TCP needs <paramref name="tls"/>. Returns the endpoint, or null with the problem in <paramref name="error"/>.
    /// </summary>
    public static NbdEndpoint? Parse(string text, NbdClientTls? tls, out string? error)
    {
        error = null;
        if (string.IsNullOrWhiteSpace(text))
        {
            error = "the NBD address is empty: give unix:PATH or HOST:PORT";
            return null;
        }

        if (text.StartsWith("unix:", StringComparison.Ordinal))
        {
            string path = text["unix:".Length..];
            if (path.Length == 0)
            {
                error = $"'{text}' names no socket: give unix:PATH";
                return null;
            }

            if (tls is not null)
            {
                error = "TLS settings apply to a TCP address only; a unix socket is reached without them";
                return null;
            }

            return Unix(path);
        }

        int colon = text.LastIndexOf(':');
        string host = colon > 0 ? text[..colon] : string.Empty;
        if (host.StartsWith('[') && host.EndsWith(']'))
        {
            host = host[1..^1];
        }

        if (colon <= 0 || host.Length == 0 || (host.Contains(':', StringComparison.Ordinal) && !text.StartsWith('[')) || host.Contains('/', StringComparison.Ordinal)
            || !int.TryParse(text.AsSpan(colon + 1), NumberStyles.None, CultureInfo.InvariantCulture, out int port) || port is < 1 or > 65535)
        {
            error = $"'{text}' is not an NBD address: give unix:PATH or HOST:PORT (port 1-65535, an IPv6 address in brackets)";
            return null;
        }

        if (tls is null)
        {
            error = $"NBD over TCP ({text}) needs TLS: give the CA certificate that issued the server's certificate";
            return null;
        }

        if ((tls.CertificateFile is null) != (tls.KeyFile is null))
        {
            error = "a client certificate needs its key and a key needs its certificate: give both or neither";
            return null;
        }

        return Tcp(host, port, tls);
    }

    /// <summary>How the endpoint is shown in messages: <c>unix:PATH</c> or <c>nbds://HOST:PORT</c>.</summary>
    public override string ToString() => SocketPath is not null ? "unix:" + SocketPath : $"nbds://{HostForUri}:{Port}";

    /// <summary>
    /// Reads the TLS files now (so a rotated secret applies to the next connection) into the options of
    /// <see cref="NbdTlsClient"/>. Throws <see cref="NbdClientException"/> naming the file that cannot be used.
    /// </summary>
    public NbdTlsClientOptions LoadTlsOptions()
    {
        if (Host is null || Tls is null)
        {
            throw new InvalidOperationException($"{this} is a unix socket: no TLS");
        }

        X509Certificate2 ca;
        try
        {
            ca = X509CertificateLoader.LoadCertificateFromFile(Tls.CaFile);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or CryptographicException)
        {
            throw new NbdClientException($"cannot read the NBD server's CA certificate {Tls.CaFile}: {e.Message}", e);
        }

        X509Certificate2? client = null;
        if (Tls.CertificateFile is not null && Tls.KeyFile is not null)
        {
            try
            {
                client = X509Certificate2.CreateFromPemFile(Tls.CertificateFile, Tls.KeyFile);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException or CryptographicException or ArgumentException)
            {
                ca.Dispose();
                throw new NbdClientException($"cannot load the node's client certificate {Tls.CertificateFile} with key {Tls.KeyFile}: {e.Message}", e);
            }
        }

        return new NbdTlsClientOptions(Host, Port, ca, client);
    }

    private string HostForUri => Host is not null && Host.Contains(':', StringComparison.Ordinal) ? $"[{Host}]" : Host ?? string.Empty;
}
