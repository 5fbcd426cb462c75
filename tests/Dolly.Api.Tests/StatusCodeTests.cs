using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace Dolly.Api.Tests;

/// <summary>
/// Failures answered with kube-apiserver's status code and Status body (reason, message, details, causes with
/// field paths), checked case by case against what its handlers and validation return; a refused request
/// changes nothing in the store.
/// </summary>
public sealed class StatusCodeTests(ServerFixture fx) : IClassFixture<ServerFixture>
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    private const string Ns = "codes";
    private const string ConfigMaps = "/api/v1/namespaces/" + Ns + "/configmaps";
    private const string Claims = "/api/v1/namespaces/" + Ns + "/persistentvolumeclaims";
    private const string Snapshots = "/apis/snapshot.storage.k8s.io/v1/namespaces/" + Ns + "/volumesnapshots";
    private const string StorageClasses = "/apis/storage.k8s.io/v1/storageclasses";
    private const string Volumes = "/api/v1/persistentvolumes";
    private const string Csi = "\"csi\":{\"driver\":\"csi.dolly.io\",\"volumeHandle\":\"h1\"}";
    private const string Sized = "\"capacity\":{\"storage\":\"1Gi\"},\"accessModes\":[\"ReadWriteOnce\"]";
    private const string AccessModeList = "\"ReadOnlyMany\", \"ReadWriteMany\", \"ReadWriteOnce\", \"ReadWriteOncePod\"";
    private const string PatchRejected = "the server rejected our request due to an error in our request";
    private const string UnknownFormat = "the body of the request was in an unknown format - accepted media types include: ";

    /// <summary>One request and the Status kube-apiserver answers it with.</summary>
    public sealed record Case(
        string Name, string Method, string Path, string ContentType, string Body,
        int Code, string Reason, string Message, string? CauseField = null, string? CauseReason = null, string? CauseMessage = null,
        string? DetailsGroup = null, string? DetailsKind = null, string? DetailsName = null)
    {
        public override string ToString() => Name;
    }

    private static string Claim(string name, string storage) =>
        "{\"metadata\":{\"name\":\"" + name + "\"},\"spec\":{\"accessModes\":[\"ReadWriteOnce\"],\"resources\":{\"requests\":{\"storage\":\"" + storage + "\"}}}}";

    private static Case ClaimSize(string storage, string shown) =>
        new Case("claim requesting " + storage, "POST", Claims, "application/json", Claim("size-" + storage.ToLowerInvariant().Replace("-", "minus", StringComparison.Ordinal), storage), 422, "Invalid",
            "PersistentVolumeClaim \"size-" + storage.ToLowerInvariant().Replace("-", "minus", StringComparison.Ordinal) + "\" is invalid: spec.resources.requests[storage]: Invalid value: \"" + shown + "\": must be greater than zero",
            "spec.resources.requests[storage]", "FieldValueInvalid", "Invalid value: \"" + shown + "\": must be greater than zero",
            DetailsKind: "PersistentVolumeClaim", DetailsName: "size-" + storage.ToLowerInvariant().Replace("-", "minus", StringComparison.Ordinal));

    private static Case ClaimSpec(string name, string spec, string causeField, string causeReason, string causeMessage) =>
        new("claim: " + name, "POST", Claims, "application/json", "{\"metadata\":{\"name\":\"" + name + "\"},\"spec\":" + spec + "}", 422, "Invalid",
            "PersistentVolumeClaim \"" + name + "\" is invalid: " + causeField + ": " + causeMessage, causeField, causeReason, causeMessage,
            DetailsKind: "PersistentVolumeClaim", DetailsName: name);

    private static Case StorageClass(string name, string method, string path, string contentType, string body, string causeField, string causeReason, string causeMessage) =>
        new("storage class " + name + ": " + causeField + " " + causeReason, method, path, contentType, body, 422, "Invalid",
            "StorageClass.storage.k8s.io \"" + name + "\" is invalid: " + causeField + ": " + causeMessage, causeField, causeReason, causeMessage,
            DetailsGroup: "storage.k8s.io", DetailsKind: "StorageClass", DetailsName: name);

    private static Case Volume(string name, string method, string path, string contentType, string body, string causeField, string causeReason, string causeMessage) =>
        new("volume " + name + ": " + causeField + " " + causeReason, method, path, contentType, body, 422, "Invalid",
            "PersistentVolume \"" + name + "\" is invalid: " + causeField + ": " + causeMessage, causeField, causeReason, causeMessage,
            DetailsKind: "PersistentVolume", DetailsName: name);

    public static TheoryData<Case> Cases =>
    [
        // ValidatePersistentVolumeSpec and ValidatePersistentVolumeUpdate.
        Volume("pv-nosource", "POST", Volumes, "application/json", "{\"metadata\":{\"name\":\"pv-nosource\"},\"spec\":{" + Sized + "}}",
            "spec", "FieldValueRequired", "Required value: must specify a volume type"),
        Volume("pv-twosources", "POST", Volumes, "application/json", "{\"metadata\":{\"name\":\"pv-twosources\"},\"spec\":{" + Sized + ",\"hostPath\":{\"path\":\"/srv\"}," + Csi + "}}",
            "spec.csi", "FieldValueForbidden", "Forbidden: may not specify more than 1 volume type"),
        Volume("pv-nomodes", "POST", Volumes, "application/json", "{\"metadata\":{\"name\":\"pv-nomodes\"},\"spec\":{\"capacity\":{\"storage\":\"1Gi\"}," + Csi + "}}",
            "spec.accessModes", "FieldValueRequired", "Required value"),
        Volume("pv-nocapacity", "POST", Volumes, "application/json", "{\"metadata\":{\"name\":\"pv-nocapacity\"},\"spec\":{\"accessModes\":[\"ReadWriteOnce\"]," + Csi + "}}",
            "spec.capacity", "FieldValueRequired", "Required value"),
        Volume("pv-reclaim", "POST", Volumes, "application/json", "{\"metadata\":{\"name\":\"pv-reclaim\"},\"spec\":{" + Sized + ",\"persistentVolumeReclaimPolicy\":\"Keep\"," + Csi + "}}",
            "spec.persistentVolumeReclaimPolicy", "FieldValueNotSupported", "Unsupported value: \"Keep\": supported values: \"Delete\", \"Recycle\", \"Retain\""),
        Volume("codes-pv", "PATCH", Volumes + "/codes-pv", "application/merge-patch+json", """{"spec":{"csi":{"volumeHandle":"h2"}}}""",
            "spec.persistentvolumesource", "FieldValueForbidden", "Forbidden: is immutable after creation"),

        // ValidatePersistentVolumeClaimSpec: access modes, volume mode.
        ClaimSpec("am-none", """{"accessModes":[],"resources":{"requests":{"storage":"1Gi"}}}""",
            "spec.accessModes", "FieldValueRequired", "Required value: at least 1 access mode is required"),
        ClaimSpec("am-bogus", """{"accessModes":["ReadWriteSometimes"],"resources":{"requests":{"storage":"1Gi"}}}""",
            "spec.accessModes", "FieldValueNotSupported", "Unsupported value: \"ReadWriteSometimes\": supported values: " + AccessModeList),
        ClaimSpec("am-rwop-mixed", """{"accessModes":["ReadWriteOncePod","ReadWriteOnce"],"resources":{"requests":{"storage":"1Gi"}}}""",
            "spec.accessModes", "FieldValueForbidden", "Forbidden: may not use ReadWriteOncePod with other access modes"),
        ClaimSpec("vm-bogus", """{"accessModes":["ReadWriteOnce"],"volumeMode":"Raw","resources":{"requests":{"storage":"1Gi"}}}""",
            "spec.volumeMode", "FieldValueNotSupported", "Unsupported value: \"Raw\": supported values: \"Block\", \"Filesystem\""),

        // ValidateStorageClass and ValidateStorageClassUpdate.
        StorageClass("sc-no-provisioner", "POST", StorageClasses, "application/json", """{"metadata":{"name":"sc-no-provisioner"}}""",
            "provisioner", "FieldValueRequired", "Required value"),
        StorageClass("sc-bad-provisioner", "POST", StorageClasses, "application/json", """{"metadata":{"name":"sc-bad-provisioner"},"provisioner":"csi dolly"}""",
            "provisioner", "FieldValueInvalid", "Invalid value: \"csi dolly\": name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"),
        StorageClass("sc-reclaim", "POST", StorageClasses, "application/json", """{"metadata":{"name":"sc-reclaim"},"provisioner":"csi.dolly.io","reclaimPolicy":"Recycle"}""",
            "reclaimPolicy", "FieldValueNotSupported", "Unsupported value: \"Recycle\": supported values: \"Delete\", \"Retain\""),
        StorageClass("sc-binding", "POST", StorageClasses, "application/json", """{"metadata":{"name":"sc-binding"},"provisioner":"csi.dolly.io","volumeBindingMode":"Later"}""",
            "volumeBindingMode", "FieldValueNotSupported", "Unsupported value: \"Later\": supported values: \"Immediate\", \"WaitForFirstConsumer\""),
        StorageClass("sc-binding-empty", "POST", StorageClasses, "application/json", """{"metadata":{"name":"sc-binding-empty"},"provisioner":"csi.dolly.io","volumeBindingMode":""}""",
            "volumeBindingMode", "FieldValueNotSupported", "Unsupported value: \"\": supported values: \"Immediate\", \"WaitForFirstConsumer\""),
        StorageClass("codes-base", "PATCH", StorageClasses + "/codes-base", "application/merge-patch+json", """{"volumeBindingMode":"WaitForFirstConsumer"}""",
            "volumeBindingMode", "FieldValueInvalid", "Invalid value: \"WaitForFirstConsumer\": field is immutable"),
        StorageClass("codes-base", "PATCH", StorageClasses + "/codes-base", "application/merge-patch+json", """{"reclaimPolicy":"Retain"}""",
            "reclaimPolicy", "FieldValueForbidden", "Forbidden: updates to reclaimPolicy are forbidden."),

        // JSON patch: a document that is not a list of operations cannot be decoded (400); an operation that
        // cannot apply is 422 with a fixed message (patch.go: NewGenericServerResponse(422, ...)).
        new Case("json patch: not a list", "PATCH", ConfigMaps + "/base", "application/json-patch+json", """{"op":"add","path":"/data/x","value":"y"}""",
            400, "BadRequest", "json: cannot unmarshal object into Go value of type jsonpatch.Patch"),
        new Case("json patch: missing path", "PATCH", ConfigMaps + "/base", "application/json-patch+json", """[{"op":"replace","path":"/data/missing/deeper","value":"v"}]""",
            422, "Invalid", PatchRejected, CauseField: "patch", CauseMessage: "doc is missing path: \"/data/missing\""),
        new Case("json patch: remove of a missing key", "PATCH", ConfigMaps + "/base", "application/json-patch+json", """[{"op":"remove","path":"/data/nope"}]""",
            422, "Invalid", PatchRejected, CauseField: "patch", CauseMessage: "doc is missing path: \"/data/nope\""),
        new Case("json patch: failed test", "PATCH", ConfigMaps + "/base", "application/json-patch+json", """[{"op":"test","path":"/data/k","value":"other"}]""",
            422, "Invalid", PatchRejected, CauseField: "patch", CauseMessage: "testing value /data/k failed: test failed"),
        new Case("json patch: unknown op", "PATCH", ConfigMaps + "/base", "application/json-patch+json", """[{"op":"frobnicate","path":"/data/k"}]""",
            422, "Invalid", PatchRejected, CauseField: "patch", CauseMessage: "Unexpected kind: frobnicate"),
        new Case("json patch: metadata becomes a number", "PATCH", ConfigMaps + "/base", "application/json-patch+json", """[{"op":"replace","path":"/metadata","value":5}]""",
            422, "Invalid", "", CauseField: "patch", CauseReason: "FieldValueInvalid"),

        // Server-side apply must name its manager; kube-apiserver never infers it from the User-Agent for apply.
        new Case("apply without fieldManager", "PATCH", ConfigMaps + "/base", "application/apply-patch+yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: base}\ndata: {k: applied}\n",
            422, "Invalid", "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
            "fieldManager", "FieldValueRequired", "Required value: is required for apply patch", DetailsGroup: "meta.k8s.io", DetailsKind: "PatchOptions"),
        new Case("apply without fieldManager creating", "PATCH", ConfigMaps + "/fresh", "application/apply-patch+yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: fresh}\n",
            422, "Invalid", "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
            "fieldManager", "FieldValueRequired", "Required value: is required for apply patch", DetailsGroup: "meta.k8s.io", DetailsKind: "PatchOptions"),

        // A claim must ask for more than zero bytes (ValidatePositiveQuantityValue); zero prints canonically.
        ClaimSize("0", "0"),
        ClaimSize("0Gi", "0"),
        ClaimSize("-1Gi", "-1Gi"),
        ClaimSize("-1", "-1"),

        // A body in a media type the server cannot decode is 415 (NegotiateInputSerializer), listing what it can.
        new Case("text/plain create", "POST", ConfigMaps, "text/plain", """{"metadata":{"name":"plain"}}""",
            415, "UnsupportedMediaType", UnknownFormat + "application/json, application/yaml, application/vnd.kubernetes.protobuf"),
        new Case("text/plain update", "PUT", ConfigMaps + "/base", "text/plain", """{"metadata":{"name":"base"},"data":{"k":"plain"}}""",
            415, "UnsupportedMediaType", UnknownFormat + "application/json, application/yaml, application/vnd.kubernetes.protobuf"),
        new Case("text/plain custom resource", "POST", Snapshots, "text/plain", """{"metadata":{"name":"plain"},"spec":{"source":{"persistentVolumeClaimName":"a"}}}""",
            415, "UnsupportedMediaType", UnknownFormat + "application/json, application/yaml"),
        new Case("text/plain delete options", "DELETE", ConfigMaps + "/base", "text/plain", """{"propagationPolicy":"Background"}""",
            415, "UnsupportedMediaType", UnknownFormat + "application/json, application/yaml"),
        new Case("form body", "POST", ConfigMaps, "application/x-www-form-urlencoded", "metadata=x",
            415, "UnsupportedMediaType", UnknownFormat + "application/json, application/yaml, application/vnd.kubernetes.protobuf"),

        // Invalid write options are 422 on the verb's options kind (ValidateCreateOptions, ValidateUpdateOptions...).
        new Case("unsupported fieldValidation", "POST", ConfigMaps + "?fieldValidation=Bogus", "application/json", """{"metadata":{"name":"fv"}}""",
            422, "Invalid", "CreateOptions.meta.k8s.io \"\" is invalid: fieldValidation: Unsupported value: \"Bogus\": supported values: \"\", \"Ignore\", \"Strict\", \"Warn\"",
            "fieldValidation", "FieldValueNotSupported", "Unsupported value: \"Bogus\": supported values: \"\", \"Ignore\", \"Strict\", \"Warn\"",
            DetailsGroup: "meta.k8s.io", DetailsKind: "CreateOptions"),
        new Case("unsupported dryRun on update", "PUT", ConfigMaps + "/base?dryRun=Some", "application/json", """{"metadata":{"name":"base"},"data":{"k":"dry"}}""",
            422, "Invalid", "UpdateOptions.meta.k8s.io \"\" is invalid: dryRun: Unsupported value: []string{\"Some\"}: supported values: \"All\"",
            "dryRun", "FieldValueNotSupported", "Unsupported value: []string{\"Some\"}: supported values: \"All\"",
            DetailsGroup: "meta.k8s.io", DetailsKind: "UpdateOptions"),

        // A method the route lacks: the router's fixed 405 with empty details.
        new Case("POST on an item", "POST", ConfigMaps + "/base", "application/json", """{"metadata":{"name":"base"}}""",
            405, "MethodNotAllowed", "the server does not allow this method on the requested resource"),
        new Case("PUT on a collection", "PUT", ConfigMaps, "application/json", """{"metadata":{"name":"base"}}""",
            405, "MethodNotAllowed", "the server does not allow this method on the requested resource"),
    ];

    private async Task EnsureBaseAsync(HttpClient http)
    {
        using var ns = await http.PostAsync(new Uri("/api/v1/namespaces", UriKind.Relative),
            new StringContent("{\"metadata\":{\"name\":\"" + Ns + "\"}}", Encoding.UTF8, "application/json"), Ct);
        Assert.True(ns.StatusCode is HttpStatusCode.Created or HttpStatusCode.Conflict);
        using var cm = await http.PostAsync(new Uri(ConfigMaps, UriKind.Relative),
            new StringContent("""{"metadata":{"name":"base"},"data":{"k":"v"}}""", Encoding.UTF8, "application/json"), Ct);
        Assert.True(cm.StatusCode is HttpStatusCode.Created or HttpStatusCode.Conflict);
        using var sc = await http.PostAsync(new Uri(StorageClasses, UriKind.Relative),
            new StringContent("""{"metadata":{"name":"codes-base"},"provisioner":"csi.dolly.io"}""", Encoding.UTF8, "application/json"), Ct);
        Assert.True(sc.StatusCode is HttpStatusCode.Created or HttpStatusCode.Conflict);
        using var pv = await http.PostAsync(new Uri(Volumes, UriKind.Relative),
            new StringContent("{\"metadata\":{\"name\":\"codes-pv\"},\"spec\":{" + Sized + "," + Csi + "}}", Encoding.UTF8, "application/json"), Ct);
        Assert.True(pv.StatusCode is HttpStatusCode.Created or HttpStatusCode.Conflict);
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public async Task Refusal_HasKubeApiserversCodeAndStatus_AndChangesNothing(Case c)
    {
        using var http = fx.Http();
        await EnsureBaseAsync(http);
        var before = StoreDump.Read(fx);
        using var request = new HttpRequestMessage(new HttpMethod(c.Method), c.Path)
        {
            Content = new ByteArrayContent(Encoding.UTF8.GetBytes(c.Body)),
        };
        request.Content.Headers.ContentType = MediaTypeHeaderValue.Parse(c.ContentType);
        // A client name the server could take as field manager: apply must still refuse to infer one.
        request.Headers.UserAgent.ParseAdd("kubectl/v1.32.0");
        using var response = await http.SendAsync(request, Ct);
        string text = await response.Content.ReadAsStringAsync(Ct);
        var after = StoreDump.Read(fx);

        Assert.True(c.Code == (int)response.StatusCode, c.Name + ": " + (int)response.StatusCode + " " + text);
        Assert.Equal("application/json", response.Content.Headers.ContentType?.MediaType);
        var status = JsonNode.Parse(text)!.AsObject();
        Assert.Equal("Status", (string?)status["kind"]);
        Assert.Equal("v1", (string?)status["apiVersion"]);
        Assert.Equal("Failure", (string?)status["status"]);
        Assert.Equal(c.Code, (int?)status["code"]);
        Assert.Equal(c.Reason, (string?)status["reason"]);
        string message = (string?)status["message"] ?? "";
        if (c.Message.Length == 0)
        {
            // The undecodable patched object is quoted whole in the message; its shape is what matters.
            Assert.StartsWith(" \"\" is invalid: patch: Invalid value: \"{", message, StringComparison.Ordinal);
            Assert.Contains("json: cannot unmarshal number into Go struct field ConfigMap.metadata of type v1.ObjectMeta", message, StringComparison.Ordinal);
        }
        else
        {
            Assert.Equal(c.Message, message);
        }

        var details = status["details"] as JsonObject;
        Assert.Equal(c.DetailsGroup, (string?)details?["group"]);
        Assert.Equal(c.DetailsKind, (string?)details?["kind"]);
        Assert.Equal(c.DetailsName, (string?)details?["name"]);
        if (c.CauseField is not null || c.CauseMessage is not null)
        {
            var cause = Assert.Single(details!["causes"]!.AsArray())!.AsObject();
            Assert.Equal(c.CauseField, (string?)cause["field"]);
            Assert.Equal(c.CauseReason, (string?)cause["reason"]);
            if (c.CauseMessage is not null)
            {
                Assert.Equal(c.CauseMessage, (string?)cause["message"]);
            }
        }
        else
        {
            Assert.Null(details?["causes"]);
        }

        Assert.Equal(before.Revision, after.Revision);
        Assert.Empty(before.Changed(after));
    }

    /// <summary>The same requests done right succeed, so each refusal above is about the one thing it tests.</summary>
    [Fact]
    public async Task CorrectedRequests_Succeed()
    {
        using var http = fx.Http();
        await EnsureBaseAsync(http);
        using var patched = await http.PatchAsync(new Uri(ConfigMaps + "/base", UriKind.Relative),
            new StringContent("""[{"op":"test","path":"/data/k","value":"v"},{"op":"add","path":"/data/n","value":"1"}]""", Encoding.UTF8, "application/json-patch+json"), Ct);
        Assert.Equal(HttpStatusCode.OK, patched.StatusCode);

        using var applied = await http.PatchAsync(new Uri(ConfigMaps + "/applied?fieldManager=tester", UriKind.Relative),
            new StringContent("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: applied}\ndata: {k: v}\n", Encoding.UTF8, "application/apply-patch+yaml"), Ct);
        Assert.Equal(HttpStatusCode.Created, applied.StatusCode);
        using var appliedDoc = JsonDocument.Parse(await applied.Content.ReadAsStringAsync(Ct));
        Assert.Equal("tester", appliedDoc.RootElement.GetProperty("metadata").GetProperty("managedFields")[0].GetProperty("manager").GetString());

        using var claim = await http.PostAsync(new Uri(Claims, UriKind.Relative), new StringContent(Claim("small", "1"), Encoding.UTF8, "application/json"), Ct);
        Assert.Equal(HttpStatusCode.Created, claim.StatusCode);

        using var noType = new HttpRequestMessage(HttpMethod.Post, ConfigMaps) { Content = new ByteArrayContent("""{"metadata":{"name":"untyped"}}"""u8.ToArray()) };
        using var untyped = await http.SendAsync(noType, Ct);
        Assert.Equal(HttpStatusCode.Created, untyped.StatusCode);

        // A merge patch's manager still comes from the User-Agent when none is given, as from kube-apiserver.
        using var merge = new HttpRequestMessage(HttpMethod.Patch, ConfigMaps + "/untyped")
        {
            Content = new StringContent("""{"data":{"m":"1"}}""", Encoding.UTF8, "application/merge-patch+json"),
        };
        merge.Headers.UserAgent.ParseAdd("merger/2.0");
        using var merged = await http.SendAsync(merge, Ct);
        Assert.Equal(HttpStatusCode.OK, merged.StatusCode);
        using var mergedDoc = JsonDocument.Parse(await merged.Content.ReadAsStringAsync(Ct));
        Assert.Contains(mergedDoc.RootElement.GetProperty("metadata").GetProperty("managedFields").EnumerateArray(), m => m.GetProperty("manager").GetString() == "merger");
    }

    private async Task<JsonElement> ListAsync(HttpClient http, string query)
    {
        using var r = await http.GetAsync(new Uri("/api/v1/namespaces/exact/configmaps" + query, UriKind.Relative), Ct);
        string text = await r.Content.ReadAsStringAsync(Ct);
        Assert.True(r.StatusCode == HttpStatusCode.OK, text);
        using var doc = JsonDocument.Parse(text);
        return doc.RootElement.Clone();
    }

    private static string Rv(JsonElement list) => list.GetProperty("metadata").GetProperty("resourceVersion").GetString()!;

    private static Dictionary<string, string> DataOf(JsonElement list) =>
        list.GetProperty("items").EnumerateArray().ToDictionary(
            i => i.GetProperty("metadata").GetProperty("name").GetString()!,
            i => i.TryGetProperty("data", out var d) ? d.GetProperty("v").GetString()! : "");

    /// <summary>
    /// resourceVersionMatch=Exact lists the state at that revision while it is kept (the changes since are in the
    /// window), 410 Gone once it is not; a revision newer than the store's is 504 with a ResourceVersionTooLarge cause.
    /// </summary>
    [Fact]
    public async Task ExactResourceVersion_ListsThatRevision_ThenGone()
    {
        using var http = fx.Http();
        async Task Send(HttpMethod method, string path, string? json, string type = "application/json")
        {
            using var req = new HttpRequestMessage(method, path) { Content = json is null ? null : new StringContent(json, Encoding.UTF8, type) };
            using var r = await http.SendAsync(req, Ct);
            Assert.True(r.IsSuccessStatusCode, method + " " + path + ": " + await r.Content.ReadAsStringAsync(Ct));
        }

        const string cms = "/api/v1/namespaces/exact/configmaps";
        await Send(HttpMethod.Post, "/api/v1/namespaces", """{"metadata":{"name":"exact"}}""");
        await Send(HttpMethod.Post, cms, """{"metadata":{"name":"a"},"data":{"v":"1"}}""");
        var first = await ListAsync(http, "");
        string r1 = Rv(first);
        string aRv = first.GetProperty("items")[0].GetProperty("metadata").GetProperty("resourceVersion").GetString()!;

        await Send(HttpMethod.Post, cms, """{"metadata":{"name":"b"},"data":{"v":"1"}}""");
        string r2 = Rv(await ListAsync(http, ""));
        await Send(HttpMethod.Patch, cms + "/a", """{"data":{"v":"2"}}""", "application/merge-patch+json");
        await Send(HttpMethod.Post, "/api/v1/namespaces/default/configmaps", """{"metadata":{"name":"elsewhere"}}""");
        await Send(HttpMethod.Delete, cms + "/b", null);
        await Send(HttpMethod.Post, cms, """{"metadata":{"name":"c"},"data":{"v":"3"}}""");
        var now = await ListAsync(http, "");

        var atR1 = await ListAsync(http, "?resourceVersion=" + r1 + "&resourceVersionMatch=Exact");
        Assert.Equal(r1, Rv(atR1));
        Assert.Equal(new Dictionary<string, string> { ["a"] = "1" }, DataOf(atR1));
        Assert.Equal(aRv, atR1.GetProperty("items")[0].GetProperty("metadata").GetProperty("resourceVersion").GetString());

        var atR2 = await ListAsync(http, "?resourceVersion=" + r2 + "&resourceVersionMatch=Exact");
        Assert.Equal(r2, Rv(atR2));
        Assert.Equal(new Dictionary<string, string> { ["a"] = "1", ["b"] = "1" }, DataOf(atR2));

        var notOlder = await ListAsync(http, "?resourceVersion=" + r1 + "&resourceVersionMatch=NotOlderThan");
        Assert.Equal(new Dictionary<string, string> { ["a"] = "2", ["c"] = "3" }, DataOf(notOlder));
        Assert.Equal(DataOf(now), DataOf(await ListAsync(http, "?resourceVersion=" + Rv(now) + "&resourceVersionMatch=Exact")));

        long future = long.Parse(Rv(now), System.Globalization.CultureInfo.InvariantCulture) + 1000;
        using (var tooNew = await http.GetAsync(new Uri(cms + "?resourceVersion=" + future + "&resourceVersionMatch=Exact", UriKind.Relative), Ct))
        {
            Assert.Equal(HttpStatusCode.GatewayTimeout, tooNew.StatusCode);
            var status = JsonNode.Parse(await tooNew.Content.ReadAsStringAsync(Ct))!;
            Assert.Equal("Timeout", (string?)status["reason"]);
            Assert.StartsWith("Timeout: Too large resource version: " + future + ", current: ", (string?)status["message"], StringComparison.Ordinal);
            Assert.Equal("ResourceVersionTooLarge", (string?)status["details"]!["causes"]![0]!["reason"]);
            Assert.Equal(1, (int?)status["details"]!["retryAfterSeconds"]);
        }

        // History is not kept across a restart (as after an etcd compaction): the old revision is gone.
        await fx.RestartAsync();
        using var http2 = fx.Http();
        using var gone = await http2.GetAsync(new Uri(cms + "?resourceVersion=" + r1 + "&resourceVersionMatch=Exact", UriKind.Relative), Ct);
        Assert.Equal(HttpStatusCode.Gone, gone.StatusCode);
        var goneStatus = JsonNode.Parse(await gone.Content.ReadAsStringAsync(Ct))!;
        Assert.Equal("Expired", (string?)goneStatus["reason"]);
        Assert.Equal("The resourceVersion for the provided list is too old.", (string?)goneStatus["message"]);
    }
}
