using System.Text.Json.Serialization;
using Dolly.Mounts;

namespace Dolly;

// The JSON that `-o json` prints. These shapes are a contract for scripts: add fields, never rename or
// remove them. Sizes are bytes, times are ISO 8601 UTC.

/// <summary>One row of <c>volume list</c> or <c>snapshot list</c>.</summary>
internal sealed record DeviceJson(
    string Name,
    string Kind,
    long Size,
    long Allocated,
    long Exclusive,
    string? Source,
    DateTimeOffset Created);

/// <summary><c>pool info -o json</c>.</summary>
internal sealed record PoolInfoJson(
    string Directory,
    Guid Id,
    int BlockSize,
    ulong Generation,
    int Volumes,
    int Snapshots,
    long LogicalBytes,
    long DataBytesUsed,
    long DataBlocksUsed,
    long DataBlocksFree,
    long DataFileBytes,
    long MetadataBytes);

/// <summary>One problem in <c>pool check -o json</c>.</summary>
internal sealed record ProblemJson(string Subject, string Message);

/// <summary><c>pool check -o json</c>.</summary>
internal sealed record CheckJson(
    string Directory,
    bool Clean,
    int Devices,
    long MetadataPagesVerified,
    long DataBlocksVerified,
    IReadOnlyList<ProblemJson> Problems);

/// <summary>A byte range in <c>snapshot diff -o json</c>.</summary>
internal sealed record RangeJson(long Offset, long Length);

/// <summary><c>snapshot diff -o json</c>.</summary>
internal sealed record DiffJson(string Base, string Target, long ChangedBytes, IReadOnlyList<RangeJson> Ranges);

/// <summary>One figure of <c>bench engine --json</c>.</summary>
internal sealed record BenchFigureJson(
    string Group,
    string Name,
    double Value,
    string Unit,
    string Display,
    string? Target,
    bool? Pass,
    string? Note,
    IReadOnlyDictionary<string, double>? Details);

/// <summary><c>bench engine --json FILE</c>.</summary>
internal sealed record BenchJson(
    string Version,
    DateTimeOffset Date,
    string Command,
    bool Quick,
    int BlockSize,
    BenchMachineJson Machine,
    double DurationSeconds,
    IReadOnlyList<BenchFigureJson> Figures);

/// <summary>The machine a benchmark ran on.</summary>
internal sealed record BenchMachineJson(int Processors, string Cpu, string FileSystem, string Directory, string Os, string Runtime, string LoadAverage);

[JsonSourceGenerationOptions(
    PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase,
    WriteIndented = true,
    UseStringEnumConverter = true)]
[JsonSerializable(typeof(IReadOnlyList<DeviceJson>))]
[JsonSerializable(typeof(PoolInfoJson))]
[JsonSerializable(typeof(CheckJson))]
[JsonSerializable(typeof(DiffJson))]
[JsonSerializable(typeof(BenchJson))]
[JsonSerializable(typeof(MountRecord))]
[JsonSerializable(typeof(IReadOnlyList<MountRecord>))]
internal sealed partial class DollyJson : JsonSerializerContext;
