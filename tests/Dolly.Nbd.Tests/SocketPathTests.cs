using System.Net.Sockets;
using System.Runtime.InteropServices;
using System.Text;
using Dolly.Storage;

namespace Dolly.Nbd.Tests;

public sealed partial class SocketPathTests : IDisposable
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "dolly-nbd-sock-" + Guid.NewGuid().ToString("N")[..12]);

    public SocketPathTests() => Directory.CreateDirectory(_dir);

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public async Task Start_RegularFileAtSocketPath_RefusesAndKeepsTheFile()
    {
        using var pool = Pool.Create(Path.Combine(_dir, "pool")).Value;
        string path = Path.Combine(_dir, "data.txt");
        await File.WriteAllTextAsync(path, "precious", TestContext.Current.CancellationToken);
        var server = new NbdServer(new ExportCatalog(pool), new NbdServerOptions { UnixSocketPath = path });
        var ex = Assert.Throws<InvalidOperationException>(server.Start);
        Assert.Contains("not a socket", ex.Message, StringComparison.Ordinal);
        Assert.Equal("precious", await File.ReadAllTextAsync(path, TestContext.Current.CancellationToken));
        await server.DisposeAsync();
    }

    [Fact]
    public async Task Start_StaleSocketAtSocketPath_ReplacesIt()
    {
        using var pool = Pool.Create(Path.Combine(_dir, "pool")).Value;
        string path = Path.Combine(_dir, "stale.sock");

        // A bound socket whose process is gone: bind with libc and close without unlinking the file (.NET's
        // Socket unlinks the path on close, which a killed server would not).
        Native.BindAndLeave(path);
        Assert.True(File.Exists(path));

        await using var server = new NbdServer(new ExportCatalog(pool), new NbdServerOptions { UnixSocketPath = path });
        server.Start();
        using var client = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        await client.ConnectAsync(new UnixDomainSocketEndPoint(path), TestContext.Current.CancellationToken);
        Assert.True(client.Connected);
    }

    private static partial class Native
    {
        [LibraryImport("libc", EntryPoint = "socket")]
        private static partial int Socket(int domain, int type, int protocol);

        [LibraryImport("libc", EntryPoint = "bind")]
        private static partial int Bind(int fd, byte[] address, int length);

        [LibraryImport("libc", EntryPoint = "close")]
        private static partial int Close(int fd);

        public static void BindAndLeave(string path)
        {
            int fd = Socket(1, 1, 0); // AF_UNIX, SOCK_STREAM
            Assert.True(fd >= 0, "socket() failed");
            var address = new byte[110]; // struct sockaddr_un: u16 family, char path[108]
            address[0] = 1;
            Encoding.UTF8.GetBytes(path).CopyTo(address, 2);
            Assert.Equal(0, Bind(fd, address, address.Length));
            Assert.Equal(0, Close(fd));
        }
    }
}
