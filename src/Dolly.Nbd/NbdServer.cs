using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace Dolly.Nbd;

/// <summary>
/// A fixed-newstyle NBD server exporting a pool's volumes (read-write) and snapshots (read-only) over a unix
/// socket and TCP, with STARTTLS. Each connection runs its own receive loop; replies are serialised per
/// connection; a misbehaving client is disconnected without affecting the others.
/// </summary>
public sealed class NbdServer : IAsyncDisposable
{
    private readonly ExportCatalog _catalog;
    private readonly NbdServerOptions _options;
    private readonly ILogger _logger;
    private readonly List<Socket> _listeners = [];
    private readonly List<Task> _acceptLoops = [];
    private readonly ConcurrentDictionary<long, NbdConnection> _connections = new();
    private readonly CancellationTokenSource _stopping = new();
    private readonly Lock _admission = new();
    private long _nextConnectionId;

    /// <summary>Creates a server; call <see cref="Start"/> to listen.</summary>
    public NbdServer(ExportCatalog catalog, NbdServerOptions options, ILogger<NbdServer>? logger = null)
    {
        _catalog = catalog;
        _options = options;
        _logger = (ILogger?)logger ?? NullLogger.Instance;
    }

    /// <summary>The bound endpoints (TCP ports resolved when 0 was asked for).</summary>
    public IReadOnlyList<EndPoint> LocalEndpoints => _listeners.Select(l => l.LocalEndPoint!).ToList();

    /// <summary>Connections open now.</summary>
    public int ConnectionCount => _connections.Count;

    /// <summary>
    /// Binds every listener and starts accepting. Throws <see cref="InvalidOperationException"/> with a clear
    /// message when the options are unsafe or a listener cannot be bound.
    /// </summary>
    public void Start()
    {
        if (_options.Validate() is { } problem)
        {
            throw new InvalidOperationException(problem);
        }

        try
        {
            if (_options.UnixSocketPath is { } path)
            {
                _listeners.Add(BindUnix(path));
            }

            foreach (var ep in _options.TcpEndpoints)
            {
                var s = new Socket(ep.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
                try
                {
                    s.SetSocketOption(SocketOptionLevel.Socket, SocketOptionName.ReuseAddress, true);
                    s.Bind(ep);
                    s.Listen(128);
                }
                catch (SocketException ex)
                {
                    s.Dispose();
                    throw new InvalidOperationException($"cannot listen on {ep}: {ex.Message}", ex);
                }

                _listeners.Add(s);
            }
        }
        catch
        {
            foreach (var l in _listeners)
            {
                l.Dispose();
            }

            _listeners.Clear();
            throw;
        }

        foreach (var l in _listeners)
        {
            string endpoint = l.LocalEndPoint is UnixDomainSocketEndPoint u ? $"unix:{u}" : $"tcp:{l.LocalEndPoint}";
            NbdLog.Listening(_logger, endpoint);

            bool isTcp = l.AddressFamily != AddressFamily.Unix;
            _acceptLoops.Add(AcceptLoopAsync(l, isTcp));
        }
    }

    private static Socket BindUnix(string path)
    {
        var dir = Path.GetDirectoryName(Path.GetFullPath(path));
        if (dir is not null)
        {
            Directory.CreateDirectory(dir);
        }

        UnixSocketPath.RemoveStale(path);

        var s = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        try
        {
            s.Bind(new UnixDomainSocketEndPoint(path));
            if (!OperatingSystem.IsWindows())
            {
                File.SetUnixFileMode(path, UnixFileMode.UserRead | UnixFileMode.UserWrite);
            }

            s.Listen(128);
            return s;
        }
        catch (SocketException ex)
        {
            s.Dispose();
            throw new InvalidOperationException($"cannot listen on {path}: {ex.Message}", ex);
        }
    }

    private async Task AcceptLoopAsync(Socket listener, bool isTcp)
    {
        while (!_stopping.IsCancellationRequested)
        {
            Socket client;
            try
            {
                client = await listener.AcceptAsync(_stopping.Token).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                return;
            }
            catch (SocketException) when (_stopping.IsCancellationRequested)
            {
                return;
            }
            catch (ObjectDisposedException)
            {
                return;
            }
            catch (SocketException)
            {
                continue;
            }

            if (isTcp)
            {
                client.NoDelay = true;
            }

            long id = Interlocked.Increment(ref _nextConnectionId);
            var connection = new NbdConnection(id, client, isTcp, _catalog, _options, _logger);

            // Check and add under one lock: each listener has its own accept loop, and two loops checking the
            // count at once could both admit the last slot.
            bool admitted;
            lock (_admission)
            {
                admitted = _connections.Count < _options.MaxConnections;
                if (admitted)
                {
                    _connections[id] = connection;
                }
            }

            if (!admitted)
            {
                NbdLog.TooManyConnections(_logger, _connections.Count);
                await connection.DisposeAsync().ConfigureAwait(false);
                continue;
            }

            _ = RunConnectionAsync(id, connection);
        }
    }

    private async Task RunConnectionAsync(long id, NbdConnection connection)
    {
        try
        {
            await connection.RunAsync(_stopping.Token).ConfigureAwait(false);
        }
        finally
        {
            _connections.TryRemove(id, out _);
            await connection.DisposeAsync().ConfigureAwait(false);
        }
    }

    /// <summary>Stops accepting, closes every connection and waits for them.</summary>
    public async ValueTask DisposeAsync()
    {
        if (_stopping.IsCancellationRequested)
        {
            return;
        }

        await _stopping.CancelAsync().ConfigureAwait(false);
        foreach (var l in _listeners)
        {
            l.Dispose();
        }

        await Task.WhenAll(_acceptLoops).ConfigureAwait(false);
        foreach (var c in _connections.Values)
        {
            c.Abort();
        }

        var deadline = DateTime.UtcNow.AddSeconds(10);
        while (!_connections.IsEmpty && DateTime.UtcNow < deadline)
        {
            await Task.Delay(10).ConfigureAwait(false);
        }

        if (_options.UnixSocketPath is { } path && File.Exists(path))
        {
            File.Delete(path);
        }

        _stopping.Dispose();
    }
}
