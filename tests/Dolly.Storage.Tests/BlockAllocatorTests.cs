using CsCheck;
using Dolly.Storage.Engine;

namespace Dolly.Storage.Tests;

/// <summary>
/// The block allocator on its own: random sequences of allocations, references, releases, commits (prepared, then
/// durable or failed) and punches against a model of every block's phase and count; and each transition a bug could
/// attempt, refused.
/// </summary>
public sealed class BlockAllocatorTests
{
    private enum Op
    {
        Allocate,
        AddReference,
        Release,
        ReleaseReplaced,
        Prepare,
        Durable,
        Failed,
        Punch,
    }

    /// <summary>
    /// A block is never handed out while live, retiring or being punched; counts and phases follow the model;
    /// retired blocks become free only after the commit that dropped them is durable; punched ones once punched.
    /// </summary>
    [Fact]
    public void RandomOperations_FollowTheModel_AndNeverHandOutABlockTwice()
    {
        Gen.Select(Gen.Enum<Op>().Array[1, 400], Gen.Int[0, 6], Gen.Int[1, 4]).Sample(
            (ops, minKept, pieceBlocks) => RunModel(ops, minKept, (uint)pieceBlocks),
            iter: 300);
    }

    private static void RunModel(Op[] ops, int minKept, uint pieceBlocks)
    {
        var clock = new TxnClock();
        var a = new BlockAllocator(clock);
        var refs = new Dictionary<uint, int>();
        var phase = new Dictionary<uint, BlockPhase>();
        var born = new Dictionary<uint, uint>();
        RetiredBlocks? plan = null;
        var planned = new List<uint>();
        int step = 0;
        foreach (var op in ops)
        {
            step++;
            var live = phase.Where(kv => kv.Value == BlockPhase.Live).Select(kv => kv.Key).Order().ToList();
            switch (op)
            {
                case Op.Allocate:
                    uint p = a.Allocate(out _);
                    Assert.True(Of(phase, p) == BlockPhase.Free, $"step {step}: block {p} handed out while {Of(phase, p)}");
                    phase[p] = BlockPhase.Live;
                    refs[p] = 1;
                    born[p] = clock.Current;
                    break;
                case Op.AddReference when live.Count > 0:
                    uint shared = live[step % live.Count];
                    a.AddReference(shared);
                    refs[shared]++;
                    break;
                case Op.Release or Op.ReleaseReplaced when live.Count > 0:
                    uint q = live[(step * 7) % live.Count];
                    bool last = a.Release(q, replaced: op == Op.ReleaseReplaced);
                    Assert.Equal(--refs[q] == 0, last);
                    if (refs[q] == 0)
                    {
                        // Never durable: free at once; otherwise the durable state may still read it.
                        phase[q] = born[q] == clock.Current ? BlockPhase.Free : BlockPhase.Retiring;
                    }

                    break;
                case Op.Prepare when plan is null:
                    plan = a.TakeRetired();
                    planned = [.. plan.Dropped, .. plan.Replaced];
                    Assert.Equal(phase.Where(kv => kv.Value == BlockPhase.Retiring).Select(kv => kv.Key).Order(), planned.Order());
                    Assert.Equal(0, a.AllocatedSinceCommit);
                    clock.Advance();
                    break;
                case Op.Durable when plan is not null:
                    a.Reclaim(plan, minKept);
                    foreach (uint r in planned)
                    {
                        var now = a.Phase(r);
                        Assert.True(now is BlockPhase.Free or BlockPhase.Punching, $"step {step}: retired block {r} became {now}");
                        phase[r] = now;
                    }

                    plan = null;
                    break;
                case Op.Failed when plan is not null:
                    a.ReturnRetired(plan);
                    plan = null;
                    break;
                case Op.Punch:
                    if (a.TryTakePunch(pieceBlocks, out var piece))
                    {
                        Assert.InRange(piece.Count, 1u, pieceBlocks);
                        for (uint b = piece.First; b < piece.First + piece.Count; b++)
                        {
                            Assert.Equal(BlockPhase.Punching, Of(phase, b));
                            Assert.Equal(BlockPhase.Punching, a.Phase(b));
                        }

                        a.FinishPunch(piece);
                        for (uint b = piece.First; b < piece.First + piece.Count; b++)
                        {
                            phase[b] = BlockPhase.Free;
                        }
                    }
                    else
                    {
                        Assert.Equal(0, a.QueuedPunches);
                    }

                    break;
                default:
                    break;
            }

            Agree(a, phase, refs, step);
        }
    }

