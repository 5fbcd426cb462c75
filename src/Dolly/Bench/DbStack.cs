using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.RegularExpressions;

namespace Dolly.Bench;

/// <summary>
/// One PostgreSQL cluster on one NBD export, through the client stack a user without /dev/nbd* has:
/// nbdfuse shows the export as a file, a loop device over that file carries ext4, and the cluster's data
/// directory lives there. The server listens on a Unix socket only (no TCP port to collide with). Teardown
/// undoes each step that was done, in reverse, and keeps going when one fails; what it could not undo is
/// listed in <see cref="Leftovers"/> with the command that does it by hand.
/// </summary>
internal sealed partial class DbStack : IAsyncDisposable
{
    private static readonly TimeSpan StepTimeout = TimeSpan.FromSeconds(30);

    private readonly DbTools _tools;
    private readonly string _fuseDir;
    private readonly string _mountDir;
    private readonly string _pgData;
    private readonly Action<string> _log;
    private readonly StringBuilder _fuseErrors = new();
    private readonly List<string> _leftovers = [];
    private Process? _fuse;
    private string? _loop;
    private bool _mounted;
    private bool _disposed;

    /// <summary>A stack not built yet: <see cref="StartAsync"/> builds it, disposing takes down whatever was built.</summary>
    public DbStack(string name, string dir, DbTools tools, Action<string> log)
    {
        Name = name;
        _tools = tools;
        _fuseDir = Path.Combine(dir, "fuse");
        _mountDir = Path.Combine(dir, "mnt");
        _pgData = Path.Combine(_mountDir, "pgdata");
        SocketDir = Path.Combine(dir, "run");
        _log = log;
    }

    public string Name { get; }

    /// <summary>The directory of the server's Unix socket and log (outside the measured file system).</summary>
    public string SocketDir { get; }

    /// <summary>What teardown could not undo, each with the command that does it by hand; empty when all is clean.</summary>
    public IReadOnlyList<string> Leftovers => _leftovers;

    /// <summary><c>pgbench -i</c>: creates and fills the tables; returns the seconds it took.</summary>
    public async Task<double> InitAsync(int scale, CancellationToken ct)
    {
        var started = Stopwatch.GetTimestamp();
        await BenchProcess.RunAsync(_tools.Pg("pgbench"), [.. Connection(), "-i", "-q", "-s", scale.ToString(CultureInfo.InvariantCulture), DbTools.PostgresUser], ct).ConfigureAwait(false);
        double seconds = Stopwatch.GetElapsedTime(started).TotalSeconds;
        await CheckpointAsync(ct).ConfigureAwait(false);
        return seconds;
    }

