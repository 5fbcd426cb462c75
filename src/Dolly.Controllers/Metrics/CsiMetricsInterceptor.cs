using Grpc.Core;
using Grpc.Core.Interceptors;

namespace Dolly.Controllers.Metrics;

/// <summary>
/// Times every unary CSI call the controllers make into <c>csi_sidecar_operations_seconds</c>, labelled as
/// csi-lib-utils does: the full method (/csi.v1.Controller/CreateSnapshot) and the gRPC status code as Go
/// spells it (OK, NotFound, Canceled...).
/// </summary>
internal sealed class CsiMetricsInterceptor(ControllerMetrics metrics, string driverName) : Interceptor
{
    public override AsyncUnaryCall<TResponse> AsyncUnaryCall<TRequest, TResponse>(
        TRequest request,
        ClientInterceptorContext<TRequest, TResponse> context,
        AsyncUnaryCallContinuation<TRequest, TResponse> continuation)
    {
        long started = metrics.Time.GetTimestamp();
        var call = continuation(request, context);
        return new AsyncUnaryCall<TResponse>(
            TimeAsync(call.ResponseAsync, context.Method.FullName, started),
            call.ResponseHeadersAsync,
            call.GetStatus,
            call.GetTrailers,
            call.Dispose);
    }

    private async Task<TResponse> TimeAsync<TResponse>(Task<TResponse> response, string method, long started)
    {
        try
        {
            var result = await response.ConfigureAwait(false);
            Record(method, StatusCode.OK, started);
            return result;
        }
        catch (RpcException ex)
        {
            Record(method, ex.StatusCode, started);
            throw;
        }
    }

    private void Record(string method, StatusCode code, long started) =>
        metrics.RecordCsiCall(driverName, method, GoName(code), metrics.Time.GetElapsedTime(started));

    /// <summary>The code as grpc-go's String() prints it, which upstream's label values are.</summary>
    internal static string GoName(StatusCode code) => code switch
    {
        StatusCode.Cancelled => "Canceled",
        _ => code.ToString(),
    };
}
