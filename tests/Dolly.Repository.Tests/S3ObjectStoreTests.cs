using System.Net;
using System.Net.Sockets;
using CsCheck;
using Dolly.Repository.Storage;

namespace Dolly.Repository.Tests;

/// <summary>S3ObjectStore against a real radosgw: data, keys, listing and the errors a user can hit.</summary>
[Collection(RgwCollection.Name)]
public sealed class S3ObjectStoreTests(RgwFixture rgw)
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    public static TheoryData<string, int> RoundTripCases => new()
    {
        { "empty", 0 },
        { "one-byte", 1 },
        { "chunks/ab/cdef0123456789", 4096 },
        { "a b/with spaces", 100 },
        { "ünïcödé/ß/日本", 100 },
        { "x+y=z&q?#frag", 100 },
        { "percent%2Fnot-a-slash", 100 },
        { "tilde~star*paren(1)", 100 },
        { "big/4MiB-plus-one", (4 << 20) + 1 },
    };

    [Theory]
    [MemberData(nameof(RoundTripCases))]
    public async Task PutGet_AnyKeyAndSize_ReturnsSameBytes(string key, int size)
    {
        var bucket = await rgw.NewBucketAsync(Ct);
        using var store = rgw.Store(bucket, "repo");
        var data = Bytes(size, seed: size);

        await store.PutAsync(key, data, Ct);

        Assert.Equal(data, await store.GetAsync(key, Ct));
        Assert.True(await store.ExistsAsync(key, Ct));
        var listed = await ToListAsync(store.ListAsync("", Ct));
        Assert.Equal(new ObjectInfo(key, size, listed.Single().LastModified), listed.Single());
        Assert.NotEqual(DateTimeOffset.MinValue, listed.Single().LastModified);
    }

    [Fact]
    public async Task PutGet_RandomContent_RoundTrips()
    {
        var bucket = await rgw.NewBucketAsync(Ct);
        using var store = rgw.Store(bucket);
        var n = 0;
        await Gen.Byte.Array[0, 300_000].SampleAsync(
            async data =>
            {
                var key = "p/" + Interlocked.Increment(ref n);
                await store.PutAsync(key, data, Ct);
                Assert.Equal(data, await store.GetAsync(key, Ct));
            },
            iter: 25,
            threads: 1);
    }

    [Fact]
    public async Task Put_SliceOfLargerArray_StoresOnlyTheSlice()
    {
        var bucket = await rgw.NewBucketAsync(Ct);
        using var store = rgw.Store(bucket);
        var buffer = Bytes(10_000, seed: 7);

        await store.PutAsync("slice", buffer.AsMemory(1000, 3000), Ct);

        Assert.Equal(buffer[1000..4000], await store.GetAsync("slice", Ct));
    }

    [Fact]
    public async Task Put_ExistingKey_ReplacesWholeObject()
    {
        var bucket = await rgw.NewBucketAsync(Ct);
        using var store = rgw.Store(bucket);
        await store.PutAsync("manifest", Bytes(1 << 20, seed: 1), Ct);
        var replacement = Bytes(10, seed: 2);

        await store.PutAsync("manifest", replacement, Ct);

        Assert.Equal(replacement, await store.GetAsync("manifest", Ct));
        Assert.Equal(10, (await ToListAsync(store.ListAsync("manifest", Ct))).Single().Size);
    }

    [Fact]
    public async Task GetAndExists_MissingKey_NullAndFalse()
    {
        var bucket = await rgw.NewBucketAsync(Ct);

        // A fresh store has not seen the bucket yet: its HEAD 404 needs the bucket check to mean "no key".
        using (var fresh = rgw.Store(bucket))
        {
            Assert.False(await fresh.ExistsAsync("nothing/here", Ct));
        }

        using var store = rgw.Store(bucket);
        Assert.Null(await store.GetAsync("nothing/here", Ct));
        Assert.Null(await store.GetRangeAsync("nothing/here", 0, 10, Ct));
        Assert.False(await store.ExistsAsync("nothing/here", Ct));
    }

    [Fact]
    public async Task Delete_TwiceAndNeverPut_Succeeds()
    {
        var bucket = await rgw.NewBucketAsync(Ct);
        using var store = rgw.Store(bucket);
        await store.PutAsync("gone", Bytes(100, seed: 3), Ct);
        await store.PutAsync("kept", Bytes(100, seed: 4), Ct);

        await store.DeleteAsync("gone", Ct);
        await store.DeleteAsync("gone", Ct);
        await store.DeleteAsync("never-existed", Ct);

        Assert.Null(await store.GetAsync("gone", Ct));
        Assert.False(await store.ExistsAsync("gone", Ct));
        Assert.Equal(["kept"], (await ToListAsync(store.ListAsync("", Ct))).Select(o => o.Key));
    }

    [Fact]
    public async Task List_MoreThanOnePage_EveryKeyUnderPrefixInOrderAndNothingElse()
    {
        var bucket = await rgw.NewBucketAsync(Ct);
        using var store = rgw.Store(bucket, "repo-a");
        using var neighbour = rgw.Store(bucket, "repo-ab");
        using var root = rgw.Store(bucket);
        // S3 pages hold at most 1000 keys: 1234 takes two pages, and the continuation token must be followed.
        var chunks = Enumerable.Range(0, 1234).Select(i => $"chunks/{i * 7919 % 100_000:x5}").ToList();
        var manifests = Enumerable.Range(0, 5).Select(i => $"manifests/m{i}").ToList();
        await Parallel.ForEachAsync(
            chunks.Concat(manifests),
            new ParallelOptions { MaxDegreeOfParallelism = 16, CancellationToken = Ct },
            async (key, ct) => await store.PutAsync(key, Bytes(key.Length, seed: key.Length), ct));
        await neighbour.PutAsync("chunks/00000", Bytes(5, seed: 5), Ct);
        await root.PutAsync("repo-a-not-in-prefix", Bytes(5, seed: 5), Ct);

        var listedChunks = await ToListAsync(store.ListAsync("chunks/", Ct));
        var listedAll = await ToListAsync(store.ListAsync("", Ct));

        Assert.Equal(chunks.Order(StringComparer.Ordinal), listedChunks.Select(o => o.Key));
        Assert.All(listedChunks, o => Assert.Equal(o.Key.Length, o.Size));
        Assert.Equal(chunks.Concat(manifests).Order(StringComparer.Ordinal), listedAll.Select(o => o.Key));
        Assert.Equal(["chunks/00000"], (await ToListAsync(neighbour.ListAsync("", Ct))).Select(o => o.Key));
        Assert.Empty(await ToListAsync(store.ListAsync("nothing/", Ct)));
    }

    public static TheoryData<long, int, int, int> RangeCases => new()
    {
        // offset, length, expected start, expected count (object of 10000 bytes)
        { 0, 10, 0, 10 },
        { 4096, 4096, 4096, 4096 },
        { 9990, 100, 9990, 10 },
        { 9999, 1, 9999, 1 },
        { 10_000, 10, 0, 0 },
        { 50_000, 10, 0, 0 },
    };

    [Theory]
    [MemberData(nameof(RangeCases))]
    public async Task GetRange_AnyOffset_ReturnsThatSliceClippedToTheEnd(long offset, int length, int start, int count)
    {
        var bucket = await rgw.NewBucketAsync(Ct);
        using var store = rgw.Store(bucket);
        var data = Bytes(10_000, seed: 9);
        await store.PutAsync("obj", data, Ct);

        var part = await store.GetRangeAsync("obj", offset, length, Ct);

        Assert.Equal(data.AsSpan(start, count).ToArray(), part);
    }

    [Fact]
    public async Task CreateBucket_Twice_SecondAnswersFalseAndKeepsObjects()
    {
        var bucket = await rgw.NewBucketAsync(Ct);
        using var store = rgw.Store(bucket);
        await store.PutAsync("k", Bytes(10, seed: 10), Ct);

        Assert.False(await store.CreateBucketAsync(Ct));
        Assert.Equal(Bytes(10, seed: 10), await store.GetAsync("k", Ct));
    }

    internal static readonly string[] OperationNames = ["put", "get", "range", "exists", "delete", "list"];

    public static TheoryData<string> Operations => new(OperationNames);

    [Theory]
    [MemberData(nameof(Operations))]
    public async Task AnyOperation_WrongSecretKey_AccessDeniedNamingTheBucket(string operation)
    {
        var bucket = await rgw.NewBucketAsync(Ct);
        using var store = rgw.Store(bucket, adjust: o => o with { SecretKey = o.SecretKey + "x" });

        var ex = await Assert.ThrowsAsync<ObjectStoreException>(() => Run(store, operation));

        Assert.Equal(ObjectStoreError.AccessDenied, ex.Error);
        Assert.Contains(bucket, ex.Message, StringComparison.Ordinal);
        Assert.Contains(rgw.Endpoint.Endpoint.Authority, ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task RefusedPut_NextRequestOnTheSameConnection_Succeeds()
    {
        // radosgw refuses a small PUT (sent without waiting for 100-continue) before reading its body and keeps the
        // connection: the next request on it (the SDK pools connections per configuration, not per credentials)
        // must not fail with the frontend's bare 400.
        var bucket = await rgw.NewBucketAsync(Ct);
        using var refused = rgw.Store(bucket, adjust: o => o with { SecretKey = o.SecretKey + "x" });
        using var store = rgw.Store(bucket);
        var data = Bytes(64 * 1024, seed: 14);
        await store.PutAsync("k", data, Ct);

        for (var i = 0; i < 20; i++)
        {
            var ex = await Assert.ThrowsAsync<ObjectStoreException>(() => refused.PutAsync("k", Bytes(10 + i, seed: i), Ct));
            Assert.Equal(ObjectStoreError.AccessDenied, ex.Error);
            Assert.Equal(data, await store.GetAsync("k", Ct));
            Assert.True(await store.ExistsAsync("k", Ct));
        }
    }

    [Theory]
    [MemberData(nameof(Operations))]
    public async Task AnyOperation_UnknownAccessKey_AccessDenied(string operation)
    {
        var bucket = await rgw.NewBucketAsync(Ct);
        using var store = rgw.Store(bucket, adjust: o => o with { AccessKey = "NOSUCHKEY0000000000" });

        var ex = await Assert.ThrowsAsync<ObjectStoreException>(() => Run(store, operation));

        Assert.Equal(ObjectStoreError.AccessDenied, ex.Error);
    }

    [Theory]
    [MemberData(nameof(Operations))]
    public async Task AnyOperation_BucketOfAnotherUser_AccessDenied(string operation)
    {
        var bucket = await rgw.NewBucketAsync(Ct);
        var other = await OtherUserWithWorkingKeysAsync();
        using var store = new S3ObjectStore(other.ToOptions(bucket));

        var ex = await Assert.ThrowsAsync<ObjectStoreException>(() => Run(store, operation));

        Assert.Equal(ObjectStoreError.AccessDenied, ex.Error);
        Assert.Contains(bucket, ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task CreateBucket_NameOwnedByAnotherUser_AccessDenied()
    {
        var bucket = await rgw.NewBucketAsync(Ct);
        var other = await OtherUserWithWorkingKeysAsync();
        using var store = new S3ObjectStore(other.ToOptions(bucket));

        var ex = await Assert.ThrowsAsync<ObjectStoreException>(() => store.CreateBucketAsync(Ct));

        Assert.Equal(ObjectStoreError.AccessDenied, ex.Error);
    }

    [Theory]
    [MemberData(nameof(Operations))]
    public async Task AnyOperation_MissingBucket_NoSuchBucketNamingIt(string operation)
    {
        rgw.Require();
        var bucket = "missing-" + Guid.NewGuid().ToString("N")[..16];
        using var store = rgw.Store(bucket);

        var ex = await Assert.ThrowsAsync<ObjectStoreException>(() => Run(store, operation));

        Assert.Equal(ObjectStoreError.NoSuchBucket, ex.Error);
        Assert.Contains($"bucket '{bucket}'", ex.Message, StringComparison.Ordinal);
    }

    [Theory]
    [MemberData(nameof(Operations))]
    public async Task AnyOperation_NothingListening_UnreachableNamingTheEndpoint(string operation)
    {
        rgw.Require();
        var port = ClosedPort();
        using var store = rgw.Store("some-bucket", adjust: o => o with { Endpoint = new Uri($"http://127.0.0.1:{port}"), MaxRetries = 1 });

        var ex = await Assert.ThrowsAsync<ObjectStoreException>(() => Run(store, operation));

        Assert.Equal(ObjectStoreError.Unreachable, ex.Error);
        Assert.Contains($"127.0.0.1:{port}", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task AnyOperation_CallerCancels_OperationCanceledNotAStoreFailure()
    {
        var bucket = await rgw.NewBucketAsync(Ct);
        using var store = rgw.Store(bucket);
        using var cancelled = new CancellationTokenSource();
        await cancelled.CancelAsync();

        foreach (var operation in new Func<Task>[]
        {
            () => store.PutAsync("k", new byte[10], cancelled.Token),
            () => store.GetAsync("k", cancelled.Token),
            () => store.ExistsAsync("k", cancelled.Token),
            () => store.DeleteAsync("k", cancelled.Token),
            () => ToListAsync(store.ListAsync("", cancelled.Token)),
        })
        {
            await Assert.ThrowsAnyAsync<OperationCanceledException>(operation);
        }
    }

    /// <summary>A second S3 user whose keys are shown to work (it creates and writes a bucket of its own).</summary>
    private async Task<S3DevServerEndpoint> OtherUserWithWorkingKeysAsync()
    {
        var other = await rgw.NewUserAsync(Ct);
        using var own = new S3ObjectStore(other.ToOptions("own-" + Guid.NewGuid().ToString("N")[..16]));
        Assert.True(await own.CreateBucketAsync(Ct));
        await own.PutAsync("k", new byte[10], Ct);
        return other;
    }

    /// <summary>Runs one operation of the store by name (each touches the key "k" or lists everything).</summary>
    internal static async Task Run(S3ObjectStore store, string operation)
    {
        switch (operation)
        {
            case "put": await store.PutAsync("k", new byte[10], Ct); break;
            case "get": await store.GetAsync("k", Ct); break;
            case "range": await store.GetRangeAsync("k", 0, 10, Ct); break;
            case "exists": await store.ExistsAsync("k", Ct); break;
            case "delete": await store.DeleteAsync("k", Ct); break;
            case "list": await ToListAsync(store.ListAsync("", Ct)); break;
            default: throw new ArgumentOutOfRangeException(nameof(operation), operation, "unknown operation");
        }
    }

    internal static byte[] Bytes(int size, int seed)
    {
        var data = new byte[size];
        new Random(seed).NextBytes(data);
        return data;
    }

    internal static async Task<List<ObjectInfo>> ToListAsync(IAsyncEnumerable<ObjectInfo> source)
    {
        var list = new List<ObjectInfo>();
        await foreach (var item in source)
        {
            list.Add(item);
        }

        return list;
    }

    private static int ClosedPort()
    {
        // Bind and release: the kernel does not hand the port out again at once, and nothing listens on it.
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        var port = ((IPEndPoint)listener.LocalEndpoint).Port;
        listener.Stop();
        return port;
    }
}
