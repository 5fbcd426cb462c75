namespace Dolly.Bench;

/// <summary>The sizes of one benchmark run: the full run of issue 2, or a quick smoke test for CI.</summary>
internal sealed record BenchSizes(
    long SmallVolume,
    long LargeVolume,
    long LargeWritten,
    int LatencyRounds,
    long StreamBytes,
    long RandomSpan,
    int RandomReads,
    int LineageSnapshots,
    long LineageVolume,
    long DeleteVolume,
    int DeleteRounds,
    double WarmUpSeconds)
{
    public static BenchSizes Full { get; } = new(
        SmallVolume: 1L << 30,
        LargeVolume: 1L << 40,
        LargeWritten: 8L << 30,
        LatencyRounds: 200,
        StreamBytes: 1L << 30,
        RandomSpan: 1L << 30,
        RandomReads: 65536,
        LineageSnapshots: 256,
        LineageVolume: 1L << 30,
        DeleteVolume: 1L << 30,
        DeleteRounds: 5,
        WarmUpSeconds: 2);

    public static BenchSizes Quick { get; } = new(
        SmallVolume: 16L << 20,
        LargeVolume: 64L << 30,
        LargeWritten: 32L << 20,
        LatencyRounds: 10,
        StreamBytes: 32L << 20,
        RandomSpan: 32L << 20,
        RandomReads: 2048,
        LineageSnapshots: 16,
        LineageVolume: 16L << 20,
        DeleteVolume: 8L << 20,
        DeleteRounds: 2,
        WarmUpSeconds: 0.3);

    public static string Size(long bytes) => Dolly.Storage.ByteSize.Format(bytes).Replace(".00", string.Empty, StringComparison.Ordinal);
}
