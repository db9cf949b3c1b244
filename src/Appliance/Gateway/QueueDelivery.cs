// Delivers the queue in the background: `[queue] concurrency` workers take due entries, each
// under the entry's lock (QueueStore.TryLease), through the configured downstream
// (ctx.Downstream, so the failover list applies). One attempt sends MAIL (RET/ENVID when the
// server has DSN, RFC 3461 §4), RCPT for the recipients still pending (NOTIFY/ORCPT), the
// message file as it was queued, and records each recipient's result: 2xx delivered (never sent
// again), 5xx failed, 4xx or no answer retried after an exponential backoff from min_backoff to
// max_backoff. Past max_lifetime the pending recipients fail (4.4.7). Recipients that failed in
// an attempt get one RFC 3464 DSN to the sender through the notification outbox, null sender <>;
// delay_warning sends one "delayed" DSN. A worker keeps its connection for the next entry while
// the server keeps it open (RFC 5321 §4.1.1.5: a new MAIL after the end of data). It lives with
// the gateway, whose downstream and envelope code it uses; Queue/ holds the store and the DSN builder.
using System.Diagnostics;
using System.Net;
using System.Threading.Channels;
using Portcullis.Appliance.Logging;
using Portcullis.Appliance.Messages;
using Portcullis.Appliance.Notifications;
using Portcullis.Appliance.Queue;
using Portcullis.SmtpCore;
using Portcullis.SmtpCore.Downstream;

namespace Portcullis.Appliance.Gateway;

internal sealed class QueueDelivery
{
    // Changes made by `portcullis queue` in another process (hold, release, delete) are seen this
    // soon, and at once after a flush.
    private static readonly TimeSpan RescanInterval = TimeSpan.FromSeconds(30);

    // An entry another process holds locked is tried again this soon.
    private static readonly TimeSpan BusyRetry = TimeSpan.FromSeconds(5);

    // A worker's idle connection is not reused past this (the server's own idle timeout).
    private static readonly TimeSpan ReuseLimit = TimeSpan.FromSeconds(30);

    private readonly Func<GatewayContext> _context;
    private readonly TimeProvider _time;
    private readonly Channel<string> _due = Channel.CreateUnbounded<string>();
    private readonly Lock _lock = new();
    private readonly Dictionary<string, DateTimeOffset> _waiting = new(StringComparer.Ordinal);
    private readonly HashSet<string> _scheduled = new(StringComparer.Ordinal);
    private readonly Dictionary<string, DateTimeOffset> _arrivals = new(StringComparer.Ordinal);
    private readonly HashSet<string> _held = new(StringComparer.Ordinal);
    private readonly SemaphoreSlim _wake = new(0);
    private long _lastScan;
    private int _serverAway;
    private bool _rescan = true;

    // context: the current gateway context (a configuration reload replaces it).
    public QueueDelivery(QueueStore store, Func<GatewayContext> context, TimeProvider? time = null)
    {
        Store = store;
        _context = context;
        _time = time ?? TimeProvider.System;
    }

    public QueueStore Store { get; }

    // A message a session just queued: due now.
    public void Enqueue(QueueEntry entry)
    {
        lock (_lock)
        {
            _arrivals[entry.Id] = entry.Arrival;
            _waiting[entry.Id] = entry.NextAttempt;
        }
        UpdateGauges();
        _wake.Release();
    }

    // `portcullis queue flush` (control socket QUEUE FLUSH): every entry that is not held is due
    // now; the folder is read again first, so entries released by the CLI are included.
    public void FlushNow()
    {
        lock (_lock)
        {
            _rescan = true;
            foreach (var id in _waiting.Keys.ToArray()) _waiting[id] = DateTimeOffset.MinValue;
            _flushing = true;
        }
        Log.Info("queue: flush requested: every entry is due now");
        _wake.Release();
    }

    private bool _flushing;

    // The server answers again after attempts that could not reach it: its backlog is due now
    // rather than spread over each entry's backoff.
    private void ServerBack()
    {
        lock (_lock) _flushing = true;
        Log.Info("queue: the mail server answers again: every waiting entry is due now");
        _wake.Release();
    }

