using Dolly.Repository.Storage;

namespace Dolly.Repository.Tests;

public sealed class DirectoryObjectStoreTests
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    [Fact]
    public async Task PutGetExistsDelete_RoundTrip_AndReplaceIsWhole()
    {
        using var tmp = new TempDir();
        var store = DirectoryObjectStore.Create(tmp.Sub("r"));
        Assert.Null(await store.GetAsync("chunks/ab/x", Ct));
        Assert.False(await store.ExistsAsync("chunks/ab/x", Ct));
        await store.PutAsync("chunks/ab/x", "first"u8.ToArray(), Ct);
        await store.PutAsync("chunks/ab/x", "second, longer"u8.ToArray(), Ct);
        Assert.True(await store.ExistsAsync("chunks/ab/x", Ct));
        Assert.Equal("second, longer"u8.ToArray(), await store.GetAsync("chunks/ab/x", Ct));
        Assert.Equal(["x"], Directory.GetFileSystemEntries(tmp.Sub("r/chunks/ab")).Select(Path.GetFileName));
        await store.DeleteAsync("chunks/ab/x", Ct);
        await store.DeleteAsync("chunks/ab/x", Ct);
        await store.DeleteAsync("never/was", Ct);
        Assert.False(await store.ExistsAsync("chunks/ab/x", Ct));
    }

    [Fact]
    public async Task List_ReturnsKeysUnderPrefixInOrder_SkippingTemporaryFiles()
    {
        using var tmp = new TempDir();
        var store = DirectoryObjectStore.Create(tmp.Sub("r"));
        foreach (var k in new[] { "manifests/b", "chunks/01/z", "chunks/00/y", "manifests/a", "config" })
        {
            await store.PutAsync(k, new byte[k.Length], Ct);
        }

        File.WriteAllText(tmp.Sub("r/chunks/00/.y.tmp-123"), "torn");
        var chunks = new List<ObjectInfo>();
        await foreach (var o in store.ListAsync("chunks/", Ct))
        {
            chunks.Add(o);
        }

        Assert.Equal(["chunks/00/y", "chunks/01/z"], chunks.Select(o => o.Key));
        Assert.Equal([11L, 11L], chunks.Select(o => o.Size));
        var some = new List<string>();
        await foreach (var o in store.ListAsync("manifests/a", Ct))
        {
            some.Add(o.Key);
        }

        Assert.Equal(["manifests/a"], some);
    }

    [Theory]
    [InlineData("")]
    [InlineData("/etc/passwd")]
    [InlineData("../outside")]
    [InlineData("chunks/../../outside")]
    [InlineData("chunks//x")]
    [InlineData("chunks/./x")]
    [InlineData("chunks\\x")]
    [InlineData("chunks/.x.tmp-1")]
    public async Task InvalidKeys_AreRefused_AndNothingIsWritten(string key)
    {
        using var tmp = new TempDir();
        var store = DirectoryObjectStore.Create(tmp.Sub("r"));
        Assert.NotNull(DirectoryObjectStore.ValidateKey(key));
        await Assert.ThrowsAsync<ArgumentException>(() => store.PutAsync(key, new byte[1], Ct));
        await Assert.ThrowsAsync<ArgumentException>(() => store.GetAsync(key, Ct));
        Assert.Equal([tmp.Sub("r")], Directory.GetFileSystemEntries(tmp.Path, "*", SearchOption.AllDirectories));
    }

    [Fact]
    public async Task MissingRoot_IsNoSuchBucket_NamingTheDirectory()
    {
        using var tmp = new TempDir();
        var store = new DirectoryObjectStore(tmp.Sub("gone"));
        var get = await Assert.ThrowsAsync<ObjectStoreException>(() => store.GetAsync("config", Ct));
        Assert.Equal(ObjectStoreError.NoSuchBucket, get.Error);
        Assert.Contains(tmp.Sub("gone"), get.Message, StringComparison.Ordinal);
        var put = await Assert.ThrowsAsync<ObjectStoreException>(() => store.PutAsync("config", new byte[1], Ct));
        Assert.Equal(ObjectStoreError.NoSuchBucket, put.Error);
        Assert.False(Directory.Exists(tmp.Sub("gone")));
    }
}