    private static BlockPhase Of(Dictionary<uint, BlockPhase> phase, uint p) => phase.GetValueOrDefault(p, BlockPhase.Free);

    private static void Agree(BlockAllocator a, Dictionary<uint, BlockPhase> phase, Dictionary<uint, int> refs, int step)
    {
        long free = 0;
        for (uint p = 0; p < a.HighWater; p++)
        {
            var expected = Of(phase, p);
            Assert.True(a.Phase(p) == expected, $"step {step}: block {p} is {a.Phase(p)}, the model says {expected}");
            Assert.Equal(expected == BlockPhase.Live ? refs[p] : 0, a.References(p));
            free += expected == BlockPhase.Free ? 1 : 0;
        }

        Assert.Equal(free, a.FreeBelowHighWater);
        Assert.DoesNotContain(phase, kv => kv.Key >= a.HighWater && kv.Value != BlockPhase.Free);
    }

    [Fact]
    public void Allocate_NewBlocks_AreZeroedAndSequential()
    {
        var a = new BlockAllocator(new TxnClock());
        for (uint i = 0; i < 5; i++)
        {
            Assert.Equal(i, a.Allocate(out bool zeroed));
            Assert.True(zeroed);
        }

        Assert.Equal(5u, a.HighWater);
        Assert.Equal(5, a.AllocatedSinceCommit);
    }

    [Fact]
    public void Release_FreshBlock_IsFreeAtOnce_ButNotZeroed()
    {
        var a = new BlockAllocator(new TxnClock());
        uint p = a.Allocate(out _);
        Assert.True(a.IsFresh(p));
        Assert.True(a.Release(p, replaced: false));
        Assert.Equal(BlockPhase.Free, a.Phase(p));
        Assert.Equal(1, a.FreeBelowHighWater);
        Assert.Equal(p, a.Allocate(out bool zeroed));
        Assert.False(zeroed);
    }

    [Fact]
    public void Release_CommittedBlock_RetiresUntilTheCommitIsDurable()
    {
        var clock = new TxnClock();
        var a = new BlockAllocator(clock);
        uint p = a.Allocate(out _);
        clock.Advance();
        Assert.False(a.IsFresh(p));
        Assert.True(a.Release(p, replaced: true));
        Assert.Equal(BlockPhase.Retiring, a.Phase(p));
        Assert.NotEqual(p, a.Allocate(out _));

        var retired = a.TakeRetired();
        Assert.Equal([p], retired.Replaced);
        a.ReturnRetired(retired);
        Assert.Equal(BlockPhase.Retiring, a.Phase(p));

        retired = a.TakeRetired();
        a.Reclaim(retired, minKept: 0);
        Assert.Equal(BlockPhase.Free, a.Phase(p));
        Assert.Equal(1, a.KeptFree);
        Assert.Equal(p, a.Allocate(out bool zeroed));
        Assert.False(zeroed);
        Assert.Equal(0, a.KeptFree);
    }

    [Fact]
    public void Reclaim_BeyondTheReserve_PunchesThenFrees_AndPunchedBlocksReadAsZeros()
    {
        var clock = new TxnClock();
        var a = new BlockAllocator(clock);
        for (int i = 0; i < 6; i++)
        {
            a.Allocate(out _);
        }

        clock.Advance();
        for (uint p = 0; p < 6; p++)
        {
            a.Release(p, replaced: false);
        }

        a.Reclaim(a.TakeRetired(), minKept: 2);
        Assert.Equal(2, a.KeptFree);
        Assert.Equal(2, a.FreeBelowHighWater);
        Assert.Equal(1, a.QueuedPunches);
        Assert.True(a.TryTakePunch(3, out var piece));
        Assert.Equal(new BlockRun(2, 3), piece);
        Assert.Equal(BlockPhase.Punching, a.Phase(2));
        a.FinishPunch(piece);
        Assert.Equal(BlockPhase.Free, a.Phase(2));
        Assert.True(a.TryTakePunch(3, out piece));
        Assert.Equal(new BlockRun(5, 1), piece);
        Assert.False(a.TryTakePunch(3, out _));
        a.FinishPunch(piece);
        Assert.Equal(6, a.FreeBelowHighWater);

        // The scan wraps to block 0: kept blocks hold old bytes, punched ones read as zeros.
        var zeroed = new bool[6];
        for (uint p = 0; p < 6; p++)
        {
            Assert.Equal(p, a.Allocate(out zeroed[p]));
        }

        Assert.Equal([false, false, true, true, true, true], zeroed);
        Assert.Equal(0, a.KeptFree);
    }

