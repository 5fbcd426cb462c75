namespace Dolly.Storage;

// Replacing a volume's content with any snapshot of the pool: the general form of Revert, for a revert to a
// snapshot of another lineage (a golden image, a foreign snapshot) and for callers that must know whether the
// volume changed since a given snapshot. Like Revert it swaps a map root: O(1) whatever the size.
public sealed partial class Pool
{
    /// <summary>
    /// Replaces the content of volume <paramref name="volumeName"/> with that of snapshot <paramref name="snapshotName"/>,
    /// in one commit. The volume keeps its name, id, lineage and size; a smaller snapshot's content is followed
    /// by zeros. Refused, with nothing changed: a snapshot larger than the volume (grow the volume first), and a
    /// snapshot of another lineage unless <paramref name="allowForeign"/>.
    /// </summary>
    public Result<DeviceInfo> ReplaceContent(string volumeName, string snapshotName, bool allowForeign) => Change<DeviceInfo>(() =>
    {
        var found = FindReplacePair(volumeName, snapshotName, allowForeign);
        if (!found.IsOk)
        {
            return found.Error;
        }

        var (v, s) = found.Value;
        if (BeginChange() is { } notCommitted)
        {
            return notCommitted;
        }

        if (s.Root != 0)
        {
            _pages.AddReference(s.Root);
        }

        if (v.Root != 0)
        {
            _tree.DecPage(v.Root);
        }

        long size = v.Size;
        v.Root = s.Root;
        v.Depth = s.Depth;
        v.Size = s.Size;
        GrowTo(v, size);
        MarkDirty(v);
        return Committed(v);
    });

    /// <summary>
    /// Whether a <see cref="ReplaceContent"/> of these two would be accepted now: the same checks, nothing changed.
    /// </summary>
    public Result CheckReplaceContent(string volumeName, string snapshotName, bool allowForeign)
    {
        var r = Read<DeviceInfo>(() =>
        {
            var found = FindReplacePair(volumeName, snapshotName, allowForeign);
            return found.IsOk ? ToInfo(found.Value.Volume) : found.Error;
        });
        return r.IsOk ? Result.Ok : Result.Fail(r.Error);
    }

    /// <summary>
    /// True when volume <paramref name="volumeName"/> holds exactly what snapshot <paramref name="snapshotName"/>
    /// does: it was not written since that snapshot was taken of it (or since its content was replaced by it), and
    /// kept its size. False does not prove a difference in bytes: a block written with the same data counts as written.
    /// </summary>
    public Result<bool> IsUnchangedSince(string volumeName, string snapshotName) => Change<bool>(() =>
    {
        var vr = Find(volumeName);
        if (!vr.IsOk)
        {
            return vr.Error;
        }

        var sr = Find(snapshotName);
        if (!sr.IsOk)
        {
            return sr.Error;
        }

        // Writes still in memory have not reached the map yet: commit them, so the roots tell the truth.
        var pending = CommitCore();
        if (!pending.IsOk)
        {
            return pending.Error;
        }

        var (v, s) = (vr.Value, sr.Value);
        return v.Kind == DeviceKind.Volume && s.Kind == DeviceKind.Snapshot && v.Root == s.Root && v.Depth == s.Depth && v.Size == s.Size;
    });

    private Result<(Engine.DeviceState Volume, Engine.DeviceState Snapshot)> FindReplacePair(string volumeName, string snapshotName, bool allowForeign)
    {
        var vr = Find(volumeName);
        if (!vr.IsOk)
        {
            return vr.Error;
        }

        var sr = Find(snapshotName);
        if (!sr.IsOk)
        {
            return sr.Error;
        }

        var v = vr.Value;
        var s = sr.Value;
        if (v.Kind != DeviceKind.Volume)
        {
            return new StorageError(StorageErrorCode.ReadOnly, $"'{volumeName}' is a snapshot; only a volume's content can be replaced");
        }

        if (s.Kind != DeviceKind.Snapshot)
        {
            return new StorageError(StorageErrorCode.InvalidArgument, $"'{snapshotName}' is a volume, not a snapshot; take a snapshot of it first");
        }

        if (!allowForeign && s.LineageId != v.LineageId)
        {
            return new StorageError(
                StorageErrorCode.InvalidArgument,
                $"snapshot '{snapshotName}' is not of volume '{volumeName}' or its lineage; replacing a volume's content with an unrelated snapshot must be allowed explicitly");
        }

        if (s.Size > v.Size)
        {
            return new StorageError(
                StorageErrorCode.InvalidArgument,
                $"snapshot '{snapshotName}' ({s.Size} bytes) is larger than volume '{volumeName}' ({v.Size} bytes); grow the volume first");
        }

        return (v, s);
    }
}
