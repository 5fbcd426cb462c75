using System.CommandLine;
using Dolly.Api;
using Dolly.Csi;
using Dolly.Nbd;
using Microsoft.Extensions.Logging;

namespace Dolly.Commands;

/// <summary>
/// <c>dolly up</c>: everything on one machine with one state directory: the Kubernetes-compatible API server
/// (kubeconfig written for kubectl) and the NBD server over the pool.
/// </summary>
internal static class UpCommand
{
    public static Command Build(CliContext context)
    {
        var address = new Option<string>("--address") { Description = "Address of the API server", DefaultValueFactory = _ => "127.0.0.1", HelpName = "IP" };
        var port = new Option<int>("--port") { Description = "Port of the API server (0 picks a free one)", DefaultValueFactory = _ => 6443 };
        var verbose = new Option<bool>("--verbose", "-v") { Description = "Log requests and connections" };
        var up = new Command(
            "up",
            "Run Dolly on this machine until Ctrl-C: the Kubernetes-compatible API server (HTTPS, token; a kubeconfig is written next to the pool), " +
            "the NBD server (unix socket nbd.sock in the pool directory) and the CSI driver (csi.sock). State: the pool directory and, beside it, the API server's directory (the pool's name + '-api').")
        {
            address, port, verbose,
        };
        up.SetAction((parse, ct) => RunAsync(context, parse, parse.GetValue(address)!, parse.GetValue(port), parse.GetValue(verbose), ct));
        return up;
    }

    private static async Task<int> RunAsync(CliContext context, ParseResult parse, string address, int port, bool verbose, CancellationToken ct)
    {
        using var pool = context.OpenPool(parse);
        string stateDir = CliContext.BesidePool(pool.Directory, "-api");
        using var loggers = LoggerFactory.Create(b => b
            .AddSimpleConsole(o =>
            {
                o.SingleLine = true;
                o.TimestampFormat = "HH:mm:ss ";
            })
            .SetMinimumLevel(verbose ? LogLevel.Information : LogLevel.Warning));

        ApiServer api;
        try
        {
            api = new ApiServer(new ApiServerOptions(stateDir, address, port), loggers);
        }
        catch (ArgumentException ex)
        {
            throw new CliFailureException(ExitCodes.InvalidArgument, ex.Message);
        }

        await using (api.ConfigureAwait(false))
        {
            try
            {
                await api.StartAsync(ct).ConfigureAwait(false);
            }
            catch (Exception ex) when (ex is IOException or InvalidOperationException)
            {
                throw new CliFailureException(ExitCodes.IoError, $"cannot start the API server on {address}:{port}: {ex.Message}");
            }

            // The node service attaches volumes through this process's own NBD server (nbdfuse + loop here,
            // where no /dev/nbd exists), so it gets the NBD socket; the node is this machine.
            var csi = new CsiServer(
                pool,
                new CsiServerOptions
                {
                    SocketPath = Path.Combine(pool.Directory, "csi.sock"),
                    NodeId = Environment.MachineName,
                    NbdSocketPath = Path.Combine(pool.Directory, "nbd.sock"),
                },
                loggers);
            await using var csiLifetime = csi.ConfigureAwait(false);
            try
            {
                await csi.StartAsync(ct).ConfigureAwait(false);
            }
            catch (Exception ex) when (ex is IOException or InvalidOperationException)
            {
                throw new CliFailureException(ExitCodes.IoError, $"cannot start the CSI driver on {csi.SocketPath}: {ex.Message}");
            }

            var nbdOptions = new NbdServerOptions { UnixSocketPath = Path.Combine(pool.Directory, "nbd.sock") };
            var nbd = new NbdServer(new ExportCatalog(pool), nbdOptions, loggers.CreateLogger<NbdServer>());
            await using (nbd.ConfigureAwait(false))
            {
                try
                {
                    nbd.Start();
                }
                catch (InvalidOperationException ex)
                {
                    throw new CliFailureException(ExitCodes.IoError, ex.Message);
                }

                var o = context.Host.Out;
                await o.WriteLineAsync($"Dolly is up (Ctrl-C stops it)").ConfigureAwait(false);
                await o.WriteLineAsync($"  API server   {api.Url}").ConfigureAwait(false);
                await o.WriteLineAsync($"  kubeconfig   {api.KubeconfigPath}").ConfigureAwait(false);
                await o.WriteLineAsync($"  pool         {pool.Directory}").ConfigureAwait(false);
                await o.WriteLineAsync($"  NBD          {nbdOptions.UnixSocketPath}").ConfigureAwait(false);
                await o.WriteLineAsync($"  CSI          {csi.SocketPath} (Identity, Controller, GroupController, Node, SnapshotMetadata)").ConfigureAwait(false);
                await o.WriteLineAsync($"try: export KUBECONFIG={api.KubeconfigPath}; kubectl get namespaces").ConfigureAwait(false);
                await o.FlushAsync(ct).ConfigureAwait(false);
                try
                {
                    await Task.Delay(Timeout.Infinite, ct).ConfigureAwait(false);
                }
                catch (OperationCanceledException)
                {
                    await o.WriteLineAsync("stopping: closing NBD connections, stopping the CSI driver and the API server, committing the pool").ConfigureAwait(false);
                }
            }

            await api.StopAsync(CancellationToken.None).ConfigureAwait(false);
        }

        return ExitCodes.Ok;
    }
}
