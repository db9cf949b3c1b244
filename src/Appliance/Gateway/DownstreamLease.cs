using System.Diagnostics;
using Portcullis.SmtpCore.Downstream;

namespace Portcullis.Appliance.Gateway;

// How long the gateway waits on its downstream outside the replies DownstreamClient times itself.
//   ResetTimeout  the RSET after a transaction that did not end in delivery: the client's next
//                 command waits for it, so it is short; a downstream that misses it is dropped.
//   ProbeAfter    a connection idle this long before delivery (a slow DATA, a long scan) or
//                 before the pool rents it out again is asked with NOOP whether it is still there
//                 (the server may have timed it out).
//   IdleLimit     a pooled connection idle this long is closed (Postfix's smtpd_timeout is 300 s).
//   MaxAge        a connection this old is not pooled again.
internal sealed record DownstreamTimings(TimeSpan ResetTimeout, TimeSpan ProbeAfter)
{
    public static readonly DownstreamTimings Default = new(TimeSpan.FromSeconds(10), TimeSpan.FromSeconds(10));

    public TimeSpan IdleLimit { get; init; } = TimeSpan.FromSeconds(30);
    public TimeSpan MaxAge { get; init; } = TimeSpan.FromMinutes(5);
}

// One client session's use of the downstream: a connection rented from the gateway's pool at the
// first MAIL (or AUTH), given back when the transaction is over (after delivery as it is, else
// after RSET) or the session ends, and rented again for the next MAIL. A connection that became
// this client's own (a downstream login, or XCLIENT when the server no longer offers it) is never
// given back: the session keeps it while it is fresh and it is closed at the end. A broken one is closed.
// While the client sends its message the connection is parked in the pool (Park), which may lend
// it to another session; every use after that asks for it back first (Reclaim), and finds no
// connection when it was lent: EnvelopeRelay.ReadyForDataAsync then replays the envelope on
// another one.
internal sealed class DownstreamLease(GatewayContext ctx)
{
    // A downstream connection idle this long may have been closed by the server's own timeout
    // (Postfix: 300 s); a fresh one costs less than a 451 from a stale one.
    private static readonly TimeSpan ReuseLimit = TimeSpan.FromSeconds(30);

    private DownstreamClient? _client;
    private long _created;
    private long _used;
    private bool _loggedIn;
    private bool _parked;     // the session's own flag: Park set it, Reclaim clears it

    // The connection to use now, or null when there is none, it broke, or it was lent.
    public DownstreamClient? Usable
    {
        get
        {
            Reclaim();
            return _client is { IsBroken: false } client ? client : null;
        }
    }

    // The connection went to another session while this one's message came in (reset by the next
    // connection this session takes).
    public bool WasLent { get; private set; }

    // The session closed its connection itself: the message forwarded on it while it arrived was
    // not delivered as it came (reset by the next connection this session takes).
    public bool Abandoned { get; private set; }

    // How long the downstream has said nothing.
    public TimeSpan Idle => Stopwatch.GetElapsedTime(_used);

    // The client is sending its message: nothing will be said on the connection until it is in
    // and scanned, so the pool may lend it meanwhile. Only a connection that could serve another
    // client is parked (not logged in as this one, no AUTH tried, not broken).
    public void Park()
    {
        if (_parked || _loggedIn || _client is not { IsBroken: false, AuthAttempted: false, XClientRefusal: null }) return;
        _parked = true;
        ctx.DownstreamPool.Park(this);
    }

    // Back from the pool: the connection is this session's again, or it was lent (no connection).
    private void Reclaim()
    {
        if (!_parked) return;
        _parked = false;
        ctx.DownstreamPool.Unpark(this);
        // Park needs a connection, and only the pool's Surrender takes it away while parked.
        if (_client is null) WasLent = true;
    }

    // Called by the pool under its lock: the parked connection goes to another session.
    internal (DownstreamClient Client, long Created) Surrender()
    {
        var client = _client!;
        _client = null;
        return (client, _created);
    }

    // Called by the pool under its lock: the session it was lent to had given up waiting.
    internal void Restore(DownstreamClient client) => _client = client;

    // The current connection when it is fresh enough, else one from the pool. DownstreamException
    // when the downstream cannot be reached. A ValueTask: a warm connection comes at once, and
    // then no task is made for it.
    public async ValueTask<DownstreamClient> AcquireAsync(CancellationToken ct)
    {
        Reclaim();
        if (_client is { IsBroken: false } existing && Stopwatch.GetElapsedTime(_used) < ReuseLimit)
        {
            _used = Stopwatch.GetTimestamp();
            return existing;
        }
        return await ReplaceAsync(ct).ConfigureAwait(false);
    }

