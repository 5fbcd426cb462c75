using System.Text.Json.Nodes;
using Dolly.Api.Resources;

namespace Dolly.Api.Tests;

/// <summary>The embedded kind definitions (Definitions/*.yaml) are well-formed schemas.</summary>
public sealed class DefinitionTests
{
    public static TheoryData<string> Definitions() => ["core.yaml", "storage.yaml", "apps.yaml", "rbac.yaml", "bootstrap-snapshot.yaml", "bootstrap-dolly.yaml"];

    [Theory]
    [MemberData(nameof(Definitions))]
    public void EmbeddedDefinition_HasNoKeyWithoutValue(string name)
    {
        // An unquoted comma inside a YAML flow mapping ({description: a, b}) ends the value and makes "b" a key
        // with no value: the description is cut and the schema gains a key kube-apiserver would reject.
        using var stream = typeof(ApiServer).Assembly.GetManifestResourceStream("Dolly.Api.Definitions." + name)!;
        var root = Yaml.Parse(new StreamReader(stream).ReadToEnd());
        var empty = new List<string>();
        Walk(root, "$");
        Assert.True(empty.Count == 0, $"{name}: keys without a value (quote the text holding a comma): {string.Join(", ", empty)}");

        void Walk(JsonNode? node, string path)
        {
            switch (node)
            {
                case JsonObject o:
                    foreach (var (key, value) in o)
                    {
                        if (value is null)
                        {
                            empty.Add(path + "." + key);
                        }

                        Walk(value, path + "." + key);
                    }

                    break;
                case JsonArray a:
                    for (int i = 0; i < a.Count; i++)
                    {
                        Walk(a[i], $"{path}[{i}]");
                    }

                    break;
            }
        }
    }

    [Fact]
    public void SnapshotContentDescriptions_AreWhole()
    {
        var vsc = ResourceRegistry.BootstrapCrds().Single(c => c["metadata"]!["name"]!.GetValue<string>() == "volumesnapshotcontents.snapshot.storage.k8s.io");
        var version = vsc["spec"]!["versions"]![0]!;
        var status = version["schema"]!["openAPIV3Schema"]!["properties"]!["status"]!["properties"]!;
        Assert.Equal("The size of a volume restored from this snapshot, in bytes.", status["restoreSize"]!["description"]!.GetValue<string>());
        Assert.Equal("When the snapshot was cut, in Unix nanoseconds.", status["creationTime"]!["description"]!.GetValue<string>());
        Assert.Equal(["type", "format", "minimum", "description"], status["restoreSize"]!.AsObject().Select(kv => kv.Key));
    }
}
