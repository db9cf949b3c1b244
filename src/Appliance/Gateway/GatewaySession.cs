// The gateway's policy for one client connection: the seam between the SMTP session and the
// product. The downstream connection is opened at the first MAIL and reused; MAIL and RCPT
// go to the downstream (pipelined when it offers PIPELINING) and its replies go back to the
// client. The content is read once into a MessageBuffer, scanned on the scanner pool, and
// forwarded with trace headers only when clean; the client hears the downstream's own final
// reply, so nothing is acknowledged that the downstream has not accepted.
using System.Diagnostics;
using System.Net;
using Portcullis.Appliance.Configuration;
using Portcullis.Appliance.Logging;
using Portcullis.Appliance.Messages;
using Portcullis.Appliance.Notifications;
using Portcullis.Appliance.Policy;
using Portcullis.Appliance.Quarantine;
using Portcullis.NativeScan;
using Portcullis.SmtpCore;
using Portcullis.SmtpCore.Downstream;
using Portcullis.SmtpCore.Server;

namespace Portcullis.Appliance.Gateway;

internal sealed class GatewaySession : ISmtpSessionHandler
{
    private readonly GatewayContext _ctx;
    private DownstreamClient? _downstream;
    private long _downstreamUsed;
    private int _messages;

    // A downstream connection idle this long may have been closed by the server's own timeout
    // (Postfix: 300 s); a fresh one costs less than a 451 from a stale one.
    private static readonly TimeSpan DownstreamReuseLimit = TimeSpan.FromSeconds(30);

    public GatewaySession(GatewayContext ctx) => _ctx = ctx;

    private sealed class MessageState
    {
        public long Started = Stopwatch.GetTimestamp();
        public MessageBuffer? Buffer;
        public bool MailSent;
        public bool Finished;
    }

    public ValueTask<SmtpReply?> OnConnectAsync(SmtpSession session, CancellationToken ct) =>
        ValueTask.FromResult(_ctx.Relay.OnConnect(session.RemoteEndPoint as IPEndPoint));

    public void AddExtensions(SmtpSession session, List<string> lines)
    {
        if (_ctx.DownstreamCapabilities?.Dsn == true) lines.Add("DSN");
    }

    public ValueTask<SmtpReply?> OnHeloAsync(SmtpSession session, string domain, CancellationToken ct) =>
        ValueTask.FromResult<SmtpReply?>(null);

    public async ValueTask<SmtpResponse> OnMailAsync(SmtpSession session, SmtpTransaction tx, CancellationToken ct)
    {
        var state = new MessageState();
        tx.HandlerState = state;
        DownstreamClient downstream;
        try
        {
            downstream = await ConnectAsync(ct).ConfigureAwait(false);
        }
        catch (DownstreamException e)
        {
            Log.Warn($"session={session.Id} downstream unavailable: {e.Message}");
            return DownstreamUnavailable;
        }

        var caps = downstream.Capabilities;
        var parameters = new List<string>();
        if (tx.DeclaredSize is long size && caps.MaxSize is not null)
            parameters.Add($"SIZE={size + 1024}"); // room for the trace headers we add
        if (tx.Body == BodyType.EightBitMime)
        {
            if (!caps.EightBitMime) return new SmtpReply(555, "5.6.3", "8BITMIME is not accepted by the mail server behind this gateway");
            parameters.Add("BODY=8BITMIME");
        }
        if (tx.SmtpUtf8)
        {
            if (!caps.SmtpUtf8) return new SmtpReply(555, "5.6.7", "SMTPUTF8 is not accepted by the mail server behind this gateway");
            parameters.Add("SMTPUTF8");
        }
        if (tx.DsnRet is not null || tx.DsnEnvId is not null)
        {
            if (!caps.Dsn) return new SmtpReply(555, "5.5.4", "DSN is not accepted by the mail server behind this gateway");
            if (tx.DsnRet is not null) parameters.Add("RET=" + tx.DsnRet);
            if (tx.DsnEnvId is not null) parameters.Add("ENVID=" + tx.DsnEnvId);
        }

        state.MailSent = true;
        Task<SmtpReply> reply = Send(() => downstream.MailAsync(tx.ReversePath.ToString(), Join(parameters), ct));
        return new SmtpResponse(MapEnvelopeAsync(session, reply));
    }

