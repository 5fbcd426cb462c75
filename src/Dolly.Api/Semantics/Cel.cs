using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;

namespace Dolly.Api.Semantics;

/// <summary>A CEL evaluation failure (parse error, missing field, wrong type); the rule then counts as failed.</summary>
internal sealed class CelException(string message) : Exception(message);

/// <summary>
/// The subset of CEL that CRD validation rules use in practice: literals, self/oldSelf, field selection, indexing,
/// has(), size(), string functions (startsWith, endsWith, contains, matches), list macros (all, exists, exists_one),
/// comparison, arithmetic, logic and the conditional operator. Values are JSON nodes, longs, doubles, strings,
/// bools and lists.
/// </summary>
internal static partial class Cel
{
    // The words Kubernetes escapes as __word__ in property names (CEL keywords and reserved identifiers).
    private static readonly HashSet<string> ReservedWords = new(StringComparer.Ordinal)
    {
        "true", "false", "null", "in", "as", "break", "const", "continue", "else", "for", "function", "if", "import", "let", "loop",
        "package", "namespace", "return", "var", "void", "while",
    };

    private abstract record Expr;

    private sealed record Lit(object? Value) : Expr;

    private sealed record Ident(string Name) : Expr;

    private sealed record Select(Expr Target, string Field) : Expr;

    private sealed record Index(Expr Target, Expr Key) : Expr;

    private sealed record Call(Expr? Target, string Function, IReadOnlyList<Expr> Args) : Expr;

    private sealed record Unary(string Op, Expr Operand) : Expr;

    private sealed record Binary(string Op, Expr Left, Expr Right) : Expr;

    private sealed record Cond(Expr Test, Expr Then, Expr Else) : Expr;

    private sealed record ListLit(IReadOnlyList<Expr> Items) : Expr;

    private static readonly Dictionary<string, Expr> Cache = new(StringComparer.Ordinal);
    private static readonly Lock CacheLock = new();

    /// <summary>Whether a rule mentions oldSelf (a transition rule, evaluated only on update).</summary>
    [GeneratedRegex("__(underscores|dot|dash|slash)__", RegexOptions.CultureInvariant)]
    private static partial Regex EscapedSequence();

    public static bool IsTransitionRule(string rule) => Regex.IsMatch(rule, @"\boldSelf\b");

    /// <summary>Evaluates a rule to a bool.</summary>
    public static bool Check(string rule, JsonNode? self, JsonNode? oldSelf)
    {
        Expr expr;
        lock (CacheLock)
        {
            if (!Cache.TryGetValue(rule, out expr!))
            {
                expr = new Parser(rule).ParseAll();
                if (Cache.Count < 4096)
                {
                    Cache[rule] = expr;
                }
            }
        }

        var vars = new Dictionary<string, object?>(StringComparer.Ordinal) { ["self"] = self, ["oldSelf"] = oldSelf };
        return Eval(expr, vars) is bool b ? b : throw new CelException("rule did not evaluate to a bool");
    }

    private static object? Eval(Expr e, Dictionary<string, object?> vars) => e switch
    {
        Lit l => l.Value,
        Ident i => vars.TryGetValue(i.Name, out var v) ? Normalize(v) : throw new CelException("undeclared reference to '" + i.Name + "'"),
        Select s => Normalize(Eval(s.Target, vars) is JsonObject o
            ? (o.TryGetPropertyValue(s.Field, out var child) ? child : throw new CelException("no such key: " + s.Field))
            : throw new CelException("no such key: " + s.Field)),
        Index x => IndexOf(Eval(x.Target, vars), Eval(x.Key, vars)),
        Unary { Op: "!" } u => !AsBool(Eval(u.Operand, vars)),
        Unary u => Eval(u.Operand, vars) switch
        {
            long l => -l,
            double d => -d,
            _ => throw new CelException("no such overload: -"),
        },
        Binary { Op: "&&" } b => AsBool(Eval(b.Left, vars)) && AsBool(Eval(b.Right, vars)),
        Binary { Op: "||" } b => AsBool(Eval(b.Left, vars)) || AsBool(Eval(b.Right, vars)),
        Binary b => Apply(b.Op, Eval(b.Left, vars), Eval(b.Right, vars)),
        Cond c => AsBool(Eval(c.Test, vars)) ? Eval(c.Then, vars) : Eval(c.Else, vars),
        ListLit list => list.Items.Select(i => Eval(i, vars)).ToList(),
        Call c => Invoke(c, vars),
        _ => throw new CelException("unsupported expression"),
    };

