using Dolly.Storage;

namespace Dolly.Nbd;

/// <summary>
/// What the server exports: every volume read-write and every snapshot read-only, by name. The server gives each
/// connection its own view (<see cref="ForConnection"/>), through which the exports it opens are recorded in
/// <see cref="Attachments"/>.
/// </summary>
public sealed class ExportCatalog
{
    private readonly Pool _pool;
    private readonly long _connection;
    private readonly string? _client;

    /// <summary>A catalog of <paramref name="pool"/>; opens through a connection's view are recorded in <paramref name="attachments"/> (a fresh registry when null).</summary>
    public ExportCatalog(Pool pool, ExportAttachments? attachments = null)
    {
        ArgumentNullException.ThrowIfNull(pool);
        _pool = pool;
        Attachments = attachments ?? new ExportAttachments();
    }

    private ExportCatalog(ExportCatalog parent, long connection, string client)
    {
        _pool = parent._pool;
        Attachments = parent.Attachments;
        _connection = connection;
        _client = client;
    }

    /// <summary>The pool served.</summary>
    public Pool Pool => _pool;

    /// <summary>Which connections hold which exports.</summary>
    public ExportAttachments Attachments { get; }

    /// <summary>The view of one connection: what it opens is recorded as held by it until the server releases the connection.</summary>
    internal ExportCatalog ForConnection(long connection, string client) => new(this, connection, client);

    /// <summary>Every export with a one-line description.</summary>
    public IReadOnlyList<(string Name, string Description)> List() =>
        _pool.ListDevices().Select(d => (d.Name, Describe(d))).ToList();

    /// <summary>Opens an export, or returns null when no device has that name.</summary>
    public BlockDevice? Open(string name)
    {
        var r = _pool.OpenDevice(name);
        if (!r.IsOk)
        {
            return null;
        }

        if (_client is not null)
        {
            // Recorded before the handle goes out; a change running detached holds this off until it is done.
            Attachments.Attach(_connection, _client, name);
        }

        return r.Value;
    }

    /// <summary>A description for NBD_INFO_DESCRIPTION and LIST.</summary>
    public string Describe(string name)
    {
        var d = _pool.GetDevice(name);
        return d.IsOk ? Describe(d.Value) : string.Empty;
    }

    /// <summary>Snapshots that can serve as the base of a delta context for <paramref name="name"/>: same lineage.</summary>
    public IReadOnlyList<string> DeltaBases(string name)
    {
        var d = _pool.GetDevice(name);
        if (!d.IsOk)
        {
            return [];
        }

        return _pool.ListDevices(DeviceKind.Snapshot).Where(s => s.LineageId == d.Value.LineageId && s.Id != d.Value.Id).Select(s => s.Name).ToList();
    }

    private static string Describe(DeviceInfo d) =>
        d.Kind == DeviceKind.Snapshot
            ? $"Dolly snapshot of {d.SourceName ?? "a deleted volume"}, read-only, {ByteSize.Format(d.Size)}"
            : $"Dolly volume, {ByteSize.Format(d.Size)}";
}
