using System.Text;
using Dolly.Controllers.Model;
using Dolly.Controllers.Repository;
using Dolly.V1;
using k8s;
using k8s.Models;
using static Dolly.Controllers.Tests.Repository.RepositoryTestKit;
using Engine = Dolly.Repository;

namespace Dolly.Controllers.Tests.Repository;

/// <summary>
/// SnapshotRepositories on the embedded stack (API server, controllers, CSI driver over a real pool), with directory
/// repositories (the same code path as S3 past the object store): every bad spec, Secret and key is the Ready
/// condition and an event naming it; snapshots of a class naming a repository are uploaded with progress and a
/// handle on the content; and a second cluster, with its own pool and API server, restores from that handle.
/// </summary>
public sealed class RepositoryControllerTests : IAsyncLifetime
{
    private const int MiB = 1 << 20;

    private static readonly byte[] Key = Encoding.UTF8.GetBytes("correct horse battery staple");

    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    private readonly string _scratch = Path.Combine(Path.GetTempPath(), "dolly-repos-" + Guid.NewGuid().ToString("N")[..10]);
    private ControllerHarness? _h;

    private RepositoryTestKit A => new(_h!);

    public async ValueTask InitializeAsync()
    {
        Directory.CreateDirectory(_scratch);
        _h = await ControllerHarness.StartAsync("repos", Ct);
    }

    public async ValueTask DisposeAsync()
    {
        if (_h is not null)
        {
            await _h.DisposeAsync();
        }

        Directory.Delete(_scratch, recursive: true);
    }

    /// <summary>A bad input: what the test sets up (Secrets and directories), the repository's spec, and the condition it gives.</summary>
    private sealed record BadInput(Func<RepositoryControllerTests, Task> Arrange, Func<string, Dictionary<string, object>> Spec, string Reason, string Mention);

    private static Dictionary<string, object> S3Spec(string endpoint, string credentials, string keySecret) => new()
    {
        ["s3"] = new Dictionary<string, object>
        {
            ["endpoint"] = endpoint,
            ["bucket"] = "dolly",
            ["credentialsSecretRef"] = new Dictionary<string, object> { ["namespace"] = Ns, ["name"] = credentials },
        },
        ["encryption"] = new Dictionary<string, object> { ["keySecretRef"] = new Dictionary<string, object> { ["namespace"] = Ns, ["name"] = keySecret } },
    };

    private static readonly Dictionary<string, BadInput> Bad = new()
    {
        ["no key Secret"] = new(_ => Task.CompletedTask, dir => DirectorySpec(dir, "missing-key"), "SecretNotFound", "default/missing-key"),
        ["key Secret without the key"] = new(t => t.A.SecretAsync("other-key", new() { ["password"] = Key }), dir => DirectorySpec(dir, "other-key"), "InvalidKey", "no data key 'key'"),
        ["key too short"] = new(t => t.A.SecretAsync("short-key", new() { ["key"] = "1234567"u8.ToArray() }), dir => DirectorySpec(dir, "short-key"), "InvalidKey", "7-byte"),
        ["relative directory"] = new(t => t.A.SecretAsync("k", new() { ["key"] = Key }), _ => DirectorySpec("backups/repo", "k"), "InvalidSpec", "backups/repo"),
        ["both s3 and directory"] = new(
            t => t.A.SecretAsync("k", new() { ["key"] = Key }),
            dir => new Dictionary<string, object>(DirectorySpec(dir, "k")) { ["s3"] = S3Spec("http://127.0.0.1:1", "creds", "k")["s3"] },
            "InvalidSpec",
            "exactly one of spec.s3 and spec.directory"),
        ["S3 credentials without the secret key"] = new(
            async t =>
            {
                await t.A.SecretAsync("k", new() { ["key"] = Key });
                await t.A.SecretAsync("creds", new() { ["accessKeyId"] = "dolly"u8.ToArray() });
            },
            _ => S3Spec("http://127.0.0.1:1", "creds", "k"),
            "InvalidCredentials",
            "lacks secretAccessKey (or AWS_SECRET_ACCESS_KEY)"),
        ["S3 server not there"] = new(
            async t =>
            {
                await t.A.SecretAsync("k", new() { ["key"] = Key });
                await t.A.SecretAsync("creds", new() { ["AWS_ACCESS_KEY_ID"] = "dolly"u8.ToArray(), ["AWS_SECRET_ACCESS_KEY"] = "secret"u8.ToArray() });
            },
            _ => S3Spec("http://127.0.0.1:1", "creds", "k"),
            "Unreachable",
            "127.0.0.1:1"),
        ["wrong key"] = new(
            async t =>
            {
                await t.A.SecretAsync("k", new() { ["key"] = Key });
                await Engine.SnapshotRepository.InitAsync(Engine.Storage.DirectoryObjectStore.Create(t.Dir("bad")), "another key entirely"u8.ToArray(), new Engine.RepositoryInitOptions { KdfIterations = 1000 }, TimeProvider.System, Ct);
            },
            dir => DirectorySpec(dir, "k"),
            "AccessDenied",
            "key"),
    };

