using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;
using System.Text;

namespace Portcullis.EndToEnd.Harness;

// The downstream mail server the gateway forwards to: a small, strict ESMTP server (RFC 5321,
// RFC 3030 BDAT) on 127.0.0.1 that records every command and every message it accepted, and can
// be scripted to refuse, hang or hang up at a given step.
//
// Strictness that matters for the tests: DATA ends only at CRLF.CRLF; a MAIL inside an open
// transaction is refused and recorded (a second MAIL is what a smuggled message looks like).
public sealed class TestSmtpServer : IAsyncDisposable
{
    public const string Hostname = "downstream.test";

    private readonly TcpListener listener = new(IPAddress.Loopback, 0);
    private readonly CancellationTokenSource stopping = new();
    private readonly ConcurrentDictionary<(SmtpStep Step, int Rcpt), StepAction> script = new();
    private readonly ConcurrentBag<Socket> sockets = [];
    private readonly ConcurrentBag<Task> sessionTasks = [];
    private Task? acceptLoop;
    private int sessionCount;
    private int openNow;
    private int openPeak;

    public TestSmtpServer(DownstreamExtensions extensions = DownstreamExtensions.Default)
    {
        Extensions = extensions;
    }

    public DownstreamExtensions Extensions { get; }

    // Appears in the final 250 so a test can see that the client got the downstream's own reply.
    public string QueueId { get; init; } = "E2E" + Guid.NewGuid().ToString("N")[..10].ToUpperInvariant();

    public string FinalReply => $"250 2.0.0 Ok: queued as {QueueId}";

    public int Port => ((IPEndPoint)listener.LocalEndpoint).Port;

    public EventLog<DownstreamSession> Sessions { get; } = new();
    public EventLog<DownstreamSession> ClosedSessions { get; } = new();
    public EventLog<ReceivedMessage> Messages { get; } = new();   // accepted with the final 250
    public EventLog<ReceivedMessage> Refused { get; } = new();    // a whole body read, then refused/hung/closed
    public EventLog<string> Commands { get; } = new();            // every command line, all sessions
    public EventLog<DownstreamSession> Rsets { get; } = new();

    // The most connections that were open at the same moment.
    public int PeakConnections => Volatile.Read(ref openPeak);

    // With DownstreamExtensions.Auth: the accounts AUTH accepts, and every user name tried.
    public Dictionary<string, string> Users { get; init; } = [];
    public EventLog<string> AuthAttempts { get; } = new();

    public static TestSmtpServer Start(DownstreamExtensions extensions = DownstreamExtensions.Default) =>
        new TestSmtpServer(extensions).Start();

    public TestSmtpServer Start()
    {
        listener.Start();
        acceptLoop = AcceptLoopAsync();
        return this;
    }

    // Reply `reply` (one line, e.g. "451 4.3.0 busy") instead of going on. For Rcpt, `rcpt` is the
    // 1-based recipient in the transaction (0: every recipient).
    public TestSmtpServer Fail(SmtpStep step, string reply, int rcpt = 0) => Script(step, StepAction.Reply(reply), rcpt);

    public TestSmtpServer HangAt(SmtpStep step) => Script(step, StepAction.Hang, 0);

    public TestSmtpServer CloseAt(SmtpStep step) => Script(step, StepAction.Close, 0);

    // Answers DATA with 354 (or takes the first BDAT chunk's command line), reads a little of the
    // body and hangs up in the middle of it: a downstream that dies mid-DATA.
    public TestSmtpServer CloseInsideData() => Script(SmtpStep.Data, StepAction.CloseInside, 0);

    // Back to normal behaviour for every step.
    public TestSmtpServer ClearScript()
    {
        script.Clear();
        return this;
    }

    private TestSmtpServer Script(SmtpStep step, StepAction action, int rcpt)
    {
        script[(step, rcpt)] = action;
        return this;
    }

