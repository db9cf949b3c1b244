// DownstreamClient: the gateway's SMTP client connection to the real mail server.
//   RFC 5321 §3.1 (banner), §4.1.1.1 (EHLO, HELO fallback), §4.1.1.2-.10 (commands),
//   §4.2 (replies), §4.5.2 (dot-stuffing), §4.5.3.2 (timeouts); RFC 2920 (PIPELINING: groups,
//   replies in command order), RFC 3030 (CHUNKING/BDAT), RFC 1870 (SIZE), RFC 6152 (8BITMIME),
//   RFC 6531 (SMTPUTF8), RFC 3461 (DSN; xtext for XFORWARD values), RFC 3207 (STARTTLS: done
//   in lock-step before the pipelined machinery starts, so no reply can straddle the handshake).
// Contract:
// - Replies are matched to commands strictly first-in first-out by one read loop.
// - With PIPELINING, commands are buffered until FlushAsync or a group-ending command; a reply
//   task of a buffered command completes only after the flush. Without it, lock-step.
// - A transport error, the server closing, a malformed reply or a reply timeout fails every
//   outstanding reply with DownstreamException, closes the socket and marks the client broken;
//   later calls throw at once. Every wait is bounded by a timeout or the caller's token.
// - One logical caller at a time (a session); calls are ordered by the order they are made.
// - A reply task completes on the read loop's own thread (no hop per reply): what runs on
//   after it must not block that thread waiting for another reply of the same connection.
// - The caller's token cancels the wait, not the command: its reply is still consumed in turn.
using System.Buffers;
using System.Diagnostics;
using System.Globalization;
using System.IO.Pipelines;
using System.Net;
using System.Net.Security;
using System.Net.Sockets;
using System.Runtime.CompilerServices;
using System.Text;

namespace Portcullis.SmtpCore.Downstream;

public sealed class DownstreamClient : IAsyncDisposable
{
    internal const int ChunkSize = 256 * 1024;           // BDAT chunk: large enough to amortise a reply
    private const int FlushThreshold = 64 * 1024;         // bounds what the output pipe buffers
    private const int ReadPiece = 16 * 1024;              // body bytes read into the output at a time
    private const int MaxXForwardLine = 512;              // Postfix splits XFORWARD at the RFC 5321 line size
    private const int MaxXClientValue = 255;              // Postfix refuses a longer XCLIENT value (501)
    private static readonly SearchValues<char> XClientNameChars =
        SearchValues.Create("-0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz");
    private static readonly TimeSpan QuitTimeout = TimeSpan.FromSeconds(2);
    internal const string SaslResponseLabel = "AUTH response";

    // RFC 2920 §3.1 plus RFC 3030 BDAT; RSET, HELO, STARTTLS and AUTH too, so their replies are never late.
    private static readonly HashSet<string> GroupEnders = new(StringComparer.Ordinal)
    {
        "DATA", "BDAT", "RSET", "QUIT", "EHLO", "HELO", "NOOP", "STARTTLS", "AUTH", "VRFY", "EXPN", "TURN",
    };

    private readonly Socket _socket;
    private readonly Stream _stream;     // the socket's NetworkStream, or an SslStream over it after STARTTLS
    private readonly SmtpReply? _bannerBeforeTls;
    private readonly PipeWriter _output;
    private readonly DownstreamOptions _options;
    private readonly object _gate = new();
    private readonly Queue<PendingReply> _pending = new();
    private PendingReply? _lastPending;
    private DownstreamException? _failure;
    private readonly SemaphoreSlim _writeGate = new(1, 1);   // async waiters queue in order: writes keep call order
    private Task _readLoop = Task.CompletedTask;
    private Timer? _deadlineTimer;   // one per connection, armed for the earliest reply deadline; under _gate
    private long _timerDue;          // Stopwatch timestamp the timer is armed for, 0 when disarmed; under _gate
    // One registration per caller token with commands outstanding, not one per command; under _gate.
    private readonly List<(CancellationToken Token, CancellationTokenRegistration Registration)> _registrations = [];
    private int _disposed;
    private bool _transactionOpen;   // under _gate
    private bool _authAttempted;
    private StreamedMessage? _streamed;   // a message sent while it arrives, not yet ended
    private DotStuffer? _stuffer;         // DATA's, reused message after message (one at a time)

    private DownstreamClient(Socket socket, Stream stream, SmtpReply? bannerBeforeTls, DownstreamOptions options, string remoteDescription)
    {
        _socket = socket;
        _options = options;
        RemoteDescription = remoteDescription;
        _stream = stream;
        _bannerBeforeTls = bannerBeforeTls;
        IsTls = stream is SslStream;
        _output = PipeWriter.Create(_stream, new StreamPipeWriterOptions(minimumBufferSize: 16 * 1024, leaveOpen: true));
    }

    public string RemoteDescription { get; }
    public SmtpReply Banner { get; private set; } = null!;

    // The reply to EHLO, or to HELO when the server refused EHLO.
    public SmtpReply EhloReply { get; private set; } = null!;
    public DownstreamCapabilities Capabilities { get; private set; } = DownstreamCapabilities.None;
    // Broken, or inside a message sent while it arrives (see BeginStreamAsync): either way no
    // one else may say anything on it, and no pool may keep it.
    public bool IsBroken => Volatile.Read(ref _failure) is not null || Volatile.Read(ref _streamed) is not null;

    // Between transactions with nothing outstanding: no MAIL since the last final reply to the
    // message data, RSET or refused MAIL, and every command answered. Such a connection can
    // carry someone else's next MAIL without an RSET first.
    public bool IsBetweenTransactions
    {
        get
        {
            lock (_gate) return _failure is null && !_transactionOpen && _pending.Count == 0;
        }
    }

    // AUTH was sent on this connection (whether or not it succeeded): it may be someone's login.
    public bool AuthAttempted => Volatile.Read(ref _authAttempted);
    public bool IsTls { get; }

    // Connects to options' server, or failing that to each of its Alternatives in order; the
    // DownstreamException when none of them takes the session names every failure.
    public static async Task<DownstreamClient> ConnectAsync(DownstreamOptions options, CancellationToken ct = default)
    {
        ArgumentNullException.ThrowIfNull(options);
        if (options.Alternatives.Count == 0) return await ConnectOneAsync(options, ct).ConfigureAwait(false);
        List<DownstreamException>? failures = null;
        foreach (var server in options.Alternatives.Prepend(options))
        {
            try
            {
                return await ConnectOneAsync(server, ct).ConfigureAwait(false);
            }
            catch (DownstreamException e)
            {
                (failures ??= []).Add(e);
            }
        }
        throw new DownstreamException(string.Join("; then ", failures!.Select(f => f.Message)), failures![^1].Reply,
            new AggregateException(failures!));
    }

    private static async Task<DownstreamClient> ConnectOneAsync(DownstreamOptions options, CancellationToken ct)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(options.Host);
        ArgumentOutOfRangeException.ThrowIfLessThan(options.Port, 1);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(options.Port, 65535);
        if (string.IsNullOrEmpty(options.HeloName) || options.HeloName.AsSpan().IndexOfAny(" \t\r\n\0") >= 0)
            throw new ArgumentException("HeloName must be one non-empty word", nameof(options));
        CheckTimeout(options.ConnectTimeout, nameof(options.ConnectTimeout));
        CheckTimeout(options.ReplyTimeout, nameof(options.ReplyTimeout));
        CheckTimeout(options.DataReplyTimeout, nameof(options.DataReplyTimeout));