    /// <summary>JSON scalars become CLR values; objects and arrays stay nodes.</summary>
    private static object? Normalize(object? v) => v switch
    {
        JsonValue j => j.GetValueKind() switch
        {
            JsonValueKind.String => j.GetValue<string>(),
            JsonValueKind.True => true,
            JsonValueKind.False => false,
            JsonValueKind.Number => Json.Long(j) is long l && !j.ToJsonString().Contains('.', StringComparison.Ordinal) ? (object)l : Json.Double(j),
            _ => null,
        },
        _ => v,
    };

    private static bool AsBool(object? v) => v is bool b ? b : throw new CelException("no such overload: expected bool");

    private static List<object?> AsList(object? v) => v switch
    {
        JsonArray a => [.. a.Select(x => Normalize(x))],
        List<object?> l => l,
        _ => throw new CelException("no such overload: expected list"),
    };

    private static object? IndexOf(object? target, object? key) => (target, key) switch
    {
        (JsonObject o, string k) => o.TryGetPropertyValue(k, out var v) ? Normalize(v) : throw new CelException("no such key: " + k),
        (JsonArray or List<object?>, long i) => AsList(target) is var l && i >= 0 && i < l.Count ? l[(int)i] : throw new CelException("index out of range: " + i.ToString(CultureInfo.InvariantCulture)),
        _ => throw new CelException("no such overload: index"),
    };

    private static object? Apply(string op, object? a, object? b)
    {
        switch (op)
        {
            case "==":
                return Equal(a, b);
            case "!=":
                return !Equal(a, b);
            case "in":
                return b is JsonObject map ? a is string s && map.ContainsKey(s) : AsList(b).Any(x => Equal(a, x));
        }

        if (a is string sa && b is string sb)
        {
            int c = string.CompareOrdinal(sa, sb);
            return op switch
            {
                "+" => sa + sb,
                "<" => c < 0,
                "<=" => c <= 0,
                ">" => c > 0,
                ">=" => c >= 0,
                _ => throw new CelException("no such overload: string " + op),
            };
        }

        if (op == "+" && a is not (long or double) && b is not (long or double))
        {
            return AsList(a).Concat(AsList(b)).ToList();
        }

        if (a is long la && b is long lb)
        {
            return op switch
            {
                "+" => la + lb,
                "-" => la - lb,
                "*" => la * lb,
                "/" => lb == 0 ? throw new CelException("division by zero") : la / lb,
                "%" => lb == 0 ? throw new CelException("modulus by zero") : la % lb,
                "<" => la < lb,
                "<=" => la <= lb,
                ">" => la > lb,
                ">=" => la >= lb,
                _ => throw new CelException("no such overload: int " + op),
            };
        }

        if (a is long or double && b is long or double)
        {
            double da = Convert.ToDouble(a, CultureInfo.InvariantCulture), db = Convert.ToDouble(b, CultureInfo.InvariantCulture);
            return op switch
            {
                "+" => da + db,
                "-" => da - db,
                "*" => da * db,
                "/" => da / db,
                "<" => da < db,
                "<=" => da <= db,
                ">" => da > db,
                ">=" => da >= db,
                _ => throw new CelException("no such overload: double " + op),
            };
        }

        throw new CelException("no such overload: " + op);
    }

    private static bool Equal(object? a, object? b) => (a, b) switch
    {
        (null, null) => true,
        (long x, double y) => x == y,
        (double x, long y) => x == y,
        (JsonNode x, JsonNode y) => JsonNode.DeepEquals(x, y),
        (List<object?> or JsonArray, List<object?> or JsonArray) => AsList(a) is var l && AsList(b) is var r && l.Count == r.Count && l.Zip(r).All(p => Equal(p.First, p.Second)),
        _ => Equals(a, b),
    };

    private static object? Invoke(Call c, Dictionary<string, object?> vars)
    {
        if (c.Function == "has" && c.Target is null)
        {
            if (c.Args is not [Select s])
            {
                throw new CelException("has() requires a field selection");
            }

            return Eval(s.Target, vars) is JsonObject o && o.ContainsKey(s.Field);
        }

        if (c.Function is "all" or "exists" or "exists_one" && c.Target is not null && c.Args is [Ident variable, var predicate])
        {
            var target = Eval(c.Target, vars);
            IEnumerable<object?> items = target is JsonObject map ? map.Select(kv => (object?)kv.Key) : AsList(target);
            int matches = 0;
            foreach (var item in items)
            {
                var scope = new Dictionary<string, object?>(vars, StringComparer.Ordinal) { [variable.Name] = item };
                if (AsBool(Eval(predicate, scope)))
                {
                    matches++;
                }
                else if (c.Function == "all")
                {
                    return false;
                }
            }

            return c.Function switch { "all" => true, "exists" => matches > 0, _ => matches == 1 };
        }