    // Waits until every connection the gateway opened has been closed (or finished by a hang).
    public Task WaitAllSessionsClosedAsync(TimeSpan timeout) =>
        ClosedSessions.WaitUntilAsync(closed => closed.Count >= Sessions.Count, timeout, "downstream connections to close");

    public async ValueTask DisposeAsync()
    {
        stopping.Cancel();
        listener.Stop();
        foreach (var socket in sockets)
        {
            socket.Dispose();
        }

        try
        {
            await (acceptLoop ?? Task.CompletedTask);
            await Task.WhenAll(sessionTasks);
        }
        catch (Exception)
        {
            // Shutting down: whatever the sessions were doing is over.
        }

        stopping.Dispose();
    }

    public override string ToString()
    {
        var text = new StringBuilder($"downstream 127.0.0.1:{Port} ({Extensions}), {Messages.Count} message(s) accepted\n");
        foreach (var session in Sessions.Snapshot())
        {
            text.Append(session.Transcript());
        }

        return text.ToString();
    }

    private async Task AcceptLoopAsync()
    {
        while (!stopping.IsCancellationRequested)
        {
            Socket socket;
            try
            {
                socket = await listener.AcceptSocketAsync(stopping.Token);
            }
            catch (Exception) when (stopping.IsCancellationRequested)
            {
                return;
            }

            sockets.Add(socket);
            int now = Interlocked.Increment(ref openNow);
            for (int peak = Volatile.Read(ref openPeak); now > peak; peak = Volatile.Read(ref openPeak))
            {
                if (Interlocked.CompareExchange(ref openPeak, now, peak) == peak)
                {
                    break;
                }
            }

            var session = new DownstreamSession(Interlocked.Increment(ref sessionCount));
            Sessions.Add(session);
            sessionTasks.Add(Task.Run(() => RunSessionAsync(socket, session)));
        }
    }

    private async Task RunSessionAsync(Socket socket, DownstreamSession session)
    {
        var cancel = stopping.Token;
        try
        {
            await using var stream = new NetworkStream(socket, ownsSocket: true);
            var conversation = new Conversation(this, session, stream, new WireReader(stream), cancel);
            await conversation.RunAsync();
        }
        catch (Exception e) when (e is IOException or SocketException or OperationCanceledException or ObjectDisposedException)
        {
            session.Note($"connection ended: {e.GetType().Name}");
        }
        catch (Exception e)
        {
            session.Note($"server error: {e}");
        }
        finally
        {
            Interlocked.Decrement(ref openNow);
            session.Closed = true;
            ClosedSessions.Add(session);
        }
    }

    // One SMTP connection's conversation.
    private sealed class Conversation(TestSmtpServer server, DownstreamSession session, NetworkStream stream, WireReader reader, CancellationToken cancel)
    {
        private Transaction? transaction;

        public async Task RunAsync()
        {
            if (await StepAsync(SmtpStep.Banner, $"220 {Hostname} ESMTP test server") != Outcome.Proceed)
            {
                return;
            }

            while (await reader.ReadLineAsync(cancel) is { } line)
            {
                session.RecordCommand(line);
                server.Commands.Add(line);
                var keepGoing = await HandleAsync(line);
                if (!keepGoing)
                {
                    return;
                }
            }

            session.Note("client closed the connection");
        }

        private async Task<bool> HandleAsync(string line)
        {
            var verb = line.Split(' ', 2)[0].ToUpperInvariant();
            switch (verb)
            {
                case "EHLO":
                    transaction = null;
                    return await StepAsync(SmtpStep.Ehlo, EhloReply()) != Outcome.Ended;
                case "HELO":
                    transaction = null;
                    return await StepAsync(SmtpStep.Ehlo, $"250 {Hostname}") != Outcome.Ended;
                case "MAIL":
                    return await MailAsync(line);
                case "RCPT":
                    return await RcptAsync(line);
                case "DATA":
                    return await DataAsync();
                case "BDAT":
                    return await BdatAsync(line);
                case "RSET":
                    transaction = null;
                    server.Rsets.Add(session);
                    await WriteAsync("250 2.0.0 Ok");
                    return true;
                case "NOOP":
                    await WriteAsync("250 2.0.0 Ok");
                    return true;
                case "AUTH" when server.Extensions.HasFlag(DownstreamExtensions.Auth):
                    return await AuthAsync(line);
                case "XFORWARD" when server.Extensions.HasFlag(DownstreamExtensions.XForward):
                    await WriteAsync("250 2.0.0 Ok");
                    return true;
                case "QUIT":
                    await WriteAsync("221 2.0.0 Bye");
                    return false;
                default:
                    await WriteAsync("500 5.5.2 command not recognized");
                    return true;
            }
        }