        bool literal = IPAddress.TryParse(options.Host.Trim('[', ']'), out var address);
        var socket = literal
            ? new Socket(address!.AddressFamily, SocketType.Stream, ProtocolType.Tcp)
            : new Socket(SocketType.Stream, ProtocolType.Tcp);   // dual-mode: the name may resolve to v4 or v6
        string target = literal ? FormatEndPoint(address!, options.Port) : $"{options.Host}:{options.Port}";
        try
        {
            using var connectCts = CancellationTokenSource.CreateLinkedTokenSource(ct);
            if (options.ConnectTimeout != Timeout.InfiniteTimeSpan) connectCts.CancelAfter(options.ConnectTimeout);
            if (literal) await socket.ConnectAsync(address!, options.Port, connectCts.Token).ConfigureAwait(false);
            else await socket.ConnectAsync(options.Host, options.Port, connectCts.Token).ConfigureAwait(false);
            socket.NoDelay = true;   // commands are small and flushed deliberately
        }
        catch (OperationCanceledException) when (!ct.IsCancellationRequested)
        {
            socket.Dispose();
            throw new DownstreamException($"could not connect to downstream {target} within {Describe(options.ConnectTimeout)}");
        }
        catch (SocketException ex)
        {
            socket.Dispose();
            throw new DownstreamException($"could not connect to downstream {target}: {ex.Message}", null, ex);
        }
        catch
        {
            socket.Dispose();
            throw;
        }

