using Dolly.Storage.IO;

namespace Dolly.Storage.CrashWorker;

/// <summary>Runs workload steps against a real pool.</summary>
public sealed class OpExecutor(string directory, IFileSystem? fileSystem, Pool pool) : IDisposable
{
    public Pool Pool { get; private set; } = pool;

    /// <summary>Executes a step; returns the engine's error, or null on success. Abandon is not supported here.</summary>
    public StorageError? Execute(Op op)
    {
        switch (op.Kind)
        {
            case OpKind.CreateVolume:
                return Pool.CreateVolume(op.Name, op.Size).Error;
            case OpKind.Snapshot:
                return Pool.CreateSnapshot(op.Name, op.Name2!).Error;
            case OpKind.Clone:
                return Pool.Clone(op.Name, op.Name2!, op.Size == 0 ? null : op.Size).Error;
            case OpKind.Revert:
                return Pool.Revert(op.Name, op.Name2!).Error;
            case OpKind.Resize:
                return Pool.Resize(op.Name, op.Size).Error;
            case OpKind.Delete:
                return Pool.Delete(op.Name).Error;
            case OpKind.Flush:
                return Pool.Flush().Error;
            case OpKind.Write:
            case OpKind.Trim:
            case OpKind.Zero:
            {
                var dev = Pool.OpenDevice(op.Name);
                if (!dev.IsOk)
                {
                    return dev.Error;
                }

                return op.Kind switch
                {
                    OpKind.Write => dev.Value.Write(op.Offset, op.Data(), op.Fua).Error,
                    OpKind.Trim => dev.Value.Trim(op.Offset, op.Length, op.Fua).Error,
                    _ => dev.Value.WriteZeroes(op.Offset, op.Length, op.MayUnmap, op.Fua).Error,
                };
            }

            case OpKind.Reopen:
                Pool.Dispose();
                var opened = Pool.Open(directory, fileSystem);
                if (!opened.IsOk)
                {
                    return opened.Error;
                }

                Pool = opened.Value;
                return null;
            case OpKind.Check:
                var report = Pool.Check();
                return report.IsClean ? null : new StorageError(StorageErrorCode.Corrupt, "check: " + string.Join("; ", report.Problems));
            default:
                throw new NotSupportedException($"{op.Kind} cannot run in {nameof(OpExecutor)}");
        }
    }

    /// <summary>Replaces the pool (after a reopen done by the caller).</summary>
    public void Replace(Pool pool) => Pool = pool;

    public void Dispose() => Pool.Dispose();
}
