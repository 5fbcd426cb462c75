using System.Net;
using System.Text.Json.Nodes;
using Dolly.Controllers.Model;
using k8s;
using k8s.Autorest;
using k8s.Models;

namespace Dolly.Controllers.Runtime;

/// <summary>The group snapshot kinds, and the member snapshots and contents the group controllers create.</summary>
internal sealed partial class Cluster
{
    private const string GroupSnapshotsPlural = "volumegroupsnapshots";
    private const string GroupContentsPlural = "volumegroupsnapshotcontents";
    private const string SnapshotsPlural = "volumesnapshots";

    public Informer<VolumeGroupSnapshot> GroupSnapshots { get; }

    public Informer<VolumeGroupSnapshotContent> GroupContents { get; }

    public Informer<VolumeGroupSnapshotClass> GroupClasses { get; }

    public Task<VolumeGroupSnapshot> PatchGroupSnapshotAsync(VolumeGroupSnapshot group, JsonObject patch, bool status, CancellationToken ct) =>
        PatchCustomAsync(GroupSnapshots, group, GroupNames.Group, GroupNames.Version, GroupSnapshotsPlural, patch, status, ct);

    public Task<VolumeGroupSnapshotContent> PatchGroupContentAsync(VolumeGroupSnapshotContent content, JsonObject patch, bool status, CancellationToken ct) =>
        PatchCustomAsync(GroupContents, content, GroupNames.Group, GroupNames.Version, GroupContentsPlural, patch, status, ct);

    /// <summary>A group snapshot read from the API server (not the cache), or null when there is none.</summary>
    public async Task<VolumeGroupSnapshot?> ReadGroupSnapshotAsync(string ns, string name, CancellationToken ct)
    {
        try
        {
            object found = await Client.CustomObjects.GetNamespacedCustomObjectAsync(GroupNames.Group, GroupNames.Version, ns, GroupSnapshotsPlural, name, ct).ConfigureAwait(false);
            var group = Convert<VolumeGroupSnapshot>(found);
            GroupSnapshots.Remember(group);
            return group;
        }
        catch (HttpOperationException ex) when (ex.Response.StatusCode == HttpStatusCode.NotFound)
        {
            return null;
        }
    }

    /// <summary>Creates a group content; an existing one of that name is returned instead (from the server).</summary>
    public async Task<VolumeGroupSnapshotContent> CreateGroupContentAsync(VolumeGroupSnapshotContent content, CancellationToken ct)
    {
        try
        {
            object result = await Client.CustomObjects.CreateClusterCustomObjectAsync(content, GroupNames.Group, GroupNames.Version, GroupContentsPlural, cancellationToken: ct).ConfigureAwait(false);
            var written = Convert<VolumeGroupSnapshotContent>(result);
            GroupContents.Remember(written);
            return written;
        }
        catch (HttpOperationException ex) when (ex.Response.StatusCode == HttpStatusCode.Conflict)
        {
            object existing = await Client.CustomObjects.GetClusterCustomObjectAsync(GroupNames.Group, GroupNames.Version, GroupContentsPlural, content.Metadata.Name, ct).ConfigureAwait(false);
            return Convert<VolumeGroupSnapshotContent>(existing);
        }
    }

    public async Task DeleteGroupContentAsync(VolumeGroupSnapshotContent content, CancellationToken ct)
    {
        try
        {
            await Client.CustomObjects.DeleteClusterCustomObjectAsync(
                GroupNames.Group, GroupNames.Version, GroupContentsPlural, content.Metadata.Name,
                new V1DeleteOptions { Preconditions = new V1Preconditions { Uid = content.Metadata.Uid } },
                cancellationToken: ct).ConfigureAwait(false);
        }
        catch (HttpOperationException ex) when (ex.Response.StatusCode == HttpStatusCode.NotFound)
        {
            // Already gone.
        }
    }

    /// <summary>Creates a snapshot; an existing one of that name is returned instead (from the server).</summary>
    public async Task<VolumeSnapshot> CreateSnapshotAsync(VolumeSnapshot snapshot, CancellationToken ct)
    {
        string ns = snapshot.Metadata.NamespaceProperty;
        try
        {
            object result = await Client.CustomObjects.CreateNamespacedCustomObjectAsync(snapshot, Names.SnapshotGroup, SnapshotVersion, ns, SnapshotsPlural, cancellationToken: ct).ConfigureAwait(false);
            var written = Convert<VolumeSnapshot>(result);
            Snapshots.Remember(written);
            return written;
        }
        catch (HttpOperationException ex) when (ex.Response.StatusCode == HttpStatusCode.Conflict)
        {
            object existing = await Client.CustomObjects.GetNamespacedCustomObjectAsync(Names.SnapshotGroup, SnapshotVersion, ns, SnapshotsPlural, snapshot.Metadata.Name, ct).ConfigureAwait(false);
            return Convert<VolumeSnapshot>(existing);
        }
    }

    public async Task DeleteSnapshotAsync(VolumeSnapshot snapshot, CancellationToken ct)
    {
        try
        {
            await Client.CustomObjects.DeleteNamespacedCustomObjectAsync(
                Names.SnapshotGroup, SnapshotVersion, snapshot.Metadata.NamespaceProperty, SnapshotsPlural, snapshot.Metadata.Name,
                new V1DeleteOptions { Preconditions = new V1Preconditions { Uid = snapshot.Metadata.Uid } },
                cancellationToken: ct).ConfigureAwait(false);
        }
        catch (HttpOperationException ex) when (ex.Response.StatusCode == HttpStatusCode.NotFound)
        {
            // Already gone.
        }
    }
}
