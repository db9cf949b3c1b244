using System.Buffers;
using System.IO.Pipelines;
using System.Text;
using BenchmarkDotNet.Attributes;
using Portcullis.SmtpCore;
using Portcullis.SmtpCore.Server;

namespace Portcullis.Benchmarks;

// A whole SMTP connection through a real SmtpSession per operation, as smtp-source drives the
// gateway (lock-step): banner, EHLO, Messages × (MAIL, RCPT, DATA with a 2 KB body), QUIT.
// Messages = 1 is a new connection per message; the step to 10 shows what a transaction costs. The transport is an in-memory duplex pipe and the handler accepts everything and
// keeps nothing, so what is measured (time and allocated bytes) is the session's own share.
[MemoryDiagnoser]
public class SessionBenchmarks
{
    private static readonly SmtpServerOptions Options = new() { HostName = "gw.example.org" };
    private byte[][] _commands = [];
    private byte[][] _cannedReplies = [];
    private readonly NullHandler _handler = new();

    [Params(1, 10)]
    public int Messages { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        var body = new StringBuilder();
        body.Append("From: sender@example.org\r\nTo: user@example.net\r\nSubject: benchmark\r\n\r\n");
        while (body.Length < 2048) body.Append("The quick brown fox jumps over the lazy dog, again and again.\r\n");
        body.Append(".\r\n");
        byte[][] message =
        [
            "MAIL FROM:<sender@example.org> SIZE=2200\r\n"u8.ToArray(),
            "RCPT TO:<user@example.net>\r\n"u8.ToArray(),
            "DATA\r\n"u8.ToArray(),
            Encoding.ASCII.GetBytes(body.ToString()),
        ];
        byte[][] replies =
        [
            "250 2.0.0 OK\r\n"u8.ToArray(), "250 2.0.0 OK\r\n"u8.ToArray(),
            "354 End data with <CR><LF>.<CR><LF>\r\n"u8.ToArray(), "250 2.0.0 Ok: queued\r\n"u8.ToArray(),
        ];
        _commands = [EhloCommand, .. Enumerable.Repeat(message, Messages).SelectMany(m => m), QuitCommand];
        _cannedReplies = [CannedBanner, CannedEhlo, .. Enumerable.Repeat(replies, Messages).SelectMany(r => r), CannedClosing];
    }

    private static readonly byte[] EhloCommand = "EHLO client.example.org\r\n"u8.ToArray();
    private static readonly byte[] QuitCommand = "QUIT\r\n"u8.ToArray();

    [Benchmark]
    public Task<int> Connection() =>
        ConverseAsync(transport => new SmtpSession(transport, null, null, Options, _handler, "bench").RunAsync(CancellationToken.None));

    // The same client against a canned server that answers each line with fixed bytes: what the
    // harness itself (pipes, client) costs, to subtract from the figure above.
    [Benchmark(Baseline = true)]
    public Task<int> HarnessWithCannedServer() => ConverseAsync(transport => CannedServerAsync(transport, _cannedReplies));

    // One lock-step conversation with the server started on the transport; the sum of the reply codes.
    private async Task<int> ConverseAsync(Func<Stream, Task> server)
    {
        var toServer = new Pipe(new PipeOptions(useSynchronizationContext: false));
        var toClient = new Pipe(new PipeOptions(useSynchronizationContext: false));
        var run = server(new DuplexPipeStream(toServer.Reader, toClient.Writer));
        int replies = await ReadReplyAsync(toClient.Reader); // 220
        foreach (var command in _commands)
        {
            await toServer.Writer.WriteAsync(command);
            replies += await ReadReplyAsync(toClient.Reader);
        }
        await run;
        await toServer.Writer.CompleteAsync();
        await toClient.Reader.CompleteAsync();
        return replies;
    }

    private static readonly byte[] CannedBanner = "220 gw.example.org ESMTP\r\n"u8.ToArray();
    private static readonly byte[] CannedEhlo =
        "250-gw.example.org Hello client.example.org\r\n250-PIPELINING\r\n250-SIZE 52428800\r\n250-8BITMIME\r\n250-ENHANCEDSTATUSCODES\r\n250-SMTPUTF8\r\n250 CHUNKING\r\n"u8.ToArray();
    private static readonly byte[] CannedClosing = "221 2.0.0 gw.example.org closing connection\r\n"u8.ToArray();

    // Answers each command line (and the content as one, up to its "."), in the order above.
    private static async Task CannedServerAsync(Stream transport, byte[][] replies)
    {
        var input = PipeReader.Create(transport);
        var output = PipeWriter.Create(transport);
        await output.WriteAsync(replies[0]);
        int next = 1;
        bool inData = false;
        while (next < replies.Length)
        {
            var result = await input.ReadAsync();
            var consumed = AnswerLines(result.Buffer, output, replies, ref next, ref inData);
            input.AdvanceTo(consumed, result.Buffer.End);
            await output.FlushAsync();
        }
        await input.CompleteAsync();
        await output.CompleteAsync();
    }

