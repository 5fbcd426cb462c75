using System.Globalization;
using Dolly.Controllers.Model;
using Dolly.Controllers.Runtime;
using Dolly.V1;
using Grpc.Core;
using Microsoft.Extensions.Logging;

namespace Dolly.Controllers.Repository;

/// <summary>
/// Moves snapshots between the pool and SnapshotRepositories, through the driver (dolly.v1.SnapshotRepositoryService):
/// <list type="bullet">
/// <item>Upload: a ready VolumeSnapshotContent of Dolly's driver whose VolumeSnapshotClass has the parameter
/// <c>dolly.io/repository: NAME</c> is uploaded to that repository. The snapshot is ready as soon as it is cut;
/// the upload's phase, progress and outcome are annotations on the content, and once done
/// <c>dolly.io/repository-handle</c> holds the handle that restores it in any cluster.</item>
/// <item>Restore anywhere: a content whose <c>source.snapshotHandle</c> is a repository handle (pre-provisioned, as
/// for any snapshot made elsewhere) is restored from the SnapshotRepository holding that repository id into the
/// pool, under the handle itself; the content then becomes ready, and claims restore from it as from any snapshot.</item>
/// </list>
/// Failures are annotations and warning events naming the repository and the object; each is retried with backoff
/// (an upload resumes, sending nothing already stored). Nothing half-done is ever usable: a manifest is written after
/// its chunks, and a restored snapshot appears under the handle only once every chunk is verified.
/// </summary>
internal sealed class TransferController : Reconciler
{
    /// <summary>How often a running transfer's progress is read.</summary>
    private static readonly TimeSpan Poll = TimeSpan.FromSeconds(2);

    /// <summary>How soon a transfer waiting on a Secret is looked at again (Secrets are not watched).</summary>
    private static readonly TimeSpan RetryWaiting = TimeSpan.FromSeconds(30);

    private static readonly TimeSpan FirstRetry = TimeSpan.FromSeconds(5);
    private static readonly TimeSpan MaxRetry = TimeSpan.FromMinutes(5);

    private readonly ControllerContext _c;
    private readonly SnapshotRepositoryService.SnapshotRepositoryServiceClient _driver;

    public TransferController(ControllerContext context)
        : base("repository-transfers", context.Options.RetryBaseDelay, context.Options.RetryMaxDelay, context.Loggers.CreateLogger<TransferController>())
    {
        _c = context;
        _driver = new SnapshotRepositoryService.SnapshotRepositoryServiceClient(context.CsiInvoker);
        var cluster = context.Cluster;
        cluster.Contents.OnChange((old, now) =>
        {
            if ((now ?? old) is { } content)
            {
                Queue.Add(content.Metadata.Name);
            }
        });

        // A class gaining the parameter, or a repository becoming ready, lets contents waiting on it go on.
        cluster.SnapshotClasses.OnChange((old, now) =>
        {
            if ((now ?? old)?.Metadata.Name is { } name)
            {
                foreach (var content in cluster.Contents.ByIndex(Indexes.ContentByClass, name))
                {
                    Queue.Add(content.Metadata.Name);
                }
            }
        });
        cluster.Repositories.OnChange((_, _) =>
        {
            foreach (var content in cluster.Contents.ByIndex(Indexes.ContentAwaitingRepository, ""))
            {
                Queue.Add(content.Metadata.Name);
            }
        });
    }

    /// <summary>Whether a content waits on some repository (so a repository's change may let it go on).</summary>
    internal static bool Waits(VolumeSnapshotContent content)
    {
        var a = content.Metadata.Annotations;
        return a is not null && ((a.TryGetValue(RepositoryNames.Upload.Phase, out var up) && up != RepositoryNames.Succeeded)
            || (a.TryGetValue(RepositoryNames.Restore.Phase, out var down) && down != RepositoryNames.Succeeded));
    }

    protected override Task<Outcome> ReconcileAsync(string key, CancellationToken cancellationToken)
    {
        var content = _c.Cluster.Contents.Get(key);
        if (content is null || content.Metadata.DeletionTimestamp is not null || content.Spec.Driver != _c.Options.DriverName)
        {
            return Task.FromResult(Outcome.Done);
        }

        return RepositoryHandles.HasPrefix(content.Spec.Source.SnapshotHandle)
            ? RestoreAsync(content, content.Spec.Source.SnapshotHandle!, cancellationToken)
            : UploadAsync(content, cancellationToken);
    }

