using System.Globalization;
using System.Net;
using System.Text;
using Dolly.Storage;

namespace Dolly.Web;

/// <summary>
/// The web view's HTML, rendered on the server from <see cref="WebModel"/> and <see cref="KubeNames"/>. Every
/// byte count is also in a <c>data-bytes</c> attribute, exact, next to its human form. No inline script or
/// style (the Content-Security-Policy forbids both): charts and graphs are SVG with presentation attributes.
/// </summary>
internal static class WebPages
{
    public const int PageSize = 50;
    public const int TreesPerPage = 10;

    // Lineage layout, in SVG user units.
    private const int NodeWidth = 360;
    private const int NodeHeight = 46;
    private const int ColumnStep = 440;
    private const int RowStep = 62;

    private static readonly CultureInfo Inv = CultureInfo.InvariantCulture;

    /// <summary>A whole page: the frame around <paramref name="main"/>, which the script swaps on each change.</summary>
    public static string Frame(string title, string active, string main, long version)
    {
        var b = new StringBuilder(main.Length + 1024);
        b.Append("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">")
            .Append("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">")
            .Append("<title>").Append(E(title)).Append(" · Dolly</title>")
            .Append("<link rel=\"icon\" href=\"data:,\"><link rel=\"stylesheet\" href=\"").Append(WebView.Prefix).Append("/assets/dolly.css\">")
            .Append("<script src=\"").Append(WebView.Prefix).Append("/assets/dolly.js\" defer></script></head><body>")
            .Append("<header><span class=\"brand\">Dolly</span><nav>");
        foreach (var (href, label) in new[] { ("/", "Overview"), ("/volumes", "Volumes"), ("/snapshots", "Snapshots"), ("/lineage", "Lineage") })
        {
            b.Append("<a href=\"").Append(WebView.Prefix).Append(href).Append('"').Append(label == active ? " class=\"active\"" : "").Append('>').Append(label).Append("</a>");
        }

        b.Append("</nav><span id=\"live\" class=\"live\">static</span></header>")
            .Append("<main id=\"main\" data-version=\"").Append(version.ToString(Inv)).Append("\">").Append(main).Append("</main></body></html>");
        return b.ToString();
    }

    /// <summary>A page for a person who is not logged in or asked for something wrong; no data.</summary>
    public static string Message(string title, string text) =>
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>" + E(title) + " · Dolly</title><link rel=\"icon\" href=\"data:,\">" +
        "<link rel=\"stylesheet\" href=\"" + WebView.Prefix + "/assets/dolly.css\"></head><body><main class=\"message\"><h1>" + E(title) + "</h1><p>" + E(text) + "</p></main></body></html>";

    /// <summary>The page a redeemed login link answers with: it moves on to the overview once the cookie is set.</summary>
    public static string LoggedIn() =>
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta http-equiv=\"refresh\" content=\"0;url=" + WebView.Prefix + "/\">" +
        "<title>Logged in · Dolly</title><link rel=\"icon\" href=\"data:,\"></head><body><p>Logged in. <a href=\"" + WebView.Prefix + "/\">Open the web view</a>.</p></body></html>";

    public static string Overview(WebModel model)
    {
        var info = model.PoolInfo();
        var b = new StringBuilder();
        b.Append("<h1>Pool</h1><dl class=\"figures\">");
        Figure(b, "pool-volumes", "Volumes", info.Volumes.ToString(Inv), null);
        Figure(b, "pool-snapshots", "Snapshots", info.Snapshots.ToString(Inv), null);
        Figure(b, "pool-logical", "Logical", null, info.LogicalBytes);
        Figure(b, "pool-allocated", "Allocated", null, info.DataBlocksUsed * info.BlockSize);
        Figure(b, "pool-physical", "Data file", null, info.DataFileBytes);
        Figure(b, "pool-free", "Free in data file", null, info.DataBlocksFree * info.BlockSize);
        Figure(b, "pool-metadata", "Metadata", null, info.MetadataBytes);
        b.Append("</dl><h2>Space over time</h2>");
        SpaceChart(b, model.Samples());
        b.Append("<p class=\"note\">Allocated counts each shared block once; a volume's snapshots and clones cost only the blocks written since.</p>");
        return b.ToString();
    }

    private static void Figure(StringBuilder b, string id, string label, string? text, long? bytes)
    {
        b.Append("<div id=\"").Append(id).Append("\"><dt>").Append(label).Append("</dt><dd");
        if (bytes is { } n)
        {
            b.Append(" data-bytes=\"").Append(n.ToString(Inv)).Append("\" title=\"").Append(n.ToString("N0", Inv)).Append(" bytes\">").Append(E(ByteSize.Format(n)));
        }
        else
        {
            b.Append('>').Append(E(text!));
        }

        b.Append("</dd></div>");
    }

    private static void SpaceChart(StringBuilder b, IReadOnlyList<SpaceSample> samples)
    {
        const int W = 720, H = 180, Left = 70, Bottom = 24;
        if (samples.Count < 2)
        {
            b.Append("<p class=\"note\" id=\"space-chart-empty\">Sampling the pool; the chart starts with the second sample.</p>");
            return;
        }

        long max = Math.Max(1, samples.Max(s => Math.Max(s.Physical, s.Allocated + s.Free)));
        var t0 = samples[0].At;
        double span = Math.Max(1, (samples[^1].At - t0).TotalSeconds);
        b.Append("<svg id=\"space-chart\" class=\"chart\" viewBox=\"0 0 ").Append(W + Left).Append(' ').Append(H + Bottom)
            .Append("\" role=\"img\" aria-label=\"Pool space over time\">");
        foreach (double f in new[] { 0, 0.5, 1.0 })
        {
            double y = H - f * (H - 10);
            b.Append("<line class=\"grid\" x1=\"").Append(Left).Append("\" x2=\"").Append(W + Left).Append("\" y1=\"").Append(N(y)).Append("\" y2=\"").Append(N(y)).Append("\"/>")
                .Append("<text class=\"axis\" x=\"").Append(Left - 6).Append("\" y=\"").Append(N(y + 4)).Append("\" text-anchor=\"end\">").Append(E(ByteSize.Format((long)(max * f)))).Append("</text>");
        }

        foreach (var (cls, pick) in new (string, Func<SpaceSample, long>)[] { ("physical", s => s.Physical), ("allocated", s => s.Allocated) })
        {
            b.Append("<polyline class=\"series ").Append(cls).Append("\" points=\"");
            foreach (var s in samples)
            {
                double x = Left + (s.At - t0).TotalSeconds / span * W;
                double y = H - (double)pick(s) / max * (H - 10);
                b.Append(N(x)).Append(',').Append(N(y)).Append(' ');
            }

            b.Append("\"/>");
        }

        b.Append("<text class=\"axis\" x=\"").Append(Left).Append("\" y=\"").Append(H + 18).Append("\">").Append(E(samples[0].At.ToString("HH:mm:ss", Inv))).Append("</text>")
            .Append("<text class=\"axis\" x=\"").Append(W + Left).Append("\" y=\"").Append(H + 18).Append("\" text-anchor=\"end\">").Append(E(samples[^1].At.ToString("HH:mm:ss 'UTC'", Inv))).Append("</text></svg>")
            .Append("<p class=\"legend\"><span class=\"key physical\"></span>data file <span class=\"key allocated\"></span>allocated</p>");
    }

    /// <summary>A page of volumes or snapshots with their space; <paramref name="page"/> counts from 1.</summary>
    public static string Devices(WebModel model, KubeNames? kube, DeviceKind kind, int page)
    {
        var (rows, total) = model.Page(kind, (page - 1) * PageSize, PageSize);
        bool volumes = kind == DeviceKind.Volume;
        string what = volumes ? "volumes" : "snapshots";
        var b = new StringBuilder();
        b.Append("<h1>").Append(volumes ? "Volumes" : "Snapshots").Append("</h1>");
        Pager(b, volumes ? "/volumes" : "/snapshots", page, total, PageSize, what);
        if (total == 0)
        {
            b.Append("<p class=\"note\">No ").Append(what).Append(".</p>");
            return b.ToString();
        }

        b.Append("<table id=\"").Append(what).Append("\"><thead><tr><th>Engine name</th><th>Kubernetes</th><th class=\"num\">Size</th><th class=\"num\">Allocated</th>")
            .Append("<th class=\"num\" title=\"Blocks only this device references: what deleting it frees\">Delete frees</th><th>Source</th>")
            .Append(volumes ? "<th class=\"num\">Snapshots</th><th class=\"num\">Clones</th>" : "<th class=\"num\">Restores</th>")
            .Append("<th>Created (UTC)</th></tr></thead><tbody>");
        foreach (var d in rows)
        {
            if (model.Space(d.Name) is not { } space)
            {
                continue;
            }

            var k = kube?.Of(d.Name);
            var (snaps, clones) = model.ChildCounts(d.Name);
            b.Append("<tr data-device=\"").Append(E(d.Name)).Append("\"><td class=\"name\"><a href=\"").Append(WebView.Prefix).Append("/lineage?of=").Append(Uri.EscapeDataString(d.Name)).Append("\">").Append(E(d.Name)).Append("</a></td>")
                .Append("<td class=\"k8s\" data-field=\"kubernetes\">").Append(k is null ? "<span class=\"none\">-</span>" : E(k.Display)).Append("</td>");
            Bytes(b, "size", space.Logical);
            Bytes(b, "allocated", space.Allocated);
            Bytes(b, "exclusive", space.Exclusive);
            b.Append("<td data-field=\"source\">").Append(d.SourceName is null ? (d.SourceId != 0 ? "<span class=\"none\">(deleted)</span>" : "<span class=\"none\">-</span>") : E(d.SourceName)).Append("</td>");
            if (volumes)
            {
                b.Append("<td class=\"num\">").Append(snaps).Append("</td><td class=\"num\">").Append(clones).Append("</td>");
            }
            else
            {
                b.Append("<td class=\"num\">").Append(clones).Append("</td>");
            }

            b.Append("<td>").Append(E(d.CreatedAt.UtcDateTime.ToString("yyyy-MM-dd HH:mm:ss", Inv))).Append("</td></tr>");
        }

        b.Append("</tbody></table>");
        return b.ToString();
    }

    private static void Bytes(StringBuilder b, string field, long n) =>
        b.Append("<td class=\"num\" data-field=\"").Append(field).Append("\" data-bytes=\"").Append(n.ToString(Inv)).Append("\" title=\"")
            .Append(n.ToString("N0", Inv)).Append(" bytes\">").Append(E(ByteSize.Format(n))).Append("</td>");

    private static void Pager(StringBuilder b, string path, int page, int total, int size, string what)
    {
        int pages = Math.Max(1, (total + size - 1) / size);
        int first = total == 0 ? 0 : (page - 1) * size + 1;
        int last = Math.Min(total, page * size);
        b.Append("<p class=\"pager\"><span class=\"count\" data-total=\"").Append(total).Append("\">")
            .Append(first.ToString("N0", Inv)).Append('–').Append(last.ToString("N0", Inv)).Append(" of ").Append(total.ToString("N0", Inv)).Append(' ').Append(what).Append("</span>");
        if (page > 1)
        {
            b.Append(" <a rel=\"prev\" href=\"").Append(WebView.Prefix).Append(path).Append("?page=").Append(page - 1).Append("\">previous</a>");
        }

        if (page < pages)
        {
            b.Append(" <a rel=\"next\" href=\"").Append(WebView.Prefix).Append(path).Append("?page=").Append(page + 1).Append("\">next</a>");
        }

        b.Append("</p>");
    }

    /// <summary>Lineage trees: the one holding <paramref name="of"/>, or a page of them.</summary>
    public static string Lineage(WebModel model, KubeNames? kube, string? of, int page)
    {
        var b = new StringBuilder();
        b.Append("<h1>Lineage</h1><p class=\"note\">Volume → snapshots → restores, and volume → clones, across namespaces: the engine's name above, the Kubernetes object below.</p>");
        if (of is not null)
        {
            if (model.TreeContaining(of) is not { } tree)
            {
                b.Append("<p class=\"note\">No volume or snapshot named ").Append(E(of)).Append(" (deleted?).</p>");
                return b.ToString();
            }

            Graph(b, tree, kube, of);
            return b.ToString();
        }

        var (trees, total) = model.Trees((page - 1) * TreesPerPage, TreesPerPage);
        Pager(b, "/lineage", page, total, TreesPerPage, "trees");
        foreach (var tree in trees)
        {
            Graph(b, tree, kube, highlight: null);
        }

        return b.ToString();
    }

    private static void Graph(StringBuilder b, LineageTree tree, KubeNames? kube, string? highlight)
    {
        int maxDepth = tree.Nodes.Max(n => n.Depth);
        int width = maxDepth * ColumnStep + NodeWidth + 2;
        int height = (tree.Nodes.Count - 1) * RowStep + NodeHeight + 2;
        var at = new Dictionary<string, (double X, double Y)>(StringComparer.Ordinal);
        var kinds = tree.Nodes.ToDictionary(n => n.Device.Name, n => n.Device.Kind, StringComparer.Ordinal);
        for (int i = 0; i < tree.Nodes.Count; i++)
        {
            at[tree.Nodes[i].Device.Name] = (1 + tree.Nodes[i].Depth * ColumnStep, 1 + i * RowStep);
        }

        b.Append("<figure class=\"lineage\"><svg class=\"graph\" data-root=\"").Append(E(tree.Nodes[0].Device.Name)).Append("\" width=\"").Append(width).Append("\" height=\"").Append(height)
            .Append("\" viewBox=\"0 0 ").Append(width).Append(' ').Append(height).Append("\" role=\"img\" aria-label=\"Lineage of ").Append(E(tree.Nodes[0].Device.Name)).Append("\">");
        foreach (var (d, _) in tree.Nodes)
        {
            if (d.SourceName is not { } parent || !at.TryGetValue(parent, out var p))
            {
                continue;
            }

            var c = at[d.Name];
            string kind = d.Kind == DeviceKind.Snapshot ? "snapshot" : kinds[parent] == DeviceKind.Snapshot ? "restore" : "clone";
            double x1 = p.X + NodeWidth, y1 = p.Y + NodeHeight / 2.0, x2 = c.X, y2 = c.Y + NodeHeight / 2.0, mid = (x1 + x2) / 2;
            b.Append("<g class=\"edge ").Append(kind).Append("\" data-from=\"").Append(E(parent)).Append("\" data-to=\"").Append(E(d.Name)).Append("\" data-kind=\"").Append(kind).Append("\">")
                .Append("<path d=\"M").Append(N(x1)).Append(',').Append(N(y1)).Append(" C").Append(N(mid)).Append(',').Append(N(y1)).Append(' ').Append(N(mid)).Append(',').Append(N(y2)).Append(' ').Append(N(x2)).Append(',').Append(N(y2)).Append("\"/>")
                // The label sits at the child's end, where edges that fork from one parent are apart.
                .Append("<text x=\"").Append(N(x2 - 6)).Append("\" y=\"").Append(N(y2 - 5)).Append("\" text-anchor=\"end\">").Append(kind).Append("</text></g>");
        }

        foreach (var (d, _) in tree.Nodes)
        {
            var (x, y) = at[d.Name];
            var k = kube?.Of(d.Name);
            string kind = d.Kind == DeviceKind.Volume ? "volume" : "snapshot";
            b.Append("<a href=\"").Append(WebView.Prefix).Append("/lineage?of=").Append(Uri.EscapeDataString(d.Name)).Append("\"><g class=\"node ").Append(kind).Append(d.Name == highlight ? " focus" : "")
                .Append("\" data-node=\"").Append(E(d.Name)).Append("\" data-kind=\"").Append(kind).Append("\" data-k8s=\"").Append(E(k?.Display ?? "")).Append("\" transform=\"translate(").Append(N(x)).Append(',').Append(N(y)).Append(")\">")
                .Append("<title>").Append(E(kind + " " + d.Name + (k is null ? "" : " · " + k.Display + " (" + k.Binding + ")"))).Append("</title>")
                .Append("<rect width=\"").Append(NodeWidth).Append("\" height=\"").Append(NodeHeight).Append("\" rx=\"6\"/>")
                .Append("<text class=\"engine\" x=\"8\" y=\"18\">").Append(E(Cut(d.Name))).Append("</text>")
                .Append("<text class=\"k8s\" x=\"8\" y=\"36\">").Append(E(Cut(k?.Display ?? "(not in Kubernetes)"))).Append("</text></g></a>");
        }

        b.Append("</svg>");
        if (tree.Omitted > 0)
        {
            b.Append("<figcaption class=\"note\">").Append(tree.Omitted.ToString("N0", Inv)).Append(" more devices of this tree are not drawn.</figcaption>");
        }

        b.Append("</figure>");
    }

    private static string Cut(string s) => s.Length <= 46 ? s : s[..45] + "…";

    private static string N(double v) => v.ToString("0.#", Inv);

    private static string E(string s) => WebUtility.HtmlEncode(s);
}
