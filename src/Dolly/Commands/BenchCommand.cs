using System.CommandLine;

namespace Dolly.Commands;

/// <summary><c>dolly bench engine</c>.</summary>
internal static class BenchCommand
{
    public static Command Build(CliContext context)
    {
        var bench = new Command("bench", "Benchmarks");
        var engine = new Command("engine", "Measure the storage engine");
        engine.SetAction(_ => context.Host.Out.WriteLine("todo"));
        bench.Subcommands.Add(engine);
        return bench;
    }
}
