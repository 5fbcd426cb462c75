using System.Net.Sockets;

namespace Dolly.Nbd;

/// <summary>Preparing the path a unix-socket server is about to bind (shared by the NBD and CSI servers).</summary>
public static class UnixSocketPath
{
    /// <summary>
    /// Removes a socket left behind by a server that died, which would make bind fail. A live server's socket
    /// and a file that is not a socket (someone's data) are left alone: both throw
    /// <see cref="InvalidOperationException"/> with a message naming the path.
    /// </summary>
    public static void RemoveStale(string path)
    {
        if (!File.Exists(path))
        {
            return;
        }

        using (var probe = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified))
        {
            try
            {
                probe.Connect(new UnixDomainSocketEndPoint(path));
                throw new InvalidOperationException($"cannot listen on {path}: another server is already listening there");
            }
            catch (SocketException)
            {
                // Nobody listens: stale, or not a socket at all.
            }
        }

        if (IsRegularFile(path))
        {
            throw new InvalidOperationException($"cannot listen on {path}: a file that is not a socket is in the way; remove it or choose another socket path");
        }

        File.Delete(path);
    }

    // A unix socket cannot be opened as a file (ENXIO), so whatever opens is a file that must be kept.
    private static bool IsRegularFile(string path)
    {
        try
        {
            using var handle = File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite);
            return true;
        }
        catch (IOException)
        {
            return false;
        }
        catch (UnauthorizedAccessException)
        {
            return true;
        }
    }
}
