using Dolly.Csi.V1;
using Grpc.Core;
using RpcType = Dolly.Csi.V1.NodeServiceCapability.Types.RPC.Types.Type;

namespace Dolly.Csi.Tests;

/// <summary>The Node service attaching with nbdfuse and a loop device (forced, so it is this path on any machine).</summary>
public sealed class NodeTests() : NodeTestsBase(NodeAttachMode.Nbdfuse)
{
    protected override void RequireAttach() => NodeCleanup.RequireBlockStack();
}

/// <summary>
/// The Node service attaching with the kernel NBD driver through nbd-client (forced); skipped where this machine has
/// no /dev/nbd0 or no nbd-client. The build machine has no nbd module, so there it proves nothing but the skip.
/// </summary>
public sealed class KernelNodeTests() : NodeTestsBase(NodeAttachMode.Kernel)
{
    protected override void RequireAttach() => NodeCleanup.RequireKernelNbd();
}

/// <summary>
/// The Node service through gRPC, as kubelet drives it: stage (attach through NBD, mkfs, mount), publish
/// (bind mount), write, unpublish, unstage; then a snapshot restored into a new volume and read back. Run
/// against each attach mechanism.
/// </summary>
public abstract class NodeTestsBase(NodeAttachMode attach) : CsiTestBase(withNode: true, (options, _) => options with { NodeAttach = attach })
{
    private const string Hello = "hello from a CSI node\n";

    /// <summary>Skips the test where this mechanism cannot run.</summary>
    protected abstract void RequireAttach();

    /// <summary>Asserts that the record of a staged volume names this mechanism and its device; returns the device.</summary>
    private string AssertAttachedWithThisMechanism(string volumeId)
    {
        var record = StagedVolume.Read(Path.Combine(Dir, "node", volumeId + ".json"));
        Assert.NotNull(record);
        if (attach == NodeAttachMode.Kernel)
        {
            Assert.Equal(Attachment.Kernel, record.Attach);
            Assert.StartsWith("/dev/nbd", record.NbdDevice, StringComparison.Ordinal);
            Assert.True(KernelNbd.System.Connected(record.Device), $"{record.Device} shows no connection in sysfs");
        }
        else
        {
            Assert.Equal(Attachment.Nbdfuse, record.Attach);
            Assert.StartsWith("/dev/loop", record.LoopDevice, StringComparison.Ordinal);
        }

        return record.Device;
    }

    /// <summary>After unstage, a kernel attachment's device has no connection left.</summary>
    private void AssertReleased(string device)
    {
        if (attach == NodeAttachMode.Kernel)
        {
            Assert.False(KernelNbd.System.Connected(device), $"{device} is still connected after unstage");
        }
    }

    [Fact]
    public async Task NodeGetInfo_AndCapabilities()
    {
        var info = await Nodes.NodeGetInfoAsync(new NodeGetInfoRequest(), cancellationToken: Token);
        Assert.Equal("node-1", info.NodeId);
        Assert.Equal(0, info.MaxVolumesPerNode);

        var caps = await Nodes.NodeGetCapabilitiesAsync(new NodeGetCapabilitiesRequest(), cancellationToken: Token);
        Assert.Equal(
            [RpcType.StageUnstageVolume, RpcType.GetVolumeStats, RpcType.ExpandVolume],
            caps.Capabilities.Select(c => c.Rpc.Type).ToArray());
    }

