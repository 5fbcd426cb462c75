using Dolly;

return await Cli.RunAsync(args, CliHost.FromConsole()).ConfigureAwait(false);
