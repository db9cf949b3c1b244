using System.Globalization;
using System.Text;
using Portcullis.SmtpCore.Protocol;
using Portcullis.SmtpCore.Server;
using Xunit;

namespace Portcullis.SmtpCore.Tests.Server;

// A conversation file (tests/SmtpCore.Tests/transcripts/*.smtp), Postfix golden-file style:
//   # options: max_recipients=2 bare_newline=reject max_errors=3 max_size=100 max_line=64 chunking=off smtputf8=off
//   C: text      the client sends text + CRLF; consecutive C lines go out in one write (pipelining)
//   C+: text     the client sends text with no CRLF added
//                (both take escapes: \r \n \t \\ \xHH)
//   S: text      the next server reply line, exactly; "text..." matches a prefix
//   S: <closed>  the server closes the connection here
//   M: text      (escapes as C+) the content of the next message the handler received, exactly;
//                the handler must have received exactly as many messages as there are M lines
//   # ...        a comment
// When the script ends the client half-closes; the server must close without saying more.
internal sealed class Transcript
{
    private abstract record Step(int Line);
    private sealed record Send(int Line, byte[] Bytes) : Step(Line);
    private sealed record Expect(int Line, string Text, bool Prefix) : Step(Line);
    private sealed record ExpectClose(int Line) : Step(Line);

    private readonly List<Step> _steps = [];
    private readonly List<byte[]> _messages = [];
    private readonly string _name;

    private Transcript(string name) => _name = name;

    public SmtpServerOptions Options { get; private set; } = Build(new Dictionary<string, string>());

    public static Transcript Load(string path)
    {
        var t = new Transcript(Path.GetFileName(path));
        var lines = File.ReadAllLines(path);
        for (int i = 0; i < lines.Length; i++)
        {
            string line = lines[i];
            int n = i + 1;
            if (line.StartsWith("# options:", StringComparison.Ordinal))
            {
                var knobs = line["# options:".Length..].Split(' ', StringSplitOptions.RemoveEmptyEntries)
                    .Select(kv => kv.Split('=', 2)).ToDictionary(kv => kv[0], kv => kv.Length > 1 ? kv[1] : "");
                t.Options = Build(knobs);
            }
            else if (line.Length == 0 || line[0] == '#') { }
            else if (TryBody(line, "C+:", out string body)) t._steps.Add(new Send(n, Unescape(body, n)));
            else if (TryBody(line, "C:", out body)) t._steps.Add(new Send(n, [.. Unescape(body, n), (byte)'\r', (byte)'\n']));
            else if (TryBody(line, "S:", out body))
            {
                if (body == "<closed>") t._steps.Add(new ExpectClose(n));
                else if (body.EndsWith("...", StringComparison.Ordinal)) t._steps.Add(new Expect(n, body[..^3], true));
                else t._steps.Add(new Expect(n, body, false));
            }
            else if (TryBody(line, "M:", out body)) t._messages.Add(Unescape(body, n));
            else throw new FormatException($"{t._name}:{n}: cannot read '{line}'");
        }
        return t;
    }

    private static bool TryBody(string line, string tag, out string body)
    {
        body = "";
        if (!line.StartsWith(tag, StringComparison.Ordinal)) return false;
        body = line[tag.Length..];
        if (body.StartsWith(' ')) body = body[1..];
        return true;
    }

    private static byte[] Unescape(string text, int line)
    {
        var bytes = new List<byte>();
        for (int i = 0; i < text.Length; i++)
        {
            if (text[i] != '\\')
            {
                bytes.AddRange(Encoding.UTF8.GetBytes(text[i].ToString()));
                continue;
            }
            if (++i >= text.Length) throw new FormatException($"line {line}: dangling backslash");
            switch (text[i])
            {
                case 'r': bytes.Add((byte)'\r'); break;
                case 'n': bytes.Add((byte)'\n'); break;
                case 't': bytes.Add((byte)'\t'); break;
                case '\\': bytes.Add((byte)'\\'); break;
                case 'x':
                    bytes.Add(byte.Parse(text.AsSpan(i + 1, 2), NumberStyles.HexNumber, CultureInfo.InvariantCulture));
                    i += 2;
                    break;
                default: throw new FormatException($"line {line}: unknown escape \\{text[i]}");
            }
        }
        return [.. bytes];
    }

