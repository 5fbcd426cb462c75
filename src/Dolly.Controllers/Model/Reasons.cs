namespace Dolly.Controllers.Model;

/// <summary>Event reasons of the snapshot controller and the csi-snapshotter, as upstream spells them (users filter on them).</summary>
internal static class Reasons
{
    public const string SetDefaultSnapshotClassFailed = "SetDefaultSnapshotClassFailed";
    public const string SnapshotContentCheckandUpdateFailed = "SnapshotContentCheckandUpdateFailed";
    public const string SnapshotContentMisbound = "SnapshotContentMisbound";
    public const string SnapshotContentMissing = "SnapshotContentMissing";
    public const string SnapshotCreated = "SnapshotCreated";
    public const string SnapshotCreationFailed = "SnapshotCreationFailed";
    public const string SnapshotDeleteError = "SnapshotDeleteError";
    public const string SnapshotDeletePending = "SnapshotDeletePending";
    public const string SnapshotMisbound = "SnapshotMisbound";
    public const string SnapshotReady = "SnapshotReady";
    public const string SnapshotValidationError = "SnapshotValidationError";
}

/// <summary>Values of deletion and reclaim policies, and of the upstream marker annotations.</summary>
internal static class PolicyValues
{
    /// <summary>deletionPolicy / reclaimPolicy that deletes the backing snapshot or volume.</summary>
    public const string Delete = "Delete";

    /// <summary>deletionPolicy / reclaimPolicy that keeps it.</summary>
    public const string Retain = "Retain";

    /// <summary>The value of the being-created and being-deleted annotations while they hold.</summary>
    public const string Yes = "yes";
}
