using System.Text.Json.Nodes;
using Dolly.Controllers.Repository;

namespace Dolly.Controllers.Runtime;

/// <summary>SnapshotRepositories.</summary>
internal sealed partial class Cluster
{
    /// <summary>SnapshotRepositories (cluster-scoped).</summary>
    public Informer<SnapshotRepository> Repositories { get; }

    public Task<SnapshotRepository> PatchRepositoryAsync(SnapshotRepository repository, JsonObject patch, bool status, CancellationToken ct) =>
        PatchCustomAsync(Repositories, repository, RepositoryNames.Group, RepositoryNames.Version, RepositoryNames.Plural, patch, status, ct);
}
