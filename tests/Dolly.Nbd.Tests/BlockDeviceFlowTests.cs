using Dolly.Nbd.Tests.Support;

namespace Dolly.Nbd.Tests;

/// <summary>
/// The producer/consumer flow a Kubernetes node runs: a volume attached as a block device, a file system made
/// and written on it, a snapshot and clone taken, the clone attached elsewhere and its file read back. The
/// block device is nbdfuse's file under a loop device (the kernel's nbd module is not available in a sandbox).
/// </summary>
public sealed class BlockDeviceFlowTests
{
    [Fact]
    public async Task Ext4OnVolume_SnapshotClone_CloneMountsWithTheFileAndChecksClean()
    {
        RequireBlockStack();
        await using var server = TestServer.Start();
        server.CreateVolume("vol", 64 << 20);
        const string Hello = "hello from a Dolly volume\n";

        await using (var producer = await Attachment.AttachAsync(server, "vol", "p"))
        {
            (await Tools.RunAsync("mkfs.ext4", "-q", "-F", "-E", "nodiscard", producer.LoopDevice)).EnsureSuccess();
            await producer.MountAsync();
            await File.WriteAllTextAsync(Path.Combine(producer.MountPoint, "hello.txt"), Hello, TestContext.Current.CancellationToken);
            await producer.DetachAsync();
        }

        server.Pool.CreateSnapshot("vol", "snap").ThrowIfFailed();
        server.Pool.Clone("snap", "clone").ThrowIfFailed();

        await using (var consumer = await Attachment.AttachAsync(server, "clone", "c"))
        {
            var fsck = await Tools.RunAsync("e2fsck", "-fn", consumer.LoopDevice);
            Assert.True(fsck.ExitCode == 0, fsck.ToString());
            await consumer.MountAsync();
            Assert.Equal(Hello, await File.ReadAllTextAsync(Path.Combine(consumer.MountPoint, "hello.txt"), TestContext.Current.CancellationToken));

            // The clone is independent: a file written to it does not appear in the snapshot or the volume.
            await File.WriteAllTextAsync(Path.Combine(consumer.MountPoint, "clone-only.txt"), "x", TestContext.Current.CancellationToken);
            await consumer.DetachAsync();
        }

        Assert.NotEqual(Data.Sha256(Data.ReadAll(server.Pool, "clone")), Data.Sha256(Data.ReadAll(server.Pool, "snap")));
        Assert.Equal(Data.Sha256(Data.ReadAll(server.Pool, "vol")), Data.Sha256(Data.ReadAll(server.Pool, "snap")));
    }

    private static void RequireBlockStack()
    {
        Tools.Require("nbdfuse", "fusermount3", "losetup", "mkfs.ext4", "e2fsck", "mount", "umount");
        if (!File.Exists("/dev/fuse"))
        {
            Assert.Skip("/dev/fuse is absent: nbdfuse cannot expose a volume as a file here");
        }

        if (!File.Exists("/dev/loop-control"))
        {
            Assert.Skip("/dev/loop-control is absent: no loop devices to mount a file system from");
        }

        if (Environment.UserName != "root")
        {
            Assert.Skip("loop devices and mounts need root");
        }
    }

    /// <summary>
    /// nbdfuse file -> loop device -> optional mount. Dispose undoes whatever was set up, in reverse order,
    /// even when the test failed half-way.
    /// </summary>
    private sealed class Attachment : IAsyncDisposable
    {
        private static readonly TimeSpan Deadline = TimeSpan.FromSeconds(30);
        private BackgroundProcess? _nbdfuse;
        private bool _fuseMounted;
        private bool _mounted;

        private Attachment(string fuseDir, string mountPoint)
        {
            FuseDir = fuseDir;
            MountPoint = mountPoint;
        }

        public string FuseDir { get; }

        public string MountPoint { get; }

        public string DiskFile => Path.Combine(FuseDir, "disk");

        public string LoopDevice { get; private set; } = string.Empty;

        public static async Task<Attachment> AttachAsync(TestServer server, string export, string tag)
        {
            var a = new Attachment(server.Dir.Sub("fuse-" + tag), server.Dir.Sub("mnt-" + tag));
            Directory.CreateDirectory(a.FuseDir);
            Directory.CreateDirectory(a.MountPoint);
            try
            {
                string pidFile = server.Dir.Sub("nbdfuse-" + tag + ".pid");
                a._nbdfuse = Tools.Start("nbdfuse", "-P", pidFile, a.DiskFile, server.UnixUri(export));
                a._fuseMounted = true;

                // nbdfuse writes its pid file once the FUSE file system is ready.
                var fuse = a._nbdfuse;
                await Poll.UntilAsync(() => fuse.Process.HasExited || (File.Exists(pidFile) && File.Exists(a.DiskFile)), Deadline, "nbdfuse to expose " + export);
                Assert.False(fuse.Process.HasExited, $"nbdfuse exited: {fuse.Output}");

                var loop = (await Tools.RunAsync("losetup", "-f", "--show", a.DiskFile)).EnsureSuccess();
                a.LoopDevice = loop.StdOut.Trim();
                Assert.StartsWith("/dev/loop", a.LoopDevice, StringComparison.Ordinal);
                return a;
            }
            catch
            {
                await a.DisposeAsync();
                throw;
            }
        }

        public async Task MountAsync()
        {
            (await Tools.RunAsync("mount", "-t", "ext4", LoopDevice, MountPoint)).EnsureSuccess();
            _mounted = true;
        }

        /// <summary>Unmounts, detaches the loop device and unmounts nbdfuse, failing the test on any error.</summary>
        public async Task DetachAsync()
        {
            if (_mounted)
            {
                (await Tools.RunAsync("umount", MountPoint)).EnsureSuccess();
                _mounted = false;
            }

            if (LoopDevice.Length > 0)
            {
                (await Tools.RunAsync("losetup", "-d", LoopDevice)).EnsureSuccess();
                LoopDevice = string.Empty;
            }

            if (_fuseMounted)
            {
                // The loop driver lets go of the file asynchronously: fusermount3 says busy until it has.
                await Poll.UntilAsync(
                    async () => (await Tools.RunAsync("fusermount3", "-u", FuseDir)).ExitCode == 0,
                    Deadline,
                    "fusermount3 -u " + FuseDir);
                _fuseMounted = false;
                Assert.True(await _nbdfuse!.WaitForExitAsync(Deadline), "nbdfuse did not exit after fusermount3 -u");
                Assert.True(_nbdfuse.Process.ExitCode == 0, $"nbdfuse exited with {_nbdfuse.Process.ExitCode}: {_nbdfuse.Output}");
            }
        }

        public async ValueTask DisposeAsync()
        {
            // Best effort, never throwing: the test's own failure is the one worth reporting.
            if (_mounted)
            {
                await TryRunAsync("umount", "-l", MountPoint);
            }

            if (LoopDevice.Length > 0)
            {
                await TryRunAsync("losetup", "-d", LoopDevice);
            }

            if (_fuseMounted)
            {
                await TryRunAsync("fusermount3", "-u", "-z", FuseDir);
            }

            _nbdfuse?.Dispose();
        }

        private static async Task TryRunAsync(string program, params string[] args)
        {
            try
            {
                await Tools.RunAsync(program, args, TimeSpan.FromSeconds(20));
            }
            catch (TimeoutException)
            {
            }
        }
    }
}
