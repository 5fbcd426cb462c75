using System.Collections.Frozen;

namespace Dolly.Web;

/// <summary>The web view's script and stylesheet, compiled into the executable (no CDN, nothing fetched elsewhere).</summary>
internal static class WebAssets
{
    private static readonly FrozenDictionary<string, (byte[] Content, string ContentType)> All = new Dictionary<string, (byte[], string)>(StringComparer.Ordinal)
    {
        ["dolly.css"] = (Load("dolly.css"), "text/css; charset=utf-8"),
        ["dolly.js"] = (Load("dolly.js"), "text/javascript; charset=utf-8"),
    }.ToFrozenDictionary(StringComparer.Ordinal);

    /// <summary>The asset of this file name, or null.</summary>
    public static (byte[] Content, string ContentType)? Get(string name) => All.TryGetValue(name, out var asset) ? asset : null;

    private static byte[] Load(string name)
    {
        using var stream = typeof(WebAssets).Assembly.GetManifestResourceStream("Dolly.Web.Assets." + name)
            ?? throw new InvalidOperationException($"the web view's asset {name} is not in the executable");
        using var copy = new MemoryStream();
        stream.CopyTo(copy);
        return copy.ToArray();
    }
}
