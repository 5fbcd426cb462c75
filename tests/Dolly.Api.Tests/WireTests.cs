using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;

namespace Dolly.Api.Tests;

/// <summary>Raw HTTP: authentication, discovery negotiation, OpenAPI, bad input answered with Status bodies.</summary>
public sealed class WireTests(ServerFixture fx) : IClassFixture<ServerFixture>
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    private static async Task<JsonElement> StatusOf(HttpResponseMessage response)
    {
        Assert.Equal("application/json", response.Content.Headers.ContentType?.MediaType);
        using var doc = JsonDocument.Parse(await response.Content.ReadAsStringAsync(Ct));
        Assert.Equal("Status", doc.RootElement.GetProperty("kind").GetString());
        return doc.RootElement.Clone();
    }

    [Fact]
    public async Task Anonymous_OnlyHealthAndVersion()
    {
        using var http = fx.Http(authenticated: false);
        Assert.Equal("ok", await http.GetStringAsync(new Uri("/healthz", UriKind.Relative), Ct));
        Assert.Equal("ok", await http.GetStringAsync(new Uri("/readyz", UriKind.Relative), Ct));
        using var version = JsonDocument.Parse(await http.GetStringAsync(new Uri("/version", UriKind.Relative), Ct));
        Assert.Equal("32", version.RootElement.GetProperty("minor").GetString());

        foreach (var path in new[] { "/api", "/apis", "/api/v1/namespaces", "/openapi/v3", "/nonsense" })
        {
            using var r = await http.GetAsync(new Uri(path, UriKind.Relative), Ct);
            Assert.Equal(HttpStatusCode.Unauthorized, r.StatusCode);
            var status = await StatusOf(r);
            Assert.Equal("Unauthorized", status.GetProperty("reason").GetString());
            Assert.Equal(401, status.GetProperty("code").GetInt32());
        }

        http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", "wrong");
        using var wrong = await http.GetAsync(new Uri("/api/v1/namespaces", UriKind.Relative), Ct);
        Assert.Equal(HttpStatusCode.Unauthorized, wrong.StatusCode);
    }

    [Fact]
    public async Task Discovery_NegotiatesAggregatedOrLegacy()
    {
        using var http = fx.Http();
        using var v2 = new HttpRequestMessage(HttpMethod.Get, "/apis");
        v2.Headers.TryAddWithoutValidation("Accept", "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json");
        using var r2 = await http.SendAsync(v2, Ct);
        var mediaType = r2.Content.Headers.ContentType!;
        Assert.Equal("application/json", mediaType.MediaType);
        Assert.Equal(["g=apidiscovery.k8s.io", "v=v2", "as=APIGroupDiscoveryList"], mediaType.Parameters.Select(p => p.Name + "=" + p.Value));
        var etag = r2.Headers.ETag!.Tag;
        string body = await r2.Content.ReadAsStringAsync(Ct);
        Assert.Contains("\"resource\":\"volumesnapshots\"", body, StringComparison.Ordinal);

        using var cached = new HttpRequestMessage(HttpMethod.Get, "/apis");
        cached.Headers.TryAddWithoutValidation("Accept", "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList");
        cached.Headers.TryAddWithoutValidation("If-None-Match", etag);
        using var r304 = await http.SendAsync(cached, Ct);
        Assert.Equal(HttpStatusCode.NotModified, r304.StatusCode);

        using var beta = new HttpRequestMessage(HttpMethod.Get, "/api");
        beta.Headers.TryAddWithoutValidation("Accept", "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json");
        using var rb = await http.SendAsync(beta, Ct);
        Assert.Contains("v=v2beta1", rb.Content.Headers.GetValues("Content-Type").Single(), StringComparison.Ordinal);

        using var legacy = JsonDocument.Parse(await http.GetStringAsync(new Uri("/apis/snapshot.storage.k8s.io/v1", UriKind.Relative), Ct));
        var vs = legacy.RootElement.GetProperty("resources").EnumerateArray().First(r => r.GetProperty("name").GetString() == "volumesnapshots");
        Assert.Equal("CBkCoNN1OpA=", vs.GetProperty("storageVersionHash").GetString());
        using var core = JsonDocument.Parse(await http.GetStringAsync(new Uri("/api/v1", UriKind.Relative), Ct));
        var ns = core.RootElement.GetProperty("resources").EnumerateArray().First(r => r.GetProperty("name").GetString() == "namespaces");
        Assert.Equal("Q3oi5N2YM8M=", ns.GetProperty("storageVersionHash").GetString());
    }

    [Fact]
    public async Task OpenApiV3_IndexHashesAndDocuments()
    {
        using var http = fx.Http();
        using var index = JsonDocument.Parse(await http.GetStringAsync(new Uri("/openapi/v3", UriKind.Relative), Ct));
        string url = index.RootElement.GetProperty("paths").GetProperty("apis/snapshot.storage.k8s.io/v1").GetProperty("serverRelativeURL").GetString()!;
        Assert.Matches("hash=[0-9A-F]{128}$", url);
        using var response = await http.GetAsync(new Uri(url, UriKind.Relative), Ct);
        Assert.Equal("public, immutable", response.Headers.CacheControl!.ToString());
        using var doc = JsonDocument.Parse(await response.Content.ReadAsStringAsync(Ct));
        var schema = doc.RootElement.GetProperty("components").GetProperty("schemas").GetProperty("io.k8s.storage.snapshot.v1.VolumeSnapshot");
        Assert.Equal("VolumeSnapshot", schema.GetProperty("x-kubernetes-group-version-kind")[0].GetProperty("kind").GetString());

        using var v2 = new HttpRequestMessage(HttpMethod.Get, "/openapi/v2");
        v2.Headers.TryAddWithoutValidation("Accept", "application/com.github.proto-openapi.spec.v2@v1.0+protobuf");
        using var v2Response = await http.SendAsync(v2, Ct);
        Assert.Equal("application/com.github.proto-openapi.spec.v2.v1.0+protobuf", v2Response.Content.Headers.ContentType!.MediaType);
        var v2Bytes = await v2Response.Content.ReadAsByteArrayAsync(Ct);
        Assert.Equal(new byte[] { 0x0A, 3, (byte)'2', (byte)'.', (byte)'0' }, v2Bytes[..5]);
        using var v2Json = JsonDocument.Parse(await http.GetStringAsync(new Uri("/openapi/v2", UriKind.Relative), Ct));
        Assert.Equal("2.0", v2Json.RootElement.GetProperty("swagger").GetString());

        using var stale = await new HttpClient(new HttpClientHandler { AllowAutoRedirect = false, ServerCertificateCustomValidationCallback = (_, _, _, _) => true })
        {
            BaseAddress = fx.Server.Url,
            DefaultRequestHeaders = { Authorization = new AuthenticationHeaderValue("Bearer", fx.Token) },
        }.GetAsync(new Uri("/openapi/v3/apis/snapshot.storage.k8s.io/v1?hash=0", UriKind.Relative), Ct);
        Assert.Equal(HttpStatusCode.MovedPermanently, stale.StatusCode);
    }

    [Fact]
    public async Task BadInput_AnsweredWithKubernetesStatus()
    {
        using var http = fx.Http();
        using var unknownPath = await http.GetAsync(new Uri("/apis/nope.example.com/v1/things", UriKind.Relative), Ct);
        Assert.Equal(HttpStatusCode.NotFound, unknownPath.StatusCode);
        Assert.Equal("404 page not found\n", await unknownPath.Content.ReadAsStringAsync(Ct));

        using var malformed = await http.PostAsync(new Uri("/api/v1/namespaces/default/persistentvolumeclaims", UriKind.Relative),
            new StringContent("{not json", Encoding.UTF8, "application/json"), Ct);
        Assert.Equal(HttpStatusCode.BadRequest, malformed.StatusCode);
        Assert.Equal("BadRequest", (await StatusOf(malformed)).GetProperty("reason").GetString());

        using var wrongNs = await http.PostAsync(new Uri("/api/v1/namespaces/default/persistentvolumeclaims", UriKind.Relative),
            new StringContent("""{"apiVersion":"v1","kind":"PersistentVolumeClaim","metadata":{"name":"x","namespace":"other"}}""", Encoding.UTF8, "application/json"), Ct);
        Assert.Equal(HttpStatusCode.BadRequest, wrongNs.StatusCode);
        Assert.Contains("does not match the namespace", (await StatusOf(wrongNs)).GetProperty("message").GetString(), StringComparison.Ordinal);

        using var wrongKind = await http.PostAsync(new Uri("/api/v1/namespaces/default/persistentvolumeclaims", UriKind.Relative),
            new StringContent("""{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"x"}}""", Encoding.UTF8, "application/json"), Ct);
        Assert.Equal(HttpStatusCode.BadRequest, wrongKind.StatusCode);

        using var yaml = await http.PostAsync(new Uri("/api/v1/namespaces", UriKind.Relative),
            new StringContent("apiVersion: v1\nkind: Namespace\nmetadata: {name: from-yaml}\n", Encoding.UTF8, "application/yaml"), Ct);
        Assert.Equal(HttpStatusCode.Created, yaml.StatusCode);

        var big = new string('x', 3 * 1024 * 1024 + 10);
        using var tooLarge = await http.PostAsync(new Uri("/api/v1/namespaces", UriKind.Relative),
            new StringContent("{\"a\":\"" + big + "\"}", Encoding.UTF8, "application/json"), Ct);
        Assert.Equal(HttpStatusCode.RequestEntityTooLarge, tooLarge.StatusCode);
        Assert.Equal("Request entity too large: limit is 3145728", (await StatusOf(tooLarge)).GetProperty("message").GetString());

        using var stillServing = await http.GetAsync(new Uri("/api/v1/namespaces/default", UriKind.Relative), Ct);
        Assert.Equal(HttpStatusCode.OK, stillServing.StatusCode);

        using var badRv = await http.GetAsync(new Uri("/api/v1/namespaces?resourceVersionMatch=Exact", UriKind.Relative), Ct);
        Assert.Equal((HttpStatusCode)422, badRv.StatusCode);
        Assert.Equal("ListOptions.meta.k8s.io \"\" is invalid: resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden unless resourceVersion is provided",
            (await StatusOf(badRv)).GetProperty("message").GetString());

        using var badOwner = await http.PostAsync(new Uri("/api/v1/namespaces/default/persistentvolumeclaims", UriKind.Relative),
            new StringContent("""{"apiVersion":"v1","kind":"PersistentVolumeClaim","metadata":{"name":"o","ownerReferences":[{"uid":"u"}]},"spec":{"accessModes":["ReadWriteOnce"],"resources":{"requests":{"storage":"1Gi"}}}}""", Encoding.UTF8, "application/json"), Ct);
        Assert.Equal((HttpStatusCode)422, badOwner.StatusCode);
        Assert.Contains("metadata.ownerReferences.name: Invalid value: \"\": name must not be empty", (await StatusOf(badOwner)).GetProperty("message").GetString(), StringComparison.Ordinal);

        using var created = await http.PostAsync(new Uri("/apis/snapshot.storage.k8s.io/v1/namespaces/default/volumesnapshots", UriKind.Relative),
            new StringContent("""{"metadata":{"name":"wire"},"spec":{"source":{"persistentVolumeClaimName":"a"}}}""", Encoding.UTF8, "application/json"), Ct);
        Assert.StartsWith("{\"apiVersion\":\"snapshot.storage.k8s.io/v1\",\"kind\":\"VolumeSnapshot\",\"metadata\":", await created.Content.ReadAsStringAsync(Ct), StringComparison.Ordinal);
        using var badPatch = await http.PatchAsync(new Uri("/apis/snapshot.storage.k8s.io/v1/namespaces/default/volumesnapshots/wire", UriKind.Relative),
            new StringContent("""[{"op":"replace","path":"/metadata","value":5}]""", Encoding.UTF8, "application/json-patch+json"), Ct);
        Assert.Equal((HttpStatusCode)422, badPatch.StatusCode);
        using var deleted = await http.DeleteAsync(new Uri("/apis/snapshot.storage.k8s.io/v1/namespaces/default/volumesnapshots?labelSelector=none", UriKind.Relative), Ct);
        Assert.Equal(HttpStatusCode.OK, deleted.StatusCode);
        using var all = await http.DeleteAsync(new Uri("/apis/snapshot.storage.k8s.io/v1/namespaces/default/volumesnapshots", UriKind.Relative), Ct);
        using var allDoc = JsonDocument.Parse(await all.Content.ReadAsStringAsync(Ct));
        Assert.Equal("wire", allDoc.RootElement.GetProperty("items")[0].GetProperty("metadata").GetProperty("name").GetString());

        using var badLabel = await http.PostAsync(new Uri("/api/v1/namespaces", UriKind.Relative),
            new StringContent("""{"metadata":{"name":"labelled","labels":{"ok":"-bad-"}}}""", Encoding.UTF8, "application/json"), Ct);
        Assert.Equal((HttpStatusCode)422, badLabel.StatusCode);
        Assert.StartsWith("Namespace \"labelled\" is invalid: metadata.labels: Invalid value: \"-bad-\": a valid label must be", (await StatusOf(badLabel)).GetProperty("message").GetString(), StringComparison.Ordinal);

        using var notAllowed = await http.PostAsync(new Uri("/api/v1/namespaces/default/persistentvolumeclaims/x", UriKind.Relative),
            new StringContent("{}", Encoding.UTF8, "application/json"), Ct);
        Assert.Equal(HttpStatusCode.MethodNotAllowed, notAllowed.StatusCode);

        using var badPolicy = new HttpRequestMessage(HttpMethod.Delete, "/api/v1/namespaces/from-yaml")
        {
            Content = new StringContent("""{"propagationPolicy":"Sideways"}""", Encoding.UTF8, "application/json"),
        };
        using var rp = await http.SendAsync(badPolicy, Ct);
        Assert.Equal((HttpStatusCode)422, rp.StatusCode);
    }

    [Fact]
    public async Task Watch_TooOldResourceVersion_Gets410ErrorEvent()
    {
        using var http = fx.Http();
        // Fill the window beyond its size so revision 1 is gone.
        for (int i = 0; i < 20; i++)
        {
            using var r = await http.PatchAsync(new Uri("/api/v1/namespaces/default", UriKind.Relative),
                new StringContent("{\"metadata\":{\"labels\":{\"n\":\"" + i + "\"}}}", Encoding.UTF8, "application/merge-patch+json"), Ct);
            r.EnsureSuccessStatusCode();
        }

        await fx.RestartAsync(ServerFixture.DefaultOptions(fx.StateDirectory) with { WatchWindow = 16 });
        using var http2 = fx.Http();
        using var response = await http2.GetAsync(new Uri("/api/v1/namespaces?watch=true&resourceVersion=1", UriKind.Relative), HttpCompletionOption.ResponseHeadersRead, Ct);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        using var reader = new StreamReader(await response.Content.ReadAsStreamAsync(Ct));
        var line = await reader.ReadLineAsync(Ct);
        using var ev = JsonDocument.Parse(line!);
        Assert.Equal("ERROR", ev.RootElement.GetProperty("type").GetString());
        Assert.Equal(410, ev.RootElement.GetProperty("object").GetProperty("code").GetInt32());
        Assert.Equal("Expired", ev.RootElement.GetProperty("object").GetProperty("reason").GetString());
        Assert.StartsWith("too old resource version: 1 (", ev.RootElement.GetProperty("object").GetProperty("message").GetString(), StringComparison.Ordinal);
        Assert.Null(await reader.ReadLineAsync(Ct));
    }
}
