// Command dispatch for the server session (RFC 5321 §4.1, §4.3.2; PIPELINING RFC 2920;
// STARTTLS RFC 3207). A static table drives it, as OpenSMTPD's commands[] and Postfix's
// smtpd_cmd_table[] do: for each verb, the states it is allowed in (and the 503 otherwise),
// whether it takes arguments, whether it is allowed before TLS when TLS is required, whether it
// ends a pipelining group (the replies still pending are settled before it runs), whether the
// stream after its line belongs to it (content, SASL responses), and its handler.
// Checks run in that order: settle the group, TLS, arguments, state; the handler does the rest.
// Replies go out in command order (RFC 2920 §3.1): MAIL and RCPT may leave theirs pending
// (pipelined to the downstream), and a reply known now waits behind them.
using System.Buffers;
using System.IO.Pipelines;
using Portcullis.SmtpCore.Protocol;
using System.Runtime.CompilerServices;

namespace Portcullis.SmtpCore.Server;

[Flags]
internal enum SessionStates
{
    BeforeHelo = 1,      // no HELO/EHLO yet (or since STARTTLS)
    Greeted = 2,         // no transaction open
    InTransaction = 4,   // after MAIL
    Any = BeforeHelo | Greeted | InTransaction,
}

internal sealed class SmtpCommandSpec
{
    public required SmtpVerb Verb { get; init; }
    public SessionStates AllowedIn { get; init; } = SessionStates.Any;
    public SmtpReply? OutOfSequence { get; init; }       // the refusal outside AllowedIn
    public SmtpReply? BeforeHelo { get; init; }          // ... before HELO/EHLO, when it differs
    public bool NoArguments { get; init; }
    public bool BeforeTls { get; init; }                 // RFC 3207 §4
    public bool EndsGroup { get; init; } = true;         // RFC 2920 §3.1
    public bool TakesStream { get; init; }               // what follows the line is this command's
    public required Func<SmtpSession, SmtpCommand, ValueTask> Run { get; init; }
}

public sealed partial class SmtpSession
{
    private static readonly SmtpCommandSpec[] Commands = BuildCommandTable();

    private static SmtpCommandSpec[] BuildCommandTable()
    {
        SmtpCommandSpec[] specs =
        [
            new() { Verb = SmtpVerb.Unknown, Run = static (s, _) => s.Refuse(Replies.Unrecognized) },
            new() { Verb = SmtpVerb.Helo, BeforeTls = true, Run = static (s, c) => s.HeloAsync(c) },
            new() { Verb = SmtpVerb.Ehlo, BeforeTls = true, Run = static (s, c) => s.HeloAsync(c) },
            new() { Verb = SmtpVerb.Mail, AllowedIn = SessionStates.Greeted, BeforeHelo = Replies.HeloFirst, OutOfSequence = Replies.NestedMail,
                    EndsGroup = false, Run = static (s, c) => s.MailAsync(c) },
            new() { Verb = SmtpVerb.Rcpt, AllowedIn = SessionStates.InTransaction, OutOfSequence = Replies.MailBeforeRcpt,
                    EndsGroup = false, Run = static (s, c) => s.RcptAsync(c) },
            new() { Verb = SmtpVerb.Data, AllowedIn = SessionStates.InTransaction, OutOfSequence = Replies.MailBeforeData,
                    NoArguments = true, TakesStream = true, Run = static (s, c) => s.DataAsync(c) },
            // BDAT's chunk is read even when the command is refused (RFC 3030 §2): it checks for itself.
            // Allowed before TLS for that reason only: no MAIL can have been accepted before it.
            new() { Verb = SmtpVerb.Bdat, BeforeTls = true, TakesStream = true, Run = static (s, c) => s.BdatAsync(c) },
            new() { Verb = SmtpVerb.Rset, NoArguments = true, Run = static (s, _) => s.RsetAsync() },
            new() { Verb = SmtpVerb.Noop, BeforeTls = true, Run = static (s, _) => s.Answer(Replies.Ok) },
            new() { Verb = SmtpVerb.Quit, BeforeTls = true, Run = static (s, _) => s.QuitAsync() },
            new() { Verb = SmtpVerb.Vrfy, Run = static (s, c) => s.Vrfy(c) },
            new() { Verb = SmtpVerb.Expn, Run = static (s, _) => s.Refuse(ExpnUnavailable) },
            new() { Verb = SmtpVerb.Help, Run = static (s, _) => s.Answer(HelpText) },
            new() { Verb = SmtpVerb.StartTls, BeforeTls = true, Run = static (s, c) => s.StartTlsCommand(c) },
            new() { Verb = SmtpVerb.Auth, TakesStream = true, Run = static (s, c) => s.AuthAsync(c) },
        ];
        var table = new SmtpCommandSpec[Enum.GetValues<SmtpVerb>().Length];
        foreach (var spec in specs) table[(int)spec.Verb] = spec;
        if (Array.IndexOf(table, null) is int missing and >= 0)
            throw new InvalidOperationException($"no command table entry for {(SmtpVerb)missing}");
        return table;
    }