        // AUTH PLAIN (initial response or after an empty 334) and AUTH LOGIN against server.Users.
        private async Task<bool> AuthAsync(string line)
        {
            var parts = line.Split(' ');
            string user, password;
            if (parts.Length >= 2 && parts[1].Equals("PLAIN", StringComparison.OrdinalIgnoreCase))
            {
                var response = parts.Length == 3 ? parts[2] : await ChallengeAsync("");
                if (response is null) return false;
                var fields = Encoding.UTF8.GetString(Convert.FromBase64String(response)).Split('\0');
                (user, password) = (fields[1], fields[2]);
            }
            else if (parts.Length >= 2 && parts[1].Equals("LOGIN", StringComparison.OrdinalIgnoreCase))
            {
                var u = await ChallengeAsync("VXNlcm5hbWU6");
                var p = u is null ? null : await ChallengeAsync("UGFzc3dvcmQ6");
                if (p is null) return false;
                (user, password) = (Encoding.UTF8.GetString(Convert.FromBase64String(u!)), Encoding.UTF8.GetString(Convert.FromBase64String(p)));
            }
            else
            {
                await WriteAsync("504 5.5.4 mechanism not supported");
                return true;
            }

            server.AuthAttempts.Add(user);
            var ok = server.Users.TryGetValue(user, out var expected) && expected == password;
            await WriteAsync(ok ? "235 2.7.0 Authentication successful" : "535 5.7.8 Authentication credentials invalid");
            return true;
        }

        private async Task<string?> ChallengeAsync(string challenge)
        {
            await WriteAsync("334 " + challenge);
            var response = await reader.ReadLineAsync(cancel);
            if (response is not null) session.RecordCommand(response);
            return response;
        }

        private async Task<bool> MailAsync(string line)
        {
            if (!line.StartsWith("MAIL FROM:", StringComparison.OrdinalIgnoreCase))
            {
                await WriteAsync("501 5.5.4 syntax: MAIL FROM:<address>");
                return true;
            }

            if (transaction is not null)
            {
                session.Note($"MAIL inside an open transaction: {line}");
                await WriteAsync("503 5.5.1 nested MAIL command");
                return true;
            }

            var outcome = await StepAsync(SmtpStep.Mail, "250 2.1.0 Ok");
            if (outcome == Outcome.Proceed)
            {
                transaction = new Transaction(line);
            }

            return outcome != Outcome.Ended;
        }

        private async Task<bool> RcptAsync(string line)
        {
            if (transaction is null)
            {
                await WriteAsync("503 5.5.1 need MAIL before RCPT");
                return true;
            }

            if (!line.StartsWith("RCPT TO:", StringComparison.OrdinalIgnoreCase))
            {
                await WriteAsync("501 5.5.4 syntax: RCPT TO:<address>");
                return true;
            }

            var outcome = await StepAsync(SmtpStep.Rcpt, "250 2.1.5 Ok", transaction.Recipients.Count + 1);
            if (outcome == Outcome.Proceed)
            {
                transaction.Recipients.Add(line);
            }

            return outcome != Outcome.Ended;
        }

