using System.CommandLine;
using System.Net;
using System.Security.Cryptography.X509Certificates;
using Dolly.Nbd;
using Dolly.Storage;

namespace Dolly.Commands;

/// <summary><c>dolly nbd serve|uri</c>: the NBD data path for qemu-img, nbdcopy, nbdfuse and the kernel.</summary>
internal static class NbdCommands
{
    public static Command Build(CliContext context)
    {
        var nbd = new Command("nbd", "Serve volumes (read-write) and snapshots (read-only) over NBD to qemu-img, nbdcopy, nbdfuse or the kernel");

        var socket = SocketOption();
        var tcp = new Option<string[]>("--tcp")
        {
            Description = "Also listen on TCP, e.g. 127.0.0.1:10809. Addresses other than loopback need --tls-cert and --tls-key",
            AllowMultipleArgumentsPerToken = true,
            HelpName = "ADDR:PORT",
        };
        var cert = new Option<string?>("--tls-cert") { Description = "PEM certificate for STARTTLS; with it, TCP clients must use TLS", HelpName = "FILE" };
        var key = new Option<string?>("--tls-key") { Description = "PEM private key of --tls-cert", HelpName = "FILE" };
        var clientCa = new Option<string?>("--tls-client-ca") { Description = "PEM CA certificate; clients must present a certificate it issued", HelpName = "FILE" };
        var maxConnections = new Option<int>("--max-connections") { Description = "Connections served at once; more are closed at accept", DefaultValueFactory = _ => 64 };
        var maxPayload = new Option<string>("--max-payload") { Description = "Largest READ or WRITE accepted", DefaultValueFactory = _ => "32Mi", HelpName = "SIZE" };
        var maxInFlight = new Option<string>("--max-in-flight") { Description = "Payload bytes one connection may hold at once (bounds its memory)", DefaultValueFactory = _ => "64Mi", HelpName = "SIZE" };
        var maxBuffer = new Option<string>("--max-buffer")
        {
            Description = "Payload buffer memory the whole server may hold (1 MiB of it reserved per connection); clients beyond it wait",
            DefaultValueFactory = _ => "128Mi",
            HelpName = "SIZE",
        };
        var idleTimeout = new Option<int>("--idle-timeout")
        {
            Description = "Seconds after which an idle connection gives its slot to a new client when the server is full, and a client that does not read its replies is disconnected; 0 = never",
            DefaultValueFactory = _ => 60,
            HelpName = "SECONDS",
        };
        var serve = new Command("serve", "Serve the pool's volumes and snapshots until interrupted (Ctrl-C). Unix socket (mode 0600) by default")
        {
            socket, tcp, cert, key, clientCa, maxConnections, maxPayload, maxInFlight, maxBuffer, idleTimeout,
        };
        serve.SetAction((parse, ct) => ServeAsync(
            context,
            parse,
            new ServeRequest(
                parse.GetValue(socket),
                parse.GetValue(tcp) ?? [],
                parse.GetValue(cert),
                parse.GetValue(key),
                parse.GetValue(clientCa),
                parse.GetValue(maxConnections),
                CliContext.ParseSize(parse.GetValue(maxPayload), "--max-payload"),
                CliContext.ParseSize(parse.GetValue(maxInFlight), "--max-in-flight"),
                CliContext.ParseSize(parse.GetValue(maxBuffer), "--max-buffer"),
                parse.GetValue(idleTimeout)),
            ct));
        nbd.Subcommands.Add(serve);

        var name = VolumeCommands.NameArgument("NAME", "Volume or snapshot");
        var uriSocket = SocketOption();
        var uriTcp = new Option<string?>("--tcp") { Description = "Give the TCP URI for this address instead of the unix socket one", HelpName = "ADDR:PORT" };
        var uriTls = new Option<bool>("--tls") { Description = "The server uses TLS (nbds://)" };
        var uri = new Command("uri", "Print the NBD URI of a volume or snapshot, as nbdinfo, nbdcopy, nbdfuse and qemu-img accept it") { name, uriSocket, uriTcp, uriTls };
        uri.SetAction(parse => Uri(context, parse, parse.GetValue(name)!, parse.GetValue(uriSocket), parse.GetValue(uriTcp), parse.GetValue(uriTls)));
        nbd.Subcommands.Add(uri);
        return nbd;
    }

    private static Option<string?> SocketOption() => new("--socket")
    {
        Description = "Unix socket path. Default: nbd.sock in the pool directory",
        HelpName = "PATH",
    };

    private sealed record ServeRequest(string? Socket, string[] Tcp, string? Cert, string? Key, string? ClientCa, int MaxConnections, long MaxPayload, long MaxInFlight, long MaxBuffer, int IdleTimeoutSeconds);