        var args = c.Args.Select(a => Eval(a, vars)).ToList();
        var self = c.Target is null ? null : Eval(c.Target, vars);
        return (c.Function, self, args) switch
        {
            ("size", null, [var x]) => Size(x),
            ("size", not null, []) => Size(self),
            ("startsWith", string s, [string p]) => s.StartsWith(p, StringComparison.Ordinal),
            ("endsWith", string s, [string p]) => s.EndsWith(p, StringComparison.Ordinal),
            ("contains", string s, [string p]) => s.Contains(p, StringComparison.Ordinal),
            ("matches", string s, [string p]) => Regex.IsMatch(s, p, RegexOptions.None, TimeSpan.FromMilliseconds(100)),
            ("int", null, [var x]) => x switch { long l => l, double d => (long)d, string s when long.TryParse(s, CultureInfo.InvariantCulture, out long l) => l, _ => throw new CelException("no such overload: int") },
            ("string", null, [var x]) => x switch { string s => s, long l => l.ToString(CultureInfo.InvariantCulture), bool b => b ? "true" : "false", _ => throw new CelException("no such overload: string") },
            _ => throw new CelException("found no matching overload for '" + c.Function + "'"),
        };
    }

    private static long Size(object? x) => x switch
    {
        string s => s.EnumerateRunes().LongCount(),
        JsonObject o => o.Count,
        JsonArray or List<object?> => AsList(x).Count,
        _ => throw new CelException("no such overload: size"),
    };

    /// <summary>A recursive-descent parser with CEL's precedence: ?: then || then &amp;&amp; then relations then + - then * / % then unary.</summary>
    private sealed class Parser(string text)
    {
        private readonly List<string> _tokens = Tokenize(text);
        private int _pos;

        private string Peek => _pos < _tokens.Count ? _tokens[_pos] : "";

        private bool Accept(string token)
        {
            if (Peek == token)
            {
                _pos++;
                return true;
            }

            return false;
        }

        private void Expect(string token)
        {
            if (!Accept(token))
            {
                throw new CelException("Syntax error: expected '" + token + "' at '" + Peek + "'");
            }
        }

        public Expr ParseAll()
        {
            var e = Conditional();
            if (_pos != _tokens.Count)
            {
                throw new CelException("Syntax error: unexpected '" + Peek + "'");
            }

            return e;
        }

        private Expr Conditional()
        {
            var test = Or();
            if (!Accept("?"))
            {
                return test;
            }

            var then = Conditional();
            Expect(":");
            return new Cond(test, then, Conditional());
        }

        private Expr Or()
        {
            var e = And();
            while (Accept("||"))
            {
                e = new Binary("||", e, And());
            }

            return e;
        }

        private Expr And()
        {
            var e = Relation();
            while (Accept("&&"))
            {
                e = new Binary("&&", e, Relation());
            }

            return e;
        }

        private Expr Relation()
        {
            var e = Additive();
            while (Peek is "==" or "!=" or "<" or "<=" or ">" or ">=" or "in")
            {
                string op = _tokens[_pos++];
                e = new Binary(op, e, Additive());
            }

            return e;
        }

        private Expr Additive()
        {
            var e = Multiplicative();
            while (Peek is "+" or "-")
            {
                string op = _tokens[_pos++];
                e = new Binary(op, e, Multiplicative());
            }

            return e;
        }

        private Expr Multiplicative()
        {
            var e = UnaryExpr();
            while (Peek is "*" or "/" or "%")
            {
                string op = _tokens[_pos++];
                e = new Binary(op, e, UnaryExpr());
            }

            return e;
        }

        private Expr UnaryExpr()
        {
            if (Accept("!"))
            {
                return new Unary("!", UnaryExpr());
            }

            return Accept("-") ? new Unary("-", UnaryExpr()) : Member();
        }