    private static SmtpServerOptions Build(IReadOnlyDictionary<string, string> knobs)
    {
        var defaults = new SmtpServerOptions();
        string? Get(string key) => knobs.TryGetValue(key, out var v) ? v : null;
        bool On(string key, bool fallback) => Get(key) is { } v ? v is "on" or "true" or "yes" : fallback;
        var known = new[] { "max_recipients", "bare_newline", "max_errors", "max_size", "max_line", "chunking", "smtputf8", "pipelining", "8bitmime" };
        foreach (var key in knobs.Keys)
            if (!known.Contains(key)) throw new FormatException($"unknown option {key}");
        return new SmtpServerOptions
        {
            HostName = "mx.test",
            MaxRecipients = Get("max_recipients") is { } r ? int.Parse(r, CultureInfo.InvariantCulture) : defaults.MaxRecipients,
            MaxErrors = Get("max_errors") is { } e ? int.Parse(e, CultureInfo.InvariantCulture) : defaults.MaxErrors,
            MaxMessageSize = Get("max_size") is { } s ? long.Parse(s, CultureInfo.InvariantCulture) : defaults.MaxMessageSize,
            MaxLineLength = Get("max_line") is { } l ? int.Parse(l, CultureInfo.InvariantCulture) : defaults.MaxLineLength,
            BareNewline = Get("bare_newline") switch
            {
                null or "normalize" => BareNewlinePolicy.Normalize,
                "reject" => BareNewlinePolicy.Reject,
                var other => throw new FormatException($"bare_newline={other}"),
            },
            Chunking = On("chunking", defaults.Chunking),
            SmtpUtf8 = On("smtputf8", defaults.SmtpUtf8),
            Pipelining = On("pipelining", defaults.Pipelining),
            EightBitMime = On("8bitmime", defaults.EightBitMime),
            CommandTimeout = TimeSpan.FromSeconds(30),
            DataTimeout = TimeSpan.FromSeconds(30),
        };
    }

    public async Task ReplayAsync()
    {
        var handler = new RecordingHandler();
        await using var conn = await LoopbackSession.StartAsync(Options, handler);
        bool closed = false;
        var batch = new List<byte>();
        foreach (var step in _steps)
        {
            if (step is Send send)
            {
                batch.AddRange(send.Bytes);
                continue;
            }
            if (batch.Count > 0)
            {
                await conn.SendAsync([.. batch]);
                batch.Clear();
            }
            Assert.False(closed, $"{_name}:{step.Line}: the server already closed");
            if (step is Expect expect)
            {
                string? got;
                try { got = await conn.ReadLineAsync(); }
                catch (TimeoutException e) { throw new TimeoutException($"{_name}:{step.Line}: waiting for '{expect.Text}': {e.Message}"); }
                bool ok = got is not null && (expect.Prefix ? got.StartsWith(expect.Text, StringComparison.Ordinal) : got == expect.Text);
                Assert.True(ok, $"{_name}:{step.Line}: expected '{expect.Text}{(expect.Prefix ? "..." : "")}', got {(got is null ? "<closed>" : $"'{got}'")}");
            }
            else
            {
                string rest = await conn.ReadToEndAsync();
                Assert.True(rest.Length == 0, $"{_name}:{step.Line}: expected the close, got '{rest}'");
                closed = true;
            }
        }
        if (batch.Count > 0) await conn.SendAsync([.. batch]);
        if (!closed)
        {
            conn.ShutdownSend();
            string rest = await conn.ReadToEndAsync();
            Assert.True(rest.Length == 0, $"{_name}: the server said more than the script expects: '{rest}'");
        }
        await conn.WaitForSessionEndAsync();
        await handler.Closed.Task.WaitAsync(LoopbackSession.Patience);

        var received = handler.Messages;
        Assert.True(_messages.Count == received.Count, $"{_name}: expected {_messages.Count} message(s), the handler got {received.Count}");
        for (int i = 0; i < received.Count; i++)
            Assert.True(_messages[i].AsSpan().SequenceEqual(received[i]),
                $"{_name}: message {i + 1} is {Protocol.Escapes.Show(received[i])}, expected {Protocol.Escapes.Show(_messages[i])}");
    }
}

public class TranscriptTests
{
    private static string Folder => Path.Combine(AppContext.BaseDirectory, "transcripts");

    public static TheoryData<string> Files()
    {
        var data = new TheoryData<string>();
        foreach (var file in Directory.GetFiles(Folder, "*.smtp").Order(StringComparer.Ordinal))
            data.Add(Path.GetFileName(file));
        return data;
    }

    [Theory, MemberData(nameof(Files))]
    public Task Replays(string file) => Transcript.Load(Path.Combine(Folder, file)).ReplayAsync();
}
