using System.Buffers.Binary;
using System.Net.Sockets;
using System.Text;
using Dolly.Nbd.Tests.Support;

namespace Dolly.Nbd.Tests;

/// <summary>
/// A bounded fuzz test: raw clients send random and mutated handshake and transmission frames while a
/// well-behaved client does verified reads and writes on its own export. The server must neither crash nor
/// hang (every fuzz connection ends within a timeout once the fuzzer stops sending) and the good client's data
/// must always be right. The seed is printed; set DOLLY_NBD_FUZZ_SEED to replay one (the interleaving with the
/// good client still varies).
/// </summary>
public sealed class FuzzTests
{
    private const int Connections = 320;
    private const int Workers = 4;
    private const long GoodSize = 16 << 20;
    // Far above the 10 s handshake timeout that closes a stalled fuzz connection: 5 s of margin was not enough
    // for a busy machine to run that timer and close the socket.
    private static readonly TimeSpan ConnectionDeadline = TimeSpan.FromSeconds(60);

    [Fact]
    public async Task RandomAndMutatedFrames_ServerSurvives_GoodClientAlwaysCorrect()
    {
        int seed = int.TryParse(Environment.GetEnvironmentVariable("DOLLY_NBD_FUZZ_SEED"), out var s) ? s : Random.Shared.Next();
        TestContext.Current.TestOutputHelper?.WriteLine($"fuzz seed {seed} (DOLLY_NBD_FUZZ_SEED={seed} replays it)");
        Console.WriteLine($"NBD fuzz seed {seed}");

        await using var server = TestServer.Start(o => o with { MaxPayload = 1 << 20, MaxInFlightBytesPerConnection = 2 << 20, HandshakeTimeout = TimeSpan.FromSeconds(10) });
        server.CreateVolume("good", GoodSize);
        var fuzzVol = server.CreateVolume("fuzz", 4 << 20);
        fuzzVol.Write(0, Data.Random(1 << 20, 1)).ThrowIfFailed();
        server.Pool.CreateSnapshot("fuzz", "fuzz-snap").ThrowIfFailed();

        using var stop = new CancellationTokenSource();
        var good = GoodClientAsync(server, seed, stop.Token);

        // DOLLY_NBD_FUZZ_ONLY=N replays only fuzz connection N of the seed.
        int only = int.TryParse(Environment.GetEnvironmentVariable("DOLLY_NBD_FUZZ_ONLY"), out var o) ? o : -1;
        int next = only >= 0 ? only - 1 : -1;
        int end = only >= 0 ? only + 1 : Connections;
        var failures = new List<string>();
        var workers = Enumerable.Range(0, Workers).Select(async _ =>
        {
            int i;
            while ((i = Interlocked.Increment(ref next)) < end)
            {
                string? failure = await FuzzOneAsync(server, seed, i);
                if (failure is not null)
                {
                    lock (failures)
                    {
                        failures.Add(failure);
                    }
                }
            }
        }).ToList();
        await Task.WhenAll(workers);
        await stop.CancelAsync();
        var (operations, goodFailure) = await good;

        Assert.True(failures.Count == 0, $"seed {seed}: {failures.Count} fuzz connection(s) misbehaved:\n{string.Join("\n", failures.Take(10))}");
        Assert.True(goodFailure is null, $"seed {seed}: the good client failed: {goodFailure}");
        Assert.True(operations > 20, $"seed {seed}: the good client only completed {operations} operations");

        // Every fuzz connection has been released and the server still serves new clients.
        await Poll.UntilAsync(() => server.Server.ConnectionCount == 0, ConnectionDeadline, $"fuzz connections to be released (seed {seed})");
        await using var after = await server.ConnectAsync();
        await after.GoAsync("fuzz", structured: true);
        Assert.Equal(0u, (await after.ReadAsync(0, 4096)).Error);
        Assert.True(server.Pool.Check().IsClean, $"seed {seed}: pool check after fuzzing");

        // The fuzzer did provoke protocol errors (logged as warnings); errors, meaning exceptions the server did
        // not expect, fail the test when the server is disposed.
        Assert.Contains(server.Log.Entries, e => e.EventId == 3);
    }

