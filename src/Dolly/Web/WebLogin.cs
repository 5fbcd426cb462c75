using System.Collections.Concurrent;
using System.Security.Cryptography;
using System.Text;

namespace Dolly.Web;

/// <summary>
/// Who may see the web view: whoever holds a session cookie, and a session is had only by redeeming the
/// current one-time login token (as Jupyter's login link, but single use). The token is printed by
/// <c>dolly up</c>; redeeming it issues the next one, which <see cref="TokenIssued"/> announces so that the
/// terminal always shows a link that still works. Tokens and sessions are 256-bit random values compared in
/// constant time, and live only in this process: a restart logs everyone out.
/// </summary>
internal sealed class WebLogin
{
    /// <summary>Sessions kept at most; the oldest is forgotten first (each one took a fresh token to make).</summary>
    public const int MaxSessions = 64;

    private readonly Lock _gate = new();
    private readonly ConcurrentDictionary<string, long> _sessions = new(StringComparer.Ordinal);
    private long _sessionSerial;
    private byte[] _token;

    public WebLogin() => _token = RandomNumberGenerator.GetBytes(32);

    /// <summary>Raised, outside any lock, with each token that replaces a redeemed one.</summary>
    public event Action<string>? TokenIssued;

    /// <summary>The token that the next login must present.</summary>
    public string CurrentToken
    {
        get
        {
            lock (_gate)
            {
                return Base64Url(_token);
            }
        }
    }

    /// <summary>
    /// Exchanges <paramref name="token"/> for a new session id if it is the current token, which is then used
    /// up; null for anything else (a used token, a guess, nothing).
    /// </summary>
    public string? Redeem(string? token)
    {
        if (string.IsNullOrEmpty(token) || token.Length > 128)
        {
            return null;
        }

        string next;
        string session;
        lock (_gate)
        {
            byte[] presented = Encoding.ASCII.GetBytes(token);
            byte[] expected = Encoding.ASCII.GetBytes(Base64Url(_token));
            if (!CryptographicOperations.FixedTimeEquals(presented, expected))
            {
                return null;
            }

            _token = RandomNumberGenerator.GetBytes(32);
            next = Base64Url(_token);
            session = Base64Url(RandomNumberGenerator.GetBytes(32));
            _sessions[Hash(session)] = ++_sessionSerial;
            if (_sessions.Count > MaxSessions)
            {
                var oldest = _sessions.MinBy(s => s.Value).Key;
                _sessions.TryRemove(oldest, out _);
            }
        }

        TokenIssued?.Invoke(next);
        return session;
    }

    /// <summary>Whether <paramref name="session"/> is one this process issued.</summary>
    public bool IsSession(string? session) =>
        !string.IsNullOrEmpty(session) && session.Length <= 128 && _sessions.ContainsKey(Hash(session));

    // Kept hashed, so a lookup by dictionary key does not compare the secret itself character by character.
    private static string Hash(string session) => Convert.ToHexString(SHA256.HashData(Encoding.ASCII.GetBytes(session)));

    private static string Base64Url(byte[] bytes) => Convert.ToBase64String(bytes).TrimEnd('=').Replace('+', '-').Replace('/', '_');
}