    public ValueTask<SmtpResponse> OnRcptAsync(SmtpSession session, SmtpTransaction tx, SmtpRecipient recipient, CancellationToken ct)
    {
        SmtpReply? refusal = _ctx.Relay.OnRecipient(session.RemoteEndPoint as IPEndPoint, recipient.Path);
        if (refusal is not null) return ValueTask.FromResult<SmtpResponse>(refusal);
        var downstream = _downstream;
        if (downstream is null || downstream.IsBroken) return ValueTask.FromResult<SmtpResponse>(DownstreamUnavailable);

        // NOTIFY and ORCPT only reach here when DSN was offered, i.e. the downstream has it.
        var parameters = recipient.Parameters.Select(p => p.Value is null ? p.Key : p.Key + "=" + p.Value);
        Task<SmtpReply> reply = Send(() => downstream.RcptAsync(recipient.Path.ToString(), Join(parameters), ct));
        return ValueTask.FromResult(new SmtpResponse(MapEnvelopeAsync(session, reply)));
    }

    public async ValueTask FlushAsync(SmtpSession session, CancellationToken ct)
    {
        var downstream = _downstream;
        if (downstream is not null && !downstream.IsBroken)
            await downstream.FlushAsync(ct).ConfigureAwait(false);
    }

    public System.Buffers.IBufferWriter<byte> OpenContent(SmtpSession session, SmtpTransaction tx)
    {
        var state = State(tx);
        state.Buffer = new MessageBuffer(_ctx.Config.Limits.MemoryThreshold, _ctx.Config.General.TempFolder);
        return state.Buffer;
    }

