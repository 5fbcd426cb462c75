using System.Collections.Concurrent;
using System.Net;
using System.Net.WebSockets;
using System.Text;
using System.Text.Json.Nodes;
using Dolly.Controllers.Hooks;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Logging;

namespace Dolly.Controllers.Tests.Hooks;

/// <summary>What the client asked for in one exec request.</summary>
internal sealed record ExecRequest(string Namespace, string Pod, IReadOnlyList<string> Command, string? Container, string Stdin, string Stdout, string Stderr, string Tty, string Protocol);

/// <summary>
/// The server side of pods/exec as the API server speaks it (upstream's remotecommand websocket server): the
/// subprotocol picked from those the client offers, in the server's preference order, or 400 with a Status when
/// none fits; then binary messages each led by their channel byte; the Status JSON on channel 3 last; a normal
/// close. A test scripts what the "command" writes. Also serves just enough of the API (discovery and the pod) for
/// kubectl exec, so the real kubectl checks that this server speaks the protocol it expects.
/// </summary>
internal sealed class ExecTestServer : IAsyncDisposable
{
    private readonly WebApplication _app;

    private ExecTestServer(WebApplication app, string[] protocols, Func<ExecRequest, ExecScript, Task> script)
    {
        _app = app;
        Protocols = protocols;
        Script = script;
    }

    /// <summary>The subprotocols this server speaks, most preferred first.</summary>
    public string[] Protocols { get; }

    public Func<ExecRequest, ExecScript, Task> Script { get; set; }

    /// <summary>Every exec request that was upgraded, in order.</summary>
    public ConcurrentQueue<ExecRequest> Requests { get; } = new();

    /// <summary>Requests refused because no offered subprotocol fits.</summary>
    public ConcurrentQueue<string> Refused { get; } = new();

    public Uri Url => new(_app.Urls.First());

    public static async Task<ExecTestServer> StartAsync(string[] protocols, Func<ExecRequest, ExecScript, Task> script)
    {
        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.WebHost.UseKestrel(k => k.Listen(IPAddress.Loopback, 0));
        var app = builder.Build();
        var server = new ExecTestServer(app, protocols, script);
        app.UseWebSockets();
        app.MapGet("/api", () => Results.Json(new JsonObject { ["kind"] = "APIVersions", ["versions"] = new JsonArray("v1"), ["serverAddressByClientCIDRs"] = new JsonArray() }));
        app.MapGet("/apis", () => Results.Json(new JsonObject { ["kind"] = "APIGroupList", ["apiVersion"] = "v1", ["groups"] = new JsonArray() }));
        app.MapGet("/api/v1", () => Results.Json(new JsonObject
        {
            ["kind"] = "APIResourceList",
            ["groupVersion"] = "v1",
            ["resources"] = new JsonArray(
                new JsonObject { ["name"] = "pods", ["singularName"] = "pod", ["namespaced"] = true, ["kind"] = "Pod", ["verbs"] = new JsonArray("get", "list") },
                new JsonObject { ["name"] = "pods/exec", ["singularName"] = "", ["namespaced"] = true, ["kind"] = "PodExecOptions", ["verbs"] = new JsonArray("create", "get") }),
        }));
        app.MapGet("/api/v1/namespaces/{ns}/pods/{pod}", (string ns, string pod) => Results.Json(new JsonObject
        {
            ["kind"] = "Pod",
            ["apiVersion"] = "v1",
            ["metadata"] = new JsonObject { ["name"] = pod, ["namespace"] = ns, ["uid"] = "9b0f5a8e-0000-4000-8000-000000000001" },
            ["spec"] = new JsonObject { ["containers"] = new JsonArray(new JsonObject { ["name"] = "db", ["image"] = "db" }, new JsonObject { ["name"] = "sidecar", ["image"] = "sidecar" }) },
            ["status"] = new JsonObject { ["phase"] = "Running" },
        }));
        app.Map("/api/v1/namespaces/{ns}/pods/{pod}/exec", (Func<HttpContext, string, string, Task>)server.ExecAsync);
        await app.StartAsync(TestContext.Current.CancellationToken);
        return server;
    }

