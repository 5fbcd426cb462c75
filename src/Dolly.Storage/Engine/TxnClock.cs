namespace Dolly.Storage.Engine;

/// <summary>
/// The number of the transaction being built in memory, shared by the page store and the block allocator. A page
/// or block born in the current transaction is "fresh": no durable state can reference it, so it may be changed
/// in place and, when dropped, freed at once. Preparing a full commit (or rolling back) moves the clock on, and
/// everything fresh before becomes committed.
/// </summary>
internal sealed class TxnClock
{
    public uint Current { get; private set; } = 1;

    public void Advance() => Current++;
}
