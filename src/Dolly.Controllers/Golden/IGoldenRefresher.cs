namespace Dolly.Controllers.Golden;

/// <summary>What became of a refresh request.</summary>
internal enum GoldenRefreshState
{
    /// <summary>Recorded by the driver: the volume takes the new content as soon as no client holds it.</summary>
    Requested,

    /// <summary>The volume holds the requested revision.</summary>
    Done,

    /// <summary>Refused (the message says why); nothing was changed, and it is asked again on a later look.</summary>
    Refused,

    /// <summary>The driver could not be reached or did not answer in time; asked again on a later look.</summary>
    Unreachable,
}

/// <summary>The answer to a refresh request: the state, and a message naming a refusal or who holds the volume.</summary>
internal readonly record struct GoldenRefreshResult(GoldenRefreshState State, string? Message);

/// <summary>One consumer claim's volume to move to a revision.</summary>
/// <param name="Claim">The claim, namespace/name (for messages).</param>
/// <param name="ClaimUid">The claim's uid: with the revision, it names the request, so asking twice is one request.</param>
/// <param name="VolumeHandle">The CSI volume id of the claim's volume.</param>
/// <param name="Revision">The revision the volume is to hold.</param>
/// <param name="SnapshotHandle">That revision's CSI snapshot id.</param>
internal sealed record GoldenRefresh(string Claim, string ClaimUid, string VolumeHandle, int Revision, string SnapshotHandle);

/// <summary>
/// What the GoldenSnapshot controller needs from the driver for <c>OnNextAttach</c> consumers: "the next time this
/// claim's volume is not attached (no NBD client holds it; at once when none does), and never while it is, replace
/// its content with the revision's snapshot". Requests are durable on the driver's side and named after the claim's
/// uid and the revision, so a controller that restarts asks for the same request again rather than a second one.
/// </summary>
internal interface IGoldenRefresher
{
    /// <summary>Asks for <paramref name="refresh"/>, or for how it stands; idempotent.</summary>
    Task<GoldenRefreshResult> RequestAsync(GoldenRefresh refresh, CancellationToken cancellationToken);

    /// <summary>
    /// Withdraws the request of claim <paramref name="claimUid"/> for <paramref name="revision"/> if it is still
    /// pending, or forgets it once finished; idempotent. Returns <see cref="GoldenRefreshState.Done"/> when it had
    /// been applied (the volume holds that revision), <see cref="GoldenRefreshState.Unreachable"/> when the driver
    /// did not answer, and <see cref="GoldenRefreshState.Requested"/> otherwise (nothing was changed).
    /// </summary>
    Task<GoldenRefreshResult> ReleaseAsync(string claimUid, int revision, CancellationToken cancellationToken);
}
