using System.Diagnostics;
using Portcullis.SmtpCore.Downstream;

namespace Portcullis.Appliance.Gateway;

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

    // The connection to use now, or null when there is none or it broke.
    public DownstreamClient? Usable => _client is { IsBroken: false } client ? client : null;

    // The current connection when it is fresh enough, else a new one. DownstreamException when
    // the downstream cannot be reached.
    public async Task<DownstreamClient> AcquireAsync(CancellationToken ct)
    {
        if (_client is { IsBroken: false } existing && Stopwatch.GetElapsedTime(_used) < ReuseLimit)
        {
            _used = Stopwatch.GetTimestamp();
            return existing;
        }
        await DropAsync().ConfigureAwait(false);
        _used = Stopwatch.GetTimestamp();
        _client = await ctx.Downstream.ConnectAsync(ctx.DownstreamOptions, ct).ConfigureAwait(false);
        ctx.DownstreamCapabilities = _client.Capabilities;
        return _client;
    }

    // The downstream just answered: its idle time starts again.
    public void Touch() => _used = Stopwatch.GetTimestamp();

    public async ValueTask FlushAsync(CancellationToken ct)
    {
        if (Usable is { } client) await client.FlushAsync(ct).ConfigureAwait(false);
    }

    // RSET keeps the downstream connection in step for the next transaction; if it fails, drop it.
    public async Task ResetAsync()
    {
        var client = _client;
        if (client is null || client.IsBroken) return;
        try
        {
            var reply = await client.RsetAsync(CancellationToken.None).ConfigureAwait(false);
            _used = Stopwatch.GetTimestamp();
            if (!reply.IsPositiveCompletion) await DropAsync().ConfigureAwait(false);
        }
        catch (DownstreamException)
        {
            await DropAsync().ConfigureAwait(false);
        }
    }

    public async Task DropAsync()
    {
        var client = _client;
        _client = null;
        if (client is null) return;
        try { await client.DisposeAsync().ConfigureAwait(false); }
        catch (Exception e) when (e is DownstreamException or IOException or ObjectDisposedException) { }
    }
}