    // Runs the scheduler and the workers until `stop`; an attempt in progress is cancelled and
    // its entry stays queued (the next start tries again).
    public Task RunAsync(int concurrency, CancellationToken stop)
    {
        lock (_lock) _flushing = true;   // at start-up every entry is tried at once: the server is often back
        var workers = Enumerable.Range(0, concurrency).Select(_ => WorkerAsync(stop)).ToList();
        workers.Add(ScheduleAsync(stop));
        return Task.WhenAll(workers);
    }

    // The backoff after `attempts` failed attempts: min_backoff doubled each time, capped at max_backoff.
    public static TimeSpan Backoff(int attempts, TimeSpan min, TimeSpan max)
    {
        if (attempts <= 1) return min < max ? min : max;
        var ticks = min.Ticks;
        for (int i = 1; i < attempts && ticks < max.Ticks; i++) ticks *= 2;
        return TimeSpan.FromTicks(Math.Min(ticks, max.Ticks));
    }

    private async Task ScheduleAsync(CancellationToken stop)
    {
        while (!stop.IsCancellationRequested)
        {
            var now = _time.GetUtcNow();
            bool rescan;
            lock (_lock) rescan = _rescan || Stopwatch.GetElapsedTime(_lastScan) >= RescanInterval;
            if (rescan) Rescan();

            DateTimeOffset? earliest = null;
            lock (_lock)
            {
                foreach (var (id, due) in _waiting.ToArray())
                {
                    if (_scheduled.Contains(id)) continue;
                    if (due <= now || _flushing)
                    {
                        _waiting.Remove(id);
                        _scheduled.Add(id);
                        _due.Writer.TryWrite(id);
                    }
                    else if (earliest is null || due < earliest) earliest = due;
                }
                _flushing = false;
            }

            var wait = RescanInterval;
            if (earliest is { } next && next - now < wait) wait = next - now;
            if (wait < TimeSpan.Zero) wait = TimeSpan.Zero;
            try
            {
                await _wake.WaitAsync(wait, stop).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                break;
            }
        }
        _due.Writer.TryComplete();
    }

    // Reads the folder: entries another process added, released, held or deleted.
    private void Rescan()
    {
        // Only ids known before the listing can be missing from it (a session's new entry is on
        // disk before Enqueue makes it known).
        HashSet<string> known;
        lock (_lock) known = [.. _arrivals.Keys];
        IReadOnlyList<QueueEntry> entries;
        try
        {
            entries = Store.Recount();
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            Log.Error($"queue: cannot read {Store.Folder}: {e.Message}");
            return;
        }
        lock (_lock)
        {
            _lastScan = Stopwatch.GetTimestamp();
            _rescan = false;
            var present = new HashSet<string>(StringComparer.Ordinal);
            foreach (var entry in entries)
            {
                present.Add(entry.Id);
                _arrivals[entry.Id] = entry.Arrival;
                if (entry.Held)
                {
                    _waiting.Remove(entry.Id);
                    if (_held.Add(entry.Id)) Log.Info($"queue: {entry.Id} held");
                    continue;
                }
                if (_held.Remove(entry.Id)) Log.Info($"queue: {entry.Id} released");
                // The earlier of ours and the file's: `queue release` writes "now" into the file,
                // even for an entry whose hold this daemon never saw.
                if (!_scheduled.Contains(entry.Id))
                    _waiting[entry.Id] = _waiting.TryGetValue(entry.Id, out var due) && due < entry.NextAttempt ? due : entry.NextAttempt;
            }
            // Gone without a delivery attempt of ours: `portcullis queue delete`.
            foreach (var id in known.Where(id => !present.Contains(id) && !_scheduled.Contains(id) && _arrivals.ContainsKey(id)))
            {
                _arrivals.Remove(id);
                _waiting.Remove(id);
                _held.Remove(id);
                Log.Info($"queue: {id} deleted");
            }
        }
        UpdateGauges();
    }

    private async Task WorkerAsync(CancellationToken stop)
    {
        var connection = new WorkerConnection();
        try
        {
            await foreach (var id in _due.Reader.ReadAllAsync(stop).ConfigureAwait(false))
            {
                DateTimeOffset? next = null;
                try
                {
                    next = await AttemptAsync(id, connection, stop).ConfigureAwait(false);
                }
                catch (Exception e) when (e is not OperationCanceledException || !stop.IsCancellationRequested)
                {
                    Log.Error($"queue: {id} delivery attempt failed in the gateway: {e}");
                    next = _time.GetUtcNow() + _context().Config.Queue.MinBackoff;
                }
                lock (_lock)
                {
                    _scheduled.Remove(id);
                    if (next is { } due) _waiting[id] = due;
                    else _arrivals.Remove(id);
                }
                UpdateGauges();
                if (next is not null) _wake.Release();
            }
        }
        catch (OperationCanceledException)
        {
        }
        finally
        {
            await connection.DropAsync().ConfigureAwait(false);
        }
    }

