using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace Dolly.Storage.IO;

/// <summary>The real file system, with fdatasync and hole punching on Linux.</summary>
public sealed class PhysicalFileSystem : IFileSystem
{
    /// <summary>The shared instance.</summary>
    public static PhysicalFileSystem Instance { get; } = new();

    /// <inheritdoc />
    public bool DirectoryExists(string path) => Directory.Exists(path);

    /// <inheritdoc />
    public bool ConcurrentFiles => true;

    /// <inheritdoc />
    public void CreateDirectory(string path) => Directory.CreateDirectory(path);

    /// <inheritdoc />
    public IReadOnlyList<string> ListDirectory(string path) =>
        Directory.EnumerateFileSystemEntries(path).Select(p => Path.GetFileName(p)).ToList();

    /// <inheritdoc />
    public bool FileExists(string path) => File.Exists(path);

    /// <inheritdoc />
    public IStorageFile Open(string path, bool create)
    {
        var handle = File.OpenHandle(path, create ? FileMode.OpenOrCreate : FileMode.Open, FileAccess.ReadWrite, FileShare.ReadWrite);
        return new PhysicalFile(handle);
    }

    // EWOULDBLOCK on Linux (IOException.HResult carries errno on Unix), ERROR_SHARING_VIOLATION on Windows.
    private const int WouldBlock = 11;
    private const int SharingViolation = unchecked((int)0x80070020);

    /// <inheritdoc />
    public IDisposable? TryLock(string directory)
    {
        var path = Path.Combine(directory, "pool.lock");
        SafeFileHandle handle;
        try
        {
            handle = File.OpenHandle(path, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.ReadWrite);
        }
        catch (IOException ex) when (ex.HResult is WouldBlock or SharingViolation)
        {
            // .NET itself flocks (shared) every file it opens on Unix, so against a holder's exclusive lock the
            // open fails before our flock runs: that is "in use", not an I/O error.
            return null;
        }

        if (OperatingSystem.IsLinux() && NativeMethods.Flock(handle, NativeMethods.LockExclusive | NativeMethods.LockNonBlocking) != 0)
        {
            handle.Dispose();
            return null;
        }

        return handle;
    }

    /// <inheritdoc />
    public void SyncDirectory(string path)
    {
        if (!OperatingSystem.IsLinux())
        {
            return;
        }

        // O_RDONLY | O_DIRECTORY; fsync on the directory makes new entries durable.
        int fd = NativeMethods.Open(path, 0x10000);
        if (fd < 0)
        {
            return;
        }

        try
        {
            _ = NativeMethods.Fsync(fd);
        }
        finally
        {
            _ = NativeMethods.Close(fd);
        }
    }

    /// <summary>Writes zeros over [offset, offset + length), in pieces of at most 1 MiB.</summary>
    internal static void WriteZeros(SafeFileHandle handle, long offset, long length)
    {
        var zeros = new byte[(int)Math.Min(length, 1 << 20)];
        while (length > 0)
        {
            int n = (int)Math.Min(length, zeros.Length);
            RandomAccess.Write(handle, zeros.AsSpan(0, n), offset);
            offset += n;
            length -= n;
        }
    }

    private sealed class PhysicalFile(SafeFileHandle handle) : IStorageFile
    {
        public long Length => RandomAccess.GetLength(handle);

        public long AllocatedBytes
        {
            get
            {
                if (!OperatingSystem.IsLinux())
                {
                    return Length;
                }

                var stat = new NativeMethods.StatBuffer();
                return NativeMethods.Fstat(handle, ref stat) == 0 ? stat.Blocks * 512 : Length;
            }
        }

        public void Read(long offset, Span<byte> buffer)
        {
            int done = 0;
            while (done < buffer.Length)
            {
                int n = RandomAccess.Read(handle, buffer[done..], offset + done);
                if (n == 0)
                {
                    buffer[done..].Clear();
                    return;
                }

                done += n;
            }
        }

        public void Write(long offset, ReadOnlySpan<byte> data) => RandomAccess.Write(handle, data, offset);

        public void Sync()
        {
            if (OperatingSystem.IsLinux())
            {
                if (NativeMethods.Fdatasync(handle) != 0)
                {
                    throw new IOException($"fdatasync failed: errno {Marshal.GetLastPInvokeError()}");
                }
            }
            else
            {
                RandomAccess.FlushToDisk(handle);
            }
        }

        public void PunchHole(long offset, long length)
        {
            // FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE. The engine counts on a punched range reading as zeros (a
            // block handed out again is written only where the client writes), so a file system that cannot
            // punch gets the zeros written instead: a space and time cost, never stale bytes.
            if (!OperatingSystem.IsLinux() || NativeMethods.Fallocate(handle, 0x01 | 0x02, offset, length) != 0)
            {
                WriteZeros(handle, offset, length);
            }
        }

        public void Dispose() => handle.Dispose();
    }
}
