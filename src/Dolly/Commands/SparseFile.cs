using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace Dolly.Commands;

/// <summary>Where a sparse file holds data (Linux SEEK_DATA / SEEK_HOLE), so holes are never read.</summary>
internal static partial class SparseFile
{
    private const int SeekData = 3;
    private const int SeekHole = 4;

    /// <summary>
    /// The data extents of a file, in order; null where the OS cannot tell (then the whole file is data).
    /// A file system without hole support reports one extent covering the file.
    /// </summary>
    public static List<(long Start, long Length)>? DataExtents(SafeFileHandle handle, long length)
    {
        if (!OperatingSystem.IsLinux())
        {
            return null;
        }

        var extents = new List<(long, long)>();
        bool added = false;
        handle.DangerousAddRef(ref added);
        try
        {
            int fd = (int)handle.DangerousGetHandle();
            long pos = 0;
            while (pos < length)
            {
                long data = Lseek(fd, pos, SeekData);
                if (data < 0)
                {
                    // ENXIO: no data after pos. Anything else: the file system cannot say; read it all.
                    return Marshal.GetLastPInvokeError() == 6 ? extents : null;
                }

                long hole = Lseek(fd, data, SeekHole);
                if (hole < 0)
                {
                    return null;
                }

                hole = Math.Min(hole, length);
                if (hole > data)
                {
                    extents.Add((data, hole - data));
                }

                pos = hole;
            }

            return extents;
        }
        finally
        {
            if (added)
            {
                handle.DangerousRelease();
            }
        }
    }

    [LibraryImport("libc", EntryPoint = "lseek", SetLastError = true)]
    private static partial long Lseek(int fd, long offset, int whence);
}
