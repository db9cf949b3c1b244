using Portcullis.Appliance.Systemd;

namespace Portcullis.Appliance.Messages;

// After large messages the process stayed far above idle: 12 MB 5 s after the 300,000-part
// message, 100 MB after a load of 5 MB messages. The managed heap keeps the regions it grew into
// committed for reuse (measured in /proc/PID/smaps: the growth was in the GC's 4 MB regions), and
// glibc keeps what libclamav freed. When the last large message in flight (1 MiB of segments, or
// spilled past memory_threshold) is disposed, both are given back once: a compacting gen-2
// collection in aggressive mode (it decommits the free regions) and malloc_trim(0). Small mail
// never triggers it, so the hot path does not pay for it; a steady stream of large messages pays
// at most one collection per QuietPeriod, as the return waits that long and is skipped when
// another large message is in flight by then.
internal static class LargeMessageMemory
{
    private static readonly TimeSpan QuietPeriod = TimeSpan.FromSeconds(1);

    // Segments (MessageBuffer.SegmentSize each) that make a message in memory large: 1 MiB.
    public const int Segments = 16;

    private static int s_inFlight;
    private static int s_queued;
    private static int s_returns;

    // How many times memory was given back.
    public static int Returns => Volatile.Read(ref s_returns);

    public static void Begin() => Interlocked.Increment(ref s_inFlight);

    public static void End()
    {
        if (Interlocked.Decrement(ref s_inFlight) == 0 && Interlocked.Exchange(ref s_queued, 1) == 0)
        {
            // Off the session's thread: the collection blocks for as long as it runs.
            _ = Task.Delay(QuietPeriod).ContinueWith(static _ => Return(), CancellationToken.None,
                TaskContinuationOptions.None, TaskScheduler.Default);
        }
    }

    private static void Return()
    {
        Volatile.Write(ref s_queued, 0);
        if (Volatile.Read(ref s_inFlight) != 0)
        {
            return; // another large message arrived meanwhile: its End() returns the memory
        }

        GC.Collect(GC.MaxGeneration, GCCollectionMode.Aggressive, blocking: true, compacting: true);
        Libc.TrimHeap();
        Interlocked.Increment(ref s_returns);
    }
}
