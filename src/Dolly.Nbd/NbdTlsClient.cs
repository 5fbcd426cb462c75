using System.Buffers.Binary;
using System.Net.Security;
using System.Net.Sockets;
using System.Security.Authentication;
using System.Security.Cryptography.X509Certificates;
using System.Text;

namespace Dolly.Nbd;

/// <summary>Where an NBD client connects over TCP, and the certificates of its TLS session.</summary>
/// <param name="Host">Host name or IP address; the server's certificate must name it.</param>
/// <param name="Port">TCP port.</param>
/// <param name="CertificateAuthority">The CA the server's certificate must chain to (the only trusted root).</param>
/// <param name="ClientCertificate">This client's certificate with its private key, or null.</param>
public sealed record NbdTlsClientOptions(string Host, int Port, X509Certificate2 CertificateAuthority, X509Certificate2? ClientCertificate) : IDisposable
{
    /// <summary>Disposes both certificates.</summary>
    public void Dispose()
    {
        CertificateAuthority.Dispose();
        ClientCertificate?.Dispose();
    }

    /// <summary>Time allowed to connect, negotiate STARTTLS and finish the TLS handshake.</summary>
    public TimeSpan Timeout { get; init; } = TimeSpan.FromSeconds(20);

    /// <summary>How the server is named in messages.</summary>
    public string Address => Host.Contains(':', StringComparison.Ordinal) ? $"[{Host}]:{Port}" : $"{Host}:{Port}";
}

/// <summary>An NBD connection could not be made or did not behave; the message says why, for an operator.</summary>
public sealed class NbdClientException : Exception
{
    /// <summary>Creates the exception.</summary>
    public NbdClientException(string message, Exception? inner = null)
        : base(message, inner)
    {
    }

    /// <summary>Creates the exception.</summary>
    public NbdClientException()
    {
    }

    /// <summary>Creates the exception.</summary>
    public NbdClientException(string message)
        : base(message)
    {
    }
}

