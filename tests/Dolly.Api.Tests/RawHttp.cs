using System.Net.Security;
using System.Net.Sockets;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using Microsoft.Data.Sqlite;

namespace Dolly.Api.Tests;

/// <summary>A response read off the wire: status code, headers (lower-cased names) and the de-chunked body.</summary>
public sealed record RawResponse(int Code, IReadOnlyDictionary<string, string> Headers, string Body);

/// <summary>
/// HTTP/1.1 over TLS written by hand, so the request target reaches the server byte for byte: HttpClient and
/// System.Uri would decode "%2e" and collapse dot segments before sending, hiding exactly what is under test.
/// </summary>
public static class RawHttp
{
    public static async Task<RawResponse> SendAsync(ServerFixture fx, string method, string target, string? body = null,
        string contentType = "application/json", CancellationToken ct = default)
    {
        var url = fx.Server.Url!;
        using var tcp = new TcpClient();
        await tcp.ConnectAsync(url.Host, url.Port, ct);
        var ca = X509Certificate2.CreateFromPem(await File.ReadAllTextAsync(fx.Server.CaCertificatePath, ct));
        await using var tls = new SslStream(tcp.GetStream(), leaveInnerStreamOpen: false);
        await tls.AuthenticateAsClientAsync(new SslClientAuthenticationOptions
        {
            TargetHost = url.Host,
            ApplicationProtocols = [SslApplicationProtocol.Http11],
            RemoteCertificateValidationCallback = (_, cert, _, _) =>
            {
                using var chain = new X509Chain();
                chain.ChainPolicy.TrustMode = X509ChainTrustMode.CustomRootTrust;
                chain.ChainPolicy.CustomTrustStore.Add(ca);
                chain.ChainPolicy.RevocationMode = X509RevocationMode.NoCheck;
                return cert is X509Certificate2 c && chain.Build(c);
            },
        }, ct);

        var payload = Encoding.UTF8.GetBytes(body ?? "");
        var head = new StringBuilder()
            .Append(method).Append(' ').Append(target).Append(" HTTP/1.1\r\n")
            .Append("Host: ").Append(url.Authority).Append("\r\n")
            .Append("Authorization: Bearer ").Append(fx.Token).Append("\r\n")
            .Append("User-Agent: raw-test/1.0\r\n")
            .Append("Connection: close\r\n");
        if (body is not null)
        {
            head.Append("Content-Type: ").Append(contentType).Append("\r\n")
                .Append("Content-Length: ").Append(payload.Length).Append("\r\n");
        }

        head.Append("\r\n");
        await tls.WriteAsync(Encoding.ASCII.GetBytes(head.ToString()), ct);
        await tls.WriteAsync(payload, ct);
        await tls.FlushAsync(ct);

        using var received = new MemoryStream();
        await tls.CopyToAsync(received, ct);
        return Parse(received.ToArray());
    }

    private static RawResponse Parse(byte[] bytes)
    {
        int split = bytes.AsSpan().IndexOf("\r\n\r\n"u8);
        Assert.True(split > 0, "no HTTP response head: " + Encoding.UTF8.GetString(bytes));
        var lines = Encoding.ASCII.GetString(bytes, 0, split).Split("\r\n");
        int code = int.Parse(lines[0].Split(' ')[1], System.Globalization.CultureInfo.InvariantCulture);
        var headers = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var line in lines.Skip(1))
        {
            int colon = line.IndexOf(':', StringComparison.Ordinal);
            headers[line[..colon].Trim().ToLowerInvariant()] = line[(colon + 1)..].Trim();
        }

        var body = bytes.AsSpan(split + 4).ToArray();
        if (headers.TryGetValue("transfer-encoding", out var te) && te.Contains("chunked", StringComparison.OrdinalIgnoreCase))
        {
            body = Dechunk(body);
        }

        return new RawResponse(code, headers, Encoding.UTF8.GetString(body));
    }

    private static byte[] Dechunk(byte[] chunked)
    {
        using var output = new MemoryStream();
        int pos = 0;
        while (true)
        {
            int eol = pos + chunked.AsSpan(pos).IndexOf("\r\n"u8);
            int size = Convert.ToInt32(Encoding.ASCII.GetString(chunked, pos, eol - pos).Split(';')[0], 16);
            if (size == 0)
            {
                return output.ToArray();
            }

            output.Write(chunked, eol + 2, size);
            pos = eol + 2 + size + 2;
        }
    }
}

/// <summary>The whole object store as written to its database: every object's key, revision and body, and the revision.</summary>
public sealed record StoreDump(long Revision, IReadOnlyDictionary<(string Resource, string Namespace, string Name), (long Rv, string Body)> Objects)
{
    public static StoreDump Read(ServerFixture fx)
    {
        string path = Path.Combine(fx.StateDirectory, "api.db");
        using var db = new SqliteConnection(new SqliteConnectionStringBuilder { DataSource = path, Mode = SqliteOpenMode.ReadOnly, Pooling = false }.ToString());
        db.Open();
        using var tx = db.BeginTransaction();
        var objects = new Dictionary<(string, string, string), (long, string)>();
        using (var cmd = db.CreateCommand())
        {
            cmd.Transaction = tx;
            cmd.CommandText = "SELECT resource, namespace, name, rv, body FROM objects";
            using var reader = cmd.ExecuteReader();
            while (reader.Read())
            {
                objects[(reader.GetString(0), reader.GetString(1), reader.GetString(2))] = (reader.GetInt64(3), reader.GetString(4));
            }
        }

        using var rv = db.CreateCommand();
        rv.Transaction = tx;
        rv.CommandText = "SELECT value FROM meta WHERE key = 'rv'";
        return new StoreDump((long)rv.ExecuteScalar()!, objects);
    }

    /// <summary>Keys of objects added, removed or changed between this dump and <paramref name="after"/>.</summary>
    public List<(string Resource, string Namespace, string Name)> Changed(StoreDump after) =>
        [.. Objects.Keys.Union(after.Objects.Keys)
            .Where(k => !Objects.TryGetValue(k, out var a) || !after.Objects.TryGetValue(k, out var b) || a != b)];
}
