using System.Net;
using System.Security.Cryptography.X509Certificates;
using Dolly.Storage;

namespace Dolly.Nbd;

/// <summary>Where and how the NBD server listens, and the limits it enforces.</summary>
public sealed record NbdServerOptions
{
    /// <summary>Unix socket path (created with mode 0600), or null for none.</summary>
    public string? UnixSocketPath { get; init; }

    /// <summary>TCP endpoints. Addresses other than loopback require <see cref="Certificate"/>.</summary>
    public IReadOnlyList<IPEndPoint> TcpEndpoints { get; init; } = [];

    /// <summary>Server certificate with private key for STARTTLS; when set, TCP clients must use TLS.</summary>
    public X509Certificate2? Certificate { get; init; }

    /// <summary>When set, clients must present a certificate issued by this CA.</summary>
    public X509Certificate2? ClientCertificateAuthority { get; init; }

    /// <summary>Connections served at once; more are closed at accept.</summary>
    public int MaxConnections { get; init; } = 64;

    /// <summary>The largest READ or WRITE payload accepted (32 MiB, the protocol's customary maximum).</summary>
    public int MaxPayload { get; init; } = 32 << 20;

    /// <summary>Bytes of request and reply payload one connection may have in flight.</summary>
    public long MaxInFlightBytesPerConnection { get; init; } = 64L << 20;

    /// <summary>
    /// Bytes of payload buffers the whole server may hold at once, rented or kept for reuse (the server-wide
    /// memory budget), counted at the size really allocated (the buffer's power-of-two class). 1 MiB of it is
    /// set aside per connection (<see cref="MaxConnections"/>) so that every client's ordinary requests are
    /// served whatever the others hold; the rest is shared, first come first served, and a connection whose
    /// next buffer does not fit waits until others give buffers back.
    /// </summary>
    public long MaxBufferBytes { get; init; } = 128L << 20;

    /// <summary>
    /// How long a connection in transmission may sit idle (no request outstanding) before its slot may be
    /// given to a new client when the server is at <see cref="MaxConnections"/>; also how long replies may wait
    /// for a client that does not read them before that connection is closed.
    /// <see cref="Timeout.InfiniteTimeSpan"/> turns both off.
    /// </summary>
    public TimeSpan IdleTimeout { get; init; } = TimeSpan.FromSeconds(60);

    /// <summary>Requests one connection may have in flight.</summary>
    public int MaxInFlightRequestsPerConnection { get; init; } = 64;

    /// <summary>Time a client has to finish option haggling.</summary>
    public TimeSpan HandshakeTimeout { get; init; } = TimeSpan.FromSeconds(30);

    /// <summary>Largest option payload accepted during the handshake.</summary>
    public int MaxOptionLength { get; init; } = 64 << 10;

    /// <summary>Where requests are counted and timed; null records nothing.</summary>
    public NbdMetrics? Metrics { get; init; }

    /// <summary>
    /// Checks the options: at least one listener, and TLS for any TCP address that is not loopback.
    /// Returns the problem, or null.
    /// </summary>
    public string? Validate()
    {
        if (UnixSocketPath is null && TcpEndpoints.Count == 0)
        {
            return "no listener: give a unix socket path or a TCP address";
        }

        foreach (var ep in TcpEndpoints)
        {
            if (!IPAddress.IsLoopback(ep.Address) && Certificate is null)
            {
                return $"refusing to listen on {ep} without TLS: NBD carries disk contents in clear text; give a certificate and key, or listen on 127.0.0.1";
            }
        }

        if (Certificate is not null && !Certificate.HasPrivateKey)
        {
            return "the TLS certificate has no private key";
        }

        if (MaxConnections < 1 || MaxPayload < 4096 || MaxInFlightBytesPerConnection < MaxPayload || MaxInFlightRequestsPerConnection < 1)
        {
            return "limits must be positive, the payload at least 4096 bytes and the in-flight budget at least one payload";
        }

        long needed = (MaxConnections * NbdBufferPool.ReservePerConnection) + NbdBufferPool.ClassSize(MaxPayload);
        if (MaxBufferBytes < needed)
        {
            return $"the server's buffer budget ({ByteSize.Format(MaxBufferBytes)}) must hold a {ByteSize.Format(NbdBufferPool.ReservePerConnection)} reserve per connection ({MaxConnections}) plus one buffer of the largest payload ({ByteSize.Format(NbdBufferPool.ClassSize(MaxPayload))}): at least {ByteSize.Format(needed)}";
        }

        if (IdleTimeout <= TimeSpan.Zero && IdleTimeout != Timeout.InfiniteTimeSpan)
        {
            return "the idle timeout must be positive (or infinite)";
        }

        return null;
    }
}
