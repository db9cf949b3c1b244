// The connection of one SMTP server session: the pipes over the transport, STARTTLS (RFC 3207),
// deadlines, and the reply writer. One read loop (SmtpCommandDispatch.cs) parses every complete
// command in the buffer, answers, and flushes only when no complete command is left, so a
// pipelined group (RFC 2920) gets its replies in one write.
// Deadlines: a read that must end by a time arms this session's deadline; the shared heartbeat
// (SessionHeartbeat.cs) cancels the read once it has passed, and the read answers 421 4.4.2.
// Shutdown cancels any read (421 4.3.2); a graceful drain cancels only a read that waits for a
// command with no transaction open. One registration per session, none per read.
// STARTTLS: the 220 is the last thing read in clear; whatever the client pipelined behind it is
// thrown away before the handshake (CVE-2011-0411), and the session then forgets everything it
// learnt before (§4.2). Every reply goes through Write (SmtpReply.WriteTo: no string in between).
// The other parts: command table and dispatch (SmtpCommandDispatch.cs), MAIL/RCPT parameters
// (EsmtpParameters.cs), AUTH (SaslExchange.cs), DATA and BDAT (ContentReceiver.cs).
using System.Buffers;
using System.Collections.Frozen;
using System.IO.Pipelines;
using System.Net;
using System.Net.Security;
using System.Security.Authentication;
using System.Runtime.CompilerServices;

namespace Portcullis.SmtpCore.Server;

public sealed partial class SmtpSession
{
    private readonly SmtpServerOptions _options;
    private readonly ISmtpSessionHandler _handler;
    private Stream _transport;
    private PipeReader _input;
    private PipeWriter _output;
    private bool _startTls;
    private bool _startedTls;
    private IReadOnlySet<string> _advertised = FrozenSet<string>.Empty;
    private CancellationToken _shutdown;
    private CancellationToken _drain;
    private bool _closing;
    private long _deadline = long.MaxValue;   // Environment.TickCount64 by which the read in progress must end
    private volatile bool _idleRead;          // waiting for a command with no transaction open: a drain ends it

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

    private static readonly StreamPipeReaderOptions ReaderOptions = new(bufferSize: 16 * 1024, minimumReadSize: 4 * 1024, leaveOpen: true);
    private static readonly StreamPipeWriterOptions WriterOptions = new(leaveOpen: true);

    private static (PipeReader, PipeWriter) CreatePipes(Stream transport) =>
        (PipeReader.Create(transport, ReaderOptions), PipeWriter.Create(transport, WriterOptions));

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
    public string? TlsFailure { get; private set; }

    // shutdown ends the session wherever it is (an idle client still gets 421).
    public Task RunAsync(CancellationToken shutdown) => RunAsync(shutdown, shutdown);

    // A graceful stop: once drain is signalled the session answers 421 4.3.2 and closes as soon
    // as no transaction is open (at once if the client is idle); an open transaction runs to
    // its end first. shutdown, later, cuts everything as above.
    public async Task RunAsync(CancellationToken drain, CancellationToken shutdown)
    {
        _shutdown = shutdown;
        _drain = drain;
        SessionHeartbeat.Shared.Add(this);
        var onShutdown = shutdown.UnsafeRegister(static s => ((SmtpSession)s!).CancelRead(), this);
        var onDrain = drain == shutdown ? default
            : drain.UnsafeRegister(static s => { var session = (SmtpSession)s!; if (session._idleRead) session.CancelRead(); }, this);
        try
        {
            SmtpReply? refusal;
            try { refusal = await _handler.OnConnectAsync(this, shutdown).ConfigureAwait(false); }
            catch (Exception e) when (HandlerFailed(e))
            {
                Report(null, "connect", e);
                refusal = _options.Replies.ConnectFailed;
            }
            if (refusal is not null)
            {
                Write(refusal);
                await _output.FlushAsync(shutdown).ConfigureAwait(false);
                return;
            }
            Write(_options.Replies.Banner);
            await CommandLoopAsync().ConfigureAwait(false);
        }
        catch (Exception e) when (e is IOException or OperationCanceledException or ObjectDisposedException)
        {
            // The client went away or we are shutting down without a chance to answer.
        }
        finally
        {
            SessionHeartbeat.Shared.Remove(this);
            onShutdown.Dispose();
            onDrain.Dispose();
            await AbortTransactionAsync().ConfigureAwait(false);
            try { await _handler.OnCloseAsync(this).ConfigureAwait(false); }
            catch (Exception e) { Report(null, "close", e); }   // the session is over either way; the observer hears why
            await _input.CompleteAsync().ConfigureAwait(false);
            try { await _output.CompleteAsync().ConfigureAwait(false); } catch (IOException) { }
            // An SslStream we started wraps the caller's stream (left open): end it, send close_notify.
            if (_startedTls) { try { await _transport.DisposeAsync().ConfigureAwait(false); } catch (Exception e) when (e is IOException or ObjectDisposedException) { } }
        }
    }

