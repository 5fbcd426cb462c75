namespace Dolly.Mounts;

/// <summary>
/// Serializes <c>dolly mount</c> and <c>dolly unmount</c> runs of one pool, so two of them never read and
/// rewrite the records (or decide whether a volume is still in use) at the same time. The lock is an
/// exclusive <c>flock</c> on <c>lock</c> in the records directory, which the kernel drops if the process dies.
/// </summary>
internal sealed class MountLock : IDisposable
{
    private static readonly TimeSpan Patience = TimeSpan.FromMinutes(2);
    private static readonly TimeSpan Retry = TimeSpan.FromMilliseconds(200);

    private readonly FileStream _file;

    private MountLock(FileStream file) => _file = file;

    /// <summary>Takes the lock, waiting (up to two minutes) for another run that holds it.</summary>
    public static async Task<MountLock> AcquireAsync(string directory, CancellationToken ct)
    {
        Directory.CreateDirectory(directory);
        string path = Path.Combine(directory, "lock");
        var deadline = DateTime.UtcNow + Patience;
        while (true)
        {
            try
            {
                // FileShare.None is an exclusive, non-blocking flock on Linux.
                return new MountLock(new FileStream(path, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None));
            }
            catch (IOException) when (DateTime.UtcNow < deadline)
            {
                await Task.Delay(Retry, ct).ConfigureAwait(false);
            }
            catch (IOException ex)
            {
                throw new CliFailureException(ExitCodes.InUse, $"another dolly mount or unmount of this pool has held {path} for {Patience.TotalMinutes:0} minutes ({ex.Message})");
            }
        }
    }

    public void Dispose() => _file.Dispose();
}
