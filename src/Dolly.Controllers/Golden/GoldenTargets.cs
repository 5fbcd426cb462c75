using Selectors = Dolly.Controllers.Schedules.LabelSelectors;
using k8s.Models;

namespace Dolly.Controllers.Golden;

/// <summary>A namespace that opts in, and whether anything may be written there now.</summary>
internal readonly record struct GoldenTarget(string Namespace, string? Blocked);

/// <summary>
/// The namespaces a GoldenSnapshot publishes to. A namespace opts in by matching spec.namespaceSelector or by being
/// listed in spec.namespaces; one that does neither never receives anything. This is the only place that decides it,
/// and every write into a namespace goes through <see cref="Select"/> first.
/// </summary>
internal static class GoldenTargets
{
    /// <summary>Whether <paramref name="ns"/> opts in to <paramref name="spec"/> (labels and name only; its phase aside).</summary>
    public static bool OptsIn(GoldenSnapshotSpec spec, V1Namespace ns) =>
        spec.Namespaces?.Contains(ns.Metadata.Name, StringComparer.Ordinal) == true
        || (spec.NamespaceSelector is { } selector && Selectors.Matches(selector, ns.Metadata.Labels));

    /// <summary>
    /// The opted-in namespaces that exist, in name order. A namespace being deleted opts in but is
    /// <see cref="GoldenTarget.Blocked"/>: nothing new is made there.
    /// </summary>
    public static List<GoldenTarget> Select(GoldenSnapshotSpec spec, IEnumerable<V1Namespace> namespaces) =>
        [.. namespaces
            .Where(n => OptsIn(spec, n))
            .OrderBy(n => n.Metadata.Name, StringComparer.Ordinal)
            .Select(n => new GoldenTarget(
                n.Metadata.Name,
                n.Metadata.DeletionTimestamp is not null || n.Status?.Phase == "Terminating" ? "the namespace is being deleted: nothing new is published to it" : null))];
}
