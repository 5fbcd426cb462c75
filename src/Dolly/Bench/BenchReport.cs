using System.Globalization;
using System.Runtime.InteropServices;
using Spectre.Console;

namespace Dolly.Bench;

/// <summary>One measured figure, with its target and verdict when it has one.</summary>
internal sealed record BenchFigure(
    string Group,
    string Name,
    double Value,
    string Unit,
    string Display,
    string? Target,
    bool? Pass,
    string? Note = null,
    IReadOnlyDictionary<string, double>? Details = null);

/// <summary>Rendering of figures as a table and as JSON, and a description of the machine.</summary>
internal static class BenchReport
{
    /// <summary>
    /// The p-th percentile of a sample (nearest rank), with the median (p = 50) the mean of the middle two for
    /// an even count; NaN for no values.
    /// </summary>
    public static double Percentile(List<double> values, double p)
    {
        if (values.Count == 0)
        {
            return double.NaN;
        }

        var sorted = values.Order().ToList();
        if (p == 50)
        {
            int mid = sorted.Count / 2;
            return sorted.Count % 2 == 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
        }

        int index = (int)Math.Ceiling(p / 100 * sorted.Count) - 1;
        return sorted[Math.Clamp(index, 0, sorted.Count - 1)];
    }

    /// <summary>The median of a sample.</summary>
    public static double Median(List<double> values) => Percentile(values, 50);

    public static Table Table(IReadOnlyList<BenchFigure> figures)
    {
        var table = new Table().Border(TableBorder.Rounded);
        table.AddColumn("MEASURE");
        table.AddColumn(new TableColumn("VALUE").RightAligned());
        table.AddColumn("TARGET");
        table.AddColumn("RESULT");
        table.AddColumn("NOTE");
        string? group = null;
        foreach (var f in figures)
        {
            if (f.Group != group)
            {
                group = f.Group;
                table.AddRow($"[bold]{Markup.Escape(group)}[/]", string.Empty, string.Empty, string.Empty, string.Empty);
            }

            string result = f.Pass switch
            {
                true => "[green]PASS[/]",
                false => "[red]MISS[/]",
                null => "-",
            };
            table.AddRow("  " + Markup.Escape(f.Name), Markup.Escape(f.Display), Markup.Escape(f.Target ?? "-"), result, Markup.Escape(f.Note ?? string.Empty));
        }

        return table;
    }

    public static BenchJson Json(IReadOnlyList<BenchFigure> figures, string command, bool quick, int blockSize, BenchMachineJson machine, DateTimeOffset date, TimeSpan duration) => new(
        "1",
        date,
        command,
        quick,
        blockSize,
        machine,
        Math.Round(duration.TotalSeconds, 1),
        figures.Select(f => new BenchFigureJson(f.Group, f.Name, Math.Round(f.Value, 4), f.Unit, f.Display, f.Target, f.Pass, f.Note, f.Details?.ToDictionary(kv => kv.Key, kv => Math.Round(kv.Value, 4)))).ToList());

    public static BenchMachineJson Machine(string directory) => new(
        Environment.ProcessorCount,
        CpuModel(),
        FileSystemOf(directory),
        directory,
        RuntimeInformation.OSDescription,
        RuntimeInformation.FrameworkDescription,
        LoadAverage());

    /// <summary>The 1, 5 and 15 minute load averages (Linux): a busy machine explains noisy figures.</summary>
    public static string LoadAverage()
    {
        try
        {
            return File.Exists("/proc/loadavg") ? string.Join(' ', File.ReadAllText("/proc/loadavg").Split(' ').Take(3)) : "unknown";
        }
        catch (IOException)
        {
            return "unknown";
        }
    }

    private static string CpuModel()
    {
        try
        {
            if (File.Exists("/proc/cpuinfo"))
            {
                foreach (var line in File.ReadLines("/proc/cpuinfo"))
                {
                    if (line.StartsWith("model name", StringComparison.Ordinal))
                    {
                        return line[(line.IndexOf(':', StringComparison.Ordinal) + 1)..].Trim();
                    }
                }
            }
        }
        catch (IOException)
        {
        }

        return RuntimeInformation.ProcessArchitecture.ToString();
    }

    /// <summary>The file system type and device of the mount holding <paramref name="directory"/> (Linux).</summary>
    private static string FileSystemOf(string directory)
    {
        try
        {
            if (!File.Exists("/proc/mounts"))
            {
                return "unknown";
            }

            string full = Path.GetFullPath(directory);
            string best = string.Empty, result = "unknown";
            foreach (var line in File.ReadLines("/proc/mounts"))
            {
                var parts = line.Split(' ');
                if (parts.Length < 3)
                {
                    continue;
                }

                string mount = parts[1].Replace("\\040", " ", StringComparison.Ordinal);
                bool under = full == mount || full.StartsWith(mount.TrimEnd('/') + "/", StringComparison.Ordinal);
                if (under && mount.Length >= best.Length)
                {
                    best = mount;
                    result = $"{parts[2]} on {parts[0]} (mounted at {mount})";
                }
            }

            return result;
        }
        catch (IOException)
        {
            return "unknown";
        }
    }

    public static string Ms(double ms) => ms.ToString(ms < 10 ? "0.00" : "0.0", CultureInfo.InvariantCulture) + " ms";

    public static string Num(double v, string format = "0.00") => v.ToString(format, CultureInfo.InvariantCulture);
}
