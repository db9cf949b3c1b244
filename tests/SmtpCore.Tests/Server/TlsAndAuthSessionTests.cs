using System.Net;
using System.Net.Security;
using System.Net.Sockets;
using System.Security.Authentication;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using Portcullis.SmtpCore.Server;
using Xunit;

namespace Portcullis.SmtpCore.Tests.Server;

// STARTTLS (RFC 3207) and AUTH (RFC 4954) on a real session over loopback, with a client that
// can switch its stream to TLS in the middle of the conversation.
public sealed class TlsAndAuthSessionTests
{
    private static readonly Lazy<X509Certificate2> Certificate = new(() =>
    {
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest("CN=mx.test", key, HashAlgorithmName.SHA256);
        return request.CreateSelfSigned(DateTimeOffset.UtcNow.AddDays(-1), DateTimeOffset.UtcNow.AddDays(1));
    });

    private static SslServerAuthenticationOptions ServerTls() => new()
    {
        ServerCertificate = Certificate.Value,
        EnabledSslProtocols = SslProtocols.Tls12 | SslProtocols.Tls13,
    };

    private static readonly SmtpServerOptions Options = new() { HostName = "mx.test", CommandTimeout = TimeSpan.FromSeconds(10) };

    private sealed class Client : IAsyncDisposable
    {
        private readonly Socket _socket;
        private Stream _stream;
        private readonly List<byte> _pending = [];
        public Task Run { get; }

        private Client(Socket socket, Task run)
        {
            _socket = socket;
            _stream = new NetworkStream(socket, ownsSocket: false);
            Run = run;
        }

        public static async Task<Client> StartAsync(RecordingHandler handler, SmtpServerOptions? options = null)
        {
            using var listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
            listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
            listener.Listen(1);
            var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
            var connect = socket.ConnectAsync(listener.LocalEndPoint!);
            var accepted = await listener.AcceptAsync();
            await connect;
            var run = Task.Run(async () =>
            {
                await using var transport = new NetworkStream(accepted, ownsSocket: true);
                await new SmtpSession(transport, accepted.RemoteEndPoint, accepted.LocalEndPoint, options ?? Options, handler, "t").RunAsync(default);
            });
            var client = new Client(socket, run);
            Assert.StartsWith("220 ", await client.LineAsync());
            return client;
        }

        public Task SendAsync(string text) => _stream.WriteAsync(Encoding.ASCII.GetBytes(text)).AsTask();

        // Reads only up to the end of a line, byte by byte, so nothing of a TLS handshake is eaten.
        public async Task<string?> LineAsync()
        {
            using var cts = new CancellationTokenSource(LoopbackSession.Patience);
            var one = new byte[1];
            while (true)
            {
                int lf = _pending.IndexOf((byte)'\n');
                if (lf >= 0)
                {
                    var line = Encoding.ASCII.GetString(_pending.GetRange(0, lf).ToArray()).TrimEnd('\r');
                    _pending.RemoveRange(0, lf + 1);
                    return line;
                }
                int n;
                try { n = await _stream.ReadAsync(one, cts.Token); }
                catch (IOException) { n = 0; }
                if (n == 0) return _pending.Count == 0 ? null : Encoding.ASCII.GetString([.. _pending]);
                _pending.Add(one[0]);
            }
        }

        public async Task<List<string>> ReplyAsync()
        {
            var lines = new List<string>();
            string? line;
            do
            {
                line = await LineAsync();
                Assert.NotNull(line);
                lines.Add(line);
            }
            while (line.Length > 3 && line[3] == '-');
            return lines;
        }

        public async Task StartTlsAsync()
        {
            Assert.Empty(_pending); // the server said nothing after its 220
            var ssl = new SslStream(_stream, leaveInnerStreamOpen: false);
            await ssl.AuthenticateAsClientAsync(new SslClientAuthenticationOptions
            {
                TargetHost = "mx.test",
                RemoteCertificateValidationCallback = (_, _, _, _) => true,
            });
            _stream = ssl;
        }

        public async ValueTask DisposeAsync()
        {
            _socket.Dispose();
            try { await Run.WaitAsync(LoopbackSession.Patience); } catch { /* the test already failed */ }
        }
    }

