using System.Text.Json.Nodes;
using Dolly.Api.Http;

namespace Dolly.Api.Semantics;

/// <summary>A parsed label selector (equality- and set-based), as in apimachinery's labels.Parse.</summary>
internal sealed class LabelSelector
{
    private readonly List<Func<JsonObject, bool>> _terms = [];

    public static readonly LabelSelector Everything = new();

    public bool Matches(JsonObject obj)
    {
        if (_terms.Count == 0)
        {
            return true;
        }

        var labels = Json.Labels(obj);
        return _terms.All(t => t(labels));
    }

    public static LabelSelector Parse(string? text)
    {
        var sel = new LabelSelector();
        if (string.IsNullOrWhiteSpace(text))
        {
            return sel;
        }

        foreach (var raw in SplitTerms(text))
        {
            string term = raw.Trim();
            if (term.Length == 0)
            {
                throw Errors.BadRequest("unable to parse requirement: found '', expected: identifier");
            }

            sel._terms.Add(ParseTerm(term));
        }

        return sel;
    }

    // Commas separate terms except inside "in (a,b)" value sets.
    private static IEnumerable<string> SplitTerms(string text)
    {
        int depth = 0, start = 0;
        for (int i = 0; i < text.Length; i++)
        {
            if (text[i] == '(')
            {
                depth++;
            }
            else if (text[i] == ')')
            {
                depth--;
            }
            else if (text[i] == ',' && depth == 0)
            {
                yield return text[start..i];
                start = i + 1;
            }
        }

        yield return text[start..];
    }

    private static Func<JsonObject, bool> ParseTerm(string term)
    {
        if (term.StartsWith('!'))
        {
            string key = CheckKey(term[1..].Trim());
            return l => !l.ContainsKey(key);
        }

        foreach (var (op, negate) in new[] { (" notin ", true), (" in ", false) })
        {
            int at = term.IndexOf(op, StringComparison.Ordinal);
            if (at > 0)
            {
                string key = CheckKey(term[..at].Trim());
                string set = term[(at + op.Length)..].Trim();
                if (!set.StartsWith('(') || !set.EndsWith(')'))
                {
                    throw Errors.BadRequest("unable to parse requirement: found '" + set + "', expected: '('");
                }

                var values = set[1..^1].Split(',').Select(v => v.Trim()).ToHashSet(StringComparer.Ordinal);
                return negate
                    ? l => !(l[key] is JsonValue v && values.Contains(v.ToString()))
                    : l => l[key] is JsonValue v && values.Contains(v.ToString());
            }
        }

        foreach (var (op, negate) in new[] { ("!=", true), ("==", false), ("=", false) })
        {
            int at = term.IndexOf(op, StringComparison.Ordinal);
            if (at > 0)
            {
                string key = CheckKey(term[..at].Trim());
                string value = term[(at + op.Length)..].Trim();
                return negate
                    ? l => !(l[key] is JsonValue v && v.ToString() == value)
                    : l => l[key] is JsonValue v && v.ToString() == value;
            }
        }

        string exists = CheckKey(term);
        return l => l.ContainsKey(exists);
    }

    private static string CheckKey(string key)
    {
        if (key.Length == 0 || key.Length > 316 || key.Any(c => !(char.IsAsciiLetterOrDigit(c) || c is '-' or '_' or '.' or '/')))
        {
            throw Errors.BadRequest("unable to parse requirement: invalid label key \"" + key + "\": name part must consist of alphanumeric characters, '-', '_' or '.'");
        }

        return key;
    }
}

/// <summary>A parsed field selector: comma-separated "field=value", "field==value" or "field!=value" terms.</summary>
internal sealed class FieldSelector
{
    private readonly List<(string Field, string Value, bool Negate)> _terms = [];

    public static readonly FieldSelector Everything = new();

    /// <summary>The value required for metadata.name, if the selector pins one (used by watches on one object).</summary>
    public IEnumerable<(string Field, string Value, bool Negate)> Terms => _terms;

    public static FieldSelector Parse(string? text, IReadOnlyCollection<string> supported, bool custom)
    {
        var sel = new FieldSelector();
        if (string.IsNullOrWhiteSpace(text))
        {
            return sel;
        }

        foreach (var raw in text.Split(','))
        {
            string term = raw.Trim();
            (string op, bool negate) = term.Contains("!=", StringComparison.Ordinal) ? ("!=", true)
                : term.Contains("==", StringComparison.Ordinal) ? ("==", false)
                : term.Contains('=', StringComparison.Ordinal) ? ("=", false)
                : throw Errors.BadRequest("invalid selector: '" + text + "'; can't understand '" + term + "'");
            int at = term.IndexOf(op, StringComparison.Ordinal);
            string field = term[..at].Trim();
            string value = term[(at + op.Length)..].Trim();
            if (field is not ("metadata.name" or "metadata.namespace") && !supported.Contains(field))
            {
                throw Errors.BadRequest(custom
                    ? "field label not supported: " + field
                    : "\"" + field + "\" is not a known field selector: only \"metadata.name\", \"metadata.namespace\"");
            }

            sel._terms.Add((field, value, negate));
        }

        return sel;
    }

    public bool Matches(JsonObject obj)
    {
        foreach (var (field, value, negate) in _terms)
        {
            string actual = FieldValue(obj, field);
            if ((actual == value) == negate)
            {
                return false;
            }
        }

        return true;
    }

    private static string FieldValue(JsonObject obj, string field)
    {
        // core/v1 Event's "source" selects on source.component.
        var node = field == "source" ? Json.At(obj, "source.component") : Json.At(obj, field);
        return node switch
        {
            null => "",
            JsonValue v when Json.Str(v) is { } s => s,
            JsonValue v => v.ToJsonString(),
            _ => node.ToJsonString(),
        };
    }
}
