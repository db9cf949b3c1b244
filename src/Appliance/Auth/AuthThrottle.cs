// Failed AUTH attempts per client address: each failure is answered only after a delay, and
// after max_failures within failure_window the connection is closed (421) and new attempts from
// that address get 454 4.7.0 until the oldest failure leaves the window.
using System.Net;

namespace Portcullis.Appliance.Auth;

// One per process: a configuration reload changes the limits, never the counters.
internal sealed class AuthThrottle(int maxFailures, TimeSpan window, TimeProvider? time = null)
{
    private readonly TimeProvider _time = time ?? TimeProvider.System;
    private int maxFailures = maxFailures;
    private TimeSpan window = window;
    private readonly Dictionary<IPAddress, Queue<DateTimeOffset>> _failures = [];
    private readonly Lock _lock = new();

    // The same throttle, counters kept, with the limits of a reloaded configuration.
    public AuthThrottle WithLimits(int maxFailures, TimeSpan window)
    {
        lock (_lock)
        {
            this.maxFailures = maxFailures;
            this.window = window;
        }
        return this;
    }

    public bool IsBlocked(IPAddress? client)
    {
        if (client is null) return false;
        lock (_lock) return Recent(client) >= maxFailures;
    }

    // Returns how many failures this address has in the window now.
    public int RecordFailure(IPAddress? client)
    {
        if (client is null) return 1;
        lock (_lock)
        {
            if (!_failures.TryGetValue(client, out var queue)) _failures[client] = queue = new Queue<DateTimeOffset>();
            queue.Enqueue(_time.GetUtcNow());
            if (_failures.Count > 100_000) Prune();
            return Recent(client);
        }
    }

    private int Recent(IPAddress client)
    {
        if (!_failures.TryGetValue(client, out var queue)) return 0;
        var cutoff = _time.GetUtcNow() - window;
        while (queue.Count > 0 && queue.Peek() < cutoff) queue.Dequeue();
        if (queue.Count == 0) _failures.Remove(client);
        return queue.Count;
    }

    private void Prune()
    {
        foreach (var client in _failures.Keys.ToArray()) Recent(client);
    }
}
