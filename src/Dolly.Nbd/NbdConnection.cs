using System.Buffers.Binary;
using System.Net.Security;
using System.Net.Sockets;
using System.Security.Authentication;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using Dolly.Storage;
using Microsoft.Extensions.Logging;

namespace Dolly.Nbd;

/// <summary>Thrown when a client breaks the protocol; the connection is closed, nobody else is affected.</summary>
internal sealed class NbdProtocolException(string message) : Exception(message);

/// <summary>One client: option haggling (this file), then transmission (NbdConnection.Transmission.cs).</summary>
internal sealed partial class NbdConnection : IAsyncDisposable
{
    private readonly long _id;
    private readonly Socket _socket;
    private readonly bool _isTcp;
    private readonly ExportCatalog _catalog;
    private readonly NbdServerOptions _options;
    private readonly ILogger _logger;
    private readonly NbdBufferPool _pool;
    private readonly TimeProvider _time;
    private readonly CancellationTokenSource _abort = new();
    private Stream _stream;
    private Stream _in;
    private bool _tls;
    private bool _structured;
    private bool _noZeroes;
    private readonly List<MetaContext> _contexts = [];
    private string? _contextsExport;

    /// <summary>A selected metadata context: base:allocation (Base null) or a delta against a snapshot.</summary>
    private sealed record MetaContext(uint Id, string Name, string? Base);

    public NbdConnection(long id, Socket socket, bool isTcp, ExportCatalog catalog, NbdServerOptions options, NbdBufferPool pool, TimeProvider time, ILogger logger)
    {
        _pool = pool;
        _time = time;
        _id = id;
        _socket = socket;
        _isTcp = isTcp;
        _catalog = catalog;
        _options = options;
        _logger = logger;
        _stream = new NetworkStream(socket, ownsSocket: true);
        _in = new BufferedStream(_stream, ReceiveBufferSize);
    }

    /// <summary>
    /// Read-ahead for request headers. Write payloads larger than this bypass it (BufferedStream reads them
    /// straight into their pooled buffer), so it only needs to hold a burst of headers.
    /// </summary>
    private const int ReceiveBufferSize = 64 << 10;

    /// <summary>The connection's id (for the server's table and the log).</summary>
    public long Id => _id;

    private bool TlsRequired => _isTcp && _options.Certificate is not null;

    public void Abort() => _abort.Cancel();

    public async Task RunAsync(CancellationToken stopping)
    {
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(stopping, _abort.Token);
        var ct = linked.Token;
        string reason = "client disconnected";
        try
        {
            BlockDevice? export;
            using (var handshake = CancellationTokenSource.CreateLinkedTokenSource(ct))
            {
                handshake.CancelAfter(_options.HandshakeTimeout);
                try
                {
                    export = await HandshakeAsync(handshake.Token).ConfigureAwait(false);
                }
                catch (OperationCanceledException) when (!ct.IsCancellationRequested)
                {
                    throw new NbdProtocolException($"handshake not finished within {_options.HandshakeTimeout.TotalSeconds:0} s");
                }
            }

            if (export is not null)
            {
                string remote = _isTcp ? _socket.RemoteEndPoint?.ToString() ?? "tcp" : "unix socket";
                NbdLog.Serving(_logger, _id, remote, export.Name, export.IsReadOnly ? "read-only" : "read-write");
                reason = await TransmitAsync(export, ct).ConfigureAwait(false);
            }
            else
            {
                reason = "client ended the handshake";
            }
        }
        catch (NbdProtocolException ex)
        {
            reason = ex.Message;
            NbdLog.ProtocolError(_logger, _id, ex.Message);
        }
        catch (Exception ex) when (ex is IOException or SocketException or ObjectDisposedException or OperationCanceledException or AuthenticationException)
        {
            reason = ex.Message;
        }
        catch (Exception ex)
        {
            reason = "internal error";
            NbdLog.Unexpected(_logger, _id, ex);
        }

        NbdLog.Closed(_logger, _id, reason);
    }

