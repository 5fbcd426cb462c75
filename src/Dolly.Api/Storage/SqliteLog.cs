using Microsoft.Data.Sqlite;

namespace Dolly.Api.Storage;

/// <summary>One staged write: the object's JSON at its revision, or null for a delete, and the event it announces.</summary>
internal sealed record PendingWrite(string Resource, string Namespace, string Name, long Revision, string? Body, StoreEvent Event);

/// <summary>
/// The durable side of the store: SQLite in WAL mode with synchronous=FULL, so a committed transaction survives a
/// process crash and power loss. Writes arrive in batches (group commit): one transaction and one fsync per batch.
/// </summary>
internal sealed class SqliteLog : IDisposable
{
    private readonly SqliteConnection _db;

    public SqliteLog(string path)
    {
        _db = new SqliteConnection(new SqliteConnectionStringBuilder { DataSource = path, Pooling = false }.ToString());
        _db.Open();
        Execute("PRAGMA journal_mode=WAL;");
        Execute("PRAGMA synchronous=FULL;");
        Execute("CREATE TABLE IF NOT EXISTS objects (resource TEXT NOT NULL, namespace TEXT NOT NULL, name TEXT NOT NULL, " +
                "rv INTEGER NOT NULL, body TEXT NOT NULL, PRIMARY KEY (resource, namespace, name)) WITHOUT ROWID;");
        Execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);");
    }

    private void Execute(string sql)
    {
        using var cmd = _db.CreateCommand();
        cmd.CommandText = sql;
        cmd.ExecuteNonQuery();
    }

    /// <summary>The revision of the last committed batch (0 for a new database).</summary>
    public long LoadRevision()
    {
        using var cmd = _db.CreateCommand();
        cmd.CommandText = "SELECT value FROM meta WHERE key = 'rv'";
        return cmd.ExecuteScalar() is long rv ? rv : 0;
    }

    /// <summary>Every stored object.</summary>
    public IEnumerable<(string Resource, string Namespace, string Name, long Revision, string Body)> LoadObjects()
    {
        using var cmd = _db.CreateCommand();
        cmd.CommandText = "SELECT resource, namespace, name, rv, body FROM objects";
        using var reader = cmd.ExecuteReader();
        while (reader.Read())
        {
            yield return (reader.GetString(0), reader.GetString(1), reader.GetString(2), reader.GetInt64(3), reader.GetString(4));
        }
    }

    /// <summary>Writes a batch (in revision order) in one transaction; returns once it is durable.</summary>
    public void Commit(IReadOnlyList<PendingWrite> batch)
    {
        using var tx = _db.BeginTransaction();
        using var upsert = _db.CreateCommand();
        upsert.Transaction = tx;
        upsert.CommandText = "INSERT INTO objects (resource, namespace, name, rv, body) VALUES ($r, $n, $m, $v, $b) " +
                             "ON CONFLICT (resource, namespace, name) DO UPDATE SET rv = $v, body = $b";
        var ur = upsert.Parameters.Add("$r", SqliteType.Text);
        var un = upsert.Parameters.Add("$n", SqliteType.Text);
        var um = upsert.Parameters.Add("$m", SqliteType.Text);
        var uv = upsert.Parameters.Add("$v", SqliteType.Integer);
        var ub = upsert.Parameters.Add("$b", SqliteType.Text);
        using var delete = _db.CreateCommand();
        delete.Transaction = tx;
        delete.CommandText = "DELETE FROM objects WHERE resource = $r AND namespace = $n AND name = $m";
        var dr = delete.Parameters.Add("$r", SqliteType.Text);
        var dn = delete.Parameters.Add("$n", SqliteType.Text);
        var dm = delete.Parameters.Add("$m", SqliteType.Text);
        foreach (var w in batch)
        {
            if (w.Body is null)
            {
                (dr.Value, dn.Value, dm.Value) = (w.Resource, w.Namespace, w.Name);
                delete.ExecuteNonQuery();
            }
            else
            {
                (ur.Value, un.Value, um.Value, uv.Value, ub.Value) = (w.Resource, w.Namespace, w.Name, w.Revision, w.Body);
                upsert.ExecuteNonQuery();
            }
        }

        using (var meta = _db.CreateCommand())
        {
            meta.Transaction = tx;
            meta.CommandText = "INSERT INTO meta (key, value) VALUES ('rv', $v) ON CONFLICT (key) DO UPDATE SET value = $v";
            meta.Parameters.AddWithValue("$v", batch[^1].Revision);
            meta.ExecuteNonQuery();
        }

        tx.Commit();
    }

    public void Dispose() => _db.Dispose();
}
