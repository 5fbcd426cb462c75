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
        Assert.Equal(7, crds.Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries).Length);
    }
}