    [Fact]
    public async Task MissingFields_AreInvalidArgument_UnknownVolume_IsNotFound()
    {
        string staging = Path.Combine(Dir, "staging", "x");
        await AssertStatus(StatusCode.InvalidArgument, () => Nodes.NodeStageVolumeAsync(new NodeStageVolumeRequest { StagingTargetPath = staging, VolumeCapability = MountCapability() }, cancellationToken: Token).ResponseAsync, "volume_id");
        await AssertStatus(StatusCode.InvalidArgument, () => Nodes.NodeStageVolumeAsync(new NodeStageVolumeRequest { VolumeId = "v", VolumeCapability = MountCapability() }, cancellationToken: Token).ResponseAsync, "staging_target_path");
        await AssertStatus(StatusCode.InvalidArgument, () => Nodes.NodeStageVolumeAsync(new NodeStageVolumeRequest { VolumeId = "v", StagingTargetPath = staging }, cancellationToken: Token).ResponseAsync, "volume_capability");
        await AssertStatus(StatusCode.InvalidArgument, () => Nodes.NodeUnstageVolumeAsync(new NodeUnstageVolumeRequest { VolumeId = "v" }, cancellationToken: Token).ResponseAsync, "staging_target_path");
        await AssertStatus(StatusCode.InvalidArgument, () => Nodes.NodePublishVolumeAsync(new NodePublishVolumeRequest { VolumeId = "v", StagingTargetPath = staging, VolumeCapability = MountCapability() }, cancellationToken: Token).ResponseAsync, "target_path");
        await AssertStatus(StatusCode.InvalidArgument, () => Nodes.NodeUnpublishVolumeAsync(new NodeUnpublishVolumeRequest { TargetPath = staging }, cancellationToken: Token).ResponseAsync, "volume_id");
        await AssertStatus(StatusCode.InvalidArgument, () => Nodes.NodeGetVolumeStatsAsync(new NodeGetVolumeStatsRequest { VolumeId = "v" }, cancellationToken: Token).ResponseAsync, "volume_path");
        await AssertStatus(StatusCode.InvalidArgument, () => Nodes.NodeExpandVolumeAsync(new NodeExpandVolumeRequest { VolumePath = staging }, cancellationToken: Token).ResponseAsync, "volume_id");

        var unsupported = MountCapability();
        unsupported.Mount.FsType = "vfat";
        await AssertStatus(StatusCode.InvalidArgument, () => Nodes.NodeStageVolumeAsync(new NodeStageVolumeRequest { VolumeId = "v", StagingTargetPath = staging, VolumeCapability = unsupported }, cancellationToken: Token).ResponseAsync, "vfat");

        await AssertStatus(StatusCode.NotFound, () => Nodes.NodeStageVolumeAsync(new NodeStageVolumeRequest { VolumeId = "pvc-missing", StagingTargetPath = staging, VolumeCapability = MountCapability() }, cancellationToken: Token).ResponseAsync, "pvc-missing");
        await AssertStatus(StatusCode.NotFound, () => Nodes.NodeGetVolumeStatsAsync(new NodeGetVolumeStatsRequest { VolumeId = "v", VolumePath = staging }, cancellationToken: Token).ResponseAsync, staging);

        // Nothing staged or published: undoing is a no-op.
        await Nodes.NodeUnstageVolumeAsync(new NodeUnstageVolumeRequest { VolumeId = "v", StagingTargetPath = staging }, cancellationToken: Token);
        await Nodes.NodeUnpublishVolumeAsync(new NodeUnpublishVolumeRequest { VolumeId = "v", TargetPath = Path.Combine(Dir, "pods", "x") }, cancellationToken: Token);
    }

    [Fact]
    public async Task StagePublishWrite_SnapshotRestore_ReadsTheFileBack()
    {
        RequireAttach();
        var volume = await CreateVolumeAsync("pvc-node", 64 * MiB);
        string staging = Path.Combine(Dir, "staging", volume.VolumeId);
        string target = Path.Combine(Dir, "pods", "a", "mount");

        await StageAsync(volume.VolumeId, staging, MountCapability());
        await StageAsync(volume.VolumeId, staging, MountCapability()); // idempotent
        Assert.Contains(staging, NodeCleanup.MountPoints());
        string device = AssertAttachedWithThisMechanism(volume.VolumeId);

        // Staged elsewhere: refused, the first staging stays.
        await AssertStatus(StatusCode.AlreadyExists, () => StageAsync(volume.VolumeId, staging + "-other", MountCapability()), staging);

        await PublishAsync(volume.VolumeId, staging, target, readOnly: false);
        await PublishAsync(volume.VolumeId, staging, target, readOnly: false); // idempotent
        await File.WriteAllTextAsync(Path.Combine(target, "hello.txt"), Hello, Token);

        var stats = await Nodes.NodeGetVolumeStatsAsync(new NodeGetVolumeStatsRequest { VolumeId = volume.VolumeId, VolumePath = target }, cancellationToken: Token);
        var bytes = stats.Usage.Single(u => u.Unit == VolumeUsage.Types.Unit.Bytes);
        var inodes = stats.Usage.Single(u => u.Unit == VolumeUsage.Types.Unit.Inodes);
        Assert.InRange(bytes.Total, 32 * MiB, 64 * MiB);
        Assert.True(bytes.Used > 0 && bytes.Available > 0 && bytes.Available <= bytes.Total, bytes.ToString());
        Assert.True(inodes.Total > 0 && inodes.Used > 0 && inodes.Used + inodes.Available == inodes.Total, inodes.ToString());

        // Expansion with no growth is a no-op that still runs resize2fs (and losetup -c for a loop device).
        var expanded = await Nodes.NodeExpandVolumeAsync(new NodeExpandVolumeRequest { VolumeId = volume.VolumeId, VolumePath = target, StagingTargetPath = staging }, cancellationToken: Token);
        Assert.Equal(64 * MiB, expanded.CapacityBytes);

        await UnpublishAsync(volume.VolumeId, target);
        await UnpublishAsync(volume.VolumeId, target); // idempotent
        Assert.False(Directory.Exists(target));
        await AssertStatus(StatusCode.NotFound, () => Nodes.NodeGetVolumeStatsAsync(new NodeGetVolumeStatsRequest { VolumeId = volume.VolumeId, VolumePath = target }, cancellationToken: Token).ResponseAsync);

        await UnstageAsync(volume.VolumeId, staging);
        await UnstageAsync(volume.VolumeId, staging); // idempotent
        Assert.DoesNotContain(staging, NodeCleanup.MountPoints());
        Assert.Empty(Directory.EnumerateFiles(Path.Combine(Dir, "node")));
        AssertReleased(device);

        // The file system reached the pool: a snapshot restored into a new volume has the file.
        var snapshot = await CreateSnapshotAsync("snap-node", volume.VolumeId);
        var restored = await CreateVolumeAsync("pvc-restored", source: FromSnapshot(snapshot.SnapshotId));
        string restoredStaging = Path.Combine(Dir, "staging", restored.VolumeId);
        string reader = Path.Combine(Dir, "pods", "b", "mount");
        await StageAsync(restored.VolumeId, restoredStaging, MountCapability());
        await PublishAsync(restored.VolumeId, restoredStaging, reader, readOnly: true);
        Assert.Equal(Hello, await File.ReadAllTextAsync(Path.Combine(reader, "hello.txt"), Token));
        var write = Record.Exception(() => File.WriteAllText(Path.Combine(reader, "new.txt"), "x"));
        Assert.True(write is IOException or UnauthorizedAccessException, $"a write to a read-only publish did not fail: {write}");

        await UnpublishAsync(restored.VolumeId, reader);
        await UnstageAsync(restored.VolumeId, restoredStaging);
        Assert.DoesNotContain(restoredStaging, NodeCleanup.MountPoints());
    }

