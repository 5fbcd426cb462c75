using System.Globalization;
using System.Text.Json.Nodes;
using Dolly.Controllers.Model;
using Dolly.Controllers.Runtime;
using Dolly.Csi.V1;
using Grpc.Core;
using k8s.Models;

namespace Dolly.Controllers.Golden;

/// <summary>A problem that holds up publishing (reason for the conditions and events, and the message naming it).</summary>
internal readonly record struct GoldenProblem(string Reason, string Message);

/// <summary>What looking at the source did: a revision published, one being cut, or why neither.</summary>
internal sealed record SourceStep(GoldenRevision? Published, bool Cutting, GoldenProblem? Problem);

/// <summary>
/// Turns the source into revisions. A VolumeSnapshot or a snapshot handle is published as it is whenever the source
/// field changes; a claim is snapshotted (a VolumeSnapshot <c>golden-&lt;name&gt;-r&lt;N&gt;</c> in its namespace) on
/// create, when the source changes, on spec.schedule and when the publish-now annotation changes, and published once
/// that snapshot is ready. The VolumeSnapshot a revision comes from gets <see cref="GoldenNames.SourceFinalizer"/>, so
/// deleting it cannot delete the data the namespaces restore from while a kept revision uses it.
/// </summary>
internal sealed class GoldenSources(ControllerContext c)
{
    private const string Bound = "Bound";

    /// <summary>The source field as a string: a change of it publishes a new revision.</summary>
    public static string Identity(GoldenSource s) =>
        s.VolumeSnapshot is { } v ? $"volumeSnapshot:{v.Namespace}/{v.Name}"
        : s.PersistentVolumeClaim is { } p ? $"persistentVolumeClaim:{p.Namespace}/{p.Name}"
        : $"snapshotHandle:{(string.IsNullOrEmpty(s.Driver) ? GoldenNames.DefaultDriver : s.Driver)}/{s.SnapshotHandle}";

    /// <summary>Publishes or cuts a revision when one is due; changes <paramref name="next"/> accordingly.</summary>
    public Task<SourceStep> AdvanceAsync(GoldenSnapshot golden, GoldenSpecCheck check, GoldenSnapshotStatus next, DateTimeOffset now, CancellationToken ct) => check.Kind switch
    {
        GoldenSourceKind.VolumeSnapshot => FromSnapshotAsync(golden, next, now, ct),
        GoldenSourceKind.SnapshotHandle => FromHandleAsync(golden, next, now, ct),
        _ => FromClaimAsync(golden, check, next, now, ct),
    };

    private async Task<SourceStep> FromSnapshotAsync(GoldenSnapshot golden, GoldenSnapshotStatus next, DateTimeOffset now, CancellationToken ct)
    {
        var reference = golden.Spec.Source.VolumeSnapshot!;
        string identity = Identity(golden.Spec.Source);
        string where = $"VolumeSnapshot {reference.Namespace}/{reference.Name}";
        var snapshot = c.Cluster.Snapshots.Get(reference.Namespace, reference.Name);
        if (identity == next.PublishedSource)
        {
            // Published already; a source deleted since is reported, and its revisions keep their data.
            return snapshot is null || snapshot.Metadata.DeletionTimestamp is not null
                ? new SourceStep(null, false, new GoldenProblem("SourceDeleted", $"the source {where} was deleted after publishing: the published revisions keep their data, no new revision is published"))
                : new SourceStep(null, false, null);
        }

        if (snapshot is null)
        {
            return Problem("SourceMissing", $"the source {where} does not exist");
        }

        if (snapshot.Metadata.DeletionTimestamp is not null)
        {
            return Problem("SourceDeleted", $"the source {where} is being deleted");
        }

        if (snapshot.Status?.ReadyToUse != true || snapshot.Status.BoundVolumeSnapshotContentName is not { Length: > 0 } contentName)
        {
            return Problem("SourceNotReady", $"the source {where} is not ready to use{(snapshot.Status?.Error?.Message is { } e ? ": " + e : "")}");
        }

        var content = c.Cluster.Contents.Get(contentName);
        if (content?.Status?.SnapshotHandle is not { Length: > 0 } handle)
        {
            return Problem("SourceNotReady", $"the content {contentName} of the source {where} has no snapshot handle yet");
        }

        if (content.Spec.Driver != c.Options.DriverName)
        {
            return Problem("SourceNotDolly", $"the source {where} is a snapshot of driver {content.Spec.Driver}, not of Dolly's driver {c.Options.DriverName}: only a Dolly snapshot can be published");
        }

        await ProtectAsync(snapshot, ct).ConfigureAwait(false);
        var restore = snapshot.Status.RestoreSize ?? (content.Status.RestoreSize is { } bytes ? Quantities.FromBytes(bytes) : null);
        return Publish(next, identity, handle, content.Spec.Driver, restore, now, $"{reference.Namespace}/{reference.Name}");
    }

