// WATCHDOG=1 only while the gateway can really do its work: the accept loops are running and a
// canary scan (a few bytes in memory, through the real ScannerPool and engine) has gone through
// recently. Pings go out at half of WatchdogSec; when the scanner is wedged they stop, and
// systemd restarts the service (Restart=on-failure after the watchdog's SIGABRT).
//
// "Recently": the last canary finished within WatchdogSec + [scan] timeout, or one is still
// queued while other scans keep finishing (the pool is busy, not stuck). A reload counts as
// progress: a low-memory reload holds the pool while the new engine is built.
//
// Tests only: PORTCULLIS_TEST_WEDGE_SCANNER=FILE makes each canary block inside the scan for
// as long as FILE exists, which is what a scanner thread stuck in libclamav looks like. Only
// the canary reads it; real messages are never affected.
using System.Diagnostics;
using Portcullis.Appliance.Logging;
using Portcullis.NativeScan;

namespace Portcullis.Appliance.Systemd;

internal sealed class ServiceWatchdog
{
    public const string WedgeVariable = "PORTCULLIS_TEST_WEDGE_SCANNER";

    private readonly IWatchedService runtime;
    private readonly TimeSpan interval;
    private readonly string? wedgeFile = Environment.GetEnvironmentVariable(WedgeVariable);
    private ScanTicket? canary;
    private long canaryQueued;
    private long canaryDone = Environment.TickCount64;
    private long finishedWhenQueued;
    private bool withholding;

    public ServiceWatchdog(IWatchedService runtime, TimeSpan interval)
    {
        this.runtime = runtime;
        this.interval = interval;
    }

    public async Task RunAsync(CancellationToken stop)
    {
        if (wedgeFile is not null)
        {
            Log.Warn($"{WedgeVariable} is set: canary scans block while {wedgeFile} exists (a test setting)");
        }

        using var timer = new PeriodicTimer(interval / 2);
        do
        {
            Tick();
        }
        while (await WaitAsync(timer, stop).ConfigureAwait(false));
    }

    private static async Task<bool> WaitAsync(PeriodicTimer timer, CancellationToken stop)
    {
        try
        {
            return await timer.WaitForNextTickAsync(stop).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            return false;
        }
    }

    private void Tick()
    {
        var now = Environment.TickCount64;
        var pool = runtime.Scanners;
        if (canary is { Finished.IsCompleted: true })
        {
            canary = null;
        }

        if (canary is null && !pool.IsHeld)
        {
            StartCanary(pool, now);
        }

        var staleAfter = (long)(interval + runtime.ScanTimeout).TotalMilliseconds;
        var fresh = now - Interlocked.Read(ref canaryDone) <= staleAfter;
        var queuedBehindWork = canary is not null && pool.FinishedCount > finishedWhenQueued
                                                  && now - pool.LastFinishedTicks <= staleAfter;
        var reloading = runtime.IsReloading;
        var accepting = runtime.AcceptLoopsAlive();

        if (accepting && (fresh || queuedBehindWork || reloading))
        {
            if (withholding)
            {
                withholding = false;
                Log.Info("watchdog: scanner pool answers again; WATCHDOG=1 resumed");
            }

            runtime.Notifier.Watchdog();
            return;
        }

        var why = !accepting
            ? "an accept loop has stopped"
            : $"no canary scan has finished for {(now - Interlocked.Read(ref canaryDone)) / 1000.0:0.0}s (canary queued {(now - canaryQueued) / 1000.0:0.0}s ago)";
        if (!withholding)
        {
            withholding = true;
            Log.Error($"watchdog: {why}; withholding WATCHDOG=1 so systemd restarts the service");
        }

        runtime.Notifier.Status($"WEDGED: {why}; {runtime.StatusLine()}");
    }

    private void StartCanary(ScannerPool pool, long now)
    {
        var source = new CanarySource(wedgeFile);
        if (!pool.TryEnqueue(source, "portcullis-canary", runtime.ScanTimeout, out var ticket))
        {
            // Queue full: the pool is busy; the progress check above decides.
            return;
        }

        canary = ticket;
        canaryQueued = now;
        finishedWhenQueued = pool.FinishedCount;
        ticket.Finished.ContinueWith(_ => Interlocked.Exchange(ref canaryDone, Environment.TickCount64), CancellationToken.None,
            TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
    }

    // A few clean bytes; under the test setting, a read that blocks while the wedge file exists.
    private sealed class CanarySource(string? wedgeFile) : IScanSource
    {
        private static readonly byte[] Content = "portcullis watchdog canary\n"u8.ToArray();

        public long Length => Content.Length;

        public int Read(long offset, Span<byte> destination)
        {
            if (wedgeFile is not null)
            {
                var stuck = Stopwatch.StartNew();
                while (File.Exists(wedgeFile) && stuck.Elapsed < TimeSpan.FromHours(1))
                {
                    Thread.Sleep(50); // test-only: a scanner thread stuck in the engine
                }
            }

            if (offset >= Content.Length)
            {
                return 0;
            }

            var n = Math.Min(destination.Length, Content.Length - (int)offset);
            Content.AsSpan((int)offset, n).CopyTo(destination);
            return n;
        }
    }
}

// What the watchdog vouches for to systemd: the gateway's scanner pool, its accept loops and its
// reloads, read afresh on every tick (a configuration reload may change the scan timeout).
internal interface IWatchedService
{
    ScannerPool Scanners { get; }
    TimeSpan ScanTimeout { get; }
    bool IsReloading { get; }
    bool AcceptLoopsAlive();
    string StatusLine();
    SystemdNotifier Notifier { get; }
}
