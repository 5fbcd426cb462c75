using CsCheck;
using Dolly.Storage.Engine;

namespace Dolly.Storage.Tests;

/// <summary>
/// The overlay on its own, against a model of every sector's bytes and state (dirty, carried by the batch in flight,
/// journalled): a batch takes exactly the dirty sectors, a durable batch makes its sectors journalled unless they
/// were written again, a checkpoint takes every journalled run once, as long as it can be, with arrays that nothing
/// changes until it ends (writes meanwhile make the sector dirty in a new array), a durable checkpoint drops what it
/// wrote and a failed one leaves it journalled, and reads always see the newest bytes.
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
        Checkpointing,
    }

    [Fact]
    public void RandomOperations_FollowTheModel()
    {
        Gen.Select(Gen.Int[0, 7], Gen.Int[0, (Blocks * SectorsPerBlock) - 1], Gen.Byte).Array[1, 200].Sample(Run, iter: 200);
    }

    private static void Run((int Op, int Sector, byte Value)[] ops)
    {
        var overlay = new Overlay(SectorsPerBlock);
        var model = new Dictionary<(uint Block, int Sector), (byte Value, State State)>();
        ulong batch = 0;
        bool inFlight = false;
        List<CheckpointRun>? checkpoint = null;
        List<byte[]>? checkpointBytes = null;
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
                case 5 when checkpoint is null:
                    checkpoint = overlay.TakeJournalled();
                    var journalled = model.Where(kv => kv.Value.State == State.Journalled).Select(kv => kv.Key).ToList();
                    var handed = new List<(uint, int)>();
                    foreach (var run in checkpoint)
                    {
                        for (int k = 0; k < run.Sectors.Length; k++)
                        {
                            Assert.Equal(model[(run.Block, run.FirstSector + k)].Value, run.Sectors[k][0]);
                            handed.Add((run.Block, run.FirstSector + k));
                        }

                        // A run ends where the next sector is not journalled: runs are as long as they can be.
                        int next = run.FirstSector + run.Sectors.Length;
                        Assert.False(next < SectorsPerBlock && model.TryGetValue((run.Block, next), out var n) && n.State == State.Journalled);
                    }

                    Assert.Equal(journalled.Order(), handed.Order());
                    checkpointBytes = checkpoint.Select(r => r.Sectors.Select(x => x[0]).ToArray()).ToList();
                    Mark(State.Journalled, State.Checkpointing);
                    break;
                case 7 when checkpoint is not null:
                    // The checkpoint wrote from the arrays it was handed: whatever happened since, they are unchanged.
                    for (int r = 0; r < checkpoint.Count; r++)
                    {
                        for (int k = 0; k < checkpoint[r].Sectors.Length; k++)
                        {
                            Assert.True(checkpoint[r].Sectors[k].AsSpan().IndexOfAnyExcept(checkpointBytes![r][k]) < 0);
                        }
                    }

                    bool durable = value % 4 != 0;
                    overlay.EndCheckpoint(durable);
                    foreach (var key in model.Where(kv => kv.Value.State == State.Checkpointing).Select(kv => kv.Key).ToList())
                    {
                        if (durable)
                        {
                            model.Remove(key);
                        }
                        else
                        {
                            model[key] = (model[key].Value, State.Journalled);
                        }
                    }

                    checkpoint = null;
                    break;
                case 6:
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
