using System.Text.Json.Nodes;
using Dolly.Controllers.Golden;

namespace Dolly.Controllers.Runtime;

/// <summary>GoldenSnapshots.</summary>
internal sealed partial class Cluster
{
    /// <summary>GoldenSnapshots (cluster-scoped).</summary>
    public Informer<GoldenSnapshot> Goldens { get; }

    public Task<GoldenSnapshot> PatchGoldenAsync(GoldenSnapshot golden, JsonObject patch, bool status, CancellationToken ct) =>
        PatchCustomAsync(Goldens, golden, GoldenNames.Group, GoldenNames.Version, GoldenNames.Plural, patch, status, ct);
}