        /// <summary>
        /// Kubernetes escapes property names that CEL cannot spell: a reserved word as <c>__word__</c>
        /// (<c>self.__namespace__</c> reads <c>namespace</c>), and <c>__</c>, <c>.</c>, <c>-</c>, <c>/</c> as
        /// <c>__underscores__</c>, <c>__dot__</c>, <c>__dash__</c>, <c>__slash__</c>.
        /// </summary>
        private static string UnescapeField(string name)
        {
            if (name.Length > 4 && name.StartsWith("__", StringComparison.Ordinal) && name.EndsWith("__", StringComparison.Ordinal)
                && ReservedWords.Contains(name[2..^2]))
            {
                return name[2..^2];
            }

            return name.Contains("__", StringComparison.Ordinal)
                ? EscapedSequence().Replace(name, m => m.Groups[1].Value switch
                {
                    "underscores" => "__",
                    "dot" => ".",
                    "dash" => "-",
                    _ => "/",
                })
                : name;
        }

        private Expr Member()
        {
            var e = Primary();
            while (true)
            {
                if (Accept("."))
                {
                    string name = Peek;
                    _pos++;
                    e = Accept("(") ? new Call(e, name, Args(")")) : new Select(e, UnescapeField(name));
                }
                else if (Accept("["))
                {
                    var key = Conditional();
                    Expect("]");
                    e = new Index(e, key);
                }
                else
                {
                    return e;
                }
            }
        }

        private List<Expr> Args(string close)
        {
            var args = new List<Expr>();
            if (Accept(close))
            {
                return args;
            }

            do
            {
                args.Add(Conditional());
            }
            while (Accept(","));
            Expect(close);
            return args;
        }

        private Expr Primary()
        {
            string t = Peek;
            _pos++;
            if (t == "(")
            {
                var e = Conditional();
                Expect(")");
                return e;
            }

            if (t == "[")
            {
                return new ListLit(Args("]"));
            }

            if (t.Length > 0 && (t[0] == '"' || t[0] == '\''))
            {
                return new Lit(t[1..]);
            }

            if (t.Length > 0 && char.IsAsciiDigit(t[0]))
            {
                return t.Contains('.', StringComparison.Ordinal)
                    ? new Lit(double.Parse(t, CultureInfo.InvariantCulture))
                    : new Lit(long.Parse(t.TrimEnd('u'), CultureInfo.InvariantCulture));
            }

            switch (t)
            {
                case "true":
                    return new Lit(true);
                case "false":
                    return new Lit(false);
                case "null":
                    return new Lit(null);
            }

            if (t.Length > 0 && (char.IsAsciiLetter(t[0]) || t[0] == '_'))
            {
                return Accept("(") ? new Call(null, t, Args(")")) : new Ident(t);
            }

            throw new CelException("Syntax error: unexpected '" + t + "'");
        }

        /// <summary>Tokens: operators, identifiers, numbers, and string literals kept with their opening quote.</summary>
        private static List<string> Tokenize(string text)
        {
            var tokens = new List<string>();
            int i = 0;
            while (i < text.Length)
            {
                char c = text[i];
                if (char.IsWhiteSpace(c))
                {
                    i++;
                }
                else if (c is '"' or '\'')
                {
                    var sb = new StringBuilder().Append(c);
                    i++;
                    while (i < text.Length && text[i] != c)
                    {
                        if (text[i] == '\\' && i + 1 < text.Length)
                        {
                            i++;
                            sb.Append(text[i] switch { 'n' => '\n', 't' => '\t', _ => text[i] });
                        }
                        else
                        {
                            sb.Append(text[i]);
                        }

                        i++;
                    }

                    if (i >= text.Length)
                    {
                        throw new CelException("Syntax error: unterminated string");
                    }

                    i++;
                    tokens.Add(sb.ToString());
                }
                else if (char.IsAsciiDigit(c))
                {
                    int start = i;
                    while (i < text.Length && (char.IsAsciiDigit(text[i]) || text[i] == '.' || text[i] == 'u'))
                    {
                        i++;
                    }

                    tokens.Add(text[start..i]);
                }
                else if (char.IsAsciiLetter(c) || c == '_')
                {
                    int start = i;
                    while (i < text.Length && (char.IsAsciiLetterOrDigit(text[i]) || text[i] == '_'))
                    {
                        i++;
                    }

                    tokens.Add(text[start..i]);
                }
                else
                {
                    string two = i + 1 < text.Length ? text.Substring(i, 2) : "";
                    if (two is "==" or "!=" or "<=" or ">=" or "&&" or "||")
                    {
                        tokens.Add(two);
                        i += 2;
                    }
                    else if ("!<>+-*/%?:.,()[]".Contains(c, StringComparison.Ordinal))
                    {
                        tokens.Add(c.ToString());
                        i++;
                    }
                    else
                    {
                        throw new CelException("Syntax error: unexpected character '" + c + "'");
                    }
                }
            }

            return tokens;
        }
    }
}
