namespace Dolly.Storage.IO;

/// <summary>
/// The only way the engine touches files. Production uses <see cref="PhysicalFileSystem"/>; crash tests
/// substitute an implementation that loses or tears writes that were not made durable by <see cref="IStorageFile.Sync"/>.
/// </summary>
public interface IFileSystem
{
    /// <summary>True when the directory exists.</summary>
    bool DirectoryExists(string path);

    /// <summary>Creates the directory and its parents.</summary>
    void CreateDirectory(string path);

    /// <summary>Names (not paths) of the entries in a directory.</summary>
    IReadOnlyList<string> ListDirectory(string path);

    /// <summary>True when the file exists.</summary>
    bool FileExists(string path);

    /// <summary>Opens a file for random access; <paramref name="create"/> creates it if missing.</summary>
    IStorageFile Open(string path, bool create);

    /// <summary>
    /// Takes an exclusive lock on the directory, held until the returned object is disposed.
    /// Returns null when another holder has it.
    /// </summary>
    IDisposable? TryLock(string directory);

    /// <summary>Makes the directory's entries (file creations) durable.</summary>
    void SyncDirectory(string path);

    /// <summary>
    /// True when different files may be written and synced from several threads at once (a commit then syncs the
    /// journal, the data and the metadata together). An implementation that is not thread-safe leaves it false.
    /// </summary>
    bool ConcurrentFiles => false;
}

/// <summary>A file read and written at explicit offsets.</summary>
public interface IStorageFile : IDisposable
{
    /// <summary>The file length in bytes.</summary>
    long Length { get; }

    /// <summary>Reads up to <c>buffer.Length</c> bytes at <paramref name="offset"/>; bytes past the end read as zero.</summary>
    void Read(long offset, Span<byte> buffer);

    /// <summary>Writes all of <paramref name="data"/> at <paramref name="offset"/>. Throws <see cref="IOException"/> on failure (for example a full disk).</summary>
    void Write(long offset, ReadOnlySpan<byte> data);

    /// <summary>Makes every completed write durable (fdatasync).</summary>
    void Sync();

    /// <summary>Deallocates a range; it reads back as zeros. Best effort where the file system lacks support.</summary>
    void PunchHole(long offset, long length);

    /// <summary>Bytes the file occupies on disk (sparse files use less than their length).</summary>
    long AllocatedBytes { get; }
}