    public static TheoryData<string> BadInputs() => [.. Bad.Keys];

    [Theory]
    [MemberData(nameof(BadInputs))]
    public async Task BadInput_ReadyFalseAndEventNameIt_NothingCreated(string name)
    {
        var input = Bad[name];
        await input.Arrange(this);
        bool existedBefore = File.Exists(Path.Combine(Dir("bad"), "config"));

        await A.RepositoryAsync("r", input.Spec(Dir("bad")));

        var repository = await A.RepositoryReasonAsync("r", input.Reason);
        var ready = Assert.Single(repository.Status!.Conditions!);
        Assert.Equal((RepositoryNames.ReadyCondition, "False"), (ready.Type, ready.Status));
        Assert.Contains(input.Mention, ready.Message, StringComparison.Ordinal);
        Assert.False(repository.Status.Reachable);
        Assert.Null(repository.Status.RepositoryId);
        await A.EventAsync("r", input.Reason, input.Mention);
        Assert.Equal(existedBefore, File.Exists(Path.Combine(Dir("bad"), "config")));
    }

    [Fact]
    public async Task Uploaded_ThenRestoredInAnotherCluster_DataEqual_AfterTheFirstPoolIsGone()
    {
        string dir = Dir("shared");
        await A.SecretAsync("repo-key", new() { ["key"] = Key });
        await A.RepositoryAsync("offsite", DirectorySpec(dir, "repo-key"));
        var ready = await A.RepositoryReasonAsync("offsite", "Reachable");
        Assert.True(ready.Status!.Reachable);
        Assert.Contains("created", ready.Status.Conditions![0].Message, StringComparison.Ordinal);
        string repositoryId = Assert.IsType<string>(ready.Status.RepositoryId);

        await A.SnapshotClassAsync("offsite", "offsite");
        string volume = await A.ClaimAsync("db", "64Mi");
        byte[] head = Pattern(1, 256 << 10), tail = Pattern(2, 64 << 10);
        A.Write(volume, 0, head);
        A.Write(volume, 40 * MiB, tail);
        await A.SnapshotAsync("db-1", "db", "offsite");

        var uploaded = await A.ContentAnnotatedAsync("db-1", RepositoryNames.Upload.Phase, RepositoryNames.Succeeded);
        var annotations = uploaded.Metadata.Annotations!;
        Assert.Equal("offsite", annotations[RepositoryNames.Upload.Repository]);
        Assert.StartsWith("100% (", annotations[RepositoryNames.Upload.Progress], StringComparison.Ordinal);
        string handle = annotations[RepositoryNames.HandleAnnotation];
        Assert.True(RepositoryHandles.TryParse(handle, out string handleRepository, out string manifest, out _), handle);
        Assert.Equal(repositoryId, handleRepository);
        Assert.True(File.Exists(Path.Combine(dir, "manifests", manifest)));
        Assert.True((await A.ReadSnapshotAsync("db-1")).Status?.ReadyToUse);
        await A.EventAsync("db-1", "Uploaded", handle);

        // The first cluster goes, pool and all; the repository stays.
        await _h!.DisposeAsync();
        _h = await ControllerHarness.StartAsync("repos-b", Ct);
        var b = A;
        await b.SecretAsync("repo-key", new() { ["key"] = Key });
        await b.RepositoryAsync("same-bucket", DirectorySpec(dir, "repo-key"));
        var found = await b.RepositoryReasonAsync("same-bucket", "Reachable");
        Assert.Equal(repositoryId, found.Status!.RepositoryId);
        Assert.DoesNotContain("created", found.Status.Conditions![0].Message, StringComparison.Ordinal);

        await b.PreProvisionedAsync("imported", handle);
        var restored = await Eventually.Until(async () => await b.ReadSnapshotAsync("imported") is { Status.ReadyToUse: true } s ? s : null, "the imported snapshot ready", Patience);
        Assert.Equal(64 * MiB, (long)restored.Status!.RestoreSize!.ToInt64());
        var content = await Eventually.Until(
            async () => await b.ReadContentAsync("content-imported") is { } c && c.Metadata.Annotations?.TryGetValue(RepositoryNames.Restore.Phase, out var p) == true && p == RepositoryNames.Succeeded ? c : null,
            "the restore recorded on the content",
            Patience);
        Assert.Equal("same-bucket", content.Metadata.Annotations![RepositoryNames.Restore.Repository]);
        await b.EventAsync("imported", "Restored", "same-bucket");

        string copy = await b.ClaimAsync("db-copy", "64Mi", new V1TypedLocalObjectReference { ApiGroup = Names.SnapshotGroup, Kind = "VolumeSnapshot", Name = "imported" });
        Assert.Equal(head, b.Read(copy, 0, head.Length));
        Assert.Equal(tail, b.Read(copy, 40 * MiB, tail.Length));
        Assert.Equal(new byte[4096], b.Read(copy, 20 * MiB, 4096));

        // Nothing of the restore's working volume is left; the pool has the snapshot under the handle.
        var devices = b.Harness.Stack.Pool.ListDevices().Select(d => d.Name).ToList();
        Assert.Contains(handle, devices);
        Assert.DoesNotContain(devices, d => d.EndsWith(".restoring", StringComparison.Ordinal));
    }

