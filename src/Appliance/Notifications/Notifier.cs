using System.Threading.Channels;
using Portcullis.Appliance.Logging;
using Portcullis.Appliance.Messages;
using Portcullis.SmtpCore.Downstream;

namespace Portcullis.Appliance.Notifications;

// Sends notifications in the background so that no SMTP reply waits for them. Queue() hands a
// notification to a writer that puts it in the outbox (durably); the sender goes through the
// outbox in queue order, deletes what the server accepted or refused for good, and keeps the rest
// for a later attempt: 1 minute after the first failure, doubling up to 1 hour, given up after 5
// days. At start-up every waiting entry is tried at once, whatever its schedule (the server is
// often back by the time the gateway is). On stop the writer finishes what was queued.
public sealed class Notifier
{
    private static readonly TimeSpan FirstRetry = TimeSpan.FromMinutes(1);
    private static readonly TimeSpan LongestRetry = TimeSpan.FromHours(1);
    private static readonly TimeSpan GiveUpAfter = TimeSpan.FromDays(5);

    private readonly Outbox _outbox;
    private readonly DownstreamOptions _server;
    private readonly Channel<NotificationBuilder.Notification> _queued = Channel.CreateUnbounded<NotificationBuilder.Notification>(
        new UnboundedChannelOptions { SingleReader = true });
    private readonly SemaphoreSlim _wake = new(0);

    public Notifier(Outbox outbox, DownstreamOptions server)
    {
        _outbox = outbox;
        _server = server;
    }

    public void Queue(NotificationBuilder.Notification notification) => _queued.Writer.TryWrite(notification);

    // Written to the outbox before this returns (the queue's DSNs: the queue entry they report on
    // is removed right after), then sent like the others. False when the outbox cannot take it.
    public bool AddDurably(NotificationBuilder.Notification notification) => TryAdd(notification);

    public Task RunAsync(CancellationToken stop) => Task.WhenAll(WriteLoopAsync(), SendLoopAsync(stop));

    // Ends the writer once everything queued so far is in the outbox.
    public void Complete() => _queued.Writer.TryComplete();

    private async Task WriteLoopAsync()
    {
        await foreach (var notification in _queued.Reader.ReadAllAsync().ConfigureAwait(false))
            TryAdd(notification);
    }

    private bool TryAdd(NotificationBuilder.Notification notification)
    {
        try
        {
            _outbox.Add(notification.EnvelopeFrom, notification.Recipients, notification.Message, DateTimeOffset.UtcNow);
            _wake.Release();
            return true;
        }
        catch (IOException e)
        {
            Log.Error($"notification to {string.Join(", ", notification.Recipients)} lost: cannot write it to the outbox {_outbox.Folder}: {e.Message}");
            return false;
        }
    }

    private async Task SendLoopAsync(CancellationToken stop)
    {
        var startUp = true;
        while (!stop.IsCancellationRequested)
        {
            DateTimeOffset? next;
            try
            {
                next = await SendDueAsync(startUp, stop).ConfigureAwait(false);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                // The outbox folder went away or became unreadable: say so and try again later
                // rather than end the sender for the life of the process.
                Log.Error($"notifications: cannot work through the outbox {_outbox.Folder}: {e.Message}; retrying");
                next = DateTimeOffset.UtcNow + TimeSpan.FromMinutes(1);
            }
            startUp = false;
            var wait = next is { } due ? due - DateTimeOffset.UtcNow : LongestRetry;
            wait = wait < TimeSpan.Zero ? TimeSpan.Zero : wait > LongestRetry ? LongestRetry : wait;
            try
            {
                await _wake.WaitAsync(wait, stop).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                return;
            }
        }
    }

    // Sends every entry that is due; returns when the earliest remaining one is.
    private async Task<DateTimeOffset?> SendDueAsync(bool all, CancellationToken stop)
    {
        DateTimeOffset? earliest = null;
        foreach (var entry in _outbox.Pending(Log.Warn))
        {
            if (stop.IsCancellationRequested) break;
            var now = DateTimeOffset.UtcNow;
            if (!all && entry.NextAttempt > now)
            {
                earliest = Min(earliest, entry.NextAttempt);
                continue;
            }

            var (done, error, permanent) = await TrySendAsync(entry, stop).ConfigureAwait(false);
            if (done)
            {
                _outbox.Remove(entry.Id);
                continue;
            }

            if (permanent || now - entry.Created > GiveUpAfter)
            {
                Log.Error($"notification {entry.Id} to {string.Join(", ", entry.Recipients)} given up after {entry.Attempts + 1} attempt(s): {error}");
                _outbox.Remove(entry.Id);
                continue;
            }

            var delay = TimeSpan.FromTicks(Math.Min(LongestRetry.Ticks, FirstRetry.Ticks << Math.Min(entry.Attempts, 10)));
            var retried = entry with { Attempts = entry.Attempts + 1, NextAttempt = now + delay, LastError = error };
            Log.Warn($"notification {entry.Id} to {string.Join(", ", entry.Recipients)} not sent ({error}); next attempt in {delay.TotalMinutes:0} min");
            try
            {
                _outbox.Save(retried);
            }
            catch (IOException e)
            {
                Log.Warn($"cannot update outbox entry {entry.Id}: {e.Message}");
            }

            earliest = Min(earliest, retried.NextAttempt);
        }

        return earliest;
    }

    private async Task<(bool Done, string Error, bool Permanent)> TrySendAsync(OutboxEntry entry, CancellationToken stop)
    {
        try
        {
            var message = _outbox.ReadMessage(entry.Id);
            var result = await DirectDelivery.SendAsync(_server, entry.From, entry.Recipients, ReadOnlyMemory<byte>.Empty, new BytesContent(message), stop)
                .ConfigureAwait(false);
            foreach (var (recipient, reply) in result.Refused)
            {
                Log.Warn($"notification {entry.Id}: {recipient} refused: {reply}");
            }

            return (result.Delivered, result.Reply, !result.Delivered && !result.Transient);
        }
        catch (DownstreamException e)
        {
            return (false, e.Message, false);
        }
        catch (OperationCanceledException)
        {
            return (false, "stopping", false);
        }
        catch (IOException e)
        {
            return (false, e.Message, false);
        }
    }

    private static DateTimeOffset? Min(DateTimeOffset? a, DateTimeOffset b) => a is null || b < a ? b : a;
}
