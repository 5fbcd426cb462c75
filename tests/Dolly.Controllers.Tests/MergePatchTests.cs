using Dolly.Controllers.Runtime;
using k8s.Models;

namespace Dolly.Controllers.Tests;

public sealed class MergePatchTests
{
    [Fact]
    public void FieldsNestUnderTheirParents_AndNullRemoves()
    {
        var patch = new MergePatch()
            .Annotation("a", "1")
            .Annotation("b", null)
            .Spec("uid-1", "volumeSnapshotRef", "uid")
            .Spec("class", "volumeSnapshotClassName")
            .Finalizers(["x", "y"]);
        Assert.False(patch.ForStatus);
        Assert.Equal(
            """{"metadata":{"annotations":{"a":"1","b":null},"finalizers":["x","y"]},"spec":{"volumeSnapshotRef":{"uid":"uid-1"},"volumeSnapshotClassName":"class"}}""",
            patch.ToJson().ToJsonString());
    }

    [Fact]
    public void AStatusPatch_IsForTheSubresource_AndCannotTakeOtherFields()
    {
        var patch = new MergePatch().Status("readyToUse", false).Status("error", null);
        Assert.True(patch.ForStatus);
        Assert.Equal("""{"status":{"readyToUse":false,"error":null}}""", patch.ToJson().ToJsonString());
        Assert.Throws<InvalidOperationException>(() => patch.Annotation("a", "1"));
        Assert.Throws<InvalidOperationException>(() => new MergePatch().Spec("v", "f").Status("readyToUse", true));
    }

    [Theory]
    [InlineData(new string[0], "f", true, """["f"]""")]
    [InlineData(new[] { "a", "f" }, "f", true, null)]
    [InlineData(new[] { "a", "f", "b" }, "f", false, """["a","b"]""")]
    [InlineData(new[] { "a" }, "f", false, null)]
    public void Finalizer_AddsOrRemovesOne_KeepingTheRest_OrIsNullWhenAlreadySo(string[] current, string finalizer, bool present, string? expected)
    {
        var meta = new V1ObjectMeta { Finalizers = current.Length == 0 ? null : [.. current] };
        var patch = MergePatch.Finalizer(meta, finalizer, present);
        Assert.Equal(expected, patch?.ToJson()["metadata"]!["finalizers"]!.ToJsonString());
    }
}
