using System.Diagnostics;
using Dolly.Storage;
using Spectre.Console;

namespace Dolly.Commands;

/// <summary>
/// Progress of a long transfer: a Spectre.Console progress bar on stderr when stderr is a terminal, and a
/// single summary line otherwise (logs and pipes get one line, not a stream of redraws).
/// </summary>
internal static class TransferProgress
{
    /// <summary>Runs <paramref name="work"/>, which reports bytes done through its argument.</summary>
    public static T Run<T>(CliContext context, string description, long? total, Func<Action<long>, T> work)
    {
        if (!context.Host.ErrorIsTerminal)
        {
            return work(_ => { });
        }

        return context.Error.Progress()
            .AutoClear(false)
            .HideCompleted(false)
            .Columns(
                new TaskDescriptionColumn(),
                new ProgressBarColumn(),
                new PercentageColumn(),
                new DownloadedColumn(),
                new TransferSpeedColumn(),
                new RemainingTimeColumn())
            .Start(ctx =>
            {
                var task = ctx.AddTask(Markup.Escape(description), maxValue: Math.Max(1, total ?? 1));
                task.IsIndeterminate = total is null;
                var result = work(done =>
                {
                    if (total is null && done > task.MaxValue)
                    {
                        task.MaxValue = done;
                    }

                    task.Value = done;
                });
                task.Value = task.MaxValue;
                task.StopTask();
                return result;
            });
    }

    /// <summary>"1.5 GiB in 2.10 s (731 MiB/s)".</summary>
    public static string Rate(long bytes, TimeSpan elapsed)
    {
        double seconds = Math.Max(elapsed.TotalSeconds, 1e-6);
        return $"{ByteSize.Format(bytes)} in {seconds:0.00} s ({ByteSize.Format((long)(bytes / seconds))}/s)";
    }

    public static TimeSpan Since(long startTimestamp) => Stopwatch.GetElapsedTime(startTimestamp);
}
