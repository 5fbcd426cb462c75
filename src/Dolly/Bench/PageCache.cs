using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace Dolly.Bench;

/// <summary>Evicts a file's clean pages from the page cache (Linux, no root needed), so reads hit the disk.</summary>
internal static partial class PageCache
{
    private const int PosixFadviseDontNeed = 4;

    /// <summary>True when the file's cached pages were dropped; false where the OS cannot do it.</summary>
    public static bool Drop(string path)
    {
        if (!OperatingSystem.IsLinux())
        {
            return false;
        }

        using var handle = File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite);
        return Drop(handle);
    }

    /// <summary>True when the file's cached pages were dropped (they must be clean: flush first).</summary>
    public static bool Drop(SafeFileHandle handle) => OperatingSystem.IsLinux() && PosixFadvise(handle, 0, 0, PosixFadviseDontNeed) == 0;

    /// <summary>
    /// Writes back every dirty page of the machine and waits (sync(2)), so one section's deleted files and
    /// write-back do not stall the next section's fsyncs.
    /// </summary>
    public static void Settle()
    {
        if (OperatingSystem.IsLinux())
        {
            Sync();
        }
    }

    [LibraryImport("libc", EntryPoint = "sync")]
    private static partial void Sync();

    [LibraryImport("libc", EntryPoint = "posix_fadvise")]
    private static partial int PosixFadvise(SafeFileHandle fd, long offset, long length, int advice);
}
