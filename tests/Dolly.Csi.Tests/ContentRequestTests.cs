using System.Buffers.Binary;
using System.Net.Sockets;
using System.Text;
using Dolly.Nbd;
using Dolly.Storage;
using Microsoft.Extensions.Logging.Abstractions;

namespace Dolly.Csi.Tests;

/// <summary>
/// <see cref="ContentRequests"/>: a request is applied at once when nobody holds the volume, waits while an NBD client
/// does, survives a restart, is applied exactly once (also when a crash interrupted it), and a refusal records nothing.
/// </summary>
public sealed class ContentRequestTests : IAsyncLifetime
{
    private const int Size = 1 << 20;
    private readonly string _dir = Path.Combine(Directory.Exists("/dev/shm") ? "/dev/shm" : Path.GetTempPath(), "dolly-cr-" + Guid.NewGuid().ToString("N")[..10]);
    private Pool _pool = null!;
    private ExportAttachments _attachments = null!;
    private NbdServer _nbd = null!;
    private ContentRequests? _requests;

    private string PoolDir => Path.Combine(_dir, "pool");

    private string NbdSocket => Path.Combine(_dir, "nbd.sock");

    private static CancellationToken Token => TestContext.Current.CancellationToken;

    public ValueTask InitializeAsync()
    {
        Directory.CreateDirectory(_dir);
        _pool = Pool.Create(PoolDir).Value;
        _ = _pool.CreateVolume("vol", Size).Value;
        Write("vol", 1);
        _ = _pool.CreateSnapshot("vol", "snap").Value;
        Write("vol", 2);
        _ = _pool.CreateVolume("other", Size / 2).Value;
        Write("other", 3);
        _ = _pool.CreateSnapshot("other", "other-snap").Value;
        _ = _pool.CreateVolume("large", Size * 2).Value;
        _ = _pool.CreateSnapshot("large", "large-snap").Value;
        StartServing();
        return ValueTask.CompletedTask;
    }

    public async ValueTask DisposeAsync()
    {
        _requests?.Dispose();
        await _nbd.DisposeAsync();
        _pool.Dispose();
        Directory.Delete(_dir, recursive: true);
    }

    private void StartServing()
    {
        _attachments = new ExportAttachments();
        _requests = ContentRequests.Open(_pool, _attachments, NullLogger.Instance);
        _nbd = new NbdServer(new ExportCatalog(_pool, _attachments), new NbdServerOptions { UnixSocketPath = NbdSocket });
        _nbd.Start();
    }

    /// <summary>Stops everything and opens the pool again, as a restart of the process does.</summary>
    private async Task RestartAsync(Action? whileStopped = null)
    {
        _requests!.Dispose();
        await _nbd.DisposeAsync();
        _pool.Dispose();
        whileStopped?.Invoke();
        _pool = Pool.Open(PoolDir).Value;
        StartServing();
    }

    private void Write(string volume, int seed)
    {
        var data = new byte[_pool.GetDevice(volume).Value.Size];
        new Random(seed).NextBytes(data);
        _pool.OpenDevice(volume).Value.Write(0, data).ThrowIfFailed();
    }

    private byte[] Read(string name)
    {
        var dev = _pool.OpenDevice(name).Value;
        var data = new byte[dev.Size];
        dev.Read(0, data).ThrowIfFailed();
        return data;
    }

    [Fact]
    public void Detached_AppliedAtOnce_VolumeHoldsTheSnapshot()
    {
        var r = _requests!.Submit("r1", "vol", "snap", allowForeign: false, unchangedSince: null);

        Assert.Equal(ContentRequestPhase.Succeeded, r.Phase);
        Assert.NotNull(r.CompletedAt);
        Assert.Equal(Read("snap"), Read("vol"));
        Assert.Equal(r, _requests.Get("r1"));
    }

    [Fact]
    public async Task Held_WaitsWithTheHolder_AppliedWhenTheClientLeaves()
    {
        var before = Read("vol");
        var client = await NbdHold.OpenAsync(NbdSocket, "vol");

        var r = _requests!.Submit("r1", "vol", "snap", allowForeign: false, unchangedSince: null);

        Assert.Equal(ContentRequestPhase.Pending, r.Phase);
        var holder = Assert.Single(_requests.HoldersOf("vol"));
        Assert.Contains("NBD client", holder.ToString(), StringComparison.Ordinal);
        Assert.Equal(ContentRequestPhase.Pending, _requests.Get("r1")!.Phase);
        Assert.Equal(before, Read("vol"));

        client.Dispose();
        await Until(() => _requests.List().Single().Phase == ContentRequestPhase.Succeeded, "the request applied once the client left");
        Assert.Equal(Read("snap"), Read("vol"));
    }

