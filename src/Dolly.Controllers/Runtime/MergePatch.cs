using System.Text.Json.Nodes;
using Dolly.Controllers.Model;
using k8s;
using k8s.Models;

namespace Dolly.Controllers.Runtime;

/// <summary>
/// A JSON merge patch (RFC 7386) of one object, built field by field instead of nested <see cref="JsonObject"/>
/// literals. A patch is of the object (metadata and spec) or of its status subresource, never both: the API server
/// ignores status in the one and everything else in the other, so mixing them is refused here.
/// </summary>
internal sealed class MergePatch
{
    private const string MetadataField = "metadata";
    private const string SpecField = "spec";
    private const string StatusField = "status";
    private readonly JsonObject _root = [];

    /// <summary>Whether this is a patch of the status subresource.</summary>
    public bool ForStatus => _root.ContainsKey(StatusField);

    /// <summary>Whether the patch changes nothing.</summary>
    public bool IsEmpty => _root.Count == 0;

    /// <summary>Sets the whole finalizer list (a merge patch replaces lists).</summary>
    public MergePatch Finalizers(IEnumerable<string> finalizers) =>
        Put(MetadataField, ["finalizers"], new JsonArray([.. finalizers.Select(f => (JsonNode)JsonValue.Create(f))]));

    /// <summary>Sets an annotation, or removes it when <paramref name="value"/> is null.</summary>
    public MergePatch Annotation(string name, string? value) => Put(MetadataField, ["annotations", name], value is null ? null : JsonValue.Create(value));

    /// <summary>Sets the owner references (the whole list).</summary>
    public MergePatch OwnerReferences(IEnumerable<V1OwnerReference> owners) =>
        Put(MetadataField, ["ownerReferences"], JsonNode.Parse(KubernetesJson.Serialize(owners.ToList())));

    /// <summary>Sets a spec field; <paramref name="path"/> names nested fields (for example <c>volumeSnapshotRef</c>, <c>uid</c>).</summary>
    public MergePatch Spec(JsonNode? value, params string[] path) => Put(SpecField, path, value);

    /// <summary>Sets a status field; null removes it.</summary>
    public MergePatch Status(string field, JsonNode? value) => Put(StatusField, [field], value);

    /// <summary>The patch document.</summary>
    public JsonObject ToJson() => _root;

    /// <summary>
    /// A patch that adds or removes one finalizer and keeps the rest, or null when the list already is as asked.
    /// </summary>
    public static MergePatch? Finalizer(V1ObjectMeta meta, string finalizer, bool present)
    {
        var current = meta.Finalizers ?? [];
        if (current.Contains(finalizer) == present)
        {
            return null;
        }

        return new MergePatch().Finalizers(present ? [.. current, finalizer] : current.Where(f => f != finalizer));
    }

    private MergePatch Put(string top, string[] path, JsonNode? value)
    {
        ArgumentOutOfRangeException.ThrowIfZero(path.Length);
        if ((top == StatusField) != ForStatus && _root.Count > 0)
        {
            throw new InvalidOperationException("a merge patch is of the object or of its status subresource, not both");
        }

        var node = _root;
        foreach (string field in path.Prepend(top).SkipLast(1))
        {
            if (node[field] is not JsonObject next)
            {
                next = [];
                node[field] = next;
            }

            node = next;
        }

        node[path[^1]] = value;
        return this;
    }
}

/// <summary>The patch writes of the snapshot kinds, taking a <see cref="MergePatch"/>.</summary>
internal sealed partial class Cluster
{
    public Task<VolumeSnapshot> PatchSnapshotAsync(VolumeSnapshot snapshot, MergePatch patch, CancellationToken ct) =>
        PatchSnapshotAsync(snapshot, patch.ToJson(), patch.ForStatus, ct);

    public Task<VolumeSnapshotContent> PatchContentAsync(VolumeSnapshotContent content, MergePatch patch, CancellationToken ct) =>
        PatchContentAsync(content, patch.ToJson(), patch.ForStatus, ct);

    public Task<V1PersistentVolumeClaim> PatchClaimAsync(V1PersistentVolumeClaim claim, MergePatch patch, CancellationToken ct) =>
        PatchClaimAsync(claim, patch.ToJson(), patch.ForStatus, ct);
}
