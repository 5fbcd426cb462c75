using System.Buffers.Binary;
using System.Diagnostics;
using System.Globalization;
using System.Net.Sockets;
using System.Text;
using Dolly.Storage;

namespace Dolly.Bench;

/// <summary>
/// <c>dolly bench nbd --only memory</c>: the resident memory of a <c>dolly nbd serve</c> process (its own
/// VmRSS, read from /proc) with default limits while 64 clients each ask for 32 MiB reads and never read a
/// reply, and again after they disconnect. The server runs as a child process so that nothing the benchmark
/// itself allocates is counted.
/// </summary>
internal sealed class NbdMemoryBench(string root, bool quick, Action<string> log)
{
    /// <summary>The section name for <c>--only</c>.</summary>
    public const string Section = "memory";

    private const string Group = "memory (64 connections sending 32 MiB reads, reading nothing)";
    private const string Volume = "mem";
    private const int Connections = 64;
    private const uint ReadSize = 32 << 20;
    private const long TargetUnderLoad = 256L << 20;

    // "Back to idle", with room for what a runtime legitimately keeps after serving 64 connections (JIT-ed
    // code, thread pool threads, the GC heap's own slack).
    private const long TargetAfter = 16L << 20;

    public async Task<IReadOnlyList<BenchFigure>> RunAsync(CancellationToken ct)
    {
        if (!File.Exists("/proc/self/status"))
        {
            throw new CliFailureException(ExitCodes.NotFound, "the memory benchmark reads VmRSS from /proc, which this system does not have");
        }

        int readsPerClient = quick ? 2 : 8;
        TimeSpan hold = quick ? TimeSpan.FromSeconds(2) : TimeSpan.FromSeconds(10);
        string poolDir = Path.Combine(root, "mem-pool");
        using (var pool = Pool.Create(poolDir).OrFail())
        {
            pool.CreateVolume(Volume, 4L * ReadSize).OrFail();
            var data = new byte[ReadSize];
            new Random(7).NextBytes(data);
            var device = pool.OpenDevice(Volume).OrFail();
            for (int i = 0; i < 4; i++)
            {
                device.Write(i * (long)ReadSize, data).OrFail();
            }

            device.Flush().OrFail();
        }

        string socket = Path.Combine(root, "mem.sock");
        var serverErrors = new StringBuilder();
        using var server = StartServer(poolDir, socket, serverErrors);
        try
        {
            await WaitForSocketAsync(socket, server, serverErrors, ct).ConfigureAwait(false);

            // Warm up (code paths compiled, one full 32 MiB read served), so that idle means idle after use.
            using (var warm = await ConnectAsync(socket, ct).ConfigureAwait(false))
            {
                await SendReadsAsync(warm, 1, ct).ConfigureAwait(false);
                var reply = new byte[16 + ReadSize];
                int got = 0;
                while (got < reply.Length)
                {
                    int n = await warm.ReceiveAsync(reply.AsMemory(got), ct).ConfigureAwait(false);
                    got += n > 0 ? n : throw new CliFailureException(ExitCodes.IoError, "the server closed the warm-up connection");
                }
            }

            long idle = await SettleAsync(server, TimeSpan.FromSeconds(2), ct).ConfigureAwait(false);
            log($"idle RSS {Mib(idle)}; connecting {Connections} clients that each send {readsPerClient} reads of 32 MiB and read nothing");

            var clients = new List<Socket>();
            long peak = idle;
            try
            {
                for (int i = 0; i < Connections; i++)
                {
                    var c = await ConnectAsync(socket, ct).ConfigureAwait(false);
                    clients.Add(c);
                    await SendReadsAsync(c, readsPerClient, ct).ConfigureAwait(false);
                    peak = Math.Max(peak, Rss(server));
                }

                var until = Stopwatch.StartNew();
                while (until.Elapsed < hold)
                {
                    peak = Math.Max(peak, Rss(server));
                    await Task.Delay(100, ct).ConfigureAwait(false);
                }
            }
            finally
            {
                foreach (var c in clients)
                {
                    c.LingerState = new LingerOption(true, 0);
                    c.Dispose();
                }
            }

            log($"peak RSS {Mib(peak)}; clients gone, waiting for the server to give memory back");
            long after = Rss(server);
            var waited = Stopwatch.StartNew();
            while (after - idle > TargetAfter && waited.Elapsed < TimeSpan.FromSeconds(20))
            {
                await Task.Delay(200, ct).ConfigureAwait(false);
                after = Rss(server);
            }

            long above = peak - idle, left = Math.Max(0, after - idle);
            return
            [
                new BenchFigure(Group, "idle RSS (after a warm-up read)", idle / (double)(1 << 20), "MiB", Mib(idle), null, null),
                new BenchFigure(Group, "peak RSS above idle, under load", above / (double)(1 << 20), "MiB", Mib(above), $"<= {Mib(TargetUnderLoad)}", above <= TargetUnderLoad,
                    Note: $"peak {Mib(peak)}, default limits (--max-buffer 128Mi)"),
                new BenchFigure(Group, "RSS above idle after they disconnect", left / (double)(1 << 20), "MiB", Mib(left), $"<= {Mib(TargetAfter)} (back to idle)", left <= TargetAfter,
                    Note: $"{after / (double)(1 << 20):0} MiB after {waited.Elapsed.TotalSeconds:0.0} s"),
            ];
        }
        finally
        {
            if (!server.HasExited)
            {
                server.Kill(entireProcessTree: true);
                await server.WaitForExitAsync(CancellationToken.None).ConfigureAwait(false);
            }
        }
    }