    // One attempt on one entry; returns when to try it next, or null when it left the queue
    // (delivered, bounced, expired, deleted) or is held.
    private async Task<DateTimeOffset?> AttemptAsync(string id, WorkerConnection connection, CancellationToken stop)
    {
        using var lease = Store.TryLease(id);
        if (lease is null)
        {
            // Gone (delivered, deleted), or another process has it locked: look again soon.
            return Store.Find(id) is { Held: false } ? _time.GetUtcNow() + BusyRetry : null;
        }
        var entry = lease.Entry;
        if (entry.Held) return null;

        var ctx = _context();
        var config = ctx.Config.Queue;
        var pending = entry.Pending.ToList();
        Log.Info($"queue: {id} attempt {entry.Attempts + 1} to {pending.Count} recipient(s)");
        var results = await SendAsync(ctx, entry, pending, lease.Message, connection, stop).ConfigureAwait(false);
        var now = _time.GetUtcNow();

        var recipients = entry.Recipients.Select(r => results.TryGetValue(r.Address, out var result) && r.State == RecipientState.Pending
            ? r with { State = result.State, LastReply = result.Reply, LastAttempt = now }
            : r).ToList();
        var failedNow = recipients.Where(r => r.State == RecipientState.Failed && results.ContainsKey(r.Address)).ToList();
        var delivered = recipients.Count(r => r.State == RecipientState.Delivered && results.TryGetValue(r.Address, out var x) && x.State == RecipientState.Delivered);
        var lastReply = results.Values.Select(r => r.Reply).LastOrDefault(r => r.Length > 0) ?? "";
        var updated = entry with { Recipients = recipients, Attempts = entry.Attempts + 1, LastAttempt = now, LastReply = lastReply };
        if (delivered > 0)
        {
            ctx.Metrics.QueueDelivered(delivered);
            Log.Info($"queue: {id} delivered to {string.Join(", ", recipients.Where(r => r.State == RecipientState.Delivered && results.ContainsKey(r.Address)).Select(r => r.Address))}: {lastReply}");
        }

        bool expired = false;
        if (updated.Pending.Any() && now - entry.Arrival >= config.MaxLifetime)
        {
            expired = true;
            var expiredNow = updated.Pending.ToList();
            updated = updated with
            {
                Recipients = updated.Recipients.Select(r => r.State == RecipientState.Pending
                    ? r with { State = RecipientState.Failed, LastReply = Expired(r.LastReply) }
                    : r).ToList(),
            };
            failedNow.AddRange(updated.Recipients.Where(r => expiredNow.Any(e => e.Address == r.Address)));
            ctx.Metrics.QueueExpired();
            Log.Warn($"queue: {id} expired after {GatewayRuntime.FormatAge(now - entry.Arrival)} (max_lifetime): {string.Join(", ", expiredNow.Select(r => r.Address))} given up: {lastReply}");
        }

        if (failedNow.Count > 0)
        {
            if (!expired) ctx.Metrics.QueueBounced();
            if (!expired) Log.Warn($"queue: {id} bounced: {string.Join(", ", failedNow.Select(r => $"{r.Address} ({r.LastReply})"))}");
            SendDsn(ctx, lease, updated, DsnKind.Failed, failedNow, now);
        }

        if (!updated.Pending.Any())
        {
            lease.Complete();
            Log.Info($"queue: {id} removed: every recipient delivered or failed ({updated.Recipients.Count(r => r.State == RecipientState.Delivered)} delivered, {updated.Recipients.Count(r => r.State == RecipientState.Failed)} failed)");
            return null;
        }

        if (config.DelayWarning > TimeSpan.Zero && !updated.DelayWarned && now - entry.Arrival >= config.DelayWarning)
        {
            SendDsn(ctx, lease, updated, DsnKind.Delayed, updated.Pending.ToList(), now);
            updated = updated with { DelayWarned = true };
        }

        var backoff = Backoff(updated.Attempts, config.MinBackoff, config.MaxBackoff);
        updated = updated with { NextAttempt = now + backoff };
        lease.Save(updated);
        ctx.Metrics.QueueDeferred();
        Log.Info($"queue: {id} deferred: {updated.Pending.Count()} recipient(s) pending ({lastReply}); attempt {updated.Attempts + 1} in {GatewayRuntime.FormatAge(backoff)}");
        return updated.NextAttempt;
    }

