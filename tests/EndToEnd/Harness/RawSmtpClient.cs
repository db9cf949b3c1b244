using System.Net;
using System.Net.Sockets;
using System.Text;

namespace Portcullis.EndToEnd.Harness;

// An SMTP client over a bare socket for the tests that need exact control of the bytes:
// pipelining, bare newlines, BDAT, disconnecting mid-message. Keeps a transcript for failures.
public sealed class RawSmtpClient : IAsyncDisposable
{
    private readonly Socket socket;
    private readonly NetworkStream stream;
    private readonly WireReader reader;
    private readonly StringBuilder transcript = new();

    private RawSmtpClient(Socket socket, TimeSpan replyTimeout)
    {
        this.socket = socket;
        stream = new NetworkStream(socket, ownsSocket: true);
        reader = new WireReader(stream);
        ReplyTimeout = replyTimeout;
    }

    public TimeSpan ReplyTimeout { get; set; }

    public string Transcript => transcript.ToString();

    // Connects and reads the banner (which may be a refusal; see Banner).
    // from: the local address to connect from, e.g. 127.0.0.2 to be an untrusted client.
    public static async Task<RawSmtpClient> ConnectAsync(int port, TimeSpan? replyTimeout = null, IPAddress? from = null)
    {
        var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        if (from is not null) socket.Bind(new IPEndPoint(from, 0));
        await socket.ConnectAsync(IPAddress.Loopback, port);
        var client = new RawSmtpClient(socket, replyTimeout ?? TimeSpan.FromSeconds(30));
        client.Banner = await client.ReadReplyAsync();
        return client;
    }

    public SmtpReply Banner { get; private set; } = null!;

    // The client's own end: the address it connected from and its port.
    public IPEndPoint LocalEndPoint => (IPEndPoint)socket.LocalEndPoint!;

    public async Task SendAsync(ReadOnlyMemory<byte> bytes)
    {
        transcript.Append(bytes.Length <= 512 ? "C: " + Escape(bytes.Span) + "\n" : $"C: <{bytes.Length} bytes>\n");
        await stream.WriteAsync(bytes);
    }

    public Task SendAsync(string text) => SendAsync(SmtpBytes.Ascii(text));

    public async Task<SmtpReply> CommandAsync(string line)
    {
        await SendAsync(line + "\r\n");
        return await ReadReplyAsync();
    }

    public Task<SmtpReply> EhloAsync(string name = "client.test") => CommandAsync("EHLO " + name);

    // One reply (all its continuation lines). Throws if the connection closes first.
    public async Task<SmtpReply> ReadReplyAsync() =>
        await ReadReplyOrCloseAsync() ?? throw new IOException("connection closed before a reply\n" + Transcript);

    // One reply, or null if the server closed the connection instead.
    public async Task<SmtpReply?> ReadReplyOrCloseAsync()
    {
        using var timeout = new CancellationTokenSource(ReplyTimeout);
        var lines = new List<string>();
        try
        {
            while (true)
            {
                var line = await reader.ReadLineAsync(timeout.Token);
                if (line is null)
                {
                    transcript.Append("S: <closed>\n");
                    return null;
                }

                transcript.Append("S: ").Append(line).Append('\n');
                if (line.Length < 3 || !int.TryParse(line.AsSpan(0, 3), out var code))
                {
                    throw new InvalidDataException($"not an SMTP reply line: '{line}'\n{Transcript}");
                }

                lines.Add(line.Length > 4 ? line[4..] : "");
                if (line.Length == 3 || line[3] == ' ')
                {
                    return new SmtpReply(code, lines);
                }
            }
        }
        catch (OperationCanceledException)
        {
            throw new TimeoutException($"no reply within {ReplyTimeout.TotalSeconds:0.#}s\n{Transcript}");
        }
        catch (SocketException) // a reset counts as closed
        {
            transcript.Append("S: <reset>\n");
            return null;
        }
        catch (IOException e) when (e.InnerException is SocketException)
        {
            transcript.Append("S: <reset>\n");
            return null;
        }
    }

    // Drops the connection without QUIT.
    public void Abort() => socket.Close(0);

    public async ValueTask DisposeAsync()
    {
        await stream.DisposeAsync();
    }

    private static string Escape(ReadOnlySpan<byte> bytes)
    {
        var text = new StringBuilder();
        foreach (var b in bytes)
        {
            text.Append(b switch
            {
                (byte)'\r' => "\\r",
                (byte)'\n' => "\\n",
                < 0x20 or >= 0x7f => $"\\x{b:x2}",
                _ => ((char)b).ToString(),
            });
        }

        return text.ToString();
    }
}

public sealed record SmtpReply(int Code, IReadOnlyList<string> Lines)
{
    public int Class => Code / 100;

    public string Text => string.Join("\n", Lines);

    // The RFC 3463 enhanced status code of the first line, e.g. "5.7.1", or "" if none.
    public string EnhancedCode
    {
        get
        {
            var first = Lines.Count > 0 ? Lines[0].Split(' ', 2)[0] : "";
            return first.Count(c => c == '.') == 2 && char.IsDigit(first[0]) ? first : "";
        }
    }

    public bool Advertises(string keyword) =>
        Lines.Skip(1).Any(l => l.Split(' ', 2)[0].Equals(keyword, StringComparison.OrdinalIgnoreCase));

    public override string ToString() => $"{Code} {Text}";
}
