using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace Dolly.Csi;

/// <summary>
/// FIFREEZE and FITHAW (linux/fs.h) on the file system that holds a path. A freeze belongs to the file system
/// (its superblock), not to the descriptor: closing the descriptor does not thaw, which is why the node keeps a
/// durable record of what it froze. A freeze window holds its handle open from FIFREEZE to FITHAW.
/// </summary>
internal static partial class NodeFreezeIoctl
{
    // _IOWR('X', 119, int) and _IOWR('X', 120, int): the same number on every Linux architecture .NET runs on.
    private const uint FiFreeze = 0xC0045877;
    private const uint FiThaw = 0xC0045878;
    private const int ReadOnly = 0;
    private const int CloseOnExec = 0x80000;

    /// <summary>errno: the file system is not frozen (FITHAW) or does not support freezing (FIFREEZE).</summary>
    public const int EInval = 22;

    /// <summary>errno: the file system has no freeze support.</summary>
    public const int EOpNotSupp = 95;

    /// <summary>errno: the file system is already frozen (FIFREEZE).</summary>
    public const int EBusy = 16;

    /// <summary>errno: the caller lacks CAP_SYS_ADMIN.</summary>
    public const int EPerm = 1;

    /// <summary>Freezes the file system holding <paramref name="path"/>: blocks new writes, flushes, then blocks all; 0 or errno.</summary>
    public static int Freeze(string path) => Call(path, FiFreeze);

    /// <summary>Thaws the file system holding <paramref name="path"/>; 0 or errno (<see cref="EInval"/> when it was not frozen).</summary>
    public static int Thaw(string path) => Call(path, FiThaw);

    /// <summary>
    /// Opens <paramref name="path"/> (a directory) for freezing through the handle: while it is open the mount cannot
    /// be unmounted (EBUSY), and a thaw through it reaches the same file system even if the path changed meanwhile.
    /// </summary>
    public static int Open(string path, out SafeFileHandle handle)
    {
        int fd = OpenCore(path, ReadOnly | CloseOnExec);
        if (fd < 0)
        {
            handle = new SafeFileHandle();
            return Marshal.GetLastPInvokeError();
        }

        handle = new SafeFileHandle(fd, ownsHandle: true);
        return 0;
    }

    /// <summary>FIFREEZE through an open handle; 0 or errno.</summary>
    public static int Freeze(SafeFileHandle handle) => Control(handle, FiFreeze);

    /// <summary>FITHAW through an open handle; 0 or errno.</summary>
    public static int Thaw(SafeFileHandle handle) => Control(handle, FiThaw);

    private static int Control(SafeFileHandle handle, uint request)
    {
        bool added = false;
        try
        {
            handle.DangerousAddRef(ref added);
            return Ioctl((int)handle.DangerousGetHandle(), request, 0) < 0 ? Marshal.GetLastPInvokeError() : 0;
        }
        finally
        {
            if (added)
            {
                handle.DangerousRelease();
            }
        }
    }

    private static int Call(string path, uint request)
    {
        int errno = Open(path, out var handle);
        using (handle)
        {
            return errno != 0 ? errno : Control(handle, request);
        }
    }

    /// <summary>The C library's words for an errno.</summary>
    public static string Describe(int errno) => $"{Marshal.GetPInvokeErrorMessage(errno)} (errno {errno})";

    [LibraryImport("libc", EntryPoint = "open", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int OpenCore(string path, int flags);

    [LibraryImport("libc", EntryPoint = "ioctl", SetLastError = true)]
    private static partial int Ioctl(int fd, nuint request, int argument);
}