    private static string Expired(string lastReply) =>
        "delivery time expired (max_lifetime)" + (lastReply.Length > 0 ? "; last reply: " + lastReply : "");

    private readonly record struct RecipientResult(RecipientState State, string Reply);

    // The SMTP exchange for the pending recipients: each one's result (Pending = try again).
    private async Task<Dictionary<string, RecipientResult>> SendAsync(GatewayContext ctx, QueueEntry entry, List<QueuedRecipient> pending,
        IMessageContent message, WorkerConnection connection, CancellationToken stop)
    {
        var results = new Dictionary<string, RecipientResult>(StringComparer.Ordinal);
        void All(RecipientState state, string reply, IEnumerable<QueuedRecipient> recipients)
        {
            foreach (var r in recipients) results[r.Address] = new RecipientResult(state, reply);
        }

        DownstreamClient client;
        try
        {
            client = await connection.AcquireAsync(ctx, stop).ConfigureAwait(false);
        }
        catch (DownstreamException e)
        {
            ctx.Metrics.DownstreamError();
            Volatile.Write(ref _serverAway, 1);
            All(RecipientState.Pending, "unavailable: " + e.Message, pending);
            return results;
        }
        if (Interlocked.Exchange(ref _serverAway, 0) == 1) ServerBack();

        if (!EnvelopeRelay.TryMailParameters(entry.Size, entry.EightBitMime, entry.SmtpUtf8, entry.Ret, entry.EnvId,
                client.Capabilities, out var parameters, out var refusal))
        {
            All(RecipientState.Failed, refusal.ToString(), pending);
            return results;
        }
        var accepted = new List<QueuedRecipient>();
        try
        {
            IPAddress.TryParse(entry.ClientAddress, out var address);
            EnvelopeRelay.SendXForward(client, EnvelopeRelay.XForwardAttributes(address, entry.ClientPort, entry.Extended,
                entry.Helo, entry.Session), entry.Id, stop);
            var mail = client.MailAsync("<" + entry.Sender + ">", parameters, stop);
            var rcpts = pending.Select(r => client.RcptAsync("<" + r.Address + ">",
                EnvelopeRelay.RcptParameters(DsnParameters(r), client.Capabilities), stop)).ToList();
            await client.FlushAsync(stop).ConfigureAwait(false);
            var mailReply = await mail.ConfigureAwait(false);
            for (int i = 0; i < pending.Count; i++)
            {
                var reply = await rcpts[i].ConfigureAwait(false);
                if (!mailReply.IsPositiveCompletion) continue;
                if (reply.IsPositiveCompletion) accepted.Add(pending[i]);
                else results[pending[i].Address] = new RecipientResult(reply.IsPermanent ? RecipientState.Failed : RecipientState.Pending, reply.ToString());
            }
            if (!mailReply.IsPositiveCompletion)
            {
                All(mailReply.IsPermanent ? RecipientState.Failed : RecipientState.Pending, mailReply.ToString(), pending);
                await client.RsetAsync(stop).ConfigureAwait(false);
                return results;
            }
            if (accepted.Count == 0)
            {
                await client.RsetAsync(stop).ConfigureAwait(false);
                return results;
            }
            var final = await client.SendMessageAsync(ReadOnlyMemory<byte>.Empty, message, stop).ConfigureAwait(false);
            connection.Touch();
            All(final.IsPositiveCompletion ? RecipientState.Delivered : final.IsPermanent ? RecipientState.Failed : RecipientState.Pending,
                final.ToString(), accepted);
            if (client.IsBroken) await connection.DropAsync().ConfigureAwait(false);
        }
        catch (DownstreamException e)
        {
            ctx.Metrics.DownstreamError();
            await connection.DropAsync().ConfigureAwait(false);
            All(RecipientState.Pending, "connection lost: " + e.Message, pending.Where(r => !results.ContainsKey(r.Address)));
        }
        return results;
    }

