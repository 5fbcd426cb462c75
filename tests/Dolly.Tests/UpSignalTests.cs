using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Text;

namespace Dolly.Tests;

/// <summary>
/// <c>dolly up</c> as a service manager runs it: a real process that gets SIGTERM at a random moment between
/// its start and "Dolly is up" (or just after). Every time it must exit within its stop timeout, by itself
/// (not by the forced exit at the timeout), and leave the pool free for the next process.
/// Rounds: DOLLY_SIGNAL_ROUNDS (default 6).
/// </summary>
public sealed partial class UpSignalTests : CliTestBase
{
    private const int SigTerm = 15;
    private const int SigKill = 9;

    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    private sealed class UpProcess : IDisposable
    {
        private readonly StringBuilder _out = new();
        private readonly StringBuilder _err = new();
        private readonly TaskCompletionSource _up = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public UpProcess(string poolDir)
        {
            var start = new ProcessStartInfo(DollyExecutable())
            {
                RedirectStandardOutput = true,
                RedirectStandardError = true,
                UseShellExecute = false,
            };
            start.ArgumentList.Add("up");
            start.ArgumentList.Add("--port");
            start.ArgumentList.Add("0");
            start.ArgumentList.Add("--metrics");
            start.ArgumentList.Add("127.0.0.1:0");
            start.Environment["DOLLY_POOL"] = poolDir;
            Process = new Process { StartInfo = start };
            Process.OutputDataReceived += (_, e) =>
            {
                lock (_out)
                {
                    _out.AppendLine(e.Data);
                }

                if (e.Data?.Contains("Dolly is up", StringComparison.Ordinal) == true)
                {
                    _up.TrySetResult();
                }
            };
            Process.ErrorDataReceived += (_, e) =>
            {
                lock (_err)
                {
                    _err.AppendLine(e.Data);
                }
            };
            Process.Start();
            Started = Stopwatch.StartNew();
            Process.BeginOutputReadLine();
            Process.BeginErrorReadLine();
        }

        public Process Process { get; }

        public Stopwatch Started { get; }

        public Task Up => _up.Task;

        public string Err
        {
            get
            {
                lock (_err)
                {
                    return _err.ToString();
                }
            }
        }

        public override string ToString()
        {
            lock (_out)
            {
                return $"--- stdout\n{_out}--- stderr\n{Err}";
            }
        }

        public void Dispose()
        {
            if (!Process.HasExited)
            {
                _ = Kill(Process.Id, SigKill);
                Process.WaitForExit();
            }

            Process.Dispose();
        }
    }

    /// <summary>The dolly executable built beside these tests (the app host of the referenced Dolly project).</summary>
    private static string DollyExecutable()
    {
        string path = Path.Combine(AppContext.BaseDirectory, "dolly");
        Assert.True(File.Exists(path), $"no dolly executable at {path}");
        return path;
    }

    [Fact]
    public async Task SigtermAtAnyMomentOfStartUp_EndsTheProcessWithinTheStopTimeout_AndFreesThePool()
    {
        await Ok("pool", "init");
        int rounds = int.TryParse(Environment.GetEnvironmentVariable("DOLLY_SIGNAL_ROUNDS"), out int r) && r > 0 ? r : 6;
        int seed = Environment.TickCount;
        var random = new Random(seed);

        // How long start-up takes on this machine now: the signals land across all of it and a little after.
        TimeSpan startUp;
        using (var first = new UpProcess(PoolDir))
        {
            await first.Up.WaitAsync(TimeSpan.FromSeconds(120), Ct);
            startUp = first.Started.Elapsed;
            await StopAsync(first, $"seed {seed}, after start-up");
        }

        var delays = new List<TimeSpan> { TimeSpan.Zero };
        for (int i = 1; i < rounds; i++)
        {
            delays.Add(startUp * (random.NextDouble() * 1.2));
        }

        foreach (var delay in delays)
        {
            using var up = new UpProcess(PoolDir);
            var wait = delay - up.Started.Elapsed;
            if (wait > TimeSpan.Zero)
            {
                await Task.Delay(wait, Ct);
            }

            await StopAsync(up, $"seed {seed}, SIGTERM {delay.TotalMilliseconds:0} ms after the start (start-up takes {startUp.TotalMilliseconds:0} ms)");
        }
    }

    private async Task StopAsync(UpProcess up, string round)
    {
        Assert.Equal(0, Kill(up.Process.Id, SigTerm));
        var signalled = Stopwatch.StartNew();
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(Ct);
        timeout.CancelAfter(Cli.StopTimeout + TimeSpan.FromSeconds(15));
        try
        {
            await up.Process.WaitForExitAsync(timeout.Token);
        }
        catch (OperationCanceledException) when (!Ct.IsCancellationRequested)
        {
            Assert.Fail($"{round}: dolly up did not exit {signalled.Elapsed.TotalSeconds:0} s after SIGTERM\n{up}");
        }

        // Exit 0 is a clean stop; 143 is SIGTERM's default action, before the runtime took the signal (nothing open yet).
        Assert.True(up.Process.ExitCode is 0 or 143, $"{round}: exit {up.Process.ExitCode}\n{up}");
        Assert.True(signalled.Elapsed < Cli.StopTimeout, $"{round}: took {signalled.Elapsed} to stop\n{up}");
        Assert.DoesNotContain("did not stop within", up.Err, StringComparison.Ordinal);
        Assert.DoesNotContain("   at ", up.Err, StringComparison.Ordinal);

        // The pool lock is free: another process opens the pool.
        var list = await Dolly("volume", "list");
        Assert.True(list.ExitCode == 0, $"{round}: the pool is still held: {list}\n{up}");
    }

    [LibraryImport("libc", EntryPoint = "kill", SetLastError = true)]
    private static partial int Kill(int pid, int signal);
}
