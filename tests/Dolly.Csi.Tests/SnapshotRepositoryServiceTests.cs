using Google.Protobuf;
using Grpc.Core;
using P = Dolly.V1;

namespace Dolly.Csi.Tests;

/// <summary>
/// dolly.v1.SnapshotRepositoryService over the driver's socket, with a directory repository: the codes its proto
/// promises, and an upload restored back under its handle, replacing what an interrupted restore left.
/// </summary>
public sealed class SnapshotRepositoryServiceTests : CsiTestBase
{
    private static readonly ByteString Key = ByteString.CopyFromUtf8("a key of more than eight bytes");

    private P.RepositoryLocation Location(string name = "repo", ByteString? key = null) =>
        new() { Directory = new P.DirectoryStore { Path = Path.Combine(Dir, name) }, Key = key ?? Key, Name = "test" };

    public static TheoryData<string, StatusCode> Refusals() => new()
    {
        { "probe without a repository", StatusCode.InvalidArgument },
        { "probe with a short key", StatusCode.InvalidArgument },
        { "probe of a relative directory", StatusCode.InvalidArgument },
        { "probe with no store", StatusCode.InvalidArgument },
        { "probe where there is no repository", StatusCode.NotFound },
        { "probe with the wrong key", StatusCode.PermissionDenied },
        { "upload of a snapshot the pool lacks", StatusCode.NotFound },
        { "upload of a volume", StatusCode.NotFound },
        { "restore of a malformed handle", StatusCode.InvalidArgument },
        { "unknown upload", StatusCode.NotFound },
        { "unknown restore", StatusCode.NotFound },
    };

    [Theory]
    [MemberData(nameof(Refusals))]
    public async Task Refused_WithTheDocumentedCode(string what, StatusCode code)
    {
        using var channel = Connect(SocketPath);
        var repos = new P.SnapshotRepositoryService.SnapshotRepositoryServiceClient(channel);
        await repos.ProbeRepositoryAsync(new P.ProbeRepositoryRequest { Repository = Location(), CreateIfMissing = true }, cancellationToken: Token);
        _ = Pool.CreateVolume("vol", 4 * MiB).Value;
        Task call = what switch
        {
            "probe without a repository" => repos.ProbeRepositoryAsync(new P.ProbeRepositoryRequest(), cancellationToken: Token).ResponseAsync,
            "probe with a short key" => repos.ProbeRepositoryAsync(new P.ProbeRepositoryRequest { Repository = Location(key: ByteString.CopyFromUtf8("short")) }, cancellationToken: Token).ResponseAsync,
            "probe of a relative directory" => repos.ProbeRepositoryAsync(new P.ProbeRepositoryRequest { Repository = new P.RepositoryLocation { Directory = new P.DirectoryStore { Path = "repo" }, Key = Key } }, cancellationToken: Token).ResponseAsync,
            "probe with no store" => repos.ProbeRepositoryAsync(new P.ProbeRepositoryRequest { Repository = new P.RepositoryLocation { Key = Key } }, cancellationToken: Token).ResponseAsync,
            "probe where there is no repository" => repos.ProbeRepositoryAsync(new P.ProbeRepositoryRequest { Repository = Location("empty") }, cancellationToken: Token).ResponseAsync,
            "probe with the wrong key" => repos.ProbeRepositoryAsync(new P.ProbeRepositoryRequest { Repository = Location(key: ByteString.CopyFromUtf8("another key entirely")) }, cancellationToken: Token).ResponseAsync,
            "upload of a snapshot the pool lacks" => repos.UploadSnapshotAsync(new P.UploadSnapshotRequest { Repository = Location(), SnapshotId = "missing" }, cancellationToken: Token).ResponseAsync,
            "upload of a volume" => repos.UploadSnapshotAsync(new P.UploadSnapshotRequest { Repository = Location(), SnapshotId = "vol" }, cancellationToken: Token).ResponseAsync,
            "restore of a malformed handle" => repos.RestoreSnapshotAsync(new P.RestoreSnapshotRequest { Repository = Location(), SnapshotHandle = "dolly-repo.x.y" }, cancellationToken: Token).ResponseAsync,
            "unknown upload" => repos.GetUploadAsync(new P.GetUploadRequest { SnapshotId = "vol" }, cancellationToken: Token).ResponseAsync,
            _ => repos.GetRestoreAsync(new P.GetRestoreRequest { SnapshotHandle = P.RepositoryHandles.Format(new string('a', 32), new string('b', 32)) }, cancellationToken: Token).ResponseAsync,
        };

        var ex = await Assert.ThrowsAsync<RpcException>(() => call);
        Assert.Equal(code, ex.StatusCode);
        Assert.False(string.IsNullOrEmpty(ex.Status.Detail));
    }

