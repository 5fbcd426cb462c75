using System.Buffers;
using System.Globalization;
using System.Text;
using System.Text.Json;

namespace Dolly.Controllers.Hooks;

/// <summary>
/// Wire facts of the Kubernetes remote-command websocket subprotocols (pods/exec). Every binary message starts with
/// one byte naming its channel: 0 stdin, 1 stdout, 2 stderr, 3 error (in v4 and v5 a metav1.Status JSON: Success,
/// or Failure with reason NonZeroExitCode and the code in details.causes[reason=ExitCode].message), 4 resize. v5
/// adds a close signal: a message on channel 255 whose one payload byte names the channel that is finished.
/// </summary>
internal static class ExecProtocol
{
    /// <summary>The subprotocol with the close signal (Kubernetes 1.30+).</summary>
    public const string V5 = "v5.channel.k8s.io";

    /// <summary>The subprotocol with the Status JSON on the error channel (Kubernetes 1.4+).</summary>
    public const string V4 = "v4.channel.k8s.io";

    public const byte Stdin = 0;
    public const byte Stdout = 1;
    public const byte Stderr = 2;
    public const byte Error = 3;
    public const byte Resize = 4;

    /// <summary>v5 only: the close signal's channel.</summary>
    public const byte Close = 255;

    /// <summary>The Status reason of a command that ran and exited with a code other than 0.</summary>
    public const string NonZeroExitCode = "NonZeroExitCode";

    /// <summary>The cause reason whose message is the exit code.</summary>
    public const string ExitCodeCause = "ExitCode";
}

/// <summary>How one command in a container ended.</summary>
/// <param name="ExitCode">The command's exit code; null when it did not run or the server said nothing about it.</param>
/// <param name="Message">The server's Status message when the command did not succeed.</param>
/// <param name="Stdout">The tail of what it wrote to stdout (the end says most about a failure).</param>
/// <param name="Stderr">The tail of what it wrote to stderr.</param>
internal sealed record ExecResult(int? ExitCode, string? Message, string Stdout, string Stderr)
{
    public bool Succeeded => ExitCode == 0;

    /// <summary>One line for a status or an event: the exit code or the failure, and the last output line.</summary>
    public string Describe()
    {
        string what = ExitCode switch
        {
            0 => "exit code 0",
            { } code => $"exit code {code}",
            null => Message ?? "no exit status",
        };
        string last = LastLine(Stderr) ?? LastLine(Stdout) ?? "";
        return last.Length == 0 ? what : $"{what}: {last}";
    }

    private static string? LastLine(string text)
    {
        var lines = text.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        return lines.Length == 0 ? null : lines[^1];
    }
}

/// <summary>A peer that broke the subprotocol: the connection is not to be trusted for a result.</summary>
internal sealed class ExecProtocolException(string message) : Exception(message);

/// <summary>
/// Decodes the server's side of one exec stream, one whole websocket message at a time, into an
/// <see cref="ExecResult"/>. Output is kept only up to a bound (its tail), so a chatty hook cannot grow memory.
/// </summary>
internal sealed class ExecStreamDecoder(string subprotocol, int keepBytes = ExecStreamDecoder.DefaultKeep)
{
    public const int DefaultKeep = 4096;

    /// <summary>Far above any Status the server writes; a longer error channel is a broken peer.</summary>
    private const int MaxStatusBytes = 64 * 1024;

    private readonly bool _v5 = subprotocol == ExecProtocol.V5;
    private readonly TailBuffer _stdout = new(keepBytes);
    private readonly TailBuffer _stderr = new(keepBytes);
    private readonly ArrayBufferWriter<byte> _status = new();
    private readonly bool[] _closed = new bool[ExecProtocol.Resize + 1];

    /// <summary>Whether the error channel has carried a Status (the server sends it once, when the command ends).</summary>
    public bool HasStatus => _status.WrittenCount > 0;