    [Fact]
    public async Task ClassNamesAMissingRepository_Waits_ThenUploadsOnceItExists()
    {
        await A.SnapshotClassAsync("later", "not-yet");
        string volume = await A.ClaimAsync("db", "16Mi");
        A.Write(volume, 0, Pattern(3, 4096));
        await A.SnapshotAsync("db-1", "db", "later");

        var waiting = await A.ContentAnnotatedAsync("db-1", RepositoryNames.Upload.Phase, RepositoryNames.Waiting);
        Assert.Contains("RepositoryNotFound", waiting.Metadata.Annotations![RepositoryNames.Upload.Message], StringComparison.Ordinal);
        Assert.Contains("not-yet", waiting.Metadata.Annotations[RepositoryNames.Upload.Message], StringComparison.Ordinal);
        Assert.True((await A.ReadSnapshotAsync("db-1")).Status?.ReadyToUse, "the snapshot is ready without waiting for the upload");
        await A.EventAsync("db-1", "RepositoryNotFound", "not-yet");

        await A.SecretAsync("repo-key", new() { ["key"] = Key });
        await A.RepositoryAsync("not-yet", DirectorySpec(Dir("later"), "repo-key"));
        var done = await A.ContentAnnotatedAsync("db-1", RepositoryNames.Upload.Phase, RepositoryNames.Succeeded);
        Assert.False(done.Metadata.Annotations!.ContainsKey(RepositoryNames.Upload.Message));
        Assert.True(RepositoryHandles.TryParse(done.Metadata.Annotations[RepositoryNames.HandleAnnotation], out _, out _, out _));
    }

    [Fact]
    public async Task ClassWithoutTheParameter_NothingUploaded()
    {
        await A.SecretAsync("repo-key", new() { ["key"] = Key });
        await A.RepositoryAsync("offsite", DirectorySpec(Dir("plain"), "repo-key"));
        await A.RepositoryReasonAsync("offsite", "Reachable");
        await A.SnapshotClassAsync("plain", null);
        await A.ClaimAsync("db", "16Mi");
        await A.SnapshotAsync("db-1", "db", "plain");
        await Eventually.Until(async () => (await A.ReadSnapshotAsync("db-1")).Status?.ReadyToUse == true, "snapshot ready", Patience);

        // Annotations of a snapshot that is not uploaded would appear with the ready status; give the controller a
        // look at the ready content by touching it, then check.
        var content = await A.ContentOfAsync("db-1");
        await A.K.CustomObjects.PatchClusterCustomObjectAsync(new V1Patch("""{"metadata":{"annotations":{"touched":"yes"}}}""", V1Patch.PatchType.MergePatch), Names.SnapshotGroup, "v1", "volumesnapshotcontents", content.Metadata.Name, cancellationToken: Ct);
        await A.ContentAnnotatedAsync("db-1", "touched", "yes");
        Assert.DoesNotContain((await A.ReadContentAsync(content.Metadata.Name)).Metadata.Annotations!.Keys, k => k.StartsWith("dolly.io/upload", StringComparison.Ordinal));
        Assert.DoesNotContain(Directory.GetFiles(Dir("plain"), "*", new EnumerationOptions { RecurseSubdirectories = true }), f => f.Contains("manifests", StringComparison.Ordinal));
    }

    /// <summary>A restore that cannot be done: the handle, what the content says (phase, text in the message) and the event's reason.</summary>
    public static TheoryData<string, string, string, string, string> BadRestores() => new()
    {
        { "malformed handle", "dolly-repo.not-a-handle", RepositoryNames.Failed, "InvalidHandle", "InvalidHandle" },
        { "repository nobody has", RepositoryHandles.Format(new string('a', 32), new string('b', 32)), RepositoryNames.Waiting, "RepositoryNotFound", "RepositoryNotFound" },
        { "manifest the repository lacks", "MISSING-MANIFEST", RepositoryNames.Failed, "no manifest", "RestoreFailed" },
    };