    /// <summary>One timed pgbench round; returns its TPS (without the initial connection time).</summary>
    public async Task<double> PgbenchAsync(int clients, int threads, TimeSpan duration, CancellationToken ct)
    {
        string output = await BenchProcess.RunAsync(
            _tools.Pg("pgbench"),
            [
                .. Connection(), "-c", clients.ToString(CultureInfo.InvariantCulture), "-j", threads.ToString(CultureInfo.InvariantCulture),
                "-T", ((int)duration.TotalSeconds).ToString(CultureInfo.InvariantCulture), DbTools.PostgresUser,
            ],
            ct).ConfigureAwait(false);
        var m = TpsLine().Match(output);
        if (!m.Success)
        {
            throw new CliFailureException(ExitCodes.IoError, $"pgbench on {Name} printed no 'tps = ' line: {output.Trim()}");
        }

        return double.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture);
    }

    /// <summary>
    /// Writes every dirty buffer out and syncs it, so the writes of one round are paid for by that round and
    /// not by the next round on the other stack.
    /// </summary>
    public Task CheckpointAsync(CancellationToken ct) =>
        BenchProcess.RunAsync(_tools.Pg("psql"), [.. Connection(), "-q", "-X", "-c", "CHECKPOINT", DbTools.PostgresUser], ct);

    public async ValueTask DisposeAsync()
    {
        if (_disposed)
        {
            return;
        }

        _disposed = true;
        if (PostmasterRunning())
        {
            // The shutdown checkpoint writes through nbdfuse and can take long on a busy machine: wait for it.
            var stop = await AsPostgresAsync(_tools.Pg("pg_ctl"), ["-D", _pgData, "stop", "-m", "fast", "-w", "-t", "120"], TimeSpan.FromSeconds(150)).ConfigureAwait(false);
            if (!stop.Ok)
            {
                _log($"{Name}: pg_ctl stop -m fast failed: {stop.Err.Trim()}");
            }

            // A failed stop may still have stopped it (the server exits between pg_ctl's timeout and the next
            // look): only a postmaster that is still alive needs the immediate stop.
            if (!stop.Ok && PostmasterRunning())
            {
                stop = await AsPostgresAsync(_tools.Pg("pg_ctl"), ["-D", _pgData, "stop", "-m", "immediate", "-w", "-t", "30"], TimeSpan.FromSeconds(60)).ConfigureAwait(false);
            }

            if (!stop.Ok && PostmasterRunning())
            {
                _leftovers.Add($"PostgreSQL still runs: runuser -u postgres -- {_tools.Pg("pg_ctl")} -D {_pgData} stop -m immediate ({stop.Err.Trim()})");
            }
        }

        if (_mounted)
        {
            var umount = await BenchProcess.TryWithinAsync(_tools.Umount, [_mountDir], StepTimeout).ConfigureAwait(false);
            for (int attempt = 0; !umount.Ok && attempt < 3; attempt++)
            {
                // A process that just exited (a postgres backend) can hold the file system for a moment.
                await Task.Delay(TimeSpan.FromSeconds(1), CancellationToken.None).ConfigureAwait(false);
                umount = await BenchProcess.TryWithinAsync(_tools.Umount, [_mountDir], StepTimeout).ConfigureAwait(false);
            }

            if (umount.Ok)
            {
                _mounted = false;
            }
            else
            {
                _leftovers.Add($"ext4 still mounted: umount {_mountDir} ({umount.Err.Trim()})");
            }
        }

        if (_loop is not null && !_mounted)
        {
            var detach = await BenchProcess.TryWithinAsync(_tools.Losetup, ["-d", _loop], StepTimeout).ConfigureAwait(false);
            if (detach.Ok)
            {
                _loop = null;
            }
            else
            {
                _leftovers.Add($"loop device still attached: losetup -d {_loop} ({detach.Err.Trim()})");
            }
        }

        if (_fuse is not null)
        {
            if (_loop is null)
            {
                await BenchProcess.TryWithinAsync(_tools.Fusermount, ["-u", _fuseDir], StepTimeout).ConfigureAwait(false);
                if (!_fuse.WaitForExit(TimeSpan.FromSeconds(10)))
                {
                    BenchProcess.Kill(_fuse);
                }
            }
            else
            {
                _leftovers.Add($"nbdfuse still mounted (the loop device holds it): fusermount3 -u {_fuseDir}");
            }

            _fuse.Dispose();
            _fuse = null;
        }
    }

    /// <summary>Builds the whole stack on the export at <paramref name="uri"/>; after a failure, dispose it to undo what was done.</summary>
    public async Task StartAsync(string uri, CancellationToken ct)
    {
        Directory.CreateDirectory(_fuseDir);
        Directory.CreateDirectory(_mountDir);
        Directory.CreateDirectory(SocketDir);
        await BenchProcess.RunAsync(_tools.Chown, [$"{DbTools.PostgresUser}:", SocketDir], ct).ConfigureAwait(false);

        _log($"{Name}: nbdfuse {uri}");
        string pidFile = Path.Combine(SocketDir, "nbdfuse.pid");
        string disk = Path.Combine(_fuseDir, "disk");
        _fuse = BenchProcess.StartBackground(_tools.Setsid, [_tools.Nbdfuse, "-P", pidFile, disk, uri], _fuseErrors);
        await WaitForAsync(() => File.Exists(pidFile) && File.Exists(disk), "nbdfuse to serve the export", ct).ConfigureAwait(false);

        _loop = (await BenchProcess.RunAsync(_tools.Losetup, ["--find", "--show", disk], ct).ConfigureAwait(false)).Trim();
        _log($"{Name}: ext4 on {_loop}");
        // Inode tables and journal are written now, not by ext4lazyinit in the background of a measured round.
        await BenchProcess.RunAsync(_tools.MkfsExt4, ["-q", "-F", "-E", "nodiscard,lazy_itable_init=0,lazy_journal_init=0", _loop], ct).ConfigureAwait(false);
        await BenchProcess.RunAsync(_tools.Mount, ["-t", "ext4", _loop, _mountDir], ct).ConfigureAwait(false);
        _mounted = true;

        Directory.CreateDirectory(_pgData);
        await BenchProcess.RunAsync(_tools.Chown, [$"{DbTools.PostgresUser}:", _pgData], ct).ConfigureAwait(false);
        _log($"{Name}: initdb and start PostgreSQL");
        await AsPostgresOrFailAsync(_tools.Pg("initdb"), ["-D", _pgData, "-U", DbTools.PostgresUser, "-A", "trust", "--no-locale", "-E", "UTF8"], ct).ConfigureAwait(false);
        await AsPostgresOrFailAsync(
            _tools.Pg("pg_ctl"),
            ["-D", _pgData, "-l", Path.Combine(SocketDir, "postgresql.log"), "-w", "-t", "120", "-o", $"-c listen_addresses='' -k {SocketDir}", "start"],
            ct).ConfigureAwait(false);
    }

    private string[] Connection() => ["-h", SocketDir, "-U", DbTools.PostgresUser];

    private async Task WaitForAsync(Func<bool> ready, string what, CancellationToken ct)
    {
        var started = Stopwatch.GetTimestamp();
        while (!ready())
        {
            if (_fuse is { HasExited: true })
            {
                string errors;
                lock (_fuseErrors)
                {
                    errors = _fuseErrors.ToString().Trim();
                }

                throw new CliFailureException(ExitCodes.IoError, $"{Name}: nbdfuse exited ({_fuse.ExitCode}): {errors}");
            }

            if (Stopwatch.GetElapsedTime(started) > StepTimeout)
            {
                throw new CliFailureException(ExitCodes.IoError, $"{Name}: timed out after {StepTimeout.TotalSeconds:0} s waiting for {what}");
            }

            await Task.Delay(50, ct).ConfigureAwait(false);
        }
    }

    private Task<string> AsPostgresOrFailAsync(string program, string[] args, CancellationToken ct) =>
        BenchProcess.RunAsync(_tools.Runuser, ["-u", DbTools.PostgresUser, "--", program, .. args], ct);

    private Task<ProcessOutcome> AsPostgresAsync(string program, string[] args, TimeSpan timeout) =>
        BenchProcess.TryWithinAsync(_tools.Runuser, ["-u", DbTools.PostgresUser, "--", program, .. args], timeout);

    /// <summary>
    /// Whether the cluster's postmaster is alive: its pid file names a process that exists. A pid file left by a
    /// server that died (or that is removing it as it exits) names none.
    /// </summary>
    private bool PostmasterRunning()
    {
        string pidFile = Path.Combine(_pgData, "postmaster.pid");
        string? first;
        try
        {
            using var reader = new StreamReader(pidFile);
            first = reader.ReadLine();
        }
        catch (Exception e) when (e is FileNotFoundException or DirectoryNotFoundException)
        {
            return false;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            // Unreadable is not proof that it stopped: let pg_ctl decide.
            return true;
        }

        return int.TryParse(first, NumberStyles.None, CultureInfo.InvariantCulture, out int pid) && Directory.Exists($"/proc/{pid}");
    }

    [GeneratedRegex(@"^tps = ([0-9.]+) \(without initial connection time\)", RegexOptions.Multiline)]
    private static partial Regex TpsLine();
}
