using k8s;
using k8s.Models;

namespace Dolly.Api.Tests;

/// <summary>Objects, uids and resourceVersions survive a restart; credentials are reused.</summary>
public sealed class RestartTests(ServerFixture fx) : IClassFixture<ServerFixture>
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    [Fact]
    public async Task Restart_KeepsObjectsUidsRevisionsAndCredentials()
    {
        string token = fx.Token;
        string ca = await File.ReadAllTextAsync(fx.Server.CaCertificatePath, Ct);
        string uid, rv;
        using (var client = fx.Client())
        {
            await client.CoreV1.CreateNamespaceAsync(new V1Namespace { Metadata = new V1ObjectMeta { Name = "durable" } }, cancellationToken: Ct);
            var pvc = await client.CoreV1.CreateNamespacedPersistentVolumeClaimAsync(new V1PersistentVolumeClaim
            {
                Metadata = new V1ObjectMeta { Name = "keep" },
                Spec = new V1PersistentVolumeClaimSpec
                {
                    AccessModes = ["ReadWriteOnce"],
                    Resources = new V1VolumeResourceRequirements { Requests = new Dictionary<string, ResourceQuantity> { ["storage"] = new("2Gi") } },
                },
            }, "durable", cancellationToken: Ct);
            uid = pvc.Metadata.Uid;
            rv = pvc.Metadata.ResourceVersion;
        }

        await fx.RestartAsync();
        Assert.Equal(token, fx.Token);
        Assert.Equal(ca, await File.ReadAllTextAsync(fx.Server.CaCertificatePath, Ct));
        using (var client = fx.Client())
        {
            var pvc = await client.CoreV1.ReadNamespacedPersistentVolumeClaimAsync("keep", "durable", cancellationToken: Ct);
            Assert.Equal(uid, pvc.Metadata.Uid);
            Assert.Equal(rv, pvc.Metadata.ResourceVersion);
            Assert.Equal("2Gi", pvc.Spec.Resources.Requests["storage"].ToString());
            pvc.Metadata.Labels = new Dictionary<string, string> { ["after"] = "restart" };
            var updated = await client.CoreV1.ReplaceNamespacedPersistentVolumeClaimAsync(pvc, "keep", "durable", cancellationToken: Ct);
            Assert.True(long.Parse(updated.Metadata.ResourceVersion, System.Globalization.CultureInfo.InvariantCulture) > long.Parse(rv, System.Globalization.CultureInfo.InvariantCulture));
        }

        var r = (await fx.KubectlAsync("get", "pvc", "keep", "-n", "durable", "-o", "jsonpath={.metadata.labels.after}")).ShouldSucceed();
        Assert.Equal("restart", r.Stdout);
        var crds = (await fx.KubectlAsync("get", "crd", "-o", "name")).ShouldSucceed();
        Assert.Equal(Dolly.Api.Resources.ResourceRegistry.BootstrapCrds().Count, crds.Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries).Length);
    }

    [Fact]
    public async Task Restart_ServesAShippedCrdVersionTheStoredDefinitionLacks()
    {
        // State written before groupsnapshot v1beta2 shipped: the stored definition serves v1 only.
        const string Crd = "volumegroupsnapshotclasses.groupsnapshot.storage.k8s.io";
        string v1 = (await fx.KubectlAsync("get", "crd", Crd, "-o", "jsonpath={.spec.versions[?(@.name==\"v1\")]}")).ShouldSucceed().Stdout;
        var only = System.Text.Json.Nodes.JsonNode.Parse(v1)!.AsObject();
        only["storage"] = true;
        string patch = new System.Text.Json.Nodes.JsonArray(new System.Text.Json.Nodes.JsonObject { ["op"] = "replace", ["path"] = "/spec/versions", ["value"] = new System.Text.Json.Nodes.JsonArray(only) }).ToJsonString();
        (await fx.KubectlAsync("patch", "crd", Crd, "--type=json", "-p", patch)).ShouldSucceed();
        (await fx.KubectlWithInputAsync("apiVersion: groupsnapshot.storage.k8s.io/v1\nkind: VolumeGroupSnapshotClass\nmetadata: {name: old-class}\ndriver: csi.dolly.io\ndeletionPolicy: Retain\n", "apply", "-f", "-")).ShouldSucceed();
        Assert.NotEqual(0, (await fx.KubectlAsync("get", "volumegroupsnapshotclasses.v1beta2.groupsnapshot.storage.k8s.io", "old-class")).ExitCode);

        await fx.RestartAsync();
        var names = (await fx.KubectlAsync("get", "crd", Crd, "-o", "jsonpath={.spec.versions[*].name}")).ShouldSucceed();
        Assert.Equal(["v1", "v1beta2"], names.Stdout.Split(' ').Order(StringComparer.Ordinal));
        var kept = (await fx.KubectlAsync("get", "volumegroupsnapshotclasses.v1beta2.groupsnapshot.storage.k8s.io", "old-class", "-o", "jsonpath={.apiVersion} {.deletionPolicy}")).ShouldSucceed();
        Assert.Equal("groupsnapshot.storage.k8s.io/v1beta2 Retain", kept.Stdout);
    }

    [Fact]
    public async Task Crash_AcknowledgedWritesSurvive_WhenTheFilesAreTakenAsTheyAreOnDisk()
    {
        using var client = fx.Client();
        await client.CoreV1.CreateNamespaceAsync(new V1Namespace { Metadata = new V1ObjectMeta { Name = "crash" } }, cancellationToken: Ct);
        for (int i = 0; i < 20; i++)
        {
            await client.CreateLeaseAsync("crash", "lease-" + i);
        }

        var last = await client.CoordinationV1.ReadNamespacedLeaseAsync("lease-19", "crash", cancellationToken: Ct);

        // A process kill leaves exactly what is in the files: copy them while the server still runs, as a crash would
        // leave them (no checkpoint, no clean close), and open the copy.
        string crashed = Path.Combine(Path.GetTempPath(), "dolly-api-crash-" + Guid.NewGuid().ToString("N")[..8]);
        Directory.CreateDirectory(crashed);
        try
        {
            foreach (var file in Directory.GetFiles(fx.StateDirectory).Where(f => !f.EndsWith("api.lock", StringComparison.Ordinal)))
            {
                File.Copy(file, Path.Combine(crashed, Path.GetFileName(file)));
            }

            await using var reopened = new ApiServer(ServerFixture.DefaultOptions(crashed));
            await reopened.StartAsync(Ct);
            using var client2 = new Kubernetes(KubernetesClientConfiguration.BuildConfigFromConfigFile(reopened.KubeconfigPath));
            var leases = await client2.CoordinationV1.ListNamespacedLeaseAsync("crash", cancellationToken: Ct);
            Assert.Equal(20, leases.Items.Count);
            var lease = await client2.CoordinationV1.ReadNamespacedLeaseAsync("lease-19", "crash", cancellationToken: Ct);
            Assert.Equal(last.Metadata.Uid, lease.Metadata.Uid);
            Assert.Equal(last.Metadata.ResourceVersion, lease.Metadata.ResourceVersion);
        }
        finally
        {
            Directory.Delete(crashed, recursive: true);
        }
    }
}

internal static class LeaseExtensions
{
    public static Task<V1Lease> CreateLeaseAsync(this Kubernetes client, string ns, string name) =>
        client.CoordinationV1.CreateNamespacedLeaseAsync(new V1Lease
        {
            Metadata = new V1ObjectMeta { Name = name },
            Spec = new V1LeaseSpec { HolderIdentity = "holder", LeaseDurationSeconds = 10 },
        }, ns);
}
