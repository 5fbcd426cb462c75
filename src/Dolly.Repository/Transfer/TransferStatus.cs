using System.Diagnostics;

namespace Dolly.Repository.Transfer;

/// <summary>Progress of an upload or restore.</summary>
/// <param name="BytesDone">Bytes of chunks processed so far.</param>
/// <param name="BytesTotal">Bytes of chunks the transfer has to process.</param>
/// <param name="BytesPerSecond">Average rate since the start.</param>
public readonly record struct TransferStatus(long BytesDone, long BytesTotal, double BytesPerSecond)
{
    /// <summary>Time left at the average rate, or null before there is a rate.</summary>
    public TimeSpan? Remaining => BytesPerSecond > 0 ? TimeSpan.FromSeconds((BytesTotal - BytesDone) / BytesPerSecond) : null;
}

/// <summary>Counts bytes done from several workers and reports a <see cref="TransferStatus"/> after each.</summary>
internal sealed class TransferMeter(long total, IProgress<TransferStatus>? progress, TimeProvider time)
{
    private readonly long _started = time.GetTimestamp();
    private long _done;

    public long Done => Interlocked.Read(ref _done);

    public TimeSpan Elapsed => time.GetElapsedTime(_started);

    public void Add(long bytes)
    {
        long done = Interlocked.Add(ref _done, bytes);
        if (progress is null)
        {
            return;
        }

        double seconds = Elapsed.TotalSeconds;
        progress.Report(new TransferStatus(done, total, seconds > 0 ? done / seconds : 0));
    }

    public void Start()
    {
        Debug.Assert(_done == 0, "started twice");
        progress?.Report(new TransferStatus(0, total, 0));
    }
}
