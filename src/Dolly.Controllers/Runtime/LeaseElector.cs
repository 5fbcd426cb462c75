using System.Net;
using k8s;
using k8s.Autorest;
using k8s.Models;
using Microsoft.Extensions.Logging;

namespace Dolly.Controllers.Runtime;

/// <summary>
/// Leader election on a coordination.k8s.io Lease, with client-go's rules: a candidate takes the Lease when
/// it is free or when its record has not changed for LeaseDuration (measured on this replica's clock, from
/// when this replica saw the record change, so clocks need not agree); the leader renews every RetryPeriod
/// and stops leading once RenewDeadline has passed since its last successful renewal. Every failed attempt
/// (an HTTP error, a refused or reset connection, an attempt cut off at the deadline) is retried every
/// RetryPeriod until that deadline: an API server restart shorter than RenewDeadline costs nothing.
/// Writes are compare-and-swap on the Lease's resourceVersion, so two candidates never both win.
/// </summary>
internal sealed partial class LeaseElector
{
    private readonly IKubernetes _client;
    private readonly ControllerOptions _options;
    private readonly TimeProvider _time;
    private readonly ILogger _logger;
    private readonly string _lease;

    // The record as last read or written, and when (on this replica's clock) it was last seen to change.
    private V1Lease? _observed;
    private DateTimeOffset _observedAt;

    public LeaseElector(IKubernetes client, ControllerOptions options, TimeProvider time, ILogger logger)
    {
        _client = client;
        _options = options;
        _time = time;
        _logger = logger;
        _lease = $"{options.LeaseNamespace}/{options.LeaseName}";
    }

    /// <summary>Whether the last record seen names this replica as holder.</summary>
    public bool IsLeader => _observed?.Spec?.HolderIdentity == _options.Identity;

    /// <summary>Tries to take the Lease every RetryPeriod (jittered) until it is this replica's; cancellation ends it.</summary>
    public async Task AcquireAsync(CancellationToken cancellationToken)
    {
        while (true)
        {
            using var attempt = new CancellationTokenSource(_options.RenewDeadline, _time);
            using var linked = CancellationTokenSource.CreateLinkedTokenSource(attempt.Token, cancellationToken);
            if (await TryAcquireOrRenewAsync(linked.Token, cancellationToken).ConfigureAwait(false))
            {
                ControllerLog.Leading(_logger, _options.Identity, _lease);
                return;
            }

            // Jitter, as client-go's wait.JitterUntil: candidates started together do not retry in lockstep.
            var delay = _options.RetryPeriod * (1 + (0.2 * Random.Shared.NextDouble()));
            await Task.Delay(delay, _time, cancellationToken).ConfigureAwait(false);
        }
    }

    /// <summary>
    /// Renews every RetryPeriod while leading. Returns when leadership is lost: RenewDeadline passed since
    /// the last successful renewal, or another replica holds the Lease. Cancellation ends it with an
    /// <see cref="OperationCanceledException"/>.
    /// </summary>
    public async Task RenewUntilLostAsync(CancellationToken cancellationToken)
    {
        var renewed = _time.GetUtcNow();
        while (true)
        {
            await Task.Delay(_options.RetryPeriod, _time, cancellationToken).ConfigureAwait(false);
            var deadline = renewed + _options.RenewDeadline;
            var left = deadline - _time.GetUtcNow();
            if (left <= TimeSpan.Zero)
            {
                LogRenewDeadlinePassed(_logger, _options.Identity, _lease, _options.RenewDeadline);
                return;
            }

            // The attempt itself may hang (a server that accepts and never answers): it is cut off at the deadline.
            using var attempt = new CancellationTokenSource(left, _time);
            using var linked = CancellationTokenSource.CreateLinkedTokenSource(attempt.Token, cancellationToken);
            if (await TryAcquireOrRenewAsync(linked.Token, cancellationToken).ConfigureAwait(false))
            {
                renewed = _time.GetUtcNow();
                continue;
            }

            if (_observed?.Spec?.HolderIdentity is { Length: > 0 } holder && holder != _options.Identity)
            {
                // Someone else holds it now (this replica was too slow): leading is over at once.
                LogTakenOver(_logger, _options.Identity, _lease, holder);
                return;
            }
        }
    }

    /// <summary>
    /// One attempt: read the Lease, create it when missing, take it when free or expired, renew it when
    /// this replica holds it. False on any failure (logged) or when another replica holds an unexpired Lease.
    /// Only cancellation of <paramref name="stopping"/> is thrown.
    /// </summary>
    private async Task<bool> TryAcquireOrRenewAsync(CancellationToken attempt, CancellationToken stopping)
    {
        try
        {
            return await TryCoreAsync(attempt).ConfigureAwait(false);
        }
        catch (Exception) when (stopping.IsCancellationRequested)
        {
            throw new OperationCanceledException(stopping);
        }
        catch (HttpOperationException ex) when (ex.Response.StatusCode == HttpStatusCode.Conflict)
        {
            // Another replica wrote the Lease between our read and our write: it won this round.
            return false;
        }
        catch (Exception ex)
        {
            // A refused or reset connection, a timeout, an HTTP error: one failed attempt, like any other.
            LogAttemptFailed(_logger, _options.Identity, _lease, Describe(ex));
            return false;
        }
    }

