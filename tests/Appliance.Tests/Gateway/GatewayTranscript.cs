using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Text.RegularExpressions;
using Portcullis.Appliance.Access;
using Portcullis.Appliance.Configuration;
using Portcullis.Appliance.Gateway;
using Portcullis.Appliance.Logging;
using Portcullis.Appliance.Messages;
using Portcullis.Appliance.Notifications;
using Portcullis.SmtpCore;
using Portcullis.Appliance.Scanning;
using Portcullis.NativeScan;
using Portcullis.SmtpCore.Downstream;
using Portcullis.SmtpCore.Server;
using Xunit;

namespace Portcullis.Appliance.Tests.Gateway;

// A conversation through the real gateway policy (GatewaySession on a real SmtpSession over
// loopback), with the mail server behind it and the virus scanner scripted in the same file
// (tests/Appliance.Tests/Gateway/transcripts/*.smtp). Lines run in order, one at a time:
//   # config: [section] key = value   a configuration line on top of the test defaults
//   # timing: reset_timeout | probe_after = SECONDS   the gateway's DownstreamTimings
//   C: text       the client sends text + CRLF; consecutive C lines go out in one write
//   C+: text      the client sends text with no CRLF added
//   S: text       the next line the client reads, exactly; "text..." matches a prefix
//   S: <closed>   the gateway closes the client connection here
//   C: <starttls> the client starts TLS (after the gateway's 220 to STARTTLS); a script with
//                 this step runs with a self-signed certificate in [tls]
//   D: <connect>  the gateway opens a new downstream connection here (the scripted server accepts it)
//   D: text       the next line the downstream receives, exactly; "text..." matches a prefix
//   D: <closed>   the gateway closes the downstream connection here
//   R: text       the downstream answers text + CRLF; consecutive R lines go out in one write
//   R: <close>    the downstream drops the connection
//   V: clean | infected NAME | error TEXT | timeout | throw TEXT   the verdict of the next scan a
//                 scan job makes (the message; for strip each decoded part, then the rewritten
//                 message); timeout: the job's deadline passes during that scan; throw: the
//                 scanner fails with an exception. The gateway must ask for exactly as many
//                 verdicts as there are V lines
//   L: text       the next message log line, whole; "..." stands for any run of characters
//   Q: text       the next entry written to the queue ([queue] mode), as "<sender> -> <rcpt>, <rcpt>";
//                 its message file must hold the trace headers and the content
//   # ...         a comment
// C, C+, D and R take escapes: \r \n \t \\ \xHH. When the script ends the client half-closes;
// the gateway must then close without saying more, a downstream connection still open may only
// receive QUIT (answered 221) before it is closed, and every message log line must be matched.
// The test defaults: [general] hostname mx.test, the scratch, temp and quarantine folders in a
// temporary folder, no TLS; the downstream's HELO name is therefore mx.test.
internal sealed class GatewayTranscript
{
    public static readonly TimeSpan Patience = TimeSpan.FromSeconds(10); // a hung step fails, never hangs

    private abstract record Step(int Line);
    private sealed record ClientSends(int Line, byte[] Bytes) : Step(Line);
    private sealed record ClientReads(int Line, string Text, bool Prefix) : Step(Line);
    private sealed record ClientClosed(int Line) : Step(Line);
    private sealed record DownstreamConnects(int Line) : Step(Line);
    private sealed record DownstreamReads(int Line, string Text, bool Prefix) : Step(Line);
    private sealed record DownstreamClosed(int Line) : Step(Line);
    private sealed record DownstreamSends(int Line, byte[] Bytes) : Step(Line);
    private sealed record DownstreamDrops(int Line) : Step(Line);
    private sealed record ClientStartsTls(int Line) : Step(Line);
    private sealed record QueueHolds(int Line, string Text) : Step(Line);

    private readonly string _name;
    private readonly List<Step> _steps = [];
    private readonly List<(string Section, string Key, string Value)> _config = [];
    private readonly Queue<Func<ScanResult>> _verdicts = new();
    private DownstreamTimings _timings = DownstreamTimings.Default;
    private readonly List<(int Line, string Text)> _logLines = [];

    private GatewayTranscript(string name) => _name = name;