    private static SequencePosition AnswerLines(in ReadOnlySequence<byte> buffer, PipeWriter output, byte[][] replies, ref int next, ref bool inData)
    {
        var lines = new SequenceReader<byte>(buffer);
        while (next < replies.Length && lines.TryReadTo(out ReadOnlySequence<byte> line, (byte)'\n'))
        {
            if (inData && !(line.Length == 2 && line.FirstSpan[0] == (byte)'.')) continue;
            inData = replies[next][0] == (byte)'3'; // after the 354 the lines are content up to "."
            output.Write(replies[next++]);
        }
        return lines.Position;
    }

    // Reads up to the last line of one reply ("NNN " rather than "NNN-"); returns its code.
    private static async ValueTask<int> ReadReplyAsync(PipeReader reader)
    {
        while (true)
        {
            var result = await reader.ReadAsync();
            if (TryReadReply(result.Buffer, out var consumed, out int code))
            {
                reader.AdvanceTo(consumed);
                return code;
            }
            if (result.IsCompleted) throw new InvalidOperationException("session closed before its reply");
            reader.AdvanceTo(result.Buffer.Start, result.Buffer.End);
        }
    }

    private static bool TryReadReply(in ReadOnlySequence<byte> buffer, out SequencePosition consumed, out int code)
    {
        var lines = new SequenceReader<byte>(buffer);
        Span<byte> head = stackalloc byte[4];
        while (lines.TryReadTo(out ReadOnlySequence<byte> line, (byte)'\n'))
        {
            if (line.Length < 4) continue;
            line.Slice(0, 4).CopyTo(head);
            if (head[3] != (byte)' ') continue;
            consumed = lines.Position;
            code = (head[0] - '0') * 100 + (head[1] - '0') * 10 + (head[2] - '0');
            return true;
        }
        consumed = buffer.Start;
        code = 0;
        return false;
    }

    // The session's transport: reads what the client wrote, writes what the client reads.
    private sealed class DuplexPipeStream(PipeReader input, PipeWriter output) : Stream
    {
        private readonly Stream _in = input.AsStream();
        private readonly Stream _out = output.AsStream();
        public override bool CanRead => true;
        public override bool CanWrite => true;
        public override bool CanSeek => false;
        public override long Length => throw new NotSupportedException();
        public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }
        public override void Flush() => _out.Flush();
        public override Task FlushAsync(CancellationToken ct) => _out.FlushAsync(ct);
        public override int Read(byte[] buffer, int offset, int count) => _in.Read(buffer, offset, count);
        public override ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken ct = default) => _in.ReadAsync(buffer, ct);
        public override void Write(byte[] buffer, int offset, int count) => _out.Write(buffer, offset, count);
        public override ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken ct = default) => _out.WriteAsync(buffer, ct);
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
    }

    private sealed class NullHandler : ISmtpSessionHandler
    {
        private static readonly SmtpReply Accepted = new(250, "2.0.0", "OK");
        private static readonly SmtpReply Queued = new(250, "2.0.0", "Ok: queued");
        private readonly ArrayBufferWriter<byte> _content = new(4096);

        public ValueTask<SmtpReply?> OnConnectAsync(SmtpSession session, CancellationToken ct) => ValueTask.FromResult<SmtpReply?>(null);
        public void AddExtensions(SmtpSession session, List<string> lines) { }
        public ValueTask<SmtpReply?> OnHeloAsync(SmtpSession session, string domain, CancellationToken ct) => ValueTask.FromResult<SmtpReply?>(null);
        public ValueTask<SmtpResponse> OnMailAsync(SmtpSession session, SmtpTransaction tx, CancellationToken ct) => ValueTask.FromResult<SmtpResponse>(Accepted);
        public ValueTask<SmtpResponse> OnRcptAsync(SmtpSession session, SmtpTransaction tx, SmtpRecipient recipient, CancellationToken ct) => ValueTask.FromResult<SmtpResponse>(Accepted);
        public ValueTask FlushAsync(SmtpSession session, CancellationToken ct) => ValueTask.CompletedTask;
        public IBufferWriter<byte> OpenContent(SmtpSession session, SmtpTransaction tx) { _content.ResetWrittenCount(); return _content; }
        public ValueTask<SmtpReply> OnMessageAsync(SmtpSession session, SmtpTransaction tx, CancellationToken ct) => ValueTask.FromResult(Queued);
        public ValueTask OnTransactionAbortedAsync(SmtpSession session, SmtpTransaction tx, CancellationToken ct) => ValueTask.CompletedTask;
        public ValueTask OnCloseAsync(SmtpSession session) => ValueTask.CompletedTask;
    }
}