    private static async Task<int> ServeAsync(CliContext context, ParseResult parse, ServeRequest request, CancellationToken ct)
    {
        var endpoints = request.Tcp.Select(ParseEndpoint).ToList();
        if (request.IdleTimeoutSeconds < 0)
        {
            throw new CliFailureException(ExitCodes.InvalidArgument, $"--idle-timeout {request.IdleTimeoutSeconds} must be 0 (never) or a number of seconds");
        }

        if ((request.Cert is null) != (request.Key is null))
        {
            throw new CliFailureException(ExitCodes.InvalidArgument, "--tls-cert and --tls-key go together");
        }

        X509Certificate2? certificate = null;
        X509Certificate2? ca = null;
        try
        {
            if (request.Cert is not null)
            {
                certificate = LoadCertificate(request.Cert, request.Key!);
            }

            if (request.ClientCa is not null)
            {
                ca = LoadCa(request.ClientCa);
            }

            using var pool = context.OpenPool(parse);
            var options = new NbdServerOptions
            {
                UnixSocketPath = SocketPath(request.Socket, pool.Directory),
                TcpEndpoints = endpoints,
                Certificate = certificate,
                ClientCertificateAuthority = ca,
                MaxConnections = request.MaxConnections,
                MaxPayload = (int)Math.Clamp(request.MaxPayload, 0, int.MaxValue),
                MaxInFlightBytesPerConnection = request.MaxInFlight,
                MaxBufferBytes = request.MaxBuffer,
                IdleTimeout = request.IdleTimeoutSeconds == 0 ? Timeout.InfiniteTimeSpan : TimeSpan.FromSeconds(request.IdleTimeoutSeconds),
            };
            if (options.Validate() is { } problem)
            {
                throw new CliFailureException(ExitCodes.InvalidArgument, problem);
            }

            await using var server = new NbdServer(new ExportCatalog(pool), options);
            try
            {
                server.Start();
            }
            catch (InvalidOperationException ex)
            {
                throw new CliFailureException(ExitCodes.IoError, ex.Message);
            }

            var host = context.Host;
            await host.Out.WriteLineAsync($"serving pool '{pool.Directory}' over NBD (Ctrl-C stops)").ConfigureAwait(false);
            await host.Out.WriteLineAsync($"  unix socket {options.UnixSocketPath} (mode 0600)").ConfigureAwait(false);
            foreach (var ep in server.LocalEndpoints.OfType<IPEndPoint>())
            {
                await host.Out.WriteLineAsync($"  tcp {ep}{(certificate is null ? string.Empty : " (TLS required)")}").ConfigureAwait(false);
            }

            foreach (var d in pool.ListDevices())
            {
                await host.Out.WriteLineAsync($"  {(d.IsReadOnly ? "ro" : "rw")} {UnixUri(d.Name, options.UnixSocketPath!)}").ConfigureAwait(false);
            }

            await host.Out.FlushAsync(ct).ConfigureAwait(false);
            try
            {
                await Task.Delay(Timeout.Infinite, ct).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                await host.Out.WriteLineAsync("stopping: closing connections and committing").ConfigureAwait(false);
            }

            return ExitCodes.Ok;
        }
        finally
        {
            certificate?.Dispose();
            ca?.Dispose();
        }
    }

    private static int Uri(CliContext context, ParseResult parse, string name, string? socket, string? tcp, bool tls)
    {
        if (Names.Validate(name) is { } bad)
        {
            throw new CliFailureException(ExitCodes.InvalidName, bad.Message);
        }

        var (dir, _) = context.PoolDirectory(parse);
        IPEndPoint? endpoint = tcp is null ? null : ParseEndpoint(tcp);

        // Name a device that exists. While a server holds the pool it cannot be opened here; the server then
        // answers an unknown name itself (NBD_REP_ERR_UNKNOWN), so the URI is printed unchecked.
        var opened = Pool.Open(dir, context.Host.FileSystem);
        if (opened.IsOk)
        {
            using var pool = opened.Value;
            pool.GetDevice(name).OrFail();
        }
        else if (opened.Error.Code != StorageErrorCode.InUse)
        {
            throw new CliFailureException(opened.Error);
        }

        if (endpoint is { } ep)
        {
            string host = ep.AddressFamily == System.Net.Sockets.AddressFamily.InterNetworkV6 ? $"[{ep.Address}]" : ep.Address.ToString();
            context.Host.Out.WriteLine($"{(tls ? "nbds" : "nbd")}://{host}:{ep.Port}/{name}");
        }
        else
        {
            context.Host.Out.WriteLine(UnixUri(name, SocketPath(socket, dir)));
        }

        return ExitCodes.Ok;
    }

    /// <summary>The unix socket URI (libnbd's nbd+unix scheme, which qemu-img and nbdfuse accept too).</summary>
    public static string UnixUri(string name, string socketPath) => $"nbd+unix:///{name}?socket={socketPath}";

    private static string SocketPath(string? given, string poolDirectory) =>
        Path.GetFullPath(given ?? Path.Combine(poolDirectory, "nbd.sock"));

    internal static IPEndPoint ParseEndpoint(string text) => ParseEndpoint(text, "--tcp");

    internal static IPEndPoint ParseEndpoint(string text, string option)
    {
        if (IPEndPoint.TryParse(text, out var ep) && ep.Port != 0)
        {
            return ep;
        }

        throw new CliFailureException(ExitCodes.InvalidArgument, $"{option} '{text}' is not an address and port such as 127.0.0.1:10809");
    }

    internal static X509Certificate2 LoadCertificate(string certFile, string keyFile)
    {
        try
        {
            return X509Certificate2.CreateFromPemFile(certFile, keyFile);
        }
        catch (Exception ex) when (ex is IOException or System.Security.Cryptography.CryptographicException or UnauthorizedAccessException)
        {
            throw new CliFailureException(ExitCodes.InvalidArgument, $"cannot load the TLS certificate '{certFile}' with key '{keyFile}': {ex.Message}");
        }
    }

    internal static X509Certificate2 LoadCa(string file)
    {
        try
        {
            return X509CertificateLoader.LoadCertificateFromFile(file);
        }
        catch (Exception ex) when (ex is IOException or System.Security.Cryptography.CryptographicException or UnauthorizedAccessException)
        {
            throw new CliFailureException(ExitCodes.InvalidArgument, $"cannot load the client CA certificate '{file}': {ex.Message}");
        }
    }
}
