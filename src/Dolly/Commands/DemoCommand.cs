using System.CommandLine;
using Dolly.Storage;
using Spectre.Console;

namespace Dolly.Commands;

/// <summary>
/// <c>dolly demo</c>: a short scripted session in a scratch pool. Each step prints the real command it runs
/// and that command's real output, so the story doubles as a tutorial. A second act
/// (<see cref="DemoKubernetesAct"/>) shows the main job, copies of Kubernetes volumes, through the real stack
/// over the same pool. The scratch directory (pool, its API server state beside it, images) is deleted at the
/// end unless <c>--keep</c>; a pool named with <c>--pool</c> and its API server state always stay.
/// </summary>
internal static class DemoCommand
{
    private const int MiB = 1 << 20;

    public static Command Build(CliContext context)
    {
        var keep = new Option<bool>("--keep") { Description = "Keep the scratch pool, its API server state and the images afterwards (their location is printed)" };
        var skipKubernetes = new Option<bool>("--skip-kubernetes") { Description = "Show only the storage engine, not its copies of Kubernetes volumes through the API server, CSI driver and controllers" };
        var demo = new Command(
            "demo",
            "A two-minute tour in a scratch pool: create a thin volume, import an image, snapshot, clone, break and revert, and see the space used; " +
            "then the main job through the real stack run in-process (API server, CSI driver, controllers): snapshot, restore and clone a PersistentVolumeClaim")
        {
            keep,
            skipKubernetes,
        };
        demo.SetAction((parse, token) => RunAsync(context, parse, parse.GetValue(keep), parse.GetValue(skipKubernetes), token));
        return demo;
    }

    private static async Task<int> RunAsync(CliContext context, ParseResult parse, bool keep, bool skipKubernetes, CancellationToken token)
    {
        var (given, isExplicit) = context.PoolDirectory(parse);
        // The host's TMPDIR, not the process's: a test host points the scratch directory at its own.
        string temp = context.Host.GetEnvironmentVariable("TMPDIR") is { Length: > 0 } tmpdir ? Path.GetFullPath(tmpdir) : Path.GetTempPath();
        string root = isExplicit ? given : Path.Combine(temp, $"dolly-demo-{Guid.NewGuid():N}"[..19]);
        string pool = isExplicit ? given : Path.Combine(root, "pool");
        string images = isExplicit ? Path.Combine(temp, $"dolly-demo-images-{Guid.NewGuid():N}"[..26]) : Path.Combine(root, "images");
        Directory.CreateDirectory(images);
        var o = context.Host.Out;
        try
        {
            if (!isExplicit || !File.Exists(Path.Combine(pool, "meta.dolly")))
            {
                Pool.Create(pool).OrFail().Dispose();
            }

            o.WriteLine($"Dolly demo in pool '{pool}'{(isExplicit || keep ? string.Empty : " (a scratch pool, deleted at the end; --keep keeps it)")}.");
            string image = Path.Combine(images, "disk.raw");
            long data = MakeImage(image, 64 * MiB, seed: 1);
            string patch = Path.Combine(images, "patch.raw");
            MakeDense(patch, 4 * MiB, seed: 2);
            string upgrade = Path.Combine(images, "bad-upgrade.raw");
            MakeDense(upgrade, 16 * MiB, seed: 3);
            string restored = Path.Combine(images, "restored.raw");

            var steps = new (string Say, string[] Args)[]
            {
                ("A thin volume costs nothing until it is written.", ["volume", "create", "web", "--size", "10Gi"]),
                ($"Import a 64 MiB raw disk image holding {ByteSize.Format(data)} of data; its zero blocks are not stored.", ["volume", "import", "web", image]),
                ("Snapshot it. The time does not depend on the volume's size or data: the block map is shared, not copied.", ["snapshot", "create", "web", "before-upgrade"]),
                ("Clone the snapshot into a writable test volume, and write 4 MiB into the clone.", ["volume", "clone", "before-upgrade", "web-test"]),
                (null!, ["volume", "import", "web-test", patch]),
                ("Something goes wrong on 'web': an upgrade overwrites 16 MiB.", ["volume", "import", "web", upgrade]),
                ("What changed since the snapshot (what an incremental backup would copy):", ["snapshot", "diff", "before-upgrade", "web"]),
                ("Revert 'web' in place to the snapshot, and export it to check it against the original image.", ["volume", "revert", "web", "before-upgrade"]),
                (null!, ["volume", "export", "web", restored]),
                ("Space: ALLOCATED is what a device maps; EXCLUSIVE is what deleting it would free. Blocks are shared until written.", ["volume", "list"]),
                (null!, ["snapshot", "list"]),
                (null!, ["pool", "info"]),
                ("Every map, reference count and checksum verified:", ["pool", "check"]),
            };

            int step = 0;
            foreach (var (say, args) in steps)
            {
                token.ThrowIfCancellationRequested();
                if (say is not null)
                {
                    o.WriteLine();
                    o.WriteLine($"{++step}. {say}");
                }

                Echo(context, args);
                int code = await Cli.RunAsync(["--pool", pool, .. args], context.Host with { ErrorIsTerminal = false }, token).ConfigureAwait(false);
                if (code != ExitCodes.Ok)
                {
                    return code;
                }

                if (args is ["volume", "export", ..])
                {
                    bool same = SameContent(image, restored);
                    o.WriteLine(same
                        ? "   the exported volume is byte for byte the imported image: the upgrade is undone"
                        : "   MISMATCH: the exported volume differs from the imported image");
                    if (!same)
                    {
                        return ExitCodes.Corrupt;
                    }
                }
            }

            if (!skipKubernetes)
            {
                o.WriteLine();
                o.WriteLine("Now the main job: instant copies of Kubernetes volumes, through the real stack.");
                using (var opened = Pool.Open(pool, context.Host.FileSystem).OrFail())
                {
                    step = await new DemoKubernetesAct(context, opened).RunAsync(step, token).ConfigureAwait(false);
                }

                o.WriteLine();
                o.WriteLine($"{++step}. The claims' volumes in the pool: 'data' owns the block it overwrote; the restore and the clone still share the original one with the snapshot, so they cost nothing extra (EXCLUSIVE 0).");
                string[] list = ["volume", "list"];
                Echo(context, list);
                int code = await Cli.RunAsync(["--pool", pool, .. list], context.Host with { ErrorIsTerminal = false }, token).ConfigureAwait(false);
                if (code != ExitCodes.Ok)
                {
                    return code;
                }
            }

            string api = CliContext.BesidePool(pool, "-api");
            o.WriteLine();
            o.WriteLine(keep || isExplicit
                ? $"Done. The pool stays in '{pool}'{(skipKubernetes ? string.Empty : $" and its API server state in '{api}'")}: try 'dolly --pool {pool} volume list'{(skipKubernetes ? string.Empty : $", or 'dolly --pool {pool} up' and 'kubectl get pvc -n demo'")}."
                : "Done. The scratch pool is deleted; 'dolly volume create NAME --size 10Gi' starts your own (in the default pool), 'dolly up' runs the stack over it.");
            return ExitCodes.Ok;
        }
        finally
        {
            if (!keep)
            {
                TryDelete(isExplicit ? images : root);
            }
        }
    }