    public async ValueTask DisposeAsync()
    {
        try
        {
            await _stream.DisposeAsync().ConfigureAwait(false);
        }
        catch (IOException)
        {
            // Closing a connection the peer already broke.
        }

        // _abort is deliberately not disposed: NbdServer.DisposeAsync calls Abort on every connection it still
        // lists while connections end on their own, so Abort can race with this method, and Cancel on a
        // disposed source throws. A source with no timer holds nothing that needs disposing.
    }

    // Returned as it is, not awaited in an async method of its own: one state machine less per request.
    private ValueTask ReadExactAsync(Memory<byte> buffer, CancellationToken ct) => _in.ReadExactlyAsync(buffer, ct);

    /// <summary>Runs option haggling; returns the export to serve, or null when the client aborted.</summary>
    private async Task<BlockDevice?> HandshakeAsync(CancellationToken ct)
    {
        var greeting = new byte[18];
        BinaryPrimitives.WriteUInt64BigEndian(greeting, Nbd.NbdMagic);
        BinaryPrimitives.WriteUInt64BigEndian(greeting.AsSpan(8), Nbd.IHaveOpt);
        BinaryPrimitives.WriteUInt16BigEndian(greeting.AsSpan(16), Nbd.FlagFixedNewstyle | Nbd.FlagNoZeroes);
        await _stream.WriteAsync(greeting, ct).ConfigureAwait(false);

        var flagsBuf = new byte[4];
        await ReadExactAsync(flagsBuf, ct).ConfigureAwait(false);
        uint clientFlags = BinaryPrimitives.ReadUInt32BigEndian(flagsBuf);
        if ((clientFlags & ~(Nbd.ClientFlagFixedNewstyle | Nbd.ClientFlagNoZeroes)) != 0)
        {
            throw new NbdProtocolException($"unknown client flags 0x{clientFlags:x}");
        }

        bool fixedNewstyle = (clientFlags & Nbd.ClientFlagFixedNewstyle) != 0;
        _noZeroes = (clientFlags & Nbd.ClientFlagNoZeroes) != 0;

        var header = new byte[16];
        while (true)
        {
            await ReadExactAsync(header, ct).ConfigureAwait(false);
            if (BinaryPrimitives.ReadUInt64BigEndian(header) != Nbd.IHaveOpt)
            {
                throw new NbdProtocolException("option without the IHAVEOPT magic");
            }

            uint option = BinaryPrimitives.ReadUInt32BigEndian(header.AsSpan(8));
            uint length = BinaryPrimitives.ReadUInt32BigEndian(header.AsSpan(12));
            if (length > _options.MaxOptionLength && option == Nbd.OptExportName)
            {
                // NBD_OPT_EXPORT_NAME has no reply in the protocol, not even an error: the client reads export
                // data next, so the only answer to a name too long to hold is to close.
                throw new NbdProtocolException($"NBD_OPT_EXPORT_NAME with {length} bytes of data (limit {_options.MaxOptionLength})");
            }

            if (length > _options.MaxOptionLength)
            {
                // The data cannot be skipped safely without reading it all; a client sending this is broken.
                if (fixedNewstyle && length <= 16u << 20)
                {
                    await SkipAsync(length, ct).ConfigureAwait(false);
                    await ReplyAsync(option, Nbd.RepErrTooBig, $"option data of {length} bytes exceeds the limit of {_options.MaxOptionLength}", ct).ConfigureAwait(false);
                    continue;
                }

                throw new NbdProtocolException($"option {option} with {length} bytes of data");
            }

            var data = new byte[length];
            await ReadExactAsync(data, ct).ConfigureAwait(false);

            if (!fixedNewstyle && option != Nbd.OptExportName)
            {
                throw new NbdProtocolException($"option {option} from a client that did not negotiate fixed newstyle");
            }

            if (TlsRequired && !_tls && option is not (Nbd.OptStartTls or Nbd.OptAbort))
            {
                if (option == Nbd.OptExportName)
                {
                    throw new NbdProtocolException("NBD_OPT_EXPORT_NAME before STARTTLS on a listener that requires TLS");
                }

                await ReplyAsync(option, Nbd.RepErrTlsReqd, "this server requires TLS: send NBD_OPT_STARTTLS first", ct).ConfigureAwait(false);
                continue;
            }

            switch (option)
            {
                case Nbd.OptExportName:
                    return await ExportNameAsync(data, ct).ConfigureAwait(false);
                case Nbd.OptAbort:
                    if (length == 0)
                    {
                        await ReplyAsync(option, Nbd.RepAck, ReadOnlyMemory<byte>.Empty, ct).ConfigureAwait(false);
                    }

                    return null;
                case Nbd.OptList:
                    await ListAsync(length, ct).ConfigureAwait(false);
                    break;
                case Nbd.OptStartTls:
                    await StartTlsAsync(length, ct).ConfigureAwait(false);
                    break;
                case Nbd.OptInfo:
                case Nbd.OptGo:
                    var export = await InfoOrGoAsync(option, data, ct).ConfigureAwait(false);
                    if (export is not null)
                    {
                        return export;
                    }

                    break;
                case Nbd.OptStructuredReply:
                    if (length != 0)
                    {
                        await ReplyAsync(option, Nbd.RepErrInvalid, "NBD_OPT_STRUCTURED_REPLY takes no data", ct).ConfigureAwait(false);
                        break;
                    }

                    _structured = true;
                    await ReplyAsync(option, Nbd.RepAck, ReadOnlyMemory<byte>.Empty, ct).ConfigureAwait(false);
                    break;
                case Nbd.OptListMetaContext:
                case Nbd.OptSetMetaContext:
                    await MetaContextAsync(option, data, ct).ConfigureAwait(false);
                    break;
                default:
                    await ReplyAsync(option, Nbd.RepErrUnsup, $"option {option} is not supported", ct).ConfigureAwait(false);
                    break;
            }
        }
    }

