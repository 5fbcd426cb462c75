using System.Buffers.Binary;
using System.Net.Sockets;
using Dolly.Nbd;
using Microsoft.Extensions.Logging;

namespace Dolly.Csi;

/// <summary>
/// Lets nbdfuse reach an NBD server that requires TLS. nbdfuse (libnbd 1.14) refuses the
/// <c>tls-certificates</c> URI parameter (local file access is off in nbdfuse) and, running as root, would
/// only read certificates from /etc/pki/libnbd; so the node terminates TLS itself. nbdfuse connects to a
/// private unix socket here; each connection is relayed to the server after this side has negotiated
/// STARTTLS and verified the server against the configured CA. The server's greeting is replayed to the
/// local client and its client flags forwarded, so everything after STARTTLS (options, export selection,
/// transmission) is the local client's own conversation, encrypted end to end to the server.
/// </summary>
internal sealed class NbdTlsBridge : IAsyncDisposable
{
    private const int CopyBuffer = 256 << 10;

    private readonly Socket _listener;
    private readonly NbdEndpoint _server;
    private readonly string _serverName;
    private readonly ILogger _logger;
    private readonly CancellationTokenSource _stopping = new();
    private readonly Task _acceptLoop;
    private readonly Lock _lock = new();
    private readonly HashSet<Task> _connections = [];

    /// <summary>Listens on <paramref name="socketPath"/>; the TLS files of <paramref name="server"/> are read per connection.</summary>
    public NbdTlsBridge(string socketPath, NbdEndpoint server, ILogger logger)
    {
        _server = server;
        _serverName = server.ToString();
        _logger = logger;
        SocketPath = Path.GetFullPath(socketPath);
        Directory.CreateDirectory(Path.GetDirectoryName(SocketPath)!);
        UnixSocketPath.RemoveStale(SocketPath);
        _listener = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        try
        {
            _listener.Bind(new UnixDomainSocketEndPoint(SocketPath));
            if (!OperatingSystem.IsWindows())
            {
                File.SetUnixFileMode(SocketPath, UnixFileMode.UserRead | UnixFileMode.UserWrite);
            }

            _listener.Listen(64);
        }
        catch
        {
            _listener.Dispose();
            throw;
        }

        CsiLog.BridgeListening(_logger, SocketPath, _serverName);
        _acceptLoop = AcceptLoopAsync();
    }

    /// <summary>The unix socket local NBD clients connect to.</summary>
    public string SocketPath { get; }

    public async ValueTask DisposeAsync()
    {
        await _stopping.CancelAsync().ConfigureAwait(false);
        _listener.Dispose();
        await _acceptLoop.ConfigureAwait(false);
        Task[] open;
        lock (_lock)
        {
            open = [.. _connections];
        }

        await Task.WhenAll(open).ConfigureAwait(false);
        File.Delete(SocketPath);
        _stopping.Dispose();
    }

    private async Task AcceptLoopAsync()
    {
        while (!_stopping.IsCancellationRequested)
        {
            Socket client;
            try
            {
                client = await _listener.AcceptAsync(_stopping.Token).ConfigureAwait(false);
            }
            catch (Exception e) when (e is OperationCanceledException or ObjectDisposedException or SocketException)
            {
                return;
            }

            var task = RelayAsync(client);
            lock (_lock)
            {
                _connections.Add(task);
            }

            _ = task.ContinueWith(
                t =>
                {
                    lock (_lock)
                    {
                        _connections.Remove(t);
                    }
                },
                CancellationToken.None,
                TaskContinuationOptions.ExecuteSynchronously,
                TaskScheduler.Default);
        }
    }

    private async Task RelayAsync(Socket client)
    {
        await Task.Yield();
        var local = new NetworkStream(client, ownsSocket: true);
        await using (local.ConfigureAwait(false))
        {
            try
            {
                using var tls = _server.LoadTlsOptions();
                var remote = await NbdTlsClient.StartAsync(
                    tls,
                    async (serverFlags, ct) =>
                    {
                        await local.WriteAsync(NbdTlsClient.Greeting(serverFlags), ct).ConfigureAwait(false);
                        var flags = new byte[4];
                        await local.ReadExactlyAsync(flags, ct).ConfigureAwait(false);
                        return BinaryPrimitives.ReadUInt32BigEndian(flags);
                    },
                    _stopping.Token).ConfigureAwait(false);
                await using (remote.ConfigureAwait(false))
                {
                    // Either side closing ends the relay. Closing both wakes the other copy, whose error is then
                    // only the close this side caused; the first copy's outcome is the one that counts.
                    var up = local.CopyToAsync(remote, CopyBuffer, _stopping.Token);
                    var down = remote.CopyToAsync(local, CopyBuffer, _stopping.Token);
                    var first = await Task.WhenAny(up, down).ConfigureAwait(false);
                    if (client.Connected)
                    {
                        client.Shutdown(SocketShutdown.Both);
                    }

                    await remote.DisposeAsync().ConfigureAwait(false);
                    try
                    {
                        await (first == up ? down : up).ConfigureAwait(false);
                    }
                    catch (Exception e) when (e is IOException or SocketException or ObjectDisposedException or OperationCanceledException)
                    {
                    }

                    await first.ConfigureAwait(false);
                }
            }
            catch (NbdClientException e)
            {
                CsiLog.BridgeConnectionFailed(_logger, _serverName, e.Message);
            }
            catch (Exception e) when (e is IOException or SocketException or ObjectDisposedException or OperationCanceledException or EndOfStreamException)
            {
                // A peer went away mid-stream: the local client sees its connection close and reports it.
                if (!_stopping.IsCancellationRequested)
                {
                    CsiLog.BridgeConnectionFailed(_logger, _serverName, e.Message);
                }
            }
        }
    }
}
