using System.Diagnostics;
using Portcullis.SmtpCore.Downstream;

namespace Portcullis.Appliance.Gateway;

// How long the gateway waits on its downstream outside the replies DownstreamClient times itself.
//   ResetTimeout  the RSET after a transaction that did not end in delivery: the client's next
//                 command waits for it, so it is short; a downstream that misses it is dropped.
//   ProbeAfter    a connection idle this long before delivery (a slow DATA, a long scan) is
//                 asked with NOOP whether it is still there (the server may have timed it out).
internal sealed record DownstreamTimings(TimeSpan ResetTimeout, TimeSpan ProbeAfter)
{
    public static readonly DownstreamTimings Default = new(TimeSpan.FromSeconds(10), TimeSpan.FromSeconds(10));
}

// One client session's connection to the downstream: opened at the first MAIL (or AUTH), reused
// for the session's next transactions while it is fresh, kept in step with RSET after a
// transaction that did not end in delivery, and dropped when it breaks or the session ends.
internal sealed class DownstreamLease(GatewayContext ctx)
{
    // A downstream connection idle this long may have been closed by the server's own timeout
    // (Postfix: 300 s); a fresh one costs less than a 451 from a stale one.
    private static readonly TimeSpan ReuseLimit = TimeSpan.FromSeconds(30);

    private DownstreamClient? _client;
    private long _used;
    private bool _loggedIn;

    // The connection to use now, or null when there is none or it broke.
    public DownstreamClient? Usable => _client is { IsBroken: false } client ? client : null;

    // How long the downstream has said nothing.
    public TimeSpan Idle => Stopwatch.GetElapsedTime(_used);

    // The current connection when it is fresh enough, else a new one. DownstreamException when
    // the downstream cannot be reached.
    public async Task<DownstreamClient> AcquireAsync(CancellationToken ct)
    {
        if (_client is { IsBroken: false } existing && Stopwatch.GetElapsedTime(_used) < ReuseLimit)
        {
            _used = Stopwatch.GetTimestamp();
            return existing;
        }
        return await ReplaceAsync(ct).ConfigureAwait(false);
    }

    // A new connection in place of the current one (which is dropped first).
    public async Task<DownstreamClient> ReplaceAsync(CancellationToken ct)
    {
        await DropAsync().ConfigureAwait(false);
        _used = Stopwatch.GetTimestamp();
        _client = await ctx.Downstream.ConnectAsync(ctx.DownstreamOptions, ct).ConfigureAwait(false);
        // Only a hint for the next EHLO (see GatewaySession.AddExtensions); each session decides
        // from its own connection's capabilities.
        ctx.DownstreamCapabilities = _client.Capabilities;
        return _client;
    }

    // The downstream just answered: its idle time starts again.
    public void Touch() => _used = Stopwatch.GetTimestamp();

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
    // not come back within ResetTimeout, drop it (the client's next command waits for this).
    public async Task ResetAsync()
    {
        var client = _client;
        if (client is null || client.IsBroken) return;
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

    public async Task DropAsync()
    {
        var client = _client;
        _client = null;
        _loggedIn = false;
        if (client is null) return;
        try { await client.DisposeAsync().ConfigureAwait(false); }
        catch (Exception e) when (e is DownstreamException or IOException or ObjectDisposedException) { }
    }
}