    private async Task SkipAsync(uint length, CancellationToken ct)
    {
        var scratch = new byte[Math.Min(length, 64u << 10)];
        while (length > 0)
        {
            int n = (int)Math.Min(length, (uint)scratch.Length);
            await ReadExactAsync(scratch.AsMemory(0, n), ct).ConfigureAwait(false);
            length -= (uint)n;
        }
    }

    private async Task<BlockDevice?> ExportNameAsync(byte[] data, CancellationToken ct)
    {
        string name = Encoding.UTF8.GetString(data);
        var export = _catalog.Open(name) ?? throw new NbdProtocolException($"NBD_OPT_EXPORT_NAME for unknown export '{name}'");
        var reply = new byte[_noZeroes ? 10 : 134];
        BinaryPrimitives.WriteUInt64BigEndian(reply, (ulong)export.Size);
        BinaryPrimitives.WriteUInt16BigEndian(reply.AsSpan(8), TransmissionFlags(export));
        await _stream.WriteAsync(reply, ct).ConfigureAwait(false);
        return export;
    }

    private ushort TransmissionFlags(BlockDevice export)
    {
        ushort flags = Nbd.TFlagHasFlags | Nbd.TFlagSendFlush | Nbd.TFlagCanMultiConn | Nbd.TFlagSendCache;
        if (export.IsReadOnly)
        {
            flags |= Nbd.TFlagReadOnly;
        }
        else
        {
            flags |= Nbd.TFlagSendFua | Nbd.TFlagSendTrim | Nbd.TFlagSendWriteZeroes | Nbd.TFlagSendFastZero;
        }

        if (_structured)
        {
            flags |= Nbd.TFlagSendDf;
        }

        return flags;
    }

