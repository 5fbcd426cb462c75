using System.CommandLine;
using System.Text.Json;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Console;

namespace Dolly.Logging;

/// <summary>
/// The log output of the long-running commands (<c>dolly up</c>, <c>dolly node</c>): <c>--log-format console</c>
/// (one human line per event on stdout, as before) or <c>--log-format json</c>, Microsoft.Extensions.Logging's
/// JSON console formatter with one object per line on stderr: Timestamp (UTC, ISO 8601), EventId, LogLevel,
/// Category, Message, State (the LoggerMessage's named values, e.g. the controllers' Key "namespace/name")
/// and Scopes. Stderr, so that stdout keeps the start-up summary for people and stderr is nothing but log
/// objects for a collector.
/// </summary>
internal static class LogSetup
{
    public const string Console = "console";
    public const string Json = "json";

    /// <summary>The <c>--log-format</c> option, accepting only the formats above.</summary>
    public static Option<string> FormatOption()
    {
        var option = new Option<string>("--log-format")
        {
            Description = $"Log as '{Console}' lines on stdout or as '{Json}': one JSON object per line on stderr (timestamp, level, category, event id, message, state, scopes)",
            DefaultValueFactory = _ => Console,
            HelpName = $"{Console}|{Json}",
        };
        option.AcceptOnlyFromAmong(Console, Json);
        return option;
    }

    /// <summary>A logger factory writing in <paramref name="format"/>: warnings and worse, or everything from Information with <paramref name="verbose"/>.</summary>
    public static ILoggerFactory Create(string format, bool verbose) => LoggerFactory.Create(b =>
    {
        if (format == Json)
        {
            b.AddConsole(o =>
            {
                o.FormatterName = ConsoleFormatterNames.Json;
                o.LogToStandardErrorThreshold = LogLevel.Trace;
            });
            b.AddJsonConsole(o =>
            {
                o.IncludeScopes = true;
                o.UseUtcTimestamp = true;
                o.TimestampFormat = "yyyy'-'MM'-'dd'T'HH':'mm':'ss'.'fff'Z'";
                o.JsonWriterOptions = new JsonWriterOptions { Indented = false };
            });
        }
        else
        {
            b.AddSimpleConsole(o =>
            {
                o.SingleLine = true;
                o.TimestampFormat = "HH:mm:ss ";
            });
        }

        b.SetMinimumLevel(verbose ? LogLevel.Information : LogLevel.Warning);
    });
}
