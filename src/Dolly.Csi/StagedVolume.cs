using System.Text.Json;
using System.Text.Json.Serialization;

namespace Dolly.Csi;

/// <summary>The mechanism a staged volume is attached with.</summary>
[JsonConverter(typeof(JsonStringEnumConverter<Attachment>))]
internal enum Attachment
{
    /// <summary>nbdfuse exposes the export as <c>FuseDir/disk</c>, under <see cref="StagedVolume.LoopDevice"/>.</summary>
    Nbdfuse,

    /// <summary>The kernel's NBD driver, <see cref="StagedVolume.NbdDevice"/> connected by nbd-client.</summary>
    Kernel,
}

/// <summary>
/// What the node did to stage one volume; kept as JSON in the node state directory so Unstage (in this process
/// or after a restart) finds it again. Records written before the kernel path existed have neither
/// <see cref="Attach"/> nor <see cref="NbdDevice"/>: they read as nbdfuse, which is what they are.
/// </summary>
/// <param name="VolumeId">The volume (and NBD export) id.</param>
/// <param name="StagingPath">Where it is staged (mounted, for mount access).</param>
/// <param name="FuseDir">nbdfuse's mount point; empty for the kernel path.</param>
/// <param name="LoopDevice">The loop device over nbdfuse's file; empty for the kernel path and before losetup ran.</param>
/// <param name="NbdfusePid">nbdfuse's process id; 0 for the kernel path.</param>
/// <param name="Block">Block access (no file system, no staging mount).</param>
/// <param name="FsType">The file system of mount access; null for block.</param>
/// <param name="Attach">The mechanism; nbdfuse when the field is absent.</param>
/// <param name="NbdDevice">The <c>/dev/nbdN</c> of the kernel path, once nbd-client connected it; null otherwise.</param>
internal sealed record StagedVolume(
    string VolumeId,
    string StagingPath,
    string FuseDir,
    string LoopDevice,
    int NbdfusePid,
    bool Block,
    string? FsType,
    Attachment Attach = Attachment.Nbdfuse,
    string? NbdDevice = null)
{
    /// <summary>The block device the file system is on (and that a block publish binds): the nbd or the loop device; empty before there is one.</summary>
    [JsonIgnore]
    public string Device => Attach == Attachment.Kernel ? NbdDevice ?? string.Empty : LoopDevice;

    /// <summary>Reads a record; null when the file does not exist.</summary>
    public static StagedVolume? Read(string path) =>
        File.Exists(path) ? JsonSerializer.Deserialize(File.ReadAllText(path), NodeJsonContext.Default.StagedVolume) : null;

    /// <summary>Writes a record whole: to a temporary file, then renamed over the old one.</summary>
    public void Write(string path)
    {
        string temp = path + ".tmp";
        File.WriteAllText(temp, JsonSerializer.Serialize(this, NodeJsonContext.Default.StagedVolume));
        File.Move(temp, path, overwrite: true);
    }
}

[JsonSerializable(typeof(StagedVolume))]
[JsonSourceGenerationOptions(WriteIndented = true)]
internal sealed partial class NodeJsonContext : JsonSerializerContext;