    private async Task<Outcome> UploadAsync(VolumeSnapshotContent content, CancellationToken ct)
    {
        var a = RepositoryNames.Upload;
        string? className = content.Spec.VolumeSnapshotClassName;
        string? name = null;
        if (className is not null && _c.Cluster.SnapshotClasses.Get(className)?.Parameters?.TryGetValue(RepositoryNames.ClassParameter, out var named) == true)
        {
            name = named;
        }

        if (name is null || Annotation(content, a.Phase) == RepositoryNames.Succeeded
            || content.Status?.ReadyToUse != true || content.Status.SnapshotHandle is not { Length: > 0 } snapshotId)
        {
            return Outcome.Done;
        }

        var repository = _c.Cluster.Repositories.Get(name);
        if (repository is null)
        {
            await WaitAsync(content, a, name, "RepositoryNotFound", $"SnapshotRepository {name} (named by VolumeSnapshotClass {className}) does not exist", ct).ConfigureAwait(false);
            return Outcome.Done;
        }

        if (NotReady(repository) is { } notReady)
        {
            await WaitAsync(content, a, name, "RepositoryNotReady", notReady, ct).ConfigureAwait(false);
            return Outcome.Done;
        }

        var (location, problem) = await RepositoryAccess.ResolveAsync(_c.Cluster.Client, repository, ct).ConfigureAwait(false);
        if (problem is not null)
        {
            await WaitAsync(content, a, name, problem.Reason, problem.Message, ct).ConfigureAwait(false);
            return Outcome.After(RetryWaiting);
        }

        var start = new UploadSnapshotRequest { Repository = location, SnapshotId = snapshotId, ExpectedRepositoryId = repository.Status!.RepositoryId };
        return await FollowAsync(
            content,
            a,
            name,
            () => _driver.GetUploadAsync(new GetUploadRequest { SnapshotId = snapshotId }, _c.CsiCall(ct)).ResponseAsync,
            () => _driver.UploadSnapshotAsync(start, _c.CsiCall(ct)).ResponseAsync,
            ct).ConfigureAwait(false);
    }

    private async Task<Outcome> RestoreAsync(VolumeSnapshotContent content, string handle, CancellationToken ct)
    {
        var a = RepositoryNames.Restore;
        // A content that became ready while the restore was followed still gets its outcome recorded.
        string? phase = Annotation(content, a.Phase);
        if (phase == RepositoryNames.Succeeded || (content.Status?.ReadyToUse == true && phase is null))
        {
            return Outcome.Done;
        }

        if (!RepositoryHandles.TryParse(handle, out string repositoryId, out _, out string malformed))
        {
            await WaitAsync(content, a, null, "InvalidHandle", malformed, ct, phase: RepositoryNames.Failed).ConfigureAwait(false);
            return Outcome.Done;
        }

        var holders = _c.Cluster.Repositories.List().Where(r => r.Status?.RepositoryId == repositoryId).OrderBy(r => r.Metadata.Name, StringComparer.Ordinal).ToList();
        if (holders.Count == 0)
        {
            await WaitAsync(content, a, null, "RepositoryNotFound", $"no SnapshotRepository is repository {repositoryId}: create one for the bucket and prefix (or directory) that snapshot {handle} was uploaded to", ct).ConfigureAwait(false);
            return Outcome.Done;
        }

        var repository = holders.FirstOrDefault(r => NotReady(r) is null) ?? holders[0];
        string name = repository.Metadata.Name;
        if (NotReady(repository) is { } notReady)
        {
            await WaitAsync(content, a, name, "RepositoryNotReady", notReady, ct).ConfigureAwait(false);
            return Outcome.Done;
        }

        var (location, problem) = await RepositoryAccess.ResolveAsync(_c.Cluster.Client, repository, ct).ConfigureAwait(false);
        if (problem is not null)
        {
            await WaitAsync(content, a, name, problem.Reason, problem.Message, ct).ConfigureAwait(false);
            return Outcome.After(RetryWaiting);
        }

        var start = new RestoreSnapshotRequest { Repository = location, SnapshotHandle = handle };
        return await FollowAsync(
            content,
            a,
            name,
            () => _driver.GetRestoreAsync(new GetRestoreRequest { SnapshotHandle = handle }, _c.CsiCall(ct)).ResponseAsync,
            () => _driver.RestoreSnapshotAsync(start, _c.CsiCall(ct)).ResponseAsync,
            ct).ConfigureAwait(false);
    }