    private static string Mib(long bytes) => string.Create(CultureInfo.InvariantCulture, $"{bytes / (double)(1 << 20):0} MiB");

    /// <summary>A <c>dolly nbd serve</c> child with default limits (the same build as this code).</summary>
    /// <remarks>
    /// The running process is not always dolly itself (the test host runs the CLI in-process), so the child is this
    /// assembly: through its apphost when that is what runs, else through the dotnet muxer.
    /// </remarks>
    private static Process StartServer(string poolDir, string socket, StringBuilder errors)
    {
        string dll = typeof(NbdMemoryBench).Assembly.Location;
        string? running = Environment.ProcessPath;
        ProcessStartInfo psi;
        if (running is not null && Path.GetFileNameWithoutExtension(running) == "dolly")
        {
            psi = new ProcessStartInfo(running);
        }
        else
        {
            string muxer = Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") is { Length: > 0 } host ? host
                : running is not null && Path.GetFileNameWithoutExtension(running) == "dotnet" ? running
                : "dotnet";
            psi = new ProcessStartInfo(muxer);
            psi.ArgumentList.Add(dll);
        }

        psi.RedirectStandardOutput = true;
        psi.RedirectStandardError = true;
        psi.UseShellExecute = false;
        foreach (var a in new[] { "nbd", "serve", "--pool", poolDir, "--socket", socket })
        {
            psi.ArgumentList.Add(a);
        }

        var p = Process.Start(psi) ?? throw new CliFailureException(ExitCodes.IoError, "cannot start dolly nbd serve");
        p.OutputDataReceived += (_, _) => { };
        p.ErrorDataReceived += (_, e) =>
        {
            if (e.Data is { } line)
            {
                lock (errors)
                {
                    errors.AppendLine(line);
                }
            }
        };
        p.BeginOutputReadLine();
        p.BeginErrorReadLine();
        return p;
    }

    private static async Task WaitForSocketAsync(string socket, Process server, StringBuilder errors, CancellationToken ct)
    {
        var waited = Stopwatch.StartNew();
        while (!File.Exists(socket))
        {
            if (server.HasExited || waited.Elapsed > TimeSpan.FromSeconds(30))
            {
                string said;
                lock (errors)
                {
                    said = errors.ToString().Trim();
                }

                string how = server.HasExited ? $"it exited with code {server.ExitCode}" : "no socket after 30 s";
                throw new CliFailureException(
                    ExitCodes.IoError,
                    $"dolly nbd serve did not start listening on {socket}: {how}" + (said.Length > 0 ? $": {said}" : ""));
            }

            await Task.Delay(50, ct).ConfigureAwait(false);
        }
    }