    private static IEnumerable<string> Keywords(List<string> ehlo) => ehlo.Skip(1).Select(l => l[4..]);

    private static string B64(string text) => Convert.ToBase64String(Encoding.UTF8.GetBytes(text));

    [Fact]
    public async Task Commands_pipelined_after_STARTTLS_are_discarded_not_answered()
    {
        var handler = new RecordingHandler { Tls = ServerTls() };
        await using var client = await Client.StartAsync(handler);
        await client.SendAsync("EHLO client.test\r\n");
        Assert.Contains("STARTTLS", Keywords(await client.ReplyAsync()));

        // CVE-2011-0411: the injected MAIL arrives in the same segment as STARTTLS.
        await client.SendAsync("STARTTLS\r\nMAIL FROM:<evil@x.test>\r\n");
        Assert.Equal("220 2.0.0 Ready to start TLS", await client.LineAsync());
        await client.StartTlsAsync();

        await client.SendAsync("MAIL FROM:<a@x.test>\r\n");
        Assert.Equal(["503 5.5.1 Send HELO or EHLO first"], await client.ReplyAsync()); // the EHLO was forgotten
        await client.SendAsync("EHLO client.test\r\n");
        var ehlo = await client.ReplyAsync();
        Assert.DoesNotContain(ehlo, l => l.Contains("STARTTLS"));
        await client.SendAsync("STARTTLS\r\n");
        Assert.Equal(["503 5.5.1 TLS already active"], await client.ReplyAsync());
        await client.SendAsync("QUIT\r\n");
        Assert.StartsWith("221", (await client.ReplyAsync())[0]);
        await client.Run.WaitAsync(LoopbackSession.Patience);
        Assert.DoesNotContain(handler.Events, e => e.Contains("evil"));
    }

    // Issue 11.13: a failed handshake is told to the handler's observer, not only kept in a property.
    [Fact]
    public async Task A_failed_TLS_handshake_is_reported_to_the_observer()
    {
        var handler = new RecordingHandler { Tls = ServerTls() };
        await using var client = await Client.StartAsync(handler);
        await client.SendAsync("EHLO client.test\r\n");
        await client.ReplyAsync();
        await client.SendAsync("STARTTLS\r\n");
        Assert.Equal("220 2.0.0 Ready to start TLS", await client.LineAsync());
        await client.SendAsync("this is no TLS ClientHello\r\n\r\n");
        await client.Run.WaitAsync(LoopbackSession.Patience);
        Assert.Contains("tls failed", handler.Events);
        Assert.DoesNotContain("tls started", handler.Events);
    }

    // Issue 11.4: the handler hears that the session forgot its AUTH, so it can forget what it
    // holds for it (the gateway's logged-in downstream connection).
    [Fact]
    public async Task The_handler_is_told_when_STARTTLS_has_reset_the_session()
    {
        var handler = new RecordingHandler { Tls = ServerTls() };
        await using var client = await Client.StartAsync(handler);
        await client.SendAsync("EHLO client.test\r\n");
        await client.ReplyAsync();
        await client.SendAsync("STARTTLS\r\n");
        Assert.Equal("220 2.0.0 Ready to start TLS", await client.LineAsync());
        await client.StartTlsAsync();
        await client.SendAsync("QUIT\r\n");
        Assert.StartsWith("221", (await client.ReplyAsync())[0]);
        await client.Run.WaitAsync(LoopbackSession.Patience);
        Assert.Contains("tls started", handler.Events);
    }

