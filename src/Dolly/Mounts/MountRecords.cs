using System.Security.Cryptography;
using System.Text;
using System.Text.Json;

namespace Dolly.Mounts;

/// <summary>
/// What <c>dolly mount</c> did for one target directory (or block device file), kept as JSON so
/// <c>dolly unmount</c> can undo it in another process: the CSI volume id, where it was staged, and the
/// capability it was published with.
/// </summary>
internal sealed record MountRecord(
    string Target,
    string Namespace,
    string Claim,
    string PersistentVolume,
    string VolumeId,
    string StagingPath,
    string VolumeMode,
    string? FsType,
    string AccessMode,
    bool ReadOnly,
    DateTimeOffset Mounted);

/// <summary>
/// The state <c>dolly mount</c> keeps beside the pool, in <c>&lt;pool&gt;-mounts/</c>: one record per target
/// under <c>targets/</c> (named by a hash of the target path, written to a temporary file and renamed so a
/// crash never leaves half a record), and the staging directories under <c>staging/</c>, one per volume.
/// </summary>
internal sealed class MountRecords
{
    public MountRecords(string directory)
    {
        Directory = directory;
    }

    /// <summary>The <c>&lt;pool&gt;-mounts</c> directory.</summary>
    public string Directory { get; }

    private string TargetsDirectory => Path.Combine(Directory, "targets");

    /// <summary>The staging path of a volume: one per volume, shared by every target it is published to.</summary>
    public string StagingPath(string volumeId)
    {
        // A volume id is opaque to CSI callers: use it as a directory name only when it is a plain one.
        bool plain = volumeId.Length is > 0 and <= 200
            && volumeId is not "." and not ".."
            && volumeId.All(c => char.IsAsciiLetterOrDigit(c) || c is '-' or '_' or '.');
        return Path.Combine(Directory, "staging", plain ? volumeId : "id-" + Hash(volumeId));
    }

    /// <summary>The record of a target, or null when dolly did not mount anything there.</summary>
    public MountRecord? Find(string target)
    {
        string path = RecordPath(target);
        if (!File.Exists(path))
        {
            return null;
        }

        return Read(path);
    }

    /// <summary>Every record, ordered by target.</summary>
    public IReadOnlyList<MountRecord> List()
    {
        if (!System.IO.Directory.Exists(TargetsDirectory))
        {
            return [];
        }

        return System.IO.Directory.EnumerateFiles(TargetsDirectory, "*.json")
            .Select(Read)
            .OrderBy(r => r.Target, StringComparer.Ordinal)
            .ToList();
    }

    /// <summary>Writes a record atomically: a temporary file, flushed to disk, renamed over the old one.</summary>
    public void Save(MountRecord record)
    {
        System.IO.Directory.CreateDirectory(TargetsDirectory);
        string path = RecordPath(record.Target);
        string temporary = path + ".tmp";
        byte[] bytes = JsonSerializer.SerializeToUtf8Bytes(record, DollyJson.Default.MountRecord);
        using (var file = new FileStream(temporary, FileMode.Create, FileAccess.Write, FileShare.None))
        {
            file.Write(bytes);
            file.Flush(flushToDisk: true);
        }

        File.Move(temporary, path, overwrite: true);
    }

    /// <summary>Removes the record of a target (nothing when there is none).</summary>
    public void Remove(string target) => File.Delete(RecordPath(target));

    private string RecordPath(string target) => Path.Combine(TargetsDirectory, Hash(target) + ".json");

    private static MountRecord Read(string path)
    {
        try
        {
            return JsonSerializer.Deserialize(File.ReadAllBytes(path), DollyJson.Default.MountRecord)
                ?? throw new CliFailureException(ExitCodes.Corrupt, $"mount record {path} is empty");
        }
        catch (JsonException ex)
        {
            throw new CliFailureException(ExitCodes.Corrupt, $"mount record {path} is not valid JSON ({ex.Message}); remove it once the target is unmounted");
        }
    }

    private static string Hash(string text) =>
        Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(text)).AsSpan(0, 16));
}

/// <summary>The kernel's mount table as this process sees it (<c>/proc/self/mountinfo</c>).</summary>
internal static class MountTable
{
    /// <summary>Whether <paramref name="path"/> (absolute, normalised) is a mount point.</summary>
    public static bool IsMountPoint(string path)
    {
        string full = Path.TrimEndingDirectorySeparator(Path.GetFullPath(path));
        return MountPoints().Contains(full, StringComparer.Ordinal);
    }

    /// <summary>Every mount point, unescaped.</summary>
    public static IEnumerable<string> MountPoints()
    {
        foreach (string line in File.ReadLines("/proc/self/mountinfo"))
        {
            string[] fields = line.Split(' ');
            if (fields.Length > 4)
            {
                yield return Unescape(fields[4]);
            }
        }
    }

    // mountinfo writes space, tab, newline and backslash in paths as a backslash and three octal digits.
    private static string Unescape(string field)
    {
        if (!field.Contains('\\', StringComparison.Ordinal))
        {
            return field;
        }

        var sb = new StringBuilder(field.Length);
        for (int i = 0; i < field.Length; i++)
        {
            if (field[i] == '\\' && i + 3 < field.Length && IsOctal(field[i + 1]) && IsOctal(field[i + 2]) && IsOctal(field[i + 3]))
            {
                sb.Append((char)(((field[i + 1] - '0') * 64) + ((field[i + 2] - '0') * 8) + (field[i + 3] - '0')));
                i += 3;
            }
            else
            {
                sb.Append(field[i]);
            }
        }

        return sb.ToString();
    }

    private static bool IsOctal(char c) => c is >= '0' and <= '7';
}
