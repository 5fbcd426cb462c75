using System.Collections.Concurrent;
using System.Net;
using Dolly.Storage;
using Microsoft.Extensions.Logging;

namespace Dolly.Nbd.Tests.Support;

/// <summary>A temporary directory removed at dispose.</summary>
internal sealed class TempDir : IDisposable
{
    public TempDir() => Directory.CreateDirectory(Path);

    // Short: unix socket paths are limited to 107 bytes.
    public string Path { get; } = System.IO.Path.Combine(System.IO.Path.GetTempPath(), "dnbd-" + Guid.NewGuid().ToString("N")[..12]);

    public string Sub(string name) => System.IO.Path.Combine(Path, name);

    public void Dispose()
    {
        try
        {
            Directory.Delete(Path, recursive: true);
        }
        catch (IOException)
        {
            // A mount that failed to unmount keeps its directory busy; nothing more to clean then.
        }
        catch (UnauthorizedAccessException)
        {
        }
    }
}

/// <summary>A pool in a temporary directory served by an <see cref="NbdServer"/> on a unix socket and loopback TCP.</summary>
internal sealed class TestServer : IAsyncDisposable
{
    private bool _serverStopped;
    private bool _poolDisposed;

    private TestServer(TempDir dir, Pool pool, NbdServer server, string socketPath, NbdServerOptions options, CapturingLogger log)
    {
        Log = log;
        Dir = dir;
        Pool = pool;
        Server = server;
        SocketPath = socketPath;
        Options = options;
    }

    public TempDir Dir { get; }

    /// <summary>Everything the server logged. Errors (unexpected exceptions) fail the test at dispose.</summary>
    public CapturingLogger Log { get; }

    public Pool Pool { get; }

    public NbdServer Server { get; }

    public NbdServerOptions Options { get; }

    public string SocketPath { get; }

    public IPEndPoint TcpEndPoint => Server.LocalEndpoints.OfType<IPEndPoint>().First();

    public int Port => TcpEndPoint.Port;

    public static TestServer Start(Func<NbdServerOptions, NbdServerOptions>? configure = null, PoolCreateOptions? poolOptions = null, TimeProvider? time = null)
    {
        var dir = new TempDir();
        var pool = Pool.Create(dir.Sub("pool"), poolOptions).Value;
        string socket = dir.Sub("nbd.sock");
        var options = new NbdServerOptions
        {
            UnixSocketPath = socket,
            TcpEndpoints = [new IPEndPoint(IPAddress.Loopback, 0)],
        };
        if (configure is not null)
        {
            options = configure(options);
        }

        var log = new CapturingLogger();
        var server = new NbdServer(new ExportCatalog(pool), options, log, time);
        server.Start();
        return new TestServer(dir, pool, server, socket, options, log);
    }

    public string UnixUri(string export) => $"nbd+unix:///{export}?socket={SocketPath}";

    public string TcpUri(string export) => $"nbd://127.0.0.1:{Port}/{export}";

    public BlockDevice CreateVolume(string name, long size)
    {
        Pool.CreateVolume(name, size).ThrowIfFailed();
        return Pool.OpenDevice(name).Value;
    }

    public Task<RawNbdClient> ConnectAsync() => RawNbdClient.ConnectUnixAsync(SocketPath);

    public Task<RawNbdClient> ConnectTcpAsync() => RawNbdClient.ConnectTcpAsync(TcpEndPoint);

    /// <summary>Stops the server but leaves the pool open (and uncommitted), as a crash of the process would.</summary>
    public async Task StopServerAsync()
    {
        if (!_serverStopped)
        {
            _serverStopped = true;
            await Server.DisposeAsync();
        }
    }

    /// <summary>
    /// Copies the pool's files as they are on disk now, without committing anything: opening the copy shows
    /// what a crash at this moment would leave.
    /// </summary>
    public string CrashCopy()
    {
        string copy = Dir.Sub("crash-" + Guid.NewGuid().ToString("N")[..6]);
        Directory.CreateDirectory(copy);
        foreach (var f in Directory.GetFiles(Dir.Sub("pool")))
        {
            if (System.IO.Path.GetFileName(f) != "pool.lock")
            {
                File.Copy(f, System.IO.Path.Combine(copy, System.IO.Path.GetFileName(f)));
            }
        }

        return copy;
    }

