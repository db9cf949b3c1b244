// The server side of one SMTP connection (RFC 5321 §3-4, PIPELINING RFC 2920, SIZE RFC 1870,
// 8BITMIME RFC 6152, ENHANCEDSTATUSCODES RFC 2034/3463, SMTPUTF8 RFC 6531, CHUNKING RFC 3030,
// DSN parameters RFC 3461). One read loop over a PipeReader: parse every complete command in
// the buffer, answer, and flush only when no complete command is left (so a pipelined group
// gets its replies in one write). DATA and BDAT content goes through DataReader into the
// handler's buffer. The session owns syntax, sequence and limits; the handler owns policy.
// STARTTLS (RFC 3207): the 220 is the last thing read in clear; whatever the client pipelined
// behind STARTTLS is thrown away before the handshake (CVE-2011-0411), and the session then
// forgets everything it learnt before (§4.2). AUTH (RFC 4954) runs its 334 challenges here
// and leaves the verdict to the handler.
using System.Buffers;
using System.IO.Pipelines;
using System.Net;
using System.Net.Security;
using System.Security.Authentication;
using System.Text;
using Portcullis.SmtpCore.Protocol;

namespace Portcullis.SmtpCore.Server;

public sealed class SmtpSession
{
    private readonly SmtpServerOptions _options;
    private readonly ISmtpSessionHandler _handler;
    private const int MaxSaslLine = 12288;  // RFC 4954 §4: at least 12288 octets for an AUTH line
    private Stream _transport;
    private PipeReader _input;
    private PipeWriter _output;
    private bool _startTls;
    private readonly List<(Task<SmtpReply> Reply, Func<SmtpReply, SmtpReply> Apply)> _pending = [];
    private readonly HashSet<string> _advertised = new(StringComparer.OrdinalIgnoreCase);
    private CancellationToken _shutdown;
    private CancellationToken _drain;
    private bool _closing;
    private bool _usedBdat;
    private DataReader? _bdat;

    public SmtpSession(Stream transport, EndPoint? remote, EndPoint? local, SmtpServerOptions options,
        ISmtpSessionHandler handler, string id)
    {
        _transport = transport;
        _options = options;
        _handler = handler;
        RemoteEndPoint = remote;
        LocalEndPoint = local;
        Id = id;
        Tls = transport as SslStream;   // an implicit-TLS listener hands over an authenticated SslStream
        (_input, _output) = CreatePipes(transport);
    }

    private static (PipeReader, PipeWriter) CreatePipes(Stream transport) =>
        (PipeReader.Create(transport, new StreamPipeReaderOptions(bufferSize: 16 * 1024, minimumReadSize: 4 * 1024, leaveOpen: true)),
         PipeWriter.Create(transport, new StreamPipeWriterOptions(leaveOpen: true)));

    public string Id { get; }
    public EndPoint? RemoteEndPoint { get; set; }   // replaceable: a PROXY header gives the real client
    public EndPoint? LocalEndPoint { get; }
    public string? HeloName { get; private set; }
    public bool Extended { get; private set; }
    public int ErrorCount { get; private set; }
    public SmtpTransaction? Transaction { get; private set; }
    public SmtpServerOptions Options => _options;
    public object? HandlerState { get; set; }
    public IReadOnlySet<string> Advertised => _advertised;
    public SslStream? Tls { get; private set; }
    public bool IsSecure => Tls is not null;
    public string? AuthenticatedUser { get; private set; }

    // shutdown ends the session wherever it is (an idle client still gets 421).
    public Task RunAsync(CancellationToken shutdown) => RunAsync(shutdown, shutdown);

    // A graceful stop: once drain is signalled the session answers 421 4.3.2 and closes as soon
    // as no transaction is open (at once if the client is idle); an open transaction runs to
    // its end first. shutdown, later, cuts everything as above.
    public async Task RunAsync(CancellationToken drain, CancellationToken shutdown)
    {
        _shutdown = shutdown;
        _drain = drain;
        try
        {
            SmtpReply? refusal;
            try { refusal = await _handler.OnConnectAsync(this, shutdown).ConfigureAwait(false); }
            catch (Exception e) when (HandlerFailed(e))
            {
                Report(null, "connect", e);
                refusal = new SmtpReply(421, "4.3.0", $"{_options.HostName} Local error, try again later");
            }
            if (refusal is not null)
            {
                Write(refusal);
                await _output.FlushAsync(shutdown).ConfigureAwait(false);
                return;
            }
            Write(new SmtpReply(220, null, $"{_options.HostName} {_options.Greeting}"));
            await CommandLoopAsync().ConfigureAwait(false);
        }
        catch (Exception e) when (e is IOException or OperationCanceledException or ObjectDisposedException)
        {
            // The client went away or we are shutting down without a chance to answer.
        }
        finally
        {
            await AbortTransactionAsync().ConfigureAwait(false);
            try { await _handler.OnCloseAsync(this).ConfigureAwait(false); }
            catch (Exception e) { Report(null, "close", e); }   // the session is over either way; the observer hears why
            await _input.CompleteAsync().ConfigureAwait(false);
            try { await _output.CompleteAsync().ConfigureAwait(false); } catch (IOException) { }
            // An SslStream we started wraps the caller's stream (left open): end it, send close_notify.
            if (_startedTls) { try { await _transport.DisposeAsync().ConfigureAwait(false); } catch (Exception e) when (e is IOException or ObjectDisposedException) { } }
        }
    }

