using System.Diagnostics.Metrics;
using Dolly.Storage;

namespace Dolly.Metrics;

/// <summary>
/// The pool's space as observable gauges, read from <see cref="Pool.GetInfo"/> at each scrape. Like
/// <see cref="Controllers.Metrics.ControllerMetrics"/>, the meter carries this instance as its scope so an
/// exporter takes only its own pool's gauges.
/// </summary>
internal sealed class PoolMetrics : IDisposable
{
    public const string MeterName = "Dolly.Pool";
    public const string LogicalBytes = "dolly_pool_logical_bytes";
    public const string AllocatedBytes = "dolly_pool_allocated_bytes";
    public const string PhysicalBytes = "dolly_pool_physical_bytes";
    public const string MetadataBytes = "dolly_pool_metadata_bytes";
    public const string FreeBytes = "dolly_pool_free_bytes";

    private readonly Meter _meter;

    public PoolMetrics(Pool pool)
    {
        ArgumentNullException.ThrowIfNull(pool);
        _meter = new Meter(new MeterOptions(MeterName) { Scope = this });

        // No unit on purpose: OpenTelemetry's Prometheus exporter would append one, and the names already end in _bytes.
        _meter.CreateObservableGauge(LogicalBytes, () => pool.GetInfo().LogicalBytes, unit: null, description: "Sum of the logical sizes of the pool's volumes and snapshots");
        _meter.CreateObservableGauge(AllocatedBytes, () => Allocated(pool.GetInfo()), unit: null, description: "Bytes of data blocks in use, each shared block counted once");
        _meter.CreateObservableGauge(PhysicalBytes, () => pool.GetInfo().DataFileBytes, unit: null, description: "Bytes the pool's data file takes on disk");
        _meter.CreateObservableGauge(MetadataBytes, () => pool.GetInfo().MetadataBytes, unit: null, description: "Bytes of metadata pages in use");
        _meter.CreateObservableGauge(FreeBytes, () => Free(pool.GetInfo()), unit: null, description: "Bytes of free data blocks inside the data file, reused before it grows");
    }

    public static long Allocated(PoolInfo info) => info.DataBlocksUsed * info.BlockSize;

    public static long Free(PoolInfo info) => info.DataBlocksFree * info.BlockSize;

    public bool Owns(Instrument instrument) => ReferenceEquals(instrument.Meter.Scope, this);

    public void Dispose() => _meter.Dispose();
}
