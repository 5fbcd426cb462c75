using System.Diagnostics;
using System.Diagnostics.Metrics;

namespace Dolly.Nbd;

/// <summary>
/// The NBD server's series: requests, payload bytes and service time per export and command, and open
/// connections. One instance per server: its meter carries the instance as scope, so an exporter can take only
/// its own server's instruments when several servers share a process (tests).
/// </summary>
public sealed class NbdMetrics : IDisposable
{
    /// <summary>The name of the meter every instance creates.</summary>
    public const string MeterName = "Dolly.Nbd";

    /// <summary>Counter of requests served, by export and command.</summary>
    public const string Requests = "dolly_nbd_requests_total";

    /// <summary>Counter of payload bytes read and written, by export and command (read and write only).</summary>
    public const string Bytes = "dolly_nbd_bytes_total";

    /// <summary>Histogram of the time from a request's dispatch to its reply being queued, by export and command.</summary>
    public const string Seconds = "dolly_nbd_request_duration_seconds";

    /// <summary>Gauge of open connections (handshaking or transmitting).</summary>
    public const string Connections = "dolly_nbd_connections";

    /// <summary>Buckets from 50 µs (a cached read) to 10 s (a flush behind a large commit).</summary>
    internal static readonly double[] Buckets = [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

    // proto.md's command names, lower case; indexed by the command's number.
    private static readonly string[] CommandNames = ["read", "write", "disc", "flush", "trim", "cache", "write_zeroes", "block_status"];
    private const string OtherCommand = "other";

    private readonly Meter _meter;
    private readonly Counter<long> _requests;
    private readonly Counter<long> _bytes;
    private readonly Histogram<double> _seconds;
    private Func<int> _connections = () => 0;

    /// <summary>Creates the meter and its instruments.</summary>
    public NbdMetrics(TimeProvider? time = null)
    {
        Time = time ?? TimeProvider.System;
        _meter = new Meter(new MeterOptions(MeterName) { Scope = this });
        _requests = _meter.CreateCounter<long>(Requests, unit: null, description: "NBD requests served, by export and command");
        _bytes = _meter.CreateCounter<long>(Bytes, unit: null, description: "NBD payload bytes read and written, by export and command");
        _seconds = _meter.CreateHistogram(
            Seconds,
            unit: null,
            description: "Time from an NBD request's dispatch to its reply being queued, by export and command",
            tags: null,
            advice: new InstrumentAdvice<double> { HistogramBucketBoundaries = Buckets });
        _meter.CreateObservableGauge(Connections, () => _connections(), unit: null, description: "Open NBD connections");
    }

    /// <summary>The clock requests are timed with.</summary>
    public TimeProvider Time { get; }

    /// <summary>Whether <paramref name="instrument"/> belongs to this instance (for an exporter's filter).</summary>
    public bool Owns(Instrument instrument)
    {
        ArgumentNullException.ThrowIfNull(instrument);
        return ReferenceEquals(instrument.Meter.Scope, this);
    }

    /// <summary>Reports <paramref name="server"/>'s open connections at each scrape.</summary>
    public void TrackConnections(NbdServer server)
    {
        ArgumentNullException.ThrowIfNull(server);
        _connections = () => server.ConnectionCount;
    }

    /// <summary>Records one request the server answered (with data or an error).</summary>
    internal void Record(string export, ushort command, uint length, TimeSpan elapsed)
    {
        string name = command < CommandNames.Length ? CommandNames[command] : OtherCommand;
        var tags = new TagList { { "export", export }, { "command", name } };
        _requests.Add(1, tags);
        _seconds.Record(elapsed.TotalSeconds, tags);
        if (command is Nbd.CmdRead or Nbd.CmdWrite)
        {
            _bytes.Add(length, tags);
        }
    }

    /// <inheritdoc />
    public void Dispose() => _meter.Dispose();
}
