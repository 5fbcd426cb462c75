using k8s;
using k8s.Models;

namespace Dolly.Controllers.Runtime;

/// <summary>
/// Which object a work item or index entry names: its namespace (empty for a cluster-scoped object) and name. Its
/// string form is the informer's cache key, <c>namespace/name</c> or <c>name</c>.
/// </summary>
internal readonly record struct ObjectKey(string Namespace, string Name)
{
    public static ObjectKey Of(IKubernetesObject<V1ObjectMeta> item) => new(item.Metadata.NamespaceProperty ?? "", item.Metadata.Name);

    /// <summary>The key of a cluster-scoped object.</summary>
    public static ObjectKey Cluster(string name) => new("", name);

    /// <summary>Parses a cache key: the part before the first <c>/</c> is the namespace (names never hold one).</summary>
    public static ObjectKey Parse(string key)
    {
        ArgumentNullException.ThrowIfNull(key);
        int slash = key.IndexOf('/', StringComparison.Ordinal);
        return slash < 0 ? new ObjectKey("", key) : new ObjectKey(key[..slash], key[(slash + 1)..]);
    }

    public override string ToString() => Namespace.Length == 0 ? Name : Namespace + "/" + Name;
}
