using CsCheck;
using Dolly.Controllers.Golden;
using k8s.Models;

namespace Dolly.Controllers.Tests.Golden;

/// <summary>The GoldenSnapshot rules that need no cluster: who opts in, which revisions retention keeps, object names.</summary>
public sealed class GoldenRulesTests
{
    private static readonly string[] Keys = ["tier", "team"];
    private static readonly string[] Values = ["gold", "silver", "x"];

    [Fact]
    public void Targets_AreExactlyTheNamespacesTheSelectorOrTheListNames_AgainstAModel()
    {
        var labelSet = Gen.Select(Gen.Int[0, 1], Gen.Int[0, 2]).List[0, 2].Select(l => l.GroupBy(x => x.Item1).ToDictionary(x => Keys[x.Key], x => Values[x.Last().Item2]));
        var ns = Gen.Select(Gen.Int[0, 9], labelSet, Gen.Bool, (i, labels, deleting) => new V1Namespace
        {
            Metadata = new V1ObjectMeta { Name = "ns-" + i, Labels = labels, DeletionTimestamp = deleting ? DateTime.UnixEpoch : null },
        });
        var selector = Gen.Select(Gen.Int[0, 4], Gen.Int[0, 1], Gen.Int[0, 2], (kind, key, value) => kind switch
        {
            0 => null,
            1 => new V1LabelSelector { MatchLabels = new Dictionary<string, string> { [Keys[key]] = Values[value] } },
            2 => new V1LabelSelector { MatchExpressions = [new V1LabelSelectorRequirement { Key = Keys[key], OperatorProperty = "In", Values = [Values[value], "gold"] }] },
            3 => new V1LabelSelector { MatchExpressions = [new V1LabelSelectorRequirement { Key = Keys[key], OperatorProperty = "DoesNotExist" }] },
            _ => new V1LabelSelector { MatchExpressions = [new V1LabelSelectorRequirement { Key = Keys[key], OperatorProperty = "NotIn", Values = [Values[value]] }] },
        });
        var listed = Gen.Int[0, 9].List[0, 3].Select(l => l.Select(i => "ns-" + i).ToList());
        Gen.Select(ns.List[0, 10], selector, listed).Sample((namespaces, sel, names) =>
        {
            var unique = namespaces.GroupBy(n => n.Metadata.Name).Select(x => x.First()).ToList();
            var spec = new GoldenSnapshotSpec { NamespaceSelector = sel, Namespaces = names };
            var targets = GoldenTargets.Select(spec, unique);
            var model = unique.Where(n => names.Contains(n.Metadata.Name) || (sel is not null && Model(sel, n.Metadata.Labels ?? new Dictionary<string, string>()))).Select(n => n.Metadata.Name).Order(StringComparer.Ordinal);
            Assert.Equal(model, targets.Select(t => t.Namespace));
            Assert.All(targets, t => Assert.Equal(unique.Single(n => n.Metadata.Name == t.Namespace).Metadata.DeletionTimestamp is not null, t.Blocked is not null));
        });
    }

    [Fact]
    public void Targets_NoSelectorAndNoList_SelectNothing_AnEmptySelectorEverything()
    {
        V1Namespace[] all = [new() { Metadata = new V1ObjectMeta { Name = "a" } }, new() { Metadata = new V1ObjectMeta { Name = "b", Labels = new Dictionary<string, string> { ["x"] = "y" } } }];
        Assert.Empty(GoldenTargets.Select(new GoldenSnapshotSpec(), all));
        Assert.Equal(["a", "b"], GoldenTargets.Select(new GoldenSnapshotSpec { NamespaceSelector = new V1LabelSelector() }, all).Select(t => t.Namespace));
        Assert.Equal(["b"], GoldenTargets.Select(new GoldenSnapshotSpec { Namespaces = ["b", "gone"] }, all).Select(t => t.Namespace));
    }

    public static TheoryData<int[], int?, int, int[], string> RetentionCases => new()
    {
        // revisions (newest cut unless negative = being cut), current, limit, held revisions, expected retired
        { new[] { 1, 2, 3, 4 }, 4, 3, Array.Empty<int>(), "1" },
        { new[] { 1, 2, 3, 4 }, 4, 1, Array.Empty<int>(), "1,2,3" },
        { new[] { 1, 2, 3, 4 }, 4, 1, new[] { 2 }, "1,3" },
        { new[] { 1, 2, 3 }, 3, 5, Array.Empty<int>(), "" },
        { new[] { 1, 2, 3, -4 }, 3, 1, Array.Empty<int>(), "1,2" },
        { new[] { 1, 2, 3 }, 2, 1, Array.Empty<int>(), "1" },
    };

    [Theory]
    [MemberData(nameof(RetentionCases))]
    public void Retention_KeepsTheNewestCut_TheCurrent_OneBeingCut_AndWhatIsHeld(int[] revisions, int? current, int limit, int[] held, string retired)
    {
        var list = revisions.Select(r => new GoldenRevision { Revision = Math.Abs(r), SnapshotHandle = r < 0 ? null : "h" + r }).ToList();
        var verdicts = GoldenRetention.Decide(list, current, limit, r => held.Contains(r) ? ["holder of " + r] : []);
        Assert.Equal(retired, string.Join(",", verdicts.Where(v => v.Retire).Select(v => v.Revision).Order()));
        Assert.All(verdicts.Where(v => held.Contains(v.Revision) && !v.Retire && v.HeldBy.Count > 0), v => Assert.Equal(["holder of " + v.Revision], v.HeldBy));
    }

    [Fact]
    public void ContentNames_NeverCollide_AcrossGoldenRevisionNamespaceAndSlot()
    {
        var key = Gen.Select(Gen.String[Gen.Char["ab.-"], 1, 6].Where(s => !s.StartsWith('.') && !s.EndsWith('.')), Gen.Int[1, 12], Gen.String[Gen.Char["ab-r1"], 1, 5], Gen.Bool);
        key.Select(key).Sample((a, b) =>
        {
            string na = GoldenObjects.ContentName(a.Item1, a.Item2, a.Item3, a.Item4 ? GoldenSlot.Pinned : GoldenSlot.Current);
            string nb = GoldenObjects.ContentName(b.Item1, b.Item2, b.Item3, b.Item4 ? GoldenSlot.Pinned : GoldenSlot.Current);
            Assert.Equal(a == b, na == nb);
        });
    }

    private static bool Model(V1LabelSelector s, IDictionary<string, string> labels) =>
        (s.MatchLabels ?? new Dictionary<string, string>()).All(kv => labels.TryGetValue(kv.Key, out var v) && v == kv.Value)
        && (s.MatchExpressions ?? []).All(e => e.OperatorProperty switch
        {
            "In" => labels.TryGetValue(e.Key, out var v) && e.Values.Contains(v),
            "NotIn" => !labels.TryGetValue(e.Key, out var v) || !e.Values.Contains(v),
            "DoesNotExist" => !labels.ContainsKey(e.Key),
            _ => labels.ContainsKey(e.Key),
        });
}
