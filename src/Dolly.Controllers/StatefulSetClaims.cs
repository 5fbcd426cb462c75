using System.Globalization;
using System.Net;
using System.Text.Json;
using System.Text.Json.Nodes;
using Dolly.Controllers.Runtime;
using k8s;
using k8s.Autorest;
using k8s.Models;
using Microsoft.Extensions.Logging;

namespace Dolly.Controllers;

/// <summary>
/// The claim-making part of kube-controller-manager's StatefulSet controller, for the embedded API server where none
/// runs: each StatefulSet gets a claim <c>&lt;template&gt;-&lt;statefulset&gt;-&lt;ordinal&gt;</c> per volumeClaimTemplate and
/// ordinal, labelled with the template's labels and the selector's, with the template's spec. Its
/// <c>persistentVolumeClaimRetentionPolicy</c> is honoured: <c>whenDeleted: Delete</c> makes the StatefulSet the claims'
/// owner, so the garbage collector removes them with it; <c>whenScaled: Delete</c> deletes the claims of ordinals scaled
/// away. A claim of that name that this controller did not make is never changed, adopted or deleted: the StatefulSet
/// gets a warning event instead.
/// </summary>
/// <remarks>
/// Pods never run here, so there is no pod whose readiness could let <c>OrderedReady</c> go on to the next ordinal:
/// upstream would make ordinal 0's claims and then wait forever. Every ordinal the StatefulSet asks for is one a real
/// controller will start, so the claims of all of them are made at once for <c>Parallel</c> and <c>OrderedReady</c>
/// alike; that is what a user who then points a real cluster at the same objects would end up with.
/// </remarks>
internal sealed class StatefulSetClaims : Reconciler
{
    /// <summary>On every claim this controller made: the StatefulSet's name, so it reuses (and only it) a retained claim.</summary>
    public const string CreatedByAnnotation = "dolly.io/statefulset";

    /// <summary>Value of the retention policy fields that makes claims go with their StatefulSet or ordinal.</summary>
    public const string DeletePolicy = "Delete";

    private const string ConflictReason = "FailedCreate";
    private readonly ControllerContext _c;

    public StatefulSetClaims(ControllerContext context)
        : base("statefulset-claims", context.Options.RetryBaseDelay, context.Options.RetryMaxDelay, context.Loggers.CreateLogger<StatefulSetClaims>())
    {
        _c = context;
        var client = context.Cluster.Client;
        StatefulSets = new Informer<V1StatefulSet>(
            "StatefulSet",
            async ct =>
            {
                var l = await client.AppsV1.ListStatefulSetForAllNamespacesAsync(cancellationToken: ct).ConfigureAwait(false);
                return (l.Items, l.Metadata.ResourceVersion);
            },
            (rv, ct) => client.AppsV1.WatchListStatefulSetForAllNamespacesAsync(
                allowWatchBookmarks: true, resourceVersion: rv, timeoutSeconds: 600, cancellationToken: ct),
            context.Loggers.CreateLogger("Dolly.Controllers.Informer"));
        StatefulSets.OnChange((old, now) => Queue.Add(Informer<V1StatefulSet>.Key(now ?? old!)));

        // A claim that changed or went may be one a StatefulSet wants (made again when deleted, or someone else's
        // gone so that the StatefulSet may now make it). Its name says which: only the StatefulSets it can name are
        // looked up, so a claim event costs a few cache lookups, not a walk over every StatefulSet.
        context.Cluster.Claims.OnChange((old, now) =>
        {
            var claim = now ?? old!;
            foreach (string set in SetsNamedBy(claim.Metadata.Name))
            {
                if (StatefulSets.Get(claim.Metadata.NamespaceProperty, set) is not null)
                {
                    Queue.Add(Informer<V1StatefulSet>.Key(claim.Metadata.NamespaceProperty, set));
                }
            }
        });
    }

    /// <summary>This controller's own cache: StatefulSets matter only on the embedded server, so they stay out of <see cref="Cluster.All"/>.</summary>
    public Informer<V1StatefulSet> StatefulSets { get; }

    /// <summary>Runs the StatefulSet informer and, once it has listed, the workers; returns when cancelled.</summary>
    public async Task RunWithInformerAsync(int workers, CancellationToken cancellationToken)
    {
        var informer = StatefulSets.RunAsync(cancellationToken);
        try
        {
            try
            {
                await StatefulSets.Synced.WaitAsync(cancellationToken).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                Queue.Dispose();
                return;
            }

            await RunAsync(workers, cancellationToken).ConfigureAwait(false);
        }
        finally
        {
            await informer.ConfigureAwait(false);
        }
    }