    /// <summary>One fuzz connection. Returns a description of what went wrong, or null.</summary>
    private static async Task<string?> FuzzOneAsync(TestServer server, int seed, int index)
    {
        var rng = new Random(unchecked((seed * 1_000_003) + index));
        int scenario = rng.Next(4);
        RawNbdClient c;
        try
        {
            c = rng.Next(2) == 0 ? await server.ConnectAsync() : await server.ConnectTcpAsync();
        }
        catch (SocketException e)
        {
            return $"#{index}: connect failed: {e.Message}";
        }

        await using (c)
        {
            try
            {
                using var cts = new CancellationTokenSource(ConnectionDeadline);
                var greeting = new byte[18];
                await c.Stream.ReadExactlyAsync(greeting, cts.Token);
                var bytes = scenario switch
                {
                    0 => RandomBytes(rng, rng.Next(1, 300)),
                    1 => HandshakeFrames(rng),
                    2 => Mutate(rng, HandshakeFrames(rng)),
                    _ => TransmissionFrames(rng),
                };
                if (Environment.GetEnvironmentVariable("DOLLY_NBD_FUZZ_DUMP") is { } dump)
                {
                    await File.WriteAllBytesAsync(Path.Combine(dump, $"fuzz-{seed}-{index}.bin"), bytes, cts.Token);
                }

                // Replies are read while sending, as any real client does: a client that sends everything
                // before reading anything deadlocks itself on TCP flow control whatever the server does (see
                // RobustnessTests.PipeliningClientThatReadsLate_ProtocolError_ClosedPromptly for the server's part).
                var drain = Task.Run(
                    async () =>
                    {
                        var buffer = new byte[64 << 10];
                        try
                        {
                            while (await c.Stream.ReadAsync(buffer, cts.Token) > 0)
                            {
                            }
                        }
                        catch (IOException)
                        {
                            // Reset by the server: a clean disconnect as far as the fuzzer is concerned.
                        }
                    },
                    CancellationToken.None);
                try
                {
                    await c.Stream.WriteAsync(bytes, cts.Token);
                    c.Socket.Shutdown(SocketShutdown.Send);
                }
                catch (IOException)
                {
                    // The server closed while we were still sending (it stops reading at a protocol error).
                }

                // Whatever the server answers, it must close the connection once the input ended.
                await drain;
            }
            catch (OperationCanceledException)
            {
                return $"#{index} (scenario {scenario}): the server neither finished nor closed within {ConnectionDeadline.TotalSeconds} s";
            }
            catch (IOException)
            {
                // Reset by the server: a clean disconnect as far as the fuzzer is concerned.
            }
            catch (SocketException)
            {
            }
        }

        return null;
    }

    private static byte[] RandomBytes(Random rng, int n)
    {
        var b = new byte[n];
        rng.NextBytes(b);
        return b;
    }

    private static readonly string[] Names = ["fuzz", "fuzz-snap", string.Empty, "nope", "../fuzz", "fuzz\0x", new string('a', 300)];

    /// <summary>Client flags then a handful of plausible options.</summary>
    private static byte[] HandshakeFrames(Random rng)
    {
        var ms = new MemoryStream();
        Span<byte> u32 = stackalloc byte[4];
        BinaryPrimitives.WriteUInt32BigEndian(u32, rng.Next(8) == 0 ? (uint)rng.Next(4) : 3);
        ms.Write(u32);
        int options = rng.Next(1, 8);
        for (int i = 0; i < options; i++)
        {
            string name = Names[rng.Next(Names.Length)];
            byte[] data = rng.Next(9) switch
            {
                0 => RawNbdClient.InfoRequest(name, Wire.InfoName, Wire.InfoDescription, Wire.InfoBlockSize),
                1 => RawNbdClient.MetaContextRequest(name, "base:allocation", "dolly:delta:fuzz-snap"),
                2 => RawNbdClient.MetaContextRequest(name, "dolly:", "base:"),
                3 => Encoding.UTF8.GetBytes(name),
                4 => RandomBytes(rng, rng.Next(0, 40)),
                _ => [],
            };
            uint option = rng.Next(10) switch
            {
                0 => (uint)rng.Next(0, 20),
                1 => Wire.OptStructuredReply,
                2 => Wire.OptList,
                3 => Wire.OptListMetaContext,
                4 => Wire.OptSetMetaContext,
                5 => Wire.OptInfo,
                6 => Wire.OptStartTls,
                7 => Wire.OptGo,
                8 => Wire.OptExportName,
                _ => (uint)rng.Next(),
            };
            ms.Write(RawNbdClient.OptionFrame(option, data));
        }

        return ms.ToArray();
    }

