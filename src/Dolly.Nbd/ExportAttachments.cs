namespace Dolly.Nbd;

/// <summary>One client holding an export open.</summary>
/// <param name="Connection">The NBD server's connection id.</param>
/// <param name="Client">Who it is, as far as the server can tell: the TCP peer address, or the unix socket.</param>
/// <param name="Since">When it opened the export.</param>
public sealed record ExportHolder(long Connection, string Client, DateTimeOffset Since)
{
    /// <inheritdoc />
    public override string ToString() => $"NBD client #{Connection} ({Client}) since {Since.UtcDateTime:yyyy-MM-dd'T'HH:mm:ss'Z'}";
}

/// <summary>
/// Which NBD clients hold each export open. A connection counts from the moment it opens an export in the
/// handshake (NBD_OPT_INFO, NBD_OPT_GO or NBD_OPT_EXPORT_NAME: a client that only asked about an export holds it
/// until it moves on or leaves, which errs on the safe side) until it closes. <see cref="RunDetached{T}"/> runs a
/// change only while nobody holds the export and keeps newcomers out until it is done, so a change that must never
/// happen under a client (replacing a mounted file system's content) cannot race with an attach.
/// </summary>
public sealed class ExportAttachments(TimeProvider? time = null)
{
    private readonly TimeProvider _time = time ?? TimeProvider.System;
    private readonly Lock _lock = new();
    private readonly Dictionary<long, (string Export, ExportHolder Holder)> _byConnection = [];
    private readonly Dictionary<string, Dictionary<long, ExportHolder>> _byExport = new(StringComparer.Ordinal);

    /// <summary>
    /// Raised, outside the lock, with an export's name when its last holder let go. Handlers must not block: they
    /// run on the thread of the connection that closed.
    /// </summary>
    public event Action<string>? Released;

    /// <summary>The clients holding <paramref name="export"/> now, oldest first.</summary>
    public IReadOnlyList<ExportHolder> HoldersOf(string export)
    {
        lock (_lock)
        {
            return _byExport.TryGetValue(export, out var holders) ? [.. holders.Values.OrderBy(h => h.Since).ThenBy(h => h.Connection)] : [];
        }
    }

    /// <summary>Every export held by at least one client.</summary>
    public IReadOnlyList<string> HeldExports()
    {
        lock (_lock)
        {
            return [.. _byExport.Keys.Order(StringComparer.Ordinal)];
        }
    }

    /// <summary>
    /// Runs <paramref name="change"/> if nobody holds <paramref name="export"/>, with attaches to it held off until it
    /// returns; otherwise returns the holders and does not run it.
    /// </summary>
    public (bool Ran, T? Result, IReadOnlyList<ExportHolder> Holders) RunDetached<T>(string export, Func<T> change)
    {
        ArgumentNullException.ThrowIfNull(change);
        lock (_lock)
        {
            if (_byExport.TryGetValue(export, out var holders) && holders.Count > 0)
            {
                return (false, default, [.. holders.Values.OrderBy(h => h.Since).ThenBy(h => h.Connection)]);
            }

            return (true, change(), []);
        }
    }

    /// <summary>Records that <paramref name="connection"/> opened <paramref name="export"/> (and let go of any export it held before).</summary>
    internal void Attach(long connection, string client, string export)
    {
        string? released;
        lock (_lock)
        {
            if (_byConnection.TryGetValue(connection, out var previous) && previous.Export == export)
            {
                return;
            }

            released = RemoveLocked(connection);
            var holder = new ExportHolder(connection, client, _time.GetUtcNow());
            _byConnection[connection] = (export, holder);
            if (!_byExport.TryGetValue(export, out var holders))
            {
                holders = [];
                _byExport[export] = holders;
            }

            holders[connection] = holder;
        }

        if (released is not null)
        {
            Released?.Invoke(released);
        }
    }

    /// <summary>Records that <paramref name="connection"/> closed.</summary>
    internal void Release(long connection)
    {
        string? released;
        lock (_lock)
        {
            released = RemoveLocked(connection);
        }

        if (released is not null)
        {
            Released?.Invoke(released);
        }
    }

    /// <summary>Forgets the connection; returns the export it held when that export is now free.</summary>
    private string? RemoveLocked(long connection)
    {
        if (!_byConnection.Remove(connection, out var held))
        {
            return null;
        }

        var holders = _byExport[held.Export];
        holders.Remove(connection);
        if (holders.Count > 0)
        {
            return null;
        }

        _byExport.Remove(held.Export);
        return held.Export;
    }
}
