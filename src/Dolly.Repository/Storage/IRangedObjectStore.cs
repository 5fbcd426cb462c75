namespace Dolly.Repository.Storage;

/// <summary>
/// An object store that can read part of an object, so a lazy restore can fetch the one block a reader waits for
/// out of a larger object without downloading all of it.
/// </summary>
public interface IRangedObjectStore : IObjectStore
{
    /// <summary>
    /// The bytes of <paramref name="key"/> from <paramref name="offset"/>, at most <paramref name="length"/> of them
    /// (fewer when the object ends first; none when <paramref name="offset"/> is at or past its end), or null when
    /// no object has that key.
    /// </summary>
    Task<byte[]?> GetRangeAsync(string key, long offset, int length, CancellationToken cancellationToken);
}
