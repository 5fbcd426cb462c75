using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using Dolly.Storage;
using Spectre.Console;

namespace Dolly;

/// <summary>
/// State shared by the commands of one invocation: the host, the global <c>--pool</c> option, pool
/// resolution and output helpers (Spectre tables or JSON).
/// </summary>
internal sealed class CliContext
{
    private IAnsiConsole? _out;
    private IAnsiConsole? _error;

    public CliContext(CliHost host, IReadOnlyList<string> args)
    {
        Host = host;
        Args = args;
        PoolOption = new Option<string?>("--pool")
        {
            Description = "Pool directory. Default: $DOLLY_POOL, else $XDG_DATA_HOME/dolly/pool, else ~/.local/share/dolly/pool (created on first use)",
            Recursive = true,
            HelpName = "DIR",
        };
    }

    public CliHost Host { get; }

    /// <summary>The command line as given (for reports that quote the command that made them).</summary>
    public IReadOnlyList<string> Args { get; }

    public Option<string?> PoolOption { get; }

    /// <summary>Tables and text for stdout.</summary>
    public IAnsiConsole Out => _out ??= CreateConsole(Host.Out, Host.OutIsTerminal);

    /// <summary>Progress and summaries for stderr.</summary>
    public IAnsiConsole Error => _error ??= CreateConsole(Host.Error, Host.ErrorIsTerminal);

    private static IAnsiConsole CreateConsole(TextWriter writer, bool terminal)
    {
        var console = AnsiConsole.Create(new AnsiConsoleSettings
        {
            Out = new AnsiConsoleOutput(writer),
            // The host already knows whether this stream is a terminal; Spectre's own detection would look at
            // the process console, which is wrong for a test host.
            Ansi = terminal ? AnsiSupport.Yes : AnsiSupport.No,
            ColorSystem = terminal ? ColorSystemSupport.Detect : ColorSystemSupport.NoColors,
            Interactive = terminal ? InteractionSupport.Yes : InteractionSupport.No,
        });
        if (!terminal)
        {
            // Redirected output (a pipe, a file, a test) must not wrap tables at an imagined 80 columns.
            console.Profile.Width = 200;
        }

        return console;
    }

    /// <summary>The default pool directory (no --pool).</summary>
    public string DefaultPoolDirectory()
    {
        var env = Host.GetEnvironmentVariable("DOLLY_POOL");
        if (!string.IsNullOrEmpty(env))
        {
            return Path.GetFullPath(env);
        }

        var xdg = Host.GetEnvironmentVariable("XDG_DATA_HOME");
        if (!string.IsNullOrEmpty(xdg))
        {
            return Path.Combine(Path.GetFullPath(xdg), "dolly", "pool");
        }

        var home = Host.GetEnvironmentVariable("HOME");
        if (string.IsNullOrEmpty(home))
        {
            home = Environment.GetFolderPath(Environment.SpecialFolder.UserProfile);
        }

        return Path.Combine(home, ".local", "share", "dolly", "pool");
    }

    /// <summary>The pool directory this invocation uses, and whether it was named explicitly.</summary>
    public (string Directory, bool Explicit) PoolDirectory(ParseResult parse)
    {
        var given = parse.GetValue(PoolOption);
        return string.IsNullOrWhiteSpace(given) ? (DefaultPoolDirectory(), false) : (Path.GetFullPath(given), true);
    }

    /// <summary>
    /// A directory beside the pool named after it: <c>/data/pool</c> with <c>-api</c> is <c>/data/pool-api</c>
    /// (dolly up's API server state), with <c>-mounts</c> <c>/data/pool-mounts</c> (dolly mount's records).
    /// </summary>
    public static string BesidePool(string poolDirectory, string suffix)
    {
        string pool = Path.TrimEndingDirectorySeparator(Path.GetFullPath(poolDirectory));
        return Path.Combine(Path.GetDirectoryName(pool) ?? pool, Path.GetFileName(pool) + suffix);
    }

    /// <summary>
    /// Opens the pool. The default pool is created on first use (a missing or empty directory); a pool named
    /// with --pool must exist, so a typo never silently creates an empty pool.
    /// </summary>
    public Pool OpenPool(ParseResult parse, bool createIfMissing = false)
    {
        var (dir, isExplicit) = PoolDirectory(parse);
        if (File.Exists(dir))
        {
            throw new CliFailureException(ExitCodes.NotAPool, $"'{dir}' is a file, not a pool directory");
        }

        if ((!isExplicit || createIfMissing) && !File.Exists(Path.Combine(dir, "meta.dolly")) && IsMissingOrEmpty(dir))
        {
            var created = Pool.Create(dir, null, Host.FileSystem);
            if (created.IsOk)
            {
                Host.Error.WriteLine($"created the {(isExplicit ? string.Empty : "default ")}pool in '{dir}'");
                return created.Value;
            }

            throw new CliFailureException(created.Error);
        }

        var opened = Pool.Open(dir, Host.FileSystem);
        if (!opened.IsOk && isExplicit && opened.Error.Code == StorageErrorCode.NotFound)
        {
            throw new CliFailureException(ExitCodes.NotAPool, $"pool directory '{dir}' does not exist; create a pool there with 'dolly --pool {dir} pool init'");
        }

        return opened.OrFail();
    }

    private static bool IsMissingOrEmpty(string dir)
    {
        try
        {
            return !Directory.Exists(dir) || !Directory.EnumerateFileSystemEntries(dir).Any(e => Path.GetFileName(e) != "pool.lock");
        }
        catch (IOException)
        {
            return false;
        }
        catch (UnauthorizedAccessException)
        {
            return false;
        }
    }

    /// <summary>An <c>-o table|json</c> option.</summary>
    public static Option<string> OutputOption()
    {
        var o = new Option<string>("--output", "-o")
        {
            Description = "Output format",
            DefaultValueFactory = _ => "table",
            HelpName = "table|json",
        };
        o.AcceptOnlyFromAmong("table", "json");
        return o;
    }

    /// <summary>Parses a size argument ("10Gi", "512M", "4096") or fails naming what it was for.</summary>
    public static long ParseSize(string? text, string what)
    {
        if (!ByteSize.TryParse(text, out long bytes, out string error))
        {
            throw new CliFailureException(ExitCodes.InvalidArgument, $"{what}: {error}");
        }

        return bytes;
    }

    /// <summary>Writes a JSON document to stdout.</summary>
    public void WriteJson<T>(T value, System.Text.Json.Serialization.Metadata.JsonTypeInfo<T> type)
    {
        Host.Out.WriteLine(JsonSerializer.Serialize(value, type));
    }

    /// <summary>Formats a byte count for a table: binary units, "-" for zero.</summary>
    public static string Bytes(long bytes) => bytes == 0 ? "0" : ByteSize.Format(bytes);

    /// <summary>Formats a time for a table: local-independent, to the second.</summary>
    public static string Time(DateTimeOffset t) => t.UtcDateTime.ToString("yyyy-MM-dd HH:mm:ss'Z'", CultureInfo.InvariantCulture);

    /// <summary>A table in Dolly's style.</summary>
    public static Table NewTable(params string[] columns)
    {
        var table = new Table().Border(TableBorder.Simple);
        foreach (var c in columns)
        {
            var column = new TableColumn(c);
            if (c is "SIZE" or "ALLOCATED" or "EXCLUSIVE" or "OFFSET" or "LENGTH" or "VALUE")
            {
                column.RightAligned();
            }

            table.AddColumn(column);
        }

        return table;
    }
}
