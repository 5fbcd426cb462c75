using Dolly.Controllers.Model;
using Dolly.Controllers.Runtime;
using Dolly.Controllers.Schedules;

namespace Dolly.Controllers.Golden;

/// <summary>A snapshot a kept GoldenSnapshot revision came from (its finalizer says so): schedule retention keeps it.</summary>
internal sealed class GoldenSourceHolder : ISnapshotHolder
{
    public IEnumerable<string> Holders(VolumeSnapshot snapshot)
    {
        if (Cluster.HasFinalizer(snapshot.Metadata, GoldenNames.SourceFinalizer))
        {
            yield return "in use: source of a GoldenSnapshot revision";
        }
    }
}
