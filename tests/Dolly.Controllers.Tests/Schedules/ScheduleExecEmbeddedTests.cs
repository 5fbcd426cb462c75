using System.Text.Json;
using Dolly.Controllers.Model;
using Dolly.Controllers.Schedules;
using k8s;
using k8s.Models;

namespace Dolly.Controllers.Tests.Schedules;

/// <summary>
/// Exec hooks where no pod runs a container (the embedded API server of dolly up): a schedule that needs them
/// (onError Fail) takes no snapshot and says why in each claim's result; one whose hooks may all be skipped
/// (onError Continue) takes its snapshots and says the hooks did not run.
/// </summary>
public sealed class ScheduleExecEmbeddedTests : IAsyncLifetime
{
    private const string Ns = "default";

    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    private ControllerHarness? _h;

    private Kubernetes K => _h!.Client;

    public async ValueTask InitializeAsync() => _h = await ControllerHarness.StartAsync("schedule-embedded", Ct, podsRun: false);

    public async ValueTask DisposeAsync()
    {
        if (_h is not null)
        {
            await _h.DisposeAsync();
        }
    }

    [Fact]
    public async Task ExecHooks_WithoutPods_FailOrAreSkipped_AndSaySo()
    {
        var claim = DriverStack.Claim("db", "1Gi");
        claim.Metadata.Labels = new Dictionary<string, string> { ["tier"] = "data" };
        await K.CoreV1.CreateNamespacedPersistentVolumeClaimAsync(claim, Ns, cancellationToken: Ct);
        await Eventually.Until(async () => (await K.CoreV1.ReadNamespacedPersistentVolumeClaimAsync("db", Ns, cancellationToken: Ct)).Status?.Phase == "Bound", "claim bound");

        await ScheduleAsync("strict", "Fail");
        await ScheduleAsync("lenient", "Continue");
        var strict = await Eventually.Until(async () => await ReadAsync("strict") is { Status.Claims: [{ } r] } ? r : null, "the strict run");
        Assert.Equal(("Failed", null), (strict.Result, strict.Snapshot));
        Assert.StartsWith("exec hooks cannot run: this API server (the embedded one of dolly up) runs no pods", strict.Message, StringComparison.Ordinal);
        var lenient = await Eventually.Until(async () => await ReadAsync("lenient") is { Status.Claims: [{ } r] } ? r : null, "the lenient run");
        Assert.Equal("Created", lenient.Result);
        Assert.StartsWith("not run (every hook has onError Continue): exec hooks cannot run", lenient.Hooks, StringComparison.Ordinal);

        var snapshots = KubernetesJson.Deserialize<CustomObjectList<VolumeSnapshot>>(((JsonElement)await K.CustomObjects.ListNamespacedCustomObjectAsync(Names.SnapshotGroup, "v1", Ns, "volumesnapshots", cancellationToken: Ct)).GetRawText());
        Assert.Equal([lenient.Snapshot], snapshots.Items.Select(s => s.Metadata.Name));
    }

    private async Task ScheduleAsync(string name, string onError)
    {
        var hook = new Dictionary<string, object> { ["command"] = new[] { "sync" }, ["onError"] = onError };
        var spec = new Dictionary<string, object>
        {
            ["schedule"] = "@daily",
            ["claimSelector"] = new Dictionary<string, object> { ["matchLabels"] = new Dictionary<string, string> { ["tier"] = "data" } },
            ["hooks"] = new Dictionary<string, object> { ["pre"] = new[] { hook }, ["post"] = new[] { hook } },
        };
        var meta = new Dictionary<string, object> { ["name"] = name, ["annotations"] = new Dictionary<string, string> { [ScheduleNames.RunNowAnnotation] = "" } };
        await K.CustomObjects.CreateNamespacedCustomObjectAsync(
            new Dictionary<string, object> { ["apiVersion"] = ScheduleNames.ApiVersion, ["kind"] = ScheduleNames.NamespacedKind, ["metadata"] = meta, ["spec"] = spec },
            ScheduleNames.Group, ScheduleNames.Version, Ns, ScheduleNames.NamespacedPlural, cancellationToken: Ct);
    }

    private async Task<SnapshotSchedule> ReadAsync(string name) =>
        KubernetesJson.Deserialize<SnapshotSchedule>(((JsonElement)await K.CustomObjects.GetNamespacedCustomObjectAsync(ScheduleNames.Group, ScheduleNames.Version, Ns, ScheduleNames.NamespacedPlural, name, Ct)).GetRawText());
}
