using Grpc.Core;
using Grpc.Core.Interceptors;
using Microsoft.Extensions.Logging;

namespace Dolly.Csi;

/// <summary>Logs every RPC that ends in a status other than OK, once, with the message the caller gets.</summary>
internal sealed class CsiLoggingInterceptor(ILogger<CsiLoggingInterceptor> logger) : Interceptor
{
    public override async Task<TResponse> UnaryServerHandler<TRequest, TResponse>(TRequest request, ServerCallContext context, UnaryServerMethod<TRequest, TResponse> continuation)
    {
        try
        {
            return await continuation(request, context).ConfigureAwait(false);
        }
        catch (RpcException e)
        {
            CsiLog.RpcFailed(logger, context.Method, e.StatusCode, e.Status.Detail);
            throw;
        }
    }

    public override async Task ServerStreamingServerHandler<TRequest, TResponse>(TRequest request, IServerStreamWriter<TResponse> responseStream, ServerCallContext context, ServerStreamingServerMethod<TRequest, TResponse> continuation)
    {
        try
        {
            await continuation(request, responseStream, context).ConfigureAwait(false);
        }
        catch (RpcException e)
        {
            CsiLog.RpcFailed(logger, context.Method, e.StatusCode, e.Status.Detail);
            throw;
        }
    }
}
