using System.Net;
using System.Text.Json;
using k8s;
using k8s.Autorest;
using k8s.Models;

namespace Dolly.Api.Tests;

/// <summary>The official C# KubernetesClient against the server: CRUD, conflicts, finalizers, GC, watch, paging.</summary>
public sealed class ClientTests(ServerFixture fx) : IClassFixture<ServerFixture>
{
    private const string Group = "snapshot.storage.k8s.io";
    private const string Version = "v1";
    private const string Plural = "volumesnapshots";

    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    private static async Task<string> NamespaceAsync(Kubernetes client, string name)
    {
        await client.CoreV1.CreateNamespaceAsync(new V1Namespace { Metadata = new V1ObjectMeta { Name = name } }, cancellationToken: Ct);
        return name;
    }

    private static V1PersistentVolumeClaim Pvc(string name, string? ns = null) => new()
    {
        Metadata = new V1ObjectMeta { Name = name, NamespaceProperty = ns },
        Spec = new V1PersistentVolumeClaimSpec
        {
            AccessModes = ["ReadWriteOnce"],
            Resources = new V1VolumeResourceRequirements { Requests = new Dictionary<string, ResourceQuantity> { ["storage"] = new("1Gi") } },
        },
    };

    private static Dictionary<string, object> Snapshot(string name, string pvc = "data") => new()
    {
        ["apiVersion"] = "snapshot.storage.k8s.io/v1",
        ["kind"] = "VolumeSnapshot",
        ["metadata"] = new Dictionary<string, object> { ["name"] = name },
        ["spec"] = new Dictionary<string, object> { ["source"] = new Dictionary<string, object> { ["persistentVolumeClaimName"] = pvc } },
    };

