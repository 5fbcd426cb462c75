using CsCheck;
using Dolly.Storage.Engine;

namespace Dolly.Storage.Tests;

/// <summary>
/// The device table on its own: random adds and removes keep names, ids and slots unique, hand out the lowest free
/// slot, never reuse an id, and give the next commit every changed record with deleted ones first; a load works out
/// the same free slots.
/// </summary>
public sealed class DeviceTableTests
{
    [Fact]
    public void RandomAddsAndRemoves_KeepSlotsAndIdsUnique_AndReuseTheLowestSlot()
    {
        Gen.Int[0, 9].Array[1, 200].Sample(RunModel, iter: 300);
    }

    private static void RunModel(int[] ops)
    {
        var table = new DeviceTable();
        var live = new List<DeviceState>();
        var dirty = new HashSet<DeviceState>();
        ulong lastId = 0;
        int step = 0;
        foreach (int op in ops)
        {
            step++;
            if (op < 5 || live.Count == 0)
            {
                // A free slot below the high-water mark is taken before a new one, the lowest first.
                var used = live.Select(d => d.Slot).ToHashSet();
                int expectedSlot = Enumerable.Range(0, table.SlotHighWater + 1).First(s => !used.Contains(s));
                ulong id = table.TakeId();
                Assert.True(id > lastId, $"step {step}: id {id} reused");
                lastId = id;
                var d = table.Add($"d{id}", DeviceKind.Volume, 4096, 0, 1, 0, id, id, 0);
                Assert.Equal(expectedSlot, d.Slot);
                live.Add(d);
                dirty.Add(d);
            }
            else if (op < 8)
            {
                var d = live[step % live.Count];
                table.Remove(d);
                Assert.True(d.Deleted);
                live.Remove(d);
                dirty.Add(d);
            }
            else if (op == 8)
            {
                var d = live[step % live.Count];
                table.MarkDirty(d);
                dirty.Add(d);
            }
            else
            {
                var taken = table.TakeDirty();
                Assert.Equal(dirty.OrderBy(d => d.Id), taken.OrderBy(d => d.Id));
                int firstLive = taken.FindIndex(d => !d.Deleted);
                Assert.True(firstLive < 0 || taken.Skip(firstLive).All(d => !d.Deleted), $"step {step}: a deleted record comes after a live one");
                dirty.Clear();
            }

            Assert.Equal(live.Count, table.Count);
            Assert.Equal(live.Count, live.Select(d => d.Slot).Distinct().Count());
            Assert.All(live, d => Assert.True(table.TryGet(d.Name, out var byName) && byName == d && table.TryGet(d.Id, out var byId) && byId == d));
            Assert.Equal(dirty.Count, table.DirtyCount);
        }

        // Reloading the same devices (as open does) frees the same slots: the next device takes the lowest gap.
        var reloaded = new DeviceTable();
        reloaded.Reset(table.NextId);
        foreach (var d in live)
        {
            reloaded.Load(new DeviceState { Id = d.Id, Name = d.Name, Kind = d.Kind, Slot = d.Slot, CreatedUnixMs = 0, SourceId = 0, LineageId = d.Id, Size = d.Size, Depth = 1 });
        }

        reloaded.FinishLoad();
        var taken2 = live.Select(d => d.Slot).ToHashSet();
        int gap = Enumerable.Range(0, reloaded.SlotHighWater + 1).First(s => !taken2.Contains(s));
        Assert.Equal(gap, reloaded.Add("new", DeviceKind.Volume, 4096, 0, 1, 0, 0, reloaded.TakeId(), 0).Slot);
    }

    public static TheoryData<string> Refusals => ["duplicate name", "duplicate id", "id not yet issued", "remove twice", "load a duplicate"];

    [Theory]
    [MemberData(nameof(Refusals))]
    public void BrokenCall_Throws_AndChangesNothing(string call)
    {
        var table = new DeviceTable();
        ulong id = table.TakeId();
        var d = table.Add("a", DeviceKind.Volume, 4096, 0, 1, 0, id, id, 0);
        var removed = table.Add("b", DeviceKind.Volume, 4096, 0, 1, 0, 0, table.TakeId(), 0);
        table.Remove(removed);
        Action act = call switch
        {
            "duplicate name" => () => table.Add("a", DeviceKind.Volume, 4096, 0, 1, 0, 0, table.TakeId(), 0),
            "duplicate id" => () => table.Add("c", DeviceKind.Volume, 4096, 0, 1, 0, 0, id, 0),
            "id not yet issued" => () => table.Add("c", DeviceKind.Volume, 4096, 0, 1, 0, 0, table.NextId, 0),
            "remove twice" => () => table.Remove(removed),
            "load a duplicate" => () => table.Load(new DeviceState { Id = id, Name = "z", Kind = DeviceKind.Volume, Slot = 5, CreatedUnixMs = 0, SourceId = 0, LineageId = 0, Size = 4096, Depth = 1 }),
            _ => throw new ArgumentOutOfRangeException(nameof(call)),
        };
        Assert.Throws<InvalidOperationException>(act);
        Assert.Equal(1, table.Count);
        Assert.True(table.TryGet("a", out var still) && still == d);
        Assert.False(table.Contains("c"));
        Assert.Equal(2, table.SlotHighWater);
    }
}