/// <summary>
/// The client side of the fixed-newstyle handshake up to and including STARTTLS, with the server's
/// certificate verified against one CA and the host name. What follows (options, transmission) is the
/// caller's: a local client relayed by <see cref="StartAsync"/>'s caller, or <see cref="GetExportSizeAsync"/>.
/// </summary>
public static class NbdTlsClient
{
    /// <summary>
    /// Connects, reads the server's greeting, gives its handshake flags to <paramref name="clientFlags"/>
    /// (which returns the client flags to send: a relay asks its own client), negotiates STARTTLS and
    /// authenticates. Returns the TLS stream, positioned where the client's first option goes.
    /// Throws <see cref="NbdClientException"/> naming the server and what failed.
    /// </summary>
    public static async Task<SslStream> StartAsync(NbdTlsClientOptions options, Func<ushort, CancellationToken, ValueTask<uint>> clientFlags, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(clientFlags);
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        timeout.CancelAfter(options.Timeout);
        var ct = timeout.Token;

        var socket = new Socket(SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        Stream? owned = null;
        bool handedOver = false;
        string? certificateProblem = null;
        try
        {
            try
            {
                await socket.ConnectAsync(options.Host, options.Port, ct).ConfigureAwait(false);
            }
            catch (SocketException e)
            {
                throw new NbdClientException($"cannot connect to the NBD server at {options.Address}: {e.Message}", e);
            }

            var stream = new NetworkStream(socket, ownsSocket: true);
            owned = stream;
            var greeting = new byte[18];
            await ReadExactlyAsync(stream, greeting, options, "its greeting", ct).ConfigureAwait(false);
            if (BinaryPrimitives.ReadUInt64BigEndian(greeting) != Nbd.NbdMagic || BinaryPrimitives.ReadUInt64BigEndian(greeting.AsSpan(8)) != Nbd.IHaveOpt)
            {
                throw new NbdClientException($"{options.Address} is not a newstyle NBD server (unexpected greeting)");
            }

            ushort serverFlags = BinaryPrimitives.ReadUInt16BigEndian(greeting.AsSpan(16));
            if ((serverFlags & Nbd.FlagFixedNewstyle) == 0)
            {
                throw new NbdClientException($"the NBD server at {options.Address} does not speak fixed newstyle, so it cannot do STARTTLS");
            }

            uint flags = await clientFlags(serverFlags, ct).ConfigureAwait(false);
            var buffer = new byte[20];
            BinaryPrimitives.WriteUInt32BigEndian(buffer, flags);
            await stream.WriteAsync(buffer.AsMemory(0, 4), ct).ConfigureAwait(false);

            var reply = await OptionAsync(stream, Nbd.OptStartTls, ReadOnlyMemory<byte>.Empty, options, ct).ConfigureAwait(false);
            if (reply.Type != Nbd.RepAck)
            {
                throw new NbdClientException($"the NBD server at {options.Address} refused STARTTLS ({ReplyName(reply.Type)}{Detail(reply.Data)}): it is not configured with a TLS certificate");
            }

            var ssl = new SslStream(stream, leaveInnerStreamOpen: false, (_, certificate, _, errors) =>
            {
                certificateProblem = VerifyServer(certificate, errors, options);
                return certificateProblem is null;
            });
            owned = ssl;
            try
            {
                await ssl.AuthenticateAsClientAsync(
                    new SslClientAuthenticationOptions
                    {
                        TargetHost = options.Host,
                        ClientCertificates = options.ClientCertificate is null ? null : [options.ClientCertificate],
                        EnabledSslProtocols = SslProtocols.Tls12 | SslProtocols.Tls13,
                        CertificateRevocationCheckMode = X509RevocationMode.NoCheck,
                    },
                    ct).ConfigureAwait(false);
            }
            catch (Exception e) when (e is AuthenticationException or IOException)
            {
                throw new NbdClientException($"TLS with the NBD server at {options.Address} failed: {certificateProblem ?? e.Message}", e);
            }

            handedOver = true;
            return ssl;
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            throw new NbdClientException($"the NBD server at {options.Address} did not complete the TLS handshake within {options.Timeout.TotalSeconds:0} s");
        }
        finally
        {
            if (!handedOver)
            {
                if (owned is not null)
                {
                    await owned.DisposeAsync().ConfigureAwait(false);
                }

                socket.Dispose();
            }
        }
    }

    /// <summary>The server greeting (NBDMAGIC, IHAVEOPT, handshake flags) that a relay replays to its own client.</summary>
    public static byte[] Greeting(ushort handshakeFlags)
    {
        var greeting = new byte[18];
        BinaryPrimitives.WriteUInt64BigEndian(greeting, Nbd.NbdMagic);
        BinaryPrimitives.WriteUInt64BigEndian(greeting.AsSpan(8), Nbd.IHaveOpt);
        BinaryPrimitives.WriteUInt16BigEndian(greeting.AsSpan(16), handshakeFlags);
        return greeting;
    }

    /// <summary>
    /// The size of <paramref name="export"/> (NBD_OPT_INFO over TLS), or null when the server has no such
    /// export. Throws <see cref="NbdClientException"/> when the server cannot be reached or asked.
    /// </summary>
    public static async Task<long?> GetExportSizeAsync(NbdTlsClientOptions options, string export, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(export);
        var ssl = await StartAsync(options, (_, _) => ValueTask.FromResult(Nbd.ClientFlagFixedNewstyle | Nbd.ClientFlagNoZeroes), cancellationToken).ConfigureAwait(false);
        await using (ssl.ConfigureAwait(false))
        {
            using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            timeout.CancelAfter(options.Timeout);
            var ct = timeout.Token;

            // u32 name length, name, u16 number of info requests (0: NBD_INFO_EXPORT is always sent).
            byte[] name = Encoding.UTF8.GetBytes(export);
            var data = new byte[4 + name.Length + 2];
            BinaryPrimitives.WriteUInt32BigEndian(data, (uint)name.Length);
            name.CopyTo(data, 4);
            long? size = null;
            try
            {
                var reply = await OptionAsync(ssl, Nbd.OptInfo, data, options, ct).ConfigureAwait(false);
                while (reply.Type == Nbd.RepInfo)
                {
                    if (reply.Data.Length >= 12 && BinaryPrimitives.ReadUInt16BigEndian(reply.Data) == Nbd.InfoExport)
                    {
                        size = (long)BinaryPrimitives.ReadUInt64BigEndian(reply.Data.AsSpan(2));
                    }

                    reply = await ReadReplyAsync(ssl, Nbd.OptInfo, options, ct).ConfigureAwait(false);
                }

                if (reply.Type == Nbd.RepErrUnknown)
                {
                    return null;
                }

                if (reply.Type != Nbd.RepAck || size is null)
                {
                    throw new NbdClientException($"the NBD server at {options.Address} answered NBD_OPT_INFO for '{export}' with {ReplyName(reply.Type)}{Detail(reply.Data)}");
                }

                await SendOptionAsync(ssl, Nbd.OptAbort, ReadOnlyMemory<byte>.Empty, ct).ConfigureAwait(false);
                return size;
            }
            catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
            {
                throw new NbdClientException($"the NBD server at {options.Address} did not answer within {options.Timeout.TotalSeconds:0} s");
            }
        }
    }

    private readonly record struct OptionReply(uint Type, byte[] Data);

    private static async Task<OptionReply> OptionAsync(Stream stream, uint option, ReadOnlyMemory<byte> data, NbdTlsClientOptions options, CancellationToken ct)
    {
        await SendOptionAsync(stream, option, data, ct).ConfigureAwait(false);
        return await ReadReplyAsync(stream, option, options, ct).ConfigureAwait(false);
    }

    private static async Task SendOptionAsync(Stream stream, uint option, ReadOnlyMemory<byte> data, CancellationToken ct)
    {
        var header = new byte[16 + data.Length];
        BinaryPrimitives.WriteUInt64BigEndian(header, Nbd.IHaveOpt);
        BinaryPrimitives.WriteUInt32BigEndian(header.AsSpan(8), option);
        BinaryPrimitives.WriteUInt32BigEndian(header.AsSpan(12), (uint)data.Length);
        data.CopyTo(header.AsMemory(16));
        await stream.WriteAsync(header, ct).ConfigureAwait(false);
        await stream.FlushAsync(ct).ConfigureAwait(false);
    }

    private static async Task<OptionReply> ReadReplyAsync(Stream stream, uint option, NbdTlsClientOptions options, CancellationToken ct)
    {
        var header = new byte[20];
        await ReadExactlyAsync(stream, header, options, "an option reply", ct).ConfigureAwait(false);
        uint length = BinaryPrimitives.ReadUInt32BigEndian(header.AsSpan(16));
        if (BinaryPrimitives.ReadUInt64BigEndian(header) != Nbd.OptReplyMagic || BinaryPrimitives.ReadUInt32BigEndian(header.AsSpan(8)) != option || length > 64 << 10)
        {
            throw new NbdClientException($"the NBD server at {options.Address} sent a malformed option reply");
        }

        var data = new byte[length];
        await ReadExactlyAsync(stream, data, options, "an option reply", ct).ConfigureAwait(false);
        return new OptionReply(BinaryPrimitives.ReadUInt32BigEndian(header.AsSpan(12)), data);
    }

    private static async Task ReadExactlyAsync(Stream stream, byte[] buffer, NbdTlsClientOptions options, string what, CancellationToken ct)
    {
        try
        {
            await stream.ReadExactlyAsync(buffer, ct).ConfigureAwait(false);
        }
        catch (EndOfStreamException e)
        {
            // After a TLS 1.3 handshake the server's verdict on the client certificate arrives as this close.
            throw new NbdClientException($"the NBD server at {options.Address} closed the connection instead of sending {what}{(stream is SslStream ? " (does it require a client certificate this node lacks, or one from another CA?)" : string.Empty)}", e);
        }
        catch (IOException e)
        {
            throw new NbdClientException($"the connection to the NBD server at {options.Address} failed while reading {what}: {e.Message}", e);
        }
    }

    /// <summary>Null when the certificate chains to the configured CA and names the host; otherwise why not.</summary>
    private static string? VerifyServer(X509Certificate? certificate, SslPolicyErrors errors, NbdTlsClientOptions options)
    {
        if (certificate is null)
        {
            return "the server sent no certificate";
        }

        using var chain = new X509Chain();
        chain.ChainPolicy.TrustMode = X509ChainTrustMode.CustomRootTrust;
        chain.ChainPolicy.CustomTrustStore.Add(options.CertificateAuthority);
        chain.ChainPolicy.RevocationMode = X509RevocationMode.NoCheck;
        using var server = new X509Certificate2(certificate);
        if (!chain.Build(server))
        {
            string status = string.Join(", ", chain.ChainStatus.Select(s => s.Status.ToString()).Distinct());
            return $"its certificate ({server.Subject}, issued by {server.Issuer}) does not chain to the configured CA ({options.CertificateAuthority.Subject}): {status}";
        }

        // The chain is judged above; the host name is the platform's check.
        if ((errors & SslPolicyErrors.RemoteCertificateNameMismatch) != 0)
        {
            return $"its certificate ({server.Subject}) does not name '{options.Host}' among its subject alternative names";
        }

        return null;
    }

    private static string ReplyName(uint type) => type switch
    {
        Nbd.RepAck => "ACK",
        Nbd.RepErrUnsup => "NBD_REP_ERR_UNSUP",
        Nbd.RepErrPolicy => "NBD_REP_ERR_POLICY",
        Nbd.RepErrInvalid => "NBD_REP_ERR_INVALID",
        Nbd.RepErrPlatform => "NBD_REP_ERR_PLATFORM",
        Nbd.RepErrTlsReqd => "NBD_REP_ERR_TLS_REQD",
        Nbd.RepErrUnknown => "NBD_REP_ERR_UNKNOWN",
        Nbd.RepErrShutdown => "NBD_REP_ERR_SHUTDOWN",
        _ => $"reply 0x{type:x8}",
    };

    private static string Detail(byte[] data) => data.Length == 0 ? string.Empty : ": " + Encoding.UTF8.GetString(data);
}