    [Fact]
    public async Task Create_SetsServerFieldsAndDefaults()
    {
        using var client = fx.Client();
        string ns = await NamespaceAsync(client, "c-create");
        var created = await client.CoreV1.CreateNamespacedPersistentVolumeClaimAsync(Pvc("p"), ns, cancellationToken: Ct);
        Assert.False(string.IsNullOrEmpty(created.Metadata.Uid));
        Assert.NotNull(created.Metadata.CreationTimestamp);
        Assert.False(string.IsNullOrEmpty(created.Metadata.ResourceVersion));
        Assert.Equal("Filesystem", created.Spec.VolumeMode);
        Assert.Equal("Pending", created.Status.Phase);

        var generated = await client.CoreV1.CreateNamespacedPersistentVolumeClaimAsync(
            new V1PersistentVolumeClaim { Metadata = new V1ObjectMeta { GenerateName = "gen-" }, Spec = Pvc("x").Spec }, ns, cancellationToken: Ct);
        Assert.Matches("^gen-[a-z0-9]{5}$", generated.Metadata.Name);

        var dup = await Assert.ThrowsAsync<HttpOperationException>(() => client.CoreV1.CreateNamespacedPersistentVolumeClaimAsync(Pvc("p"), ns, cancellationToken: Ct));
        Assert.Equal(HttpStatusCode.Conflict, dup.Response.StatusCode);
        Assert.Contains("\"reason\":\"AlreadyExists\"", dup.Response.Content, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Update_WithStaleResourceVersion_Is409Conflict()
    {
        using var client = fx.Client();
        string ns = await NamespaceAsync(client, "c-conflict");
        var pvc = await client.CoreV1.CreateNamespacedPersistentVolumeClaimAsync(Pvc("p"), ns, cancellationToken: Ct);
        var stale = pvc.Metadata.ResourceVersion;
        pvc.Metadata.Labels = new Dictionary<string, string> { ["a"] = "1" };
        var updated = await client.CoreV1.ReplaceNamespacedPersistentVolumeClaimAsync(pvc, "p", ns, cancellationToken: Ct);
        Assert.NotEqual(stale, updated.Metadata.ResourceVersion);

        pvc.Metadata.ResourceVersion = stale;
        pvc.Metadata.Labels["a"] = "2";
        var e = await Assert.ThrowsAsync<HttpOperationException>(() => client.CoreV1.ReplaceNamespacedPersistentVolumeClaimAsync(pvc, "p", ns, cancellationToken: Ct));
        Assert.Equal(HttpStatusCode.Conflict, e.Response.StatusCode);
        using var status = JsonDocument.Parse(e.Response.Content);
        Assert.Equal("Conflict", status.RootElement.GetProperty("reason").GetString());
        Assert.Equal("Operation cannot be fulfilled on persistentvolumeclaims \"p\": the object has been modified; please apply your changes to the latest version and try again",
            status.RootElement.GetProperty("message").GetString());

        // Custom resources refuse unconditional updates.
        await client.CustomObjects.CreateNamespacedCustomObjectAsync(Snapshot("s"), Group, Version, ns, Plural, cancellationToken: Ct);
        var body = Snapshot("s");
        var noRv = await Assert.ThrowsAsync<HttpOperationException>(() => client.CustomObjects.ReplaceNamespacedCustomObjectAsync(body, Group, Version, ns, Plural, "s", cancellationToken: Ct));
        Assert.Equal((HttpStatusCode)422, noRv.Response.StatusCode);
        Assert.Contains("metadata.resourceVersion: Invalid value: 0x0: must be specified for an update", noRv.Response.Content, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Finalizers_DeleteMarksThenRemovalDeletes()
    {
        using var client = fx.Client();
        string ns = await NamespaceAsync(client, "c-finalizers");
        var pvc = Pvc("p");
        pvc.Metadata.Finalizers = ["example.com/protect"];
        await client.CoreV1.CreateNamespacedPersistentVolumeClaimAsync(pvc, ns, cancellationToken: Ct);
        var marked = await client.CoreV1.DeleteNamespacedPersistentVolumeClaimAsync("p", ns, cancellationToken: Ct);
        Assert.NotNull(marked.Metadata.DeletionTimestamp);
        var live = await client.CoreV1.ReadNamespacedPersistentVolumeClaimAsync("p", ns, cancellationToken: Ct);
        Assert.NotNull(live.Metadata.DeletionTimestamp);

        var patch = new V1Patch("""{"metadata":{"finalizers":null}}""", V1Patch.PatchType.MergePatch);
        await client.CoreV1.PatchNamespacedPersistentVolumeClaimAsync(patch, "p", ns, cancellationToken: Ct);
        var gone = await Assert.ThrowsAsync<HttpOperationException>(() => client.CoreV1.ReadNamespacedPersistentVolumeClaimAsync("p", ns, cancellationToken: Ct));
        Assert.Equal(HttpStatusCode.NotFound, gone.Response.StatusCode);
        Assert.Contains("persistentvolumeclaims \\\"p\\\" not found", gone.Response.Content, StringComparison.Ordinal);
    }

    [Fact]
    public async Task OwnerReferences_DependentsAreCollectedWithTheirOwner()
    {
        using var client = fx.Client();
        string ns = await NamespaceAsync(client, "c-gc");
        var owner = await client.CoreV1.CreateNamespacedPersistentVolumeClaimAsync(Pvc("owner"), ns, cancellationToken: Ct);
        var child = Snapshot("child");
        ((Dictionary<string, object>)child["metadata"])["ownerReferences"] = new[]
        {
            new Dictionary<string, object> { ["apiVersion"] = "v1", ["kind"] = "PersistentVolumeClaim", ["name"] = "owner", ["uid"] = owner.Metadata.Uid },
        };
        await client.CustomObjects.CreateNamespacedCustomObjectAsync(child, Group, Version, ns, Plural, cancellationToken: Ct);
        var orphanChild = Snapshot("kept");
        ((Dictionary<string, object>)orphanChild["metadata"])["ownerReferences"] = ((Dictionary<string, object>)child["metadata"])["ownerReferences"];
        await client.CustomObjects.CreateNamespacedCustomObjectAsync(orphanChild, Group, Version, ns, Plural, cancellationToken: Ct);

        // Orphan one dependent first by deleting a second owner with propagationPolicy=Orphan.
        var second = await client.CoreV1.CreateNamespacedPersistentVolumeClaimAsync(Pvc("second"), ns, cancellationToken: Ct);
        var orphaned = Snapshot("orphaned");
        ((Dictionary<string, object>)orphaned["metadata"])["ownerReferences"] = new[]
        {
            new Dictionary<string, object> { ["apiVersion"] = "v1", ["kind"] = "PersistentVolumeClaim", ["name"] = "second", ["uid"] = second.Metadata.Uid },
        };
        await client.CustomObjects.CreateNamespacedCustomObjectAsync(orphaned, Group, Version, ns, Plural, cancellationToken: Ct);
        await client.CoreV1.DeleteNamespacedPersistentVolumeClaimAsync("second", ns, propagationPolicy: "Orphan", cancellationToken: Ct);

        await client.CoreV1.DeleteNamespacedPersistentVolumeClaimAsync("owner", ns, cancellationToken: Ct);
        await Poll.UntilAsync(async () => await Names(client, ns), names => names == "orphaned", TimeSpan.FromSeconds(60));
    }

    private static async Task<string> Names(Kubernetes client, string ns)
    {
        var list = (JsonElement)await client.CustomObjects.ListNamespacedCustomObjectAsync(Group, Version, ns, Plural, cancellationToken: Ct);
        return string.Join(",", list.GetProperty("items").EnumerateArray().Select(i => i.GetProperty("metadata").GetProperty("name").GetString()));
    }

    [Fact]
    public async Task Watch_ResumesFromResourceVersion()
    {
        using var client = fx.Client();
        string ns = await NamespaceAsync(client, "c-watch");
        await client.CoreV1.CreateNamespacedPersistentVolumeClaimAsync(Pvc("before"), ns, cancellationToken: Ct);
        var list = await client.CoreV1.ListNamespacedPersistentVolumeClaimAsync(ns, cancellationToken: Ct);
        string rv = list.Metadata.ResourceVersion;
        await client.CoreV1.CreateNamespacedPersistentVolumeClaimAsync(Pvc("after"), ns, cancellationToken: Ct);
        await client.CoreV1.DeleteNamespacedPersistentVolumeClaimAsync("before", ns, cancellationToken: Ct);

        using var cts = CancellationTokenSource.CreateLinkedTokenSource(Ct);
        cts.CancelAfter(TimeSpan.FromSeconds(60));
        var seen = new List<string>();
        await foreach (var (type, item) in client.CoreV1.WatchListNamespacedPersistentVolumeClaimAsync(ns, resourceVersion: rv, cancellationToken: cts.Token))
        {
            seen.Add(type + " " + item.Metadata.Name);
            if (seen.Count == 2)
            {
                break;
            }
        }

        Assert.Equal(["Added after", "Deleted before"], seen);
    }

    [Fact]
    public async Task Watch_WithoutResourceVersion_SendsCurrentObjectsThenChanges_AndBookmarks()
    {
        using var client = fx.Client();
        string ns = await NamespaceAsync(client, "c-watch2");
        await client.CustomObjects.CreateNamespacedCustomObjectAsync(Snapshot("one"), Group, Version, ns, Plural, cancellationToken: Ct);
        using var cts = CancellationTokenSource.CreateLinkedTokenSource(Ct);
        cts.CancelAfter(TimeSpan.FromSeconds(60));
        var events = new List<string>();
        bool created = false;
        await foreach (var (type, obj) in client.CustomObjects.WatchListNamespacedCustomObjectAsync(Group, Version, ns, Plural, allowWatchBookmarks: true, cancellationToken: cts.Token))
        {
            var item = (JsonElement)obj;
            events.Add(type + (type == WatchEventType.Bookmark ? "" : " " + item.GetProperty("metadata").GetProperty("name").GetString()));
            if (!created && type == WatchEventType.Bookmark)
            {
                created = true;
                await client.CustomObjects.CreateNamespacedCustomObjectAsync(Snapshot("two"), Group, Version, ns, Plural, cancellationToken: Ct);
            }

            if (events.Contains("Added two") && events.Count(e => e == "Bookmark") >= 2)
            {
                break;
            }
        }

        Assert.Equal("Added one", events[0]);
        Assert.Equal("Bookmark", events[1]);
        Assert.Contains("Added two", events);
    }

    [Fact]
    public async Task List_PaginatesWithLimitAndContinue()
    {
        using var client = fx.Client();
        string ns = await NamespaceAsync(client, "c-pages");
        for (int i = 0; i < 7; i++)
        {
            await client.CoreV1.CreateNamespacedPersistentVolumeClaimAsync(Pvc("p" + i), ns, cancellationToken: Ct);
        }

        var names = new List<string>();
        string? token = null;
        int pages = 0;
        do
        {
            var page = await client.CoreV1.ListNamespacedPersistentVolumeClaimAsync(ns, limit: 3, continueParameter: token, cancellationToken: Ct);
            names.AddRange(page.Items.Select(p => p.Metadata.Name));
            token = page.Metadata.ContinueProperty;
            pages++;
            if (token is not null)
            {
                Assert.Equal(7 - names.Count, page.Metadata.RemainingItemCount);
            }
        }
        while (!string.IsNullOrEmpty(token));

        Assert.Equal(3, pages);
        Assert.Equal(["p0", "p1", "p2", "p3", "p4", "p5", "p6"], names);

        var selected = await client.CoreV1.ListNamespacedPersistentVolumeClaimAsync(ns, fieldSelector: "metadata.name=p3", cancellationToken: Ct);
        Assert.Equal("p3", Assert.Single(selected.Items).Metadata.Name);
        var bad = await Assert.ThrowsAsync<HttpOperationException>(() => client.CoreV1.ListNamespacedPersistentVolumeClaimAsync(ns, labelSelector: "a in b", cancellationToken: Ct));
        Assert.Equal(HttpStatusCode.BadRequest, bad.Response.StatusCode);
    }

    [Fact]
    public async Task StrategicMergeOnCustomResource_Is415()
    {
        using var client = fx.Client();
        string ns = await NamespaceAsync(client, "c-415");
        await client.CustomObjects.CreateNamespacedCustomObjectAsync(Snapshot("s"), Group, Version, ns, Plural, cancellationToken: Ct);
        var patch = new V1Patch("""{"metadata":{"labels":{"a":"b"}}}""", V1Patch.PatchType.StrategicMergePatch);
        var e = await Assert.ThrowsAsync<HttpOperationException>(() => client.CustomObjects.PatchNamespacedCustomObjectAsync(patch, Group, Version, ns, Plural, "s", cancellationToken: Ct));
        Assert.Equal(HttpStatusCode.UnsupportedMediaType, e.Response.StatusCode);
        var merge = new V1Patch("""{"metadata":{"labels":{"a":"b"}}}""", V1Patch.PatchType.MergePatch);
        var patched = (JsonElement)await client.CustomObjects.PatchNamespacedCustomObjectAsync(merge, Group, Version, ns, Plural, "s", cancellationToken: Ct);
        Assert.Equal("b", patched.GetProperty("metadata").GetProperty("labels").GetProperty("a").GetString());
    }

    [Fact]
    public async Task Watch_WithLabelSelector_ObjectsEnterAndLeaveAsAddedAndDeleted()
    {
        using var client = fx.Client();
        string ns = await NamespaceAsync(client, "c-watch-sel");
        await client.CoreV1.CreateNamespacedPersistentVolumeClaimAsync(Pvc("p"), ns, cancellationToken: Ct);
        var list = await client.CoreV1.ListNamespacedPersistentVolumeClaimAsync(ns, cancellationToken: Ct);
        using var cts = CancellationTokenSource.CreateLinkedTokenSource(Ct);
        cts.CancelAfter(TimeSpan.FromSeconds(60));
        var on = new V1Patch("""{"metadata":{"labels":{"sel":"yes"}}}""", V1Patch.PatchType.MergePatch);
        var off = new V1Patch("""{"metadata":{"labels":{"sel":"no"}}}""", V1Patch.PatchType.MergePatch);
        await client.CoreV1.PatchNamespacedPersistentVolumeClaimAsync(on, "p", ns, cancellationToken: Ct);
        await client.CoreV1.PatchNamespacedPersistentVolumeClaimAsync(off, "p", ns, cancellationToken: Ct);
        var seen = new List<string>();
        await foreach (var (type, _) in client.CoreV1.WatchListNamespacedPersistentVolumeClaimAsync(ns, labelSelector: "sel=yes",
            resourceVersion: list.Metadata.ResourceVersion, cancellationToken: cts.Token))
        {
            seen.Add(type.ToString());
            if (seen.Count == 2)
            {
                break;
            }
        }

        Assert.Equal(["Added", "Deleted"], seen);
    }
}
