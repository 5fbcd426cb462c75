using Dolly.Storage.IO;

namespace Dolly.Storage.Tests;

/// <summary>What happens at "reboot" to one write that was not made durable by a sync.</summary>
internal enum Fate
{
    Apply,
    Drop,
    Tear,
}

/// <summary>A write (or hole punch) issued since the file's last sync.</summary>
internal sealed record PendingWrite(string Path, long Offset, byte[]? Data, long Length)
{
    public bool IsPunch => Data is null;
}

/// <summary>
/// An in-memory <see cref="IFileSystem"/> that simulates power loss, after SQLite's test6.c: each file keeps its
/// durable image plus the writes since its last <see cref="IStorageFile.Sync"/>. Once <see cref="CrashAfter"/> I/O
/// calls have been made, every further call throws (the machine is off). <see cref="Reboot"/> then builds the disk
/// as it could look after the power came back: each unsynced write is independently applied, dropped, or torn
/// (a random subset of its 512-byte pieces lands, some possibly as garbage); files whose directory entry was never
/// synced may vanish. With <see cref="Capacity"/> set, writes that need more space than that fail like ENOSPC.
/// </summary>
internal sealed class CrashFileSystem : IFileSystem
{
    private const int Piece = 512;
    private const int AllocUnit = 4096;
    private readonly Dictionary<string, MemFile> _files = new(StringComparer.Ordinal);
    private readonly HashSet<string> _dirs = new(StringComparer.Ordinal);
    private readonly HashSet<string> _locks = new(StringComparer.Ordinal);

    /// <summary>The number of I/O calls that succeed; the next one and all after it fail.</summary>
    public long CrashAfter { get; set; } = long.MaxValue;

    public long IoCalls { get; private set; }

    public bool Crashed { get; private set; }

    /// <summary>When set, the total allocated bytes of all files may not exceed this.</summary>
    public long? Capacity { get; set; }

    /// <summary>When set, every write to a file whose name ends with this fails like ENOSPC.</summary>
    public string? NoSpaceFor { get; set; }

    /// <summary>Decides a pending write's fate at reboot instead of the random choice, when it returns a value.</summary>
    public Func<PendingWrite, Fate?>? FateOverride { get; set; }

    /// <summary>Every write and sync, in order (for tests that aim at a particular call).</summary>
    public List<(long Call, string What, string Path, long Offset, long Length)> Log { get; } = [];

    public bool LogCalls { get; set; }

    public long AllocatedBytes => _files.Values.Sum(f => f.AllocatedPages) * AllocUnit;

    /// <summary>Cuts the power now: every later call fails.</summary>
    public void PowerOff() => Crashed = true;

    private void Tick()
    {
        if (Crashed)
        {
            throw new IOException("simulated power loss: the machine is off");
        }

        if (++IoCalls > CrashAfter)
        {
            Crashed = true;
            throw new IOException("simulated power loss");
        }
    }

    private void Record(string what, string path, long offset, long length)
    {
        if (LogCalls)
        {
            Log.Add((IoCalls, what, path, offset, length));
        }
    }

    public bool DirectoryExists(string path) => _dirs.Contains(Norm(path));

    public void CreateDirectory(string path)
    {
        Tick();
        var p = Norm(path);
        while (!string.IsNullOrEmpty(p) && _dirs.Add(p))
        {
            p = System.IO.Path.GetDirectoryName(p) ?? "";
        }
    }

    public IReadOnlyList<string> ListDirectory(string path)
    {
        var dir = Norm(path);
        return _files.Keys.Where(k => System.IO.Path.GetDirectoryName(k) == dir).Select(k => System.IO.Path.GetFileName(k))
            .Concat(_dirs.Where(d => System.IO.Path.GetDirectoryName(d) == dir).Select(d => System.IO.Path.GetFileName(d)))
            .ToList();
    }

    public bool FileExists(string path) => _files.ContainsKey(Norm(path));

    public IStorageFile Open(string path, bool create)
    {
        Tick();
        var p = Norm(path);
        if (!_files.TryGetValue(p, out var f))
        {
            if (!create)
            {
                throw new FileNotFoundException("no such file", p);
            }

            if (!_dirs.Contains(System.IO.Path.GetDirectoryName(p)!))
            {
                throw new DirectoryNotFoundException(p);
            }

            f = new MemFile(this, p) { EntryDurable = false };
            _files[p] = f;
        }

        return new Handle(f);
    }

    public IDisposable? TryLock(string directory)
    {
        var d = Norm(directory);
        return _locks.Add(d) ? new Lock(this, d) : null;
    }

