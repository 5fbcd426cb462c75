using System.Diagnostics.Metrics;
using Dolly.Storage;

namespace Dolly.Metrics;

/// <summary>
/// The pool's space as observable gauges, read from <see cref="Pool.GetInfo"/> at each scrape, and each
/// volume's and snapshot's allocated and exclusive bytes, read from <see cref="Pool.GetSpace"/>. Like
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
    public const string SavedBytes = "dolly_pool_saved_bytes";
    public const string DeviceAllocatedBytes = "dolly_device_allocated_bytes";
    public const string DeviceExclusiveBytes = "dolly_device_exclusive_bytes";

    /// <summary>How long one walk of every device's map serves the per-device gauges and the saved bytes.</summary>
    internal static readonly TimeSpan SpaceLifetime = TimeSpan.FromSeconds(1);

    private readonly Meter _meter;
    private readonly Pool _pool;
    private readonly TimeProvider _time;
    private readonly Lock _lock = new();
    private (long At, List<(DeviceInfo Device, SpaceUsage Space)> Devices)? _space;

    public PoolMetrics(Pool pool, TimeProvider? time = null)
    {
        ArgumentNullException.ThrowIfNull(pool);
        _pool = pool;
        _time = time ?? TimeProvider.System;
        _meter = new Meter(new MeterOptions(MeterName) { Scope = this });

        // No unit on purpose: OpenTelemetry's Prometheus exporter would append one, and the names already end in _bytes.
        _meter.CreateObservableGauge(LogicalBytes, () => pool.GetInfo().LogicalBytes, unit: null, description: "Sum of the logical sizes of the pool's volumes and snapshots");
        _meter.CreateObservableGauge(AllocatedBytes, () => Allocated(pool.GetInfo()), unit: null, description: "Bytes of data blocks in use, each shared block counted once");
        _meter.CreateObservableGauge(PhysicalBytes, () => pool.GetInfo().DataFileBytes, unit: null, description: "Bytes the pool's data file takes on disk");
        _meter.CreateObservableGauge(MetadataBytes, () => pool.GetInfo().MetadataBytes, unit: null, description: "Bytes of metadata pages in use");
        _meter.CreateObservableGauge(FreeBytes, () => Free(pool.GetInfo()), unit: null, description: "Bytes of free data blocks inside the data file, reused before it grows");
        _meter.CreateObservableGauge(SavedBytes, () => Saved(Devices(), pool.GetInfo()), unit: null, description: "Bytes sharing saves: the devices' allocated bytes added up, less the pool's allocated bytes");
        _meter.CreateObservableGauge(DeviceAllocatedBytes, () => PerDevice(s => s.Allocated), unit: null, description: "Bytes of data blocks a volume or snapshot maps, shared ones included");
        _meter.CreateObservableGauge(DeviceExclusiveBytes, () => PerDevice(s => s.Exclusive), unit: null, description: "Bytes of data blocks only this volume or snapshot maps: what deleting it would free");
    }

    public static long Allocated(PoolInfo info) => info.DataBlocksUsed * info.BlockSize;

    public static long Free(PoolInfo info) => info.DataBlocksFree * info.BlockSize;

    /// <summary>What sharing saves: every device's mapped bytes as if it had its own copy, less what the pool holds.</summary>
    public static long Saved(IEnumerable<(DeviceInfo Device, SpaceUsage Space)> devices, PoolInfo info) =>
        Math.Max(0, devices.Sum(d => d.Space.Allocated) - Allocated(info));

    /// <summary>The label value of a device's kind.</summary>
    public static string Kind(DeviceKind kind) => kind == DeviceKind.Snapshot ? "snapshot" : "volume";

    public bool Owns(Instrument instrument) => ReferenceEquals(instrument.Meter.Scope, this);

    public void Dispose() => _meter.Dispose();

    private IEnumerable<Measurement<long>> PerDevice(Func<SpaceUsage, long> figure) =>
        Devices().Select(d => new Measurement<long>(
            figure(d.Space),
            new KeyValuePair<string, object?>("device", d.Device.Name),
            new KeyValuePair<string, object?>("kind", Kind(d.Device.Kind))));

    /// <summary>
    /// Every device's space, walked at most once per <see cref="SpaceLifetime"/>: a scrape reads three gauges
    /// from it, and a walk reads every map page of the pool.
    /// </summary>
    private List<(DeviceInfo Device, SpaceUsage Space)> Devices()
    {
        lock (_lock)
        {
            if (_space is { } cached && _time.GetElapsedTime(cached.At) < SpaceLifetime)
            {
                return cached.Devices;
            }

            var devices = new List<(DeviceInfo, SpaceUsage)>();
            foreach (var device in _pool.ListDevices())
            {
                // A device deleted since the listing has no space to report.
                if (_pool.GetSpace(device.Name) is { IsOk: true } space)
                {
                    devices.Add((device, space.Value));
                }
            }

            _space = (_time.GetTimestamp(), devices);
            return devices;
        }
    }
}
