using Dolly.Storage;

namespace Dolly.Nbd;

/// <summary>What the server exports: every volume read-write and every snapshot read-only, by name.</summary>
public sealed class ExportCatalog(Pool pool)
{
    /// <summary>The pool served.</summary>
    public Pool Pool => pool;

    /// <summary>Every export with a one-line description.</summary>
    public IReadOnlyList<(string Name, string Description)> List() =>
        pool.ListDevices().Select(d => (d.Name, Describe(d))).ToList();

    /// <summary>Opens an export, or returns null when no device has that name.</summary>
    public BlockDevice? Open(string name)
    {
        var r = pool.OpenDevice(name);
        return r.IsOk ? r.Value : null;
    }

    /// <summary>A description for NBD_INFO_DESCRIPTION and LIST.</summary>
    public string Describe(string name)
    {
        var d = pool.GetDevice(name);
        return d.IsOk ? Describe(d.Value) : string.Empty;
    }

    /// <summary>Snapshots that can serve as the base of a delta context for <paramref name="name"/>: same lineage.</summary>
    public IReadOnlyList<string> DeltaBases(string name)
    {
        var d = pool.GetDevice(name);
        if (!d.IsOk)
        {
            return [];
        }

        return pool.ListDevices(DeviceKind.Snapshot).Where(s => s.LineageId == d.Value.LineageId && s.Id != d.Value.Id).Select(s => s.Name).ToList();
    }

    private static string Describe(DeviceInfo d) =>
        d.Kind == DeviceKind.Snapshot
            ? $"Dolly snapshot of {d.SourceName ?? "a deleted volume"}, read-only, {ByteSize.Format(d.Size)}"
            : $"Dolly volume, {ByteSize.Format(d.Size)}";
}