    /// <summary>A valid handshake to a fuzz export, then random and mutated requests.</summary>
    private static byte[] TransmissionFrames(Random rng)
    {
        var ms = new MemoryStream();
        ms.Write([0, 0, 0, 3]);
        if (rng.Next(2) == 0)
        {
            ms.Write(RawNbdClient.OptionFrame(Wire.OptStructuredReply, []));
            ms.Write(RawNbdClient.OptionFrame(Wire.OptSetMetaContext, RawNbdClient.MetaContextRequest("fuzz", "base:allocation", "dolly:delta:fuzz-snap")));
        }

        string export = rng.Next(4) == 0 ? "fuzz-snap" : "fuzz";
        ms.Write(RawNbdClient.OptionFrame(Wire.OptGo, RawNbdClient.InfoRequest(export)));

        var requests = new MemoryStream();
        int count = rng.Next(1, 30);
        for (int i = 0; i < count; i++)
        {
            ushort type = rng.Next(10) == 0 ? (ushort)rng.Next(0, 20) : (ushort)rng.Next(0, 8);
            if (type == Wire.CmdDisc && rng.Next(3) != 0)
            {
                type = Wire.CmdRead;
            }

            ushort flags = rng.Next(4) == 0 ? (ushort)rng.Next(0, 64) : (ushort)0;
            ulong offset = rng.Next(6) switch
            {
                0 => (ulong)rng.NextInt64(),
                1 => (4UL << 20) - (ulong)rng.Next(0, 8192),
                _ => (ulong)rng.Next(0, 4 << 20),
            };
            uint length = rng.Next(8) switch
            {
                0 => (uint)rng.Next(),
                1 => (uint)rng.Next(0, 2 << 20),
                _ => (uint)rng.Next(0, 70_000),
            };
            requests.Write(RawNbdClient.RequestFrame(flags, type, (ulong)rng.NextInt64(), offset, length));
            if (type == Wire.CmdWrite)
            {
                // Usually the whole payload, sometimes less (the stream then desynchronises, as a buggy client would).
                int n = (int)Math.Min(length, rng.Next(5) == 0 ? (uint)rng.Next(0, 4096) : 1u << 20);
                requests.Write(RandomBytes(rng, n));
            }
        }

        var tail = requests.ToArray();
        ms.Write(rng.Next(3) == 0 ? Mutate(rng, tail) : tail);
        return ms.ToArray();
    }

    /// <summary>Bit flips, byte overwrites, 32-bit length smashes, truncation and duplication.</summary>
    private static byte[] Mutate(Random rng, byte[] input)
    {
        var b = input.ToList();
        int mutations = rng.Next(1, 6);
        for (int m = 0; m < mutations && b.Count > 0; m++)
        {
            int at = rng.Next(b.Count);
            switch (rng.Next(5))
            {
                case 0:
                    b[at] ^= (byte)(1 << rng.Next(8));
                    break;
                case 1:
                    b[at] = (byte)rng.Next(256);
                    break;
                case 2:
                    uint smash = rng.Next(3) switch { 0 => 0xffffffff, 1 => 0x7fffffff, _ => (uint)rng.Next(0, 100_000) };
                    for (int k = 0; k < 4 && at + k < b.Count; k++)
                    {
                        b[at + k] = (byte)(smash >> (24 - (8 * k)));
                    }

                    break;
                case 3:
                    b.RemoveRange(at, b.Count - at);
                    break;
                default:
                    b.InsertRange(at, b.Skip(at).Take(rng.Next(1, 40)).ToList());
                    break;
            }
        }

        return [.. b];
    }

    /// <summary>Writes, reads, trims and flushes on "good", checking every read against a model.</summary>
    private static async Task<(int Operations, string? Failure)> GoodClientAsync(TestServer server, int seed, CancellationToken stop)
    {
        var rng = new Random(seed ^ 0x5eed);
        var model = new byte[GoodSize];
        int operations = 0;
        try
        {
            await using var c = await server.ConnectAsync();
            await c.GoAsync("good", structured: true);
            while (!stop.IsCancellationRequested || operations < 25)
            {
                uint length = (uint)rng.Next(1, 256 << 10);
                ulong offset = (ulong)rng.NextInt64(0, GoodSize - length);
                switch (rng.Next(6))
                {
                    case 0 or 1:
                        var data = RandomBytes(rng, (int)length);
                        var w = await c.WriteAsync(offset, data, rng.Next(4) == 0 ? Wire.CmdFlagFua : (ushort)0);
                        if (w.Error != 0)
                        {
                            return (operations, $"write {offset}+{length}: error {w.Error} {w.Message}");
                        }

                        data.CopyTo(model, (long)offset);
                        break;
                    case 2:
                        var t = await c.CommandAsync(rng.Next(2) == 0 ? Wire.CmdTrim : Wire.CmdWriteZeroes, offset, length);
                        if (t.Error != 0)
                        {
                            return (operations, $"trim/zero {offset}+{length}: error {t.Error} {t.Message}");
                        }

                        Array.Clear(model, (int)offset, (int)length);
                        break;
                    case 3:
                        var f = await c.FlushAsync();
                        if (f.Error != 0)
                        {
                            return (operations, $"flush: error {f.Error} {f.Message}");
                        }

                        break;
                    default:
                        var r = await c.ReadAsync(offset, length);
                        if (r.Error != 0)
                        {
                            return (operations, $"read {offset}+{length}: error {r.Error} {r.Message}");
                        }

                        if (!r.Data.AsSpan().SequenceEqual(model.AsSpan((int)offset, (int)length)))
                        {
                            return (operations, $"read {offset}+{length} returned wrong data after {operations} operations");
                        }

                        break;
                }

                operations++;
            }

            var all = Data.ReadAll(server.Pool, "good");
            return all.AsSpan().SequenceEqual(model) ? (operations, null) : (operations, "the volume's final content differs from the model");
        }
        catch (Exception e) when (e is IOException or OperationCanceledException or SocketException or Xunit.Sdk.XunitException)
        {
            return (operations, $"after {operations} operations: {e}");
        }
    }
}