    private async Task<bool> TryCoreAsync(CancellationToken ct)
    {
        var now = _time.GetUtcNow();
        V1Lease? current;
        try
        {
            current = await _client.CoordinationV1.ReadNamespacedLeaseAsync(_options.LeaseName, _options.LeaseNamespace, cancellationToken: ct).ConfigureAwait(false);
        }
        catch (HttpOperationException ex) when (ex.Response.StatusCode == HttpStatusCode.NotFound)
        {
            current = null;
        }

        if (current is null)
        {
            var created = await _client.CoordinationV1.CreateNamespacedLeaseAsync(
                new V1Lease
                {
                    ApiVersion = "coordination.k8s.io/v1",
                    Kind = "Lease",
                    Metadata = new V1ObjectMeta { Name = _options.LeaseName, NamespaceProperty = _options.LeaseNamespace },
                    Spec = Record(now, now, 0),
                },
                _options.LeaseNamespace,
                cancellationToken: ct).ConfigureAwait(false);
            Observe(created, _time.GetUtcNow());
            return true;
        }

        if (_observed is null || !SameRecord(_observed, current))
        {
            Observe(current, now);
        }

        var spec = current.Spec ?? new V1LeaseSpec();
        bool mine = spec.HolderIdentity == _options.Identity;
        if (!mine && !string.IsNullOrEmpty(spec.HolderIdentity) && _observedAt + LeaseDuration(spec) > now)
        {
            // Held by another replica that renewed within its lease duration.
            return false;
        }

        var acquired = mine && spec.AcquireTime is { } at ? new DateTimeOffset(DateTime.SpecifyKind(at, DateTimeKind.Utc)) : now;
        int transitions = (spec.LeaseTransitions ?? 0) + (mine ? 0 : 1);
        current.Spec = Record(acquired, now, transitions);

        // Replace carries the resourceVersion just read: if anyone wrote since, this is a 409 and we lose the round.
        var updated = await _client.CoordinationV1.ReplaceNamespacedLeaseAsync(current, _options.LeaseName, _options.LeaseNamespace, cancellationToken: ct).ConfigureAwait(false);
        Observe(updated, _time.GetUtcNow());
        return true;
    }

    private V1LeaseSpec Record(DateTimeOffset acquired, DateTimeOffset renewed, int transitions) => new()
    {
        HolderIdentity = _options.Identity,
        LeaseDurationSeconds = (int)Math.Ceiling(_options.LeaseDuration.TotalSeconds),
        AcquireTime = acquired.UtcDateTime,
        RenewTime = renewed.UtcDateTime,
        LeaseTransitions = transitions,
    };

    private TimeSpan LeaseDuration(V1LeaseSpec spec) =>
        spec.LeaseDurationSeconds is > 0 and { } seconds ? TimeSpan.FromSeconds(seconds) : _options.LeaseDuration;

    private void Observe(V1Lease lease, DateTimeOffset at)
    {
        _observed = lease;
        _observedAt = at;
    }

    // A renewal changes renewTime; anything else that changes is a new record too.
    private static bool SameRecord(V1Lease a, V1Lease b) =>
        a.Spec?.HolderIdentity == b.Spec?.HolderIdentity
        && a.Spec?.RenewTime == b.Spec?.RenewTime
        && a.Spec?.AcquireTime == b.Spec?.AcquireTime
        && a.Spec?.LeaseTransitions == b.Spec?.LeaseTransitions
        && a.Spec?.LeaseDurationSeconds == b.Spec?.LeaseDurationSeconds;

    private static string Describe(Exception ex) => ex switch
    {
        HttpOperationException h => $"{(int)h.Response.StatusCode} {h.Response.ReasonPhrase}",
        OperationCanceledException => "no answer before the renew deadline",
        _ when ex.InnerException is { } inner => $"{ex.Message} ({inner.Message})",
        _ => ex.Message,
    };

    [LoggerMessage(102, LogLevel.Information, "leader election: {Identity} could not take or renew {Lease}: {Message}; retrying")]
    private static partial void LogAttemptFailed(ILogger logger, string identity, string lease, string message);

    [LoggerMessage(103, LogLevel.Warning, "leader election: {Identity} could not renew {Lease} within the renew deadline ({Deadline})")]
    private static partial void LogRenewDeadlinePassed(ILogger logger, string identity, string lease, TimeSpan deadline);

    [LoggerMessage(104, LogLevel.Warning, "leader election: {Lease} is held by {Holder} now, not {Identity}")]
    private static partial void LogTakenOver(ILogger logger, string identity, string lease, string holder);
}