    private async Task ListAsync(uint length, CancellationToken ct)
    {
        if (length != 0)
        {
            await ReplyAsync(Nbd.OptList, Nbd.RepErrInvalid, "NBD_OPT_LIST takes no data", ct).ConfigureAwait(false);
            return;
        }

        foreach (var (name, description) in _catalog.List())
        {
            var n = Encoding.UTF8.GetBytes(name);
            var d = Encoding.UTF8.GetBytes(description);
            var payload = new byte[4 + n.Length + d.Length];
            BinaryPrimitives.WriteUInt32BigEndian(payload, (uint)n.Length);
            n.CopyTo(payload, 4);
            d.CopyTo(payload, 4 + n.Length);
            await ReplyAsync(Nbd.OptList, Nbd.RepServer, payload, ct).ConfigureAwait(false);
        }

        await ReplyAsync(Nbd.OptList, Nbd.RepAck, ReadOnlyMemory<byte>.Empty, ct).ConfigureAwait(false);
    }

    private async Task StartTlsAsync(uint length, CancellationToken ct)
    {
        if (length != 0)
        {
            await ReplyAsync(Nbd.OptStartTls, Nbd.RepErrInvalid, "NBD_OPT_STARTTLS takes no data", ct).ConfigureAwait(false);
            return;
        }

        if (_options.Certificate is null)
        {
            await ReplyAsync(Nbd.OptStartTls, Nbd.RepErrPolicy, "TLS is not configured on this server", ct).ConfigureAwait(false);
            return;
        }

        if (_tls)
        {
            await ReplyAsync(Nbd.OptStartTls, Nbd.RepErrInvalid, "TLS is already active", ct).ConfigureAwait(false);
            return;
        }

        await ReplyAsync(Nbd.OptStartTls, Nbd.RepAck, ReadOnlyMemory<byte>.Empty, ct).ConfigureAwait(false);
        var ca = _options.ClientCertificateAuthority;
        var ssl = new SslStream(_stream, leaveInnerStreamOpen: false, ca is null ? null : (_, cert, _, _) => VerifyClient(cert, ca));
        await ssl.AuthenticateAsServerAsync(
            new SslServerAuthenticationOptions
            {
                ServerCertificate = _options.Certificate,
                ClientCertificateRequired = ca is not null,
                EnabledSslProtocols = SslProtocols.Tls12 | SslProtocols.Tls13,
            },
            ct).ConfigureAwait(false);
        _stream = ssl;
        _in = new BufferedStream(ssl, ReceiveBufferSize);
        _tls = true;

        // Anything negotiated in clear text is void after STARTTLS.
        _structured = false;
        _contexts.Clear();
        _contextsExport = null;
    }

    private static bool VerifyClient(X509Certificate? certificate, X509Certificate2 ca)
    {
        if (certificate is null)
        {
            return false;
        }

        using var chain = new X509Chain();
        chain.ChainPolicy.TrustMode = X509ChainTrustMode.CustomRootTrust;
        chain.ChainPolicy.CustomTrustStore.Add(ca);
        chain.ChainPolicy.RevocationMode = X509RevocationMode.NoCheck;
        using var cert = new X509Certificate2(certificate);
        return chain.Build(cert);
    }