    /// <summary>Reads the driver's transfer (starting it when the driver knows none), writes where it stands, and says when to look again.</summary>
    private async Task<Outcome> FollowAsync(VolumeSnapshotContent content, TransferAnnotations a, string repository, Func<Task<Transfer>> get, Func<Task<Transfer>> start, CancellationToken ct)
    {
        Transfer transfer;
        try
        {
            try
            {
                transfer = await get().ConfigureAwait(false);
            }
            catch (RpcException ex) when (ex.StatusCode == StatusCode.NotFound)
            {
                transfer = await start().ConfigureAwait(false);
            }

            if (transfer.Phase == TransferPhase.Failed && Annotation(content, a.FailedAt) == Stamp(transfer.CompletedAt) && RetryDue(content, a, transfer) is { } wait)
            {
                if (wait > TimeSpan.Zero)
                {
                    return Outcome.After(wait);
                }

                transfer = await start().ConfigureAwait(false);
            }
        }
        catch (RpcException ex) when (!ct.IsCancellationRequested && ex.StatusCode is StatusCode.NotFound or StatusCode.InvalidArgument or StatusCode.Aborted)
        {
            // Refused before anything started: the snapshot is gone, the spec is malformed, or another upload runs.
            await WaitAsync(content, a, repository, $"{Capitalized(a.Operation)}Refused", $"the driver refused the {a.Operation} with SnapshotRepository {repository}: {ex.Status.Detail}", ct).ConfigureAwait(false);
            return Outcome.After(RetryWaiting);
        }

        switch (transfer.Phase)
        {
            case TransferPhase.Succeeded:
                var done = new MergePatch()
                    .Annotation(a.Repository, repository)
                    .Annotation(a.Phase, RepositoryNames.Succeeded)
                    .Annotation(a.Progress, $"100% ({Bytes(transfer.BytesTotal)})")
                    .Annotation(a.Message, null);
                if (a == RepositoryNames.Upload)
                {
                    done.Annotation(RepositoryNames.HandleAnnotation, transfer.RepositoryHandle);
                }

                await _c.Cluster.PatchContentAsync(content, done, ct).ConfigureAwait(false);
                string message = a == RepositoryNames.Upload
                    ? $"uploaded to SnapshotRepository {repository} ({transfer.Location}); restore it anywhere with snapshot handle {transfer.RepositoryHandle}"
                    : $"restored {transfer.SnapshotId} from SnapshotRepository {repository} ({transfer.Location})";
                await RecordAsync(content, EventRecorder.Normal, a == RepositoryNames.Upload ? "Uploaded" : "Restored", message, ct).ConfigureAwait(false);
                return Outcome.Done;
            case TransferPhase.Failed:
                string failedAt = Stamp(transfer.CompletedAt);
                if (Annotation(content, a.FailedAt) != failedAt)
                {
                    int failures = Failures(content, a) + 1;
                    string why = $"{transfer.Reason}: {transfer.Message}";
                    await _c.Cluster.PatchContentAsync(
                        content,
                        new MergePatch()
                            .Annotation(a.Repository, repository)
                            .Annotation(a.Phase, RepositoryNames.Failed)
                            .Annotation(a.Message, why)
                            .Annotation(a.Failures, failures.ToString(CultureInfo.InvariantCulture))
                            .Annotation(a.FailedAt, failedAt),
                        ct).ConfigureAwait(false);
                    await RecordAsync(content, EventRecorder.Warning, $"{Capitalized(a.Operation)}Failed", $"{a.Operation} with SnapshotRepository {repository} failed (attempt {failures}, retried in {Backoff(failures).TotalSeconds:0}s): {why}", ct).ConfigureAwait(false);
                    return Outcome.After(Backoff(failures));
                }

                return Outcome.After(RetryDue(content, a, transfer) ?? FirstRetry);
            default:
                var running = new MergePatch()
                    .Annotation(a.Repository, repository)
                    .Annotation(a.Phase, RepositoryNames.Running)
                    .Annotation(a.Progress, Progress(transfer))
                    .Annotation(a.Message, null);
                if (Annotation(content, a.Phase) != RepositoryNames.Running || Annotation(content, a.Progress) != Progress(transfer))
                {
                    await _c.Cluster.PatchContentAsync(content, running, ct).ConfigureAwait(false);
                }

                return Outcome.After(Poll);
        }
    }

    /// <summary>For a failure already recorded: the time until its retry (zero when due), or null when there is no time to go by.</summary>
    private TimeSpan? RetryDue(VolumeSnapshotContent content, TransferAnnotations a, Transfer transfer)
    {
        if (transfer.CompletedAt is null)
        {
            return null;
        }

        var due = transfer.CompletedAt.ToDateTimeOffset() + Backoff(Math.Max(1, Failures(content, a)));
        var left = due - _c.Options.TimeProvider.GetUtcNow();
        return left > TimeSpan.Zero ? left : TimeSpan.Zero;
    }

