namespace Dolly.Bench;

/// <summary>
/// The programs <c>dolly bench db</c> drives, by full path: PostgreSQL's server binaries (run as the
/// <c>postgres</c> user, as the server refuses root), the NBD client stack (nbdfuse, a loop device, ext4) and
/// nbdkit as the baseline server. <see cref="Setsid"/> starts nbdfuse and nbdkit in a session of their own:
/// Ctrl-C in a terminal signals the whole foreground process group, and those helpers dying with it would
/// leave the file system above them without a disk while teardown still has to unmount it cleanly.
/// </summary>
internal sealed record DbTools(
    string PgBin,
    string Nbdfuse,
    string Fusermount,
    string Nbdkit,
    string Losetup,
    string MkfsExt4,
    string Mount,
    string Umount,
    string Runuser,
    string Chown,
    string Setsid)
{
    /// <summary>The user PostgreSQL runs as (created by Debian's postgresql-common).</summary>
    public const string PostgresUser = "postgres";

    private const string DebianPgRoot = "/usr/lib/postgresql";

    private static readonly string[] PgPrograms = ["initdb", "pg_ctl", "postgres", "pgbench", "psql"];

    public string Pg(string program) => Path.Combine(PgBin, program);

    /// <summary>
    /// Finds everything or fails with a usage error that lists all that is missing at once (not root, no
    /// PostgreSQL, no FUSE...), with the command that installs it.
    /// </summary>
    /// <param name="pgBin">--pg-bin, or null for the newest /usr/lib/postgresql/N/bin.</param>
    /// <param name="path">The $PATH the programs are looked up in.</param>
    public static DbTools Locate(string? pgBin, string? path)
    {
        var missing = new List<string>();
        if (!BenchProcess.IsRoot())
        {
            missing.Add("root (loop devices and mounts need it; run with sudo)");
        }

        string bin = pgBin ?? NewestDebianPgBin() ?? DebianPgRoot + "/<version>/bin";
        var absent = PgPrograms.Where(p => !File.Exists(Path.Combine(bin, p))).ToList();
        if (absent.Count > 0)
        {
            missing.Add($"PostgreSQL ({string.Join(", ", absent)} not in {bin}; apt-get install postgresql-15, or --pg-bin DIR)");
        }

        if (!File.Exists("/dev/fuse"))
        {
            missing.Add("FUSE (/dev/fuse does not exist)");
        }

        string Need(string tool, string package)
        {
            if (BenchProcess.Find(tool, path) is { } found)
            {
                return found;
            }

            missing.Add($"{tool} ({package})");
            return tool;
        }

        var tools = new DbTools(
            bin,
            Need("nbdfuse", "libnbd-bin"),
            Need("fusermount3", "fuse3"),
            Need("nbdkit", "nbdkit"),
            Need("losetup", "mount"),
            Need("mkfs.ext4", "e2fsprogs"),
            Need("mount", "mount"),
            Need("umount", "mount"),
            Need("runuser", "util-linux"),
            Need("chown", "coreutils"),
            Need("setsid", "util-linux"));
        if (missing.Count > 0)
        {
            throw new CliFailureException(
                ExitCodes.Usage,
                $"dolly bench db cannot run here; missing: {string.Join("; ", missing)}. scripts/install-test-deps.sh installs the packages");
        }

        return tools;
    }

    private static string? NewestDebianPgBin()
    {
        if (!Directory.Exists(DebianPgRoot))
        {
            return null;
        }

        return Directory.EnumerateDirectories(DebianPgRoot)
            .Select(d => (Dir: d, Version: int.TryParse(Path.GetFileName(d), out int v) ? v : -1))
            .Where(d => d.Version > 0 && File.Exists(Path.Combine(d.Dir, "bin", "postgres")))
            .OrderByDescending(d => d.Version)
            .Select(d => Path.Combine(d.Dir, "bin"))
            .FirstOrDefault();
    }
}
