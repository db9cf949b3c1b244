// Warm connections to the mail server behind the gateway, shared by every client session, so a
// client connection does not cost a downstream connect, banner and EHLO (issue 13).
// Contract:
// - At most Limit downstream connections exist at once, rented or idle. A rent past the limit
//   waits for a connection given back or closed, at most the connect timeout, then fails with
//   DownstreamException (the session answers 451 as for an unreachable server).
// - A connection is only taken back between transactions (after the final reply to the data,
//   or after an RSET the pool sends itself) and never when it is broken, was told who a client
//   is (XCLIENT), tried AUTH (it may be logged in as a client: RFC 4954), or is older than
//   MaxAge. Idle past IdleLimit (below Postfix's 300 s smtpd_timeout) it is closed with QUIT.
// - A connection idle ProbeAfter or more answers a NOOP before it is rented out again; one that
//   does not is closed and the next (or a new one) is tried, so a stale connection never costs
//   the client a 451.
// - A session receiving its message (DATA or BDAT) parks its connection here: the envelope is on
//   it, but nothing will be said on it until the message is in and scanned. A rent past the
//   limit takes a parked connection (the one parked last first), resets its transaction with
//   RSET and uses it; the session it came from replays its envelope on another connection when
//   its message is ready (EnvelopeRelay.ReadyForDataAsync). So as many clients as the gateway
//   takes can be inside DATA at once with Limit downstream connections, and the mail server never
//   sees more than Limit of them (issue 13's burst of 1,000 senders).
// - Close (shutdown, or a reload that changes the server) ends every idle connection with QUIT;
//   the ones rented out are closed when they come back.
using System.Diagnostics;
using Portcullis.SmtpCore.Downstream;

namespace Portcullis.Appliance.Gateway;

internal sealed class DownstreamPool : IAsyncDisposable
{
    private readonly IDownstreamConnector _connector;
    private readonly DownstreamOptions _options;
    private readonly DownstreamTimings _timings;
    private readonly object _gate = new();
    private readonly List<Idle> _idle = [];          // oldest first; rented from the end (warmest)
    private readonly Queue<Waiter> _waiters = new();
    private readonly List<DownstreamLease> _parked = [];   // sessions inside DATA; lent from the end
    private readonly Timer _sweeper;
    private int _open;
    private bool _closed;
    private long _connects;
    private long _lent;

