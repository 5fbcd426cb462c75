namespace Dolly;

/// <summary>
/// What the CLI sees of the process: text writers, binary stdin/stdout (for <c>import -</c> and
/// <c>export -</c>), whether stderr is a terminal, and the environment. Tests substitute all of it, so a
/// command runs in-process exactly as it would from a shell.
/// </summary>
internal sealed record CliHost(
    TextWriter Out,
    TextWriter Error,
    Func<Stream> OpenStandardInput,
    Func<Stream> OpenStandardOutput,
    bool OutIsTerminal,
    bool ErrorIsTerminal,
    Func<string, string?> GetEnvironmentVariable)
{
    /// <summary>The file system pools are opened through; null for the real one (tests inject failures here).</summary>
    public Dolly.Storage.IO.IFileSystem? FileSystem { get; init; }

    /// <summary>The real console of this process.</summary>
    public static CliHost FromConsole() => new(
        Console.Out,
        Console.Error,
        Console.OpenStandardInput,
        Console.OpenStandardOutput,
        !Console.IsOutputRedirected,
        !Console.IsErrorRedirected,
        Environment.GetEnvironmentVariable);

    /// <summary>A host with the given writers, no stdin, stdout discarded, and the process environment.</summary>
    public static CliHost ForWriters(TextWriter stdout, TextWriter stderr) => new(
        stdout,
        stderr,
        () => Stream.Null,
        () => Stream.Null,
        OutIsTerminal: false,
        ErrorIsTerminal: false,
        Environment.GetEnvironmentVariable);
}