        private async Task<bool> DataAsync()
        {
            if (transaction is null || transaction.Recipients.Count == 0)
            {
                await WriteAsync("503 5.5.1 need MAIL and RCPT before DATA");
                return true;
            }

            var outcome = await StepAsync(SmtpStep.Data, "354 End data with <CR><LF>.<CR><LF>");
            if (outcome != Outcome.Proceed)
            {
                transaction = null;
                return outcome != Outcome.Ended;
            }

            var content = await reader.ReadDataAsync(cancel);
            if (content is null)
            {
                session.Note("connection closed inside DATA");
                return false;
            }

            session.Note($"DATA body of {content.Length} bytes");
            return await EndOfMessageAsync(content, "DATA");
        }

        private async Task<bool> BdatAsync(string line)
        {
            var parts = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
            if (!server.Extensions.HasFlag(DownstreamExtensions.Chunking) || parts.Length is < 2 or > 3 ||
                !int.TryParse(parts[1], out var size) || size < 0 ||
                (parts.Length == 3 && !parts[2].Equals("LAST", StringComparison.OrdinalIgnoreCase)))
            {
                await WriteAsync("501 5.5.4 BDAT not accepted here");
                return true;
            }

            var last = parts.Length == 3;
            var chunk = await reader.ReadExactAsync(size, cancel);
            if (chunk is null)
            {
                session.Note("connection closed inside BDAT");
                return false;
            }

            if (transaction is null || transaction.Recipients.Count == 0)
            {
                await WriteAsync("503 5.5.1 need MAIL and RCPT before BDAT");
                return true;
            }

            if (transaction.Chunks is null)
            {
                var outcome = await StepAsync(SmtpStep.Data, null);
                if (outcome != Outcome.Proceed)
                {
                    transaction = null;
                    return outcome != Outcome.Ended;
                }

                transaction.Chunks = new MemoryStream();
            }

            transaction.Chunks.Write(chunk);
            if (!last)
            {
                await WriteAsync($"250 2.0.0 {size} octets received");
                return true;
            }

            return await EndOfMessageAsync(transaction.Chunks.ToArray(), "BDAT");
        }

        private async Task<bool> EndOfMessageAsync(byte[] content, string transport)
        {
            var message = new ReceivedMessage(session.Id, transaction!.MailCommand, [.. transaction.Recipients], content, transport);
            transaction = null;
            var outcome = await StepAsync(SmtpStep.EndOfData, server.FinalReply);
            if (outcome == Outcome.Proceed)
            {
                session.Messages.Enqueue(message);
                server.Messages.Add(message);
            }
            else
            {
                server.Refused.Add(message);
            }

            return outcome != Outcome.Ended;
        }

        // Plays the scripted action for a step, or the normal reply (none when normalReply is null).
        private async Task<Outcome> StepAsync(SmtpStep step, string? normalReply, int rcpt = 0)
        {
            var action = server.script.GetValueOrDefault((step, rcpt)) ?? server.script.GetValueOrDefault((step, 0));
            switch (action)
            {
                case null:
                    if (normalReply is not null)
                    {
                        await WriteAsync(normalReply);
                    }

                    return Outcome.Proceed;
                case { Kind: StepKind.Reply }:
                    await WriteAsync(action.Line!);
                    return Outcome.Refused;
                case { Kind: StepKind.CloseInside }:
                    if (normalReply is not null)
                    {
                        await WriteAsync(normalReply);
                    }

                    await reader.ReadExactAsync(1, cancel);
                    session.Note($"closing inside the body at {step}");
                    return Outcome.Ended;
                case { Kind: StepKind.Hang }:
                    session.Note($"hanging at {step}");
                    await reader.DrainAsync(cancel);
                    session.Note("client closed the connection while we hung");
                    return Outcome.Ended;
                default:
                    session.Note($"closing at {step}");
                    return Outcome.Ended;
            }
        }