    /// <summary>The claim name upstream gives a template's claim for one ordinal.</summary>
    public static string ClaimName(string template, string statefulSet, int ordinal) =>
        string.Create(CultureInfo.InvariantCulture, $"{template}-{statefulSet}-{ordinal}");

    /// <summary>
    /// The StatefulSet names a claim name <c>&lt;template&gt;-&lt;set&gt;-&lt;ordinal&gt;</c> can hold (either part may contain dashes).
    /// </summary>
    public static IEnumerable<string> SetsNamedBy(string claim)
    {
        int last = claim.LastIndexOf('-');
        if (last <= 0 || last == claim.Length - 1 || claim.AsSpan(last + 1).ContainsAnyExceptInRange('0', '9'))
        {
            yield break;
        }

        for (int dash = claim.IndexOf('-', StringComparison.Ordinal); dash >= 0 && dash < last - 1; dash = claim.IndexOf('-', dash + 1))
        {
            if (dash > 0)
            {
                yield return claim[(dash + 1)..last];
            }
        }
    }

    protected override async Task<Outcome> ReconcileAsync(string key, CancellationToken cancellationToken)
    {
        var set = StatefulSets.Get(key);
        if (set is null || set.Metadata.DeletionTimestamp is not null)
        {
            // A deleted StatefulSet's claims are the garbage collector's (whenDeleted: Delete) or kept (Retain).
            return Outcome.Done;
        }

        string ns = set.Metadata.NamespaceProperty;
        int start = set.Spec.Ordinals?.Start ?? 0;
        int replicas = set.Spec.Replicas ?? 1;
        bool ownedBySet = set.Spec.PersistentVolumeClaimRetentionPolicy?.WhenDeleted == DeletePolicy;
        bool deleteScaled = set.Spec.PersistentVolumeClaimRetentionPolicy?.WhenScaled == DeletePolicy;
        foreach (var template in set.Spec.VolumeClaimTemplates ?? [])
        {
            for (int ordinal = start; ordinal < start + replicas; ordinal++)
            {
                string name = ClaimName(template.Metadata.Name, set.Metadata.Name, ordinal);
                var existing = _c.Cluster.Claims.Get(ns, name);
                if (existing is null)
                {
                    await CreateAsync(set, template, name, ownedBySet, cancellationToken).ConfigureAwait(false);
                }
                else if (!MadeFor(existing, set))
                {
                    await _c.Events.RecordAsync(
                        Reference(set),
                        EventRecorder.Warning,
                        ConflictReason,
                        $"create Claim {name} for StatefulSet {set.Metadata.Name} failed: a claim of that name exists that this StatefulSet did not make; it is left as it is",
                        cancellationToken).ConfigureAwait(false);
                }
                else if (existing.Metadata.DeletionTimestamp is null && OwnedBy(existing, set) != ownedBySet)
                {
                    await SetOwnerAsync(existing, set, ownedBySet, cancellationToken).ConfigureAwait(false);
                }
            }

            if (deleteScaled)
            {
                await DeleteScaledAsync(set, template.Metadata.Name, start, start + replicas, cancellationToken).ConfigureAwait(false);
            }
        }

        return Outcome.Done;
    }

    private async Task CreateAsync(V1StatefulSet set, V1PersistentVolumeClaim template, string name, bool ownedBySet, CancellationToken ct)
    {
        var labels = new Dictionary<string, string>(template.Metadata.Labels ?? new Dictionary<string, string>(), StringComparer.Ordinal);
        foreach (var (k, v) in set.Spec.Selector?.MatchLabels ?? new Dictionary<string, string>())
        {
            labels[k] = v;
        }

        var annotations = new Dictionary<string, string>(template.Metadata.Annotations ?? new Dictionary<string, string>(), StringComparer.Ordinal)
        {
            [CreatedByAnnotation] = set.Metadata.Name,
        };
        var claim = new V1PersistentVolumeClaim
        {
            ApiVersion = "v1",
            Kind = "PersistentVolumeClaim",
            Metadata = new V1ObjectMeta
            {
                Name = name,
                NamespaceProperty = set.Metadata.NamespaceProperty,
                Labels = labels,
                Annotations = annotations,
                OwnerReferences = ownedBySet ? [OwnerReference(set)] : null,
            },

            // A copy: the template belongs to the cached StatefulSet.
            Spec = KubernetesJson.Deserialize<V1PersistentVolumeClaimSpec>(KubernetesJson.Serialize(template.Spec)),
        };
        try
        {
            var created = await _c.Cluster.Client.CoreV1.CreateNamespacedPersistentVolumeClaimAsync(claim, claim.Metadata.NamespaceProperty, cancellationToken: ct).ConfigureAwait(false);
            _c.Cluster.Claims.Remember(created);
        }
        catch (HttpOperationException ex) when (ex.Response.StatusCode == HttpStatusCode.Conflict)
        {
            // Someone made one of that name since the cache was read: the watch brings it, and the next pass judges it.
            throw new RetryLaterException($"claim {claim.Metadata.NamespaceProperty}/{name} appeared while being created");
        }
        catch (HttpOperationException ex) when (ex.Response.StatusCode is HttpStatusCode.UnprocessableEntity or HttpStatusCode.BadRequest)
        {
            // The template makes an invalid claim: retrying cannot help until the StatefulSet changes (which queues it).
            await _c.Events.RecordAsync(
                Reference(set),
                EventRecorder.Warning,
                ConflictReason,
                $"create Claim {name} for StatefulSet {set.Metadata.Name} failed: {Message(ex)}",
                ct).ConfigureAwait(false);
        }
    }

