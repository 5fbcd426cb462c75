using Dolly.Repository.Storage;

namespace Dolly.Repository.Tests;

/// <summary>Settings a user can get wrong are refused before any request, with a message naming the field.</summary>
public sealed class S3ObjectStoreOptionsTests
{
    private static readonly S3ObjectStoreOptions Valid = new()
    {
        Endpoint = new Uri("http://127.0.0.1:7480"),
        Region = "default",
        Bucket = "backups",
        Prefix = "cluster-a",
        AccessKey = "AK",
        SecretKey = "SK",
    };

    public static TheoryData<string, string> InvalidCases => new()
    {
        { "endpoint=ftp://h", "endpoint 'ftp://h/'" },
        { "endpoint=http://h/bucket", "has a path or query" },
        { "endpoint=http://h/?x=1", "has a path or query" },
        { "bucket=Backups", "bucket 'Backups'" },
        { "bucket=ab", "bucket 'ab'" },
        { "bucket=a..b", "bucket 'a..b'" },
        { "bucket=-ab", "bucket '-ab'" },
        { "bucket=a_b", "bucket 'a_b'" },
        { "prefix=/abs", "prefix '/abs'" },
        { "prefix=a//b", "prefix 'a//b'" },
        { "prefix=a/../b", "prefix 'a/../b'" },
        { "region=", "region is empty" },
        { "access=", "access key is empty" },
        { "secret=", "secret key is empty" },
        { "timeout=0", "timeouts must be positive" },
        { "retries=-1", "max retries -1" },
    };

    [Theory]
    [MemberData(nameof(InvalidCases))]
    public void Constructor_InvalidSetting_ArgumentExceptionNamingIt(string change, string expected)
    {
        var options = Apply(Valid, change);

        var ex = Assert.Throws<ArgumentException>(() => new S3ObjectStore(options));

        Assert.Contains(expected, ex.Message, StringComparison.Ordinal);
        Assert.Single(options.Validate());
    }

    [Theory]
    [InlineData("", "s3://backups/ at http://127.0.0.1:7480")]
    [InlineData("cluster-a", "s3://backups/cluster-a/ at http://127.0.0.1:7480")]
    [InlineData("cluster-a/", "s3://backups/cluster-a/ at http://127.0.0.1:7480")]
    [InlineData("x/y.z", "s3://backups/x/y.z/ at http://127.0.0.1:7480")]
    public void Location_ValidPrefix_NamesBucketPrefixAndEndpoint(string prefix, string location)
    {
        using var store = new S3ObjectStore(Valid with { Prefix = prefix });

        Assert.Equal(location, store.Location);
    }

    [Theory]
    [InlineData("/abs")]
    [InlineData("trailing/")]
    [InlineData("a//b")]
    [InlineData("")]
    public async Task AnyOperation_InvalidKey_ArgumentExceptionBeforeAnyRequest(string key)
    {
        // Nothing listens on the endpoint: a request would fail as Unreachable, not as an argument error.
        using var store = new S3ObjectStore(Valid with { Endpoint = new Uri("http://127.0.0.1:1") });

        await Assert.ThrowsAnyAsync<ArgumentException>(() => store.GetAsync(key, TestContext.Current.CancellationToken));
        await Assert.ThrowsAnyAsync<ArgumentException>(() => store.PutAsync(key, new byte[1], TestContext.Current.CancellationToken));
    }

    private static S3ObjectStoreOptions Apply(S3ObjectStoreOptions o, string change)
    {
        var (name, value) = (change[..change.IndexOf('=', StringComparison.Ordinal)], change[(change.IndexOf('=', StringComparison.Ordinal) + 1)..]);
        return name switch
        {
            "endpoint" => o with { Endpoint = new Uri(value) },
            "bucket" => o with { Bucket = value },
            "prefix" => o with { Prefix = value },
            "region" => o with { Region = value },
            "access" => o with { AccessKey = value },
            "secret" => o with { SecretKey = value },
            "timeout" => o with { RequestTimeout = TimeSpan.FromSeconds(int.Parse(value, System.Globalization.CultureInfo.InvariantCulture)) },
            "retries" => o with { MaxRetries = int.Parse(value, System.Globalization.CultureInfo.InvariantCulture) },
            _ => throw new ArgumentOutOfRangeException(nameof(change), change, "unknown setting"),
        };
    }
}