    private static IEnumerable<KeyValuePair<string, string?>> DsnParameters(QueuedRecipient recipient)
    {
        if (recipient.Notify is not null) yield return new("NOTIFY", recipient.Notify);
        if (recipient.OriginalRecipient is not null) yield return new("ORCPT", recipient.OriginalRecipient);
    }

    // RFC 3464 report to the envelope sender, sent with the null sender through the outbox;
    // DeliveryStatusNotification decides whether one is due (never for <>, NOTIFY).
    private static void SendDsn(GatewayContext ctx, QueueLease lease, QueueEntry entry, DsnKind kind, IReadOnlyList<QueuedRecipient> recipients, DateTimeOffset now)
    {
        var report = new DsnReport(kind, ctx.Config.General.Hostname, entry.Sender, entry.EnvId, entry.Ret, entry.Arrival,
            recipients.Select(r => new DsnRecipient(r.Address, r.OriginalRecipient, r.Notify,
                kind == DsnKind.Delayed ? "4.4.1" : StatusOf(r.LastReply), char.IsAsciiDigit(r.LastReply.FirstOrDefault()) ? "smtp; " + r.LastReply : null,
                ctx.DownstreamOptions.Host, r.LastAttempt ?? now)).ToList(),
            entry.Id, kind == DsnKind.Delayed ? entry.Arrival + ctx.Config.Queue.MaxLifetime : null);
        byte[]? dsn;
        using (var original = new ContentStream(lease.Message))
            dsn = DeliveryStatusNotification.Build(report, original);
        if (dsn is null)
        {
            Log.Info($"queue: {entry.Id} no {kind.ToString().ToLowerInvariant()} DSN due to <{entry.Sender}> (null sender, NOTIFY or a loop)");
            return;
        }
        if (ctx.Notifier is not { } notifier)
        {
            Log.Warn($"queue: {entry.Id} {kind.ToString().ToLowerInvariant()} DSN to <{entry.Sender}> not sent: notifications are not running");
            return;
        }
        if (!notifier.AddDurably(new NotificationBuilder.Notification("", [entry.Sender], dsn))) return;
        Log.Info($"queue: {entry.Id} {kind.ToString().ToLowerInvariant()} DSN to <{entry.Sender}> for {string.Join(", ", recipients.Select(r => r.Address))}");
    }

    // The enhanced status code of a reply such as "550 5.1.1 ..." (RFC 3463), or the class's generic one.
    internal static string StatusOf(string reply)
    {
        var parts = reply.Split(' ', 3);
        if (parts.Length >= 2 && parts[1].Length >= 5 && parts[1][1] == '.' && parts[1][0] is '2' or '4' or '5') return parts[1];
        if (reply.Length > 0 && reply[0] == '5') return "5.0.0";
        return reply.StartsWith("delivery time expired", StringComparison.Ordinal) ? "4.4.7" : "4.0.0";
    }

    private void UpdateGauges()
    {
        DateTimeOffset? oldest;
        lock (_lock) oldest = _arrivals.Count == 0 ? null : _arrivals.Values.Min();
        _context().Metrics.SetQueue(Store.Count, Store.Bytes, oldest);
    }

    // A worker's downstream connection, reused for its next entry while fresh.
    private sealed class WorkerConnection
    {
        private DownstreamClient? _client;
        private long _used;

        public async Task<DownstreamClient> AcquireAsync(GatewayContext ctx, CancellationToken ct)
        {
            if (_client is { IsBroken: false } existing && Stopwatch.GetElapsedTime(_used) < ReuseLimit)
            {
                _used = Stopwatch.GetTimestamp();
                return existing;
            }
            await DropAsync().ConfigureAwait(false);
            _client = await ctx.Downstream.ConnectAsync(ctx.DownstreamOptions, ct).ConfigureAwait(false);
            _used = Stopwatch.GetTimestamp();
            return _client;
        }

        public void Touch() => _used = Stopwatch.GetTimestamp();

        public async Task DropAsync()
        {
            var client = _client;
            _client = null;
            if (client is null) return;
            try { await client.DisposeAsync().ConfigureAwait(false); }
            catch (Exception e) when (e is DownstreamException or IOException or ObjectDisposedException) { }
        }
    }
}
