using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;

namespace Dolly.Api.Http;

/// <summary>
/// The request path exactly as the client sent it, split on '/' first and only then percent-decoded segment by
/// segment. Kestrel's <c>Request.Path</c> is decoded and has its dot segments removed, so routing on it turned
/// <c>configmaps/%2e%2e</c> into the namespace itself and <c>configmaps/x/%2e%2e/y</c> into config map y. Here
/// a "..", "." or encoded "/" stays inside the one segment it was sent in, where routing sees it and refuses it.
/// </summary>
/// <param name="Segments">The decoded segments; empty strings where the client sent "//".</param>
/// <param name="TrailingSlash">The path ended with one '/', which is not counted as a segment.</param>
internal sealed record RequestPath(string[] Segments, bool TrailingSlash)
{
    /// <summary>Names that are never valid path segments (apimachinery's path.NameMayNotBe).</summary>
    private static readonly string[] NameMayNotBe = [".", ".."];

    /// <summary>Characters a name sent as a path segment may not contain (apimachinery's path.NameMayNotContain).</summary>
    private static readonly string[] NameMayNotContain = ["/", "%"];

    /// <summary>True when some segment is empty (the client sent "//").</summary>
    public bool HasEmptySegment => Segments.Any(s => s.Length == 0);

    /// <summary>The raw request target of <paramref name="context"/> (Kestrel keeps it), falling back to the decoded path.</summary>
    public static RequestPath Of(HttpContext context)
    {
        string? raw = context.Features.Get<IHttpRequestFeature>()?.RawTarget;
        return Parse(string.IsNullOrEmpty(raw) ? context.Request.PathBase + context.Request.Path : raw);
    }

    /// <summary>Splits a request target (origin form "/a/b?q", or absolute form "https://host/a/b").</summary>
    public static RequestPath Parse(string target)
    {
        int end = target.IndexOfAny(['?', '#']);
        string path = end < 0 ? target : target[..end];
        if (!path.StartsWith('/'))
        {
            // Absolute form: the path starts at the first '/' after the authority.
            int scheme = path.IndexOf("://", StringComparison.Ordinal);
            int slash = scheme < 0 ? -1 : path.IndexOf('/', scheme + 3);
            path = slash < 0 ? (scheme < 0 ? "/" + path : "/") : path[slash..];
        }

        string body = path[1..];
        bool trailing = body.EndsWith('/');
        if (trailing)
        {
            body = body[..^1];
        }

        // "/" has no segment; "//" has one empty segment.
        string[] segments = body.Length == 0 && !trailing ? [] : [.. body.Split('/').Select(Uri.UnescapeDataString)];
        return new RequestPath(segments, trailing);
    }

    /// <summary>
    /// Why <paramref name="name"/> cannot name an object in a path (apimachinery's path.IsValidPathSegmentName);
    /// empty when it can.
    /// </summary>
    public static IReadOnlyList<string> InvalidSegmentReasons(string name)
    {
        foreach (var illegal in NameMayNotBe)
        {
            if (name == illegal)
            {
                return ["may not be '" + illegal + "'"];
            }
        }

        return [.. NameMayNotContain.Where(c => name.Contains(c, StringComparison.Ordinal)).Select(c => "may not contain '" + c + "'")];
    }

    /// <summary>Refuses a namespace path segment that is empty or not a valid path segment name (400, as kube-apiserver).</summary>
    public static void CheckNamespace(string ns)
    {
        if (ns.Length == 0)
        {
            throw Errors.BadRequest("Namespace parameter required.");
        }

        var reasons = InvalidSegmentReasons(ns);
        if (reasons.Count > 0)
        {
            throw Errors.BadRequest("Namespace parameter invalid: " + Quote(ns) + ": " + string.Join(";", reasons));
        }
    }

    /// <summary>Refuses an object name path segment that is empty or not a valid path segment name (400, as kube-apiserver).</summary>
    public static void CheckName(string name)
    {
        if (name.Length == 0)
        {
            throw Errors.BadRequest("name must be provided");
        }

        var reasons = InvalidSegmentReasons(name);
        if (reasons.Count > 0)
        {
            throw Errors.BadRequest("Name parameter invalid: " + Quote(name) + ": " + string.Join(";", reasons));
        }
    }

    /// <summary>Go's %q for the printable names that reach here: quotes, with backslashes and quotes escaped.</summary>
    private static string Quote(string s) =>
        "\"" + s.Replace("\\", "\\\\", StringComparison.Ordinal).Replace("\"", "\\\"", StringComparison.Ordinal) + "\"";
}
