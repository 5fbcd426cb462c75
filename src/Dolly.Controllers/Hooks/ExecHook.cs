using System.Globalization;
using System.Text.Json.Serialization;

namespace Dolly.Controllers.Hooks;

/// <summary>
/// A command run in a container of each pod that mounts a snapshotted claim, before (pre) or after (post) the
/// snapshot's cut, through pods/exec. The command is run as given, not in a shell.
/// </summary>
public sealed class ExecHook
{
    /// <summary>The container to run in; the pod's first container when empty.</summary>
    [JsonPropertyName("container")] public string? Container { get; set; }

    /// <summary>The command and its arguments (no shell: use <c>["sh", "-c", "..."]</c> for one).</summary>
    [JsonPropertyName("command")] public IList<string> Command { get; set; } = [];

    /// <summary>How long the command may take, such as <c>30s</c>, <c>2m</c> or <c>1m30s</c> (1s..1h, default 30s).</summary>
    [JsonPropertyName("timeout")] public string? Timeout { get; set; }

    /// <summary><c>Fail</c> (default): a failed or timed-out pre hook stops the snapshot; <c>Continue</c>: reported only.</summary>
    [JsonPropertyName("onError")] public string? OnError { get; set; }
}

/// <summary>Names and limits of exec hooks.</summary>
public static class ExecHookNames
{
    /// <summary>A failed hook fails the snapshot (a pre hook stops it before the cut).</summary>
    public const string Fail = "Fail";

    /// <summary>A failed hook is reported and the snapshot goes ahead.</summary>
    public const string Continue = "Continue";

    /// <summary>A hook's timeout when it names none (Velero's default too).</summary>
    public static readonly TimeSpan DefaultTimeout = TimeSpan.FromSeconds(30);

    /// <summary>The longest timeout accepted.</summary>
    public static readonly TimeSpan MaxTimeout = TimeSpan.FromHours(1);

    /// <summary>
    /// On a scheduled snapshot whose post hooks have not run yet: a controller that restarts in between finds it
    /// and runs them, so a pre hook's effect (a paused writer, a held lock) is always undone.
    /// </summary>
    public const string PostPendingAnnotation = "dolly.io/post-hooks-pending";

    /// <summary>On a scheduled snapshot: how its exec hooks went, in words.</summary>
    public const string ResultAnnotation = "dolly.io/exec-hooks-result";

    /// <summary>Why <paramref name="hooks"/> is invalid (naming the field under <paramref name="field"/>); null when valid.</summary>
    public static string? Problem(IList<ExecHook>? hooks, string field)
    {
        for (int i = 0; i < (hooks?.Count ?? 0); i++)
        {
            var h = hooks![i];
            string at = $"{field}[{i}]";
            if (h is null || h.Command is null || h.Command.Count == 0 || string.IsNullOrEmpty(h.Command[0]))
            {
                return $"{at}.command is empty: it needs the program to run and its arguments";
            }

            if (h.Timeout is { } t && ParseTimeout(t) is null)
            {
                return $"{at}.timeout \"{t}\" is not a duration of 1s to 1h such as 30s, 2m or 1m30s";
            }

            if (h.OnError is { } e && e is not (Fail or Continue))
            {
                return $"{at}.onError \"{e}\" must be {Fail} or {Continue}";
            }
        }

        return null;
    }

    /// <summary>The hook's timeout (default 30 s); assumes <see cref="Problem"/> found none.</summary>
    public static TimeSpan TimeoutOf(ExecHook hook) => hook?.Timeout is { } t && ParseTimeout(t) is { } span ? span : DefaultTimeout;

    /// <summary>A sequence of number-unit pairs (units s, m, h), such as <c>1m30s</c>, within 1 s..1 h; null otherwise.</summary>
    public static TimeSpan? ParseTimeout(string text)
    {
        long seconds = 0;
        int i = 0;
        if (string.IsNullOrEmpty(text))
        {
            return null;
        }

        while (i < text.Length)
        {
            int start = i;
            while (i < text.Length && char.IsAsciiDigit(text[i]))
            {
                i++;
            }

            if (i == start || i == text.Length || i - start > 5)
            {
                return null;
            }

            long n = long.Parse(text.AsSpan(start, i - start), NumberStyles.None, CultureInfo.InvariantCulture);
            long unit = text[i] switch
            {
                's' => 1,
                'm' => 60,
                'h' => 3600,
                _ => 0,
            };
            if (unit == 0)
            {
                return null;
            }

            seconds += n * unit;
            i++;
        }

        var span = TimeSpan.FromSeconds(seconds);
        return span >= TimeSpan.FromSeconds(1) && span <= MaxTimeout ? span : null;
    }
}