    public DownstreamPool(IDownstreamConnector connector, DownstreamOptions options, DownstreamTimings timings, int limit)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(limit, 1);
        _connector = connector;
        _options = options;
        _timings = timings;
        Limit = limit;
        var period = timings.IdleLimit / 2;
        _sweeper = new Timer(static pool => ((DownstreamPool)pool!).Sweep(), this, period, period);
    }

    public int Limit { get; }

    // Connections made so far (each one a connect, banner and EHLO).
    public long Connects => Interlocked.Read(ref _connects);

    // Open downstream connections, rented and idle.
    public int Open
    {
        get { lock (_gate) return _open; }
    }

    public int IdleCount
    {
        get { lock (_gate) return _idle.Count; }
    }

    // Connections taken from a session inside DATA for another session so far.
    public long Lent => Interlocked.Read(ref _lent);

    // Connections parked by sessions receiving their message now.
    public int ParkedCount
    {
        get { lock (_gate) return _parked.Count; }
    }

    // A connection for one session: a warm one when there is one, else a new one (warm: false),
    // else one lent by a session inside DATA, else the first given back or a slot come free.
    public async ValueTask<Rented> RentAsync(CancellationToken ct)
    {
        while (true)
        {
            Idle? warm = null;
            Rented? lent = null;
            List<DownstreamClient>? stale = null;
            Waiter? waiter = null;
            bool connect = false;
            lock (_gate)
            {
                if (_closed) throw new DownstreamException("the gateway is shutting down");
                while (_idle.Count > 0)
                {
                    var candidate = _idle[^1];
                    _idle.RemoveAt(_idle.Count - 1);
                    if (Reusable(candidate.Client, candidate.Created) && Stopwatch.GetElapsedTime(candidate.Since) < _timings.IdleLimit)
                    {
                        warm = candidate;
                        break;
                    }
                    (stale ??= []).Add(candidate.Client);
                    _open--;
                }
                if (warm is null)
                {
                    // Slots the stale ones held go to this rent first, then to waiters.
                    if (_open < Limit)
                    {
                        _open++;
                        connect = true;
                    }
                    else if (_parked.Count > 0)
                    {
                        lent = LendLocked(_parked[^1]);
                        _parked.RemoveAt(_parked.Count - 1);
                    }
                    else
                    {
                        waiter = new Waiter();
                        _waiters.Enqueue(waiter);
                    }
                }
            }
            if (stale is not null) foreach (var client in stale) CloseInBackground(client);

            if (warm is { } idle)
            {
                if (Stopwatch.GetElapsedTime(idle.Since) < _timings.ProbeAfter || await AnswersAsync(idle.Client).ConfigureAwait(false))
                    return new Rented(idle.Client, idle.Created, Warm: true);
                _ = DiscardAsync(idle.Client);
                continue;
            }
            if (connect) return await ConnectAsync(ct).ConfigureAwait(false);

            var handed = lent ?? await WaitAsync(waiter!, ct).ConfigureAwait(false);
            if (handed is not { } given) return await ConnectAsync(ct).ConfigureAwait(false);   // a slot came free
            if (!given.Lent) return given;
            if (await TakeOverAsync(given, ct).ConfigureAwait(false) is { } taken) return taken;
            // The lent connection did not take the RSET: its slot is free again, try once more.
        }
    }

    // Parks the connection of a session that is receiving its message: a session waiting for a
    // connection gets it now, a later rent past the limit may take it. The session asks for it
    // back with Unpark before it says anything on it.
    public void Park(DownstreamLease lease)
    {
        lock (_gate)
        {
            if (_closed) return;
            while (_waiters.TryDequeue(out var waiter))
            {
                var lent = LendLocked(lease);
                if (waiter.TryHand(lent)) return;
                lease.Restore(lent.Client);   // that waiter gave up: the next one
                Interlocked.Decrement(ref _lent);
            }
            _parked.Add(lease);
        }
    }

    // The session takes its parked connection back: after this no rent can lend it, and a lease
    // whose connection was lent holds none (read after this call, under the same lock's ordering).
    public void Unpark(DownstreamLease lease)
    {
        lock (_gate) _parked.Remove(lease);
    }

    private Rented LendLocked(DownstreamLease lease)
    {
        var (client, created) = lease.Surrender();
        Interlocked.Increment(ref _lent);
        return new Rented(client, created, Warm: true, Lent: true);
    }

    // A lent connection still has the other session's envelope open: RSET ends it. A connection
    // that was told who that session's client is, and no longer offers XCLIENT to tell it again,
    // cannot speak for another client: it is closed and its slot connects afresh. Null when the
    // lent connection failed (its slot was given up).
    private async Task<Rented?> TakeOverAsync(Rented lent, CancellationToken ct)
    {
        var client = lent.Client;
        if (!await EndTransactionAsync(client).ConfigureAwait(false))
        {
            await DiscardAsync(client).ConfigureAwait(false);
            return null;
        }
        if (!Reusable(client, lent.Created))
        {
            CloseInBackground(client);   // the slot stays with this rent
            return await ConnectAsync(ct).ConfigureAwait(false);
        }
        return lent with { Lent = false };
    }

    // Takes a connection back from a session: kept warm when it can carry another client's
    // mail (RSET first when a transaction is still open), closed otherwise.
    public async Task ReturnAsync(DownstreamClient client, long created)
    {
        if (!client.IsBroken && !client.IsBetweenTransactions && Reusable(client, created))
            await EndTransactionAsync(client).ConfigureAwait(false);
        if (!client.IsBetweenTransactions || !Reusable(client, created))
        {
            await DiscardAsync(client).ConfigureAwait(false);
            return;
        }
        Waiter? next = null;
        lock (_gate)
        {
            if (!_closed)
            {
                while (_waiters.TryDequeue(out var waiter))
                {
                    if (waiter.TryHand(new Rented(client, created, Warm: true)))
                    {
                        next = waiter;
                        break;
                    }
                }
                if (next is null) _idle.Add(new Idle(client, created, Stopwatch.GetTimestamp()));
                return;
            }
        }
        await DiscardAsync(client).ConfigureAwait(false);
    }

    // Closes a connection that will not be used again (QUIT when it still works), giving its
    // slot to a waiting session.
    public Task DiscardAsync(DownstreamClient client)
    {
        Release();
        return CloseQuietlyAsync(client);
    }

    // Shutdown or a new server: idle connections hear QUIT now, rented ones when they come back.
    public async Task CloseAsync()
    {
        List<Idle> idle;
        List<Waiter> waiters;
        lock (_gate)
        {
            _closed = true;
            _parked.Clear();   // their sessions still hold them: closed when they come back
            idle = [.. _idle];
            _idle.Clear();
            _open -= idle.Count;
            waiters = [.. _waiters];
            _waiters.Clear();
        }
        await _sweeper.DisposeAsync().ConfigureAwait(false);
        foreach (var waiter in waiters) waiter.Fail(new DownstreamException("the gateway is shutting down"));
        await Task.WhenAll(idle.Select(i => CloseQuietlyAsync(i.Client))).ConfigureAwait(false);
    }

    public ValueTask DisposeAsync() => new(CloseAsync());

    // Whether a connection given back would be kept (the rest decides ReturnAsync: a transaction
    // still open is reset first).
    public bool Keeps(DownstreamClient client, long created) => Reusable(client, created);

    // A connection told who one client is (XCLIENT) can carry another client's mail only while the
    // server still offers XCLIENT on it, to be told again (ClientIdentity does before MAIL). Postfix
    // re-evaluates smtpd_authorized_xclient_hosts for the client it was told about, so behind
    // Postfix such a connection usually stays that client's own.
    private bool Reusable(DownstreamClient client, long created) =>
        !client.IsBroken && !ClaimsAnotherClient(client) && client.XClientRefusal is null && !client.AuthAttempted
        && Stopwatch.GetElapsedTime(created) < _timings.MaxAge;

    private static bool ClaimsAnotherClient(DownstreamClient client) =>
        client.XClientAttributes is not null && client.Capabilities.XClient.Count == 0;

    private async Task<Rented> ConnectAsync(CancellationToken ct)
    {
        try
        {
            var client = await _connector.ConnectAsync(_options, ct).ConfigureAwait(false);
            Interlocked.Increment(ref _connects);
            return new Rented(client, Stopwatch.GetTimestamp(), Warm: false);
        }
        catch
        {
            Release();
            throw;
        }
    }

    // One connection fewer: its slot goes to the first session still waiting (it connects).
    private void Release()
    {
        lock (_gate)
        {
            _open--;
            while (_waiters.TryDequeue(out var waiter))
            {
                if (waiter.TryHand(null))
                {
                    _open++;
                    break;
                }
            }
        }
    }

    // Waits for a connection given back (returned) or a free slot (null), within the connect timeout.
    private async Task<Rented?> WaitAsync(Waiter waiter, CancellationToken ct)
    {
        try
        {
            return await waiter.Task.WaitAsync(_options.ConnectTimeout, ct).ConfigureAwait(false);
        }
        catch (Exception e) when (e is TimeoutException or OperationCanceledException)
        {
            if (waiter.TryAbandon())
            {
                if (e is OperationCanceledException) throw;
                throw new DownstreamException(
                    $"all {Limit} downstream connections stayed busy for {_options.ConnectTimeout.TotalSeconds:0.#}s ([general] smtp_server_connections)");
            }
            // Handed something just as the wait ended: take it.
            var late = await waiter.Task.ConfigureAwait(false);
            return late ?? await ConnectAsync(ct).ConfigureAwait(false);
        }
    }

    // RSET within ResetTimeout; true when the connection is between transactions after it (a
    // refused RSET leaves the transaction open; a broken or silent connection is not).
    private async Task<bool> EndTransactionAsync(DownstreamClient client)
    {
        using var bounded = new CancellationTokenSource(_timings.ResetTimeout);
        try
        {
            await client.RsetAsync(bounded.Token).ConfigureAwait(false);
        }
        catch (Exception e) when (e is DownstreamException or OperationCanceledException)
        {
        }
        return client.IsBetweenTransactions;
    }

    private async Task<bool> AnswersAsync(DownstreamClient client)
    {
        using var bounded = new CancellationTokenSource(_timings.ResetTimeout);
        try
        {
            return (await client.NoopAsync(bounded.Token).ConfigureAwait(false)).IsPositiveCompletion;
        }
        catch (Exception e) when (e is DownstreamException or OperationCanceledException)
        {
            return false;
        }
    }

    private void Sweep()
    {
        List<DownstreamClient>? expired = null;
        lock (_gate)
        {
            int keep = 0;
            for (int i = 0; i < _idle.Count; i++)
            {
                var idle = _idle[i];
                if (Reusable(idle.Client, idle.Created) && Stopwatch.GetElapsedTime(idle.Since) < _timings.IdleLimit)
                    _idle[keep++] = idle;
                else
                    (expired ??= []).Add(idle.Client);
            }
            _idle.RemoveRange(keep, _idle.Count - keep);
        }
        if (expired is null) return;
        foreach (var client in expired) _ = DiscardAsync(client);
    }

    private static void CloseInBackground(DownstreamClient client) => _ = CloseQuietlyAsync(client);

    private static async Task CloseQuietlyAsync(DownstreamClient client)
    {
        try { await client.DisposeAsync().ConfigureAwait(false); }
        catch (Exception e) when (e is DownstreamException or IOException or ObjectDisposedException) { }
    }

    // Lent: taken from a session inside DATA, its transaction still open (RentAsync resets it).
    public readonly record struct Rented(DownstreamClient Client, long Created, bool Warm, bool Lent = false);

    private readonly record struct Idle(DownstreamClient Client, long Created, long Since);

    // A session waiting for a connection: handed one (or a free slot) once, or gives up once.
    private sealed class Waiter
    {
        private readonly TaskCompletionSource<Rented?> _handed = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public Task<Rented?> Task => _handed.Task;

        public bool TryHand(Rented? rented) => _handed.TrySetResult(rented);

        public bool TryAbandon() => _handed.TrySetCanceled();

        public void Fail(Exception e) => _handed.TrySetException(e);
    }
}
