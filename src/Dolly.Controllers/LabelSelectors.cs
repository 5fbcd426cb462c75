using k8s.Models;

namespace Dolly.Controllers;

/// <summary>metav1.LabelSelector matching: matchLabels and matchExpressions (In, NotIn, Exists, DoesNotExist), all ANDed.</summary>
internal static class LabelSelectors
{
    /// <summary>Whether <paramref name="labels"/> satisfy <paramref name="selector"/>; an empty selector matches everything, as upstream.</summary>
    public static bool Matches(V1LabelSelector selector, IDictionary<string, string>? labels)
    {
        labels ??= new Dictionary<string, string>();
        foreach (var (k, v) in selector.MatchLabels ?? new Dictionary<string, string>())
        {
            if (!labels.TryGetValue(k, out string? actual) || actual != v)
            {
                return false;
            }
        }

        foreach (var e in selector.MatchExpressions ?? [])
        {
            bool has = labels.TryGetValue(e.Key, out string? value);
            var values = e.Values ?? [];
            bool ok = e.OperatorProperty switch
            {
                "In" => has && values.Contains(value!),
                "NotIn" => !has || !values.Contains(value!),
                "Exists" => has,
                "DoesNotExist" => !has,
                _ => false,
            };
            if (!ok)
            {
                return false;
            }
        }

        return true;
    }

    /// <summary>The selector as kubectl writes one (a=b,c in (d,e)).</summary>
    public static string Describe(V1LabelSelector selector)
    {
        var parts = (selector.MatchLabels ?? new Dictionary<string, string>()).OrderBy(p => p.Key, StringComparer.Ordinal).Select(p => $"{p.Key}={p.Value}")
            .Concat((selector.MatchExpressions ?? []).Select(e => e.OperatorProperty switch
            {
                "Exists" => e.Key,
                "DoesNotExist" => "!" + e.Key,
                _ => $"{e.Key} {e.OperatorProperty.ToLowerInvariant()} ({string.Join(",", e.Values ?? [])})",
            }))
            .ToList();
        return parts.Count == 0 ? "(everything)" : string.Join(",", parts);
    }
}