    [Fact]
    public async Task HeldAcrossARestart_StillPending_ThenAppliedAtStartWhenNobodyHoldsIt()
    {
        var before = Read("vol");
        using (await NbdHold.OpenAsync(NbdSocket, "vol"))
        {
            Assert.Equal(ContentRequestPhase.Pending, _requests!.Submit("r1", "vol", "snap", allowForeign: false, unchangedSince: null).Phase);
            Assert.Equal(before, Read("vol"));
            await RestartAsync();
        }

        var r = _requests!.Get("r1")!;
        Assert.Equal(ContentRequestPhase.Succeeded, r.Phase);
        Assert.Equal(Read("snap"), Read("vol"));
    }

    [Theory]
    [InlineData(false)] // the crash came before the engine commit
    [InlineData(true)]  // the crash came after the commit, before the outcome was recorded
    public async Task InterruptedWhileApplying_FinishedAtStart_AndNeverAppliedAgain(bool committed)
    {
        string record = Path.Combine(PoolDir, ContentRequests.DirectoryName, "r1.json");
        await RestartAsync(() =>
        {
            using var pool = Pool.Open(PoolDir).Value;
            if (committed)
            {
                _ = pool.ReplaceContent("vol", "snap", allowForeign: false).Value;
            }

            Directory.CreateDirectory(Path.GetDirectoryName(record)!);
            File.WriteAllText(record, """{"Id":"r1","Volume":"vol","Snapshot":"snap","AllowForeign":false,"Phase":"Applying","RequestedAt":"2026-12-07T10:00:00+00:00"}""");
        });

        Assert.Equal(ContentRequestPhase.Succeeded, _requests!.Get("r1")!.Phase);
        Assert.Equal(Read("snap"), Read("vol"));

        // Written after the revert, then restarted: the request is not applied a second time.
        Write("vol", 9);
        var written = Read("vol");
        await RestartAsync();
        Assert.Equal(ContentRequestPhase.Succeeded, _requests!.Get("r1")!.Phase);
        Assert.Equal(written, Read("vol"));
    }

    public static TheoryData<string, string, string, bool, ContentRequestRefusal, string> Refusals() => new()
    {
        { "bad/id", "vol", "snap", false, ContentRequestRefusal.Invalid, "request id" },
        { "r1", "nothing", "snap", false, ContentRequestRefusal.NotFound, "no volume 'nothing'" },
        { "r1", "vol", "nothing", false, ContentRequestRefusal.NotFound, "no snapshot 'nothing'" },
        { "r1", "snap", "snap", false, ContentRequestRefusal.NotFound, "no volume 'snap'" },
        { "r1", "vol", "other-snap", false, ContentRequestRefusal.Precondition, "lineage" },
        { "r1", "vol", "large-snap", true, ContentRequestRefusal.TooLarge, "grow the volume first" },
    };

    [Theory]
    [MemberData(nameof(Refusals))]
    public void Refused_NamesTheProblem_RecordsAndChangesNothing(string id, string volume, string snapshot, bool allowForeign, ContentRequestRefusal refusal, string mention)
    {
        var before = Read("vol");
        var dry = Assert.Throws<ContentRequestException>(() => _requests!.Validate(id, volume, snapshot, allowForeign, null));
        var ex = Assert.Throws<ContentRequestException>(() => _requests!.Submit(id, volume, snapshot, allowForeign, null));

        Assert.Equal((refusal, refusal), (dry.Refusal, ex.Refusal));
        Assert.Contains(mention, ex.Message, StringComparison.Ordinal);
        Assert.Empty(_requests!.List());
        Assert.False(Directory.Exists(Path.Combine(PoolDir, ContentRequests.DirectoryName)) && Directory.EnumerateFiles(Path.Combine(PoolDir, ContentRequests.DirectoryName)).Any());
        Assert.Equal(before, Read("vol"));
    }