    private static TimeSpan Backoff(int failures) =>
        TimeSpan.FromTicks(Math.Min(MaxRetry.Ticks, FirstRetry.Ticks << Math.Min(failures - 1, 16)));

    private static int Failures(VolumeSnapshotContent content, TransferAnnotations a) =>
        int.TryParse(Annotation(content, a.Failures), NumberStyles.None, CultureInfo.InvariantCulture, out int n) ? n : 0;

    /// <summary>Why a repository cannot be used yet, or null when it is ready.</summary>
    private static string? NotReady(SnapshotRepository repository)
    {
        var ready = repository.Status?.Conditions?.FirstOrDefault(c => c.Type == RepositoryNames.ReadyCondition);
        return ready?.Status == "True" && !string.IsNullOrEmpty(repository.Status!.RepositoryId)
            ? null
            : $"SnapshotRepository {repository.Metadata.Name} is not ready: {ready?.Message ?? "not probed yet"}";
    }

    /// <summary>Records that the transfer waits (or, with <paramref name="phase"/> Failed, cannot be done), once per reason.</summary>
    private async Task WaitAsync(VolumeSnapshotContent content, TransferAnnotations a, string? repository, string reason, string message, CancellationToken ct, string phase = RepositoryNames.Waiting)
    {
        string text = $"{reason}: {message}";
        if (Annotation(content, a.Phase) == phase && Annotation(content, a.Message) == text)
        {
            return;
        }

        await _c.Cluster.PatchContentAsync(content, new MergePatch().Annotation(a.Repository, repository).Annotation(a.Phase, phase).Annotation(a.Message, text), ct).ConfigureAwait(false);
        await RecordAsync(content, EventRecorder.Warning, reason, message, ct).ConfigureAwait(false);
    }

    /// <summary>An event on the content and, when bound, on its VolumeSnapshot (where users look).</summary>
    private async Task RecordAsync(VolumeSnapshotContent content, string type, string reason, string message, CancellationToken ct)
    {
        await _c.Events.RecordAsync(content, type, reason, message, ct).ConfigureAwait(false);
        var r = content.Spec.VolumeSnapshotRef;
        if (!string.IsNullOrEmpty(r?.Name) && !string.IsNullOrEmpty(r.NamespaceProperty) && _c.Cluster.Snapshots.Get(r.NamespaceProperty, r.Name) is { } snapshot)
        {
            await _c.Events.RecordAsync(snapshot, type, reason, message, ct).ConfigureAwait(false);
        }
    }

    private static string? Annotation(VolumeSnapshotContent content, string name) =>
        content.Metadata.Annotations?.TryGetValue(name, out var value) == true ? value : null;

    private static string Stamp(Google.Protobuf.WellKnownTypes.Timestamp? t) =>
        t is null ? string.Empty : t.ToDateTimeOffset().UtcDateTime.ToString("yyyy-MM-dd'T'HH:mm:ss.fffffff'Z'", CultureInfo.InvariantCulture);

    private static string Capitalized(string word) => char.ToUpperInvariant(word[0]) + word[1..];

    /// <summary>"45% (460.0 MiB of 1.0 GiB) at 30.1 MiB/s, about 20s left".</summary>
    internal static string Progress(Transfer t)
    {
        if (t.BytesTotal <= 0)
        {
            return "starting";
        }

        string text = string.Create(CultureInfo.InvariantCulture, $"{100 * t.BytesDone / t.BytesTotal}% ({Bytes(t.BytesDone)} of {Bytes(t.BytesTotal)})");
        if (t.BytesPerSecond > 0)
        {
            double left = (t.BytesTotal - t.BytesDone) / t.BytesPerSecond;
            text += string.Create(CultureInfo.InvariantCulture, $" at {Bytes((long)t.BytesPerSecond)}/s, about {Math.Ceiling(left):0}s left");
        }

        return text;
    }

    private static string Bytes(long n)
    {
        string[] units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
        double v = n;
        int u = 0;
        while (v >= 1024 && u < units.Length - 1)
        {
            v /= 1024;
            u++;
        }

        return u == 0 ? string.Create(CultureInfo.InvariantCulture, $"{n} B") : string.Create(CultureInfo.InvariantCulture, $"{v:0.0} {units[u]}");
    }
}
