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
// this client's own (XCLIENT, a downstream login) is never given back: the session keeps it while
// it is fresh and it is closed at the end. A broken one is closed.
internal sealed class DownstreamLease(GatewayContext ctx)
{
    // A downstream connection idle this long may have been closed by the server's own timeout
    // (Postfix: 300 s); a fresh one costs less than a 451 from a stale one.
    private static readonly TimeSpan ReuseLimit = TimeSpan.FromSeconds(30);

    private DownstreamClient? _client;
    private long _created;
    private long _used;
    private bool _loggedIn;

    // The connection to use now, or null when there is none or it broke.
    public DownstreamClient? Usable => _client is { IsBroken: false } client ? client : null;

    // How long the downstream has said nothing.
    public TimeSpan Idle => Stopwatch.GetElapsedTime(_used);

    // The current connection when it is fresh enough, else one from the pool. DownstreamException
    // when the downstream cannot be reached.
    public async Task<DownstreamClient> AcquireAsync(CancellationToken ct)
    {
        if (_client is { IsBroken: false } existing && Stopwatch.GetElapsedTime(_used) < ReuseLimit)
        {
            _used = Stopwatch.GetTimestamp();
            return existing;
        }
        return await ReplaceAsync(ct).ConfigureAwait(false);
    }

    // Another connection in place of the current one (which is closed first).
    public async Task<DownstreamClient> ReplaceAsync(CancellationToken ct)
    {
        await DiscardCurrentAsync().ConfigureAwait(false);
        var rented = await ctx.DownstreamPool.RentAsync(ct).ConfigureAwait(false);
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
        _used = Stopwatch.GetTimestamp();
        if (_client is { IsBetweenTransactions: true } && Shareable) _ = GiveBackAsync();
    }

    // The current connection is logged in with the client's credentials ([auth] downstream = yes).
    public void MarkLoggedIn() => _loggedIn = true;

    // The client's authentication was reset (STARTTLS, RFC 3207 §4.2): a connection still logged
    // in as that user must not carry the session's next mail, so it goes.
    public async Task ForgetLoginAsync()
    {
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

    public async ValueTask FlushAsync(CancellationToken ct)
    {
        if (Usable is { } client) await client.FlushAsync(ct).ConfigureAwait(false);
    }

    // RSET keeps the downstream connection in step for the next transaction; if it fails or does
    // not come back within ResetTimeout, drop it (the client's next command waits for this). A
    // connection nobody owns goes back to the pool, which sends that RSET itself.
    public async Task ResetAsync()
    {
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
        if (_client is null) return;
        if (Shareable) await GiveBackAsync().ConfigureAwait(false);
        else await DiscardCurrentAsync().ConfigureAwait(false);
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