    /// <summary>Takes one whole message (the channel byte and its payload).</summary>
    public void Accept(ReadOnlySpan<byte> message)
    {
        if (message.IsEmpty)
        {
            return;
        }

        byte channel = message[0];
        var payload = message[1..];
        if (channel == ExecProtocol.Close)
        {
            if (!_v5)
            {
                throw new ExecProtocolException($"the server sent a close signal (channel 255), which {ExecProtocol.V4} does not have");
            }

            if (payload.Length != 1 || payload[0] is not (ExecProtocol.Stdout or ExecProtocol.Stderr or ExecProtocol.Error))
            {
                throw new ExecProtocolException($"the server's close signal names {(payload.Length == 1 ? "channel " + payload[0].ToString(CultureInfo.InvariantCulture) : payload.Length + " bytes")}, not one of its output channels");
            }

            _closed[payload[0]] = true;
            return;
        }

        if (channel is not (ExecProtocol.Stdout or ExecProtocol.Stderr or ExecProtocol.Error))
        {
            throw new ExecProtocolException($"the server sent data on channel {channel}, which only the client writes");
        }

        if (_closed[channel] && !payload.IsEmpty)
        {
            throw new ExecProtocolException($"the server sent data on channel {channel} after closing it");
        }

        switch (channel)
        {
            case ExecProtocol.Stdout:
                _stdout.Append(payload);
                break;
            case ExecProtocol.Stderr:
                _stderr.Append(payload);
                break;
            default:
                if (_status.WrittenCount + payload.Length > MaxStatusBytes)
                {
                    throw new ExecProtocolException($"the server's status on the error channel is longer than {MaxStatusBytes} bytes");
                }

                _status.Write(payload);
                break;
        }
    }

    /// <summary>The result once the server has closed the connection.</summary>
    public ExecResult Finish()
    {
        string stdout = _stdout.Text();
        string stderr = _stderr.Text();
        if (_status.WrittenCount == 0)
        {
            // Servers always send a Status before closing; without one, whether the command ran is unknown.
            return new ExecResult(null, "the exec stream ended without a status from the server", stdout, stderr);
        }

        var (code, message) = ParseStatus(_status.WrittenSpan);
        return new ExecResult(code, message, stdout, stderr);
    }

    /// <summary>The exit code and message of a metav1.Status from the error channel.</summary>
    internal static (int? ExitCode, string? Message) ParseStatus(ReadOnlySpan<byte> json)
    {
        JsonDocument doc;
        try
        {
            doc = JsonDocument.Parse(json.ToArray());
        }
        catch (JsonException ex)
        {
            throw new ExecProtocolException($"the error channel carries no Status JSON ({ex.Message}): {Encoding.UTF8.GetString(json)}");
        }

        using (doc)
        {
            var root = doc.RootElement;
            if (root.ValueKind != JsonValueKind.Object || !root.TryGetProperty("status", out var statusField) || statusField.ValueKind != JsonValueKind.String)
            {
                throw new ExecProtocolException($"the error channel's JSON is not a Status: {Encoding.UTF8.GetString(json)}");
            }

            string? message = root.TryGetProperty("message", out var m) && m.ValueKind == JsonValueKind.String ? m.GetString() : null;
            if (statusField.GetString() == "Success")
            {
                return (0, null);
            }

            if (root.TryGetProperty("reason", out var reason) && reason.ValueKind == JsonValueKind.String && reason.GetString() == ExecProtocol.NonZeroExitCode
                && root.TryGetProperty("details", out var details) && details.ValueKind == JsonValueKind.Object
                && details.TryGetProperty("causes", out var causes) && causes.ValueKind == JsonValueKind.Array)
            {
                foreach (var cause in causes.EnumerateArray())
                {
                    if (cause.ValueKind == JsonValueKind.Object
                        && cause.TryGetProperty("reason", out var r) && r.ValueKind == JsonValueKind.String && r.GetString() == ExecProtocol.ExitCodeCause
                        && cause.TryGetProperty("message", out var text) && text.ValueKind == JsonValueKind.String
                        && int.TryParse(text.GetString(), NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out int code))
                    {
                        return (code, message);
                    }
                }

                throw new ExecProtocolException($"the Status says {ExecProtocol.NonZeroExitCode} but carries no {ExecProtocol.ExitCodeCause} cause: {Encoding.UTF8.GetString(json)}");
            }

            return (null, message ?? "the server reported a failure without a message");
        }
    }

    /// <summary>The last <c>capacity</c> bytes appended.</summary>
    private sealed class TailBuffer(int capacity)
    {
        private readonly byte[] _ring = new byte[capacity];
        private long _total;

        public void Append(ReadOnlySpan<byte> data)
        {
            if (capacity == 0)
            {
                return;
            }

            if (data.Length > capacity)
            {
                _total += data.Length - capacity;
                data = data[^capacity..];
            }

            foreach (byte b in data)
            {
                _ring[_total++ % capacity] = b;
            }
        }

        public string Text()
        {
            int length = (int)Math.Min(_total, capacity);
            var bytes = new byte[length];
            for (int i = 0; i < length; i++)
            {
                bytes[i] = _ring[(_total - length + i) % capacity];
            }

            return Encoding.UTF8.GetString(bytes);
        }
    }
}