    private static readonly SmtpReply ExpnUnavailable = new(502, "5.5.1", "EXPN not available");
    private static readonly SmtpReply HelpText = new(214, "2.0.0", "Commands: HELO EHLO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP");
    private static readonly SmtpReply VrfySyntax = new(501, "5.5.4", "Syntax: VRFY address");
    private static readonly SmtpReply CannotVrfy = new(252, "2.5.0", "Cannot VRFY user, but will accept message and attempt delivery");
    private static readonly SmtpReply TlsActive = new(503, "5.5.1", "TLS already active");
    private static readonly SmtpReply StartTlsUnavailable = new(502, "5.5.1", "STARTTLS not available");
    private static readonly SmtpReply ReadyForTls = new(220, "2.0.0", "Ready to start TLS");

    private enum PendingKind { Known, Mail, Rcpt }

    // A reply in command order: known now, or the handler's still on its way for MAIL or RCPT.
    private readonly record struct PendingReply(PendingKind Kind, SmtpResponse Response, SmtpTransaction? Transaction, SmtpRecipient? Recipient);

    // One list per session: the first _resolving entries are being written out; anything found
    // meanwhile goes straight out, so only the entries after them count as pending.
    private readonly List<PendingReply> _pending = [];
    private int _resolving;

    private int PendingCount => _pending.Count - _resolving;

    private SessionStates State =>
        HeloName is null ? SessionStates.BeforeHelo : Transaction is null ? SessionStates.Greeted : SessionStates.InTransaction;

    // No transaction open: a graceful stop may close the session between two commands.
    private bool Idle => Transaction is null && _bdat is null && PendingCount == 0;