        private string EhloReply()
        {
            var lines = new List<string> { Hostname };
            var extensions = server.Extensions;
            if (extensions.HasFlag(DownstreamExtensions.Pipelining)) lines.Add("PIPELINING");
            if (extensions.HasFlag(DownstreamExtensions.Size)) lines.Add("SIZE 104857600");
            if (extensions.HasFlag(DownstreamExtensions.EightBitMime)) lines.Add("8BITMIME");
            if (extensions.HasFlag(DownstreamExtensions.SmtpUtf8)) lines.Add("SMTPUTF8");
            if (extensions.HasFlag(DownstreamExtensions.Chunking)) lines.Add("CHUNKING");
            if (extensions.HasFlag(DownstreamExtensions.Dsn)) lines.Add("DSN");
            if (extensions.HasFlag(DownstreamExtensions.XForward)) lines.Add("XFORWARD NAME ADDR PORT PROTO HELO IDENT SOURCE");
            if (extensions.HasFlag(DownstreamExtensions.Auth)) lines.Add("AUTH PLAIN LOGIN");
            if (extensions.HasFlag(DownstreamExtensions.EnhancedStatusCodes)) lines.Add("ENHANCEDSTATUSCODES");
            return string.Join("\r\n", lines.Select((text, i) => (i == lines.Count - 1 ? "250 " : "250-") + text));
        }

        private async Task WriteAsync(string reply)
        {
            session.RecordReply(reply);
            await stream.WriteAsync(Encoding.ASCII.GetBytes(reply + "\r\n"), cancel);
        }
    }

    private sealed class Transaction(string mailCommand)
    {
        public string MailCommand { get; } = mailCommand;
        public List<string> Recipients { get; } = [];
        public MemoryStream? Chunks { get; set; }
    }

    private enum Outcome { Proceed, Refused, Ended }

    private enum StepKind { Reply, Hang, Close, CloseInside }

    private sealed record StepAction(StepKind Kind, string? Line)
    {
        public static readonly StepAction Hang = new(StepKind.Hang, null);
        public static readonly StepAction Close = new(StepKind.Close, null);
        public static readonly StepAction CloseInside = new(StepKind.CloseInside, null);

        public static StepAction Reply(string line) => new(StepKind.Reply, line);
    }
}

public enum SmtpStep
{
    Banner,
    Ehlo,
    Mail,
    Rcpt,
    Data,       // the DATA command, or the first BDAT chunk
    EndOfData,  // the final reply after the body
}

[Flags]
public enum DownstreamExtensions
{
    None = 0,
    Pipelining = 1,
    Chunking = 2,
    Dsn = 4,
    EightBitMime = 8,
    Size = 16,
    SmtpUtf8 = 32,
    XForward = 64,
    EnhancedStatusCodes = 128,
    Auth = 256,
    Default = Pipelining | EightBitMime | Size | SmtpUtf8 | EnhancedStatusCodes,
}

public sealed record ReceivedMessage(int Session, string MailCommand, IReadOnlyList<string> RcptCommands, byte[] Content, string Transport)
{
    public override string ToString() =>
        $"session {Session} {Transport} {MailCommand} -> {string.Join(", ", RcptCommands)}: {Content.Length} bytes";
}

public sealed class DownstreamSession(int id)
{
    private readonly ConcurrentQueue<string> transcript = new();
    private readonly ConcurrentQueue<string> commands = new();

    public int Id { get; } = id;
    public bool Closed { get; set; }
    public ConcurrentQueue<ReceivedMessage> Messages { get; } = new();
    public IReadOnlyList<string> CommandLines => [.. commands];

    public void RecordCommand(string line)
    {
        commands.Enqueue(line);
        transcript.Enqueue("C: " + line);
    }

    public void RecordReply(string reply) => transcript.Enqueue("S: " + reply.Replace("\r\n", "\n       "));

    public void Note(string text) => transcript.Enqueue("-- " + text);

    public string Transcript() => $"  session {Id}:\n" + string.Concat(transcript.Select(l => "    " + l + "\n"));

    public override string ToString() => $"session {Id} ({commands.Count} commands, closed={Closed})";
}