    private async Task<BlockDevice?> InfoOrGoAsync(uint option, byte[] data, CancellationToken ct)
    {
        if (data.Length < 6)
        {
            await ReplyAsync(option, Nbd.RepErrInvalid, "option data too short", ct).ConfigureAwait(false);
            return null;
        }

        uint nameLength = BinaryPrimitives.ReadUInt32BigEndian(data);
        if (nameLength > data.Length - 6)
        {
            await ReplyAsync(option, Nbd.RepErrInvalid, "export name length exceeds the option data", ct).ConfigureAwait(false);
            return null;
        }

        string name = Encoding.UTF8.GetString(data, 4, (int)nameLength);
        int pos = 4 + (int)nameLength;
        int requests = BinaryPrimitives.ReadUInt16BigEndian(data.AsSpan(pos));
        if (data.Length != pos + 2 + (requests * 2))
        {
            await ReplyAsync(option, Nbd.RepErrInvalid, "information request count does not match the option data", ct).ConfigureAwait(false);
            return null;
        }

        var export = _catalog.Open(name);
        if (export is null)
        {
            await ReplyAsync(option, Nbd.RepErrUnknown, $"no volume or snapshot named '{name}'", ct).ConfigureAwait(false);
            return null;
        }

        var wanted = new HashSet<ushort>();
        for (int i = 0; i < requests; i++)
        {
            wanted.Add(BinaryPrimitives.ReadUInt16BigEndian(data.AsSpan(pos + 2 + (i * 2))));
        }

        var info = new byte[12];
        BinaryPrimitives.WriteUInt16BigEndian(info, Nbd.InfoExport);
        BinaryPrimitives.WriteUInt64BigEndian(info.AsSpan(2), (ulong)export.Size);
        BinaryPrimitives.WriteUInt16BigEndian(info.AsSpan(10), TransmissionFlags(export));
        await ReplyAsync(option, Nbd.RepInfo, info, ct).ConfigureAwait(false);

        if (wanted.Contains(Nbd.InfoName))
        {
            await ReplyAsync(option, Nbd.RepInfo, InfoString(Nbd.InfoName, export.Name), ct).ConfigureAwait(false);
        }

        if (wanted.Contains(Nbd.InfoDescription))
        {
            await ReplyAsync(option, Nbd.RepInfo, InfoString(Nbd.InfoDescription, _catalog.Describe(export.Name)), ct).ConfigureAwait(false);
        }

        // Block sizes are always sent: 1 byte minimum (any alignment works), 4 KiB preferred (the checksum
        // sector: smaller or unaligned writes cost a read-modify-write), the payload limit as maximum.
        var sizes = new byte[14];
        BinaryPrimitives.WriteUInt16BigEndian(sizes, Nbd.InfoBlockSize);
        BinaryPrimitives.WriteUInt32BigEndian(sizes.AsSpan(2), 1);
        BinaryPrimitives.WriteUInt32BigEndian(sizes.AsSpan(6), 4096);
        BinaryPrimitives.WriteUInt32BigEndian(sizes.AsSpan(10), (uint)_options.MaxPayload);
        await ReplyAsync(option, Nbd.RepInfo, sizes, ct).ConfigureAwait(false);

        await ReplyAsync(option, Nbd.RepAck, ReadOnlyMemory<byte>.Empty, ct).ConfigureAwait(false);
        if (option == Nbd.OptInfo)
        {
            return null;
        }

        if (_contextsExport is not null && _contextsExport != name)
        {
            // Contexts were negotiated for another export; they do not carry over.
            _contexts.Clear();
        }

        return export;
    }

    private static byte[] InfoString(ushort type, string text)
    {
        var bytes = Encoding.UTF8.GetBytes(text);
        var payload = new byte[2 + bytes.Length];
        BinaryPrimitives.WriteUInt16BigEndian(payload, type);
        bytes.CopyTo(payload, 2);
        return payload;
    }

