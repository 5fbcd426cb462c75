using System.Buffers.Binary;
using Dolly.Storage.Engine;
using Dolly.Storage.IO;

namespace Dolly.Storage;

/// <summary>Options for creating a pool.</summary>
public sealed record PoolCreateOptions
{
    /// <summary>Data block size: a power of two from 4 KiB to 1 MiB. 64 KiB (dm-thin's default) unless set.</summary>
    public int BlockSize { get; init; } = Layout.DefaultBlockSize;

    /// <summary>
    /// Size of the in-place overwrite journal, a multiple of 4 KiB from 128 KiB to 1 GiB; 64 MiB unless set. Unflushed
    /// in-place overwrites are held in memory up to an eighth of it before a flush starts on its own.
    /// </summary>
    public long JournalSize { get; init; } = Layout.DefaultJournalBytes;
}

/// <summary>
/// A storage pool: a directory holding thin volumes and their copy-on-write snapshots and clones.
/// Thread-safe: reads run in parallel, changes one at a time. One process opens a pool at a time.
/// </summary>
public sealed partial class Pool : IDisposable
{
    private readonly string _directory;
    private readonly IFileSystem _fs;
    private readonly IDisposable _dirLock;
    private readonly IStorageFile _meta;
    private readonly IStorageFile _data;
    private IStorageFile? _journalFile;
    private readonly ReaderWriterLockSlim _rw = new(LockRecursionPolicy.NoRecursion);
    private readonly DeviceTable _devices = new();
    private readonly TimeProvider _time;
    private int _blockSize;
    private Guid _poolId;
    private bool _disposed;

    private Pool(string directory, IFileSystem fs, IDisposable dirLock, IStorageFile meta, IStorageFile data, TimeProvider time)
    {
        _directory = directory;
        _fs = fs;
        _dirLock = dirLock;
        _meta = meta;
        _data = data;
        _time = time;
        _pages = new PageStore(_clock);
        _blocks = new BlockAllocator(_clock);
    }

    /// <summary>The pool directory.</summary>
    public string Directory => _directory;

    /// <summary>The pool's unique id.</summary>
    public Guid Id => _poolId;

    /// <summary>The data block size in bytes: the unit of copy-on-write sharing.</summary>
    public int BlockSize => _blockSize;

    /// <summary>Creates a new, empty pool in <paramref name="directory"/> (created if missing; must be empty).</summary>
    public static Result<Pool> Create(string directory, PoolCreateOptions? options = null, IFileSystem? fileSystem = null, TimeProvider? time = null)
    {
        var fs = fileSystem ?? PhysicalFileSystem.Instance;
        options ??= new PoolCreateOptions();
        int bs = options.BlockSize;
        if (bs < Layout.SectorSize || bs > 1 << 20 || (bs & (bs - 1)) != 0)
        {
            return Result<Pool>.Fail(StorageErrorCode.InvalidArgument, $"block size {bs} is not a power of two between 4096 and 1048576");
        }

        long js = options.JournalSize;
        if (js < Layout.MinJournalBytes || js > Layout.MaxJournalBytes || js % Layout.PageSize != 0)
        {
            return Result<Pool>.Fail(StorageErrorCode.InvalidArgument, $"journal size {js} is not a multiple of 4096 between {Layout.MinJournalBytes} and {Layout.MaxJournalBytes}");
        }

        IDisposable? dirLock = null;
        IStorageFile? meta = null;
        IStorageFile? data = null;
        IStorageFile? journal = null;
        try
        {
            if (!fs.DirectoryExists(directory))
            {
                fs.CreateDirectory(directory);
            }

            dirLock = fs.TryLock(directory);
            if (dirLock is null)
            {
                return Result<Pool>.Fail(StorageErrorCode.InUse, $"pool '{directory}' is in use by another process");
            }

            var metaPath = Path.Combine(directory, Layout.MetaFile);
            var dataPath = Path.Combine(directory, Layout.DataFile);
            var other = fs.ListDirectory(directory).Where(n => n is not (Layout.LockFile or Layout.MetaFile or Layout.DataFile or Layout.JournalFile)).ToList();
            if (other.Count > 0)
            {
                return Fail(StorageErrorCode.NotAPool, $"directory '{directory}' is not empty (it holds '{other[0]}'); a pool needs an empty directory");
            }

            if (fs.FileExists(metaPath) && !IsInterruptedCreate(fs, metaPath, dataPath))
            {
                return Fail(StorageErrorCode.AlreadyExists, $"a Dolly pool already exists in '{directory}'");
            }

            // Data file first, superblocks last: until a superblock is durable the directory is an
            // interrupted creation, which the next Create recognises and redoes.
            data = fs.Open(dataPath, create: true);
            data.Sync();
            journal = fs.Open(Path.Combine(directory, Layout.JournalFile), create: true);
            journal.Sync();
            fs.SyncDirectory(directory);
            meta = fs.Open(metaPath, create: true);
            var sb = new Superblock(bs, Guid.NewGuid(), 0, 0, 1, 1, 2, 0, 0, 0, (uint)(js / Layout.PageSize));
            var page = new byte[Layout.PageSize];
            sb.WriteTo(page);
            meta.Write(0, page);
            (sb with { Generation = 1 }).WriteTo(page);
            meta.Write(Layout.PageSize, page);
            meta.Sync();
            fs.SyncDirectory(directory);
            var pool = new Pool(directory, fs, dirLock, meta, data, time ?? TimeProvider.System);
            pool._journalFile = journal;
            pool.Initialize(sb with { Generation = 1 }, slot: 1);
            pool.SetUpJournal(sb with { Generation = 1 });
            pool._journalClean = true;
            return pool;
        }
        catch (IOException ex)
        {
            return Fail(IsNoSpace(ex) ? StorageErrorCode.NoSpace : StorageErrorCode.IoError, $"cannot create pool in '{directory}': {ex.Message}");
        }
        catch (UnauthorizedAccessException ex)
        {
            return Fail(StorageErrorCode.IoError, $"cannot create pool in '{directory}': {ex.Message}");
        }

        Result<Pool> Fail(StorageErrorCode code, string message)
        {
            journal?.Dispose();
            data?.Dispose();
            meta?.Dispose();
            dirLock?.Dispose();
            return Result<Pool>.Fail(code, message);
        }
    }