    private bool _startedTls;

    private async Task CommandLoopAsync()
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
            ReadResult result;
            var read = await ReadAsync(left > TimeSpan.Zero ? left : TimeSpan.FromTicks(1), "command").ConfigureAwait(false);
            if (read is null) return;
            result = read.Value;

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
                    Write(new SmtpReply(500, "5.5.2", "Line too long"));
                    _closing = true;
                    break;
                }
                if (status == ParseStatus.BareLineFeed)
                {
                    await ResolvePendingAsync().ConfigureAwait(false);
                    if (_closing) break;
                    ClientError(new SmtpReply(500, "5.5.2", "Command line must end with CRLF"));
                    continue;
                }
                if (command.Verb is SmtpVerb.Data or SmtpVerb.Bdat or SmtpVerb.Auth)
                {
                    // The content (or the SASL responses) follow in the same stream: give the rest of the buffer back first.
                    _input.AdvanceTo(position);
                    handedOff = true;
                    if (command.Verb == SmtpVerb.Data) await DataAsync(command).ConfigureAwait(false);
                    else if (command.Verb == SmtpVerb.Bdat) await BdatAsync(command).ConfigureAwait(false);
                    else await AuthAsync(command).ConfigureAwait(false);
                    break;
                }
                await ExecuteAsync(command).ConfigureAwait(false);
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

    // No transaction open: a graceful stop may close the session between two commands.
    private bool Idle => Transaction is null && _bdat is null && _pending.Count == 0;

    // null when the client closed, timed out (answered 421) or we are shutting down (421).
    private async Task<ReadResult?> ReadAsync(TimeSpan timeout, string what)
    {
        // Waiting for a command with no transaction open: a drain interrupts the wait too.
        using var cts = Idle && what == "command"
            ? CancellationTokenSource.CreateLinkedTokenSource(_shutdown, _drain)
            : CancellationTokenSource.CreateLinkedTokenSource(_shutdown);
        cts.CancelAfter(timeout);
        try
        {
            var result = await _input.ReadAsync(cts.Token).ConfigureAwait(false);
            if (result.IsCanceled) return null;
            if (result.IsCompleted && result.Buffer.IsEmpty) return null;
            return result;
        }
        catch (OperationCanceledException)
        {
            SmtpReply reply = _shutdown.IsCancellationRequested || _drain.IsCancellationRequested
                ? ShuttingDown
                : new SmtpReply(421, "4.4.2", $"{_options.HostName} Timeout waiting for {what}, closing connection");
            await AbortTransactionAsync().ConfigureAwait(false);
            Write(reply);
            _closing = true;
            using var flushCts = new CancellationTokenSource(TimeSpan.FromSeconds(5));
            try { await _output.FlushAsync(flushCts.Token).ConfigureAwait(false); } catch (Exception e) when (e is IOException or OperationCanceledException) { }
            return null;
        }
    }

    private SmtpReply ShuttingDown => new(421, "4.3.2", $"{_options.HostName} Service shutting down, try again later");

    private async Task ShuttingDownAsync()
    {
        Write(ShuttingDown);
        _closing = true;
        using var flushCts = new CancellationTokenSource(TimeSpan.FromSeconds(5));
        try { await _output.FlushAsync(flushCts.Token).ConfigureAwait(false); } catch (Exception e) when (e is IOException or OperationCanceledException) { }
    }

    private async Task ExecuteAsync(SmtpCommand command)
    {
        // MAIL and RCPT may stay pending (pipelined downstream); anything else sees settled state.
        if (command.Verb is not (SmtpVerb.Mail or SmtpVerb.Rcpt))
            await ResolvePendingAsync().ConfigureAwait(false);
        if (_closing) return; // the pending replies ran into the error limit

        try
        {
            switch (command.Verb)
            {
                case SmtpVerb.Helo:
                case SmtpVerb.Ehlo:
                    await HeloAsync(command).ConfigureAwait(false);
                    break;
                case SmtpVerb.Mail:
                    await MailAsync(command).ConfigureAwait(false);
                    break;
                case SmtpVerb.Rcpt:
                    await RcptAsync(command).ConfigureAwait(false);
                    break;
                case SmtpVerb.Rset:
                    if (command.Argument.Length > 0) { ClientError(Replies.SyntaxNoArgs); break; }
                    await AbortTransactionAsync().ConfigureAwait(false);
                    Write(Replies.Ok);
                    break;
                case SmtpVerb.Noop:
                    Write(Replies.Ok);
                    break;
                case SmtpVerb.Quit:
                    Write(new SmtpReply(221, "2.0.0", $"{_options.HostName} closing connection"));
                    _closing = true;
                    break;
                case SmtpVerb.Vrfy:
                    if (command.Argument.Length == 0) { ClientError(new SmtpReply(501, "5.5.4", "Syntax: VRFY address")); break; }
                    Write(new SmtpReply(252, "2.5.0", "Cannot VRFY user, but will accept message and attempt delivery"));
                    break;
                case SmtpVerb.Expn:
                    ClientError(new SmtpReply(502, "5.5.1", "EXPN not available"));
                    break;
                case SmtpVerb.Help:
                    Write(new SmtpReply(214, "2.0.0", "Commands: HELO EHLO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP"));
                    break;
                case SmtpVerb.StartTls:
                    StartTlsCommand(command);
                    break;
                default:
                    ClientError(new SmtpReply(500, "5.5.2", "Command unrecognized"));
                    break;
            }
        }
        catch (Exception e) when (HandlerFailed(e))
        {
            Report(Transaction, command.VerbText.ToUpperInvariant(), e);
            await AbortTransactionAsync().ConfigureAwait(false);
            if (!Queue(Replies.LocalError)) Write(Replies.LocalError);
        }
    }

    private async Task HeloAsync(SmtpCommand command)
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
            _advertised.Clear();
            Write(new SmtpReply(250, null, _options.HostName));
            return;
        }
        var lines = new List<string> { $"{_options.HostName} Hello {domain}" };
        if (_options.Pipelining) lines.Add("PIPELINING");
        lines.Add($"SIZE {_options.MaxMessageSize}");
        if (_options.EightBitMime) lines.Add("8BITMIME");
        lines.Add("ENHANCEDSTATUSCODES");
        if (_options.SmtpUtf8) lines.Add("SMTPUTF8");
        if (_options.Chunking) lines.Add("CHUNKING");
        if (!IsSecure && _handler.GetTlsOptions(this) is not null) lines.Add("STARTTLS");
        var offer = _handler.GetAuthOffer(this);
        if (offer.Mechanisms.Count > 0 && (IsSecure || !offer.RequiresTls)) lines.Add("AUTH " + string.Join(' ', offer.Mechanisms));
        _handler.AddExtensions(this, lines);
        _advertised.Clear();
        foreach (var line in lines.Skip(1))
            _advertised.Add(line.Split(' ', 2)[0]);
        Write(new SmtpReply(250, null, [.. lines]));
    }

    private async Task MailAsync(SmtpCommand command)
    {
        if (HeloName is null) { ClientError(new SmtpReply(503, "5.5.1", "Send HELO or EHLO first")); return; }
        if (Transaction is not null) { ClientError(new SmtpReply(503, "5.5.1", "Nested MAIL command")); return; }
        if (!PathArgumentParser.TryParse(command.Argument, "FROM:", allowNull: true, out var arg, out string error))
        {
            ClientError(new SmtpReply(501, "5.5.4", error));
            return;
        }
        var tx = new SmtpTransaction(arg.Path, arg.Parameters);
        foreach (var (key, value) in arg.Parameters)
        {
            SmtpReply? bad = ApplyMailParameter(tx, key, value);
            if (bad is not null) { ClientError(bad); return; }
        }
        if (!tx.SmtpUtf8 && !arg.Path.IsAscii)
        {
            ClientError(new SmtpReply(553, "5.6.7", "Non-ASCII address requires SMTPUTF8"));
            return;
        }

        Transaction = tx;
        _usedBdat = false;
        var response = await _handler.OnMailAsync(this, tx, _shutdown).ConfigureAwait(false);
        tx.MailPending = true;
        Track(response, reply =>
        {
            tx.MailPending = false;
            if (!reply.IsPositiveCompletion)
            {
                tx.Failed = true;
                if (ReferenceEquals(Transaction, tx)) Transaction = null;
            }
            return reply;
        });
    }

    private SmtpReply? ApplyMailParameter(SmtpTransaction tx, string key, string? value)
    {
        switch (key)
        {
            case "SIZE" when Extended:
                if (value is null || !long.TryParse(value, System.Globalization.NumberStyles.None, null, out long size))
                    return new SmtpReply(501, "5.5.4", "Bad SIZE value");
                if (size > _options.MaxMessageSize)
                    return new SmtpReply(552, "5.3.4", $"Message size exceeds fixed maximum message size ({_options.MaxMessageSize})");
                tx.DeclaredSize = size;
                return null;
            case "BODY" when Extended:
                if (string.Equals(value, "7BIT", StringComparison.OrdinalIgnoreCase)) tx.Body = BodyType.SevenBit;
                else if (string.Equals(value, "8BITMIME", StringComparison.OrdinalIgnoreCase) && _options.EightBitMime) tx.Body = BodyType.EightBitMime;
                else return new SmtpReply(555, "5.5.4", $"Unsupported BODY type {value}");
                return null;
            case "SMTPUTF8" when Extended && _options.SmtpUtf8:
                if (value is not null) return new SmtpReply(501, "5.5.4", "SMTPUTF8 takes no value");
                tx.SmtpUtf8 = true;
                return null;
            case "RET" when _advertised.Contains("DSN"):
                if (!string.Equals(value, "FULL", StringComparison.OrdinalIgnoreCase) && !string.Equals(value, "HDRS", StringComparison.OrdinalIgnoreCase))
                    return new SmtpReply(501, "5.5.4", "RET must be FULL or HDRS");
                if (tx.DsnRet is not null) return new SmtpReply(501, "5.5.4", "Duplicate RET");
                tx.DsnRet = value;
                return null;
            case "ENVID" when _advertised.Contains("DSN"):
                if (string.IsNullOrEmpty(value) || value.Length > 100) return new SmtpReply(501, "5.5.4", "Bad ENVID");
                if (tx.DsnEnvId is not null) return new SmtpReply(501, "5.5.4", "Duplicate ENVID");
                tx.DsnEnvId = value;
                return null;
            case "AUTH" when _advertised.Contains("AUTH"):
                // RFC 4954 §5: the original submitter, xtext or "<>"; accepted and not passed on.
                if (string.IsNullOrEmpty(value)) return new SmtpReply(501, "5.5.4", "Bad AUTH value");
                tx.AuthParameter = value;
                return null;
            default:
                return new SmtpReply(555, "5.5.4", $"Unsupported parameter {key}");
        }
    }

    private async Task RcptAsync(SmtpCommand command)
    {
        var tx = Transaction;
        if (tx is null) { ClientError(new SmtpReply(503, "5.5.1", "Need MAIL before RCPT")); return; }
        if (_usedBdat) { ClientError(new SmtpReply(503, "5.5.1", "RCPT after BDAT")); return; }
        if (!TryParseRecipient(command.Argument, out var recipient, out SmtpReply? bad)) { ClientError(bad!); return; }
        if (!tx.SmtpUtf8 && !recipient.Path.IsAscii)
        {
            ClientError(new SmtpReply(553, "5.6.7", "Non-ASCII address requires SMTPUTF8"));
            return;
        }
        if (tx.Recipients.Count + tx.InFlightRecipients >= _options.MaxRecipients)
        {
            var full = new SmtpReply(452, "4.5.3", "Too many recipients");
            tx.LimitRefusal = full;
            if (!Queue(full)) Write(full);
            return;
        }

        var response = await _handler.OnRcptAsync(this, tx, recipient, _shutdown).ConfigureAwait(false);
        tx.InFlightRecipients++;
        Track(response, reply =>
        {
            tx.InFlightRecipients--;
            if (tx.Failed)
                return new SmtpReply(503, "5.5.1", "Need MAIL before RCPT");
            if (reply.IsPositiveCompletion) tx.Recipients.Add(recipient);
            return reply;
        });
    }

    private bool TryParseRecipient(string argument, out SmtpRecipient recipient, out SmtpReply? bad)
    {
        recipient = null!;
        bad = null;
        if (!PathArgumentParser.TryParse(argument, "TO:", allowNull: false, out var arg, out string error))
        {
            bad = new SmtpReply(501, "5.5.4", error);
            return false;
        }
        foreach (var (key, value) in arg.Parameters)
        {
            bool dsn = _advertised.Contains("DSN");
            if (key == "NOTIFY" && dsn && value is not null && IsNotifyValue(value)) continue;
            if (key == "ORCPT" && dsn && value is not null && value.Contains(';')) continue;
            bad = key is "NOTIFY" or "ORCPT" && dsn
                ? new SmtpReply(501, "5.5.4", $"Bad {key} value")
                : new SmtpReply(555, "5.5.4", $"Unsupported parameter {key}");
            return false;
        }
        recipient = new SmtpRecipient(arg.Path, arg.Parameters);
        return true;
    }

    private static bool IsNotifyValue(string value)
    {
        var items = value.Split(',');
        if (items.Length == 1 && items[0].Equals("NEVER", StringComparison.OrdinalIgnoreCase)) return true;
        return items.All(i => i.Equals("SUCCESS", StringComparison.OrdinalIgnoreCase)
                              || i.Equals("FAILURE", StringComparison.OrdinalIgnoreCase)
                              || i.Equals("DELAY", StringComparison.OrdinalIgnoreCase));
    }

    private void StartTlsCommand(SmtpCommand command)
    {
        if (IsSecure || _handler.GetTlsOptions(this) is null)
        {
            ClientError(IsSecure ? new SmtpReply(503, "5.5.1", "TLS already active") : new SmtpReply(502, "5.5.1", "STARTTLS not available"));
            return;
        }
        if (command.Argument.Length > 0) { ClientError(Replies.SyntaxNoArgs); return; }
        Write(new SmtpReply(220, "2.0.0", "Ready to start TLS"));
        _startTls = true;
    }

    // False when the handshake failed: the connection is then closed without another word,
    // since neither side knows what state the other is in.
    private async Task<bool> StartTlsAsync()
    {
        var tlsOptions = _handler.GetTlsOptions(this)!;
        await _output.FlushAsync(_shutdown).ConfigureAwait(false);
        await _input.CompleteAsync().ConfigureAwait(false);
        await _output.CompleteAsync().ConfigureAwait(false);
        var ssl = new SslStream(_transport, leaveInnerStreamOpen: true);
        using var cts = CancellationTokenSource.CreateLinkedTokenSource(_shutdown);
        cts.CancelAfter(_options.CommandTimeout);
        try
        {
            await ssl.AuthenticateAsServerAsync(tlsOptions, cts.Token).ConfigureAwait(false);
        }
        catch (Exception e) when (e is AuthenticationException or IOException or OperationCanceledException)
        {
            await ssl.DisposeAsync().ConfigureAwait(false);
            (_input, _output) = CreatePipes(Stream.Null);
            _closing = true;
            TlsFailure = e.Message;
            _handler.Observer?.OnTlsFailure(this, e);
            return false;
        }
        _transport = ssl;
        _startedTls = true;
        Tls = ssl;
        (_input, _output) = CreatePipes(ssl);
        // RFC 3207 §4.2: forget the EHLO, any transaction and any authentication from before.
        await AbortTransactionAsync().ConfigureAwait(false);
        HeloName = null;
        Extended = false;
        AuthenticatedUser = null;
        _advertised.Clear();
        try { await _handler.OnTlsStartedAsync(this, _shutdown).ConfigureAwait(false); }
        catch (Exception e) when (HandlerFailed(e))
        {
            // The handler could not forget what it held for the old state: nothing may go on.
            Report(null, "STARTTLS", e);
            _closing = true;
            return false;
        }
        return true;
    }

    public string? TlsFailure { get; private set; }

    private async Task AuthAsync(SmtpCommand command)
    {
        await ResolvePendingAsync().ConfigureAwait(false);
        if (_closing) return;
        var offer = _handler.GetAuthOffer(this);
        var parts = command.Argument.Split(' ', StringSplitOptions.RemoveEmptyEntries);
        string mechanism = parts.Length > 0 ? parts[0].ToUpperInvariant() : "";
        SmtpReply? refusal =
            offer.Mechanisms.Count == 0 ? new SmtpReply(502, "5.5.1", "AUTH not available")
            : HeloName is null || !Extended ? new SmtpReply(503, "5.5.1", "Send EHLO first")
            : AuthenticatedUser is not null ? new SmtpReply(503, "5.5.1", "Already authenticated")
            : Transaction is not null ? new SmtpReply(503, "5.5.1", "AUTH not allowed during a mail transaction")
            : parts.Length is 0 or > 2 ? new SmtpReply(501, "5.5.4", "Syntax: AUTH mechanism [initial-response]")
            : !offer.Mechanisms.Contains(mechanism, StringComparer.OrdinalIgnoreCase) ? new SmtpReply(504, "5.5.4", "Unrecognized authentication type")
            : null;
        if (refusal is not null) { ClientError(refusal); return; }
        if (offer.RequiresTls && !IsSecure)
        {
            Write(new SmtpReply(538, "5.7.11", "Encryption required for requested authentication mechanism"));
            return;
        }
        SmtpReply? start;
        try { start = await _handler.OnAuthStartAsync(this, mechanism, _shutdown).ConfigureAwait(false); }
        catch (Exception e) when (HandlerFailed(e))
        {
            Report(null, "AUTH", e);
            Write(Replies.LocalError);
            return;
        }
        if (start is not null)
        {
            Write(start);
            if (start.Code == 421) _closing = true;
            return;
        }

        string? initial = parts.Length == 2 ? parts[1] : null;
        SaslCredentials? credentials;
        SmtpReply? problem;
        if (mechanism == "PLAIN")
        {
            var (response, p) = initial is not null ? (initial, null) : await ChallengeAsync("").ConfigureAwait(false);
            (credentials, problem) = p is not null ? (null, p) : DecodePlain(response!);
        }
        else if (mechanism == "LOGIN")
        {
            // draft-murchison-sasl-login: "Username:" then "Password:", each base64; an initial response is the user name.
            var (user, p) = initial is not null ? (initial, null) : await ChallengeAsync("VXNlcm5hbWU6").ConfigureAwait(false);
            string? password = null;
            if (p is null) (password, p) = await ChallengeAsync("UGFzc3dvcmQ6").ConfigureAwait(false);
            (credentials, problem) = p is not null ? (null, p) : DecodeLogin(user!, password!);
        }
        else
        {
            (credentials, problem) = (null, new SmtpReply(504, "5.5.4", "Unrecognized authentication type"));
        }
        if (_closing) return;
        if (problem is not null) { ClientError(problem); return; }

        SmtpReply verdict;
        try { verdict = await _handler.OnAuthenticateAsync(this, credentials!, _shutdown).ConfigureAwait(false); }
        catch (Exception e) when (HandlerFailed(e))
        {
            Report(null, "AUTH", e);
            Write(Replies.LocalError);
            return;
        }
        if (verdict.Code == 235) AuthenticatedUser = credentials!.UserName;
        Write(verdict);
        if (verdict.Code == 421) _closing = true;
    }

    // Sends "334 challenge" and reads one response line: (line, null), or (null, reply) for "*"
    // (the client cancelled) and bad lines. A closed or silent client ends the session.
    private async Task<(string?, SmtpReply?)> ChallengeAsync(string challenge)
    {
        Write(new SmtpReply(334, null, challenge));
        await _output.FlushAsync(_shutdown).ConfigureAwait(false);
        int cap = Math.Max(_options.MaxLineLength, MaxSaslLine);
        while (true)
        {
            var read = await ReadAsync(_options.CommandTimeout, "AUTH response").ConfigureAwait(false);
            if (read is null) { _closing = true; return (null, null); }
            var buffer = read.Value.Buffer;
            var lf = buffer.PositionOf((byte)'\n');
            if (lf is null)
            {
                _input.AdvanceTo(buffer.Start, buffer.End);
                if (buffer.Length >= cap) { Write(new SmtpReply(500, "5.5.6", "Authentication exchange line is too long")); _closing = true; return (null, null); }
                if (read.Value.IsCompleted) { _closing = true; return (null, null); }
                continue;
            }
            var lineSeq = buffer.Slice(0, lf.Value);
            string line = Encoding.ASCII.GetString(lineSeq.ToArray()).TrimEnd('\r');
            _input.AdvanceTo(buffer.GetPosition(1, lf.Value));
            if (line == "*") return (null, new SmtpReply(501, "5.7.0", "Authentication cancelled"));
            return (line, null);
        }
    }

    private static (SaslCredentials?, SmtpReply?) DecodePlain(string response)
    {
        // RFC 4616: [authzid] NUL authcid NUL passwd, UTF-8. "=" is an empty initial response (RFC 4954 §4).
        if (!TryBase64(response, out var bytes)) return (null, BadBase64);
        var fields = Encoding.UTF8.GetString(bytes).Split('\0');
        if (fields.Length != 3 || fields[1].Length == 0)
            return (null, new SmtpReply(501, "5.5.2", "Malformed PLAIN response"));
        return (new SaslCredentials("PLAIN", fields[1], fields[2], fields[0]), null);
    }

    private static (SaslCredentials?, SmtpReply?) DecodeLogin(string user, string password)
    {
        if (!TryBase64(user, out var u) || !TryBase64(password, out var p)) return (null, BadBase64);
        var name = Encoding.UTF8.GetString(u);
        if (name.Length == 0 || name.Contains('\0')) return (null, new SmtpReply(501, "5.5.2", "Malformed LOGIN response"));
        return (new SaslCredentials("LOGIN", name, Encoding.UTF8.GetString(p), ""), null);
    }

    private static readonly SmtpReply BadBase64 = new(501, "5.5.2", "Cannot decode the response (base64 expected)");

    private static bool TryBase64(string text, out byte[] bytes)
    {
        bytes = [];
        if (text == "=") return true;
        if (text.Length == 0 || text.Length % 4 != 0) return false;
        bytes = new byte[text.Length / 4 * 3];
        if (!Convert.TryFromBase64String(text, bytes, out int n)) return false;
        bytes = bytes[..n];
        return true;
    }

    private async Task DataAsync(SmtpCommand command)
    {
        await ResolvePendingAsync().ConfigureAwait(false);
        if (_closing) return;
        var tx = Transaction;
        SmtpReply? refusal =
            command.Argument.Length > 0 ? Replies.SyntaxNoArgs
            : tx is null ? new SmtpReply(503, "5.5.1", "Need MAIL before DATA")
            : _usedBdat ? new SmtpReply(503, "5.5.1", "DATA after BDAT")
            : tx.Recipients.Count == 0 ? new SmtpReply(554, "5.5.1", "No valid recipients")
            : null;
        if (refusal is not null)
        {
            ClientError(refusal);
            return;
        }

        var content = OpenContent(tx!);
        if (content is null) return;
        var data = new DataReader(content, _options.MaxMessageSize, _options.BareNewline, dotTransparency: true);
        Write(new SmtpReply(354, null, "End data with <CR><LF>.<CR><LF>"));
        await _output.FlushAsync(_shutdown).ConfigureAwait(false);

        var pace = new DataPace(_options);
        while (!data.IsComplete)
        {
            var read = await ReadAsync(pace.NextTimeout(data.Size), "message data").ConfigureAwait(false);
            if (read is null) { _closing = true; return; }
            var buffer = read.Value.Buffer;
            long consumed = 0;
            foreach (var segment in buffer)
            {
                consumed += data.Process(segment.Span);
                if (data.IsComplete) break;
            }
            _input.AdvanceTo(buffer.GetPosition(consumed));
            if (!data.IsComplete && read.Value.IsCompleted)
            {
                _closing = true; // disconnect mid-DATA: nothing is delivered
                return;
            }
        }
        await FinishMessageAsync(tx!, data).ConfigureAwait(false);
    }

    private async Task BdatAsync(SmtpCommand command)
    {
        await ResolvePendingAsync().ConfigureAwait(false);
        if (_closing) return;
        var parts = command.Argument.Split(' ', StringSplitOptions.RemoveEmptyEntries);
        bool last = parts.Length == 2 && parts[1].Equals("LAST", StringComparison.OrdinalIgnoreCase);
        if (parts.Length is 0 or > 2 || (parts.Length == 2 && !last)
            || !long.TryParse(parts[0], System.Globalization.NumberStyles.None, null, out long size))
        {
            // Without a size we cannot find the next command: answer and close (RFC 3030 §2).
            Write(new SmtpReply(501, "5.5.4", "Syntax: BDAT size [LAST]"));
            _closing = true;
            return;
        }

        var tx = Transaction;
        SmtpReply? refusal =
            !_options.Chunking ? new SmtpReply(502, "5.5.1", "BDAT not available")
            : tx is null ? new SmtpReply(503, "5.5.1", "Need MAIL before BDAT")
            : tx.Recipients.Count == 0 ? new SmtpReply(554, "5.5.1", "No valid recipients")
            : null;

        DataReader? reader = null;
        if (refusal is null)
        {
            if (_bdat is null)
            {
                var content = OpenContent(tx!);
                if (content is null) refusal = Replies.LocalError;
                else _bdat = new DataReader(content, _options.MaxMessageSize, _options.BareNewline, dotTransparency: false);
                _usedBdat = true;
            }
            reader = _bdat;
        }

        // The chunk is always read in full, even when it will be refused (RFC 3030 §2).
        long remaining = size;
        var pace = new DataPace(_options);
        while (remaining > 0)
        {
            var read = await ReadAsync(pace.NextTimeout(size - remaining), "BDAT chunk").ConfigureAwait(false);
            if (read is null) { _closing = true; return; }
            var buffer = read.Value.Buffer;
            var take = buffer.Slice(0, Math.Min(remaining, buffer.Length));
            if (reader is not null)
                foreach (var segment in take) reader.Process(segment.Span);
            remaining -= take.Length;
            _input.AdvanceTo(take.End);
            if (remaining > 0 && read.Value.IsCompleted) { _closing = true; return; }
        }

        if (refusal is not null)
        {
            if (tx is not null && refusal.Code != 503) await AbortTransactionAsync().ConfigureAwait(false);
            // RFC 3030 §2: chunks pipelined after a failed one are accepted and discarded, not counted as errors.
            if (tx is null && _usedBdat)
            {
                Write(refusal);
                if (last) _usedBdat = false; // the failed message is over; a new stray BDAT counts again
            }
            else ClientError(refusal);
            return;
        }
        if (last)
        {
            reader!.Finish();
            await FinishMessageAsync(tx!, reader).ConfigureAwait(false);
            return;
        }
        if (reader!.Error != DataError.None)
        {
            // Latched: refuse now, and every later chunk finds no transaction.
            tx!.ContentRefusal = ErrorReply(reader);
            Write(tx.ContentRefusal);
            await AbortTransactionAsync().ConfigureAwait(false);
            return;
        }
        Write(new SmtpReply(250, "2.0.0", $"{size} octets received"));
    }

    private IBufferWriter<byte>? OpenContent(SmtpTransaction tx)
    {
        try
        {
            tx.Content = _handler.OpenContent(this, tx);
            return tx.Content;
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            Report(tx, "content", e);
            Write(Replies.LocalError);
            return null;
        }
    }

    private async Task FinishMessageAsync(SmtpTransaction tx, DataReader data)
    {
        if (data.Error != DataError.None)
        {
            tx.ContentRefusal = ErrorReply(data);
            await AbortTransactionAsync().ConfigureAwait(false);
            Write(tx.ContentRefusal);
            return;
        }
        SmtpReply reply;
        try
        {
            reply = await _handler.OnMessageAsync(this, tx, _shutdown).ConfigureAwait(false);
        }
        catch (Exception e) when (HandlerFailed(e))
        {
            Report(tx, "message", e);
            await AbortTransactionAsync().ConfigureAwait(false);
            Write(Replies.LocalError);
            return;
        }
        Transaction = null;
        _bdat = null;
        Write(reply);
    }

    private static SmtpReply ErrorReply(DataReader data) => data.Error switch
    {
        DataError.TooLarge => new SmtpReply(552, "5.3.4", "Message size exceeds fixed maximum message size"),
        DataError.BareNewline => new SmtpReply(550, "5.6.0", "Bare CR or LF in message content is not allowed; lines must end with CRLF"),
        _ => new SmtpReply(452, "4.3.1", "Insufficient system storage"),
    };

    private async Task AbortTransactionAsync()
    {
        var tx = Transaction;
        Transaction = null;
        _bdat = null;
        if (tx is null) return;
        // Outstanding pipelined replies for it are still read so the downstream stays in step.
        try { await _handler.OnTransactionAbortedAsync(this, tx, CancellationToken.None).ConfigureAwait(false); }
        catch (Exception e) when (HandlerFailed(e) || e is OperationCanceledException) { Report(tx, "abort", e); }
    }

    private void Track(SmtpResponse response, Func<SmtpReply, SmtpReply> apply)
    {
        _pending.Add((response.GetAsync(), apply));
    }

    private async Task ResolvePendingAsync()
    {
        if (_pending.Count == 0) return;
        try
        {
            await _handler.FlushAsync(this, _shutdown).ConfigureAwait(false);
        }
        catch (Exception e) when (HandlerFailed(e))
        {
            // Each pending reply reports the failure to the client itself.
            Report(Transaction, "flush", e);
        }
        var pending = _pending.ToArray();
        _pending.Clear();
        foreach (var (task, apply) in pending)
        {
            if (_closing) break; // nothing after a 421
            SmtpReply reply;
            try { reply = await task.ConfigureAwait(false); }
            catch (Exception e) when (HandlerFailed(e))
            {
                Report(Transaction, "pipelined reply", e);
                reply = Replies.LocalError;
            }
            reply = apply(reply);
            if (reply.IsPermanent) ClientError(reply); else Write(reply);
        }
    }

    // Replies go out in command order (RFC 2920 §3.1): one known now waits behind any still pending.
    private bool Queue(SmtpReply reply)
    {
        if (_pending.Count == 0) return false;
        _pending.Add((Task.FromResult(reply), r => r));
        return true;
    }

    // Anything a handler throws is its failure (451), an IOException from its downstream or its own
    // timeout included; only our shutdown is not. The client's transport is never touched inside these.
    private bool HandlerFailed(Exception e) => e is not OperationCanceledException || !_shutdown.IsCancellationRequested;

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
                var limit = new SmtpReply(421, "4.7.0", $"{_options.HostName} Too many errors, closing connection");
                if (Transaction is { } tx) tx.LimitRefusal = limit;
                Write(limit);
                _closing = true;
            }
        }
    }

    private void Report(SmtpTransaction? tx, string stage, Exception e) =>
        _handler.Observer?.OnHandlerFailure(this, tx, stage, e);

    private void Write(SmtpReply reply)
    {
        string wire = reply.ToWire();
        var span = _output.GetSpan(Encoding.UTF8.GetMaxByteCount(wire.Length));
        int n = Encoding.UTF8.GetBytes(wire, span);
        _output.Advance(n);
    }
}

// Content must keep arriving: each read within DataTimeout (RFC 5321 §4.5.3.2.5), and the
// whole transfer within DataTimeout plus the time MinDataRate allows for what has arrived
// (as Postfix's smtpd_min_data_rate), so a client trickling bytes cannot hold a session.
internal readonly struct DataPace(SmtpServerOptions options)
{
    private readonly long _started = System.Diagnostics.Stopwatch.GetTimestamp();

    public TimeSpan NextTimeout(long received)
    {
        var allowed = options.DataTimeout + TimeSpan.FromSeconds((double)received / options.MinDataRate);
        var left = allowed - System.Diagnostics.Stopwatch.GetElapsedTime(_started);
        if (left <= TimeSpan.Zero) return TimeSpan.FromTicks(1);
        return left < options.DataTimeout ? left : options.DataTimeout;
    }
}

internal static class Replies
{
    public static readonly SmtpReply Ok = new(250, "2.0.0", "OK");
    public static readonly SmtpReply SyntaxNoArgs = new(501, "5.5.4", "Syntax error: no arguments allowed");
    public static readonly SmtpReply LocalError = new(451, "4.3.0", "Local error in processing, try again later");
}
