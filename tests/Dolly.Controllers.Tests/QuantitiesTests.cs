using CsCheck;
using k8s.Models;

namespace Dolly.Controllers.Tests;

public sealed class QuantitiesTests
{
    // Not a power of 1024: the quantity keeps the number, which Kubernetes prints canonically (1000 is "1k").
    [Theory]
    [InlineData(1073741824L, "1Gi")]
    [InlineData(536870912L, "512Mi")]
    [InlineData(3L << 40, "3Ti")]
    [InlineData(1536L, "1536")]
    [InlineData(1000L, "1k")]
    [InlineData(0L, "0")]
    public void FromBytes_UsesTheLargestBinarySuffixThatDividesExactly(long bytes, string expected) =>
        Assert.Equal(expected, Quantities.FromBytes(bytes).ToString());

    [Fact]
    public void FromBytes_ThenToBytes_GivesTheSameCount() =>
        Gen.Long[0, long.MaxValue / 2].Sample(bytes => Assert.Equal(bytes, Quantities.ToBytes(Quantities.FromBytes(bytes))));

    [Theory]
    [InlineData("1Gi", 1073741824L)]
    [InlineData("2G", 2000000000L)]
    [InlineData("1.5Ki", 1536L)]
    [InlineData("100m", 1L)]
    public void ToBytes_ReadsKubernetesQuantities_RoundingUp(string quantity, long expected) =>
        Assert.Equal(expected, Quantities.ToBytes(new ResourceQuantity(quantity)));

    [Fact]
    public void Request_IsNullWithoutAStorageRequest()
    {
        Assert.Null(Quantities.Request(new V1PersistentVolumeClaim { Spec = new V1PersistentVolumeClaimSpec() }));
        var claim = new V1PersistentVolumeClaim
        {
            Spec = new V1PersistentVolumeClaimSpec
            {
                Resources = new V1VolumeResourceRequirements { Requests = new Dictionary<string, ResourceQuantity> { ["storage"] = new("2Gi") } },
            },
        };
        Assert.Equal(2L << 30, Quantities.Request(claim));
    }
}
