using System.CommandLine;

namespace Dolly.Commands;

/// <summary><c>dolly demo</c>.</summary>
internal static class DemoCommand
{
    public static Command Build(CliContext context)
    {
        var demo = new Command("demo", "demo");
        demo.SetAction(_ => context.Host.Out.WriteLine("todo"));
        return demo;
    }
}
