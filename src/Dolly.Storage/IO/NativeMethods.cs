using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace Dolly.Storage.IO;

internal static partial class NativeMethods
{
    public const int LockExclusive = 2;
    public const int LockNonBlocking = 4;

    [LibraryImport("libc", EntryPoint = "fdatasync", SetLastError = true)]
    public static partial int Fdatasync(SafeFileHandle fd);

    [LibraryImport("libc", EntryPoint = "fsync", SetLastError = true)]
    public static partial int Fsync(int fd);

    [LibraryImport("libc", EntryPoint = "fallocate", SetLastError = true)]
    public static partial int Fallocate(SafeFileHandle fd, int mode, long offset, long length);

    [LibraryImport("libc", EntryPoint = "flock", SetLastError = true)]
    public static partial int Flock(SafeFileHandle fd, int operation);

    [LibraryImport("libc", EntryPoint = "open", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int Open(string path, int flags);

    [LibraryImport("libc", EntryPoint = "close", SetLastError = true)]
    public static partial int Close(int fd);

    [LibraryImport("libc", EntryPoint = "fstat", SetLastError = true)]
    public static partial int Fstat(SafeFileHandle fd, ref StatBuffer buffer);

    /// <summary>struct stat on x86_64 and arm64 Linux glibc: st_blocks is at byte 64 on x86_64, 64 on arm64 too.</summary>
    [StructLayout(LayoutKind.Explicit, Size = 256)]
    public struct StatBuffer
    {
        [FieldOffset(64)]
        public long Blocks;
    }
}