    // Another connection in place of the current one (which is closed first).
    public async ValueTask<DownstreamClient> ReplaceAsync(CancellationToken ct)
    {
        Reclaim();
        await DiscardCurrentAsync().ConfigureAwait(false);
        var rented = await ctx.DownstreamPool.RentAsync(ct).ConfigureAwait(false);
        WasLent = false;
        Abandoned = false;
        _client = rented.Client;
        _created = rented.Created;
        _used = Stopwatch.GetTimestamp();
        // Only a hint for the next EHLO (see GatewaySession.AddExtensions); each session decides
        // from its own connection's capabilities.
        ctx.DownstreamCapabilities = rented.Client.Capabilities;
        return rented.Client;
    }

    // The downstream just answered: its idle time starts again. After the final reply to the
    // message the transaction is over, and a connection nobody owns goes back to the pool.
    public void Touch()
    {
        Reclaim();
        _used = Stopwatch.GetTimestamp();
        if (_client is { IsBetweenTransactions: true } && Shareable) _ = GiveBackAsync();
    }

    // The current connection is logged in with the client's credentials ([auth] downstream = yes).
    public void MarkLoggedIn()
    {
        Reclaim();
        _loggedIn = true;
    }

    // The client's authentication was reset (STARTTLS, RFC 3207 §4.2): a connection still logged
    // in as that user must not carry the session's next mail, so it goes.
    public async Task ForgetLoginAsync()
    {
        Reclaim();
        if (_loggedIn) await DropAsync().ConfigureAwait(false);
    }

    // True when the current connection answers a NOOP within ResetTimeout.
    public async Task<bool> ProbeAsync()
    {
        if (Usable is not { } client) return false;
        using var bounded = new CancellationTokenSource(ctx.DownstreamTimings.ResetTimeout);
        try
        {
            var reply = await client.NoopAsync(bounded.Token).ConfigureAwait(false);
            _used = Stopwatch.GetTimestamp();
            return reply.IsPositiveCompletion;
        }
        catch (Exception e) when (e is DownstreamException or OperationCanceledException)
        {
            return false;
        }
    }

    // A parked connection has nothing waiting to be sent (and stays parked).
    public async ValueTask FlushAsync(CancellationToken ct)
    {
        if (_parked) return;
        if (Usable is { } client) await client.FlushAsync(ct).ConfigureAwait(false);
    }

    // RSET keeps the downstream connection in step for the next transaction; if it fails or does
    // not come back within ResetTimeout, drop it (the client's next command waits for this). A
    // connection nobody owns goes back to the pool, which sends that RSET itself.
    public async Task ResetAsync()
    {
        Reclaim();
        var client = _client;
        if (client is null) return;
        if (client.IsBroken)
        {
            // Its pool slot goes to another session now, not at this session's next MAIL or end.
            await DiscardCurrentAsync().ConfigureAwait(false);
            return;
        }
        if (Shareable)
        {
            await GiveBackAsync().ConfigureAwait(false);
            return;
        }
        using var bounded = new CancellationTokenSource(ctx.DownstreamTimings.ResetTimeout);
        try
        {
            var reply = await client.RsetAsync(bounded.Token).ConfigureAwait(false);
            _used = Stopwatch.GetTimestamp();
            if (!reply.IsPositiveCompletion) await DropAsync().ConfigureAwait(false);
        }
        catch (Exception e) when (e is DownstreamException or OperationCanceledException)
        {
            await DropAsync().ConfigureAwait(false);
        }
    }

    // The session is done with its connection: back to the pool when it can serve another
    // client, closed otherwise.
    public async Task DropAsync()
    {
        Reclaim();
        if (_client is null) return;
        if (Shareable) await GiveBackAsync().ConfigureAwait(false);
        else await DiscardCurrentAsync().ConfigureAwait(false);
    }

    // The message forwarded on the connection while it arrived will not be delivered as it came:
    // its data is never ended, so the server discards it, and the connection is closed.
    public async Task AbandonForwardedAsync(DownstreamClient forwarding, string why)
    {
        forwarding.AbandonStream(why);
        if (ReferenceEquals(_client, forwarding)) Abandoned = true;
        await DropAsync().ConfigureAwait(false);
    }

    // Not this client's own: no downstream login, no XCLIENT, no AUTH tried, not broken.
    private bool Shareable => !_loggedIn && _client is { } client && ctx.DownstreamPool.Keeps(client, _created);

    private Task GiveBackAsync()
    {
        var client = _client!;
        _client = null;
        return ctx.DownstreamPool.ReturnAsync(client, _created);
    }

    private Task DiscardCurrentAsync()
    {
        var client = _client;
        _client = null;
        _loggedIn = false;
        return client is null ? Task.CompletedTask : ctx.DownstreamPool.DiscardAsync(client);
    }
}