    [Fact]
    public async Task BlockAccess_PublishesTheDeviceAsAFile()
    {
        RequireAttach();
        var volume = await CreateVolumeAsync("pvc-block", 16 * MiB);
        Pool.OpenDevice(volume.VolumeId).Value.Write(0, Pattern(4096, 7)).ThrowIfFailed();
        string staging = Path.Combine(Dir, "staging", volume.VolumeId);
        string target = Path.Combine(Dir, "pods", "c", "dev");

        await StageAsync(volume.VolumeId, staging, BlockCapability());
        await StageAsync(volume.VolumeId, staging, BlockCapability());
        string attached = AssertAttachedWithThisMechanism(volume.VolumeId);
        await PublishAsync(volume.VolumeId, staging, target, readOnly: false, BlockCapability());
        await PublishAsync(volume.VolumeId, staging, target, readOnly: false, BlockCapability());

        var head = new byte[4096];
        await using (var device = File.OpenRead(target))
        {
            await device.ReadExactlyAsync(head, Token);
        }

        Assert.Equal(Pattern(4096, 7), head);
        await using (var device = new FileStream(target, FileMode.Open, FileAccess.Write))
        {
            device.Seek(8192, SeekOrigin.Begin);
            await device.WriteAsync(Pattern(4096, 9), Token);
        }

        var stats = await Nodes.NodeGetVolumeStatsAsync(new NodeGetVolumeStatsRequest { VolumeId = volume.VolumeId, VolumePath = target }, cancellationToken: Token);
        Assert.Equal(16 * MiB, stats.Usage.Single().Total);

        await UnpublishAsync(volume.VolumeId, target);
        Assert.False(File.Exists(target));
        await UnstageAsync(volume.VolumeId, staging);
        await UnstageAsync(volume.VolumeId, staging);
        AssertReleased(attached);

        // Written through the published device: after unstage the pool has the bytes.
        var written = new byte[4096];
        Pool.OpenDevice(volume.VolumeId).Value.Read(8192, written).ThrowIfFailed();
        Assert.Equal(Pattern(4096, 9), written);
    }

    private Task<NodeStageVolumeResponse> StageAsync(string volumeId, string staging, VolumeCapability capability) =>
        Nodes.NodeStageVolumeAsync(new NodeStageVolumeRequest { VolumeId = volumeId, StagingTargetPath = staging, VolumeCapability = capability }, cancellationToken: Token).ResponseAsync;

    private Task<NodeUnstageVolumeResponse> UnstageAsync(string volumeId, string staging) =>
        Nodes.NodeUnstageVolumeAsync(new NodeUnstageVolumeRequest { VolumeId = volumeId, StagingTargetPath = staging }, cancellationToken: Token).ResponseAsync;

    private Task<NodePublishVolumeResponse> PublishAsync(string volumeId, string staging, string target, bool readOnly, VolumeCapability? capability = null) =>
        Nodes.NodePublishVolumeAsync(
            new NodePublishVolumeRequest { VolumeId = volumeId, StagingTargetPath = staging, TargetPath = target, Readonly = readOnly, VolumeCapability = capability ?? MountCapability() },
            cancellationToken: Token).ResponseAsync;

    private Task<NodeUnpublishVolumeResponse> UnpublishAsync(string volumeId, string target) =>
        Nodes.NodeUnpublishVolumeAsync(new NodeUnpublishVolumeRequest { VolumeId = volumeId, TargetPath = target }, cancellationToken: Token).ResponseAsync;
}