    /// <summary>The message of the API server's Status, or its HTTP status when the body has none.</summary>
    private static string Message(HttpOperationException ex)
    {
        try
        {
            if (JsonNode.Parse(ex.Response.Content ?? "")?["message"]?.GetValue<string>() is { Length: > 0 } message)
            {
                return message;
            }
        }
        catch (JsonException)
        {
        }

        return $"HTTP {(int)ex.Response.StatusCode}";
    }

    /// <summary>Deletes this StatefulSet's claims of a template whose ordinal is outside [start, end).</summary>
    private async Task DeleteScaledAsync(V1StatefulSet set, string template, int start, int end, CancellationToken ct)
    {
        string prefix = template + "-" + set.Metadata.Name + "-";
        foreach (var claim in _c.Cluster.Claims.ByIndex(Indexes.ClaimByStatefulSet, Indexes.Key(set.Metadata.NamespaceProperty, set.Metadata.Name)))
        {
            if (claim.Metadata.NamespaceProperty != set.Metadata.NamespaceProperty
                || claim.Metadata.DeletionTimestamp is not null
                || !claim.Metadata.Name.StartsWith(prefix, StringComparison.Ordinal)
                || !int.TryParse(claim.Metadata.Name.AsSpan(prefix.Length), NumberStyles.None, CultureInfo.InvariantCulture, out int ordinal)
                || ClaimName(template, set.Metadata.Name, ordinal) != claim.Metadata.Name
                || (ordinal >= start && ordinal < end)
                || !MadeFor(claim, set))
            {
                continue;
            }

            try
            {
                await _c.Cluster.Client.CoreV1.DeleteNamespacedPersistentVolumeClaimAsync(
                    claim.Metadata.Name,
                    claim.Metadata.NamespaceProperty,
                    new V1DeleteOptions { Preconditions = new V1Preconditions { Uid = claim.Metadata.Uid } },
                    cancellationToken: ct).ConfigureAwait(false);
            }
            catch (HttpOperationException ex) when (ex.Response.StatusCode == HttpStatusCode.NotFound)
            {
                // Already gone.
            }
        }
    }

    private async Task SetOwnerAsync(V1PersistentVolumeClaim claim, V1StatefulSet set, bool owned, CancellationToken ct)
    {
        var others = (claim.Metadata.OwnerReferences ?? []).Where(r => r.Uid != set.Metadata.Uid).ToList();
        if (owned)
        {
            others.Add(OwnerReference(set));
        }

        var patch = new JsonObject
        {
            ["metadata"] = new JsonObject
            {
                ["ownerReferences"] = JsonNode.Parse(KubernetesJson.Serialize(others)),
            },
        };
        await _c.Cluster.PatchClaimAsync(claim, patch, status: false, ct).ConfigureAwait(false);
    }

    /// <summary>Whether this controller made the claim for a StatefulSet of this name (this one, or one before it that retained it).</summary>
    private static bool MadeFor(V1PersistentVolumeClaim claim, V1StatefulSet set) =>
        Cluster.Annotation(claim.Metadata, CreatedByAnnotation) == set.Metadata.Name;

    private static bool OwnedBy(V1PersistentVolumeClaim claim, V1StatefulSet set) =>
        claim.Metadata.OwnerReferences?.Any(r => r.Uid == set.Metadata.Uid) == true;

    private static V1OwnerReference OwnerReference(V1StatefulSet set) => new()
    {
        ApiVersion = "apps/v1",
        Kind = "StatefulSet",
        Name = set.Metadata.Name,
        Uid = set.Metadata.Uid,
        Controller = true,
        BlockOwnerDeletion = true,
    };

    /// <summary>The StatefulSet with its kind set (list items may come without one), for an event's involvedObject.</summary>
    private static V1StatefulSet Reference(V1StatefulSet set) => new() { ApiVersion = "apps/v1", Kind = "StatefulSet", Metadata = set.Metadata };
}
