// One timer for every live server session, as Kestrel's heartbeat: a session arms a deadline
// (Environment.TickCount64) when it starts a read that must end in time, and about once a second
// the heartbeat cancels the pending read of each session whose deadline has passed; the session
// then answers 421 4.4.2 and closes. This replaces a linked token source and a timer per read.
// Timeouts fire up to one interval late, which RFC 5321's minutes-long timeouts allow.
namespace Portcullis.SmtpCore.Server;

internal sealed class SessionHeartbeat
{
    public static readonly TimeSpan Interval = TimeSpan.FromSeconds(1);
    public static SessionHeartbeat Shared { get; } = new();

    private readonly Lock _gate = new();
    private readonly HashSet<SmtpSession> _sessions = [];
    private SmtpSession[] _snapshot = [];
    private ITimer? _timer;
    private int _ticking;

    public void Add(SmtpSession session)
    {
        lock (_gate)
        {
            _sessions.Add(session);
            if (_timer is null)
            {
                // The timer lives as long as the process; it must not hold the first session's context.
                using (ExecutionContext.SuppressFlow())
                    _timer = TimeProvider.System.CreateTimer(static h => ((SessionHeartbeat)h!).Tick(), this, Interval, Interval);
            }
        }
    }

    public void Remove(SmtpSession session)
    {
        lock (_gate) _sessions.Remove(session);
    }

    private void Tick()
    {
        if (Interlocked.Exchange(ref _ticking, 1) == 1) return; // the last tick is still walking
        try
        {
            int count;
            lock (_gate)
            {
                count = _sessions.Count;
                if (_snapshot.Length < count) _snapshot = new SmtpSession[Math.Max(count, _snapshot.Length * 2)];
                _sessions.CopyTo(_snapshot);
            }
            long now = Environment.TickCount64;
            for (int i = 0; i < count; i++)
            {
                _snapshot[i].OnHeartbeat(now);
                _snapshot[i] = null!; // a finished session is not kept alive by the snapshot
            }
        }
        finally
        {
            Volatile.Write(ref _ticking, 0);
        }
    }
}
