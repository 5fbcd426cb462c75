using System.Text.Json;
using System.Text.RegularExpressions;
using CsCheck;

namespace Dolly.Api.Tests;

/// <summary>
/// Request paths that try to name another object: dot segments (plain or percent-encoded), an encoded '/', an
/// encoded '%', empty segments. Each is sent byte for byte, refused with kube-apiserver's code, and the whole object
/// store is compared before and after: nothing may change.
/// </summary>
public sealed partial class PathSafetyTests(ServerFixture fx) : IClassFixture<ServerFixture>
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    private sealed record Kind(string Prefix, string Plural, bool Namespaced, bool HasStatus, bool ReadOnly, string Body);

    private static readonly Dictionary<string, Kind> Kinds = new()
    {
        ["configmaps"] = new("/api/v1", "configmaps", true, false, false,
            """{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"victim"},"data":{"pwned":"true"}}"""),
        ["persistentvolumeclaims"] = new("/api/v1", "persistentvolumeclaims", true, true, false,
            """{"apiVersion":"v1","kind":"PersistentVolumeClaim","metadata":{"name":"victim"},"spec":{"accessModes":["ReadWriteOnce"],"resources":{"requests":{"storage":"1Gi"}}}}"""),
        ["volumesnapshots"] = new("/apis/snapshot.storage.k8s.io/v1", "volumesnapshots", true, true, false,
            """{"apiVersion":"snapshot.storage.k8s.io/v1","kind":"VolumeSnapshot","metadata":{"name":"victim"},"spec":{"source":{"persistentVolumeClaimName":"x"}}}"""),
        ["storageclasses"] = new("/apis/storage.k8s.io/v1", "storageclasses", false, false, false,
            """{"apiVersion":"storage.k8s.io/v1","kind":"StorageClass","metadata":{"name":"victim"},"provisioner":"pwned"}"""),
        ["namespaces"] = new("/api/v1", "namespaces", false, true, false,
            """{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"victim","labels":{"pwned":"true"}}}"""),
        ["nodes"] = new("/api/v1", "nodes", false, false, true,
            """{"apiVersion":"v1","kind":"Node","metadata":{"name":"victim"}}"""),
    };

    /// <summary>
    /// Segments that are not names: "." and ".." plain and encoded, encoded '/' (which would split a segment after
    /// decoding), an encoded '%', and the empty name. apimachinery's IsValidPathSegmentName refuses all of them.
    /// </summary>
    private static readonly string[] BadNames =
        ["%2e%2e", "%2E%2E", "..", ".", "%2e", ".%2e", "a%2Fb", "%2F", "%2fvictim", "%2e%2e%2fvictim", "a%25b", ""];

    private static readonly string[] Methods = ["GET", "PUT", "PATCH", "DELETE", "POST"];

    public static TheoryData<string> KindNames => [.. Kinds.Keys];

    public static TheoryData<string> NamespacedKindNames => [.. Kinds.Values.Where(k => k.Namespaced).Select(k => k.Plural)];

    /// <summary>Objects an escaping path could reach: namespace victim with config maps x and y, a claim, a snapshot, a class.</summary>
    private async Task EnsureObjectsAsync()
    {
        async Task Create(string collection, string name, string body)
        {
            var found = await RawHttp.SendAsync(fx, "GET", collection + "/" + name, ct: Ct);
            if (found.Code == 404)
            {
                var created = await RawHttp.SendAsync(fx, "POST", collection, body, ct: Ct);
                Assert.True(created.Code == 201, created.Body);
            }
        }

        await Create("/api/v1/namespaces", "victim", """{"metadata":{"name":"victim"}}""");
        foreach (var cm in new[] { "x", "y" })
        {
            await Create("/api/v1/namespaces/victim/configmaps", cm, "{\"metadata\":{\"name\":\"" + cm + "\"},\"data\":{\"k\":\"v\"}}");
        }

        await Create("/api/v1/namespaces/victim/persistentvolumeclaims", "x",
            """{"metadata":{"name":"x"},"spec":{"accessModes":["ReadWriteOnce"],"resources":{"requests":{"storage":"1Gi"}}}}""");
        await Create("/apis/snapshot.storage.k8s.io/v1/namespaces/victim/volumesnapshots", "x",
            """{"metadata":{"name":"x"},"spec":{"source":{"persistentVolumeClaimName":"x"}}}""");
        await Create("/apis/storage.k8s.io/v1/storageclasses", "x", """{"metadata":{"name":"x"},"provisioner":"dolly.example"}""");
    }

    private static string BodyFor(string method, Kind kind) => method switch
    {
        "PATCH" => """{"metadata":{"labels":{"pwned":"true"}}}""",
        "PUT" or "POST" => kind.Body,
        _ => "",
    };

    private static string ContentTypeFor(string method) => method == "PATCH" ? "application/merge-patch+json" : "application/json";

    /// <summary>Sends each case and collects every way it went wrong (code, body shape, or any change in the store).</summary>
    private async Task<List<string>> RunAsync(IEnumerable<(string Method, string Target, int Expected, string? MessagePrefix, Kind Kind)> cases)
    {
        await EnsureObjectsAsync();
        var failures = new List<string>();
        int count = 0;
        foreach (var (method, target, expected, prefix, kind) in cases)
        {
            count++;
            var before = StoreDump.Read(fx);
            string body = BodyFor(method, kind);
            var response = await RawHttp.SendAsync(fx, method, target, body.Length == 0 ? null : body, ContentTypeFor(method), Ct);
            var after = StoreDump.Read(fx);
            string what = method + " " + target;
            if (response.Code != expected)
            {
                failures.Add(what + ": " + response.Code + " (expected " + expected + "): " + response.Body);
            }

            if (before.Revision != after.Revision || before.Changed(after).Count > 0)
            {
                failures.Add(what + ": the store changed (revision " + before.Revision + " -> " + after.Revision + ")");
            }

            if (expected == 404)
            {
                // Like kube-apiserver's mux for a path no route matches.
                if (response.Body != "404 page not found\n")
                {
                    failures.Add(what + ": not the plain 404 body: " + response.Body);
                }

                continue;
            }

            using var status = JsonDocument.Parse(response.Body);
            var root = status.RootElement;
            string reason = expected switch { 400 => "BadRequest", 405 => "MethodNotAllowed", _ => "?" };
            if (root.GetProperty("kind").GetString() != "Status" || root.GetProperty("code").GetInt32() != expected ||
                root.GetProperty("reason").GetString() != reason || root.GetProperty("status").GetString() != "Failure")
            {
                failures.Add(what + ": not a " + expected + " " + reason + " Status: " + response.Body);
            }

            if (prefix is not null && !root.GetProperty("message").GetString()!.StartsWith(prefix, StringComparison.Ordinal))
            {
                failures.Add(what + ": message does not start with '" + prefix + "': " + response.Body);
            }
        }

        Assert.True(count > 0);
        return failures;
    }

    private static string NameMessage(string rawName) => rawName.Length == 0 ? "name must be provided" : "Name parameter invalid: \"";

    private static string NamespaceMessage(string rawNs) => rawNs.Length == 0 ? "Namespace parameter required." : "Namespace parameter invalid: \"";

    private static string Collection(Kind k) => k.Prefix + (k.Namespaced ? "/namespaces/victim/" : "/") + k.Plural;

    /// <summary>
    /// A bad name where the object name goes: every route that exists refuses it with 400 before any storage is
    /// touched (the storage key function's check); a verb the route lacks is 405, as from kube-apiserver's mux.
    /// </summary>
    [Theory]
    [MemberData(nameof(KindNames))]
    public async Task BadName_IsRefused_AndNothingChanges(string plural)
    {
        var kind = Kinds[plural];
        var cases =
            from name in BadNames
            from method in Methods
            let expected = method == "POST" || (kind.ReadOnly && method != "GET") ? 405 : 400
            select (method, Collection(kind) + "/" + name, expected, expected == 400 ? NameMessage(name) : null, kind);
        Assert.Empty(await RunAsync(cases));
    }

    /// <summary>The same on the status subresource, for kinds that have one.</summary>
    [Theory]
    [MemberData(nameof(KindNames))]
    public async Task BadName_OnStatus_IsRefused_AndNothingChanges(string plural)
    {
        var kind = Kinds[plural];
        var cases =
            from name in BadNames
            from method in Methods
            let expected = !kind.HasStatus ? 404 : method is "GET" or "PUT" or "PATCH" ? 400 : 405
            select (method, Collection(kind) + "/" + name + "/status", expected, expected == 400 ? NameMessage(name) : null, kind);
        Assert.Empty(await RunAsync(cases));
    }

    /// <summary>A bad namespace, in item and collection paths.</summary>
    [Theory]
    [MemberData(nameof(NamespacedKindNames))]
    public async Task BadNamespace_IsRefused_AndNothingChanges(string plural)
    {
        var kind = Kinds[plural];
        var items =
            from ns in BadNames
            from method in Methods
            let expected = method == "POST" ? 405 : 400
            select (method, kind.Prefix + "/namespaces/" + ns + "/" + plural + "/x", expected, expected == 400 ? NamespaceMessage(ns) : null, kind);
        var collections =
            from ns in BadNames
            from method in Methods
            let expected = method is "PUT" or "PATCH" ? 405 : 400
            select (method, kind.Prefix + "/namespaces/" + ns + "/" + plural, expected, expected == 400 ? NamespaceMessage(ns) : null, kind);
        Assert.Empty(await RunAsync(items.Concat(collections)));
    }

    /// <summary>
    /// Dot segments, encoded slashes and empty segments anywhere else (after the name, before the kind, in the
    /// group or version) leave a path no route matches: 404, never the object the collapsed path would name.
    /// </summary>
    [Theory]
    [MemberData(nameof(KindNames))]
    public async Task DotSegmentsElsewhere_AreNotFound_AndNothingChanges(string plural)
    {
        var kind = Kinds[plural];
        string c = Collection(kind);
        string version = kind.Prefix.Split('/')[^1];
        string groupPart = kind.Prefix[..kind.Prefix.LastIndexOf('/')];
        var targets = new List<string>
        {
            c + "/x/%2e%2e/y", c + "/x/%2E%2E/victim", c + "/x/../y", c + "/x/%2e%2e", c + "/x/.", c + "/x/%2e", c + "/x/%2F",
            c + "//x", c + "/x/", c + "/x//", c + "/%2e%2e/%2e%2e",
            groupPart + "/%2e%2e/" + version + "/" + plural, groupPart + "//" + version + "/" + plural + "/x",
            "/" + kind.Prefix + "/" + plural + "/x", kind.Prefix + "/%2e%2e/" + plural + "/x",
        };
        if (kind.Namespaced)
        {
            targets.Add(kind.Prefix + "/namespaces/victim/%2e%2e/" + plural + "/x");
            targets.Add(kind.Prefix + "/namespaces/victim/./" + plural + "/x");
            targets.Add(kind.Prefix + "/namespaces/victim%2F" + plural + "/x");
        }

        var cases = from target in targets from method in Methods select (method, target, 404, (string?)null, kind);
        Assert.Empty(await RunAsync(cases));
    }

    /// <summary>The three requests from the report, each refused with its Status and no change anywhere.</summary>
    [Fact]
    public async Task ReportedRequests_NoLongerReachTheNamespaceOrAnotherConfigMap()
    {
        await EnsureObjectsAsync();
        foreach (var (method, target, code, message) in new[]
        {
            ("DELETE", "/api/v1/namespaces/victim/configmaps/%2e%2e", 400, "Name parameter invalid: \"..\": may not be '..'"),
            ("GET", "/api/v1/namespaces/victim/configmaps/%2e%2e", 400, "Name parameter invalid: \"..\": may not be '..'"),
            ("DELETE", "/api/v1/namespaces/victim/configmaps/x/%2e%2e/y", 404, null),
            ("DELETE", "/api/v1/namespaces/victim/configmaps/a%2Fb%25", 400, "Name parameter invalid: \"a/b%\": may not contain '/';may not contain '%'"),
        })
        {
            var before = StoreDump.Read(fx);
            var r = await RawHttp.SendAsync(fx, method, target, ct: Ct);
            Assert.Equal(code, r.Code);
            if (message is not null)
            {
                using var doc = JsonDocument.Parse(r.Body);
                Assert.Equal(message, doc.RootElement.GetProperty("message").GetString());
                Assert.Equal("BadRequest", doc.RootElement.GetProperty("reason").GetString());
            }

            var after = StoreDump.Read(fx);
            Assert.Equal(before.Revision, after.Revision);
            Assert.Empty(before.Changed(after));
        }

        Assert.Equal(200, (await RawHttp.SendAsync(fx, "GET", "/api/v1/namespaces/victim/configmaps/y", ct: Ct)).Code);
        Assert.Equal(200, (await RawHttp.SendAsync(fx, "GET", "/api/v1/namespaces/victim", ct: Ct)).Code);
    }

    /// <summary>The raw client and the store dump see a legitimate change, so the refusals above are real.</summary>
    [Fact]
    public async Task CleanPath_ChangesExactlyTheObjectItNames()
    {
        await EnsureObjectsAsync();
        var created = await RawHttp.SendAsync(fx, "POST", "/api/v1/namespaces/victim/configmaps", """{"metadata":{"name":"doomed"}}""", ct: Ct);
        Assert.Equal(201, created.Code);
        var before = StoreDump.Read(fx);
        var deleted = await RawHttp.SendAsync(fx, "DELETE", "/api/v1/namespaces/victim/configmaps/doomed", ct: Ct);
        Assert.Equal(200, deleted.Code);
        var after = StoreDump.Read(fx);
        Assert.Equal(("/configmaps", "victim", "doomed"), Assert.Single(before.Changed(after)));
        Assert.Equal(before.Revision + 1, after.Revision);
    }

    [GeneratedRegex("^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")]
    private static partial Regex PlainSegment();

    /// <summary>
    /// What a path names when every segment is a plain name (no escape, no dot segment, nothing empty): the
    /// resource key, and the namespace and name when given (null means the whole collection). Null when the path
    /// has any other segment, so that request may change nothing.
    /// </summary>
    private static (string Resource, string? Namespace, string? Name)? Named(string target)
    {
        var segments = (target.StartsWith('/') ? target[1..] : target).Split('/');
        if (!segments.All(s => PlainSegment().IsMatch(s)))
        {
            return null;
        }

        bool core = segments[0] == "api";
        int gv = core ? 2 : 3;
        if (segments[0] is not ("api" or "apis") || segments.Length <= gv)
        {
            return null;
        }

        string group = core ? "" : segments[1];
        var rest = segments[gv..];
        string? ns = null;
        if (rest[0] == "namespaces" && rest.Length >= 3 && rest[2] is not ("status" or "finalize"))
        {
            ns = rest[1];
            rest = rest[2..];
        }

        return (group + "/" + rest[0], ns, rest.Length >= 2 ? rest[1] : null);
    }

    /// <summary>
    /// Random paths built from names, dot segments, escapes and empty segments, with every verb: whatever the
    /// server answers, the only objects that may change are the one the path names (or, for a collection, the
    /// objects in it). The namespaces are default and kube-system, which the server never deletes, so a clean
    /// DELETE of a namespace cannot legitimately remove its contents.
    /// </summary>
    [Fact]
    public async Task RandomPaths_NeverChangeAnObjectTheyDoNotName()
    {
        string[] prefixes = ["/api/v1", "/api/v1/namespaces/default", "/api/v1/namespaces/kube-system", "/apis/storage.k8s.io/v1", "/api", ""];
        string[] tokens =
        [
            "default", "kube-system", "x", "y", "configmaps", "namespaces", "storageclasses", "status", "finalize", "v1", "api",
            "..", ".", "%2e%2e", "%2E%2e", "%2e", "%2F", "%2f", "x%2Fy", "%2fdefault", "%25", "%2e%2e%2f", "",
        ];
        var gen = Gen.Select(Gen.OneOf(prefixes), Gen.OneOf(tokens).Array[1, 5], Gen.OneOf("GET", "DELETE", "PATCH", "PUT"));
        await gen.SampleAsync(async (prefix, parts, method) =>
        {
            foreach (var ns in new[] { "default", "kube-system" })
            {
                foreach (var cm in new[] { "x", "y" })
                {
                    var found = await RawHttp.SendAsync(fx, "GET", "/api/v1/namespaces/" + ns + "/configmaps/" + cm, ct: Ct);
                    if (found.Code == 404)
                    {
                        var created = await RawHttp.SendAsync(fx, "POST", "/api/v1/namespaces/" + ns + "/configmaps", "{\"metadata\":{\"name\":\"" + cm + "\"}}", ct: Ct);
                        Assert.Equal(201, created.Code);
                    }
                }
            }

            string target = prefix + "/" + string.Join('/', parts);
            string? body = method switch
            {
                "PATCH" => """{"metadata":{"labels":{"touched":"true"}}}""",
                "PUT" => """{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"x"},"data":{"touched":"true"}}""",
                _ => null,
            };
            var before = StoreDump.Read(fx);
            var response = await RawHttp.SendAsync(fx, method, target, body, ContentTypeFor(method), Ct);
            var changed = before.Changed(StoreDump.Read(fx));
            var named = Named(target);
            foreach (var (resource, ns, name) in changed)
            {
                Assert.True(named is { } n && n.Resource == resource && (n.Namespace is null || n.Namespace == ns) && (n.Name is null || n.Name == name),
                    method + " " + target + " answered " + response.Code + " and changed " + resource + " " + ns + "/" + name);
            }
        }, iter: 300, threads: 1);
    }
}