    private async Task<SourceStep> FromHandleAsync(GoldenSnapshot golden, GoldenSnapshotStatus next, DateTimeOffset now, CancellationToken ct)
    {
        string identity = Identity(golden.Spec.Source);
        if (identity == next.PublishedSource)
        {
            return new SourceStep(null, false, null);
        }

        string handle = golden.Spec.Source.SnapshotHandle!;
        string driver = string.IsNullOrEmpty(golden.Spec.Source.Driver) ? GoldenNames.DefaultDriver : golden.Spec.Source.Driver;
        if (driver != c.Options.DriverName)
        {
            return Problem("SourceNotDolly", $"spec.source.driver {driver} is not Dolly's driver {c.Options.DriverName}: only a Dolly snapshot can be published");
        }

        ListSnapshotsResponse list;
        try
        {
            list = await c.Csi.ListSnapshotsAsync(new ListSnapshotsRequest { SnapshotId = handle }, c.CsiCall(ct)).ConfigureAwait(false);
        }
        catch (RpcException ex) when (!ct.IsCancellationRequested)
        {
            return Problem("SourceUnavailable", $"looking up snapshot handle {handle} failed: {ControllerContext.Describe(ex)}");
        }

        var found = list.Entries.Select(e => e.Snapshot).FirstOrDefault(s => s.SnapshotId == handle);
        if (found is null)
        {
            return Problem("SourceMissing", $"snapshot handle {handle} does not exist on driver {driver}");
        }

        if (!found.ReadyToUse)
        {
            return Problem("SourceNotReady", $"snapshot handle {handle} is not ready to use");
        }

        return Publish(next, identity, handle, driver, Quantities.FromBytes(found.SizeBytes), now, null);
    }

    private async Task<SourceStep> FromClaimAsync(GoldenSnapshot golden, GoldenSpecCheck check, GoldenSnapshotStatus next, DateTimeOffset now, CancellationToken ct)
    {
        var reference = golden.Spec.Source.PersistentVolumeClaim!;
        string identity = Identity(golden.Spec.Source);
        var anchor = next.LastPublished is { } last ? Utc(last) : Utc(golden.Metadata.CreationTimestamp ?? now.UtcDateTime);
        next.NextPublish = check.Next(anchor)?.UtcDateTime;
        if (next.Revisions?.FirstOrDefault(r => string.IsNullOrEmpty(r.SnapshotHandle)) is { } cutting)
        {
            return await FinishCutAsync(golden, next, cutting, identity, ct).ConfigureAwait(false);
        }

        string? publishNow = Cluster.Annotation(golden.Metadata, GoldenNames.PublishNowAnnotation);
        bool due = identity != next.PublishedSource
            || (publishNow is not null && publishNow != next.PublishNow)
            || (check.Next(anchor) is { } at && at <= now);
        if (!due)
        {
            return new SourceStep(null, false, null);
        }

        string where = $"claim {reference.Namespace}/{reference.Name}";
        var claim = c.Cluster.Claims.Get(reference.Namespace, reference.Name);
        if (claim is null)
        {
            return Problem("SourceMissing", $"the source {where} does not exist");
        }

        if (claim.Metadata.DeletionTimestamp is not null)
        {
            return Problem("SourceDeleted", $"the source {where} is being deleted");
        }

        if (claim.Status?.Phase != Bound || c.Cluster.Volumes.Get(claim.Spec.VolumeName ?? "") is not { } volume)
        {
            return Problem("SourceNotReady", $"the source {where} is not bound (phase {claim.Status?.Phase ?? "Pending"})");
        }

        if (volume.Spec.Csi?.Driver != c.Options.DriverName)
        {
            return Problem("SourceNotDolly", $"the source {where} is a volume of {volume.Spec.Csi?.Driver ?? "no CSI driver"}, not of Dolly's driver {c.Options.DriverName}");
        }

        int n = NextRevision(next);
        string name = GoldenObjects.CutName(golden.Metadata.Name, n);
        var cut = new VolumeSnapshot
        {
            Metadata = GoldenObjects.Meta(golden, name, reference.Namespace, n, null),
            Spec = new VolumeSnapshotSpec { Source = new VolumeSnapshotSource { PersistentVolumeClaimName = reference.Name } },
        };
        cut.Metadata.Finalizers = [GoldenNames.SourceFinalizer];
        var made = await c.Cluster.CreateSnapshotAsync(cut, ct).ConfigureAwait(false);
        if (!GoldenObjects.IsOurs(made.Metadata, golden))
        {
            return Problem("Conflict", $"VolumeSnapshot {reference.Namespace}/{name} already exists and was not made by this golden snapshot: it is left alone, and no revision is cut until it is renamed or deleted");
        }

        next.Revisions = [new GoldenRevision { Revision = n, Origin = $"{reference.Namespace}/{name}", CreatedAt = now.UtcDateTime }, .. next.Revisions ?? []];
        next.PublishNow = publishNow ?? next.PublishNow;
        next.LastPublished = now.UtcDateTime;
        next.NextPublish = check.Next(now)?.UtcDateTime;
        return await FinishCutAsync(golden, next, next.Revisions[0], identity, ct).ConfigureAwait(false);
    }