    public async ValueTask DisposeAsync()
    {
        try
        {
            await StopServerAsync();
        }
        finally
        {
            if (!_poolDisposed)
            {
                _poolDisposed = true;
                Pool.Dispose();
            }

            Dir.Dispose();
        }

        // Misbehaving clients are expected to cause warnings; an error is an exception the server did not
        // expect (a bug), which a closed connection would otherwise hide.
        var errors = Log.Entries.Where(e => e.Level >= LogLevel.Error).ToList();
        Assert.True(errors.Count == 0, "the server logged errors:\n" + string.Join("\n", errors));
    }
}

/// <summary>An in-memory logger for the server under test.</summary>
internal sealed class CapturingLogger : ILogger<NbdServer>
{
    public ConcurrentQueue<LogEntry> Entries { get; } = new();

    public IDisposable? BeginScope<TState>(TState state)
        where TState : notnull => null;

    public bool IsEnabled(LogLevel logLevel) => true;

    public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter) =>
        Entries.Enqueue(new LogEntry(logLevel, eventId.Id, formatter(state, exception), exception));
}

internal sealed record LogEntry(LogLevel Level, int EventId, string Message, Exception? Exception)
{
    public override string ToString() => $"{Level} {EventId}: {Message}{(Exception is null ? string.Empty : "\n" + Exception)}";
}

internal static class ResultExtensions
{
    public static void ThrowIfFailed<T>(this Result<T> result) => _ = result.Value;

    public static void ThrowIfFailed(this Result result)
    {
        if (!result.IsOk)
        {
            throw new InvalidOperationException(result.Error.Message);
        }
    }
}

internal static class Data
{
    public static byte[] Random(int length, int seed)
    {
        var data = new byte[length];
        new Random(seed).NextBytes(data);
        return data;
    }

    /// <summary>
    /// Writes a sparse image file: per 256 KiB segment random data, explicit zeros or a hole (never written),
    /// plus one unaligned 1000-byte run. Returns the content.
    /// </summary>
    public static byte[] SparseImage(string path, int size, int seed)
    {
        var rng = new Random(seed);
        var content = new byte[size];
        using var f = new FileStream(path, FileMode.Create, FileAccess.Write);
        f.SetLength(size);
        const int Segment = 256 << 10;
        for (int at = 0; at < size; at += Segment)
        {
            int n = Math.Min(Segment, size - at);
            switch (rng.Next(3))
            {
                case 0:
                    rng.NextBytes(content.AsSpan(at, n));
                    f.Position = at;
                    f.Write(content, at, n);
                    break;
                case 1:
                    f.Position = at;
                    f.Write(new byte[n]);
                    break;
            }
        }

        int odd = rng.Next(size - 1000);
        rng.NextBytes(content.AsSpan(odd, 1000));
        f.Position = odd;
        f.Write(content, odd, 1000);
        return content;
    }

    public static string Sha256(byte[] data) => Convert.ToHexString(System.Security.Cryptography.SHA256.HashData(data));

    public static string Sha256File(string path)
    {
        using var f = File.OpenRead(path);
        return Convert.ToHexString(System.Security.Cryptography.SHA256.HashData(f));
    }

    public static byte[] ReadAll(Pool pool, string name)
    {
        var dev = pool.OpenDevice(name).Value;
        var buf = new byte[dev.Size];
        dev.Read(0, buf).ThrowIfFailed();
        return buf;
    }
}

/// <summary>Waits for a condition by polling against a deadline (never a fixed sleep).</summary>
internal static class Poll
{
    public static Task UntilAsync(Func<bool> condition, TimeSpan timeout, string what) =>
        UntilAsync(() => Task.FromResult(condition()), timeout, what);

    public static async Task UntilAsync(Func<Task<bool>> condition, TimeSpan timeout, string what)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (!await condition())
        {
            if (DateTime.UtcNow > deadline)
            {
                throw new TimeoutException($"timed out after {timeout.TotalSeconds:0.#} s waiting for {what}");
            }

            await Task.Delay(20, TestContext.Current.CancellationToken);
        }
    }
}