    [Fact]
    public async Task Uploaded_RestoredUnderTheHandle_ReplacingAnInterruptedRestore_ThenAnsweredAtOnce()
    {
        using var channel = Connect(SocketPath);
        var repos = new P.SnapshotRepositoryService.SnapshotRepositoryServiceClient(channel);
        var probe = await repos.ProbeRepositoryAsync(new P.ProbeRepositoryRequest { Repository = Location(), CreateIfMissing = true, IncludeUsage = true }, cancellationToken: Token);
        Assert.True(probe.Created);
        Assert.Equal(0, probe.Usage.ChunkCount);

        var data = new byte[256 * 1024];
        new Random(7).NextBytes(data);
        _ = Pool.CreateVolume("vol", 16 * MiB).Value;
        Pool.OpenDevice("vol").Value.Write(5 * MiB, data).ThrowIfFailed();
        _ = Pool.CreateSnapshot("vol", "snap").Value;

        var started = await repos.UploadSnapshotAsync(new P.UploadSnapshotRequest { Repository = Location(), SnapshotId = "snap", ExpectedRepositoryId = probe.RepositoryId }, cancellationToken: Token);
        Assert.Equal("snap", started.SnapshotId);
        var uploaded = await UntilAsync(() => repos.GetUploadAsync(new P.GetUploadRequest { SnapshotId = "snap" }, cancellationToken: Token).ResponseAsync);
        Assert.Equal(P.TransferPhase.Succeeded, uploaded.Phase);
        Assert.True(P.RepositoryHandles.TryParse(uploaded.RepositoryHandle, out string repositoryId, out _, out _));
        Assert.Equal(probe.RepositoryId, repositoryId);

        // Asked again, a finished upload is answered, not repeated.
        var again = await repos.UploadSnapshotAsync(new P.UploadSnapshotRequest { Repository = Location(), SnapshotId = "snap" }, cancellationToken: Token);
        Assert.Equal(uploaded.RepositoryHandle, again.RepositoryHandle);
        var usage = await repos.ProbeRepositoryAsync(new P.ProbeRepositoryRequest { Repository = Location(), IncludeUsage = true }, cancellationToken: Token);
        Assert.False(usage.Created);
        Assert.Equal(1, usage.Usage.ManifestCount);
        Assert.True(usage.Usage.ChunkCount >= 1 && usage.Usage.BytesStored > 0);

        // What a crash mid-restore leaves: a working volume with other content. It must not survive into the copy.
        string handle = uploaded.RepositoryHandle;
        _ = Pool.CreateVolume(handle + ".restoring", 16 * MiB).Value;
        Pool.OpenDevice(handle + ".restoring").Value.Write(0, data).ThrowIfFailed();

        await repos.RestoreSnapshotAsync(new P.RestoreSnapshotRequest { Repository = Location(), SnapshotHandle = handle }, cancellationToken: Token);
        var restored = await UntilAsync(() => repos.GetRestoreAsync(new P.GetRestoreRequest { SnapshotHandle = handle }, cancellationToken: Token).ResponseAsync);
        Assert.Equal(P.TransferPhase.Succeeded, restored.Phase);
        Assert.True(restored.BytesTotal > 0 && restored.BytesDone == restored.BytesTotal, $"{restored.BytesDone} of {restored.BytesTotal}");
        var copy = Pool.GetDevice(handle).Value;
        Assert.Equal((Storage.DeviceKind.Snapshot, 16 * MiB), (copy.Kind, copy.Size));
        var read = new byte[data.Length];
        Pool.OpenDevice(handle).Value.Read(5 * MiB, read).ThrowIfFailed();
        Assert.Equal(data, read);
        Pool.OpenDevice(handle).Value.Read(0, read).ThrowIfFailed();
        Assert.Equal(new byte[read.Length], read);
        Assert.False(Pool.GetDevice(handle + ".restoring").IsOk);

        // Already in the pool: succeeded at once, without the repository.
        var known = await repos.RestoreSnapshotAsync(new P.RestoreSnapshotRequest { Repository = Location("elsewhere"), SnapshotHandle = handle }, cancellationToken: Token);
        Assert.Equal(P.TransferPhase.Succeeded, known.Phase);
    }

    [Fact]
    public async Task RestoreOfAManifestTheRepositoryLacks_Fails_NamingIt_NothingInThePool()
    {
        using var channel = Connect(SocketPath);
        var repos = new P.SnapshotRepositoryService.SnapshotRepositoryServiceClient(channel);
        var probe = await repos.ProbeRepositoryAsync(new P.ProbeRepositoryRequest { Repository = Location(), CreateIfMissing = true }, cancellationToken: Token);
        string handle = P.RepositoryHandles.Format(probe.RepositoryId, new string('c', 32));
        await repos.RestoreSnapshotAsync(new P.RestoreSnapshotRequest { Repository = Location(), SnapshotHandle = handle }, cancellationToken: Token);
        var failed = await UntilAsync(() => repos.GetRestoreAsync(new P.GetRestoreRequest { SnapshotHandle = handle }, cancellationToken: Token).ResponseAsync);
        Assert.Equal(P.TransferPhase.Failed, failed.Phase);
        Assert.Equal("NotFound", failed.Reason);
        Assert.Contains(new string('c', 32), failed.Message, StringComparison.Ordinal);
        Assert.NotNull(failed.CompletedAt);
        Assert.DoesNotContain(Pool.ListDevices(), d => d.Name.StartsWith(P.RepositoryHandles.Prefix, StringComparison.Ordinal));

        // Another repository at the location than the handle names: refused before anything is fetched.
        string foreign = P.RepositoryHandles.Format(new string('d', 32), new string('c', 32));
        await repos.RestoreSnapshotAsync(new P.RestoreSnapshotRequest { Repository = Location(), SnapshotHandle = foreign }, cancellationToken: Token);
        var wrong = await UntilAsync(() => repos.GetRestoreAsync(new P.GetRestoreRequest { SnapshotHandle = foreign }, cancellationToken: Token).ResponseAsync);
        Assert.Equal(("WrongRepository", P.TransferPhase.Failed), (wrong.Reason, wrong.Phase));
        Assert.Contains(probe.RepositoryId, wrong.Message, StringComparison.Ordinal);
    }

    /// <summary>Polls a transfer until it is no longer running (generous: CI machines are loaded).</summary>
    private static async Task<P.Transfer> UntilAsync(Func<Task<P.Transfer>> get)
    {
        var deadline = DateTime.UtcNow.AddMinutes(2);
        while (true)
        {
            var t = await get();
            if (t.Phase != P.TransferPhase.Running || DateTime.UtcNow > deadline)
            {
                return t;
            }

            await Task.Delay(50, Token);
        }
    }
}