    /// <summary>
    /// True when a directory holds what a <see cref="Create"/> that crashed leaves: a metadata file of at most
    /// the two superblock pages with no valid superblock, and no data. Such a pool never held anything.
    /// </summary>
    private static bool IsInterruptedCreate(IFileSystem fs, string metaPath, string dataPath)
    {
        using (var data = fs.FileExists(dataPath) ? fs.Open(dataPath, create: false) : null)
        {
            if (data is not null && data.Length > 0)
            {
                return false;
            }
        }

        using var meta = fs.Open(metaPath, create: false);
        if (meta.Length > 2 * Layout.PageSize)
        {
            return false;
        }

        var page = new byte[Layout.PageSize];
        for (int slot = 0; slot < 2; slot++)
        {
            meta.Read((long)slot * Layout.PageSize, page);
            if (Superblock.Parse(page, out _, out _) is not null)
            {
                return false;
            }
        }

        return true;
    }

    /// <summary>Opens an existing pool, verifying its metadata.</summary>
    public static Result<Pool> Open(string directory, IFileSystem? fileSystem = null, TimeProvider? time = null)
    {
        var r = OpenCore(directory, fileSystem ?? PhysicalFileSystem.Instance, time ?? TimeProvider.System, lenient: false, out _);
        return r;
    }

