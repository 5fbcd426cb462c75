using CsCheck;
using Dolly.Storage.Engine;

namespace Dolly.Storage.Tests;

/// <summary>
/// The page store on its own: random allocations, references, releases and commits against a model of every page's
/// phase and count; a committed page is never handed out before the commit that dropped it is durable; what a commit
/// writes is every live page created since the last one, once, sealed.
/// </summary>
public sealed class PageStoreTests
{
    private enum Op
    {
        Allocate,
        AddReference,
        Drop,
        Prepare,
        Durable,
        Failed,
    }

    [Fact]
    public void RandomOperations_FollowTheModel_AndNeverHandOutAPageTwice()
    {
        Gen.Enum<Op>().Array[1, 300].Sample(RunModel, iter: 300);
    }

    private static void RunModel(Op[] ops)
    {
        var clock = new TxnClock();
        var store = new PageStore(clock);
        store.Reset(2);
        var refs = new Dictionary<uint, int>();
        var phase = new Dictionary<uint, PagePhase>();
        var born = new Dictionary<uint, uint>();
        var written = new HashSet<uint>();
        (List<(uint Id, byte[] Page)> Pages, List<uint> Retired)? plan = null;
        int step = 0;
        foreach (var op in ops)
        {
            step++;
            var live = phase.Where(kv => kv.Value == PagePhase.Live).Select(kv => kv.Key).Order().ToList();
            switch (op)
            {
                case Op.Allocate:
                    uint id = store.Allocate(Layout.MagicMapLeaf, 0);
                    Assert.True(id >= 2, "a superblock page was handed out");
                    Assert.True(phase.GetValueOrDefault(id) == PagePhase.Free, $"step {step}: page {id} handed out while {phase.GetValueOrDefault(id)}");
                    Assert.Equal(id, Layout.PageId(store[id]));
                    phase[id] = PagePhase.Live;
                    refs[id] = 1;
                    born[id] = clock.Current;
                    written.Remove(id);
                    break;
                case Op.AddReference when live.Count > 0:
                    uint shared = live[step % live.Count];
                    store.AddReference(shared);
                    refs[shared]++;
                    break;
                case Op.Drop when live.Count > 0:
                    uint q = live[(step * 7) % live.Count];
                    if (refs[q] > 1)
                    {
                        store.DropReference(q);
                        refs[q]--;
                    }
                    else
                    {
                        store.ReleaseLast(q);
                        refs[q] = 0;
                        phase[q] = born[q] == clock.Current ? PagePhase.Free : PagePhase.Retiring;
                    }

                    break;
                case Op.Prepare when plan is null:
                    plan = (store.TakeUnwritten(), store.TakeRetired());

                    // Every live page not yet written by a durable commit, each once, sealed; no other page.
                    var expected = phase.Where(kv => kv.Value == PagePhase.Live && !written.Contains(kv.Key)).Select(kv => kv.Key).Order();
                    Assert.Equal(expected, plan.Value.Pages.Select(p => p.Id).Order());
                    Assert.All(plan.Value.Pages, p => Assert.True(Layout.PageChecksumOk(p.Page)));
                    Assert.Equal(phase.Where(kv => kv.Value == PagePhase.Retiring).Select(kv => kv.Key).Order(), plan.Value.Retired.Order());
                    clock.Advance();
                    break;
                case Op.Durable when plan is { } done:
                    store.Reclaim(done.Retired);
                    foreach (uint r in done.Retired)
                    {
                        phase[r] = PagePhase.Free;
                    }

                    written.UnionWith(done.Pages.Select(p => p.Id));
                    plan = null;
                    break;
                case Op.Failed when plan is { } failed:
                    store.ReturnToNextCommit(failed.Pages.Select(p => p.Id), failed.Retired);
                    plan = null;
                    break;
                default:
                    break;
            }

            for (uint p = 2; p < store.HighWater; p++)
            {
                var want = phase.GetValueOrDefault(p);
                Assert.True(store.Phase(p) == want, $"step {step}: page {p} is {store.Phase(p)}, the model says {want}");
                Assert.Equal(want == PagePhase.Live ? refs[p] : 0, store.References(p));
            }

            Assert.Equal(phase.Where(kv => kv.Value == PagePhase.Free).Select(kv => kv.Key).Order(), store.FreePages.Order());
        }
    }

    [Fact]
    public void Adopt_UnreferencedPages_AreFreeLowestFirst_AndCommitted()
    {
        var clock = new TxnClock();
        var store = new PageStore(clock);
        store.Reset(6);
        store.Adopt([0, 0, 1, 0, 2, 0]);
        Assert.Equal(PagePhase.Live, store.Phase(2));
        Assert.False(store.IsFresh(4));
        Assert.Equal(2, store.References(4));
        Assert.Equal(3u, store.Allocate(Layout.MagicMapLeaf, 0));
        Assert.Equal(5u, store.Allocate(Layout.MagicMapLeaf, 0));
        Assert.Equal(6u, store.Allocate(Layout.MagicMapLeaf, 0));

        // A committed page's last reference retires it: it is not reused before the commit is durable.
        store.ReleaseLast(2);
        Assert.Equal(PagePhase.Retiring, store.Phase(2));
        Assert.Equal(7u, store.Allocate(Layout.MagicMapLeaf, 0));
    }

    public static TheoryData<string> IllegalTransitions => ["reference a free page", "drop the last reference", "release a shared page", "release a retiring page", "reclaim a live page"];

    [Theory]
    [MemberData(nameof(IllegalTransitions))]
    public void IllegalTransition_Throws_AndChangesNothing(string transition)
    {
        var clock = new TxnClock();
        var store = new PageStore(clock);
        store.Reset(2);
        uint single = store.Allocate(Layout.MagicMapLeaf, 0);
        uint shared = store.Allocate(Layout.MagicMapLeaf, 0);
        uint retiring = store.Allocate(Layout.MagicMapLeaf, 0);
        store.AddReference(shared);
        _ = store.TakeUnwritten();
        clock.Advance();
        store.ReleaseLast(retiring);
        const uint Free = 20;
        Action act = transition switch
        {
            "reference a free page" => () => store.AddReference(Free),
            "drop the last reference" => () => store.DropReference(single),
            "release a shared page" => () => store.ReleaseLast(shared),
            "release a retiring page" => () => store.ReleaseLast(retiring),
            "reclaim a live page" => () => store.Reclaim([single]),
            _ => throw new ArgumentOutOfRangeException(nameof(transition)),
        };
        Assert.Throws<InvalidOperationException>(act);
        Assert.Equal(1, store.References(single));
        Assert.Equal(2, store.References(shared));
        Assert.Equal(PagePhase.Retiring, store.Phase(retiring));
        Assert.Equal(PagePhase.Free, store.Phase(Free));
    }
}
