using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.AspNetCore.Http;

namespace Dolly.Api.Http;

/// <summary>Reading request bodies and writing JSON responses the way kube-apiserver frames them.</summary>
internal static class Wire
{
    /// <summary>kube-apiserver's default request body limit.</summary>
    public const int MaxBodyBytes = 3 * 1024 * 1024;

    public static readonly JsonWriterOptions WriterOptions = new()
    {
        Indented = false,
        SkipValidation = true,
        // Quotes as \" and no escaping of ', <, > or non-ASCII, as Go's encoder writes them.
        Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
    };

    public static async Task<string> ReadBodyAsync(HttpRequest request, CancellationToken cancellationToken)
    {
        var bytes = await ReadBytesAsync(request, cancellationToken).ConfigureAwait(false);
        return Encoding.UTF8.GetString(bytes);
    }

    public static async Task<byte[]> ReadBytesAsync(HttpRequest request, CancellationToken cancellationToken)
    {
        if (request.ContentLength > MaxBodyBytes)
        {
            throw Errors.TooLarge(MaxBodyBytes);
        }

        using var buffer = new MemoryStream();
        var chunk = new byte[64 * 1024];
        while (true)
        {
            int n = await request.Body.ReadAsync(chunk, cancellationToken).ConfigureAwait(false);
            if (n == 0)
            {
                break;
            }

            if (buffer.Length + n > MaxBodyBytes)
            {
                throw Errors.TooLarge(MaxBodyBytes);
            }

            buffer.Write(chunk, 0, n);
        }

        return buffer.ToArray();
    }

    /// <summary>The media type without parameters, lower-cased.</summary>
    public static string MediaType(string? contentType) =>
        (contentType ?? "").Split(';')[0].Trim().ToLowerInvariant();

    public static async Task WriteJsonAsync(HttpResponse response, int status, JsonNode body, CancellationToken cancellationToken, string contentType = "application/json")
    {
        response.StatusCode = status;
        response.ContentType = contentType;
        var writer = new Utf8JsonWriter(response.BodyWriter, WriterOptions);
        await using (writer.ConfigureAwait(false))
        {
            body.WriteTo(writer);
            await writer.FlushAsync(cancellationToken).ConfigureAwait(false);
        }
    }

    public static Task WriteStatusAsync(HttpResponse response, ApiErrorException error, CancellationToken cancellationToken) =>
        WriteJsonAsync(response, error.Code, error.ToStatus(), cancellationToken);

    /// <summary>Formats a Warning header value: 299 - "text" with quotes and backslashes escaped.</summary>
    public static string WarningHeader(string text) =>
        "299 - \"" + text.Replace("\\", "\\\\", StringComparison.Ordinal).Replace("\"", "\\\"", StringComparison.Ordinal) + "\"";
}
