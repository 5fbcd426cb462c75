namespace Dolly.Nbd.Tests;

/// <summary>The server-wide buffer pool: what it counts, when it waits, and that memory goes back.</summary>
public sealed class NbdBufferPoolTests
{
    private const int Mi = 1 << 20;
    private static readonly NbdBufferPool.Reservation NoReserve = new() { Used = NbdBufferPool.ReservePerConnection };

    [Theory]
    [InlineData(0, 4096)]
    [InlineData(1, 4096)]
    [InlineData(4096, 4096)]
    [InlineData(4097, 8192)]
    [InlineData(65536, 65536)]
    [InlineData((32 << 20) + 1, 64 << 20)]
    [InlineData(32 << 20, 32 << 20)]
    public void ClassSize_IsThePowerOfTwoActuallyAllocated(int length, int expected) =>
        Assert.Equal(expected, NbdBufferPool.ClassSize(length));

    [Fact]
    public async Task Rent_CountsTheClassSize_NotTheLengthAskedFor()
    {
        using var pool = new NbdBufferPool(64 * Mi, 0, 32 * Mi, 64 * Mi);
        var b = await pool.RentAsync((16 * Mi) + 1, NoReserve, TestContext.Current.CancellationToken);
        Assert.Equal(32 * Mi, b.Length);
        Assert.Equal(32 * Mi, pool.RentedBytes);
        Assert.Equal(32 * Mi, pool.HeldBytes);
        b.GetSpan()[^1] = 7;
        pool.Return(b);
        Assert.Equal(0, pool.RentedBytes);
        Assert.Equal(32 * Mi, pool.HeldBytes);
        pool.ReleaseFree();
        Assert.Equal(0, pool.HeldBytes);
    }

    [Fact]
    public async Task Rent_OverTheBudget_WaitsFirstComeFirstServed()
    {
        var ct = TestContext.Current.CancellationToken;
        using var pool = new NbdBufferPool(8 * Mi, 0, 4 * Mi, 8 * Mi);
        var a = await pool.RentAsync(4 * Mi, NoReserve, ct);
        var b = await pool.RentAsync(2 * Mi, NoReserve, ct);
        var big = pool.RentAsync(4 * Mi, NoReserve, ct).AsTask();
        var small = pool.RentAsync(4096, NoReserve, ct).AsTask();
        Assert.False(big.IsCompleted);

        // 2 MiB are free, enough for the small request, but it queued behind the big one and must not overtake
        // it (else a stream of small requests could starve large ones forever).
        Assert.False(small.IsCompleted);

        pool.Return(a);
        var bigBuffer = await big.WaitAsync(TimeSpan.FromSeconds(60), ct);
        var smallBuffer = await small.WaitAsync(TimeSpan.FromSeconds(60), ct);
        Assert.True(pool.PeakHeldBytes <= 8 * Mi, $"peak {pool.PeakHeldBytes}");
        pool.Return(b);
        pool.Return(bigBuffer);
        pool.Return(smallBuffer);
        pool.ReleaseFree();
        Assert.Equal(0, pool.HeldBytes);
    }

    [Fact]
    public async Task FreeBuffersOfOtherClasses_AreUnmappedToMakeRoom()
    {
        var ct = TestContext.Current.CancellationToken;
        using var pool = new NbdBufferPool(8 * Mi, 0, 8 * Mi, 8 * Mi);
        var small = new List<NbdBuffer>();
        for (int i = 0; i < 8; i++)
        {
            small.Add(await pool.RentAsync(Mi, NoReserve, ct));
        }

        small.ForEach(pool.Return);
        Assert.Equal(8 * Mi, pool.HeldBytes);

        var big = await pool.RentAsync(8 * Mi, NoReserve, ct).AsTask().WaitAsync(TimeSpan.FromSeconds(60), ct);
        Assert.Equal(8 * Mi, pool.HeldBytes);
        pool.Return(big);
    }

