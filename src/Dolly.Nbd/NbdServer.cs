using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace Dolly.Nbd;

/// <summary>
/// A fixed-newstyle NBD server exporting a pool's volumes (read-write) and snapshots (read-only) over a unix
/// socket and TCP, with STARTTLS. Each connection runs its own receive loop and send loop; payload buffers
/// come from one server-wide pool whose size is the server's memory budget; a misbehaving client is
/// disconnected without affecting the others.
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
    private readonly NbdBufferPool _pool;
    private readonly TimeProvider _time;
    private ITimer? _sweeper;
    private long _nextConnectionId;
    private int _running;
    private int _admittedSinceIdle;

    /// <summary>Connections served since the server was last idle that make a collection worth it when it is again.</summary>
    private const int CollectAfterConnections = 16;

    /// <summary>Creates a server; call <see cref="Start"/> to listen.</summary>
    /// <param name="catalog">What is exported.</param>
    /// <param name="options">Listeners and limits.</param>
    /// <param name="logger">Where connection events go.</param>
    /// <param name="timeProvider">Clock for the idle and stalled-reply timeouts (tests pass a fake one).</param>
    public NbdServer(ExportCatalog catalog, NbdServerOptions options, ILogger<NbdServer>? logger = null, TimeProvider? timeProvider = null)
    {
        _catalog = catalog;
        _options = options;
        _logger = (ILogger?)logger ?? NullLogger.Instance;
        _time = timeProvider ?? TimeProvider.System;
        // Options are validated at Start; until then build a pool that at least holds together.
        int maxPayload = Math.Max(options.MaxPayload, NbdBufferPool.MinClass);
        int connections = Math.Max(options.MaxConnections, 0);
        long capacity = Math.Max(options.MaxBufferBytes, (connections * NbdBufferPool.ReservePerConnection) + NbdBufferPool.ClassSize(maxPayload));
        _pool = new NbdBufferPool(capacity, connections, maxPayload, capacity / 2);
    }

    /// <summary>Bytes of payload buffers the server holds now (rented or kept for reuse), at their allocated size.</summary>
    public long BufferBytesHeld => _pool.HeldBytes;

    /// <summary>Bytes of payload buffers in use by requests and replies now.</summary>
    public long BufferBytesInUse => _pool.RentedBytes;

    /// <summary>The most payload buffer bytes held at once since the server started.</summary>
    public long BufferBytesPeak => _pool.PeakHeldBytes;

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

        if (_options.IdleTimeout != Timeout.InfiniteTimeSpan)
        {
            var period = TimeSpan.FromTicks(Math.Max(_options.IdleTimeout.Ticks / 4, TimeSpan.FromMilliseconds(100).Ticks));
            _sweeper = _time.CreateTimer(static s => ((NbdServer)s!).CloseStalled(), this, period, period);
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
            var connection = new NbdConnection(id, client, isTcp, _catalog.ForConnection(id, Describe(client, isTcp)), _options, _pool, _time, _logger);

            // Check and add under one lock: each listener has its own accept loop, and two loops checking the
            // count at once could both admit the last slot.
            bool admitted;
            NbdConnection? evicted = null;
            lock (_admission)
            {
                admitted = _connections.Count < _options.MaxConnections;
                if (!admitted && LongestIdle() is { } idle)
                {
                    // Full, but a connection has sat idle past the timeout: it gives its slot to the newcomer,
                    // so idle sockets cannot lock everyone out. Idle connections are not closed otherwise: a
                    // mounted file system's connection may rightly idle for hours, and neither nbdfuse nor the
                    // kernel's nbd driver reconnects.
                    _connections.TryRemove(idle.Id, out _);
                    evicted = idle;
                    admitted = true;
                }

                if (admitted)
                {
                    _connections[id] = connection;
                    Interlocked.Increment(ref _running);
                    Interlocked.Increment(ref _admittedSinceIdle);
                }
            }

            if (evicted is not null)
            {
                NbdLog.IdleEvicted(_logger, evicted.Id, evicted.IdleFor()?.TotalSeconds ?? 0, _options.MaxConnections);
                evicted.Abort();
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

    /// <summary>Who a client is, for the attachment records: its TCP address, or the unix socket.</summary>
    private static string Describe(Socket client, bool isTcp)
    {
        try
        {
            return isTcp ? $"tcp {client.RemoteEndPoint}" : "unix socket";
        }
        catch (ObjectDisposedException)
        {
            return isTcp ? "tcp" : "unix socket";
        }
    }

    /// <summary>Which clients hold which exports.</summary>
    public ExportAttachments Attachments => _catalog.Attachments;

    // Called under _admission.
    private NbdConnection? LongestIdle()
    {
        if (_options.IdleTimeout == Timeout.InfiniteTimeSpan)
        {
            return null;
        }

        NbdConnection? longest = null;
        TimeSpan longestIdle = _options.IdleTimeout;
        foreach (var c in _connections.Values)
        {
            if (c.IdleFor() is { } idle && idle >= longestIdle)
            {
                longest = c;
                longestIdle = idle;
            }
        }

        return longest;
    }

    // Timer callback: a connection whose replies have waited past the idle timeout for a client that does not
    // read them holds its budget for nothing; closing it gives the buffers back to everyone else.
    private void CloseStalled()
    {
        foreach (var c in _connections.Values)
        {
            if (c.StalledFor() is { } stalled && stalled >= _options.IdleTimeout)
            {
                NbdLog.Stalled(_logger, c.Id, stalled.TotalSeconds);
                c.Abort();
            }
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
            _catalog.Attachments.Release(id);
            if (Interlocked.Decrement(ref _running) == 0)
            {
                // The last connection is gone: nothing will reuse the free buffers soon, give them back.
                _pool.ReleaseFree();
                if (Interlocked.Exchange(ref _admittedSinceIdle, 0) >= CollectAfterConnections)
                {
                    // Each connection also leaves some 200 KiB of managed garbage (its receive buffer, send
                    // blocks, sockets, tasks). With nothing left to allocate, the GC would not run, and would
                    // keep the freed regions committed if it did: after a burst of connections (64 clients
                    // leave 15 MiB), one compacting collection gives that memory back to the system too.
                    GC.Collect(GC.MaxGeneration, GCCollectionMode.Aggressive, blocking: true, compacting: true);
                }
            }
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
        if (_sweeper is not null)
        {
            await _sweeper.DisposeAsync().ConfigureAwait(false);
        }

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

        // Buffers still rented by a connection that did not end in time are unmapped as they come back.
        _pool.Dispose();
    }
}