    [Theory]
    [MemberData(nameof(BadRestores))]
    public async Task BadRestore_ContentSaysWhy_NothingInThePool(string name, string handle, string phase, string mention, string reason)
    {
        await A.SecretAsync("repo-key", new() { ["key"] = Key });
        await A.RepositoryAsync("offsite", DirectorySpec(Dir("restore"), "repo-key"));
        var repository = await A.RepositoryReasonAsync("offsite", "Reachable");
        if (handle == "MISSING-MANIFEST")
        {
            handle = RepositoryHandles.Format(repository.Status!.RepositoryId!, new string('c', 32));
        }

        await A.PreProvisionedAsync("imported", handle);

        var content = await Eventually.Until(
            async () => await A.ReadContentAsync("content-imported") is { } c && c.Metadata.Annotations?.TryGetValue(RepositoryNames.Restore.Phase, out var p) == true && p == phase
                && c.Metadata.Annotations.TryGetValue(RepositoryNames.Restore.Message, out var m) && m.Contains(mention, StringComparison.Ordinal) ? c : null,
            $"{name}: restore {phase} mentioning {mention}",
            Patience);
        Assert.NotEqual(true, content.Status?.ReadyToUse);
        Assert.NotEqual(true, (await A.ReadSnapshotAsync("imported")).Status?.ReadyToUse);
        Assert.DoesNotContain(A.Harness.Stack.Pool.ListDevices(), d => d.Name.StartsWith(RepositoryHandles.Prefix, StringComparison.Ordinal));
        var warning = await A.EventAsync("content-imported", reason, string.Empty);
        Assert.Equal("Warning", warning.Type);
    }

    [Fact]
    public async Task UploadFails_WhileTheLocationHoldsAnotherRepository_SaysSo_ThenResumesWhenItIsBack()
    {
        string dir = Dir("swapped");
        await A.SecretAsync("repo-key", new() { ["key"] = Key });
        await A.RepositoryAsync("offsite", DirectorySpec(dir, "repo-key"));
        var ready = await A.RepositoryReasonAsync("offsite", "Reachable");

        // Another repository's config in its place: the upload must not write into a repository the object was not found to be.
        string config = Path.Combine(dir, "config");
        byte[] original = await File.ReadAllBytesAsync(config, Ct);
        var other = await Engine.SnapshotRepository.InitAsync(Engine.Storage.DirectoryObjectStore.Create(Dir("other")), Key, new Engine.RepositoryInitOptions(), TimeProvider.System, Ct);
        await File.WriteAllBytesAsync(config, await File.ReadAllBytesAsync(Path.Combine(Dir("other"), "config"), Ct), Ct);

        await A.SnapshotClassAsync("offsite", "offsite");
        string volume = await A.ClaimAsync("db", "16Mi");
        A.Write(volume, 0, Pattern(4, 8192));
        await A.SnapshotAsync("db-1", "db", "offsite");

        var failed = await A.ContentAnnotatedAsync("db-1", RepositoryNames.Upload.Phase, RepositoryNames.Failed);
        string message = failed.Metadata.Annotations![RepositoryNames.Upload.Message];
        Assert.StartsWith("WrongRepository:", message, StringComparison.Ordinal);
        Assert.Contains(other.Id.ToString("N"), message, StringComparison.Ordinal);
        Assert.Contains(ready.Status!.RepositoryId!, message, StringComparison.Ordinal);
        Assert.Equal("1", failed.Metadata.Annotations[RepositoryNames.Upload.Failures]);
        Assert.False(Directory.Exists(Path.Combine(dir, "manifests")) && Directory.EnumerateFiles(Path.Combine(dir, "manifests")).Any());
        await A.EventAsync("db-1", "UploadFailed", "WrongRepository");

        await File.WriteAllBytesAsync(config, original, Ct);
        var done = await A.ContentAnnotatedAsync("db-1", RepositoryNames.Upload.Phase, RepositoryNames.Succeeded);
        Assert.True(RepositoryHandles.TryParse(done.Metadata.Annotations![RepositoryNames.HandleAnnotation], out string id, out string manifest, out _));
        Assert.Equal(ready.Status.RepositoryId, id);
        Assert.True(File.Exists(Path.Combine(dir, "manifests", manifest)));
    }

    [Fact]
    public void Progress_ReadsAsPercentBytesRateAndTimeLeft()
    {
        Assert.Equal("starting", TransferController.Progress(new Transfer()));
        Assert.Equal("25% (256.0 MiB of 1.0 GiB) at 64.0 MiB/s, about 12s left", TransferController.Progress(new Transfer { BytesDone = 256L * MiB, BytesTotal = 1024L * MiB, BytesPerSecond = 64.0 * MiB }));
        Assert.Equal("0% (0 B of 4.0 KiB)", TransferController.Progress(new Transfer { BytesTotal = 4096 }));
    }

    private string Dir(string name) => Path.Combine(_scratch, name);
}
