using System.Runtime.CompilerServices;
using Dolly.Storage.IO;

namespace Dolly.Repository.Storage;

/// <summary>
/// An object store in a local directory (the embedded default, and a repository on an NFS or removable disk):
/// a key <c>chunks/ab/abcd…</c> is the file <c>ROOT/chunks/ab/abcd…</c>.
/// </summary>
/// <remarks>
/// A put writes a temporary file beside the target (<c>.NAME.tmp-RANDOM</c>), fsyncs it, renames it over the
/// target and fsyncs the directory, so a reader or a crash sees the old object or the new one whole, never a
/// torn one, and a put that returned survives power loss. Temporary files start with '.', which no key segment
/// may, so listings never show them; one left by a crash is inert (a later put of the key makes its own).
/// </remarks>
public sealed class DirectoryObjectStore : IObjectStore
{
    private readonly string _root;

    /// <summary>A store rooted at <paramref name="root"/>, which must exist (<see cref="Create"/> makes it).</summary>
    public DirectoryObjectStore(string root)
    {
        _root = Path.TrimEndingDirectorySeparator(Path.GetFullPath(root));
    }

    /// <inheritdoc />
    public string Location => _root;

    /// <summary>Creates the root directory (and parents) if missing, then opens the store.</summary>
    public static DirectoryObjectStore Create(string root)
    {
        try
        {
            Directory.CreateDirectory(root);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            throw new ObjectStoreException(ObjectStoreError.Other, $"cannot create the repository directory '{root}': {ex.Message}", ex);
        }

        return new DirectoryObjectStore(root);
    }

    /// <summary>Why <paramref name="key"/> is not a valid key, or null when it is.</summary>
    public static string? ValidateKey(string key)
    {
        if (string.IsNullOrEmpty(key))
        {
            return "an object key must not be empty";
        }

        if (key[0] == '/')
        {
            return $"object key '{key}' is absolute; keys are relative to the store";
        }

        if (key.Contains('\\', StringComparison.Ordinal) || key.Contains('\0', StringComparison.Ordinal))
        {
            return $"object key '{key}' contains a backslash or NUL";
        }

        foreach (var segment in key.Split('/'))
        {
            if (segment.Length == 0)
            {
                return $"object key '{key}' has an empty segment";
            }

            if (segment[0] == '.')
            {
                // Covers "." and ".." (escaping the root) and the store's own temporary files.
                return $"object key '{key}' has a segment starting with '.' ('{segment}')";
            }
        }

        return null;
    }

    /// <inheritdoc />
    public async Task PutAsync(string key, ReadOnlyMemory<byte> data, CancellationToken cancellationToken)
    {
        string path = PathOf(key);
        string directory = Path.GetDirectoryName(path)!;
        string temp = Path.Combine(directory, $".{Path.GetFileName(path)}.tmp-{Guid.NewGuid():N}");
        try
        {
            RequireRoot(key);
            Directory.CreateDirectory(directory);
            var stream = new FileStream(temp, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1, FileOptions.Asynchronous);
            await using (stream.ConfigureAwait(false))
            {
                await stream.WriteAsync(data, cancellationToken).ConfigureAwait(false);
                stream.Flush(flushToDisk: true);
            }

            File.Move(temp, path, overwrite: true);
            PhysicalFileSystem.Instance.SyncDirectory(directory);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException or OperationCanceledException)
        {
            TryDelete(temp);
            if (ex is OperationCanceledException)
            {
                throw;
            }

            throw Map(ex, "put", key);
        }
    }

    /// <inheritdoc />
    public async Task<byte[]?> GetAsync(string key, CancellationToken cancellationToken)
    {
        string path = PathOf(key);
        try
        {
            return await File.ReadAllBytesAsync(path, cancellationToken).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is FileNotFoundException or DirectoryNotFoundException)
        {
            RequireRoot(key);
            return null;
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            throw Map(ex, "get", key);
        }
    }

    /// <inheritdoc />
    public Task<bool> ExistsAsync(string key, CancellationToken cancellationToken)
    {
        cancellationToken.ThrowIfCancellationRequested();
        string path = PathOf(key);
        if (File.Exists(path))
        {
            return Task.FromResult(true);
        }

        RequireRoot(key);
        return Task.FromResult(false);
    }

    /// <inheritdoc />
    public Task DeleteAsync(string key, CancellationToken cancellationToken)
    {
        cancellationToken.ThrowIfCancellationRequested();
        string path = PathOf(key);
        try
        {
            RequireRoot(key);
            File.Delete(path);
        }
        catch (DirectoryNotFoundException)
        {
            // The key's directory is gone, so the key is too: deleting a missing key succeeds.
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            throw Map(ex, "delete", key);
        }

        return Task.CompletedTask;
    }

    /// <inheritdoc />
    public async IAsyncEnumerable<ObjectInfo> ListAsync(string prefix, [EnumeratorCancellation] CancellationToken cancellationToken)
    {
        RequireRoot(prefix);
        // Walk only the directory that can hold the prefix (chunks/ab/ for "chunks/ab/c"), not the whole store.
        int slash = prefix.LastIndexOf('/');
        string start = slash < 0 ? _root : Path.Combine(_root, prefix[..slash].Replace('/', Path.DirectorySeparatorChar));
        if (!Directory.Exists(start))
        {
            yield break;
        }

        var found = new List<ObjectInfo>();
        try
        {
            var options = new EnumerationOptions { RecurseSubdirectories = true, AttributesToSkip = 0, IgnoreInaccessible = false };
            foreach (var file in new DirectoryInfo(start).EnumerateFiles("*", options))
            {
                cancellationToken.ThrowIfCancellationRequested();
                string key = Path.GetRelativePath(_root, file.FullName).Replace(Path.DirectorySeparatorChar, '/');
                if (key.StartsWith(prefix, StringComparison.Ordinal) && ValidateKey(key) is null)
                {
                    found.Add(new ObjectInfo(key, file.Length, new DateTimeOffset(file.LastWriteTimeUtc, TimeSpan.Zero)));
                }
            }
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            throw Map(ex, "list", prefix);
        }

        found.Sort((a, b) => string.CompareOrdinal(a.Key, b.Key));
        foreach (var o in found)
        {
            await Task.CompletedTask.ConfigureAwait(false);
            yield return o;
        }
    }

    private string PathOf(string key)
    {
        if (ValidateKey(key) is { } bad)
        {
            throw new ArgumentException(bad, nameof(key));
        }

        return Path.Combine(_root, key.Replace('/', Path.DirectorySeparatorChar));
    }

    private void RequireRoot(string key)
    {
        if (!Directory.Exists(_root))
        {
            throw new ObjectStoreException(ObjectStoreError.NoSuchBucket, $"the repository directory '{_root}' does not exist (object '{key}')");
        }
    }

    private ObjectStoreException Map(Exception ex, string operation, string key)
    {
        var error = ex switch
        {
            UnauthorizedAccessException => ObjectStoreError.AccessDenied,
            DirectoryNotFoundException when !Directory.Exists(_root) => ObjectStoreError.NoSuchBucket,
            _ => ObjectStoreError.Other,
        };
        return new ObjectStoreException(error, $"{operation} of '{key}' in '{_root}' failed: {ex.Message}", ex);
    }

    private static void TryDelete(string path)
    {
        try
        {
            File.Delete(path);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            // Best effort: a leftover temporary file is invisible to listings and harmless.
        }
    }
}