    private static void Echo(CliContext context, string[] args) =>
        EchoLine(context, "$ dolly " + string.Join(' ', args.Select(a => a.Contains('/', StringComparison.Ordinal) ? Path.GetFileName(a) : a)));

    /// <summary>A command line the demo shows before its output: bold on a terminal.</summary>
    internal static void EchoLine(CliContext context, string line)
    {
        if (context.Host.OutIsTerminal)
        {
            context.Out.MarkupLine($"[bold]{Markup.Escape(line)}[/]");
        }
        else
        {
            context.Host.Out.WriteLine(line);
        }
    }

    /// <summary>A sparse image: 1 MiB pieces of data in some places, zeros (holes) elsewhere. Returns the data bytes.</summary>
    private static long MakeImage(string path, long size, int seed)
    {
        var rng = new Random(seed);
        var piece = new byte[MiB];
        long data = 0;
        using var file = File.OpenHandle(path, FileMode.Create, FileAccess.Write);
        RandomAccess.SetLength(file, size);
        for (long pos = 0; pos < size; pos += MiB)
        {
            // About five pieces in eight hold data, like a disk image with free space.
            if (rng.Next(8) < 5)
            {
                rng.NextBytes(piece);
                RandomAccess.Write(file, piece, pos);
                data += MiB;
            }
        }

        return data;
    }

    private static void MakeDense(string path, int size, int seed)
    {
        var bytes = new byte[size];
        new Random(seed).NextBytes(bytes);
        File.WriteAllBytes(path, bytes);
    }

    private static bool SameContent(string a, string b)
    {
        using var fa = File.OpenRead(a);
        using var fb = File.OpenRead(b);
        // The volume is larger than the image; only the image's length is compared (the rest is holes).
        if (fb.Length < fa.Length)
        {
            return false;
        }

        var ba = new byte[MiB];
        var bb = new byte[MiB];
        int n;
        while ((n = fa.ReadAtLeast(ba, ba.Length, throwOnEndOfStream: false)) > 0)
        {
            if (fb.ReadAtLeast(bb, n, throwOnEndOfStream: false) != n || !ba.AsSpan(0, n).SequenceEqual(bb.AsSpan(0, n)))
            {
                return false;
            }
        }

        return true;
    }

    private static void TryDelete(string dir)
    {
        try
        {
            if (Directory.Exists(dir))
            {
                Directory.Delete(dir, recursive: true);
            }
        }
        catch (IOException)
        {
        }
        catch (UnauthorizedAccessException)
        {
        }
    }
}
