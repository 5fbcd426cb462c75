using System.Text.Json.Nodes;
using Dolly.Api.Http;
using Dolly.Api.Resources;

namespace Dolly.Api.Registry;

/// <summary>
/// One kind's write rules, as kube-apiserver keeps them in a strategy per kind (pkg/registry/&lt;group&gt;/&lt;kind&gt;/strategy.go):
/// the defaults filled in before validation, and the validation of a create (<c>old</c> null) or an update.
/// </summary>
internal interface IKindStrategy
{
    /// <summary>Fills defaults on create, and the derived parts on every write.</summary>
    void Default(JsonObject obj, bool create);

    /// <summary>Adds what is wrong with <paramref name="obj"/> (replacing <paramref name="old"/> on update) to <paramref name="errors"/>.</summary>
    void Validate(JsonObject obj, JsonObject? old, List<FieldCause> errors);
}

/// <summary>
/// The strategies by kind. A kind without one here is handled by the older per-kind switches in
/// <see cref="Semantics.Strategies"/>; kinds move here one by one.
/// </summary>
internal static class KindStrategies
{
    private static readonly Dictionary<(string Group, string Plural), IKindStrategy> ByKind = new()
    {
        [("", "persistentvolumeclaims")] = new ClaimStrategy(),
        [("", "persistentvolumes")] = new VolumeStrategy(),
        [("storage.k8s.io", "storageclasses")] = new StorageClassStrategy(),
    };

    /// <summary>The strategy of <paramref name="type"/>, or null when it has none of its own yet.</summary>
    public static IKindStrategy? For(ResourceType type) => ByKind.GetValueOrDefault((type.Group, type.Plural));

    /// <summary>The child object <paramref name="key"/> of <paramref name="parent"/>, made when absent or not an object.</summary>
    internal static JsonObject Child(JsonObject parent, string key)
    {
        if (parent[key] is not JsonObject child)
        {
            child = new JsonObject();
            parent[key] = child;
        }

        return child;
    }
}