    // Called by the heartbeat about once a second.
    internal void OnHeartbeat(long now)
    {
        if (now >= Volatile.Read(ref _deadline)) CancelRead();
    }

    private void CancelRead()
    {
        // The reader may be between two pipes (STARTTLS) or completed at the very end.
        try { _input.CancelPendingRead(); } catch (Exception e) when (e is InvalidOperationException or ObjectDisposedException) { }
    }

    // null when the client closed, timed out (answered 421) or we are shutting down (421).
    // waitsForCommand: a wait between commands, which a drain interrupts when no transaction is open.
    // Pooled builder (here and on the per-command methods): a wait for the client would otherwise box a state machine each time.
    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder<>))]
    private async ValueTask<ReadResult?> ReadAsync(TimeSpan timeout, string what, bool waitsForCommand = false)
    {
        bool idle = waitsForCommand && Idle;
        long ms = timeout >= TimeSpan.FromDays(365) ? long.MaxValue / 2 : Math.Max(1, (long)Math.Ceiling(timeout.TotalMilliseconds));
        Volatile.Write(ref _deadline, Environment.TickCount64 + ms);
        _idleRead = idle; // set before the drain check below: a drain signalled in between still cancels the read
        try
        {
            while (true)
            {
                if (_shutdown.IsCancellationRequested || (idle && _drain.IsCancellationRequested)) break;
                var result = await _input.ReadAsync().ConfigureAwait(false);
                if (!result.IsCanceled)
                {
                    if (result.IsCompleted && result.Buffer.IsEmpty) return null;
                    return result;
                }
                _input.AdvanceTo(result.Buffer.Start);
                if (_shutdown.IsCancellationRequested || (idle && _drain.IsCancellationRequested)) break;
                if (Environment.TickCount64 >= Volatile.Read(ref _deadline))
                    return await CloseAsync(what == "command" ? _options.Replies.CommandTimeout
                        : what == "message data" ? _options.Replies.DataTimeout
                        : new SmtpReply(421, "4.4.2", $"{_options.HostName} Timeout waiting for {what}, closing connection")).ConfigureAwait(false);
                // A cancellation for an earlier read (a stale heartbeat or drain): read on.
            }
        }
        finally
        {
            _idleRead = false;
            Volatile.Write(ref _deadline, long.MaxValue);
        }
        return await CloseAsync(_options.Replies.ShuttingDown).ConfigureAwait(false);
    }

    private async ValueTask<ReadResult?> CloseAsync(SmtpReply reply)
    {
        await AbortTransactionAsync().ConfigureAwait(false);
        Write(reply);
        _closing = true;
        await FlushLastAsync().ConfigureAwait(false);
        return null;
    }

    private async Task ShuttingDownAsync()
    {
        Write(_options.Replies.ShuttingDown);
        _closing = true;
        await FlushLastAsync().ConfigureAwait(false);
    }

    // The last words before a close: a client that does not read them cannot hold the session.
    private async ValueTask FlushLastAsync()
    {
        using var flushCts = new CancellationTokenSource(TimeSpan.FromSeconds(5));
        try { await _output.FlushAsync(flushCts.Token).ConfigureAwait(false); } catch (Exception e) when (e is IOException or OperationCanceledException) { }
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
        if (_shutdown.IsCancellationRequested) CancelRead(); // a shutdown during the handshake cancelled the old reader
        // RFC 3207 §4.2: forget the EHLO, any transaction and any authentication from before.
        await AbortTransactionAsync().ConfigureAwait(false);
        HeloName = null;
        Extended = false;
        AuthenticatedUser = null;
        _advertised = FrozenSet<string>.Empty;
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

    // Anything a handler throws is its failure (451), an IOException from its downstream or its own
    // timeout included; only our shutdown is not. The client's transport is never touched inside these.
    private bool HandlerFailed(Exception e) => e is not OperationCanceledException || !_shutdown.IsCancellationRequested;

    private void Report(SmtpTransaction? tx, string stage, Exception e) =>
        _handler.Observer?.OnHandlerFailure(this, tx, stage, e);

    // The reply writer: every reply's wire form is encoded once, on the reply object.
    private void Write(SmtpReply reply) => reply.WriteTo(_output);
}
