using System.Text.Json;
using Dolly.Nbd.Tests.Support;

namespace Dolly.Nbd.Tests;

/// <summary>qemu-img (QEMU's own NBD client) against volumes and snapshots.</summary>
public sealed class QemuImgTests
{
    private const int Size = 16 << 20;

    [Fact]
    public async Task Info_ReportsVirtualSize()
    {
        Tools.Require("qemu-img");
        await using var server = TestServer.Start();
        server.CreateVolume("vol", 48 << 20);

        var r = (await Tools.RunAsync("qemu-img", "info", "--output=json", server.UnixUri("vol"))).EnsureSuccess();
        using var doc = JsonDocument.Parse(r.StdOut);
        Assert.Equal(48L << 20, doc.RootElement.GetProperty("virtual-size").GetInt64());
        Assert.Equal("raw", doc.RootElement.GetProperty("format").GetString());

        var tcp = (await Tools.RunAsync("qemu-img", "info", "--output=json", server.TcpUri("vol"))).EnsureSuccess();
        Assert.Contains("50331648", tcp.StdOut, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Convert_VolumeAndSnapshot_ToRawAndQcow2AndBack_Compare()
    {
        Tools.Require("qemu-img");
        await using var server = TestServer.Start();
        server.CreateVolume("vol", Size);
        server.CreateVolume("restored", Size);

        // Import through qemu-img itself (raw file -> NBD), then snapshot and change the volume.
        string input = server.Dir.Sub("in.img");
        var original = Data.SparseImage(input, Size, seed: 51);
        (await Tools.RunAsync("qemu-img", "convert", "-n", "-f", "raw", "-O", "raw", input, server.UnixUri("vol"))).EnsureSuccess();
        Assert.Equal(Data.Sha256(original), Data.Sha256(Data.ReadAll(server.Pool, "vol")));
        server.Pool.CreateSnapshot("vol", "snap").ThrowIfFailed();
        server.Pool.OpenDevice("vol").Value.Write(3 << 20, Data.Random(100_000, 52)).ThrowIfFailed();
        var changed = Data.ReadAll(server.Pool, "vol");

        // Volume -> raw file.
        string raw = server.Dir.Sub("vol.raw");
        (await Tools.RunAsync("qemu-img", "convert", "-f", "raw", "-O", "raw", server.UnixUri("vol"), raw)).EnsureSuccess();
        Assert.Equal(Data.Sha256(changed), Data.Sha256File(raw));
        (await Tools.RunAsync("qemu-img", "compare", "-f", "raw", "-F", "raw", server.UnixUri("vol"), raw)).EnsureSuccess();

        // Snapshot -> qcow2 -> another volume; compare every stage.
        string qcow2 = server.Dir.Sub("snap.qcow2");
        (await Tools.RunAsync("qemu-img", "convert", "-f", "raw", "-O", "qcow2", server.TcpUri("snap"), qcow2)).EnsureSuccess();
        (await Tools.RunAsync("qemu-img", "compare", "-f", "qcow2", "-F", "raw", qcow2, server.UnixUri("snap"))).EnsureSuccess();
        (await Tools.RunAsync("qemu-img", "convert", "-n", "-f", "qcow2", "-O", "raw", qcow2, server.UnixUri("restored"))).EnsureSuccess();
        Assert.Equal(Data.Sha256(original), Data.Sha256(Data.ReadAll(server.Pool, "restored")));
        (await Tools.RunAsync("qemu-img", "compare", "-f", "raw", "-F", "raw", server.UnixUri("restored"), input)).EnsureSuccess();

        // The volume that changed differs from the snapshot; qemu-img compare says so (exit 1).
        var differs = await Tools.RunAsync("qemu-img", "compare", "-f", "raw", "-F", "raw", server.UnixUri("vol"), server.UnixUri("snap"));
        Assert.Equal(1, differs.ExitCode);
    }

    [Fact]
    public async Task Map_WithXDirtyBitmap_ReadsTheDeltaContext()
    {
        // QEMU's backup tooling reads a dirty-bitmap style context with x-dirty-bitmap; qemu-img map then
        // reports the context's bit 0 (dirty) where base:allocation would have "hole": dirty = "data": false.
        Tools.Require("qemu-img");
        await using var server = TestServer.Start();
        var vol = server.CreateVolume("vol", Size);
        vol.Write(0, Data.Random(1 << 20, 54)).ThrowIfFailed();
        server.Pool.CreateSnapshot("vol", "snap").ThrowIfFailed();
        vol.Write(5 << 20, Data.Random(1000, 55)).ThrowIfFailed();
        vol.Write(64 << 10, Data.Random(64 << 10, 56)).ThrowIfFailed();

        var r = (await Tools.RunAsync("qemu-img", "map", "--output=json", "--image-opts", $"driver=nbd,export=vol,server.type=unix,server.path={server.SocketPath},x-dirty-bitmap=dolly:delta:snap")).EnsureSuccess();
        using var doc = JsonDocument.Parse(r.StdOut);
        var dirty = doc.RootElement.EnumerateArray()
            .Where(e => !e.GetProperty("data").GetBoolean())
            .Select(e => (e.GetProperty("start").GetInt64(), e.GetProperty("length").GetInt64()))
            .ToList();
        Assert.Equal([(64L << 10, 64L << 10), (5L << 20, 64L << 10)], dirty);
    }

    [Fact]
    public async Task Convert_IntoSnapshot_Fails()
    {
        Tools.Require("qemu-img");
        await using var server = TestServer.Start();
        server.CreateVolume("vol", 4 << 20);
        server.Pool.CreateSnapshot("vol", "snap").ThrowIfFailed();
        string input = server.Dir.Sub("in.img");
        Data.SparseImage(input, 4 << 20, seed: 53);

        var r = await Tools.RunAsync("qemu-img", "convert", "-n", "-f", "raw", "-O", "raw", input, server.UnixUri("snap"));
        Assert.NotEqual(0, r.ExitCode);
    }
}
