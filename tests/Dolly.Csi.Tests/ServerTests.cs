using System.Net.Sockets;
using Dolly.Csi.V1;
using Dolly.Storage;
using Grpc.Core;

namespace Dolly.Csi.Tests;

public sealed class ServerTests : CsiTestBase
{
    [Fact]
    [System.Runtime.Versioning.SupportedOSPlatform("linux")]
    public void Socket_IsOwnerOnly()
    {
        Assert.True(File.Exists(SocketPath));
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(SocketPath));
    }

    [Fact]
    public async Task Stop_RemovesSocket_AndRestartServesAgain()
    {
        await Server.StopAsync(Token);
        Assert.False(File.Exists(SocketPath));

        await using var again = new CsiServer(Pool, new CsiServerOptions { SocketPath = SocketPath });
        await again.StartAsync(Token);
        using var channel = Connect(SocketPath);
        var probe = await new Identity.IdentityClient(channel).ProbeAsync(new ProbeRequest(), cancellationToken: Token);
        Assert.True(probe.Ready);
    }

    [Fact]
    public async Task Start_ReplacesStaleSocket()
    {
        string stale = SocketPath + ".stale";
        using (var dead = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified))
        {
            // What a killed server leaves behind: a socket file nobody listens on. .NET unlinks the path it
            // bound on close, so bind elsewhere and move the socket file into place first.
            dead.Bind(new UnixDomainSocketEndPoint(stale + ".tmp"));
            File.Move(stale + ".tmp", stale);
        }

        Assert.True(File.Exists(stale));
        await using var server = new CsiServer(Pool, new CsiServerOptions { SocketPath = stale });
        await server.StartAsync(Token);
        using var channel = Connect(stale);
        var info = await new Identity.IdentityClient(channel).GetPluginInfoAsync(new GetPluginInfoRequest(), cancellationToken: Token);
        Assert.Equal("csi.dolly.io", info.Name);
    }

    [Fact]
    public async Task Start_RegularFileInTheWay_RefusedAndKept()
    {
        string path = SocketPath + ".file";
        await File.WriteAllTextAsync(path, "someone's data", Token);
        await using var server = new CsiServer(Pool, new CsiServerOptions { SocketPath = path });
        var e = await Assert.ThrowsAsync<InvalidOperationException>(() => server.StartAsync(Token));
        Assert.Contains(path, e.Message, StringComparison.Ordinal);
        Assert.Equal("someone's data", await File.ReadAllTextAsync(path, Token));
    }

    [Fact]
    public async Task Start_LiveServerOnTheSocket_Refused()
    {
        await using var second = new CsiServer(Pool, new CsiServerOptions { SocketPath = SocketPath });
        var e = await Assert.ThrowsAsync<InvalidOperationException>(() => second.StartAsync(Token));
        Assert.Contains("already listening", e.Message, StringComparison.Ordinal);
        Assert.True((await Identity.ProbeAsync(new ProbeRequest(), cancellationToken: Token)).Ready);
    }

    [Fact]
    public async Task UnimplementedRpc_ReturnsUnimplemented()
    {
        await AssertStatus(StatusCode.Unimplemented, () => Controller.ControllerPublishVolumeAsync(new ControllerPublishVolumeRequest { VolumeId = "v", NodeId = "n" }, cancellationToken: Token).ResponseAsync);
    }

    [Fact]
    public async Task WithoutNodeOptions_TheNodeServiceIsNotServed()
    {
        await AssertStatus(StatusCode.Unimplemented, () => Nodes.NodeGetInfoAsync(new NodeGetInfoRequest(), cancellationToken: Token).ResponseAsync);
    }

    [Theory]
    [InlineData("pvc-0d6c2f0e-6f3a-4e59-9d55-2f3b1c7a9e10")]
    [InlineData("snapshot-6a1b")]
    [InlineData("a.b-c")]
    public void ToEngineName_ValidName_IsKept(string name) => Assert.Equal(name, CsiNames.ToEngineName(name));

    [Theory]
    [InlineData("CreateVolume-Name_1")]
    [InlineData("-leading and trailing-")]
    [InlineData("ÜÖÄ")]
    [InlineData("x..y")]
    public void ToEngineName_InvalidName_IsStableAndValid(string name)
    {
        string mapped = CsiNames.ToEngineName(name);
        Assert.Null(Names.Validate(mapped));
        Assert.Equal(mapped, CsiNames.ToEngineName(name));
    }

    [Fact]
    public void ToEngineName_NamesThatCleanUpAlike_StayApart()
    {
        Assert.NotEqual(CsiNames.ToEngineName("Vol_A"), CsiNames.ToEngineName("vol-a"));
        Assert.NotEqual(CsiNames.ToEngineName("Vol_A"), CsiNames.ToEngineName("VOL_A"));
    }

    [Fact]
    public void ToEngineName_LongName_FitsTheLimit()
    {
        string mapped = CsiNames.ToEngineName(new string('X', 400));
        Assert.True(mapped.Length <= Names.MaxLength);
        Assert.Null(Names.Validate(mapped));
    }
}
