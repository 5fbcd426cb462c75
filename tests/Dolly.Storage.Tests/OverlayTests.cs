using CsCheck;
using Dolly.Storage.Engine;

namespace Dolly.Storage.Tests;

/// <summary>
/// The overlay on its own, against a model of every sector's bytes and state (dirty, carried by the batch in flight,
/// journalled): a batch takes exactly the dirty sectors, a durable batch makes its sectors journalled unless they
/// were written again, the checkpoint hands every journalled run to the block once with its current bytes (a failed
/// run becomes dirty), and reads always see the newest bytes.
/// </summary>
public sealed class OverlayTests
{
    private const int SectorsPerBlock = 16;
    private const int Blocks = 3;

    private enum State
    {
        Dirty,
        InFlight,
        Journalled,
    }

    [Fact]
    public void RandomOperations_FollowTheModel()
    {
        Gen.Select(Gen.Int[0, 6], Gen.Int[0, (Blocks * SectorsPerBlock) - 1], Gen.Byte).Array[1, 200].Sample(Run, iter: 200);
    }

    private static void Run((int Op, int Sector, byte Value)[] ops)
    {
        var overlay = new Overlay(SectorsPerBlock);
        var model = new Dictionary<(uint Block, int Sector), (byte Value, State State)>();
        ulong batch = 0;
        bool inFlight = false;
        foreach (var (op, at, value) in ops)
        {
            uint block = (uint)(at / SectorsPerBlock) + 10;
            int sector = at % SectorsPerBlock;
            switch (op)
            {
                case 0 or 1:
                    overlay.Put(block, 1, block, sector, Sector(value));
                    model[(block, sector)] = (value, State.Dirty);
                    break;
                case 2 when !inFlight:
                    var taken = overlay.TakeDirty(++batch);
                    var expected = model.Where(kv => kv.Value.State == State.Dirty).Select(kv => kv.Key).Order().ToList();
                    Assert.Equal(expected, taken.Select(t => (t.Block, t.Sector)).ToList());
                    Assert.All(taken, t => Assert.Equal(model[(t.Block, t.Sector)].Value, t.Bytes[0]));
                    foreach (var key in expected)
                    {
                        model[key] = (model[key].Value, State.InFlight);
                    }

                    inFlight = true;
                    break;
                case 3 when inFlight:
                    overlay.Complete(batch);
                    Mark(State.InFlight, State.Journalled);
                    inFlight = false;
                    break;
                case 4 when inFlight:
                    overlay.Abort(batch);
                    Mark(State.InFlight, State.Dirty);
                    inFlight = false;
                    break;
                case 5 when !inFlight:
                    bool fail = value % 4 == 0;
                    var handed = new List<(uint, int)>();
                    int written = overlay.WriteJournalled((b, first, bytes) =>
                    {
                        Assert.Equal(0, bytes.Length % Layout.SectorSize);
                        for (int k = 0; k < bytes.Length / Layout.SectorSize; k++)
                        {
                            Assert.Equal(State.Journalled, model[(b, first + k)].State);
                            Assert.Equal(model[(b, first + k)].Value, bytes[k * Layout.SectorSize]);
                            handed.Add((b, first + k));
                        }

                        // A run ends where the next sector is not journalled: runs are as long as they can be.
                        int next = first + (bytes.Length / Layout.SectorSize);
                        Assert.False(next < SectorsPerBlock && model.TryGetValue((b, next), out var n) && n.State == State.Journalled);
                        return !fail;
                    });
                    var journalled = model.Where(kv => kv.Value.State == State.Journalled).Select(kv => kv.Key).ToList();
                    Assert.Equal(journalled.Order(), handed.Order());
                    Assert.Equal(fail ? 0 : journalled.Count, written);
                    foreach (var key in journalled)
                    {
                        if (fail)
                        {
                            model[key] = (model[key].Value, State.Dirty);
                        }
                        else
                        {
                            model.Remove(key);
                        }
                    }

                    break;
                case 6 when !inFlight:
                    overlay.Remove(block);
                    foreach (var key in model.Keys.Where(k => k.Block == block).ToList())
                    {
                        model.Remove(key);
                    }

                    break;
            }

            Assert.Equal(model.Count, overlay.Sectors);
            Assert.Equal(model.Count(kv => kv.Value.State == State.Dirty), overlay.DirtySectors);
            Assert.Equal(model.Count(kv => kv.Value.State == State.Journalled), overlay.JournalledSectors);
            for (uint b = 10; b < 10 + Blocks; b++)
            {
                for (int s = 0; s < SectorsPerBlock; s++)
                {
                    bool held = overlay.TryGet(b, s, out var bytes);
                    Assert.Equal(model.ContainsKey((b, s)), held);
                    if (held)
                    {
                        Assert.Equal(model[(b, s)].Value, bytes[0]);
                    }
                }
            }
        }

        void Mark(State from, State to)
        {
            foreach (var key in model.Where(kv => kv.Value.State == from).Select(kv => kv.Key).ToList())
            {
                model[key] = (model[key].Value, to);
            }
        }
    }

    private static byte[] Sector(byte value)
    {
        var bytes = new byte[Layout.SectorSize];
        Array.Fill(bytes, value);
        return bytes;
    }
}
