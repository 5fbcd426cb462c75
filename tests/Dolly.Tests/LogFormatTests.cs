namespace Dolly.Tests;

/// <summary><c>--log-format</c> of the long-running commands takes console or json and nothing else. (The JSON lines themselves are tested on a real process in Dolly.Web.Tests.)</summary>
public sealed class LogFormatTests : CliTestBase
{
    [Theory]
    [InlineData("up", "xml")]
    [InlineData("up", "JSON")]
    [InlineData("node", "text")]
    public async Task AnUnknownFormat_IsAUsageError_NamingIt(string command, string format)
    {
        string[] args = command == "up"
            ? ["up", "--port", "0", "--log-format", format]
            : ["node", "--csi-socket", Path.Combine(Root, "csi.sock"), "--nbd", "unix:" + Path.Combine(Root, "nbd.sock"), "--log-format", format];
        var run = await Fails(ExitCodes.Usage, format, args);
        Assert.Contains("console", run.Err, StringComparison.Ordinal);
        Assert.False(File.Exists(Path.Combine(Root, "csi.sock")));
    }
}
