using System.Buffers;
using System.Net;
using System.Net.WebSockets;
using k8s;
using k8s.Autorest;

namespace Dolly.Controllers.Hooks;

/// <summary>Where a hook's command runs.</summary>
internal sealed record ExecTarget(string Namespace, string Pod, string Container)
{
    public override string ToString() => $"{Namespace}/{Pod} container {Container}";
}

/// <summary>Runs a command in a container and says how it ended; cancelling stops waiting and closes the stream.</summary>
internal interface IPodExec
{
    Task<ExecResult> RunAsync(ExecTarget target, IReadOnlyList<string> command, CancellationToken cancellationToken);
}

/// <summary>
/// pods/exec through KubernetesClient's websocket (its authentication and TLS), decoded by
/// <see cref="ExecStreamDecoder"/>. v5 first; a server that refuses the upgrade (one older than 1.30, or with the
/// TranslateStreamCloseWebsocketRequests gate off) is asked again with v4. The command gets no stdin and
/// no TTY, so stdout and stderr arrive apart and nothing waits for input.
/// </summary>
internal sealed class KubernetesPodExec(IKubernetes client) : IPodExec
{
    /// <summary>The longest message accepted; the API server relays output in pieces of at most 32 KiB.</summary>
    private const int MaxMessage = 1 << 20;

    public async Task<ExecResult> RunAsync(ExecTarget target, IReadOnlyList<string> command, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(target);
        ArgumentNullException.ThrowIfNull(command);
        WebSocket socket;
        try
        {
            socket = await ConnectAsync(target, command, ExecProtocol.V5, cancellationToken).ConfigureAwait(false);
        }
        catch (Exception ex) when (Refused(ex) && !cancellationToken.IsCancellationRequested)
        {
            socket = await ConnectAsync(target, command, ExecProtocol.V4, cancellationToken).ConfigureAwait(false);
        }

        using (socket)
        {
            return await ReadAsync(socket, socket.SubProtocol ?? ExecProtocol.V4, cancellationToken).ConfigureAwait(false);
        }
    }

    /// <summary>
    /// The server answered the upgrade with an HTTP status instead of 101. KubernetesClient reports that as an
    /// HttpOperationException on some runtimes and as the WebSocketException of ClientWebSocket (NotAWebSocket) on
    /// others; either way the next subprotocol is worth a try, and a second refusal is the caller's error.
    /// </summary>
    private static bool Refused(Exception ex) =>
        ex is HttpOperationException { Response.StatusCode: HttpStatusCode.BadRequest }
        || ex is WebSocketException { WebSocketErrorCode: WebSocketError.NotAWebSocket };

    private async Task<WebSocket> ConnectAsync(ExecTarget target, IReadOnlyList<string> command, string subprotocol, CancellationToken ct)
    {
        // The client's handshake does not observe the token; waiting on it does, and a socket that connects after
        // the caller gave up is closed rather than left open.
        var connect = client.WebSocketNamespacedPodExecAsync(
            target.Pod, target.Namespace, command, target.Container, true, false, true, false, subprotocol, null, ct);
        try
        {
            return await connect.WaitAsync(ct).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            _ = connect.ContinueWith(t => t.Result.Dispose(), CancellationToken.None, TaskContinuationOptions.OnlyOnRanToCompletion, TaskScheduler.Default);
            throw;
        }
    }

    /// <summary>Reads whole messages until the server closes, feeding the decoder.</summary>
    internal static async Task<ExecResult> ReadAsync(WebSocket socket, string subprotocol, CancellationToken ct)
    {
        var decoder = new ExecStreamDecoder(subprotocol);
        var message = new ArrayBufferWriter<byte>();
        var buffer = ArrayPool<byte>.Shared.Rent(16 * 1024);
        try
        {
            while (true)
            {
                WebSocketReceiveResult received;
                try
                {
                    received = await socket.ReceiveAsync(buffer, ct).ConfigureAwait(false);
                }
                catch (WebSocketException) when (decoder.HasStatus && !ct.IsCancellationRequested)
                {
                    // The status is the last thing the server sends; a connection dropped after it lost nothing.
                    return decoder.Finish();
                }

                if (received.MessageType == WebSocketMessageType.Close)
                {
                    if (socket.State == WebSocketState.CloseReceived)
                    {
                        await socket.CloseOutputAsync(WebSocketCloseStatus.NormalClosure, null, ct).ConfigureAwait(false);
                    }

                    return decoder.Finish();
                }

                if (received.MessageType != WebSocketMessageType.Binary)
                {
                    throw new ExecProtocolException($"the server sent a text message, which the binary subprotocol {subprotocol} does not have");
                }

                if (message.WrittenCount + received.Count > MaxMessage)
                {
                    throw new ExecProtocolException($"the server sent a message longer than {MaxMessage} bytes");
                }

                message.Write(buffer.AsSpan(0, received.Count));
                if (received.EndOfMessage)
                {
                    decoder.Accept(message.WrittenSpan);
                    message.ResetWrittenCount();
                }
            }
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }
}
