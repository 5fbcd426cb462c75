using System.Globalization;
using System.Net;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Dolly.Controllers.Model;
using Dolly.Controllers.Runtime;
using k8s;
using k8s.Models;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Time.Testing;

namespace Dolly.Controllers.Tests;

/// <summary>
/// Times the controllers write come from their TimeProvider, never the wall clock: event first/last timestamps (and
/// the count of a repeat), the resizer's FileSystemResizePending condition and a group snapshot's error time. The
/// fake clock starts years ahead of the real one, so a wall-clock time cannot pass for it.
/// </summary>
public sealed class ControllerClockTests
{
    private static readonly DateTimeOffset Start = new(2031, 3, 4, 5, 6, 7, TimeSpan.Zero);

    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    /// <summary>Answers the event writes of <see cref="EventRecorder"/> as the API server would, and keeps their bodies.</summary>
    private sealed class EventApi : DelegatingHandler
    {
        public List<(HttpMethod Method, string Path, JsonNode Body)> Requests { get; } = [];

        protected override async Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken)
        {
            string text = request.Content is null ? "{}" : await request.Content.ReadAsStringAsync(cancellationToken);
            var body = JsonNode.Parse(text)!;
            Requests.Add((request.Method, request.RequestUri!.AbsolutePath, body));
            if (request.Method == HttpMethod.Post)
            {
                body["metadata"]!["name"] = body["metadata"]!["generateName"]!.GetValue<string>() + "abcde";
            }

            return new HttpResponseMessage(HttpStatusCode.OK) { RequestMessage = request, Content = new StringContent(body.ToJsonString(), Encoding.UTF8, "application/json") };
        }
    }

    private static string Stamp(DateTimeOffset t) => t.UtcDateTime.ToString("yyyy-MM-ddTHH:mm:ssZ", CultureInfo.InvariantCulture);

    [Fact]
    public async Task EventRecorder_StampsEventsAndRepeatsWithItsClock()
    {
        var clock = new FakeTimeProvider(Start);
        var api = new EventApi();
        using var client = new Kubernetes(new KubernetesClientConfiguration { Host = "http://127.0.0.1:9" }, api);
        var recorder = new EventRecorder(client, "dolly-controllers", "test", NullLogger.Instance, clock);
        var claim = new V1PersistentVolumeClaim { ApiVersion = "v1", Kind = "PersistentVolumeClaim", Metadata = new V1ObjectMeta { Name = "db", NamespaceProperty = "apps", Uid = "u1" } };

        await recorder.RecordAsync(claim, EventRecorder.Warning, "ProvisioningFailed", "no room", Ct);
        var (method, path, created) = Assert.Single(api.Requests);
        Assert.Equal((HttpMethod.Post, "/api/v1/namespaces/apps/events"), (method, path));
        Assert.Equal(Stamp(Start), created["firstTimestamp"]!.GetValue<string>());
        Assert.Equal(Stamp(Start), created["lastTimestamp"]!.GetValue<string>());

        // The same event 90 s later on the fake clock: the existing one's count and last time, its first time kept.
        clock.Advance(TimeSpan.FromSeconds(90));
        await recorder.RecordAsync(claim, EventRecorder.Warning, "ProvisioningFailed", "no room", Ct);
        Assert.Equal(2, api.Requests.Count);
        var (patchMethod, patchPath, patch) = api.Requests[1];
        Assert.Equal((HttpMethod.Patch, "/api/v1/namespaces/apps/events/db.abcde"), (patchMethod, patchPath));
        Assert.Equal(JsonNode.Parse($$"""{"count":2,"lastTimestamp":"{{Stamp(Start.AddSeconds(90))}}"}"""), patch, JsonNode.DeepEquals);
    }

    [Fact]
    public async Task Resizer_AndGroupSnapshotErrors_UseTheControllersClock()
    {
        var clock = new FakeTimeProvider(Start);
        await using var h = await ControllerHarness.StartAsync("clock", Ct, time: clock);
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(Ct);

        // The controllers' retries wait on the fake clock: keep it moving, so only the times it gives are checked.
        var pump = Task.Run(
            async () =>
            {
                while (!stop.IsCancellationRequested)
                {
                    clock.Advance(TimeSpan.FromMilliseconds(100));
                    await Task.Delay(10, CancellationToken.None);
                }
            },
            CancellationToken.None);
        try
        {
            var k = h.Client;
            var claim = DriverStack.Claim("grows", "16Mi");
            claim.Spec.StorageClassName = "dolly";
            await k.CoreV1.CreateNamespacedPersistentVolumeClaimAsync(claim, "default", cancellationToken: Ct);
            await Eventually.Until(async () => (await k.CoreV1.ReadNamespacedPersistentVolumeClaimAsync("grows", "default", cancellationToken: Ct)).Status?.Phase == "Bound", "claim never bound");
            await k.CoreV1.PatchNamespacedPersistentVolumeClaimAsync(
                new V1Patch("""{"spec":{"resources":{"requests":{"storage":"32Mi"}}}}""", V1Patch.PatchType.MergePatch), "grows", "default", cancellationToken: Ct);
            var condition = await Eventually.Until(
                async () => (await k.CoreV1.ReadNamespacedPersistentVolumeClaimAsync("grows", "default", cancellationToken: Ct)).Status?.Conditions?.FirstOrDefault(c => c.Type == "FileSystemResizePending"),
                "no FileSystemResizePending condition");
            AssertOnFakeClock(condition.LastTransitionTime, clock);
            var resizing = await Eventually.Until(
                async () => (await k.CoreV1.ListNamespacedEventAsync("default", fieldSelector: "involvedObject.name=grows,reason=Resizing", cancellationToken: Ct)).Items.FirstOrDefault(),
                "no Resizing event");
            AssertOnFakeClock(resizing.FirstTimestamp, clock);
            AssertOnFakeClock(resizing.LastTimestamp, clock);

            // A group snapshot naming a class that does not exist: its error's time is the fake clock's.
            await k.CustomObjects.CreateNamespacedCustomObjectAsync(
                new Dictionary<string, object>
                {
                    ["apiVersion"] = GroupNames.ApiVersion,
                    ["kind"] = "VolumeGroupSnapshot",
                    ["metadata"] = new Dictionary<string, object> { ["name"] = "clocked" },
                    ["spec"] = new Dictionary<string, object>
                    {
                        ["volumeGroupSnapshotClassName"] = "no-such-class",
                        ["source"] = new Dictionary<string, object> { ["selector"] = new Dictionary<string, object> { ["matchLabels"] = new Dictionary<string, string> { ["clock"] = "yes" } } },
                    },
                },
                GroupNames.Group,
                GroupNames.Version,
                "default",
                "volumegroupsnapshots",
                cancellationToken: Ct);
            string time = await Eventually.Until(
                async () => ((JsonElement)await k.CustomObjects.GetNamespacedCustomObjectAsync(GroupNames.Group, GroupNames.Version, "default", "volumegroupsnapshots", "clocked", Ct)) is var g
                    && g.TryGetProperty("status", out var st) && st.TryGetProperty("error", out var err) && err.TryGetProperty("time", out var t) ? t.GetString() : null,
                "no error on the group snapshot");
            AssertOnFakeClock(DateTime.Parse(time, CultureInfo.InvariantCulture, DateTimeStyles.AdjustToUniversal | DateTimeStyles.AssumeUniversal), clock);
        }
        finally
        {
            await stop.CancelAsync();
            await pump;
        }
    }

    private static void AssertOnFakeClock(DateTime? time, FakeTimeProvider clock)
    {
        Assert.NotNull(time);
        var utc = time.Value.Kind == DateTimeKind.Local ? time.Value.ToUniversalTime() : DateTime.SpecifyKind(time.Value, DateTimeKind.Utc);
        var t = new DateTimeOffset(utc);
        Assert.InRange(t, Start, clock.GetUtcNow());
    }
}