        string remote = literal || socket.RemoteEndPoint is not IPEndPoint peer
            ? target
            : $"{options.Host}[{(peer.Address.IsIPv4MappedToIPv6 ? peer.Address.MapToIPv4() : peer.Address)}]:{options.Port}";
        Stream stream = new NetworkStream(socket, ownsSocket: true);
        SmtpReply? banner = null;
        if (options.Tls != DownstreamTlsMode.None)
        {
            try
            {
                (stream, banner) = await StartTlsAsync(stream, options, remote, ct).ConfigureAwait(false);
            }
            catch
            {
                await stream.DisposeAsync().ConfigureAwait(false);
                throw;
            }
        }
        var client = new DownstreamClient(socket, stream, banner, options, remote);
        try
        {
            await client.GreetAsync(ct).ConfigureAwait(false);
            return client;
        }
        catch
        {
            client.Break(new DownstreamException($"downstream {remote}: connection setup failed"));
            await client.DisposeAsync().ConfigureAwait(false);
            throw;
        }
    }

    // Banner, EHLO, STARTTLS and the handshake, one reply at a time on the plain stream. Returns
    // the stream to go on with (SslStream, or the plain one when opportunistic and not offered)
    // and the banner already read.
    private static async Task<(Stream, SmtpReply)> StartTlsAsync(Stream plain, DownstreamOptions options, string remote, CancellationToken ct)
    {
        var buffer = new byte[ReplyParser.MaxReplyLength];
        int filled = 0;
        using var cts = CancellationTokenSource.CreateLinkedTokenSource(ct);
        if (options.ReplyTimeout != Timeout.InfiniteTimeSpan) cts.CancelAfter(options.ReplyTimeout);

        async Task<SmtpReply> ReadReplyAsync(string what)
        {
            while (true)
            {
                var reader = new SequenceReader<byte>(new ReadOnlySequence<byte>(buffer, 0, filled));
                var status = ReplyParser.TryParseReply(ref reader, out var reply, out var error);
                if (status == ReplyParseResult.Complete)
                {
                    int used = (int)reader.Consumed;
                    Buffer.BlockCopy(buffer, used, buffer, 0, filled - used);
                    filled -= used;
                    return reply!;
                }
                if (status == ReplyParseResult.Error || filled == buffer.Length)
                    throw new DownstreamException($"downstream {remote} sent a malformed reply to {what} ({error})");
                int n;
                try { n = await plain.ReadAsync(buffer.AsMemory(filled), cts.Token).ConfigureAwait(false); }
                catch (OperationCanceledException) when (!ct.IsCancellationRequested)
                { throw new DownstreamException($"downstream {remote} did not reply within {Describe(options.ReplyTimeout)} to {what}"); }
                catch (IOException e) { throw new DownstreamException($"downstream {remote}: connection failed: {e.Message}", null, e); }
                if (n == 0) throw new DownstreamException($"downstream {remote} closed the connection while waiting for the reply to {what}");
                filled += n;
            }
        }

        async Task<SmtpReply> CommandAsync(string line)
        {
            try { await plain.WriteAsync(Encoding.ASCII.GetBytes(line + "\r\n"), cts.Token).ConfigureAwait(false); }
            catch (IOException e) { throw new DownstreamException($"downstream {remote}: sending {line} failed: {e.Message}", null, e); }
            return await ReadReplyAsync(line).ConfigureAwait(false);
        }

        var banner = await ReadReplyAsync("the connection (banner)").ConfigureAwait(false);
        if (banner.Code != 220) throw new DownstreamException($"downstream {remote} refused the connection: {banner}", banner);
        var ehlo = await CommandAsync($"EHLO {options.HeloName}").ConfigureAwait(false);
        bool offered = ehlo.IsPositiveCompletion && DownstreamCapabilities.Parse(ehlo).StartTls;
        if (!offered)
        {
            if (options.Tls == DownstreamTlsMode.Required)
                throw new DownstreamException($"downstream {remote} does not offer STARTTLS and TLS is required");
            return (plain, banner);
        }
        var go = await CommandAsync("STARTTLS").ConfigureAwait(false);
        if (go.Code != 220)
        {
            if (options.Tls == DownstreamTlsMode.Required || !go.IsTransient && !go.IsPermanent)
                throw new DownstreamException($"downstream {remote} refused STARTTLS: {go}", go);
            return (plain, banner);
        }
        if (filled > 0) throw new DownstreamException($"downstream {remote} sent data after its STARTTLS reply");
        var ssl = new SslStream(plain, leaveInnerStreamOpen: false);
        var tlsOptions = options.TlsClientOptions ?? new SslClientAuthenticationOptions { TargetHost = options.Host };
        try
        {
            await ssl.AuthenticateAsClientAsync(tlsOptions, cts.Token).ConfigureAwait(false);
        }
        catch (Exception e) when (e is System.Security.Authentication.AuthenticationException or IOException
                                   || (e is OperationCanceledException && !ct.IsCancellationRequested))
        {
            await ssl.DisposeAsync().ConfigureAwait(false);
            throw new DownstreamException($"downstream {remote}: TLS handshake failed: {e.Message}", null, e);
        }
        return (ssl, banner);
    }

    private async Task GreetAsync(CancellationToken ct)
    {
        if (_bannerBeforeTls is not null)
        {
            // RFC 3207 §4.2: after the handshake the client starts again with EHLO; there is no new banner.
            Banner = _bannerBeforeTls;
            _readLoop = ReadRepliesAsync();
            var again = await SendCommandAsync($"EHLO {_options.HeloName}", ct).ConfigureAwait(false);
            if (!again.IsPositiveCompletion)
                throw Break(new DownstreamException($"downstream {RemoteDescription} refused EHLO after STARTTLS: {again}", again));
            EhloReply = again;
            Capabilities = DownstreamCapabilities.Parse(again);
            return;
        }

        // §3.1: the server speaks first; the banner is the reply to the connection itself.
        var banner = Enqueue("the connection (banner)", _options.ReplyTimeout, ct, flushed: true);
        _readLoop = ReadRepliesAsync();

        Banner = await banner.Task.ConfigureAwait(false);
        if (Banner.Code != 220)
            throw Refused(new DownstreamException($"downstream {RemoteDescription} refused the connection: {Banner}", Banner));

        var ehlo = await SendCommandAsync($"EHLO {_options.HeloName}", ct).ConfigureAwait(false);
        if (ehlo.IsPermanent)
        {
            // §4.1.4: a server that does not know EHLO answers 5xx; HELO then gets a plain session.
            var helo = await SendCommandAsync($"HELO {_options.HeloName}", ct).ConfigureAwait(false);
            if (!helo.IsPositiveCompletion)
                throw Break(new DownstreamException($"downstream {RemoteDescription} refused HELO: {helo}", helo));
            EhloReply = helo;
            return;
        }
        if (!ehlo.IsPositiveCompletion)
            throw Refused(new DownstreamException($"downstream {RemoteDescription} refused EHLO: {ehlo}", ehlo));
        EhloReply = ehlo;
        Capabilities = DownstreamCapabilities.Parse(ehlo);
    }

    public Task<SmtpReply> SendCommandAsync(string commandLine, CancellationToken ct = default)
    {
        ArgumentNullException.ThrowIfNull(commandLine);
        // No CR/LF/NUL: a command must never smuggle a second command onto the wire.
        if (commandLine.Length == 0 || commandLine.AsSpan().IndexOfAny('\r', '\n', '\0') >= 0)
            throw new ArgumentException("a command line must be non-empty and contain no CR, LF or NUL", nameof(commandLine));
        ThrowIfBroken();
        string verb = VerbOf(commandLine);
        return SendCommandCoreAsync(commandLine, verb, GroupEnders.Contains(verb), ct);
    }

    // A SASL response line (RFC 4954 §4) is a secret, not a command: it is written as given but
    // named "AUTH response" in every error and log line, never by its text. Sent at once, as it
    // ends the client's turn in the exchange.
    public Task<SmtpReply> SendSaslResponseAsync(string response, CancellationToken ct = default)
    {
        ArgumentNullException.ThrowIfNull(response);
        if (response.AsSpan().IndexOfAny('\r', '\n', '\0') >= 0)
            throw new ArgumentException("a SASL response must contain no CR, LF or NUL", nameof(response));
        ThrowIfBroken();
        return SendCommandCoreAsync(response, SaslResponseLabel, endsGroup: true, ct);
    }

    public Task<SmtpReply> MailAsync(string reversePath, string? parameters = null, CancellationToken ct = default) =>
        SendPathCommand("MAIL FROM:", "MAIL", reversePath, parameters, ct);

    public Task<SmtpReply> RcptAsync(string forwardPath, string? parameters = null, CancellationToken ct = default) =>
        SendPathCommand("RCPT TO:", "RCPT", forwardPath, parameters, ct);

    // MAIL and RCPT are written from their parts: no command string is built for them.
    private Task<SmtpReply> SendPathCommand(string head, string verb, string path, string? parameters, CancellationToken ct)
    {
        ArgumentNullException.ThrowIfNull(path);
        // No CR/LF/NUL: a command must never smuggle a second command onto the wire.
        if (path.AsSpan().IndexOfAny('\r', '\n', '\0') >= 0 || parameters.AsSpan().IndexOfAny('\r', '\n', '\0') >= 0)
            throw new ArgumentException("a command line must be non-empty and contain no CR, LF or NUL", nameof(path));
        ThrowIfBroken();
        return SendCommandCoreAsync(new CommandLine(head, path, string.IsNullOrEmpty(parameters) ? null : parameters), verb, endsGroup: false, ct);
    }

    public Task<SmtpReply> RsetAsync(CancellationToken ct = default) => SendFixedCommand("RSET", ct);

    public Task<SmtpReply> NoopAsync(CancellationToken ct = default) => SendFixedCommand("NOOP", ct);

    public Task<SmtpReply> QuitAsync(CancellationToken ct = default) => SendFixedCommand("QUIT", ct);

    // A one-word group-ending command needs neither checking nor naming.
    private Task<SmtpReply> SendFixedCommand(string verb, CancellationToken ct)
    {
        ThrowIfBroken();
        return SendCommandCoreAsync(verb, verb, endsGroup: true, ct);
    }

    // Sends the attributes the server listed after XFORWARD (others are dropped), values in xtext,
    // split over several commands when one would pass 512 characters. Null when nothing was sent.
    // Pipelined like MAIL: with PIPELINING it is buffered until the next flush.
    public Task<SmtpReply?> XForwardAsync(IReadOnlyList<KeyValuePair<string, string>> attributes, CancellationToken ct = default)
    {
        ArgumentNullException.ThrowIfNull(attributes);
        ThrowIfBroken();
        var commands = new List<string>();
        var line = new StringBuilder("XFORWARD");
        foreach (var (name, value) in attributes)
        {
            if (string.IsNullOrEmpty(name) || !name.All(c => char.IsAsciiLetterOrDigit(c) || c == '_' || c == '-'))
                throw new ArgumentException($"invalid XFORWARD attribute name '{name}'", nameof(attributes));
            if (!Capabilities.XForward.Contains(name)) continue;
            string item = $"{name.ToUpperInvariant()}={XText.Encode(value ?? "")}";
            if (line.Length > "XFORWARD".Length && line.Length + 1 + item.Length > MaxXForwardLine)
            {
                commands.Add(line.ToString());
                line.Clear().Append("XFORWARD");
            }
            line.Append(' ').Append(item);
        }
        if (line.Length > "XFORWARD".Length) commands.Add(line.ToString());
        if (commands.Count == 0) return Task.FromResult<SmtpReply?>(null);

        // Issue every command now, in order, so they land in the current pipelining group.
        var replies = new Task<SmtpReply>[commands.Count];
        for (int i = 0; i < commands.Count; i++) replies[i] = SendCommandAsync(commands[i], ct);
        return FirstFailureOrLastAsync(replies);
    }

    // The attributes of the last XCLIENT the server accepted on this connection (as passed to
    // XClientAsync: an array passed is kept, not copied), and its reply when it refused one; both null until XCLIENT was sent.
    public IReadOnlyList<KeyValuePair<string, string>>? XClientAttributes { get; private set; }
    public SmtpReply? XClientRefusal { get; private set; }

    // Postfix's XCLIENT (XCLIENT_README): the server takes over the real client's attributes and
    // starts the session again as if that client had connected, answering 220. The client must
    // then greet again: EHLO with heloName (the real client's HELO when it is one word, else
    // ours), whose reply replaces Capabilities. Only attributes the server listed are sent, in
    // xtext; a value over 255 characters (the server's limit) goes as [UNAVAILABLE]. One command
    // when it fits in 512 characters, because every XCLIENT resets HELO, PROTO and LOGIN unless it
    // carries them and once ADDR is sent the server usually stops accepting XCLIENT; otherwise
    // HELO and PROTO go first and the rest (NAME and ADDR included) last.
    // Returns null when nothing was sent (not offered), the 2xx that accepted it, or the reply
    // that refused it: XCLIENT's own (the session goes on as it was, except after 421, which breaks
    // the client) or the new EHLO's (the session is unusable then: the client is broken).
    // Must not be called inside a mail transaction (between MAIL and the end of data or RSET).
    // Pooled builder: once per message on a lent connection; awaited once by its caller.
    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder<>))]
    public async ValueTask<SmtpReply?> XClientAsync(IReadOnlyList<KeyValuePair<string, string>> attributes, string? heloName,
        CancellationToken ct = default)
    {
        ArgumentNullException.ThrowIfNull(attributes);
        ThrowIfBroken();
        var (firstCommand, secondCommand) = XClientCommands(attributes);
        if (firstCommand is null) return null;

        SmtpReply reply = null!;
        SmtpReply? refusal = null;
        bool restarted = false;
        for (int i = 0; i < 2; i++)
        {
            string? command = i == 0 ? firstCommand : secondCommand;
            if (command is null) break;
            // A group ender: the reply decides whether the session starts again.
            reply = await SendCommandCoreAsync(command, "XCLIENT", endsGroup: true, ct).ConfigureAwait(false);
            if (reply.Code == 421)
            {
                // The server's own close may have broken the client first: report the 421 either way.
                var closing = new DownstreamException($"downstream {RemoteDescription} closed the connection after XCLIENT: {reply}", reply);
                Break(closing);
                throw closing;
            }
            if (!reply.IsPositiveCompletion)
            {
                refusal = reply;
                break;
            }
            restarted |= reply.Code == 220;   // before Postfix 2.3 the session simply went on (250)
        }
        XClientRefusal = refusal;
        if (refusal is null) XClientAttributes = attributes as KeyValuePair<string, string>[] ?? attributes.ToArray();   // an array is the caller's to give away
        if (!restarted) return refusal ?? reply;

        bool clientHelo = heloName is { Length: > 0 and <= MaxXClientValue } && !heloName.AsSpan().ContainsAnyExceptInRange('!', '~');
        var ehlo = await SendCommandAsync(string.Concat("EHLO ", clientHelo ? heloName : _options.HeloName), ct).ConfigureAwait(false);
        if (!ehlo.IsPositiveCompletion)
        {
            Break(new DownstreamException($"downstream {RemoteDescription} refused EHLO after XCLIENT: {ehlo}", ehlo));
            return ehlo;
        }
        EhloReply = ehlo;
        Capabilities = DownstreamCapabilities.Parse(ehlo);
        return refusal ?? reply;
    }

    // The XCLIENT command for attributes (see XClientAsync), or HELO and PROTO in the first and the
    // rest in the second when one would be too long; (null, null) when the server offers none of them.
    // Written into one pooled buffer: the pooled connection tells every client it serves.
    private (string? First, string? Second) XClientCommands(IReadOnlyList<KeyValuePair<string, string>> attributes)
    {
        const string Verb = "XCLIENT";
        int room = Verb.Length;
        for (int i = 0; i < attributes.Count; i++)
        {
            string name = attributes[i].Key;
            if (string.IsNullOrEmpty(name) || name.AsSpan().ContainsAnyExcept(XClientNameChars))
                throw new ArgumentException($"invalid XCLIENT attribute name '{name}'", nameof(attributes));
            room += 2 + name.Length + Math.Max(MaxXClientValue, "[UNAVAILABLE]".Length);
        }

        char[] buffer = ArrayPool<char>.Shared.Rent(room);
        try
        {
            Verb.CopyTo(buffer);
            int length = Verb.Length;
            int firstItems = AppendXClientItems(attributes, buffer, ref length, heloAndProto: true);
            int firstLength = length;
            int lastItems = AppendXClientItems(attributes, buffer, ref length, heloAndProto: false);
            if (firstItems + lastItems == 0) return (null, null);
            if (length <= MaxXForwardLine - 2 || firstItems == 0 || lastItems == 0) return (new string(buffer, 0, length), null);
            return (new string(buffer, 0, firstLength), string.Concat(Verb, buffer.AsSpan(firstLength, length - firstLength)));
        }
        finally
        {
            ArrayPool<char>.Shared.Return(buffer);
        }
    }

    // Appends " NAME=value" for each offered attribute of the group; returns how many.
    private int AppendXClientItems(IReadOnlyList<KeyValuePair<string, string>> attributes, char[] buffer, ref int length, bool heloAndProto)
    {
        int items = 0;
        for (int i = 0; i < attributes.Count; i++)
        {
            var (name, value) = attributes[i];
            bool first = name.Equals("HELO", StringComparison.OrdinalIgnoreCase) || name.Equals("PROTO", StringComparison.OrdinalIgnoreCase);
            if (first != heloAndProto || !Capabilities.XClient.Contains(name)) continue;
            string encoded = XText.Encode(value ?? "");
            if (encoded.Length is 0 or > MaxXClientValue) encoded = "[UNAVAILABLE]";
            buffer[length++] = ' ';
            length += name.AsSpan().ToUpperInvariant(buffer.AsSpan(length));
            buffer[length++] = '=';
            encoded.CopyTo(0, buffer, length, encoded.Length);
            length += encoded.Length;
            items++;
        }
        return items;
    }

    public async Task FlushAsync(CancellationToken ct = default)
    {
        ThrowIfBroken();
        await _writeGate.WaitAsync(ct).ConfigureAwait(false);
        try
        {
            ThrowIfBroken();
            await FlushOutputAsync("buffered commands", ct).ConfigureAwait(false);
        }
        finally
        {
            _writeGate.Release();
        }
    }

    // Sends headerPrefix then body as one message: BDAT chunks when the server offers CHUNKING
    // (bytes as they are), otherwise DATA with dot-stuffing. Returns the final reply, or the reply
    // that refused DATA / a BDAT chunk. The envelope (MAIL, RCPT) must already have been sent.
    // Its failures come as the task's, as from an async method, without the wrapper's state machine.
    // A pooled ValueTask, as the streamed calls: the gateway sends one per message, awaited once.
    public ValueTask<SmtpReply> SendMessageAsync(ReadOnlyMemory<byte> headerPrefix, IMessageContent body, CancellationToken ct = default)
    {
        if (body is null) return ValueTask.FromException<SmtpReply>(new ArgumentNullException(nameof(body)));
        if (Volatile.Read(ref _failure) is { } failure) return ValueTask.FromException<SmtpReply>(Unusable(failure));
        if (Volatile.Read(ref _streamed) is not null)
            return ValueTask.FromException<SmtpReply>(new DownstreamException($"downstream {RemoteDescription}: a message is still being sent"));
        return SendWholeAsync(headerPrefix, body, ct);
    }

    // The whole message is the streamed one begun and ended at once (BeginStreamAsync, EndStreamAsync).
    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder<>))]
    private async ValueTask<SmtpReply> SendWholeAsync(ReadOnlyMemory<byte> headerPrefix, IMessageContent body, CancellationToken ct)
    {
        if (await BeginStreamAsync(headerPrefix, ct).ConfigureAwait(false) is { } refused) return refused;
        return await EndStreamAsync(body, ct).ConfigureAwait(false);
    }

    private async Task<Task<SmtpReply>> SendChunkAsync(ReadOnlyMemory<byte> headerPrefix, IMessageContent body, long offset,
        int count, bool last, CancellationToken ct)
    {
        await _writeGate.WaitAsync(ct).ConfigureAwait(false);
        try
        {
            ThrowIfBroken();
            if (!Capabilities.Pipelining) await AwaitOutstandingAsync(ct).ConfigureAwait(false);
            WriteLine(last ? $"BDAT {count} LAST" : $"BDAT {count}");
            await StreamContentAsync(headerPrefix, body, offset, count, null, "BDAT data", ct).ConfigureAwait(false);
            // Enqueued only now: the reply clock starts when the whole chunk is on the wire.
            var pending = Enqueue(last ? "BDAT LAST" : "BDAT", last ? _options.DataReplyTimeout : _options.ReplyTimeout, ct);
            await FlushOutputAsync("BDAT data", ct).ConfigureAwait(false);
            return pending.Task;
        }
        finally
        {
            _writeGate.Release();
        }
    }

    // A message sent while it is still arriving (the gateway forwards large mail as it comes in,
    // so the downstream is busy while the client sends and only the end waits for the verdict).
    // BeginStreamAsync sends DATA (with CHUNKING, nothing yet); ContinueStreamAsync sends what
    // arrived since, as data or as a BDAT chunk of its own; EndStreamAsync the rest and the end
    // of data ("." or BDAT LAST), returning the final reply. AbandonStream closes the connection
    // with the data never ended, so the server discards what it got: only the end of data
    // delivers (RFC 5321 §4.1.1.4, RFC 3030 §2). Until the end, the connection counts as broken
    // to everyone else (IsBroken): no command can land inside the message, no pool keeps it, and
    // closing it sends no QUIT that would be read as message text.
    public bool IsStreaming => Volatile.Read(ref _streamed) is not null && Volatile.Read(ref _failure) is null;

    // Null once the message is under way; the server's refusal of DATA otherwise (nothing was
    // begun, the connection is as it was). The streamed calls return pooled ValueTasks: each is
    // made once per message and awaited once.
    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder<>))]
    public async ValueTask<SmtpReply?> BeginStreamAsync(ReadOnlyMemory<byte> headerPrefix, CancellationToken ct = default)
    {
        if (IsStreaming) throw new InvalidOperationException("a message is already being sent on this connection");
        ThrowIfBroken();
        DotStuffer? stuffer = null;
        if (!Capabilities.Chunking)
        {
            var go = await SendFixedCommand("DATA", ct).ConfigureAwait(false);
            if (go.Code != 354)
            {
                if (go.IsPositive)
                    throw Break(new DownstreamException($"downstream {RemoteDescription} answered DATA with {go}, expected 354", go));
                return go;
            }
            stuffer = _stuffer ??= new DotStuffer();
            stuffer.Reset();
        }
        Volatile.Write(ref _streamed, new StreamedMessage(headerPrefix, stuffer));
        return null;
    }

    // Sends what body holds beyond what was sent. A failure (a refused chunk, a write that fails
    // or is canceled) breaks the client: the message cannot be resumed.
    public async Task ContinueStreamAsync(IMessageContent body, CancellationToken ct = default)
    {
        var streamed = Volatile.Read(ref _streamed) ?? throw new InvalidOperationException("no message is being sent on this connection");
        try
        {
            await SendStreamedAsync(streamed, body, ending: false, ct).ConfigureAwait(false);
        }
        catch (Exception e)
        {
            throw BreakStream(e, "sending the message while it arrives");
        }
    }

    // Sends the rest of body and ends the message; returns the final reply (or the BDAT chunk's
    // refusal). The connection is an ordinary one again once the end is on the wire.
    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder<>))]
    public async ValueTask<SmtpReply> EndStreamAsync(IMessageContent body, CancellationToken ct = default)
    {
        var streamed = Volatile.Read(ref _streamed) ?? throw new InvalidOperationException("no message is being sent on this connection");
        Task<SmtpReply> final;
        try
        {
            final = (await SendStreamedAsync(streamed, body, ending: true, ct).ConfigureAwait(false))!;
        }
        catch (Exception e)
        {
            throw BreakStream(e, "ending the message");
        }
        return await final.ConfigureAwait(false);
    }

    // The message will not be delivered as sent: the connection is closed without its end.
    public void AbandonStream(string why)
    {
        if (!IsStreaming) return;
        Break(new DownstreamException($"downstream {RemoteDescription}: the message sent while it arrived was abandoned ({why})"));
    }

    // Returns the final reply to come when ending, null otherwise.
    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder<>))]
    private async ValueTask<Task<SmtpReply>?> SendStreamedAsync(StreamedMessage streamed, IMessageContent body, bool ending, CancellationToken ct)
    {
        long total = streamed.Prefix.Length + body.Length;
        if (streamed.Stuffer is { } stuffer)
        {
            await _writeGate.WaitAsync(ct).ConfigureAwait(false);
            try
            {
                ThrowIfBroken();
                await StreamContentAsync(streamed.Prefix, body, streamed.Sent, total - streamed.Sent, stuffer, "message data", ct).ConfigureAwait(false);
                streamed.Sent = total;
                if (!ending)
                {
                    await FlushOutputAsync("message data", ct).ConfigureAwait(false);
                    return null;
                }
                stuffer.Finish(_output);
                var end = Enqueue("end of data", _options.DataReplyTimeout, ct);
                Volatile.Write(ref _streamed, null);   // ended: from here on it is an ordinary connection
                await FlushOutputAsync("end of data", ct).ConfigureAwait(false);
                return end.Task;
            }
            finally
            {
                _writeGate.Release();
            }
        }

        // BDAT: each stretch a chunk (at most ChunkSize), the end a LAST chunk, perhaps empty.
        var chunks = streamed.Chunks;
        do
        {
            // A refused chunk fails the transaction (RFC 3030 §3): nothing more is worth sending.
            if (FirstCompletedFailure(chunks) is { } refused)
            {
                if (!ending) throw new DownstreamException($"downstream {RemoteDescription} refused a BDAT chunk: {refused}", refused);
                Volatile.Write(ref _streamed, null);   // the transaction is over: the connection is an ordinary one
                return FirstFailureOrLastAsync(chunks)!;
            }
            int count = (int)Math.Min(ChunkSize, total - streamed.Sent);
            bool last = ending && streamed.Sent + count == total;
            if (count == 0 && !last) break;
            chunks.Add(await SendChunkAsync(streamed.Prefix, body, streamed.Sent, count, last, ct).ConfigureAwait(false));
            streamed.Sent += count;
            if (last) Volatile.Write(ref _streamed, null);
            else if (!Capabilities.Pipelining && await chunks[^1].ConfigureAwait(false) is { IsPositiveCompletion: false } refusal)
            {
                if (!ending) throw new DownstreamException($"downstream {RemoteDescription} refused a BDAT chunk: {refusal}", refusal);
                Volatile.Write(ref _streamed, null);
                return Task.FromResult(refusal);
            }
            if (last) return FirstFailureOrLastAsync(chunks)!;
        }
        while (true);
        return null;
    }

    // Any failure while a streamed message is open ends it for good: the connection is closed.
    // A DownstreamException or a cancellation is rethrown as it came.
    private Exception BreakStream(Exception e, string what)
    {
        var failure = Break(e as DownstreamException ?? new DownstreamException($"downstream {RemoteDescription}: {what} failed: {e.Message}", null, e));
        return e is OperationCanceledException or DownstreamException ? e : failure;
    }

    private sealed class StreamedMessage(ReadOnlyMemory<byte> prefix, DotStuffer? stuffer)
    {
        public ReadOnlyMemory<byte> Prefix { get; } = prefix;
        public DotStuffer? Stuffer { get; } = stuffer;   // DATA; null for BDAT
        public long Sent;                                 // bytes of prefix + body on the wire
        public List<Task<SmtpReply>> Chunks => _chunks ??= [];   // BDAT only
        private List<Task<SmtpReply>>? _chunks;
    }

    // Writes [offset, offset+count) of prefix+body into the output, dot-stuffed when a stuffer is
    // given, flushing every 64 KiB. The body is read straight into the output's own buffer; only
    // a piece with a line that starts with "." goes through a copy to be stuffed. Any failure
    // here leaves the server mid-message, so the connection is broken.
    private async Task StreamContentAsync(ReadOnlyMemory<byte> prefix, IMessageContent body, long offset,
        long count, DotStuffer? stuffer, string what, CancellationToken ct)
    {
        try
        {
            long end = offset + count;
            long unflushed = 0;
            while (offset < end)
            {
                int n;
                if (offset < prefix.Length)
                {
                    n = (int)Math.Min(Math.Min(prefix.Length - offset, end - offset), FlushThreshold);
                    var piece = prefix.Span.Slice((int)offset, n);
                    if (stuffer is null) _output.Write(piece);
                    else stuffer.Write(piece, _output);
                }
                else
                {
                    int want = (int)Math.Min(ReadPiece, end - offset);
                    var span = _output.GetSpan(want)[..want];
                    n = body.Read(offset - prefix.Length, span);
                    if (n <= 0)
                        throw new InvalidOperationException($"message content ended at {offset - prefix.Length} of {body.Length} bytes");
                    if (stuffer is null || stuffer.TryPassThrough(span[..n])) _output.Advance(n);
                    else StuffCopy(stuffer, span[..n]);
                }
                offset += n;
                unflushed += n;
                if (unflushed >= FlushThreshold)
                {
                    await FlushOutputAsync(what, ct).ConfigureAwait(false);
                    unflushed = 0;
                }
            }
        }
        catch (Exception ex) when (ex is not DownstreamException)
        {
            var failure = Break(new DownstreamException($"downstream {RemoteDescription}: sending {what} failed: {ex.Message}", null, ex));
            if (ex is OperationCanceledException) throw;
            throw failure;
        }
    }

    // The piece sits unadvanced in the output's buffer, which stuffing writes over: copy it out first.
    private void StuffCopy(DotStuffer stuffer, ReadOnlySpan<byte> piece)
    {
        var copy = ArrayPool<byte>.Shared.Rent(piece.Length);
        try
        {
            piece.CopyTo(copy);
            stuffer.Write(copy.AsSpan(0, piece.Length), _output);
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(copy);
        }
    }

    // With PIPELINING and the write turn free, the command is written (and flushed when it ends a
    // group) without an async state machine: the reply task is the pending reply's own.
    private Task<SmtpReply> SendCommandCoreAsync(CommandLine commandLine, string verb, bool endsGroup, CancellationToken ct)
    {
        var entered = _writeGate.WaitAsync(ct);
        if (!entered.IsCompletedSuccessfully || !Capabilities.Pipelining)
            return SendCommandSlowAsync(entered, commandLine, verb, endsGroup, ct);
        PendingReply pending;
        ValueTask flush = default;
        try
        {
            ThrowIfBroken();
            pending = WriteCommand(commandLine, verb, ct);
            if (endsGroup) flush = FlushOutputAsync(verb, ct);
        }
        catch (Exception e)
        {
            _writeGate.Release();
            return Task.FromException<SmtpReply>(e);
        }
        if (!flush.IsCompleted) return FlushThenReplyAsync(flush, pending, ct);
        _writeGate.Release();
        try
        {
            flush.GetAwaiter().GetResult();
        }
        catch (Exception e)
        {
            return Task.FromException<SmtpReply>(e);
        }
        return pending.Task;
    }

    // Under the write gate: the command into the output and its reply queued behind the others.
    private PendingReply WriteCommand(CommandLine commandLine, string verb, CancellationToken ct)
    {
        // A command inside a message's data would be part of the message.
        if (Volatile.Read(ref _streamed) is not null)
            throw new DownstreamException($"downstream {RemoteDescription}: {verb} refused inside a message still being sent");
        commandLine.WriteTo(_output);
        var pending = Enqueue(verb, _options.ReplyTimeout, ct);
        if (verb == "AUTH") Volatile.Write(ref _authAttempted, true);
        return pending;
    }

    private async Task<SmtpReply> FlushThenReplyAsync(ValueTask flush, PendingReply pending, CancellationToken ct)
    {
        try
        {
            await flush.ConfigureAwait(false);
        }
        finally
        {
            _writeGate.Release();
        }
        return await pending.Task.ConfigureAwait(false);
    }

    private async Task<SmtpReply> SendCommandSlowAsync(Task entered, CommandLine commandLine, string verb, bool endsGroup, CancellationToken ct)
    {
        PendingReply pending;
        await entered.ConfigureAwait(false);
        try
        {
            ThrowIfBroken();
            bool pipelining = Capabilities.Pipelining;
            // Lock-step without PIPELINING (RFC 5321 §4.3): the previous reply must be in first.
            if (!pipelining) await AwaitOutstandingAsync(ct).ConfigureAwait(false);
            pending = WriteCommand(commandLine, verb, ct);
            if (!pipelining || endsGroup) await FlushOutputAsync(verb, ct).ConfigureAwait(false);
        }
        finally
        {
            _writeGate.Release();
        }
        return await pending.Task.ConfigureAwait(false);
    }

    // Lock-step: waits until the last command sent has its reply (or the client broke). A caller
    // that stopped waiting for that reply (its token) does not let the next command go early.
    private async Task AwaitOutstandingAsync(CancellationToken ct)
    {
        while (true)
        {
            Task wait;
            lock (_gate)
            {
                var last = _lastPending;
                if (last is null || last.Answered || _failure is not null) break;
                wait = last.Task.IsCanceled ? last.WhenAnswered() : last.Task;
            }
            try
            {
                await wait.WaitAsync(ct).ConfigureAwait(false);
            }
            catch (DownstreamException)
            {
                // Its own caller sees the failure; this command reports it through ThrowIfBroken.
            }
            catch (OperationCanceledException) when (!ct.IsCancellationRequested)
            {
                // That command's caller gave up waiting; its reply is still to come.
            }
        }
        ThrowIfBroken();
    }

    // A command as written: Text, then Path and " " Parameters when given, then CRLF.
    private readonly record struct CommandLine(string Text, string? Path = null, string? Parameters = null)
    {
        public static implicit operator CommandLine(string text) => new(text);

        public void WriteTo(PipeWriter output)
        {
            int chars = Text.Length + (Path?.Length ?? 0) + (Parameters is null ? 0 : Parameters.Length + 1);
            var span = output.GetSpan(Encoding.UTF8.GetMaxByteCount(chars) + 2);
            int n = Encoding.UTF8.GetBytes(Text, span);
            if (Path is not null) n += Encoding.UTF8.GetBytes(Path, span[n..]);
            if (Parameters is not null)
            {
                span[n++] = (byte)' ';
                n += Encoding.UTF8.GetBytes(Parameters, span[n..]);
            }
            span[n++] = (byte)'\r';
            span[n++] = (byte)'\n';
            output.Advance(n);
        }
    }

    private void WriteLine(string line)
    {
        int max = Encoding.UTF8.GetMaxByteCount(line.Length) + 2;
        var span = _output.GetSpan(max);
        int n = Encoding.UTF8.GetBytes(line, span);
        span[n++] = (byte)'\r';
        span[n++] = (byte)'\n';
        _output.Advance(n);
    }

    // Queues the reply a command (written or about to be) waits for. Its task is canceled when
    // the caller's token is; the reply, when it comes, is still consumed in its turn.
    private PendingReply Enqueue(string verb, TimeSpan timeout, CancellationToken ct, bool flushed = false)
    {
        var pending = new PendingReply(verb, timeout, ct) { Flushed = flushed };
        bool register = false;
        lock (_gate)
        {
            if (_failure is not null) throw Unusable(_failure);
            _pending.Enqueue(pending);
            _lastPending = pending;
            if (verb == "MAIL") _transactionOpen = true;
            if (flushed) StartHeadClock();
            if (ct.CanBeCanceled)
            {
                register = true;
                foreach (var (token, _) in _registrations)
                    if (token == ct) register = false;
            }
        }
        if (register) Register(ct);
        return pending;
    }

    // Registered outside _gate: a token already canceled runs the callback at once, on this thread.
    private void Register(CancellationToken ct)
    {
        var registration = ct.UnsafeRegister(static (state, token) => ((DownstreamClient)state!).CancelWaiters(token), this);
        lock (_gate)
        {
            if (_failure is null)
            {
                // Tokens no outstanding command carries any more (an earlier session's) are let go.
                for (int i = _registrations.Count - 1; i >= 0; i--)
                {
                    var token = _registrations[i].Token;
                    bool used = false;
                    foreach (var pending in _pending) used |= pending.Token == token;
                    if (used) continue;
                    _registrations[i].Registration.Unregister();
                    _registrations.RemoveAt(i);
                }
                _registrations.Add((ct, registration));
                return;
            }
        }
        registration.Unregister();
    }

    private void ReleaseRegistrations()
    {
        foreach (var (_, registration) in _registrations) registration.Unregister();
        _registrations.Clear();
    }

    private void CancelWaiters(CancellationToken token)
    {
        List<PendingReply>? canceled = null;
        lock (_gate)
        {
            foreach (var pending in _pending)
                if (pending.Token == token) (canceled ??= []).Add(pending);
        }
        if (canceled is null) return;
        foreach (var pending in canceled) pending.TrySetCanceled(token);
    }

    // Starts the reply clock of the oldest command when it is on the wire and has none yet: the
    // deadline runs from the flush or from the previous reply, whichever is later. One timer per
    // connection, armed for the earliest deadline, checks it; a command costs a timestamp.
    private void StartHeadClock()
    {
        if (_failure is not null || _pending.Count == 0) return;
        var head = _pending.Peek();
        if (!head.Flushed || head.Deadline != 0) return;
        if (head.Timeout == Timeout.InfiniteTimeSpan)
        {
            head.Deadline = long.MaxValue;
            return;
        }
        long now = Stopwatch.GetTimestamp();
        head.Deadline = now + (long)(head.Timeout.TotalSeconds * Stopwatch.Frequency);
        if (_timerDue == 0 || head.Deadline < _timerDue) ArmTimer(head.Deadline, now);
    }

    private void ArmTimer(long due, long now)
    {
        _timerDue = due;
        long ms = Math.Max(1, (long)Math.Ceiling(Stopwatch.GetElapsedTime(now, due).TotalMilliseconds));
        if (_deadlineTimer is null)
        {
            // The timer outlives the call that arms it: it must not carry that caller's context.
            using (ExecutionContext.SuppressFlow())
                _deadlineTimer = new Timer(static state => ((DownstreamClient)state!).OnDeadline(), this, ms, Timeout.Infinite);
        }
        else _deadlineTimer.Change(ms, Timeout.Infinite);
    }

    private void OnDeadline()
    {
        DownstreamException? timeout = null;
        lock (_gate)
        {
            if (_failure is not null) return;
            _timerDue = 0;
            if (_pending.Count == 0) return;
            var head = _pending.Peek();
            if (!head.Flushed || head.Deadline is 0 or long.MaxValue) return;
            long now = Stopwatch.GetTimestamp();
            if (head.Deadline > now) ArmTimer(head.Deadline, now);
            else timeout = ReplyTimeout(head);
        }
        if (timeout is not null) Break(timeout);
    }

    // Marks every buffered command flushed and sends the output. A flush the socket takes at once
    // (the usual case) needs no timer; one that waits is bounded by ReplyTimeout.
    private ValueTask FlushOutputAsync(string what, CancellationToken ct)
    {
        // Marked before the write: a fast server may answer before FlushAsync even returns.
        lock (_gate)
        {
            foreach (var pending in _pending) pending.Flushed = true;
            StartHeadClock();
        }

        ValueTask<FlushResult> flush;
        try
        {
            flush = _output.FlushAsync(ct);
        }
        catch (Exception ex)
        {
            return ValueTask.FromException(FlushFailure(ex, what, ct));
        }
        if (!flush.IsCompletedSuccessfully) return WaitForFlushAsync(flush, what, ct);
        _ = flush.Result;
        return ValueTask.CompletedTask;
    }

    private async ValueTask WaitForFlushAsync(ValueTask<FlushResult> flush, string what, CancellationToken ct)
    {
        using var timeout = new CancellationTokenSource();
        using var cancels = timeout.Token.UnsafeRegister(static output => ((PipeWriter)output!).CancelPendingFlush(), _output);
        if (_options.ReplyTimeout != Timeout.InfiniteTimeSpan) timeout.CancelAfter(_options.ReplyTimeout);
        FlushResult result;
        try
        {
            result = await flush.ConfigureAwait(false);
        }
        catch (Exception ex)
        {
            throw FlushFailure(ex, what, ct);
        }
        if (result.IsCanceled)
            throw Break(new DownstreamException(
                $"downstream {RemoteDescription} did not accept {what} within {Describe(_options.ReplyTimeout)}"));
    }

    private Exception FlushFailure(Exception ex, string what, CancellationToken ct)
    {
        if (ex is DownstreamException) return ex;
        if (ex is OperationCanceledException && ct.IsCancellationRequested)
        {
            Break(new DownstreamException($"downstream {RemoteDescription}: sending {what} was canceled"));
            return ex;
        }
        return Break(new DownstreamException($"downstream {RemoteDescription}: sending {what} failed: {ex.Message}", null, ex));
    }

    // The one reader: reads the stream itself, parses every complete reply in what arrived and
    // matches each to the oldest outstanding command, then completes them on this thread (no
    // hop to another). All replies in a read are matched before any caller runs, so a reply
    // can never be taken for the answer to a command its caller sent after it arrived. Reply
    // deadlines are the timer's (OnDeadline), which breaks the client and so ends the read.
    private async Task ReadRepliesAsync()
    {
        var buffer = ArrayPool<byte>.Shared.Rent(4096);   // rented: a connection costs no buffer of its own
        int start = 0, filled = 0;
        var answered = new List<(PendingReply Pending, SmtpReply Reply)>();
        try
        {
            while (true)
            {
                if (filled == buffer.Length)
                {
                    if (start > 0)
                    {
                        Buffer.BlockCopy(buffer, start, buffer, 0, filled - start);
                        filled -= start;
                        start = 0;
                    }
                    else
                    {
                        // The parser refuses a reply past MaxReplyLength before the buffer outgrows it.
                        if (buffer.Length > ReplyParser.MaxReplyLength)
                            throw new DownstreamException($"downstream {RemoteDescription} sent a malformed reply (reply too long)"
                                + WaitingFor(Head()));
                        var larger = ArrayPool<byte>.Shared.Rent(buffer.Length * 2);
                        Buffer.BlockCopy(buffer, 0, larger, 0, filled);
                        ArrayPool<byte>.Shared.Return(buffer);
                        buffer = larger;
                    }
                }
                int n = await _stream.ReadAsync(buffer.AsMemory(filled)).ConfigureAwait(false);
                if (Volatile.Read(ref _failure) is not null) return;
                if (n == 0)
                    throw new DownstreamException($"downstream {RemoteDescription} closed the connection" + WaitingFor(Head()));
                filled += n;

                var reader = new SequenceReader<byte>(new ReadOnlySequence<byte>(buffer, start, filled - start));
                DownstreamException? error = null;
                while (error is null)
                {
                    var status = ReplyParser.TryParseReply(ref reader, out var reply, out var parseError);
                    if (status == ReplyParseResult.Incomplete) break;
                    if (status == ReplyParseResult.Error)
                        error = new DownstreamException($"downstream {RemoteDescription} sent a malformed reply ({parseError})"
                            + WaitingFor(Head()));
                    else if (Match(reply!) is { } pending) answered.Add((pending, reply!));
                    else error = new DownstreamException($"downstream {RemoteDescription} sent a reply no command asked for: {reply}", reply);
                }
                start += (int)reader.Consumed;
                if (start == filled) start = filled = 0;

                // A fault breaks the client first; the replies that came before it are still theirs.
                if (error is not null) Break(error);
                foreach (var (pending, reply) in answered) pending.TrySetResult(reply);
                answered.Clear();
                if (Volatile.Read(ref _failure) is not null) return;
            }
        }
        catch (Exception ex)
        {
            Break(ex as DownstreamException
                  ?? new DownstreamException($"downstream {RemoteDescription}: connection failed: {ex.Message}", null, ex));
            foreach (var (pending, reply) in answered) pending.TrySetResult(reply);
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }

    private static string WaitingFor(PendingReply? head) => head is null ? "" : $" while waiting for the reply to {head.Verb}";

    private DownstreamException ReplyTimeout(PendingReply head) =>
        new($"downstream {RemoteDescription} did not reply within {Describe(head.Timeout)} to {head.Verb}");

    // The oldest outstanding command when it is on the wire.
    private PendingReply? Head()
    {
        lock (_gate) return _pending.Count == 0 || !_pending.Peek().Flushed ? null : _pending.Peek();
    }

    // Takes the oldest outstanding command for this reply, or null when none was sent.
    private PendingReply? Match(SmtpReply reply)
    {
        lock (_gate)
        {
            // RFC 2920 §3.2: the server may not reply ahead of the commands it has received.
            if (_failure is not null || _pending.Count == 0 || !_pending.Peek().Flushed) return null;
            var pending = _pending.Dequeue();
            pending.Answered = true;
            if (ReferenceEquals(_lastPending, pending)) _lastPending = null;   // nothing for lock-step to wait for
            pending.SignalAnswered();
            // RFC 5321 §4.1.1.4/§4.1.1.5: the final reply to the data and RSET end the
            // transaction, and a refused MAIL never started one.
            if (pending.Verb switch
                {
                    "end of data" or "BDAT LAST" => true,
                    "RSET" => reply.IsPositiveCompletion,
                    "MAIL" => !reply.IsPositiveCompletion,
                    _ => false,
                })
                _transactionOpen = false;
            // Between transactions with nothing outstanding (a pooled connection, say), no caller's
            // token stays registered: a session's token must not keep anything of it alive.
            if (_pending.Count == 0 && !_transactionOpen) ReleaseRegistrations();
            StartHeadClock();
            return pending;
        }
    }

    // Marks the client broken (the first failure wins), closes the socket and fails every
    // outstanding reply. Returns the failure that broke the client.
    private DownstreamException Break(DownstreamException failure)
    {
        List<PendingReply> orphans;
        lock (_gate)
        {
            if (_failure is not null) return _failure;
            _failure = failure;
            orphans = [.. _pending];
            _pending.Clear();
            _deadlineTimer?.Dispose();
            _timerDue = 0;
            ReleaseRegistrations();
        }
        try
        {
            _socket.Shutdown(SocketShutdown.Both);
        }
        catch (Exception ex) when (ex is SocketException or ObjectDisposedException)
        {
            // Already gone.
        }
        _socket.Dispose();
        // Their callers run elsewhere, never inside whatever call broke the client (which may
        // hold the write turn); a failure is rare, so the hop costs nothing that matters.
        if (orphans.Count > 0)
            ThreadPool.UnsafeQueueUserWorkItem(static state =>
            {
                foreach (var pending in state.Orphans)
                {
                    pending.SignalAnswered();
                    pending.TrySetException(state.Failure);
                }
            }, (Orphans: orphans, Failure: failure), preferLocal: false);
        return failure;
    }

    // A refusal the server gave (its reply), reported even when its close broke the client first.
    private DownstreamException Refused(DownstreamException refusal)
    {
        Break(refusal);
        return refusal;
    }

    private void ThrowIfBroken()
    {
        var failure = Volatile.Read(ref _failure);
        if (failure is not null) throw Unusable(failure);
    }

    private static DownstreamException Unusable(DownstreamException failure) =>
        new($"the downstream connection is no longer usable: {failure.Message}", failure.Reply, failure);

    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) == 1) return;
        if (!IsBroken)
        {
            try
            {
                using var cts = new CancellationTokenSource(QuitTimeout);
                await QuitAsync(cts.Token).ConfigureAwait(false);
            }
            catch (Exception ex) when (ex is DownstreamException or OperationCanceledException)
            {
                // Best effort: the connection is closed either way.
            }
        }
        Break(new DownstreamException($"downstream {RemoteDescription}: the client was closed"));
        await _readLoop.ConfigureAwait(false);
        try
        {
            await _output.CompleteAsync().ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is IOException or ObjectDisposedException or InvalidOperationException)
        {
            // Unflushed bytes of a broken connection have nowhere to go.
        }
        await _stream.DisposeAsync().ConfigureAwait(false);
    }

    private static async Task<SmtpReply?> FirstFailureOrLastAsync(IReadOnlyList<Task<SmtpReply>> replies)
    {
        SmtpReply? failure = null, last = null;
        foreach (var task in replies)
        {
            last = await task.ConfigureAwait(false);
            if (!last.IsPositiveCompletion) failure ??= last;
        }
        return failure ?? last;
    }

    private static SmtpReply? FirstCompletedFailure(List<Task<SmtpReply>> replies)
    {
        foreach (var task in replies)
        {
            if (!task.IsCompleted) break;
            if (task.IsCompletedSuccessfully && !task.Result.IsPositiveCompletion) return task.Result;
        }
        return null;
    }

    // The verbs this client sends, so naming a command's verb allocates nothing.
    private static readonly string[] KnownVerbs =
        ["MAIL", "RCPT", "DATA", "BDAT", "RSET", "NOOP", "QUIT", "EHLO", "HELO", "XFORWARD", "XCLIENT", "STARTTLS", "AUTH", "VRFY", "EXPN", "TURN"];

    private static string VerbOf(string commandLine)
    {
        int end = commandLine.AsSpan().IndexOfAny(' ', ':');
        var verb = end < 0 ? commandLine.AsSpan() : commandLine.AsSpan(0, end);
        foreach (var known in KnownVerbs)
            if (verb.Equals(known, StringComparison.OrdinalIgnoreCase)) return known;
        return verb.ToString().ToUpperInvariant();
    }

    private static void CheckTimeout(TimeSpan timeout, string name)
    {
        // CancelAfter takes at most ~49 days; anything non-positive would fail every wait at once.
        if (timeout != Timeout.InfiniteTimeSpan && (timeout <= TimeSpan.Zero || timeout > TimeSpan.FromDays(1)))
            throw new ArgumentOutOfRangeException(name, timeout, "a timeout must be positive and at most one day, or infinite");
    }

    private static string FormatEndPoint(IPAddress address, int port) =>
        address.AddressFamily == AddressFamily.InterNetworkV6 ? $"[{address}]:{port}" : $"{address}:{port}";

    private static string Describe(TimeSpan t) =>
        t == Timeout.InfiniteTimeSpan ? "forever"
        : t.TotalSeconds < 1 ? $"{t.TotalMilliseconds.ToString("0", CultureInfo.InvariantCulture)}ms"
        : t.TotalMinutes < 1 ? $"{t.TotalSeconds.ToString("0.#", CultureInfo.InvariantCulture)}s"
        : $"{t.TotalMinutes.ToString("0.#", CultureInfo.InvariantCulture)}min";

    // A command's reply to come: its own completion source (its Task is what the caller awaits),
    // completed on the reader's thread. Answered and the deadline are under _gate.
    private sealed class PendingReply(string verb, TimeSpan timeout, CancellationToken token) : TaskCompletionSource<SmtpReply>
    {
        private TaskCompletionSource? _answered;   // only for lock-step after the caller gave up waiting

        public string Verb { get; } = verb;
        public TimeSpan Timeout { get; } = timeout;
        public CancellationToken Token { get; } = token;
        public bool Flushed { get; set; }
        public bool Answered { get; set; }
        public long Deadline { get; set; }   // Stopwatch timestamp, long.MaxValue for none; 0 until the clock starts

        public Task WhenAnswered() => (_answered ??= new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously)).Task;

        public void SignalAnswered() => _answered?.TrySetResult();
    }
}
