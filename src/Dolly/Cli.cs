using System.CommandLine;
using System.CommandLine.Help;
using System.CommandLine.Invocation;
using Dolly.Commands;

namespace Dolly;

/// <summary>
/// The <c>dolly</c> command line. <see cref="RunAsync(string[], CliHost, CancellationToken)"/> is the whole
/// program: parse, run one command, map every expected failure to <c>error: message</c> on stderr and its
/// exit code (see <see cref="ExitCodes"/>).
/// </summary>
internal static class Cli
{
    /// <summary>How long a command has, after SIGTERM or Ctrl-C, to stop cleanly before the process exits anyway.</summary>
    public static readonly TimeSpan StopTimeout = TimeSpan.FromSeconds(60);

    /// <summary>Runs the CLI with the given writers (stdin empty, stdout binary output discarded).</summary>
    public static Task<int> RunAsync(string[] args, TextWriter stdout, TextWriter stderr) =>
        RunAsync(args, CliHost.ForWriters(stdout, stderr));

    /// <summary>Runs the CLI against a host and returns the exit code.</summary>
    public static async Task<int> RunAsync(string[] args, CliHost host, CancellationToken cancellationToken = default)
    {
        // Bare "dolly" shows the help rather than an error.
        args = args.Length == 0 ? ["--help"] : args;
        var context = new CliContext(host, args);
        var root = BuildRoot(context);
        var parsed = root.Parse(args);
        if (parsed.Errors.Count > 0 && parsed.Action is not HelpAction and not HelpWithExitCodes)
        {
            foreach (var e in parsed.Errors)
            {
                await host.Error.WriteLineAsync($"error: {e.Message}").ConfigureAwait(false);
            }

            await host.Error.WriteLineAsync($"Run '{CommandPath(parsed)} --help' for usage.").ConfigureAwait(false);
            return ExitCodes.Usage;
        }

        try
        {
            // Ctrl-C and SIGTERM are the process's (ProcessSignals, in Program): they cancel cancellationToken, and
            // long-running commands (serve, up) get StopTimeout to close cleanly. System.CommandLine takes the signals
            // only once the command's first await yields, too late for a signal during start-up, so it takes none.
            var config = new InvocationConfiguration { Output = host.Out, Error = host.Error, EnableDefaultExceptionHandler = false, ProcessTerminationTimeout = null };
            return await parsed.InvokeAsync(config, cancellationToken).ConfigureAwait(false);
        }
        catch (CliFailureException ex)
        {
            await host.Error.WriteLineAsync($"error: {ex.Message}").ConfigureAwait(false);
            return ex.ExitCode;
        }
        catch (Dolly.Storage.StorageException ex)
        {
            await host.Error.WriteLineAsync($"error: {ex.Message}").ConfigureAwait(false);
            return ExitCodes.For(ex.Error.Code);
        }
        catch (IOException ex)
        {
            // The environment failed (a directory that cannot be created, a disk error outside the engine):
            // not a bug, so no stack trace.
            await host.Error.WriteLineAsync($"error: {ex.Message}").ConfigureAwait(false);
            return ExitCodes.IoError;
        }
        catch (UnauthorizedAccessException ex)
        {
            await host.Error.WriteLineAsync($"error: {ex.Message}").ConfigureAwait(false);
            return ExitCodes.IoError;
        }
        catch (OperationCanceledException)
        {
            await host.Error.WriteLineAsync("error: cancelled").ConfigureAwait(false);
            return 130;
        }
    }

    private static string CommandPath(ParseResult parsed)
    {
        var names = new List<string>();
        for (var r = parsed.CommandResult; r is not null; r = r.Parent as System.CommandLine.Parsing.CommandResult)
        {
            // The root's name is the executable's file name, which is not "dolly" under a test host.
            names.Add(r.Command is RootCommand ? "dolly" : r.Command.Name);
        }

        names.Reverse();
        return string.Join(' ', names);
    }

    private static RootCommand BuildRoot(CliContext context)
    {
        var root = new RootCommand(
            "Dolly: thin block volumes with instant copy-on-write snapshots, clones and revert.\n" +
            "Start with 'dolly demo'.");
        root.Options.Add(context.PoolOption);
        root.Subcommands.Add(PoolCommands.Build(context));
        root.Subcommands.Add(VolumeCommands.Build(context));
        root.Subcommands.Add(SnapshotCommands.Build(context));
        var repo = RepoCommands.Build(context);
        repo.Subcommands.Add(RepoDevServer.Build(context));
        root.Subcommands.Add(repo);
        root.Subcommands.Add(NbdCommands.Build(context));
        root.Subcommands.Add(UpCommand.Build(context));
        foreach (var command in MountCommands.Build(context))
        {
            root.Subcommands.Add(command);
        }

        root.Subcommands.Add(NodeCommand.Build(context));
        root.Subcommands.Add(BenchCommand.Build(context));
        root.Subcommands.Add(DemoCommand.Build(context));

        // System.CommandLine 2.0 has no help epilogue: wrap the help action to print the exit codes after it.
        foreach (var option in root.Options)
        {
            if (option is HelpOption help && help.Action is HelpAction inner)
            {
                help.Action = new HelpWithExitCodes(inner, context);
            }
        }

        return root;
    }

    /// <summary>The default help, followed (for <c>dolly --help</c> only) by the exit codes and pool defaults.</summary>
    private sealed class HelpWithExitCodes(HelpAction inner, CliContext context) : SynchronousCommandLineAction
    {
        public override bool ClearsParseErrors => true;

        public override int Invoke(ParseResult parseResult)
        {
            int code = inner.Invoke(parseResult);
            if (parseResult.CommandResult.Command is RootCommand)
            {
                context.Host.Out.WriteLine(ExitCodes.HelpText);
            }

            return code;
        }
    }
}
