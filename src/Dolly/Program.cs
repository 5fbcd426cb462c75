using Dolly;

// Signals first: one that arrives while a command is still starting must stop it too.
using var signals = new ProcessSignals(Cli.StopTimeout, Console.Error);
return await Cli.RunAsync(args, CliHost.FromConsole(), signals.Stopping).ConfigureAwait(false);
