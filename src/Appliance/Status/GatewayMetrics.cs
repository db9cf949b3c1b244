using System.Collections.Concurrent;
using Portcullis.Appliance.Logging;

namespace Portcullis.Appliance.Status;

// What the gateway counts while it runs, for /metrics, the status page, `portcullis status`
// and systemd's STATUS=. Everything is updated with interlocked operations from sessions.
internal sealed class GatewayMetrics
{
    private const int DetectionsKept = 20;

    private readonly ConcurrentDictionary<(string Verdict, string Action), StrongCounter> messages = new();
    private readonly ConcurrentDictionary<(string Class, string Action), StrongCounter> detectionsByClass = new();
    private readonly ConcurrentDictionary<string, StrongCounter> connectionLimitRefusals = new();
    private readonly Queue<Detection> detections = new();
    private readonly Lock detectionsLock = new();
    private long connectionsTotal;
    private long connectionsActive;
    private long bytesTotal;
    private long downstreamErrors;
    private long reloadsOk;
    private long reloadsFailed;
    private long relayRefusals;
    private long authFailures;

    private long queueDelivered;
    private long queueDeferred;
    private long queueBounced;
    private long queueExpired;
    private QueueGauges queue = new(0, 0, null);

    public DateTimeOffset Started { get; } = DateTimeOffset.UtcNow;

    // The store-and-forward queue: what is in it now (set by QueueDelivery) and what left it.
    public QueueGauges Queue => Volatile.Read(ref queue);

    public long QueueDeliveredCount => Interlocked.Read(ref queueDelivered);

    public long QueueDeferredCount => Interlocked.Read(ref queueDeferred);

    public long QueueBouncedCount => Interlocked.Read(ref queueBounced);

    public long QueueExpiredCount => Interlocked.Read(ref queueExpired);

    public void SetQueue(int messages, long bytes, DateTimeOffset? oldest) => Volatile.Write(ref queue, new QueueGauges(messages, bytes, oldest));

    public void QueueDelivered(int recipients) => Interlocked.Add(ref queueDelivered, recipients);

    public void QueueDeferred() => Interlocked.Increment(ref queueDeferred);

    public void QueueBounced() => Interlocked.Increment(ref queueBounced);

    public void QueueExpired() => Interlocked.Increment(ref queueExpired);

    public Histogram ScanSeconds { get; } = Histogram.Seconds();

    public Histogram MessageSeconds { get; } = Histogram.Seconds();

    public Histogram ReloadSeconds { get; } = new(0.1, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300);

    public long ConnectionsTotal => Interlocked.Read(ref connectionsTotal);

    public long ConnectionsActive => Interlocked.Read(ref connectionsActive);

    public long Bytes => Interlocked.Read(ref bytesTotal);

    public long DownstreamErrors => Interlocked.Read(ref downstreamErrors);

    public long ReloadsOk => Interlocked.Read(ref reloadsOk);

    public long ReloadsFailed => Interlocked.Read(ref reloadsFailed);

    public void ConnectionOpened()
    {
        Interlocked.Increment(ref connectionsTotal);
        Interlocked.Increment(ref connectionsActive);
    }

    public void ConnectionClosed() => Interlocked.Decrement(ref connectionsActive);

    public void DownstreamError() => Interlocked.Increment(ref downstreamErrors);

    public long RelayRefusals => Interlocked.Read(ref relayRefusals);

    public long AuthFailures => Interlocked.Read(ref authFailures);

    // A RCPT refused because the client may not relay to that domain.
    public void RelayRefused() => Interlocked.Increment(ref relayRefusals);

    // An AUTH exchange that ended with wrong credentials.
    public void AuthFailed() => Interlocked.Increment(ref authFailures);

    // A connection closed at once because of [limits]: limit is "total" or "per_ip".
    public void ConnectionLimitRefused(string limit) =>
        connectionLimitRefusals.GetOrAdd(limit, _ => new StrongCounter()).Increment();

    public IReadOnlyList<(string Limit, long Count)> ConnectionLimitRefusals() =>
        connectionLimitRefusals.Select(p => (p.Key, p.Value.Value)).OrderBy(p => p.Key, StringComparer.Ordinal).ToArray();

    // Detections by class (virus, pua, heuristics, phishing, unofficial, banned) and action.
    public IReadOnlyList<(string Class, string Action, long Count)> Detections() =>
        detectionsByClass.Select(p => (p.Key.Class, p.Key.Action, p.Value.Value))
            .OrderBy(d => d.Class, StringComparer.Ordinal).ThenBy(d => d.Action, StringComparer.Ordinal).ToArray();

    public void Reloaded(bool ok, TimeSpan took)
    {
        Interlocked.Increment(ref ok ? ref reloadsOk : ref reloadsFailed);
        ReloadSeconds.Observe(took.TotalSeconds);
    }

    public void Message(MessageLogEntry entry)
    {
        var verdict = MessageLog.VerdictText(entry.Verdict);
        messages.GetOrAdd((verdict, entry.Action), _ => new StrongCounter()).Increment();
        Interlocked.Add(ref bytesTotal, entry.Size);
        MessageSeconds.Observe(entry.Milliseconds / 1000.0);
        if (entry.Verdict == MessageVerdict.Infected)
        {
            var detectionClass = Policy.Detection.ClassName(Policy.Detection.Classify(entry.Virus));
            detectionsByClass.GetOrAdd((detectionClass, entry.Action), _ => new StrongCounter()).Increment();
            lock (detectionsLock)
            {
                detections.Enqueue(new Detection(DateTimeOffset.UtcNow, entry.Virus, entry.From, entry.Client, entry.Action));
                if (detections.Count > DetectionsKept)
                {
                    detections.Dequeue();
                }
            }
        }
    }

    // Verdict, action and count, in a stable order.
    public IReadOnlyList<(string Verdict, string Action, long Count)> Messages() =>
        messages.Select(p => (p.Key.Verdict, p.Key.Action, p.Value.Value))
            .OrderBy(m => m.Verdict, StringComparer.Ordinal).ThenBy(m => m.Action, StringComparer.Ordinal).ToArray();

    public long MessagesWith(string verdict) => messages.Where(p => p.Key.Verdict == verdict).Sum(p => p.Value.Value);

    public long MessageCount => messages.Sum(p => p.Value.Value);

    // Newest first.
    public IReadOnlyList<Detection> LastDetections()
    {
        lock (detectionsLock)
        {
            return detections.Reverse().ToArray();
        }
    }

    private sealed class StrongCounter
    {
        private long value;

        public long Value => Interlocked.Read(ref value);

        public void Increment() => Interlocked.Increment(ref value);
    }
}

internal sealed record QueueGauges(int Messages, long Bytes, DateTimeOffset? Oldest);

internal sealed record Detection(DateTimeOffset Time, string Virus, string From, string Client, string Action);