    public async ValueTask<SmtpReply> OnMessageAsync(SmtpSession session, SmtpTransaction tx, CancellationToken ct)
    {
        var state = State(tx);
        state.Finished = true;
        var buffer = state.Buffer!;
        var scanFinished = Task.CompletedTask;
        var entry = NewEntry(session, tx, buffer.Length);
        try
        {
            string scratch = Cli.ScanCommands.ScratchFolder(_ctx.Config);
            if (!ScanSpace.HasRoomToScan(scratch, buffer.Length))
            {
                Log.Warn($"session={entry.Session} scratch folder {scratch} has no room to scan {buffer.Length} bytes");
                await ResetDownstreamAsync().ConfigureAwait(false);
                return Finish(entry, state, MessageVerdict.None, "", MessageAction.Tempfail, "",
                    new SmtpReply(451, "4.3.1", "Insufficient system storage to scan the message, try again later"));
            }

            // A spilled message is scanned by descriptor; one in memory through the fmap callback.
            bool queued = buffer is { IsSpilled: true, SpillHandle: { } file }
                ? _ctx.Scanners.TryEnqueue(file, null, _ctx.Config.Scan.Timeout, out var ticket)
                : _ctx.Scanners.TryEnqueue(buffer, null, _ctx.Config.Scan.Timeout, out ticket);
            if (!queued)
            {
                await ResetDownstreamAsync().ConfigureAwait(false);
                return Finish(entry, state, MessageVerdict.None, "", MessageAction.Tempfail, "",
                    new SmtpReply(451, "4.3.2", "All virus scanners are busy, try again later"));
            }
            scanFinished = ticket.Finished;
            ScanResult result = await ticket.Result.ConfigureAwait(false);
            if (result.Outcome == ScanOutcome.Clean && ScanSpace.WasFullDuringScan(scratch))
                result = ScanResult.Error(0, "scratch folder full during the scan: attachments may not have been unpacked");

            switch (result.Outcome)
            {
                case ScanOutcome.Clean:
                    MessageStructure? structure = null;
                    if (!_ctx.Banned.IsEmpty)
                    {
                        structure = MessageStructure.Parse(buffer);
                        var banned = structure?.FindBanned(_ctx.Banned, _ctx.Config.Scan.MaxFileSize) ?? [];
                        if (banned.Count > 0)
                            return await HandleDetectionAsync(session, tx, entry, state, buffer, banned[0].Name, structure, ct).ConfigureAwait(false);
                    }
                    return await DeliverAsync(session, tx, entry, state, MessageVerdict.Clean, buffer, null, ct).ConfigureAwait(false);

                case ScanOutcome.Infected:
                    return await HandleDetectionAsync(session, tx, entry, state, buffer, result.VirusName ?? "unnamed", null, ct).ConfigureAwait(false);

                default:
                    Log.Warn($"session={entry.Session} scan failed: {result.ErrorText}");
                    if (_ctx.Config.Scan.OnError == ScanErrorAction.Pass)
                        return await DeliverAsync(session, tx, entry, state, MessageVerdict.Error, buffer, new Delivery("Unscanned", MessageAction.PassedUnscanned), ct).ConfigureAwait(false);
                    await ResetDownstreamAsync().ConfigureAwait(false);
                    return Finish(entry, state, MessageVerdict.Error, "", MessageAction.Tempfail, "",
                        new SmtpReply(451, "4.7.0", "Temporary failure while scanning the message, try again later"));
            }
        }
        finally
        {
            // A scan that timed out may still be reading the buffer: free it when the scanner lets go.
            state.Buffer = null;
            _ = scanFinished.ContinueWith(static (_, b) => ((MessageBuffer)b!).Dispose(), buffer,
                CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
        }
    }

    // How a message with a detection is delivered: the X-Virus-Status value, the log word, the
    // detection, and the Subject field to add when tagging a message that has none.
    private sealed record Delivery(string Status, string Action, string Virus = "", string? AddedSubject = null, string Quarantine = "");

    private async Task<SmtpReply> DeliverAsync(SmtpSession session, SmtpTransaction tx, MessageLogEntry entry,
        MessageState state, MessageVerdict verdict, IMessageContent content, Delivery? delivery, CancellationToken ct)
    {
        var downstream = _downstream;
        string action = delivery?.Action ?? MessageAction.Delivered;
        entry = entry with { Quarantine = delivery?.Quarantine ?? "" };
        var virus = delivery?.Virus ?? "";
        if (downstream is null || downstream.IsBroken)
            return Finish(entry, state, verdict, virus, MessageAction.Tempfail, "", DownstreamUnavailable);

        byte[] headers = MessageHeaders.Build(_ctx.Config.General.Hostname, session.HeloName,
            session.RemoteEndPoint as IPEndPoint, Protocol(session, tx), entry.Session,
            entry.Recipients, DateTimeOffset.Now, _ctx.ScannedHeaderValue, delivery?.Status, delivery?.AddedSubject);
        SmtpReply reply;
        try
        {
            reply = await downstream.SendMessageAsync(headers, content, ct).ConfigureAwait(false);
            _downstreamUsed = Stopwatch.GetTimestamp();
        }
        catch (DownstreamException e)
        {
            Log.Warn($"session={entry.Session} downstream failed during delivery: {e.Message}");
            await DropDownstreamAsync().ConfigureAwait(false);
            return Finish(entry, state, verdict, virus, MessageAction.Tempfail, e.Message, DownstreamUnavailable);
        }
        SmtpReply answer = MapFinal(reply);
        if (!reply.IsPositiveCompletion) action = reply.IsTransient ? MessageAction.Tempfail : MessageAction.Rejected;
        if (downstream.IsBroken) await DropDownstreamAsync().ConfigureAwait(false);
        return Finish(entry, state, verdict, virus, action, reply.ToString(), answer);
    }

    // A virus or a banned attachment: the configured action for its class, with the quarantine copy
    // on disk before the client hears anything, and notifications queued once the outcome is known.
    private async Task<SmtpReply> HandleDetectionAsync(SmtpSession session, SmtpTransaction tx, MessageLogEntry entry,
        MessageState state, MessageBuffer buffer, string name, MessageStructure? structure, CancellationToken ct)
    {
        var config = _ctx.Config;
        var detectionClass = Detection.Classify(name);
        var action = config.Scan.ActionFor(detectionClass);
        structure ??= MessageStructure.Parse(buffer);
        var now = DateTimeOffset.Now;
        var keepCopy = config.Quarantine.Copy || action == DetectionAction.Discard;
        var facts = new Interception
        {
            Virus = name,
            Sender = entry.From,
            Recipients = entry.Recipients,
            Subject = structure?.Subject ?? "",
            MessageId = structure?.MessageId ?? "",
            ClientAddress = entry.Client,
            Helo = entry.Helo,
            QuarantineId = keepCopy ? QuarantineStore.NewId(now) : "",
            Date = now,
            Hostname = config.General.Hostname,
            AutoGenerated = structure?.IsAutoGenerated(entry.From) ?? entry.From.Length == 0,
        };

        IMessageContent? stripped = null;
        if (action == DetectionAction.Strip)
        {
            stripped = await StripAsync(buffer, structure, detectionClass, facts with { Action = ActionWord(action) }, entry.Session).ConfigureAwait(false);
            if (stripped is null) action = DetectionAction.Reject;
        }

        facts = facts with { Action = ActionWord(action) };
        var quarantineId = "";
        if (keepCopy)
        {
            try
            {
                var kept = _ctx.Quarantine.Add(new QuarantineEntry
                {
                    Id = facts.QuarantineId,
                    Time = now,
                    Session = entry.Session,
                    ClientAddress = entry.Client,
                    Helo = entry.Helo,
                    Sender = entry.From,
                    Recipients = entry.Recipients,
                    Virus = name,
                    Action = facts.Action,
                    Subject = facts.Subject,
                    MessageId = facts.MessageId,
                }, buffer);
                quarantineId = kept.Id;
            }
            catch (IOException e)
            {
                Log.Error($"session={entry.Session} cannot write the quarantine copy to {_ctx.Quarantine.Folder}: {e.Message}");
                facts = facts with { QuarantineId = "" };
                if (action != DetectionAction.Reject)
                {
                    // Never accept an infected message without its copy.
                    await ResetDownstreamAsync().ConfigureAwait(false);
                    return Finish(entry, state, MessageVerdict.Infected, name, MessageAction.Tempfail, "",
                        new SmtpReply(451, "4.3.0", "Cannot keep a copy of this message, try again later"));
                }
            }
        }

        entry = entry with { Quarantine = quarantineId };
        SmtpReply reply;
        switch (action)
        {
            case DetectionAction.Discard:
                await ResetDownstreamAsync().ConfigureAwait(false);
                reply = Finish(entry, state, MessageVerdict.Infected, name, MessageAction.Discarded, "", new SmtpReply(250, "2.0.0", "Ok"));
                break;
            case DetectionAction.Strip:
                reply = await DeliverAsync(session, tx, entry, state, MessageVerdict.Infected, stripped!,
                    new Delivery($"Stripped ({name})", MessageAction.Stripped, name, null, quarantineId), ct).ConfigureAwait(false);
                break;
            case DetectionAction.Tag:
                var prefix = config.Scan.TagSubjectPrefix;
                var tagged = MessageRewriter.PrefixSubject(buffer, prefix);
                reply = await DeliverAsync(session, tx, entry, state, MessageVerdict.Infected, tagged ?? (IMessageContent)buffer,
                    new Delivery($"Infected ({name})", MessageAction.Tagged, name, tagged is null ? prefix.TrimEnd() : null, quarantineId), ct).ConfigureAwait(false);
                break;
            default:
                await ResetDownstreamAsync().ConfigureAwait(false);
                var what = detectionClass == DetectionClass.Banned ? "banned attachment" : "virus found";
                reply = Finish(entry, state, MessageVerdict.Infected, name, MessageAction.Rejected, "",
                    new SmtpReply(554, "5.7.1", $"Message rejected: {what}: {name}"));
                break;
        }

        // Strip and tag only tell anyone when the downstream took the message.
        if (action is DetectionAction.Reject or DetectionAction.Discard || reply.IsPositiveCompletion)
            QueueNotifications(facts with { QuarantineId = quarantineId }, action, entry.Session);
        return reply;
    }

    // The message with every infected or banned part replaced by the attachment text, or null when
    // that is not possible (no single part holds the detection, it is in the message text, the MIME
    // tree is broken) or not enough (the result still does not scan clean).
    private async Task<IMessageContent?> StripAsync(MessageBuffer buffer, MessageStructure? structure, DetectionClass detectionClass,
        Interception facts, string session)
    {
        if (structure is null || _ctx.Templates is null)
        {
            Log.Info($"session={session} strip not possible (the MIME structure cannot be parsed); rejecting instead");
            return null;
        }

        var parts = detectionClass == DetectionClass.Banned ? [] : structure.FindInfected(ScanPart, _ctx.Config.Scan.MaxFileSize);
        parts.AddRange(structure.FindBanned(_ctx.Banned, _ctx.Config.Scan.MaxFileSize));
        if (parts.Count == 0 || parts.Any(p => !p.Leaf.Removable))
        {
            Log.Info($"session={session} strip not possible ({(parts.Count == 0 ? "no single part holds the detection" : "the detection is in the message text")}); rejecting instead");
            return null;
        }

        var stripped = MessageRewriter.Strip(buffer, parts, _ctx.Templates.Attachment, facts);
        if (!_ctx.Scanners.TryEnqueue(stripped, null, _ctx.Config.Scan.Timeout, out var ticket))
            return null;
        var rescan = await ticket.Result.ConfigureAwait(false);
        // The spliced message reads the buffer: a scan that timed out must let go of it first.
        await ticket.Finished.ConfigureAwait(false);
        if (rescan.Outcome != ScanOutcome.Clean)
        {
            Log.Info($"session={session} strip not enough (after removing {parts.Count} part(s): {rescan}); rejecting instead");
            return null;
        }

        return stripped;
    }

    private ScanResult ScanPart(ReadOnlyMemory<byte> part)
    {
        // A reload may retire the engine between reading Current and scanning: take the new one.
        for (var attempt = 0; ; attempt++)
        {
            try
            {
                return _ctx.Engines.Current.Scan(part.Span);
            }
            catch (ObjectDisposedException) when (attempt < 3)
            {
            }
        }
    }

    private void QueueNotifications(Interception facts, DetectionAction action, string session)
    {
        if (_ctx.Notifier is null || _ctx.Templates is null) return;
        try
        {
            foreach (var notification in NotificationBuilder.Build(_ctx.Templates, _ctx.Config.Notification, _ctx.Config.General.Hostname, facts, action))
                _ctx.Notifier.Queue(notification);
        }
        catch (Exception e) when (e is FormatException or ArgumentException or InvalidOperationException)
        {
            Log.Warn($"session={session} cannot build a notification: {e.Message}");
        }
    }

    private static string ActionWord(DetectionAction action) => action switch
    {
        DetectionAction.Discard => MessageAction.Discarded,
        DetectionAction.Strip => MessageAction.Stripped,
        DetectionAction.Tag => MessageAction.Tagged,
        _ => MessageAction.Rejected,
    };

    private MessageLogEntry NewEntry(SmtpSession session, SmtpTransaction tx, long size) => new()
    {
        Session = $"{session.Id}.{++_messages}",
        Client = (session.RemoteEndPoint as IPEndPoint)?.Address.ToString() ?? "",
        Helo = session.HeloName ?? "",
        From = tx.ReversePath.Mailbox,
        Recipients = tx.Recipients.Select(r => r.Path.Mailbox).ToArray(),
        Size = size,
    };

    private SmtpReply Finish(MessageLogEntry entry, MessageState state, MessageVerdict verdict, string virus,
        string action, string downstream, SmtpReply reply)
    {
        _ctx.Log.Write(entry with
        {
            Verdict = verdict,
            Virus = virus,
            Action = action,
            Downstream = downstream,
            Milliseconds = (long)Stopwatch.GetElapsedTime(state.Started).TotalMilliseconds,
        });
        return reply;
    }

    public async ValueTask OnTransactionAbortedAsync(SmtpSession session, SmtpTransaction tx, CancellationToken ct)
    {
        if (tx.HandlerState is not MessageState state) return;
        if (!state.Finished && state.Buffer is { } buffer)
        {
            // Content arrived (in part or whole) but never reached a verdict: one log line for it too.
            var refusal = tx.ContentRefusal;
            _ctx.Log.Write(NewEntry(session, tx, buffer.Length) with
            {
                Action = refusal is null ? MessageAction.Aborted : MessageAction.Rejected,
                Downstream = refusal is null ? "" : "refused by gateway: " + refusal,
                Milliseconds = (long)Stopwatch.GetElapsedTime(state.Started).TotalMilliseconds,
            });
            buffer.Dispose();
            state.Buffer = null;
        }
        if (state.MailSent) await ResetDownstreamAsync().ConfigureAwait(false);
    }

    public async ValueTask OnCloseAsync(SmtpSession session) => await DropDownstreamAsync().ConfigureAwait(false);

    private async Task<DownstreamClient> ConnectAsync(CancellationToken ct)
    {
        if (_downstream is { IsBroken: false } existing && Stopwatch.GetElapsedTime(_downstreamUsed) < DownstreamReuseLimit)
        {
            _downstreamUsed = Stopwatch.GetTimestamp();
            return existing;
        }
        await DropDownstreamAsync().ConfigureAwait(false);
        _downstreamUsed = Stopwatch.GetTimestamp();
        _downstream = await DownstreamClient.ConnectAsync(_ctx.DownstreamOptions, ct).ConfigureAwait(false);
        _ctx.DownstreamCapabilities = _downstream.Capabilities;
        return _downstream;
    }

    // RSET keeps the downstream connection in step for the next transaction; if it fails, drop it.
    private async Task ResetDownstreamAsync()
    {
        var downstream = _downstream;
        if (downstream is null || downstream.IsBroken) return;
        try
        {
            var reply = await downstream.RsetAsync(CancellationToken.None).ConfigureAwait(false);
            _downstreamUsed = Stopwatch.GetTimestamp();
            if (!reply.IsPositiveCompletion) await DropDownstreamAsync().ConfigureAwait(false);
        }
        catch (DownstreamException)
        {
            await DropDownstreamAsync().ConfigureAwait(false);
        }
    }

    private async Task DropDownstreamAsync()
    {
        var downstream = _downstream;
        _downstream = null;
        if (downstream is null) return;
        try { await downstream.DisposeAsync().ConfigureAwait(false); }
        catch (Exception e) when (e is DownstreamException or IOException or ObjectDisposedException) { }
    }

    private static Task<SmtpReply> Send(Func<Task<SmtpReply>> send)
    {
        try { return send(); }
        catch (DownstreamException e) { return Task.FromException<SmtpReply>(e); }
    }

    private async Task<SmtpReply> MapEnvelopeAsync(SmtpSession session, Task<SmtpReply> pending)
    {
        try
        {
            var reply = await pending.ConfigureAwait(false);
            // Only the downstream's 2xx, 4xx and 5xx have a meaning here (Postfix smtpd_proxy does the same).
            return reply.Code is >= 200 and < 300 or >= 400 ? reply : UnexpectedReply(reply);
        }
        catch (DownstreamException e)
        {
            Log.Warn($"session={session.Id} downstream failed: {e.Message}");
            return DownstreamUnavailable;
        }
    }

    private static SmtpReply MapFinal(SmtpReply reply) =>
        reply.Code is >= 200 and < 300 or >= 400 ? reply : UnexpectedReply(reply);

    private static SmtpReply UnexpectedReply(SmtpReply reply) =>
        new(451, "4.3.0", $"Unexpected reply from the mail server behind this gateway ({reply.Code})");

    private static readonly SmtpReply DownstreamUnavailable =
        new(451, "4.4.1", "Mail server behind this gateway is unavailable, try again later");

    private static MessageState State(SmtpTransaction tx) =>
        tx.HandlerState as MessageState ?? throw new InvalidOperationException("transaction without gateway state");

    private static string? Join(IEnumerable<string> parameters)
    {
        var text = string.Join(' ', parameters);
        return text.Length == 0 ? null : text;
    }

    // RFC 3848 protocol types for the Received header.
    private static string Protocol(SmtpSession session, SmtpTransaction tx) =>
        tx.SmtpUtf8 ? "UTF8SMTP" : session.Extended ? "ESMTP" : "SMTP";
}