    /// <summary>A revision being cut: published once its snapshot is ready.</summary>
    private async Task<SourceStep> FinishCutAsync(GoldenSnapshot golden, GoldenSnapshotStatus next, GoldenRevision cutting, string identity, CancellationToken ct)
    {
        string[] origin = (cutting.Origin ?? "/").Split('/', 2);
        var snapshot = c.Cluster.Snapshots.Get(origin[0], origin[1]);
        if (snapshot is null || !GoldenObjects.IsOurs(snapshot.Metadata, golden))
        {
            // Gone before it was ready (a user deleted it, or the namespace went): forget it; the next look cuts anew.
            next.Revisions = [.. next.Revisions!.Where(r => r != cutting)];
            return Problem("CutFailed", $"the VolumeSnapshot {cutting.Origin} of revision {cutting.Revision} disappeared before it was ready");
        }

        if (snapshot.Status?.ReadyToUse != true)
        {
            return snapshot.Status?.Error?.Message is { } error
                ? new SourceStep(null, true, new GoldenProblem("CutFailed", $"snapshotting for revision {cutting.Revision} failed (retried): {error}"))
                : new SourceStep(null, true, null);
        }

        var content = c.Cluster.Contents.Get(snapshot.Status.BoundVolumeSnapshotContentName ?? "");
        if (content?.Status?.SnapshotHandle is not { Length: > 0 } handle)
        {
            return new SourceStep(null, true, null);
        }

        await ProtectAsync(snapshot, ct).ConfigureAwait(false);
        cutting.SnapshotHandle = handle;
        cutting.Driver = content.Spec.Driver;
        cutting.RestoreSize = snapshot.Status.RestoreSize ?? (content.Status.RestoreSize is { } bytes ? Quantities.FromBytes(bytes) : null);
        if (snapshot.Status.CreationTime is { } created)
        {
            cutting.CreatedAt = created;
        }

        next.CurrentRevision = cutting.Revision;
        next.PublishedSource = identity;
        return new SourceStep(cutting, false, null);
    }

    /// <summary>Keeps the snapshot a revision comes from until its revisions are retired.</summary>
    private async Task ProtectAsync(VolumeSnapshot snapshot, CancellationToken ct)
    {
        if (Cluster.FinalizerPatch(snapshot.Metadata, GoldenNames.SourceFinalizer, true) is { } patch)
        {
            await c.Cluster.PatchSnapshotAsync(snapshot, patch, status: false, ct).ConfigureAwait(false);
        }
    }

    /// <summary>Lets go of the snapshot a retired revision came from: the finalizer goes, and one the controller cut is deleted.</summary>
    public async Task ReleaseAsync(GoldenSnapshot golden, string origin, bool deleteIfOurs, CancellationToken ct)
    {
        string[] parts = origin.Split('/', 2);
        if (parts.Length != 2 || c.Cluster.Snapshots.Get(parts[0], parts[1]) is not { } snapshot)
        {
            return;
        }

        if (Cluster.FinalizerPatch(snapshot.Metadata, GoldenNames.SourceFinalizer, false) is { } patch)
        {
            snapshot = await c.Cluster.PatchSnapshotAsync(snapshot, patch, status: false, ct).ConfigureAwait(false);
        }

        if (deleteIfOurs && GoldenObjects.IsOurs(snapshot.Metadata, golden) && snapshot.Metadata.DeletionTimestamp is null)
        {
            await c.Cluster.DeleteSnapshotAsync(snapshot, ct).ConfigureAwait(false);
        }
    }

    private static SourceStep Publish(GoldenSnapshotStatus next, string identity, string handle, string driver, ResourceQuantity? restoreSize, DateTimeOffset now, string? origin)
    {
        var revision = new GoldenRevision
        {
            Revision = NextRevision(next),
            SnapshotHandle = handle,
            Driver = driver,
            RestoreSize = restoreSize,
            CreatedAt = now.UtcDateTime,
            Origin = origin,
        };
        next.Revisions = [revision, .. next.Revisions ?? []];
        next.CurrentRevision = revision.Revision;
        next.PublishedSource = identity;
        next.LastPublished = now.UtcDateTime;
        return new SourceStep(revision, false, null);
    }

    private static int NextRevision(GoldenSnapshotStatus status) => (status.Revisions?.Select(r => r.Revision).DefaultIfEmpty(0).Max() ?? 0) + 1;

    private static SourceStep Problem(string reason, string message) => new(null, false, new GoldenProblem(reason, message));

    private static DateTimeOffset Utc(DateTime t) => new(DateTime.SpecifyKind(t.Kind == DateTimeKind.Local ? t.ToUniversalTime() : t, DateTimeKind.Utc));

    internal static string Format(int n) => n.ToString(CultureInfo.InvariantCulture);

    internal static JsonObject Annotate(string key, string? value) =>
        new() { ["metadata"] = new JsonObject { ["annotations"] = new JsonObject { [key] = value } } };
}
