using System.Text.Json.Nodes;
using Dolly.Api.Semantics;

namespace Dolly.Api.Tests;

/// <summary>The CEL subset used by CRD validation rules.</summary>
public sealed class CelTests
{
    private static readonly JsonNode Self = JsonNode.Parse("""{"a":"x","n":3,"list":[1,2,3],"m":{"k":"v"},"s":{"pvc":"p"}}""")!;

    [Theory]
    [InlineData("self.a == 'x'", true)]
    [InlineData("self.n > 2 && self.n <= 3", true)]
    [InlineData("has(self.a) && !has(self.b)", true)]
    [InlineData("has(self.s.pvc) != has(self.s.content)", true)]
    [InlineData("size(self.list) == 3 && self.list.size() == 3", true)]
    [InlineData("self.list.all(x, x > 0)", true)]
    [InlineData("self.list.exists(x, x == 2)", true)]
    [InlineData("self.list.exists_one(x, x > 1)", false)]
    [InlineData("'k' in self.m && 2 in self.list", true)]
    [InlineData("self.a.startsWith('x') && self.a.matches('^[a-z]$')", true)]
    [InlineData("self.n + 1 == 4 ? true : false", true)]
    [InlineData("self.list[0] == 1 && self.m['k'] == 'v'", true)]
    [InlineData("self.a + 'y' == \"xy\"", true)]
    [InlineData("self.n % 2 == 1 && self.n / 2 == 1", true)]
    public void Check_EvaluatesRule(string rule, bool expected) => Assert.Equal(expected, Cel.Check(rule, Self, null));

    [Theory]
    [InlineData("has(self.__namespace__) && self.__namespace__ == 'ns'", true)]
    [InlineData("has(self.name) && has(self.__namespace__)", true)]
    [InlineData("self.a__dash__b == 1 && self.c__dot__d == 2 && self.x__underscores__y == 3 && self.e__slash__f == 4", true)]
    [InlineData("has(self.__if__)", false)]
    public void Check_EscapedPropertyNames_ReadTheKubernetesNames(string rule, bool expected)
    {
        // As kube-apiserver: a reserved word is written __word__, and __ . - / as __underscores__ __dot__ __dash__ __slash__.
        var self = JsonNode.Parse("""{"name":"n","namespace":"ns","a-b":1,"c.d":2,"x__y":3,"e/f":4}""");
        Assert.Equal(expected, Cel.Check(rule, self, null));
    }

    [Fact]
    public void Check_TransitionRuleComparesWithOldSelf()
    {
        var old = JsonNode.Parse("\"a\"");
        Assert.True(Cel.Check("self == oldSelf", JsonNode.Parse("\"a\""), old));
        Assert.False(Cel.Check("self == oldSelf", JsonNode.Parse("\"b\""), old));
        Assert.True(Cel.IsTransitionRule("self == oldSelf"));
        Assert.False(Cel.IsTransitionRule("self.oldSelfish == 1"));
    }

    [Fact]
    public void Check_MissingFieldOrBadSyntax_Throws()
    {
        Assert.Throws<CelException>(() => Cel.Check("self.missing == 1", Self, null));
        Assert.Throws<CelException>(() => Cel.Check("self.a ==", Self, null));
        Assert.Throws<CelException>(() => Cel.Check("self.a", Self, null));
    }
}