    // RFC 3207 §4: with TLS required, the command table lets only EHLO, HELO, STARTTLS, NOOP
    // and QUIT through in clear; the same commands are served once TLS is up.
    [Fact]
    public async Task With_TLS_required_only_the_commands_allowed_before_TLS_are_served_in_clear()
    {
        var handler = new RecordingHandler { Tls = ServerTls() };
        var options = new SmtpServerOptions { HostName = "mx.test", CommandTimeout = TimeSpan.FromSeconds(10), RequireTls = true };
        await using var client = await Client.StartAsync(handler, options);
        await client.SendAsync("EHLO client.test\r\n");
        Assert.Contains("STARTTLS", Keywords(await client.ReplyAsync()));
        foreach (var command in new[] { "MAIL FROM:<a@x.test>", "RCPT TO:<b@x.test>", "DATA", "RSET", "VRFY b", "HELP", "AUTH PLAIN" })
        {
            await client.SendAsync(command + "\r\n");
            Assert.Equal(["530 5.7.0 Must issue a STARTTLS command first"], await client.ReplyAsync());
        }
        await client.SendAsync("NOOP\r\n");
        Assert.Equal(["250 2.0.0 OK"], await client.ReplyAsync());
        await client.SendAsync("STARTTLS\r\n");
        Assert.Equal("220 2.0.0 Ready to start TLS", await client.LineAsync());
        await client.StartTlsAsync();
        await client.SendAsync("EHLO client.test\r\n");
        await client.ReplyAsync();
        await client.SendAsync("MAIL FROM:<a@x.test>\r\n");
        Assert.Equal(["250 2.1.0 Sender OK"], await client.ReplyAsync());
        await client.SendAsync("QUIT\r\n");
        Assert.StartsWith("221", (await client.ReplyAsync())[0]);
        await client.Run.WaitAsync(LoopbackSession.Patience);
        var events = handler.Events.ToList();
        Assert.Single(events, e => e == "mail <a@x.test>"); // the handler saw only the MAIL sent over TLS
        Assert.True(events.IndexOf("tls started") < events.IndexOf("mail <a@x.test>"));
    }

    [Fact]
    public async Task STARTTLS_is_not_offered_without_a_certificate()
    {
        var handler = new RecordingHandler();
        await using var client = await Client.StartAsync(handler);
        await client.SendAsync("EHLO client.test\r\n");
        Assert.DoesNotContain(await client.ReplyAsync(), l => l.Contains("STARTTLS"));
        await client.SendAsync("STARTTLS\r\n");
        Assert.Equal(["502 5.5.1 STARTTLS not available"], await client.ReplyAsync());
    }

    [Fact]
    public async Task AUTH_is_offered_only_after_TLS_and_refused_before_with_538()
    {
        var handler = new RecordingHandler { Tls = ServerTls(), AuthOffer = new SaslOffer(["PLAIN", "LOGIN"], RequiresTls: true) };
        await using var client = await Client.StartAsync(handler);
        await client.SendAsync("EHLO client.test\r\n");
        Assert.DoesNotContain(await client.ReplyAsync(), l => l.Contains("AUTH"));
        await client.SendAsync($"AUTH PLAIN {B64("\0alice\0secret")}\r\n");
        Assert.Equal(["538 5.7.11 Encryption required for requested authentication mechanism"], await client.ReplyAsync());

        await client.SendAsync("STARTTLS\r\n");
        Assert.Equal("220 2.0.0 Ready to start TLS", await client.LineAsync());
        await client.StartTlsAsync();
        await client.SendAsync("EHLO client.test\r\n");
        Assert.Contains("AUTH PLAIN LOGIN", Keywords(await client.ReplyAsync()));
        await client.SendAsync($"AUTH PLAIN {B64("\0alice\0secret")}\r\n");
        Assert.Equal(["235 2.7.0 Authentication successful"], await client.ReplyAsync());
        await client.SendAsync($"AUTH PLAIN {B64("\0alice\0secret")}\r\n");
        Assert.Equal(["503 5.5.1 Already authenticated"], await client.ReplyAsync());
        Assert.Contains("auth PLAIN /alice/secret", handler.Events);
    }