    [Fact]
    public async Task SameId_SameFieldsIsIdempotent_OtherFieldsConflict_AndASecondRequestForTheVolumeWaitsItsTurn()
    {
        using var client = await NbdHold.OpenAsync(NbdSocket, "vol");
        var first = _requests!.Submit("r1", "vol", "snap", allowForeign: false, unchangedSince: null);
        Assert.Equal(first.RequestedAt, _requests.Submit("r1", "vol", "snap", allowForeign: false, unchangedSince: null).RequestedAt);
        Assert.Equal(ContentRequestRefusal.Conflict, Assert.Throws<ContentRequestException>(() => _requests.Submit("r1", "vol", "snap", allowForeign: true, unchangedSince: null)).Refusal);
        var busy = Assert.Throws<ContentRequestException>(() => _requests.Submit("r2", "vol", "snap", allowForeign: false, unchangedSince: null));
        Assert.Equal(ContentRequestRefusal.Busy, busy.Refusal);
        Assert.Contains("'r1'", busy.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task WrittenAfterTheGuardSnapshot_Fails_VolumeKeepsWhatWasWritten()
    {
        _ = _pool.CreateSnapshot("vol", "guard").Value;
        var client = await NbdHold.OpenAsync(NbdSocket, "vol");
        Assert.Equal(ContentRequestPhase.Pending, _requests!.Submit("r1", "vol", "snap", allowForeign: false, unchangedSince: "guard").Phase);
        Write("vol", 5);
        var written = Read("vol");

        client.Dispose();
        var r = await Until(() => _requests.List().Single() is { IsFinished: true } done ? done : null, "the request finished");

        Assert.Equal(ContentRequestPhase.Failed, r.Phase);
        Assert.Contains("written after snapshot 'guard'", r.Message, StringComparison.Ordinal);
        Assert.Equal(written, Read("vol"));
    }

    [Fact]
    public async Task DeletedWhilePending_Withdrawn_NeverApplied()
    {
        var before = Read("vol");
        var client = await NbdHold.OpenAsync(NbdSocket, "vol");
        _requests!.Submit("r1", "vol", "snap", allowForeign: false, unchangedSince: null);

        var withdrawn = _requests.Delete("r1");
        client.Dispose();
        await Until(() => _attachments.HoldersOf("vol").Count == 0, "the client gone");
        await RestartAsync();

        Assert.Equal(ContentRequestPhase.Withdrawn, withdrawn!.Phase);
        Assert.Null(_requests.Get("r1"));
        Assert.Null(_requests.Delete("r1"));
        Assert.Equal(before, Read("vol"));
    }

    [Fact]
    public void ForeignAllowed_SmallerSnapshot_VolumeGetsItsContentThenZeros()
    {
        var r = _requests!.Submit("r1", "vol", "other-snap", allowForeign: true, unchangedSince: null);

        Assert.Equal(ContentRequestPhase.Succeeded, r.Phase);
        var expected = new byte[Size];
        Read("other-snap").CopyTo(expected, 0);
        Assert.Equal(expected, Read("vol"));
    }

    private static async Task<T> Until<T>(Func<T?> probe, string what)
    {
        var deadline = DateTime.UtcNow.AddSeconds(60);
        while (DateTime.UtcNow < deadline)
        {
            if (probe() is { } v && !(v is bool b && !b))
            {
                return v;
            }

            await Task.Delay(20, Token);
        }

        throw new TimeoutException(what + " within 60 s");
    }
}

/// <summary>An NBD client that connects, selects an export with NBD_OPT_GO and holds it until disposed.</summary>
internal sealed class NbdHold : IDisposable
{
    private readonly Socket _socket;

    private NbdHold(Socket socket) => _socket = socket;

    public static async Task<NbdHold> OpenAsync(string socketPath, string export)
    {
        var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        await socket.ConnectAsync(new UnixDomainSocketEndPoint(socketPath));
        var stream = new NetworkStream(socket, ownsSocket: false);
        var greeting = new byte[18];
        await stream.ReadExactlyAsync(greeting);
        var flags = new byte[4];
        BinaryPrimitives.WriteUInt32BigEndian(flags, 3); // fixed newstyle, no zeroes
        await stream.WriteAsync(flags);
        byte[] name = Encoding.UTF8.GetBytes(export);
        var option = new byte[16 + 4 + name.Length + 2];
        BinaryPrimitives.WriteUInt64BigEndian(option, 0x49484156454F5054); // IHAVEOPT
        BinaryPrimitives.WriteUInt32BigEndian(option.AsSpan(8), 7); // NBD_OPT_GO
        BinaryPrimitives.WriteUInt32BigEndian(option.AsSpan(12), (uint)(4 + name.Length + 2));
        BinaryPrimitives.WriteUInt32BigEndian(option.AsSpan(16), (uint)name.Length);
        name.CopyTo(option, 20);
        await stream.WriteAsync(option);
        while (true)
        {
            var header = new byte[20];
            await stream.ReadExactlyAsync(header);
            uint type = BinaryPrimitives.ReadUInt32BigEndian(header.AsSpan(12));
            var data = new byte[BinaryPrimitives.ReadUInt32BigEndian(header.AsSpan(16))];
            await stream.ReadExactlyAsync(data);
            if (type == 1)
            {
                return new NbdHold(socket); // NBD_REP_ACK: transmission phase
            }

            if ((type & 0x80000000) != 0)
            {
                socket.Dispose();
                throw new InvalidOperationException($"NBD_OPT_GO for '{export}' refused: {Encoding.UTF8.GetString(data)}");
            }
        }
    }

    public void Dispose() => _socket.Dispose();
}
