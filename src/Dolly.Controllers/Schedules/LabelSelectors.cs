using k8s.Models;

namespace Dolly.Controllers.Schedules;

/// <summary>Kubernetes label selectors (matchLabels and matchExpressions) evaluated against an object's labels.</summary>
internal static class LabelSelectors
{
    private static readonly string[] Operators = ["In", "NotIn", "Exists", "DoesNotExist"];

    /// <summary>Why <paramref name="selector"/> is invalid, or null when it is valid (an absent selector is).</summary>
    public static string? Problem(V1LabelSelector? selector, string field)
    {
        foreach (var e in selector?.MatchExpressions ?? [])
        {
            if (string.IsNullOrEmpty(e.Key))
            {
                return $"{field}.matchExpressions has an entry without a key";
            }

            if (!Operators.Contains(e.OperatorProperty, StringComparer.Ordinal))
            {
                return $"{field}.matchExpressions[{e.Key}] has operator \"{e.OperatorProperty}\": it must be one of {string.Join(", ", Operators)}";
            }

            bool needsValues = e.OperatorProperty is "In" or "NotIn";
            if (needsValues != (e.Values is { Count: > 0 }))
            {
                return $"{field}.matchExpressions[{e.Key}]: operator {e.OperatorProperty} {(needsValues ? "needs" : "takes no")} values";
            }
        }

        return null;
    }

    /// <summary>Whether <paramref name="labels"/> match; an absent or empty selector matches everything.</summary>
    public static bool Matches(V1LabelSelector? selector, IDictionary<string, string>? labels)
    {
        if (selector is null)
        {
            return true;
        }

        foreach (var (key, value) in selector.MatchLabels ?? new Dictionary<string, string>())
        {
            if (labels is null || !labels.TryGetValue(key, out var actual) || actual != value)
            {
                return false;
            }
        }

        foreach (var e in selector.MatchExpressions ?? [])
        {
            string? actual = labels is not null && labels.TryGetValue(e.Key, out var v) ? v : null;
            bool ok = e.OperatorProperty switch
            {
                "In" => actual is not null && e.Values.Contains(actual),
                "NotIn" => actual is null || !e.Values.Contains(actual),
                "Exists" => actual is not null,
                "DoesNotExist" => actual is null,
                _ => false,
            };
            if (!ok)
            {
                return false;
            }
        }

        return true;
    }
}