    private static Result<Pool> OpenCore(string directory, IFileSystem fs, TimeProvider time, bool lenient, out List<CheckProblem> problems)
    {
        problems = [];
        IDisposable? dirLock = null;
        IStorageFile? meta = null;
        IStorageFile? data = null;
        IStorageFile? journal = null;
        try
        {
            if (!fs.DirectoryExists(directory))
            {
                return Result<Pool>.Fail(StorageErrorCode.NotFound, $"pool directory '{directory}' does not exist (create a pool with 'dolly pool init')");
            }

            if (!fs.FileExists(Path.Combine(directory, Layout.MetaFile)))
            {
                return Result<Pool>.Fail(StorageErrorCode.NotAPool, $"'{directory}' is not a Dolly pool: it has no {Layout.MetaFile}");
            }

            dirLock = fs.TryLock(directory);
            if (dirLock is null)
            {
                return Result<Pool>.Fail(StorageErrorCode.InUse, $"pool '{directory}' is in use by another process");
            }

            meta = fs.Open(Path.Combine(directory, Layout.MetaFile), create: false);
            if (!fs.FileExists(Path.Combine(directory, Layout.DataFile)))
            {
                return Fail(StorageErrorCode.NotAPool, $"pool '{directory}' is damaged: {Layout.DataFile} is missing");
            }

            data = fs.Open(Path.Combine(directory, Layout.DataFile), create: false);
            var sb = ReadSuperblock(meta, directory, problems, out bool foreign, out int slot);
            if (sb is null)
            {
                return foreign
                    ? Fail(StorageErrorCode.NotAPool, $"'{directory}' is not a Dolly pool: {Layout.MetaFile} has no Dolly superblock")
                    : problems.Any(p => p.Message.Contains("unsupported pool format version", StringComparison.Ordinal))
                        ? Fail(StorageErrorCode.NotAPool, $"pool '{directory}' cannot be opened: {string.Join("; ", problems.Select(p => p.Message))}")
                        : Fail(StorageErrorCode.Corrupt, $"pool '{directory}' cannot be opened: {string.Join("; ", problems.Select(p => p.Message))}");
            }

            string journalPath = Path.Combine(directory, Layout.JournalFile);
            if (sb.Version >= 2 && !fs.FileExists(journalPath))
            {
                return Fail(StorageErrorCode.Corrupt, $"pool '{directory}' is damaged: {Layout.JournalFile} is missing");
            }

            // A version-1 pool has no journal: it gets one now, and the commit below makes it version 2.
            journal = fs.Open(journalPath, create: true);
            var pool = new Pool(directory, fs, dirLock, meta, data, time);
            pool._journalFile = journal;
            var ctx = new LoadContext();
            pool.Initialize(sb, slot);
            pool.LoadTrees(sb, ctx);
            problems.AddRange(ctx.Problems);
            if (ctx.Problems.Count > 0 && !lenient)
            {
                pool.Abandon();
                return Result<Pool>.Fail(
                    StorageErrorCode.Corrupt,
                    $"pool '{directory}' has damaged metadata ({ctx.Problems.Count} problem(s), first: {ctx.Problems[0]}); run 'dolly pool check' for the full list");
            }

            pool.AdoptCounts(ctx);
            pool.SetUpJournal(sb);
            pool.ReplayJournal(sb, ctx, applyInPlace: !lenient);
            problems.AddRange(ctx.Problems);
            if (ctx.Problems.Count > 0 && !lenient)
            {
                pool.Abandon();
                return Result<Pool>.Fail(
                    StorageErrorCode.Corrupt,
                    $"pool '{directory}' has a damaged journal ({ctx.Problems.Count} problem(s), first: {ctx.Problems[0]}); run 'dolly pool check' for the full list");
            }

            if (!lenient)
            {
                // Blocks past the high-water mark may hold writes a crash left uncommitted; zero them so that
                // every block the allocator hands out from there reads as zeros.
                long end = (long)pool._blocks.HighWater * pool._blockSize;
                if (data.Length > end)
                {
                    data.PunchHole(end, data.Length - end);
                }

                // Seal what the journal replayed, retire its records and start a generation of its own (this is
                // also what migrates a version-1 pool). If it fails, the records stay and the next commit retries.
                pool._dirty = true;
                pool._commitGate.Wait();
                pool._rw.EnterWriteLock();
                try
                {
                    _ = pool.CommitCore();
                }
                finally
                {
                    pool._rw.ExitWriteLock();
                    pool._commitGate.Release();
                }
            }

            return pool;
        }
        catch (IOException ex)
        {
            return Fail(StorageErrorCode.IoError, $"cannot open pool '{directory}': {ex.Message}");
        }
        catch (UnauthorizedAccessException ex)
        {
            return Fail(StorageErrorCode.IoError, $"cannot open pool '{directory}': {ex.Message}");
        }

        Result<Pool> Fail(StorageErrorCode code, string message)
        {
            journal?.Dispose();
            data?.Dispose();
            meta?.Dispose();
            dirLock?.Dispose();
            return Result<Pool>.Fail(code, message);
        }
    }

    private void Initialize(Superblock sb, int slot)
    {
        _durableSlot = slot;
        _lastGeneration = Math.Max(_lastGeneration, sb.Generation + 1);
        _blockSize = sb.BlockSize;
        _poolId = sb.PoolId;
        _generation = sb.Generation;
        _deviceRoot = sb.DeviceRoot;
        _deviceDepth = Math.Max(1, sb.DeviceDepth);
        _pages.Reset(sb.MetaHighWater);
        _sectorsPerBlock = _blockSize / Layout.SectorSize;
        _tree = new MapTree(_pages, _blocks, _blockSize, BlockDropped);
        _zeroSums = new byte[_sectorsPerBlock * 4];
        for (int s = 0; s < _sectorsPerBlock; s++)
        {
            BinaryPrimitives.WriteUInt32LittleEndian(_zeroSums.AsSpan(s * 4), ZeroSectorSum);
        }

        _overlay = new Overlay(_sectorsPerBlock);
    }

    /// <summary>Commits outstanding changes and closes the pool.</summary>
    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }

        _commitGate.Wait();
        _rw.EnterWriteLock();
        try
        {
            if (_disposed)
            {
                return;
            }

            _disposed = true;
            try
            {
                _ = CommitCore();
            }
            catch (Exception ex) when (ex is IOException or StorageException)
            {
                // Closing after an I/O failure: unflushed changes are lost, as they would be in a crash.
            }

            DrainPunches(lockHeld: true);
            CloseFiles();
        }
        finally
        {
            _rw.ExitWriteLock();
            _commitGate.Release();
        }
    }

    private void CloseFiles()
    {
        _journalFile?.Dispose();
        _data.Dispose();
        _meta.Dispose();
        _dirLock.Dispose();
    }

    /// <summary>
    /// Closes the pool without committing, as a crash would (tests of crash recovery use this).
    /// </summary>
    internal void Abandon()
    {
        _commitGate.Wait();
        _rw.EnterWriteLock();
        try
        {
            _disposed = true;
            CloseFiles();
        }
        finally
        {
            _rw.ExitWriteLock();
            _commitGate.Release();
        }
    }
}