    // Pooled builder: the loop's box is large and one per connection; the next connection reuses it.
    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder))]
    private async ValueTask CommandLoopAsync()
    {
        // The command timeout bounds a whole command line, not each read: a client trickling a
        // byte at a time (slowloris) cannot hold the session open past it.
        long commandStarted = 0;
        while (!_closing)
        {
            await ResolvePendingAsync().ConfigureAwait(false);
            await _output.FlushAsync(_shutdown).ConfigureAwait(false);
            if (_closing) return;
            if (_drain.IsCancellationRequested && Idle)
            {
                await ShuttingDownAsync().ConfigureAwait(false);
                return;
            }

            if (commandStarted == 0) commandStarted = System.Diagnostics.Stopwatch.GetTimestamp();
            var left = _options.CommandTimeout - System.Diagnostics.Stopwatch.GetElapsedTime(commandStarted);
            var read = await ReadAsync(left > TimeSpan.Zero ? left : TimeSpan.FromTicks(1), "command", waitsForCommand: true).ConfigureAwait(false);
            if (read is null) return;
            ReadResult result = read.Value;

            ReadOnlySequence<byte> buffer = result.Buffer;
            SequencePosition position = buffer.Start;
            bool handedOff = false;
            while (!_closing)
            {
                var status = Parse(buffer, ref position, out var command);
                if (status == ParseStatus.Incomplete) break;
                if (status == ParseStatus.LineTooLong)
                {
                    await ResolvePendingAsync().ConfigureAwait(false);
                    if (_closing) break;
                    Write(Replies.LineTooLong);
                    _closing = true;
                    break;
                }
                if (status == ParseStatus.BareLineFeed)
                {
                    await ResolvePendingAsync().ConfigureAwait(false);
                    if (_closing) break;
                    ClientError(Replies.BareLineFeed);
                    continue;
                }
                var spec = Commands[(int)command.Verb];
                if (spec.TakesStream)
                {
                    // The content (or the SASL responses) follow in the same stream: give the rest of the buffer back first.
                    _input.AdvanceTo(position);
                    handedOff = true;
                    await DispatchAsync(spec, command).ConfigureAwait(false);
                    break;
                }
                await DispatchAsync(spec, command).ConfigureAwait(false);
                if (_startTls) break;
            }
            if (_startTls)
            {
                // RFC 3207 §4 / CVE-2011-0411: nothing the client sent before the handshake may be
                // read as a command afterwards. Drop the rest of this read, and the handshake reads
                // the raw stream, where only what came after our 220 can be.
                _input.AdvanceTo(buffer.End);
                _startTls = false;
                if (!await StartTlsAsync().ConfigureAwait(false)) return;
                continue;
            }
            if (!handedOff)
            {
                // Only a partial line keeps the clock running; it started when that line did.
                if (buffer.Slice(position).IsEmpty) commandStarted = 0;
                else if (!position.Equals(buffer.Start)) commandStarted = System.Diagnostics.Stopwatch.GetTimestamp();
                _input.AdvanceTo(position, buffer.End);
                if (result.IsCompleted && !_closing) return; // client closed
            }
            else
            {
                commandStarted = 0;
            }
        }
        await ResolvePendingAsync().ConfigureAwait(false);
        await _output.FlushAsync(_shutdown).ConfigureAwait(false);
    }

    private ParseStatus Parse(in ReadOnlySequence<byte> buffer, ref SequencePosition position, out SmtpCommand command)
    {
        var reader = new SequenceReader<byte>(buffer.Slice(position));
        var status = SmtpCommandParser.TryParse(ref reader, _options.MaxLineLength, out command);
        position = reader.Position;
        return status;
    }

    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder))]
    private async ValueTask DispatchAsync(SmtpCommandSpec spec, SmtpCommand command)
    {
        if (spec.EndsGroup) await ResolvePendingAsync().ConfigureAwait(false);
        if (_closing) return; // the pending replies ran into the error limit
        SmtpReply? refusal =
            _options.RequireTls && !IsSecure && !spec.BeforeTls ? Replies.TlsFirst
            : spec.NoArguments && command.Argument.Length > 0 ? Replies.SyntaxNoArgs
            : (spec.AllowedIn & State) == 0 ? (State == SessionStates.BeforeHelo ? spec.BeforeHelo : null) ?? spec.OutOfSequence
            : null;
        if (refusal is not null) { ClientError(refusal); return; }
        // Content and SASL read the client's stream: their failures there end the session, and
        // they answer their handler's failures themselves.
        if (spec.TakesStream) { await spec.Run(this, command).ConfigureAwait(false); return; }
        try
        {
            await spec.Run(this, command).ConfigureAwait(false);
        }
        catch (Exception e) when (HandlerFailed(e))
        {
            Report(Transaction, command.VerbText.ToUpperInvariant(), e);
            await AbortTransactionAsync().ConfigureAwait(false);
            if (!Queue(Replies.LocalError)) Write(Replies.LocalError);
        }
    }

    private ValueTask Answer(SmtpReply reply)
    {
        Write(reply);
        return ValueTask.CompletedTask;
    }

    private ValueTask Refuse(SmtpReply reply)
    {
        ClientError(reply);
        return ValueTask.CompletedTask;
    }

    private async ValueTask RsetAsync()
    {
        await AbortTransactionAsync().ConfigureAwait(false);
        Write(Replies.Ok);
    }

    private ValueTask QuitAsync()
    {
        Write(_options.Replies.Closing);
        _closing = true;
        return ValueTask.CompletedTask;
    }

    private ValueTask Vrfy(SmtpCommand command)
    {
        if (command.Argument.Length == 0) ClientError(VrfySyntax);
        else Write(CannotVrfy);
        return ValueTask.CompletedTask;
    }

    private ValueTask StartTlsCommand(SmtpCommand command)
    {
        if (IsSecure || _handler.GetTlsOptions(this) is null)
            ClientError(IsSecure ? TlsActive : StartTlsUnavailable);
        else if (command.Argument.Length > 0)
            ClientError(Replies.SyntaxNoArgs);
        else
        {
            Write(ReadyForTls);
            _startTls = true;
        }
        return ValueTask.CompletedTask;
    }

    private async ValueTask HeloAsync(SmtpCommand command)
    {
        string domain = command.Argument.Trim();
        if (domain.Length == 0 || domain.Contains(' '))
        {
            ClientError(new SmtpReply(501, "5.5.4", $"Syntax: {command.VerbText} hostname"));
            return;
        }
        await AbortTransactionAsync().ConfigureAwait(false);
        SmtpReply? refusal = await _handler.OnHeloAsync(this, domain, _shutdown).ConfigureAwait(false);
        if (refusal is not null)
        {
            if (refusal.IsPermanent) ClientError(refusal); else Write(refusal);
            return;
        }
        HeloName = domain;
        Extended = command.Verb == SmtpVerb.Ehlo;
        if (!Extended)
        {
            _advertised = System.Collections.Frozen.FrozenSet<string>.Empty;
            Write(_options.Replies.Helo);
            return;
        }
        string greeting = $"{_options.HostName} Hello {domain}";
        var lines = new List<string>(12) { greeting };
        if (_options.Pipelining) lines.Add("PIPELINING");
        lines.Add(_options.Replies.SizeExtension);
        if (_options.EightBitMime) lines.Add("8BITMIME");
        lines.Add("ENHANCEDSTATUSCODES");
        if (_options.SmtpUtf8) lines.Add("SMTPUTF8");
        if (_options.Chunking) lines.Add("CHUNKING");
        if (!IsSecure && _handler.GetTlsOptions(this) is not null) lines.Add("STARTTLS");
        var offer = _handler.GetAuthOffer(this);
        if (offer.Mechanisms.Count > 0 && (IsSecure || !offer.RequiresTls)) lines.Add("AUTH " + string.Join(' ', offer.Mechanisms));
        _handler.AddExtensions(this, lines);
        // The extension lines are the same for nearly every session: their bytes are kept.
        var block = _options.LastEhlo;
        if (block is null || !block.Matches(lines) || !ReferenceEquals(lines[0], greeting))
        {
            if (!ReferenceEquals(lines[0], greeting) || lines.Count < 2) { WriteEhloLines(lines); return; }
            block = new EhloBlock(lines);
            _options.LastEhlo = block;
        }
        _advertised = block.Advertised;
        WriteLine("250-", greeting);
        _output.Write(block.Wire);
    }

    // A handler that rewrote the greeting line or left no extensions: as it stands, uncached.
    private void WriteEhloLines(List<string> lines)
    {
        var advertised = new HashSet<string>(StringComparer.OrdinalIgnoreCase);
        for (int i = 1; i < lines.Count; i++) advertised.Add(lines[i].Split(' ', 2)[0]);
        _advertised = advertised;
        Write(new SmtpReply(250, null, [.. lines]));
    }

    private void WriteLine(string prefix, string text)
    {
        var span = _output.GetSpan(prefix.Length + System.Text.Encoding.UTF8.GetMaxByteCount(text.Length) + 2);
        int n = System.Text.Encoding.ASCII.GetBytes(prefix, span);
        n += System.Text.Encoding.UTF8.GetBytes(text, span[n..]);
        span[n++] = (byte)'\r';
        span[n++] = (byte)'\n';
        _output.Advance(n);
    }

    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder))]
    private async ValueTask MailAsync(SmtpCommand command)
    {
        if (!PathArgumentParser.TryParse(command.Argument, "FROM:", allowNull: true, out var arg, out string error))
        {
            ClientError(new SmtpReply(501, "5.5.4", error));
            return;
        }
        var tx = new SmtpTransaction(arg.Path, arg.Parameters);
        foreach (var (key, value) in arg.Parameters)
        {
            SmtpReply? bad = EsmtpParameters.ApplyMailParameter(tx, key, value, _options, Extended, _advertised);
            if (bad is not null) { ClientError(bad); return; }
        }
        if (!tx.SmtpUtf8 && !arg.Path.IsAscii)
        {
            ClientError(Replies.NonAsciiAddress);
            return;
        }

        Transaction = tx;
        _usedBdat = false;
        var response = await _handler.OnMailAsync(this, tx, _shutdown).ConfigureAwait(false);
        tx.MailPending = true;
        _pending.Add(new PendingReply(PendingKind.Mail, response, tx, null));
    }

    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder))]
    private async ValueTask RcptAsync(SmtpCommand command)
    {
        var tx = Transaction!;
        if (_usedBdat) { ClientError(RcptAfterBdat); return; }
        if (!EsmtpParameters.TryParseRecipient(command.Argument, _advertised, out var recipient, out SmtpReply? bad)) { ClientError(bad!); return; }
        if (!tx.SmtpUtf8 && !recipient.Path.IsAscii)
        {
            ClientError(Replies.NonAsciiAddress);
            return;
        }
        if (tx.Recipients.Count + tx.InFlightRecipients >= _options.MaxRecipients)
        {
            tx.LimitRefusal = Replies.TooManyRecipients;
            if (!Queue(Replies.TooManyRecipients)) Write(Replies.TooManyRecipients);
            return;
        }

        var response = await _handler.OnRcptAsync(this, tx, recipient, _shutdown).ConfigureAwait(false);
        tx.InFlightRecipients++;
        _pending.Add(new PendingReply(PendingKind.Rcpt, response, tx, recipient));
    }

    private static readonly SmtpReply RcptAfterBdat = new(503, "5.5.1", "RCPT after BDAT");

    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder))]
    private async ValueTask ResolvePendingAsync()
    {
        if (PendingCount == 0) return;
        try
        {
            await _handler.FlushAsync(this, _shutdown).ConfigureAwait(false);
        }
        catch (Exception e) when (HandlerFailed(e))
        {
            // Each pending reply reports the failure to the client itself.
            Report(Transaction, "flush", e);
        }
        // Replies found while these are written go straight out (PendingCount is 0 meanwhile).
        _resolving = _pending.Count;
        try
        {
            for (var i = 0; i < _resolving; i++)
            {
                var item = _pending[i];
                if (_closing) break; // nothing after a 421
                SmtpReply reply;
                try { reply = item.Response.Known ?? await item.Response.GetAsync().ConfigureAwait(false); }
                catch (Exception e) when (HandlerFailed(e))
                {
                    Report(Transaction, "pipelined reply", e);
                    reply = Replies.LocalError;
                }
                reply = Settle(item, reply);
                if (reply.IsPermanent) ClientError(reply); else Write(reply);
            }
        }
        finally
        {
            _pending.RemoveRange(0, _resolving);
            _resolving = 0;
        }
    }

    // What a MAIL or RCPT reply does to the transaction once it arrives.
    private SmtpReply Settle(PendingReply item, SmtpReply reply)
    {
        var tx = item.Transaction;
        switch (item.Kind)
        {
            case PendingKind.Mail:
                tx!.MailPending = false;
                if (!reply.IsPositiveCompletion)
                {
                    tx.Failed = true;
                    if (ReferenceEquals(Transaction, tx)) Transaction = null;
                }
                return reply;
            case PendingKind.Rcpt:
                tx!.InFlightRecipients--;
                if (tx.Failed) return Replies.MailBeforeRcpt;
                if (reply.IsPositiveCompletion) tx.Recipients.Add(item.Recipient!);
                return reply;
            default:
                return reply;
        }
    }

    // Replies go out in command order (RFC 2920 §3.1): one known now waits behind any still pending.
    private bool Queue(SmtpReply reply)
    {
        if (PendingCount == 0) return false;
        _pending.Add(new PendingReply(PendingKind.Known, reply, null, null));
        return true;
    }

    // A 5xx the client earned; too many and the session ends (RFC 5321 §4.3.2 leaves it to us).
    // Every 5xx counts, a refused recipient (relay denied, unknown user) included, as Postfix's
    // smtpd_hard_error_limit does: otherwise a client could probe recipients for ever.
    private void ClientError(SmtpReply reply)
    {
        if (Queue(reply)) return; // counted when its turn comes
        Write(reply);
        if (reply.IsPermanent)
        {
            ErrorCount++;
            if (ErrorCount >= _options.MaxErrors && !_closing)
            {
                var limit = _options.Replies.TooManyErrors;
                if (Transaction is { } tx) tx.LimitRefusal = limit;
                Write(limit);
                _closing = true;
            }
        }
    }

    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder))]
    private async ValueTask AbortTransactionAsync()
    {
        var tx = Transaction;
        Transaction = null;
        _bdat = null;
        if (tx is null) return;
        // Outstanding pipelined replies for it are still read so the downstream stays in step.
        try { await _handler.OnTransactionAbortedAsync(this, tx, CancellationToken.None).ConfigureAwait(false); }
        catch (Exception e) when (HandlerFailed(e) || e is OperationCanceledException) { Report(tx, "abort", e); }
    }
}