    public static GatewayTranscript Load(string path)
    {
        var t = new GatewayTranscript(Path.GetFileName(path));
        var lines = File.ReadAllLines(path);
        for (int i = 0; i < lines.Length; i++)
        {
            string line = lines[i];
            int n = i + 1;
            if (line.StartsWith("# config:", StringComparison.Ordinal)) t._config.Add(ConfigLine(line["# config:".Length..], t.Where(n)));
            else if (line.StartsWith("# timing:", StringComparison.Ordinal)) t._timings = Timing(t._timings, line["# timing:".Length..], t.Where(n));
            else if (line == "C: <starttls>") t._steps.Add(new ClientStartsTls(n));
            else if (line.Length == 0 || line[0] == '#') { }
            else if (TryBody(line, "C+:", out string body)) t._steps.Add(new ClientSends(n, Unescape(body, t.Where(n))));
            else if (TryBody(line, "C:", out body)) t._steps.Add(new ClientSends(n, [.. Unescape(body, t.Where(n)), (byte)'\r', (byte)'\n']));
            else if (TryBody(line, "S:", out body))
                t._steps.Add(body == "<closed>" ? new ClientClosed(n) : new ClientReads(n, Pattern(body), body.EndsWith("...", StringComparison.Ordinal)));
            else if (TryBody(line, "D:", out body))
                t._steps.Add(body switch
                {
                    "<connect>" => new DownstreamConnects(n),
                    "<closed>" => new DownstreamClosed(n),
                    _ => new DownstreamReads(n, Encoding.UTF8.GetString(Unescape(Pattern(body), t.Where(n))), body.EndsWith("...", StringComparison.Ordinal)),
                });
            else if (TryBody(line, "R:", out body))
                t._steps.Add(body == "<close>" ? new DownstreamDrops(n) : new DownstreamSends(n, [.. Unescape(body, t.Where(n)), (byte)'\r', (byte)'\n']));
            else if (TryBody(line, "V:", out body)) t._verdicts.Enqueue(Verdict(body, t.Where(n)));
            else if (TryBody(line, "L:", out body)) t._logLines.Add((n, body));
            else if (TryBody(line, "Q:", out body)) t._steps.Add(new QueueHolds(n, body));
            else throw new FormatException($"{t.Where(n)}: cannot read '{line}'");
        }
        return t;
    }

    private string Where(int line) => $"{_name}:{line}";

    private static string Pattern(string body) => body.EndsWith("...", StringComparison.Ordinal) ? body[..^3] : body;

    private static bool TryBody(string line, string tag, out string body)
    {
        body = "";
        if (!line.StartsWith(tag, StringComparison.Ordinal)) return false;
        body = line[tag.Length..];
        if (body.StartsWith(' ')) body = body[1..];
        return true;
    }

    private static (string, string, string) ConfigLine(string text, string where)
    {
        text = text.Trim();
        int close = text.IndexOf(']', StringComparison.Ordinal);
        int equals = text.IndexOf('=', StringComparison.Ordinal);
        if (!text.StartsWith('[') || close < 0 || equals < close) throw new FormatException($"{where}: expected '# config: [section] key = value'");
        return (text[1..close], text[(close + 1)..equals].Trim(), text[(equals + 1)..].Trim());
    }

    private static Func<ScanResult> Verdict(string text, string where)
    {
        var (word, rest) = text.IndexOf(' ', StringComparison.Ordinal) is var space and > 0 ? (text[..space], text[(space + 1)..]) : (text, "");
        return word switch
        {
            "clean" when rest.Length == 0 => () => ScanResult.Clean,
            "infected" when rest.Length > 0 => () => ScanResult.Infected(rest),
            "error" when rest.Length > 0 => () => ScanResult.Error(-1, rest),
            "timeout" when rest.Length == 0 => () => ScanResult.Error(ScanResult.TimeoutCode, "deadline"),
            "throw" when rest.Length > 0 => () => throw new InvalidOperationException(rest),
            _ => throw new FormatException($"{where}: expected 'V: clean', 'V: infected NAME', 'V: error TEXT', 'V: timeout' or 'V: throw TEXT'"),
        };
    }

    private static DownstreamTimings Timing(DownstreamTimings timings, string text, string where)
    {
        var parts = text.Split('=', 2, StringSplitOptions.TrimEntries);
        if (parts.Length != 2 || !double.TryParse(parts[1], NumberStyles.Float, CultureInfo.InvariantCulture, out double seconds))
            throw new FormatException($"{where}: expected '# timing: name = seconds'");
        var value = TimeSpan.FromSeconds(seconds);
        return parts[0] switch
        {
            "reset_timeout" => timings with { ResetTimeout = value },
            "probe_after" => timings with { ProbeAfter = value },
            _ => throw new FormatException($"{where}: unknown timing '{parts[0]}'"),
        };
    }