    [Fact]
    public async Task Reservation_ServesSmallRequests_WhenTheSharedPartIsTaken()
    {
        var ct = TestContext.Current.CancellationToken;
        using var pool = new NbdBufferPool((4 * Mi) + (2 * NbdBufferPool.ReservePerConnection), 2, 4 * Mi, 8 * Mi);
        var hog = await pool.RentAsync(4 * Mi, new NbdBufferPool.Reservation(), ct);
        var reservation = new NbdBufferPool.Reservation();

        var reserved = new List<NbdBuffer>();
        for (int i = 0; i < NbdBufferPool.ReservePerConnection / (256 << 10); i++)
        {
            var rent = pool.RentAsync(256 << 10, reservation, ct);
            Assert.True(rent.IsCompleted, "a request that fits the connection's reservation never waits");
            reserved.Add(await rent);
        }

        var beyond = pool.RentAsync(256 << 10, reservation, ct).AsTask();
        Assert.False(beyond.IsCompleted);
        Assert.Equal(pool.Capacity - NbdBufferPool.ReservePerConnection, pool.HeldBytes);

        pool.Return(reserved[0]);
        pool.Return(await beyond.WaitAsync(TimeSpan.FromSeconds(60), ct));
        reserved.Skip(1).ToList().ForEach(pool.Return);
        pool.Return(hog);
        Assert.Equal(0, reservation.Used);
        Assert.True(pool.PeakHeldBytes <= pool.Capacity);
    }

    [Fact]
    public async Task CancelledWait_TakesNothing_AndDoesNotBlockThoseBehind()
    {
        var ct = TestContext.Current.CancellationToken;
        using var pool = new NbdBufferPool(4 * Mi, 0, 4 * Mi, 4 * Mi);
        var half = await pool.RentAsync(2 * Mi, NoReserve, ct);
        using var cancel = new CancellationTokenSource();
        var head = pool.RentAsync(4 * Mi, NoReserve, cancel.Token).AsTask();
        var behind = pool.RentAsync(Mi, NoReserve, ct).AsTask();
        Assert.False(behind.IsCompleted);

        await cancel.CancelAsync();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => head);
        var b = await behind.WaitAsync(TimeSpan.FromSeconds(60), ct);
        Assert.Equal(3 * Mi, pool.RentedBytes);
        pool.Return(half);
        pool.Return(b);
    }

    [Fact]
    public async Task RandomRentsAndReturns_NeverExceedTheBudget_AndAccountingAddsUp()
    {
        // A model check: whatever the order of rents, returns and releases, the pool holds at most its
        // capacity, holds exactly what is rented plus what it keeps, and gives everything back at the end.
        var ct = TestContext.Current.CancellationToken;
        var rng = new Random(12345);
        long capacity = (6 * Mi) + (3 * NbdBufferPool.ReservePerConnection);
        using var pool = new NbdBufferPool(capacity, 3, 4 * Mi, 3 * Mi);
        var reservations = new[] { new NbdBufferPool.Reservation(), new NbdBufferPool.Reservation(), new NbdBufferPool.Reservation() };
        var rented = new List<NbdBuffer>();
        var waiting = new List<Task<NbdBuffer>>();
        for (int step = 0; step < 3000; step++)
        {
            int op = rng.Next(10);
            if (op < 5)
            {
                int length = rng.Next(4) switch { 0 => rng.Next(1, 4096), 1 => rng.Next(4096, 256 << 10), 2 => rng.Next(256 << 10, Mi), _ => rng.Next(Mi, 4 * Mi) };
                var t = pool.RentAsync(length, reservations[rng.Next(3)], ct).AsTask();
                if (t.IsCompleted)
                {
                    rented.Add(await t);
                }
                else
                {
                    waiting.Add(t);
                }
            }
            else if (op < 9 && rented.Count > 0)
            {
                int i = rng.Next(rented.Count);
                pool.Return(rented[i]);
                rented.RemoveAt(i);
            }
            else
            {
                pool.ReleaseFree();
            }

            foreach (var done in waiting.Where(w => w.IsCompleted).ToList())
            {
                rented.Add(await done);
                waiting.Remove(done);
            }

            Assert.True(pool.HeldBytes <= capacity, $"step {step}: held {pool.HeldBytes} > {capacity}");
            Assert.Equal(rented.Sum(b => (long)b.Length), pool.RentedBytes);
            Assert.True(reservations.All(r => r.Used <= NbdBufferPool.ReservePerConnection));
        }

        rented.ForEach(pool.Return);
        foreach (var w in waiting)
        {
            pool.Return(await w.WaitAsync(TimeSpan.FromSeconds(60), ct));
        }

        pool.ReleaseFree();
        Assert.Equal(0, pool.HeldBytes);
        Assert.Equal(0, pool.RentedBytes);
        Assert.True(pool.PeakHeldBytes <= capacity);
    }
}
