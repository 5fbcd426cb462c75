using Dolly.Storage;
using Grpc.Core;

namespace Dolly.Csi;

/// <summary>
/// The one place where expected outcomes become gRPC statuses. Services build an <see cref="RpcException"/>
/// here and throw it straight out of the RPC; nothing inside catches it.
/// </summary>
internal static class CsiStatus
{
    public static RpcException Fail(StatusCode code, string message) => new(new Status(code, message));

    public static RpcException InvalidArgument(string message) => Fail(StatusCode.InvalidArgument, message);

    public static RpcException NotFound(string message) => Fail(StatusCode.NotFound, message);

    public static RpcException AlreadyExists(string message) => Fail(StatusCode.AlreadyExists, message);

    public static RpcException OutOfRange(string message) => Fail(StatusCode.OutOfRange, message);

    /// <summary>The CSI code for a storage error: the spec's codes where it names one, else the nearest.</summary>
    public static RpcException From(StorageError error) => Fail(Code(error.Code), error.Message);

    public static StatusCode Code(StorageErrorCode code) => code switch
    {
        StorageErrorCode.NotFound => StatusCode.NotFound,
        StorageErrorCode.AlreadyExists => StatusCode.AlreadyExists,
        StorageErrorCode.InvalidName => StatusCode.InvalidArgument,
        StorageErrorCode.InvalidArgument => StatusCode.InvalidArgument,
        StorageErrorCode.ReadOnly => StatusCode.FailedPrecondition,
        StorageErrorCode.NoSpace => StatusCode.ResourceExhausted,
        StorageErrorCode.InUse => StatusCode.Unavailable,
        StorageErrorCode.NotAPool => StatusCode.FailedPrecondition,
        StorageErrorCode.Corrupt => StatusCode.DataLoss,
        StorageErrorCode.IoError => StatusCode.Internal,
        _ => StatusCode.Internal,
    };
}
