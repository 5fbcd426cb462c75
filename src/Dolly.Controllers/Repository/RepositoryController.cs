using System.Text.Json.Nodes;
using Dolly.Controllers.Runtime;
using Dolly.V1;
using Grpc.Core;
using Microsoft.Extensions.Logging;

namespace Dolly.Controllers.Repository;

/// <summary>
/// Keeps each SnapshotRepository's status true: reads its Secrets, has the driver open the repository (creating it
/// when the location holds none), and writes the repository id, reachability and, at most hourly, what it stores.
/// Every problem (a bad spec, a missing Secret, refused credentials, a wrong key, an unreachable server) is the Ready
/// condition and an event naming the object at fault; the probe is retried until it passes.
/// </summary>
internal sealed class RepositoryController : Reconciler
{
    /// <summary>How often a reachable repository is probed again.</summary>
    public static readonly TimeSpan Reprobe = TimeSpan.FromMinutes(5);

    /// <summary>How soon a repository with a problem is probed again (a Secret fixed, a server back).</summary>
    public static readonly TimeSpan RetryProblem = TimeSpan.FromSeconds(30);

    /// <summary>How old the usage may get before a probe lists the repository again.</summary>
    public static readonly TimeSpan UsageEvery = TimeSpan.FromHours(1);

    private readonly ControllerContext _c;
    private readonly SnapshotRepositoryService.SnapshotRepositoryServiceClient _driver;

    public RepositoryController(ControllerContext context)
        : base("snapshot-repositories", context.Options.RetryBaseDelay, context.Options.RetryMaxDelay, context.Loggers.CreateLogger<RepositoryController>())
    {
        _c = context;
        _driver = new SnapshotRepositoryService.SnapshotRepositoryServiceClient(context.CsiInvoker);
        context.Cluster.Repositories.OnChange((old, now) =>
        {
            if ((now ?? old) is { } r)
            {
                Queue.Add(r.Metadata.Name);
            }
        });
    }

    protected override async Task<Outcome> ReconcileAsync(string key, CancellationToken cancellationToken)
    {
        var repository = _c.Cluster.Repositories.Get(key);
        if (repository is null || repository.Metadata.DeletionTimestamp is not null)
        {
            return Outcome.Done;
        }

        var now = _c.Options.TimeProvider.GetUtcNow().UtcDateTime;
        var status = repository.Status;
        var ready = status?.Conditions?.FirstOrDefault(c => c.Type == RepositoryNames.ReadyCondition);
        if (status?.LastProbeTime is { } probed && ready?.ObservedGeneration == repository.Metadata.Generation)
        {
            // Probed for this spec not long ago (this reconcile may be our own status write coming back).
            var due = probed + (ready?.Status == "True" ? Reprobe : RetryProblem);
            if (due > now)
            {
                return Outcome.After(due - now);
            }
        }

        var (location, problem) = await RepositoryAccess.ResolveAsync(_c.Cluster.Client, repository, cancellationToken).ConfigureAwait(false);
        if (problem is not null)
        {
            await WriteAsync(repository, problem.Reason, problem.Message, null, now, cancellationToken).ConfigureAwait(false);
            return Outcome.After(RetryProblem);
        }

        bool usage = status?.UsageTime is not { } counted || now - counted >= UsageEvery;
        ProbeRepositoryResponse response;
        try
        {
            response = await _driver.ProbeRepositoryAsync(
                new ProbeRepositoryRequest { Repository = location, CreateIfMissing = true, IncludeUsage = usage },
                _c.CsiCall(cancellationToken)).ConfigureAwait(false);
        }
        catch (RpcException ex) when (!cancellationToken.IsCancellationRequested)
        {
            await WriteAsync(repository, ReasonFor(ex.StatusCode), ex.Status.Detail, null, now, cancellationToken).ConfigureAwait(false);
            return Outcome.After(RetryProblem);
        }

        string message = $"repository {response.RepositoryId} at {response.Location}{(response.Created ? " (created by this probe)" : "")}";
        await WriteAsync(repository, "Reachable", message, response, now, cancellationToken).ConfigureAwait(false);
        if (status?.RepositoryId is { Length: > 0 } before && before != response.RepositoryId)
        {
            await _c.Events.RecordAsync(repository, EventRecorder.Warning, "RepositoryChanged", $"the location now holds repository {response.RepositoryId}, not {before}: snapshots uploaded before are not restorable through this object", cancellationToken).ConfigureAwait(false);
        }

        return Outcome.After(Reprobe);
    }

    /// <summary>The condition reason for a refused probe.</summary>
    internal static string ReasonFor(StatusCode code) => code switch
    {
        StatusCode.Unavailable or StatusCode.DeadlineExceeded => "Unreachable",
        StatusCode.PermissionDenied => "AccessDenied",
        StatusCode.NotFound => "NotFound",
        StatusCode.FailedPrecondition => "UnsupportedFormat",
        StatusCode.DataLoss => "Corrupt",
        StatusCode.InvalidArgument => "InvalidSpec",
        _ => "ProbeFailed",
    };

    private async Task WriteAsync(SnapshotRepository repository, string reason, string message, ProbeRepositoryResponse? probe, DateTime now, CancellationToken ct)
    {
        var old = repository.Status ?? new SnapshotRepositoryStatus();
        var oldReady = old.Conditions?.FirstOrDefault(c => c.Type == RepositoryNames.ReadyCondition);
        bool ok = probe is not null;
        string text = ok ? "True" : "False";
        var status = new JsonObject
        {
            ["reachable"] = ok,
            ["lastProbeTime"] = Timestamp(now),
            ["conditions"] = new JsonArray(new JsonObject
            {
                ["type"] = RepositoryNames.ReadyCondition,
                ["status"] = text,
                ["reason"] = reason,
                ["message"] = message,
                ["observedGeneration"] = repository.Metadata.Generation ?? 0,
                ["lastTransitionTime"] = Timestamp(oldReady is not null && oldReady.Status == text ? oldReady.LastTransitionTime : now),
            }),
        };
        if (probe is not null)
        {
            status["repositoryId"] = probe.RepositoryId;
            status["location"] = probe.Location;
            if (probe.Usage is { } u)
            {
                status["bytesStored"] = u.BytesStored;
                status["chunkCount"] = u.ChunkCount;
                status["snapshotCount"] = u.ManifestCount;
                status["usageTime"] = Timestamp(now);
            }
        }

        var current = _c.Cluster.Repositories.Get(repository.Metadata.Name) ?? repository;
        await _c.Cluster.PatchRepositoryAsync(current, new JsonObject { ["status"] = status }, status: true, ct).ConfigureAwait(false);
        if (oldReady?.Reason != reason || oldReady.Message != message)
        {
            await _c.Events.RecordAsync(repository, ok ? EventRecorder.Normal : EventRecorder.Warning, reason, message, ct).ConfigureAwait(false);
        }
    }

    private static string Timestamp(DateTime t) => t.ToString("yyyy-MM-dd'T'HH:mm:ss'Z'", System.Globalization.CultureInfo.InvariantCulture);
}