    public void SyncDirectory(string path)
    {
        Tick();
        var dir = Norm(path);
        foreach (var f in _files.Values.Where(f => System.IO.Path.GetDirectoryName(f.Path) == dir))
        {
            f.EntryDurable = true;
        }
    }

    /// <summary>The disk after the power comes back: unsynced writes applied, dropped or torn at random.</summary>
    public CrashFileSystem Reboot(Random rng)
    {
        var fs = new CrashFileSystem { Capacity = Capacity };
        fs._dirs.UnionWith(_dirs);
        foreach (var f in _files.Values)
        {
            if (!f.EntryDurable && rng.Next(2) == 0)
            {
                continue; // the directory entry never reached the disk
            }

            fs._files[f.Path] = f.Rebooted(fs, rng, FateOverride);
        }

        return fs;
    }

    /// <summary>A deep copy, including unsynced writes and the I/O counter (not the crash point).</summary>
    public CrashFileSystem Fork()
    {
        var fs = new CrashFileSystem { Capacity = Capacity, IoCalls = IoCalls };
        fs._dirs.UnionWith(_dirs);
        foreach (var f in _files.Values)
        {
            fs._files[f.Path] = f.Fork(fs);
        }

        return fs;
    }

    /// <summary>The durable bytes of a file (what a reboot would certainly keep).</summary>
    public byte[] DurableImage(string path) => _files[Norm(path)].DurableImage();

    /// <summary>Changes durable bytes in place, as media corruption would.</summary>
    public void CorruptDurable(string path, long offset, ReadOnlySpan<byte> bytes) => _files[Norm(path)].CorruptDurable(offset, bytes);

    private static string Norm(string path) => path.TrimEnd('/');

    private sealed class Lock(CrashFileSystem fs, string dir) : IDisposable
    {
        private bool _released;

        public void Dispose()
        {
            if (!_released)
            {
                _released = true;
                fs._locks.Remove(dir);
            }
        }
    }

    private sealed class Handle(MemFile file) : IStorageFile
    {
        public long Length => file.Length;

        public long AllocatedBytes => file.AllocatedPages * AllocUnit;

        public void Read(long offset, Span<byte> buffer) => file.Read(offset, buffer);

        public void Write(long offset, ReadOnlySpan<byte> data) => file.Write(offset, data);

        public void Sync() => file.Sync();

        public void PunchHole(long offset, long length) => file.Punch(offset, length);

        public void Dispose()
        {
        }
    }

    private sealed class MemFile(CrashFileSystem fs, string path)
    {
        private byte[] _cur = [];
        private long _curLen;
        private byte[] _dur = [];
        private long _durLen;
        private bool[] _alloc = [];
        private readonly List<PendingWrite> _pending = [];

        public string Path { get; } = path;

        public bool EntryDurable { get; set; } = true;

        public long Length => _curLen;

        public long AllocatedPages { get; private set; }

        public void Read(long offset, Span<byte> buffer)
        {
            fs.Tick();
            buffer.Clear();
            if (offset < _curLen)
            {
                int n = (int)Math.Min(buffer.Length, _curLen - offset);
                _cur.AsSpan((int)offset, n).CopyTo(buffer);
            }
        }

        public void Write(long offset, ReadOnlySpan<byte> data)
        {
            fs.Tick();
            long first = offset / AllocUnit, last = (offset + data.Length + AllocUnit - 1) / AllocUnit;
            EnsureAlloc(last);
            long needed = 0;
            for (long p = first; p < last; p++)
            {
                needed += _alloc[p] ? 0 : 1;
            }

            if (fs.NoSpaceFor is { } full && Path.EndsWith(full, StringComparison.Ordinal))
            {
                throw new IOException("No space left on device");
            }

            if (fs.Capacity is { } cap && needed > 0 && fs.AllocatedBytes + (needed * AllocUnit) > cap)
            {
                // Like the kernel: what fits is written (a short write), then the call fails with ENOSPC.
                long room = (cap - fs.AllocatedBytes) / AllocUnit;
                long fits = 0;
                for (long p = first; p < last; p++)
                {
                    if (!_alloc[p])
                    {
                        if (room == 0)
                        {
                            break;
                        }

                        room--;
                    }

                    fits = Math.Min(data.Length, ((p + 1) * AllocUnit) - offset);
                }

                if (fits > 0)
                {
                    Write(offset, data[..(int)fits]);
                }

                throw new IOException("No space left on device");
            }

            for (long p = first; p < last; p++)
            {
                _alloc[p] = true;
            }

            AllocatedPages += needed;
            fs.Record("write", Path, offset, data.Length);
            Put(ref _cur, ref _curLen, offset, data);
            _pending.Add(new PendingWrite(Path, offset, data.ToArray(), data.Length));
        }

