// The gateway's policy for one client connection: the seam between the SMTP session and the
// product. The downstream connection is opened at the first MAIL and reused; MAIL and RCPT
// go to the downstream (pipelined when it offers PIPELINING) and its replies go back to the
// client. The content is read once into a MessageBuffer, scanned on the scanner pool, and
// forwarded with trace headers only when clean; the client hears the downstream's own final
// reply, so nothing is acknowledged that the downstream has not accepted.
// Relay rights are decided here before anything reaches the downstream (Access/RelayPolicy);
// STARTTLS and AUTH are offered as [tls] and [auth] say, and with XFORWARD the downstream
// learns who the real client is.
using System.Diagnostics;
using System.Net;
using System.Net.Security;
using System.Text;
using Portcullis.Appliance.Access;
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
    private ClientAccess _access = new(null, false, null);

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

    public ValueTask<SmtpReply?> OnConnectAsync(SmtpSession session, CancellationToken ct)
    {
        var refusal = _ctx.Relay.OnConnect(ClientAddress(session), out _access);
        if (refusal is not null) Log.Info($"session={session.Id} client={ClientAddress(session)} refused by rule {_access.Rule}");
        return ValueTask.FromResult(refusal);
    }

    private static IPAddress? ClientAddress(SmtpSession session) =>
        (session.RemoteEndPoint as IPEndPoint)?.Address is { } a && a.IsIPv4MappedToIPv6 ? a.MapToIPv4() : (session.RemoteEndPoint as IPEndPoint)?.Address;

    public SslServerAuthenticationOptions? GetTlsOptions(SmtpSession session) => _ctx.Tls?.ServerOptions;

    public SaslOffer GetAuthOffer(SmtpSession session) =>
        _ctx.Config.Auth.Enabled ? new SaslOffer(["PLAIN", "LOGIN"], !_ctx.Config.Auth.AllowPlaintext) : SaslOffer.None;

    public ValueTask<SmtpReply?> OnAuthStartAsync(SmtpSession session, string mechanism, CancellationToken ct) =>
        ValueTask.FromResult<SmtpReply?>(_ctx.AuthThrottle.IsBlocked(ClientAddress(session))
            ? new SmtpReply(454, "4.7.0", "Too many failed authentication attempts, try again later")
            : null);

    public async ValueTask<SmtpReply> OnAuthenticateAsync(SmtpSession session, SaslCredentials credentials, CancellationToken ct)
    {
        var client = ClientAddress(session);
        bool? ok;
        if (_ctx.Passwords is { } passwords)
        {
            var file = passwords.Current;
            // Hashing is deliberately slow (bcrypt): keep it off the I/O threads.
            ok = await Task.Run(() => file.Verify(credentials.UserName, credentials.Password), ct).ConfigureAwait(false);
        }
        else
        {
            ok = await DownstreamAuthenticateAsync(session, credentials, ct).ConfigureAwait(false);
            if (ok is null) return new SmtpReply(454, "4.7.0", "Temporary authentication failure, try again later");
        }
        if (ok == true)
        {
            Log.Info($"session={session.Id} client={client} authenticated user={LogValue(credentials.UserName)} mechanism={credentials.Mechanism}");
            return new SmtpReply(235, "2.7.0", "Authentication successful");
        }
        int failures = _ctx.AuthThrottle.RecordFailure(client);
        Log.Warn($"session={session.Id} client={client} authentication failed user={LogValue(credentials.UserName)} mechanism={credentials.Mechanism} failures={failures}");
        if (_ctx.Config.Auth.FailureDelay > TimeSpan.Zero)
            await Task.Delay(_ctx.Config.Auth.FailureDelay, ct).ConfigureAwait(false);
        return failures >= _ctx.Config.Auth.MaxFailures
            ? new SmtpReply(421, "4.7.0", $"{_ctx.Config.General.Hostname} Too many failed authentication attempts, closing connection")
            : new SmtpReply(535, "5.7.8", "Authentication credentials invalid");
    }

    // [auth] downstream = yes: the credentials go to the downstream over this session's own
    // connection (AUTH PLAIN, or LOGIN when that is all it offers); its 235 or 535 decides.
    // null: no verdict (downstream unavailable, no AUTH offered, a 4xx).
    private async Task<bool?> DownstreamAuthenticateAsync(SmtpSession session, SaslCredentials credentials, CancellationToken ct)
    {
        DownstreamClient downstream;
        try
        {
            downstream = await ConnectAsync(ct).ConfigureAwait(false);
            var mechanisms = downstream.Capabilities.AuthMechanisms;
            SmtpReply reply;
            if (mechanisms.Contains("PLAIN"))
            {
                var plain = Convert.ToBase64String(Encoding.UTF8.GetBytes($"{credentials.AuthorizationId}\0{credentials.UserName}\0{credentials.Password}"));
                reply = await downstream.SendCommandAsync("AUTH PLAIN " + plain, ct).ConfigureAwait(false);
            }
            else if (mechanisms.Contains("LOGIN"))
            {
                reply = await downstream.SendCommandAsync("AUTH LOGIN", ct).ConfigureAwait(false);
                if (reply.Code == 334) reply = await SendSaslLineAsync(downstream, credentials.UserName, ct).ConfigureAwait(false);
                if (reply.Code == 334) reply = await SendSaslLineAsync(downstream, credentials.Password, ct).ConfigureAwait(false);
            }
            else
            {
                Log.Warn($"session={session.Id} [auth] downstream = yes but the downstream offers neither AUTH PLAIN nor LOGIN");
                return null;
            }
            if (reply.Code == 235) return true;
            if (reply.IsPermanent) return false;
            Log.Warn($"session={session.Id} downstream AUTH answered {reply}");
            if (reply.Code == 334) await DropDownstreamAsync().ConfigureAwait(false); // out of step: start afresh
            return null;
        }
        catch (DownstreamException e)
        {
            Log.Warn($"session={session.Id} downstream unavailable for AUTH: {e.Message}");
            await DropDownstreamAsync().ConfigureAwait(false);
            return null;
        }
    }

    // A user name is the client's own text: quoted and escaped like a message log value, so that a
    // CR or LF in it cannot start a line of its own in the journal.
    private static string LogValue(string value)
    {
        var text = new StringBuilder();
        MessageLog.AppendValue(text, value);
        return text.ToString();
    }

    // A SASL response line is not a command the client knows to flush: push it out explicitly.
    private static async Task<SmtpReply> SendSaslLineAsync(DownstreamClient downstream, string text, CancellationToken ct)
    {
        var reply = downstream.SendCommandAsync(Convert.ToBase64String(Encoding.UTF8.GetBytes(text)), ct);
        await downstream.FlushAsync(ct).ConfigureAwait(false);
        return await reply.ConfigureAwait(false);
    }

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
            _ctx.Metrics.DownstreamError();
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
        SendXForward(session, downstream, ct);
        Task<SmtpReply> reply = Send(() => downstream.MailAsync(tx.ReversePath.ToString(), Join(parameters), ct));
        return new SmtpResponse(MapEnvelopeAsync(session, reply));
    }

    public ValueTask<SmtpResponse> OnRcptAsync(SmtpSession session, SmtpTransaction tx, SmtpRecipient recipient, CancellationToken ct)
    {
        SmtpReply? refusal = _ctx.Relay.OnRecipient(_access, session.AuthenticatedUser, recipient.Path, out _);
        if (refusal is not null)
        {
            Log.Info($"session={session.Id} client={ClientAddress(session)} rcpt={recipient.Path.Mailbox} refused: {refusal}");
            return ValueTask.FromResult<SmtpResponse>(refusal);
        }
        var downstream = _downstream;
        if (downstream is null || downstream.IsBroken) return ValueTask.FromResult<SmtpResponse>(DownstreamUnavailable);

        // NOTIFY and ORCPT only reach here when DSN was offered, i.e. the downstream has it.
        var parameters = recipient.Parameters.Select(p => p.Value is null ? p.Key : p.Key + "=" + p.Value);
        Task<SmtpReply> reply = Send(() => downstream.RcptAsync(recipient.Path.ToString(), Join(parameters), ct));
        return ValueTask.FromResult(new SmtpResponse(MapEnvelopeAsync(session, reply)));
    }

    // Postfix's XFORWARD (XFORWARD_README): the downstream logs and decides on the real client.
    // Sent before every MAIL (Postfix forgets the attributes at the end of a transaction), pipelined
    // with it; a refusal only costs the attributes, never the message.
    private void SendXForward(SmtpSession session, DownstreamClient downstream, CancellationToken ct)
    {
        if (downstream.Capabilities.XForward.Count == 0) return;
        var client = session.RemoteEndPoint as IPEndPoint;
        var address = ClientAddress(session);
        List<KeyValuePair<string, string>> attributes =
        [
            new("NAME", "[UNAVAILABLE]"),   // no reverse DNS lookups here
            new("ADDR", address is null ? "[UNAVAILABLE]" : address.AddressFamily == System.Net.Sockets.AddressFamily.InterNetworkV6 ? "IPV6:" + address : address.ToString()),
            new("PORT", client is null ? "[UNAVAILABLE]" : client.Port.ToString(System.Globalization.CultureInfo.InvariantCulture)),
            new("PROTO", session.Extended ? "ESMTP" : "SMTP"),
            new("HELO", session.HeloName ?? "[UNAVAILABLE]"),
            new("IDENT", session.Id),
            new("SOURCE", address is not null && IPAddress.IsLoopback(address) ? "LOCAL" : "REMOTE"),
        ];
        Task<SmtpReply?> sent;
        try { sent = downstream.XForwardAsync(attributes, ct); }
        catch (DownstreamException) { return; }   // the MAIL that follows reports the broken connection
        _ = sent.ContinueWith(static (t, id) =>
        {
            if (t.IsCompletedSuccessfully && t.Result is { IsPositiveCompletion: false } refused)
                Log.Warn($"session={id} downstream refused XFORWARD: {refused}");
        }, session.Id, CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
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
            // The attachment policy runs inside the same libclamav pass (AttachmentInspector).
            var policy = AttachmentInspector.For(_ctx.Banned, _ctx.Config.Scan);
            bool queued = buffer is { IsSpilled: true, SpillHandle: { } file }
                ? _ctx.Scanners.TryEnqueue(file, null, _ctx.Config.Scan.Timeout, policy, out var ticket)
                : _ctx.Scanners.TryEnqueue(buffer, null, _ctx.Config.Scan.Timeout, policy, out ticket);
            if (!queued)
            {
                await ResetDownstreamAsync().ConfigureAwait(false);
                return Finish(entry, state, MessageVerdict.None, "", MessageAction.Tempfail, "",
                    new SmtpReply(451, "4.3.2", "All virus scanners are busy, try again later"));
            }
            scanFinished = ticket.Finished;
            long scanStarted = Stopwatch.GetTimestamp();
            ScanResult result = await ticket.Result.ConfigureAwait(false);
            if (result.Outcome == ScanOutcome.Clean && ScanSpace.WasFullDuringScan(scratch))
                result = ScanResult.Error(0, "scratch folder full during the scan: attachments may not have been unpacked");
            _ctx.Metrics.ScanSeconds.Observe(Stopwatch.GetElapsedTime(scanStarted).TotalSeconds);

            switch (result.Outcome)
            {
                case ScanOutcome.Clean:
                    if (result.SkippedLimit is { } limit)
                        Log.Warn($"session={entry.Session} passed partly scanned ({limit}; alert_exceeds_max = no)");
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
            entry.Recipients, DateTimeOffset.Now, _ctx.ScannedHeaderValue, delivery?.Status, delivery?.AddedSubject,
            session.AuthenticatedUser);
        SmtpReply reply;
        try
        {
            reply = await downstream.SendMessageAsync(headers, content, ct).ConfigureAwait(false);
            _downstreamUsed = Stopwatch.GetTimestamp();
        }
        catch (DownstreamException e)
        {
            Log.Warn($"session={entry.Session} downstream failed during delivery: {e.Message}");
            _ctx.Metrics.DownstreamError();
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
        // The whole MIME tree only for strip; the facts come from the top header block alone.
        if (action == DetectionAction.Strip) structure ??= MessageStructure.Parse(buffer);
        var summary = structure is not null ? MessageSummary.Of(structure) : MessageSummary.Read(buffer);
        var now = DateTimeOffset.Now;
        var keepCopy = config.Quarantine.Copy || action == DetectionAction.Discard;
        var facts = new Interception
        {
            Virus = name,
            Sender = entry.From,
            Recipients = entry.Recipients,
            Subject = summary.Subject,
            MessageId = summary.MessageId,
            ClientAddress = entry.Client,
            Helo = entry.Helo,
            QuarantineId = keepCopy ? QuarantineStore.NewId(now) : "",
            Date = now,
            Hostname = config.General.Hostname,
            AutoGenerated = summary.IsAutoGenerated(entry.From),
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
        Client = ClientAddress(session)?.ToString() ?? "",
        User = session.AuthenticatedUser ?? "",
        Helo = session.HeloName ?? "",
        From = tx.ReversePath.Mailbox,
        Recipients = tx.Recipients.Select(r => r.Path.Mailbox).ToArray(),
        Size = size,
    };

    private SmtpReply Finish(MessageLogEntry entry, MessageState state, MessageVerdict verdict, string virus,
        string action, string downstream, SmtpReply reply)
    {
        var final = entry with
        {
            Verdict = verdict,
            Virus = virus,
            Action = action,
            Downstream = downstream,
            Milliseconds = (long)Stopwatch.GetElapsedTime(state.Started).TotalMilliseconds,
        };
        _ctx.Log.Write(final);
        _ctx.Metrics.Message(final);
        return reply;
    }

    public async ValueTask OnTransactionAbortedAsync(SmtpSession session, SmtpTransaction tx, CancellationToken ct)
    {
        if (tx.HandlerState is not MessageState state) return;
        if (!state.Finished && state.Buffer is { } buffer)
        {
            // Content arrived (in part or whole) but never reached a verdict: one log line for it too.
            var refusal = tx.ContentRefusal;
            var entry = NewEntry(session, tx, buffer.Length) with
            {
                Action = refusal is null ? MessageAction.Aborted : MessageAction.Rejected,
                Downstream = refusal is null ? "" : "refused by gateway: " + refusal,
                Milliseconds = (long)Stopwatch.GetElapsedTime(state.Started).TotalMilliseconds,
            };
            _ctx.Log.Write(entry);
            _ctx.Metrics.Message(entry);
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
            return MapFinal(await pending.ConfigureAwait(false));
        }
        catch (DownstreamException e)
        {
            Log.Warn($"session={session.Id} downstream failed: {e.Message}");
            _ctx.Metrics.DownstreamError();
            return DownstreamUnavailable;
        }
    }

    // Only the downstream's 2xx, 4xx and 5xx have a meaning for the client (Postfix smtpd_proxy does the same).
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

    // RFC 3848 protocol types for the Received header: ESMTP, then S for TLS and A for AUTH.
    private static string Protocol(SmtpSession session, SmtpTransaction tx)
    {
        string basis = tx.SmtpUtf8 ? "UTF8SMTP" : session.Extended ? "ESMTP" : "SMTP";
        if (basis == "SMTP") return basis;
        return basis + (session.IsSecure ? "S" : "") + (session.AuthenticatedUser is not null ? "A" : "");
    }
}
