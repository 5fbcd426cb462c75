using k8s.Models;

namespace Dolly.Controllers.Golden;

/// <summary>What became of a refresh request.</summary>
internal enum GoldenRefreshState
{
    /// <summary>Recorded: the claim's volume takes the new content the next time it is attached.</summary>
    Requested,

    /// <summary>The volume holds the requested revision (the refresh happened at an attach).</summary>
    Done,

    /// <summary>Refused (the message says why); asked again on the next look.</summary>
    Refused,
}

/// <summary>The answer to a refresh request.</summary>
internal readonly record struct GoldenRefreshResult(GoldenRefreshState State, string? Message);

/// <summary>
/// The one thing the GoldenSnapshot controller needs from the engine for <c>OnNextAttach</c> consumers: "the next
/// time this claim's volume is attached (NodeStage, the next NBD open), and never while it is attached, replace its
/// content with the driver snapshot <c>snapshotHandle</c>". Until the driver offers that, no implementation is wired,
/// and the controller reports such consumers as refresh pending rather than pretend to refresh them.
/// </summary>
internal interface IGoldenRefresher
{
    /// <summary>Asks for the refresh of <paramref name="claim"/> to <paramref name="revision"/>; idempotent.</summary>
    Task<GoldenRefreshResult> RequestAsync(V1PersistentVolumeClaim claim, int revision, string snapshotHandle, CancellationToken cancellationToken);
}