        public void Punch(long offset, long length)
        {
            fs.Tick();
            fs.Record("punch", Path, offset, length);
            long end = Math.Min(offset + length, _curLen);
            if (end > offset)
            {
                _cur.AsSpan((int)offset, (int)(end - offset)).Clear();
            }

            for (long p = (offset + AllocUnit - 1) / AllocUnit; (p + 1) * AllocUnit <= offset + length && p < _alloc.Length; p++)
            {
                if (_alloc[p])
                {
                    _alloc[p] = false;
                    AllocatedPages--;
                }
            }

            _pending.Add(new PendingWrite(Path, offset, null, length));
        }

        public void Sync()
        {
            fs.Tick();
            fs.Record("sync", Path, 0, 0);
            foreach (var w in _pending)
            {
                ApplyDurable(w, w.Data);
            }

            _pending.Clear();
            _durLen = _curLen;
        }

        private void ApplyDurable(PendingWrite w, byte[]? data)
        {
            if (data is null)
            {
                long end = Math.Min(w.Offset + w.Length, _durLen);
                if (end > w.Offset)
                {
                    _dur.AsSpan((int)w.Offset, (int)(end - w.Offset)).Clear();
                }
            }
            else
            {
                Put(ref _dur, ref _durLen, w.Offset, data);
            }
        }

        private void EnsureAlloc(long pages)
        {
            if (pages > _alloc.Length)
            {
                Array.Resize(ref _alloc, (int)Math.Max(pages, _alloc.Length * 2L));
            }
        }

        private static void Put(ref byte[] image, ref long length, long offset, ReadOnlySpan<byte> data)
        {
            long end = offset + data.Length;
            if (end > image.Length)
            {
                Array.Resize(ref image, (int)Math.Max(end, image.Length * 2L));
            }

            data.CopyTo(image.AsSpan((int)offset));
            length = Math.Max(length, end);
        }

        public MemFile Rebooted(CrashFileSystem owner, Random rng, Func<PendingWrite, Fate?>? fateOverride)
        {
            var f = new MemFile(owner, Path) { _dur = (byte[])_dur.Clone(), _durLen = _durLen };
            foreach (var w in _pending)
            {
                var fate = fateOverride?.Invoke(w) ?? (Fate)rng.Next(3);
                switch (fate)
                {
                    case Fate.Apply:
                        f.ApplyDurable(w, w.Data);
                        break;
                    case Fate.Drop:
                        break;
                    default:
                        if (w.Data is null)
                        {
                            if (rng.Next(2) == 0)
                            {
                                f.ApplyDurable(w, null);
                            }

                            break;
                        }

                        // Torn: each 512-byte piece lands or not; with garbage, some land as noise.
                        bool garbage = rng.Next(3) == 0;
                        for (int at = 0; at < w.Data.Length; at += Piece)
                        {
                            int n = Math.Min(Piece, w.Data.Length - at);
                            int roll = rng.Next(4);
                            if (roll < 2)
                            {
                                continue;
                            }

                            var piece = w.Data.AsSpan(at, n).ToArray();
                            if (garbage && roll == 3)
                            {
                                rng.NextBytes(piece);
                            }

                            Put(ref f._dur, ref f._durLen, w.Offset + at, piece);
                        }

                        break;
                }
            }

            f._cur = (byte[])f._dur.Clone();
            f._curLen = f._durLen;
            f.RecountAllocation();
            return f;
        }

        public MemFile Fork(CrashFileSystem owner)
        {
            var f = new MemFile(owner, Path)
            {
                EntryDurable = EntryDurable,
                _cur = (byte[])_cur.Clone(),
                _curLen = _curLen,
                _dur = (byte[])_dur.Clone(),
                _durLen = _durLen,
                _alloc = (bool[])_alloc.Clone(),
                AllocatedPages = AllocatedPages,
            };
            f._pending.AddRange(_pending);
            return f;
        }

        private void RecountAllocation()
        {
            long pages = (_curLen + AllocUnit - 1) / AllocUnit;
            _alloc = new bool[pages];
            AllocatedPages = 0;
            for (long p = 0; p < pages; p++)
            {
                int n = (int)Math.Min(AllocUnit, _curLen - (p * AllocUnit));
                if (_cur.AsSpan((int)(p * AllocUnit), n).ContainsAnyExcept((byte)0))
                {
                    _alloc[p] = true;
                    AllocatedPages++;
                }
            }
        }

        public byte[] DurableImage() => _dur.AsSpan(0, (int)_durLen).ToArray();

        public void CorruptDurable(long offset, ReadOnlySpan<byte> bytes)
        {
            Put(ref _dur, ref _durLen, offset, bytes);
            Put(ref _cur, ref _curLen, offset, bytes);
        }
    }
}