    [Fact]
    public void Adopt_KeepsARunBeingPunched_UnallocatableUntilItsPunchEnds()
    {
        var clock = new TxnClock();
        var a = new BlockAllocator(clock);
        for (int i = 0; i < 4; i++)
        {
            a.Allocate(out _);
        }

        clock.Advance();
        a.Release(3, replaced: false);
        a.Reclaim(a.TakeRetired(), minKept: 0);
        Assert.True(a.TryTakePunch(8, out var piece));

        // A rollback reloads counts in which block 3 is free: it must still wait for its punch.
        a.Adopt(4, [1, 1, 0, 0]);
        Assert.Equal(BlockPhase.Free, a.Phase(2));
        Assert.Equal(BlockPhase.Punching, a.Phase(3));
        Assert.Equal(1, a.FreeBelowHighWater);
        Assert.Equal(2u, a.Allocate(out bool zeroed));
        Assert.False(zeroed);
        Assert.Equal(4u, a.Allocate(out _));
        a.FinishPunch(piece);
        Assert.Equal(BlockPhase.Free, a.Phase(3));
        Assert.Equal(1, a.FreeBelowHighWater);
    }

    [Fact]
    public void FinishPunch_OfASupersededPiece_ChangesNothing()
    {
        var clock = new TxnClock();
        var a = new BlockAllocator(clock);
        a.Allocate(out _);
        a.Allocate(out _);
        clock.Advance();
        a.Release(0, replaced: false);
        a.Release(1, replaced: false);
        a.Reclaim(a.TakeRetired(), minKept: 0);
        Assert.True(a.TryTakePunch(1, out var first));
        Assert.True(a.TryTakePunch(1, out var second));
        a.FinishPunch(first);
        Assert.Equal(BlockPhase.Punching, a.Phase(0));
        a.FinishPunch(second);
        Assert.Equal(BlockPhase.Free, a.Phase(1));
    }

    public static TheoryData<string> IllegalTransitions => ["reference a free block", "release a free block", "release a retiring block", "reference a punching block", "reclaim a live block", "reclaim twice"];

    [Theory]
    [MemberData(nameof(IllegalTransitions))]
    public void IllegalTransition_Throws_AndChangesNothing(string transition)
    {
        var clock = new TxnClock();
        var a = new BlockAllocator(clock);
        uint live = a.Allocate(out _);
        uint retiring = a.Allocate(out _);
        uint punching = a.Allocate(out _);
        clock.Advance();
        a.Release(punching, replaced: false);
        a.Reclaim(a.TakeRetired(), minKept: 0);
        a.Release(retiring, replaced: false);
        const uint Free = 10;
        long freeBefore = a.FreeBelowHighWater;
        Action act = transition switch
        {
            "reference a free block" => () => a.AddReference(Free),
            "release a free block" => () => a.Release(Free, replaced: false),
            "release a retiring block" => () => a.Release(retiring, replaced: false),
            "reference a punching block" => () => a.AddReference(punching),
            "reclaim a live block" => () => a.Reclaim(new RetiredBlocks([live], []), minKept: 0),
            "reclaim twice" => () =>
            {
                var retired = a.TakeRetired();
                a.Reclaim(retired, minKept: 0);
                a.Reclaim(new RetiredBlocks([retiring], []), minKept: 0);
            },
            _ => throw new ArgumentOutOfRangeException(nameof(transition)),
        };
        Assert.Equal(BlockPhase.Free, a.Phase(Free));
        Assert.Throws<InvalidOperationException>(act);
        Assert.Equal(BlockPhase.Live, a.Phase(live));
        Assert.Equal(1, a.References(live));
        Assert.Equal(BlockPhase.Punching, a.Phase(punching));
        if (transition != "reclaim twice")
        {
            Assert.Equal(BlockPhase.Retiring, a.Phase(retiring));
            Assert.Equal(freeBefore, a.FreeBelowHighWater);
        }
    }
}
