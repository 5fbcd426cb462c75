using System.Runtime.InteropServices;
using System.Text.Json;
using Dolly.Storage.IO;

namespace Dolly.Tests;

/// <summary>The outcome of one in-process CLI run.</summary>
internal sealed record CliRun(int ExitCode, string Out, string Err, byte[] Binary)
{
    public JsonElement Json() => JsonDocument.Parse(Out).RootElement.Clone();

    public override string ToString() => $"exit {ExitCode}\n--- stdout\n{Out}\n--- stderr\n{Err}";
}

/// <summary>
/// A scratch directory with a pool location, and a way to run <c>dolly</c> in-process against it: stdin,
/// stdout (text and binary) and the environment are the test's, never the process's.
/// </summary>
public abstract partial class CliTestBase : IDisposable
{
    protected CliTestBase()
    {
        Root = Path.Combine(Path.GetTempPath(), "dolly-cli-test-" + Guid.NewGuid().ToString("N")[..12]);
        Directory.CreateDirectory(Root);
        PoolDir = Path.Combine(Root, "pool");
    }

    protected string Root { get; }

    /// <summary>The default pool of these tests ($DOLLY_POOL).</summary>
    protected string PoolDir { get; }

    public void Dispose()
    {
        try
        {
            Directory.Delete(Root, recursive: true);
        }
        catch (IOException)
        {
        }

        GC.SuppressFinalize(this);
    }

    internal Task<CliRun> Dolly(params string[] args) => Run(args, stdin: null, environment: null, fileSystem: null);

    internal async Task<CliRun> Run(string[] args, byte[]? stdin, IReadOnlyDictionary<string, string?>? environment, IFileSystem? fileSystem, bool terminal = false)
    {
        var outText = new StringWriter();
        var errText = new StringWriter();
        var binary = new MemoryStream();
        var env = environment ?? new Dictionary<string, string?> { ["DOLLY_POOL"] = PoolDir };
        var host = new CliHost(
            outText,
            errText,
            () => new PipeStream(new MemoryStream(stdin ?? [], writable: false)),
            () => new NonClosingStream(binary),
            OutIsTerminal: terminal,
            ErrorIsTerminal: terminal,
            name => env.TryGetValue(name, out var v) ? v : null)
        {
            FileSystem = fileSystem,
        };
        int code = await Cli.RunAsync(args, host, TestContext.Current.CancellationToken);
        return new CliRun(code, outText.ToString(), errText.ToString(), binary.ToArray());
    }

    internal async Task<CliRun> Ok(params string[] args)
    {
        var r = await Dolly(args);
        Assert.True(r.ExitCode == 0, $"dolly {string.Join(' ', args)} failed: {r}");
        return r;
    }

    internal async Task<CliRun> Fails(int exitCode, string messagePart, params string[] args)
    {
        var r = await Dolly(args);
        Assert.True(r.ExitCode == exitCode, $"dolly {string.Join(' ', args)}: expected exit {exitCode}: {r}");
        var error = r.Err.Split('\n').FirstOrDefault(l => l.StartsWith("error: ", StringComparison.Ordinal));
        Assert.True(error is not null, $"no 'error: ' line: {r}");
        Assert.Contains(messagePart, error, StringComparison.Ordinal);
        Assert.DoesNotContain("   at ", r.Err, StringComparison.Ordinal);
        return r;
    }

    protected static byte[] RandomBytes(int length, int seed)
    {
        var data = new byte[length];
        new Random(seed).NextBytes(data);
        return data;
    }

    /// <summary>Random data with holes: 64 KiB pieces, about half of them zeros, and a ragged tail.</summary>
    protected static byte[] ImageWithHoles(int length, int seed)
    {
        var rng = new Random(seed);
        var data = new byte[length];
        for (int pos = 0; pos < length; pos += 65536)
        {
            if (rng.Next(2) == 0)
            {
                rng.NextBytes(data.AsSpan(pos, Math.Min(65536, length - pos)));
            }
        }

        return data;
    }

    /// <summary>True when the file has at least one hole (Linux SEEK_HOLE finds one before the end).</summary>
    protected static bool IsSparse(string path)
    {
        using var handle = File.OpenHandle(path);
        long length = RandomAccess.GetLength(handle);
        long hole = Native.Lseek((int)handle.DangerousGetHandle(), 0, Native.SeekHole);
        return hole >= 0 && hole < length;
    }

    private static partial class Native
    {
        public const int SeekHole = 4;

        [LibraryImport("libc", EntryPoint = "lseek")]
        public static partial long Lseek(int fd, long offset, int whence);
    }

    /// <summary>Stdin as a pipe: readable, length unknown, not seekable.</summary>
    private sealed class PipeStream(Stream inner) : Stream
    {
        public override bool CanRead => true;

        public override bool CanSeek => false;

        public override bool CanWrite => false;

        public override long Length => throw new NotSupportedException();

        public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }

        public override void Flush()
        {
        }

        public override int Read(byte[] buffer, int offset, int count) => inner.Read(buffer, offset, Math.Min(count, 65536 + 17));

        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();

        public override void SetLength(long value) => throw new NotSupportedException();

        public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();
    }

    private sealed class NonClosingStream(Stream inner) : Stream
    {
        public override bool CanRead => false;

        public override bool CanSeek => false;

        public override bool CanWrite => true;

        public override long Length => inner.Length;

        public override long Position { get => inner.Position; set => throw new NotSupportedException(); }

        public override void Flush() => inner.Flush();

        public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();

        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();

        public override void SetLength(long value) => throw new NotSupportedException();

        public override void Write(byte[] buffer, int offset, int count) => inner.Write(buffer, offset, count);

        public override void Write(ReadOnlySpan<byte> buffer) => inner.Write(buffer);
    }
}