    private async Task ExecAsync(HttpContext context, string ns, string pod)
    {
        if (!context.WebSockets.IsWebSocketRequest)
        {
            await StatusAsync(context, 400, "Upgrade request required");
            return;
        }

        var offered = context.WebSockets.WebSocketRequestedProtocols;
        string? chosen = Protocols.FirstOrDefault(p => offered.Contains(p, StringComparer.Ordinal));
        if (chosen is null)
        {
            Refused.Enqueue(string.Join(",", offered));
            await StatusAsync(context, 400, $"requested protocol(s) are not supported: [{string.Join(" ", offered)}]; supports [{string.Join(" ", Protocols)}]");
            return;
        }

        var q = context.Request.Query;
        var request = new ExecRequest(ns, pod, [.. q["command"].Select(c => c ?? "")], q["container"].FirstOrDefault(), q["stdin"].ToString(), q["stdout"].ToString(), q["stderr"].ToString(), q["tty"].ToString(), chosen);
        Requests.Enqueue(request);
        using var socket = await context.WebSockets.AcceptWebSocketAsync(new WebSocketAcceptContext { SubProtocol = chosen });
        var script = new ExecScript(socket);
        await Script(request, script);
        if (socket.State == WebSocketState.Open)
        {
            await socket.CloseOutputAsync(WebSocketCloseStatus.NormalClosure, null, CancellationToken.None);
            var sink = new byte[256];
            while (socket.State == WebSocketState.CloseSent)
            {
                try
                {
                    if ((await socket.ReceiveAsync(sink, CancellationToken.None)).MessageType == WebSocketMessageType.Close)
                    {
                        break;
                    }
                }
                catch (WebSocketException)
                {
                    break;
                }
            }
        }
    }

    private static Task StatusAsync(HttpContext context, int code, string message)
    {
        context.Response.StatusCode = code;
        return context.Response.WriteAsJsonAsync(new JsonObject { ["kind"] = "Status", ["apiVersion"] = "v1", ["metadata"] = new JsonObject(), ["status"] = "Failure", ["message"] = message, ["code"] = code });
    }

    public async ValueTask DisposeAsync()
    {
        await _app.StopAsync(CancellationToken.None);
        await _app.DisposeAsync();
    }
}

/// <summary>What a scripted command does on the wire.</summary>
internal sealed class ExecScript(WebSocket socket)
{
    /// <summary>A Status of a command that exited 0, as the API server writes it.</summary>
    public const string Success = """{"metadata":{},"status":"Success"}""";

    public WebSocket Socket => socket;

    /// <summary>A Status of a command that exited with <paramref name="code"/>, as the API server writes it.</summary>
    public static string ExitCode(int code) =>
        $$$"""{"metadata":{},"status":"Failure","message":"command terminated with non-zero exit code: error executing command, exit code {{{code}}}","reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"{{{code}}}"}]}}""";

    /// <summary>One whole message on <paramref name="channel"/>.</summary>
    public Task SendAsync(byte channel, string text) => SendAsync([channel, .. Encoding.UTF8.GetBytes(text)]);

    /// <summary>One message with exactly these bytes (channel byte included).</summary>
    public async Task SendAsync(byte[] message) =>
        await socket.SendAsync(message, WebSocketMessageType.Binary, endOfMessage: true, CancellationToken.None);

    /// <summary>One message split into websocket frames of at most <paramref name="frame"/> bytes.</summary>
    public async Task SendFragmentedAsync(byte channel, string text, int frame)
    {
        byte[] message = [channel, .. Encoding.UTF8.GetBytes(text)];
        for (int at = 0; at < message.Length; at += frame)
        {
            int n = Math.Min(frame, message.Length - at);
            await socket.SendAsync(message.AsMemory(at, n), WebSocketMessageType.Binary, endOfMessage: at + n == message.Length, CancellationToken.None);
        }
    }

    public Task StatusAsync(string json) => SendAsync(ExecProtocol.Error, json);

    /// <summary>Waits until the client goes away (it closed, or the connection dropped).</summary>
    public async Task WaitForClientAsync()
    {
        var sink = new byte[256];
        try
        {
            while ((await socket.ReceiveAsync(sink, CancellationToken.None)).MessageType != WebSocketMessageType.Close)
            {
            }
        }
        catch (WebSocketException)
        {
        }
    }
}