    private async Task MetaContextAsync(uint option, byte[] data, CancellationToken ct)
    {
        bool set = option == Nbd.OptSetMetaContext;
        if (set && !_structured)
        {
            await ReplyAsync(option, Nbd.RepErrInvalid, "negotiate NBD_OPT_STRUCTURED_REPLY before NBD_OPT_SET_META_CONTEXT", ct).ConfigureAwait(false);
            return;
        }

        if (!TryParseContextQueries(data, out var exportName, out var queries))
        {
            await ReplyAsync(option, Nbd.RepErrInvalid, "malformed meta context request", ct).ConfigureAwait(false);
            return;
        }

        if (_catalog.Open(exportName) is null)
        {
            await ReplyAsync(option, Nbd.RepErrUnknown, $"no volume or snapshot named '{exportName}'", ct).ConfigureAwait(false);
            return;
        }

        var available = new List<(string Name, string? Base)> { (Nbd.BaseAllocation, null) };
        available.AddRange(_catalog.DeltaBases(exportName).Select(b => (Nbd.DeltaPrefix + b, (string?)b)));

        var matched = new List<(string Name, string? Base)>();
        if (queries.Count == 0)
        {
            if (!set)
            {
                matched.AddRange(available);
            }
        }
        else
        {
            foreach (var q in queries)
            {
                foreach (var a in available)
                {
                    bool hit = q == a.Name
                        || (!set && q.EndsWith(':') && a.Name.StartsWith(q, StringComparison.Ordinal))
                        || (!set && q == "dolly:delta:" && a.Base is not null);
                    if (hit && !matched.Contains(a))
                    {
                        matched.Add(a);
                    }
                }
            }
        }

        if (set)
        {
            _contexts.Clear();
            _contextsExport = exportName;
        }

        for (int i = 0; i < matched.Count; i++)
        {
            uint id = (uint)(i + 1);
            if (set)
            {
                _contexts.Add(new MetaContext(id, matched[i].Name, matched[i].Base));
            }

            var name = Encoding.UTF8.GetBytes(matched[i].Name);
            var payload = new byte[4 + name.Length];
            BinaryPrimitives.WriteUInt32BigEndian(payload, set ? id : 0);
            name.CopyTo(payload, 4);
            await ReplyAsync(option, Nbd.RepMetaContext, payload, ct).ConfigureAwait(false);
        }

        await ReplyAsync(option, Nbd.RepAck, ReadOnlyMemory<byte>.Empty, ct).ConfigureAwait(false);
    }

    private static bool TryParseContextQueries(byte[] data, out string exportName, out List<string> queries)
    {
        exportName = string.Empty;
        queries = [];
        if (data.Length < 8)
        {
            return false;
        }

        uint nameLength = BinaryPrimitives.ReadUInt32BigEndian(data);
        if (nameLength > data.Length - 8)
        {
            return false;
        }

        exportName = Encoding.UTF8.GetString(data, 4, (int)nameLength);
        int pos = 4 + (int)nameLength;
        uint count = BinaryPrimitives.ReadUInt32BigEndian(data.AsSpan(pos));
        pos += 4;
        for (uint i = 0; i < count; i++)
        {
            if (pos + 4 > data.Length)
            {
                return false;
            }

            uint len = BinaryPrimitives.ReadUInt32BigEndian(data.AsSpan(pos));
            pos += 4;
            if (len > data.Length - pos)
            {
                return false;
            }

            queries.Add(Encoding.UTF8.GetString(data, pos, (int)len));
            pos += (int)len;
        }

        return pos == data.Length;
    }

    private Task ReplyAsync(uint option, uint type, string message, CancellationToken ct) =>
        ReplyAsync(option, type, Encoding.UTF8.GetBytes(message), ct);

    private async Task ReplyAsync(uint option, uint type, ReadOnlyMemory<byte> payload, CancellationToken ct)
    {
        var header = new byte[20 + payload.Length];
        BinaryPrimitives.WriteUInt64BigEndian(header, Nbd.OptReplyMagic);
        BinaryPrimitives.WriteUInt32BigEndian(header.AsSpan(8), option);
        BinaryPrimitives.WriteUInt32BigEndian(header.AsSpan(12), type);
        BinaryPrimitives.WriteUInt32BigEndian(header.AsSpan(16), (uint)payload.Length);
        payload.CopyTo(header.AsMemory(20));
        await _stream.WriteAsync(header, ct).ConfigureAwait(false);
    }
}
