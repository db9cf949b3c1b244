// What happens to a message once its content has arrived: one scan job on the scanner (after
// checking the scratch folder has room for libclamav to unpack it), then the verdict decides its
// disposition: clean (and no banned attachment) → delivery; a virus or banned attachment → the
// detection handler (a strip detection arrives already rewritten and rescanned by the job); a
// scanner error or timeout, strip's included → [scan] on_error (451 4.7.0, or delivery marked
// Unscanned). The buffer is freed only when the scanner has let go of it. A large message has
// been going on to the downstream while it arrived (MessageDelivery.ForwardArrivedAsync): a clean
// one is ended there, any other outcome abandons it (the downstream never sees its end).
using System.Diagnostics;
using System.Runtime.CompilerServices;
using Portcullis.Appliance.Configuration;
using Portcullis.Appliance.Logging;
using Portcullis.Appliance.Messages;
using Portcullis.Appliance.Scanning;
using Portcullis.NativeScan;
using Portcullis.SmtpCore;
using Portcullis.SmtpCore.Server;

namespace Portcullis.Appliance.Gateway;

internal sealed class MessagePipeline(GatewayContext ctx, DownstreamLease lease, TransactionLog log,
    MessageDelivery delivery, DetectionHandler detections)
{
    // The message starts: its envelope waits on the downstream connection until the message is in
    // and scanned, so the connection is parked for another session to use meanwhile.
    public MessageBuffer OpenContent(GatewayTransaction state)
    {
        state.Buffer = new MessageBuffer(ctx.Config.Limits.MemoryThreshold, ctx.Config.General.TempFolder);
        if (state.MailSent) lease.Park();
        return state.Buffer;
    }

    // More content is in: a large message goes on to the downstream while it arrives.
    public ValueTask OnContentArrivedAsync(SmtpSession session, SmtpTransaction tx, CancellationToken ct)
    {
        var state = GatewayTransaction.Of(tx);
        return state.Buffer is { } buffer ? delivery.ForwardArrivedAsync(session, tx, state, buffer, ct) : ValueTask.CompletedTask;
    }

    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder<>))]
    public async ValueTask<SmtpReply> OnMessageAsync(SmtpSession session, SmtpTransaction tx, CancellationToken ct)
    {
        var state = GatewayTransaction.Of(tx);
        state.Finished = true;
        var buffer = state.Buffer!;
        var scanFinished = Task.CompletedTask;
        var entry = log.NewEntry(session, tx, buffer.Length);
        try
        {
            string scratch = ScanSettings.ScratchFolder(ctx.Config);
            if (!ScanSpace.HasRoomToScan(scratch, buffer.Length))
            {
                Log.Warn($"session={entry.Session} scratch folder {scratch} has no room to scan {buffer.Length} bytes");
                await lease.ResetAsync().ConfigureAwait(false);
                return log.Finish(entry, state, MessageVerdict.None, "", MessageAction.Tempfail, "",
                    new SmtpReply(451, "4.3.1", "Insufficient system storage to scan the message, try again later"));
            }

            // Everything that reads the content runs in this one job on the scanner; the session waits.
            var envelope = detections.EnvelopeFacts(entry, DateTimeOffset.Now);
            var job = new MessageScanJob(buffer, ScanJobPolicy.For(ctx.Config, ctx.Banned, ctx.Templates?.Attachment, envelope));
            if (!ctx.Scanner.TryStart(job, ctx.Config.Scan.Timeout, out var running))
            {
                await lease.ResetAsync().ConfigureAwait(false);
                return log.Finish(entry, state, MessageVerdict.None, "", MessageAction.Tempfail, "",
                    new SmtpReply(451, "4.3.2", "All virus scanners are busy, try again later"));
            }
            scanFinished = running.Finished;
            long scanStarted = Stopwatch.GetTimestamp();
            ScanJobResult result = await running.Verdict.ConfigureAwait(false);
            if (result.Outcome == ScanOutcome.Clean && ScanSpace.WasFullDuringScan(scratch))
                result = ScanJobResult.Failed(ScanResult.Error(0, "scratch folder full during the scan: attachments may not have been unpacked"));
            ctx.Metrics.ScanSeconds.Observe(Stopwatch.GetElapsedTime(scanStarted).TotalSeconds);

            switch (result.Outcome)
            {
                case ScanOutcome.Clean:
                    if (result.Scan.SkippedLimit is { } limit)
                        Log.Warn($"session={entry.Session} passed partly scanned ({limit}; alert_exceeds_max = no)");
                    return await delivery.DeliverAsync(session, tx, entry, state, MessageVerdict.Clean, buffer, null, ct).ConfigureAwait(false);

                case ScanOutcome.Infected:
                    return await detections.HandleAsync(session, tx, entry, state, buffer, result, envelope, ct).ConfigureAwait(false);

                default:
                    Log.Warn($"session={entry.Session} scan failed: {result.Scan.ErrorText}");
                    if (ctx.Config.Scan.OnError == ScanErrorAction.Pass)
                        return await delivery.DeliverAsync(session, tx, entry, state, MessageVerdict.Error, buffer, new Delivery("Unscanned", MessageAction.PassedUnscanned), ct).ConfigureAwait(false);
                    await lease.ResetAsync().ConfigureAwait(false);
                    return log.Finish(entry, state, MessageVerdict.Error, "", MessageAction.Tempfail, "",
                        new SmtpReply(451, "4.7.0", result.Scan.IsTimeout ? "Virus scan not finished within the scan timeout, try again later" : "Temporary failure while scanning the message, try again later"));
            }
        }
        finally
        {
            // Forwarded while it arrived but not delivered as it came (refused, tempfailed, a
            // detection): the downstream never sees its end, so it discards what it got.
            AbandonForwarded(state, "not delivered as it arrived");
            // A scan that timed out may still be reading the buffer: free it when the scanner lets go.
            state.Buffer = null;
            if (scanFinished.IsCompleted) buffer.Dispose();
            else _ = scanFinished.ContinueWith(static (_, b) => ((MessageBuffer)b!).Dispose(), buffer,
                CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
        }
    }

    // The message forwarded on the downstream while it arrived, if any, will not be ended there.
    private static void AbandonForwarded(GatewayTransaction state, string why)
    {
        if (state.Forwarding is not { } forwarding) return;
        state.Forwarding = null;
        forwarding.AbandonStream(why);
    }

    // The transaction ended without a verdict (RSET, QUIT, a broken connection, refused content).
    public async ValueTask AbortAsync(SmtpSession session, SmtpTransaction tx)
    {
        if (tx.HandlerState is not GatewayTransaction state) return;
        // The client went away or the content broke a rule: the data forwarded so far never ends.
        AbandonForwarded(state, "the client's transaction ended without a message");
        if (!state.Finished && state.Buffer is { } buffer)
        {
            log.Aborted(session, tx, state, buffer.Length);
            buffer.Dispose();
            state.Buffer = null;
        }
        if (state.MailSent) await lease.ResetAsync().ConfigureAwait(false);
    }
}
