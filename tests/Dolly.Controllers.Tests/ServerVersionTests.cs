using k8s.Models;

namespace Dolly.Controllers.Tests;

/// <summary>Which API servers drop the CRDs' validation rules, from what their /version says.</summary>
public sealed class ServerVersionTests
{
    [Theory]
    [InlineData("1", "24", "v1.24.17", true)]
    [InlineData("1", "24+", "v1.24.17-eks-1234", true)]
    [InlineData("1", "21", "v1.21.0", true)]
    [InlineData("1", "25", "v1.25.0", false)]
    [InlineData("1", "25+", "v1.25.16-gke.1", false)]
    [InlineData("1", "31", "v1.31.2", false)]
    [InlineData("2", "0", "v2.0.0", false)]
    [InlineData("", "", "", false)]
    [InlineData("1", "", "v1", false)]
    [InlineData("one", "twenty", "?", false)]
    public void ValidationRulesWarning_OnlyForServersBefore125(string major, string minor, string gitVersion, bool warns)
    {
        string? warning = ServerVersion.ValidationRulesWarning(new VersionInfo { Major = major, Minor = minor, GitVersion = gitVersion });
        if (warns)
        {
            Assert.NotNull(warning);
            Assert.Contains(gitVersion, warning, StringComparison.Ordinal);
            Assert.Contains("x-kubernetes-validations", warning, StringComparison.Ordinal);
            Assert.Contains("1.25 or later", warning, StringComparison.Ordinal);
        }
        else
        {
            Assert.Null(warning);
        }
    }

    [Fact]
    public void NoAnswer_NoWarning() => Assert.Null(ServerVersion.ValidationRulesWarning(null));
}