    // A self-signed certificate for mx.test, as PEM files in the test's folder.
    private static (string Certificate, string Key) WriteCertificate(string folder)
    {
        using var key = System.Security.Cryptography.ECDsa.Create(System.Security.Cryptography.ECCurve.NamedCurves.nistP256);
        var request = new System.Security.Cryptography.X509Certificates.CertificateRequest("CN=mx.test", key,
            System.Security.Cryptography.HashAlgorithmName.SHA256);
        using var certificate = request.CreateSelfSigned(DateTimeOffset.UtcNow.AddDays(-1), DateTimeOffset.UtcNow.AddDays(1));
        string certPath = Path.Combine(folder, "cert.pem"), keyPath = Path.Combine(folder, "key.pem");
        File.WriteAllText(certPath, certificate.ExportCertificatePem());
        File.WriteAllText(keyPath, key.ExportPkcs8PrivateKeyPem());
        return (certPath, keyPath);
    }

    private static byte[] Unescape(string text, string where)
    {
        var bytes = new List<byte>();
        for (int i = 0; i < text.Length; i++)
        {
            if (text[i] != '\\')
            {
                bytes.AddRange(Encoding.UTF8.GetBytes(text[i].ToString()));
                continue;
            }
            if (++i >= text.Length) throw new FormatException($"{where}: dangling backslash");
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
                default: throw new FormatException($"{where}: unknown escape \\{text[i]}");
            }
        }
        return [.. bytes];
    }

    private string Ini(string folder, int downstreamPort)
    {
        var values = new Dictionary<(string, string), string>
        {
            [("general", "hostname")] = "mx.test",
            [("general", "temp_folder")] = folder,
            [("general", "queue_folder")] = Path.Combine(folder, "spool"),
            [("general", "smtp_server_address")] = "127.0.0.1",
            [("general", "smtp_server_port")] = downstreamPort.ToString(CultureInfo.InvariantCulture),
            [("quarantine", "folder")] = Path.Combine(folder, "quarantine"),
            // No TLS unless a step asks for it: the default would take Debian's snakeoil pair when present.
            [("tls", "certificate")] = "",
            [("tls", "key")] = "",
        };
        if (_steps.Any(s => s is ClientStartsTls))
        {
            var (certificate, key) = WriteCertificate(folder);
            values[("tls", "certificate")] = certificate;
            values[("tls", "key")] = key;
        }
        foreach (var (section, key, value) in _config) values[(section, key)] = value;
        var ini = new StringBuilder();
        foreach (var section in values.Keys.Select(k => k.Item1).Distinct())
        {
            ini.Append('[').Append(section).Append("]\n");
            foreach (var ((s, key), value) in values)
                if (s == section) ini.Append(key).Append(" = ").Append(value).Append('\n');
        }
        return ini.ToString();
    }

    public async Task ReplayAsync()
    {
        var folder = Directory.CreateTempSubdirectory("portcullis-transcript-");
        try
        {
            await ReplayAsync(folder.FullName);
        }
        finally
        {
            folder.Delete(recursive: true);
        }
    }

    private async Task ReplayAsync(string folder)
    {
        using var downstreamListener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        downstreamListener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        downstreamListener.Listen(8);
        var config = ConfigLoader.LoadFromString(Ini(folder, ((IPEndPoint)downstreamListener.LocalEndPoint!).Port), _name);

        var scanner = new ScriptedScanner(_verdicts);
        var connector = new CountingConnector();
        var logOutput = new MemoryStream();
        using var log = new MessageLog(logOutput);
        GatewayContext? current = null;
        var queue = new QueueDelivery(
            new Portcullis.Appliance.Queue.QueueStore(Portcullis.Appliance.Queue.QueueStore.FolderFor(config.General.QueueFolder), config.Queue.MaxSize),
            () => current!);
        int queueEntriesSeen = 0;
        var ctx = current = new GatewayContext(config, scanner, log, new RelayPolicy(config.Relay))
        {
            Queue = queue,
            Downstream = connector,
            DownstreamTimings = _timings,
            Tls = config.Tls.Enabled ? new TlsCertificates(config.Tls) : null,
            Templates = TemplateSet.Load(Path.Combine(folder, "templates")),
        };
        var handler = new GatewaySession(ctx);

        await using var client = await LoopbackPeer.StartSessionAsync(ctx.ServerOptions, handler);
        var downstreams = new List<LoopbackPeer>();
        LoopbackPeer? downstream = null;
        int connects = 0;
        bool clientClosed = false;
        try
        {
            var batch = new List<byte>();
            LoopbackPeer? batchTarget = null;
            foreach (var step in _steps)
            {
                LoopbackPeer? target = step switch
                {
                    ClientSends => client,
                    DownstreamSends => downstream ?? throw new InvalidOperationException($"{Where(step.Line)}: R: before any D: <connect>"),
                    _ => null,
                };
                if (batchTarget is not null && target != batchTarget)
                {
                    await batchTarget.SendAsync([.. batch]);
                    batch.Clear();
                }
                batchTarget = target;
                try
                {
                    switch (step)
                    {
                        case ClientSends send:
                            batch.AddRange(send.Bytes);
                            break;
                        case DownstreamSends send:
                            batch.AddRange(send.Bytes);
                            break;
                        case ClientReads read:
                            Assert.False(clientClosed, $"{Where(step.Line)}: the gateway already closed the client connection");
                            await ExpectLineAsync(client, read.Text, read.Prefix, step.Line, "client");
                            break;
                        case ClientClosed:
                            string rest = await client.ReadToEndAsync();
                            Assert.True(rest.Length == 0, $"{Where(step.Line)}: expected the gateway to close, got '{rest}'");
                            clientClosed = true;
                            break;
                        case QueueHolds holds:
                            var entries = queue.Store.List();
                            Assert.True(entries.Count > queueEntriesSeen, $"{Where(step.Line)}: expected a queue entry, the queue holds {entries.Count}");
                            var entry = entries[queueEntriesSeen++];
                            var summary = $"<{entry.Sender}> -> {string.Join(", ", entry.Recipients.Select(r => "<" + r.Address + ">"))}";
                            Assert.True(summary == holds.Text, $"{Where(step.Line)}: expected queue entry '{holds.Text}', got '{summary}'");
                            using (var message = queue.Store.OpenMessage(entry.Id))
                            using (var reader = new StreamReader(message))
                            {
                                var text = reader.ReadToEnd();
                                Assert.True(text.StartsWith("Received: from ", StringComparison.Ordinal) && text.Contains("X-Virus-Scanned: ", StringComparison.Ordinal),
                                    $"{Where(step.Line)}: the queued message lacks the trace headers: '{text}'");
                            }
                            break;
                        case ClientStartsTls:
                            await client.StartTlsAsync();
                            break;
                        case DownstreamConnects:
                            Socket accepted;
                            try { accepted = await downstreamListener.AcceptAsync().WaitAsync(Patience); }
                            catch (TimeoutException) { throw new TimeoutException($"{Where(step.Line)}: the gateway did not connect to the downstream"); }
                            downstream = new LoopbackPeer(accepted);
                            downstreams.Add(downstream);
                            connects++;
                            break;
                        case DownstreamReads read:
                            await ExpectLineAsync(Current(step), read.Text, read.Prefix, step.Line, "downstream");
                            break;
                        case DownstreamClosed:
                            string left = await Current(step).ReadToEndAsync();
                            Assert.True(left.Length == 0, $"{Where(step.Line)}: expected the gateway to close the downstream connection, it sent '{left}'");
                            break;
                        case DownstreamDrops:
                            Current(step).Close();
                            break;
                    }
                }
                catch (TimeoutException e) when (!e.Message.StartsWith(_name, StringComparison.Ordinal))
                {
                    throw new TimeoutException($"{Where(step.Line)}: {e.Message}", e);
                }
            }
            if (batchTarget is not null && batch.Count > 0) await batchTarget.SendAsync([.. batch]);

            // The end: the client half-closes, open downstream connections may only hear QUIT.
            var tails = downstreams.Where(d => !d.Closed).Select(d => AnswerQuitAsync(d)).ToList();
            if (!clientClosed)
            {
                client.ShutdownSend();
                string rest = await client.ReadToEndAsync();
                Assert.True(rest.Length == 0, $"{_name}: the gateway said more than the script expects: '{rest}'");
            }
            await client.WaitForSessionEndAsync();
            await Task.WhenAll(tails).WaitAsync(Patience);
        }
        finally
        {
            foreach (var d in downstreams) d.Dispose();
        }

        Assert.True(connects == connector.Connects, $"{_name}: the gateway opened {connector.Connects} downstream connection(s), the script expects {connects}");
        Assert.True(scanner.Unscripted == 0, $"{_name}: the gateway asked for {scanner.Unscripted} verdict(s) more than the script has");
        Assert.True(_verdicts.Count == 0, $"{_name}: {_verdicts.Count} scripted verdict(s) never asked for");

        var logged = Encoding.UTF8.GetString(logOutput.ToArray()).Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.True(logged.Length == _logLines.Count,
            $"{_name}: the gateway wrote {logged.Length} message log line(s), the script expects {_logLines.Count}:\n{string.Join('\n', logged)}");
        for (int i = 0; i < logged.Length; i++)
            Assert.True(Matches(logged[i], _logLines[i].Text),
                $"{Where(_logLines[i].Line)}: expected the log line '{_logLines[i].Text}', got '{logged[i]}'");

        LoopbackPeer Current(Step step) => downstream ?? throw new InvalidOperationException($"{Where(step.Line)}: D: before any D: <connect>");
    }

    private static bool Matches(string line, string pattern) =>
        Regex.IsMatch(line, "^" + string.Join(".*", pattern.Split("...").Select(Regex.Escape)) + "$", RegexOptions.Singleline);

    private async Task ExpectLineAsync(LoopbackPeer peer, string text, bool prefix, int line, string who)
    {
        string? got;
        try { got = await peer.ReadLineAsync(); }
        catch (TimeoutException e) { throw new TimeoutException($"{Where(line)}: waiting for the {who} to read '{text}': {e.Message}"); }
        bool ok = got is not null && (prefix ? got.StartsWith(text, StringComparison.Ordinal) : got == text);
        Assert.True(ok, $"{Where(line)}: expected the {who} to read '{text}{(prefix ? "..." : "")}', got {(got is null ? "<closed>" : $"'{got}'")}");
    }

    private async Task AnswerQuitAsync(LoopbackPeer downstream)
    {
        while (await downstream.ReadLineAsync() is { } line)
        {
            Assert.True(line == "QUIT", $"{_name}: after the script the downstream received '{line}'");
            await downstream.SendAsync("221 2.0.0 Bye\r\n"u8.ToArray());
        }
    }

    // Runs each scan job at once on the calling thread; each scan it makes takes the next verdict
    // in script order. A scripted timeout ends the job's time: its verdict is then the timeout error.
    private sealed class ScriptedScanner(Queue<Func<ScanResult>> verdicts) : IMessageScanner
    {
        public int Unscripted;

        public string Description => "transcript-scanner";

        public bool TryStart(MessageScanJob job, TimeSpan timeout, out ScanJob running)
        {
            using var deadline = new CancellationTokenSource();
            var result = job.Run(new Scans(this, deadline), deadline.Token);
            if (deadline.IsCancellationRequested) result = ScanJobResult.Failed(ScanResult.Error(ScanResult.TimeoutCode, "scan timed out"));
            running = new ScanJob(Task.FromResult(result), Task.CompletedTask);
            return true;
        }

        private ScanResult Take(CancellationTokenSource deadline)
        {
            lock (verdicts)
            {
                if (!verdicts.TryDequeue(out var next))
                {
                    Interlocked.Increment(ref Unscripted);
                    return ScanResult.Error(-1, "no verdict scripted");
                }
                var verdict = next();
                if (verdict.IsTimeout) deadline.Cancel();
                return verdict;
            }
        }

        private sealed class Scans(ScriptedScanner scanner, CancellationTokenSource deadline) : IContentScanner
        {
            public ScanResult Scan(IMessageContent content, ScanInspector? inspector = null) => scanner.Take(deadline);

            public ScanResult ScanPart(ReadOnlyMemory<byte> part) => scanner.Take(deadline);
        }
    }

    // The product's connector, counting how often the gateway connects.
    private sealed class CountingConnector : IDownstreamConnector
    {
        private int _connects;

        public int Connects => Volatile.Read(ref _connects);

        public Task<DownstreamClient> ConnectAsync(DownstreamOptions options, CancellationToken ct)
        {
            Interlocked.Increment(ref _connects);
            return DownstreamConnector.Instance.ConnectAsync(options, ct);
        }
    }
}

public class GatewayTranscriptTests
{
    private static string Folder => Path.Combine(AppContext.BaseDirectory, "Gateway", "transcripts");

    public static TheoryData<string> Files()
    {
        var data = new TheoryData<string>();
        foreach (var file in Directory.GetFiles(Folder, "*.smtp").Order(StringComparer.Ordinal))
            data.Add(Path.GetFileName(file));
        return data;
    }

    [Theory, MemberData(nameof(Files))]
    public Task Replays(string file) => GatewayTranscript.Load(Path.Combine(Folder, file)).ReplayAsync();
}