    [Fact]
    public async Task AUTH_PLAIN_and_LOGIN_exchanges()
    {
        var handler = new RecordingHandler { AuthOffer = new SaslOffer(["PLAIN", "LOGIN"], RequiresTls: false) };
        await using var client = await Client.StartAsync(handler);
        await client.SendAsync("EHLO client.test\r\n");
        Assert.Contains("AUTH PLAIN LOGIN", Keywords(await client.ReplyAsync()));

        // PLAIN without an initial response: an empty challenge, then the response.
        await client.SendAsync("AUTH PLAIN\r\n");
        Assert.Equal(["334 "], await client.ReplyAsync());
        await client.SendAsync(B64("admin\0bob\0wrong") + "\r\n");
        Assert.Equal(["535 5.7.8 Authentication credentials invalid"], await client.ReplyAsync());

        await client.SendAsync("AUTH LOGIN\r\n");
        Assert.Equal(["334 VXNlcm5hbWU6"], await client.ReplyAsync());
        await client.SendAsync("*\r\n");
        Assert.Equal(["501 5.7.0 Authentication cancelled"], await client.ReplyAsync());

        await client.SendAsync("AUTH PLAIN not-base64!\r\n");
        Assert.Equal(["501 5.5.2 Cannot decode the response (base64 expected)"], await client.ReplyAsync());
        await client.SendAsync("AUTH CRAM-MD5\r\n");
        Assert.Equal(["504 5.5.4 Unrecognized authentication type"], await client.ReplyAsync());

        await client.SendAsync($"AUTH LOGIN {B64("carol")}\r\n");
        Assert.Equal(["334 UGFzc3dvcmQ6"], await client.ReplyAsync());
        await client.SendAsync(B64("secret") + "\r\n");
        Assert.Equal(["235 2.7.0 Authentication successful"], await client.ReplyAsync());
        await client.SendAsync("MAIL FROM:<carol@x.test> AUTH=<>\r\n");
        Assert.Equal(["250 2.1.0 Sender OK"], await client.ReplyAsync());
        await client.SendAsync("AUTH PLAIN\r\n");
        Assert.Equal(["503 5.5.1 Already authenticated"], await client.ReplyAsync());
        Assert.Equal(["auth PLAIN admin/bob/wrong", "auth LOGIN /carol/secret"], handler.Events.Where(e => e.StartsWith("auth")));
    }

    [Fact]
    public async Task An_AUTH_response_trickled_a_byte_at_a_time_still_times_out()
    {
        var handler = new RecordingHandler { AuthOffer = new SaslOffer(["PLAIN", "LOGIN"], RequiresTls: false) };
        // Long enough that a loaded test machine still gets EHLO and AUTH in; the trickle outlasts it fourfold.
        await using var client = await Client.StartAsync(handler, new SmtpServerOptions { HostName = "mx.test", CommandTimeout = TimeSpan.FromSeconds(2) });
        await client.SendAsync("EHLO client.test\r\n");
        await client.ReplyAsync();
        await client.SendAsync("AUTH LOGIN\r\n");
        Assert.Equal(["334 VXNlcm5hbWU6"], await client.ReplyAsync());
        // A byte every 50 ms, never a line end: each byte arrives well inside the timeout, so only a
        // deadline for the whole response line can end this.
        using var stop = new CancellationTokenSource();
        bool ranOut = false; // the client sent everything it had: only then could a per-read timeout fire
        var trickle = Task.Run(async () =>
        {
            for (int i = 0; i < 160 && !stop.IsCancellationRequested; i++)
            {
                try { await client.SendAsync("Y"); } catch (Exception e) when (e is IOException or ObjectDisposedException) { return; }
                await Task.Delay(50, CancellationToken.None); // the attack's own pace, not synchronisation
            }
            Volatile.Write(ref ranOut, !stop.IsCancellationRequested);
        });

        Assert.Equal(["421 4.4.2 mx.test Timeout waiting for AUTH response, closing connection"], await client.ReplyAsync());
        Assert.False(Volatile.Read(ref ranOut), "the 421 came only after the client stopped sending");
        stop.Cancel();
        await trickle;
    }

    [Fact]
    public async Task A_throttled_client_gets_the_handlers_refusal_before_any_challenge()
    {
        var handler = new RecordingHandler
        {
            AuthOffer = new SaslOffer(["PLAIN"], RequiresTls: false),
            AuthStart = new SmtpReply(454, "4.7.0", "Too many failed authentication attempts, try again later"),
        };
        await using var client = await Client.StartAsync(handler);
        await client.SendAsync("EHLO client.test\r\nAUTH PLAIN\r\n");
        await client.ReplyAsync();
        Assert.Equal(["454 4.7.0 Too many failed authentication attempts, try again later"], await client.ReplyAsync());
    }

    [Fact]
    public async Task AUTH_is_not_available_when_not_offered()
    {
        var handler = new RecordingHandler();
        await using var client = await Client.StartAsync(handler);
        await client.SendAsync("EHLO client.test\r\nAUTH PLAIN\r\n");
        await client.ReplyAsync();
        Assert.Equal(["502 5.5.1 AUTH not available"], await client.ReplyAsync());
    }
}