    /// <summary>The server's resident set, from /proc/PID/status.</summary>
    private static long Rss(Process server)
    {
        foreach (var line in File.ReadLines($"/proc/{server.Id}/status"))
        {
            if (line.StartsWith("VmRSS:", StringComparison.Ordinal))
            {
                return long.Parse(line.AsSpan(6).Trim().TrimEnd("kB").Trim(), CultureInfo.InvariantCulture) * 1024;
            }
        }

        throw new CliFailureException(ExitCodes.IoError, "no VmRSS in the server's /proc status");
    }

    /// <summary>The median RSS over a short quiet period.</summary>
    private static async Task<long> SettleAsync(Process server, TimeSpan period, CancellationToken ct)
    {
        var samples = new List<double>();
        var watch = Stopwatch.StartNew();
        while (watch.Elapsed < period)
        {
            samples.Add(Rss(server));
            await Task.Delay(100, ct).ConfigureAwait(false);
        }

        return (long)BenchReport.Median(samples);
    }

    /// <summary>Connects and negotiates the export with NBD_OPT_GO (fixed newstyle, simple replies).</summary>
    private static async Task<Socket> ConnectAsync(string socket, CancellationToken ct)
    {
        var s = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified) { ReceiveBufferSize = 4096 };
        try
        {
            await s.ConnectAsync(new UnixDomainSocketEndPoint(socket), ct).ConfigureAwait(false);
            await ReceiveExactAsync(s, new byte[18], ct).ConfigureAwait(false);
            var name = Encoding.UTF8.GetBytes(Volume);
            var hello = new byte[4 + 16 + 4 + name.Length + 2];
            BinaryPrimitives.WriteUInt32BigEndian(hello, 3); // fixed newstyle, no zeroes
            BinaryPrimitives.WriteUInt64BigEndian(hello.AsSpan(4), 0x49484156454F5054); // IHAVEOPT
            BinaryPrimitives.WriteUInt32BigEndian(hello.AsSpan(12), 7); // NBD_OPT_GO
            BinaryPrimitives.WriteUInt32BigEndian(hello.AsSpan(16), (uint)(4 + name.Length + 2));
            BinaryPrimitives.WriteUInt32BigEndian(hello.AsSpan(20), (uint)name.Length);
            name.CopyTo(hello, 24);
            await s.SendAsync(hello, ct).ConfigureAwait(false);

            var header = new byte[20];
            while (true)
            {
                await ReceiveExactAsync(s, header, ct).ConfigureAwait(false);
                uint type = BinaryPrimitives.ReadUInt32BigEndian(header.AsSpan(12));
                await ReceiveExactAsync(s, new byte[BinaryPrimitives.ReadUInt32BigEndian(header.AsSpan(16))], ct).ConfigureAwait(false);
                if (type == 1)
                {
                    return s;
                }

                if ((type & 0x80000000) != 0)
                {
                    throw new CliFailureException(ExitCodes.IoError, $"the server refused NBD_OPT_GO (reply 0x{type:x})");
                }
            }
        }
        catch
        {
            s.Dispose();
            throw;
        }
    }

    private static async Task SendReadsAsync(Socket s, int count, CancellationToken ct)
    {
        var frames = new byte[28 * count];
        for (int i = 0; i < count; i++)
        {
            var f = frames.AsSpan(i * 28);
            BinaryPrimitives.WriteUInt32BigEndian(f, 0x25609513);
            BinaryPrimitives.WriteUInt16BigEndian(f[6..], 0); // NBD_CMD_READ
            BinaryPrimitives.WriteUInt64BigEndian(f[8..], (ulong)i + 1);
            BinaryPrimitives.WriteUInt64BigEndian(f[16..], (ulong)(i % 4) * ReadSize);
            BinaryPrimitives.WriteUInt32BigEndian(f[24..], ReadSize);
        }

        await s.SendAsync(frames, ct).ConfigureAwait(false);
    }

    private static async Task ReceiveExactAsync(Socket s, Memory<byte> buffer, CancellationToken ct)
    {
        while (!buffer.IsEmpty)
        {
            int n = await s.ReceiveAsync(buffer, ct).ConfigureAwait(false);
            if (n == 0)
            {
                throw new CliFailureException(ExitCodes.IoError, "the server closed the connection during the handshake");
            }

            buffer = buffer[n..];
        }
    }
}
