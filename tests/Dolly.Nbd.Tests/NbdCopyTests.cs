using Dolly.Nbd.Tests.Support;

namespace Dolly.Nbd.Tests;

/// <summary>libnbd's nbdcopy moving random, sparse images into and out of volumes and snapshots.</summary>
public sealed class NbdCopyTests
{
    private const int Size = 24 << 20;

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task RoundTrip_SparseRandomImage_IdenticalAndHolesStayUnallocated(bool tcp)
    {
        Tools.Require("nbdcopy");
        await using var server = TestServer.Start();
        server.CreateVolume("vol", Size);
        string source = server.Dir.Sub("in.img");
        var content = Data.SparseImage(source, Size, seed: tcp ? 11 : 12);
        string uri = tcp ? server.TcpUri("vol") : server.UnixUri("vol");

        // nbdcopy uses 4 connections (the server offers multi-conn) and 64 requests in flight on each.
        (await Tools.RunAsync("nbdcopy", source, uri)).EnsureSuccess();
        string back = server.Dir.Sub("out.img");
        (await Tools.RunAsync("nbdcopy", uri, back)).EnsureSuccess();

        Assert.Equal(Data.Sha256(content), Data.Sha256File(back));
        Assert.Equal(Data.Sha256(content), Data.Sha256(Data.ReadAll(server.Pool, "vol")));

        // Zero and hole segments were sent as zeroes/holes: only the 64 KiB blocks holding non-zero bytes are allocated.
        long expected = 0;
        for (int block = 0; block < Size; block += 64 << 10)
        {
            if (content.AsSpan(block, 64 << 10).ContainsAnyExcept((byte)0))
            {
                expected += 64 << 10;
            }
        }

        long allocated = server.Pool.GetAllocatedRanges("vol").Value.Sum(r => r.Length);
        Assert.Equal(expected, allocated);
    }

    [Fact]
    public async Task Snapshot_ReadsThePointInTimeContent()
    {
        Tools.Require("nbdcopy");
        await using var server = TestServer.Start();
        server.CreateVolume("vol", Size);
        string source = server.Dir.Sub("in.img");
        var content = Data.SparseImage(source, Size, seed: 21);
        (await Tools.RunAsync("nbdcopy", source, server.UnixUri("vol"))).EnsureSuccess();
        server.Pool.CreateSnapshot("vol", "snap").ThrowIfFailed();

        // Overwrite the volume entirely after the snapshot.
        string other = server.Dir.Sub("other.img");
        var later = Data.SparseImage(other, Size, seed: 22);
        (await Tools.RunAsync("nbdcopy", other, server.UnixUri("vol"))).EnsureSuccess();

        string snapOut = server.Dir.Sub("snap.img");
        (await Tools.RunAsync("nbdcopy", server.UnixUri("snap"), snapOut)).EnsureSuccess();
        Assert.Equal(Data.Sha256(content), Data.Sha256File(snapOut));

        string volOut = server.Dir.Sub("vol.img");
        (await Tools.RunAsync("nbdcopy", server.TcpUri("vol"), volOut)).EnsureSuccess();
        Assert.Equal(Data.Sha256(later), Data.Sha256File(volOut));
    }

    [Fact]
    public async Task IntoSnapshot_Fails_AndChangesNothing()
    {
        Tools.Require("nbdcopy");
        await using var server = TestServer.Start();
        var vol = server.CreateVolume("vol", 4 << 20);
        vol.Write(0, Data.Random(1 << 20, 31)).ThrowIfFailed();
        server.Pool.CreateSnapshot("vol", "snap").ThrowIfFailed();
        var before = Data.Sha256(Data.ReadAll(server.Pool, "snap"));

        string source = server.Dir.Sub("in.img");
        Data.SparseImage(source, 4 << 20, seed: 32);
        var r = await Tools.RunAsync("nbdcopy", source, server.UnixUri("snap"));

        Assert.NotEqual(0, r.ExitCode);
        Assert.Contains("read", r.StdErr, StringComparison.OrdinalIgnoreCase);
        Assert.Equal(before, Data.Sha256(Data.ReadAll(server.Pool, "snap")));
    }

    [Fact]
    public async Task VolumeToVolume_ThroughTheServer()
    {
        Tools.Require("nbdcopy");
        await using var server = TestServer.Start();
        server.CreateVolume("a", Size);
        server.CreateVolume("b", Size);
        var content = Data.SparseImage(server.Dir.Sub("in.img"), Size, seed: 41);
        (await Tools.RunAsync("nbdcopy", server.Dir.Sub("in.img"), server.UnixUri("a"))).EnsureSuccess();

        (await Tools.RunAsync("nbdcopy", server.UnixUri("a"), server.TcpUri("b"))).EnsureSuccess();

        Assert.Equal(Data.Sha256(content), Data.Sha256(Data.ReadAll(server.Pool, "b")));
    }
}
