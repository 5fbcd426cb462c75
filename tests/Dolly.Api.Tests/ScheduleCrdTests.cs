namespace Dolly.Api.Tests;

/// <summary>The dolly.io schedule kinds as kubectl sees them: printer columns, schema defaults and refusals.</summary>
public sealed class ScheduleCrdTests(ServerFixture fx) : IClassFixture<ServerFixture>
{
    [Fact]
    public async Task SnapshotSchedule_PrintsItsColumns_AndTakesTheDefaults()
    {
        (await fx.KubectlWithInputAsync(
            "apiVersion: dolly.io/v1alpha1\nkind: SnapshotSchedule\nmetadata: {name: cols, namespace: default}\nspec: {schedule: '@hourly'}\n",
            "apply", "-f", "-")).ShouldSucceed();
        var table = (await fx.KubectlAsync("get", "snapshotschedule", "cols", "-n", "default")).ShouldSucceed();
        Assert.Matches(@"^NAME\s+SCHEDULE\s+TIMEZONE\s+NEXT\s+LAST\s+KEPT\s+SUSPENDED\s+AGE\n", table.Stdout);
        Assert.Matches(@"\ncols\s+@hourly\s+UTC\s+\s+false\s", table.Stdout);

        var wide = (await fx.KubectlAsync("get", "clustersnapshotschedules", "-o", "wide")).ShouldSucceed();
        Assert.Contains("No resources found", wide.Stderr, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("retention: {maxAge: 7 days}", "spec.retention.maxAge")]
    [InlineData("retention: {maxCount: 0}", "spec.retention.maxCount")]
    [InlineData("retention: {weekly: -2}", "spec.retention.weekly")]
    [InlineData("suspend: maybe", "spec.suspend")]
    public async Task SnapshotSchedule_SchemaRefuses(string field, string path)
    {
        var refused = (await fx.KubectlWithInputAsync(
            $"apiVersion: dolly.io/v1alpha1\nkind: SnapshotSchedule\nmetadata: {{name: bad, namespace: default}}\nspec: {{schedule: '@daily', {field}}}\n",
            "apply", "-f", "-")).ShouldFail();
        Assert.Contains(path, refused.Stderr, StringComparison.Ordinal);
    }
}
