using System.Net;
using System.Net.Security;
using System.Net.Sockets;
using System.Text;
using MailKit.Net.Smtp;
using MailKit.Security;
using MimeKit;
using Portcullis.EndToEnd.Harness;
using Xunit;
using Xunit.Abstractions;

namespace Portcullis.EndToEnd.Tests;

// Who may send through the gateway, against the published binary. Untrusted clients connect
// from 127.0.0.2 (loopback, but outside trusted_networks, which these tests narrow to 127.0.0.1).
public sealed class AccessTests(ITestOutputHelper output)
{
    private static readonly TimeSpan Wait = TimeSpan.FromSeconds(20);

    private static async Task<int> RcptCodeAsync(RawSmtpClient client, string rcpt)
    {
        var reply = await client.CommandAsync($"RCPT TO:{rcpt}");
        return reply.Code;
    }

    [Fact]
    public async Task Untrusted_client_may_mail_local_domains_only_and_every_relay_trick_is_refused()
    {
        await using var downstream = TestSmtpServer.Start(DownstreamExtensions.Default | DownstreamExtensions.XForward);
        await using var gateway = await GatewayProcess.StartAsync(output, downstream, ini => ini
            .Set("relay", "local_domains", "local.test")
            .Set("relay", "trusted_networks", "127.0.0.1/32")   // the default is all of 127.0.0.0/8
            .Set("limits", "max_connections_per_ip", "3"));

        await using var client = await RawSmtpClient.ConnectAsync(gateway.Port, from: AccessFixtures.Untrusted);
        Assert.Equal(220, client.Banner.Code);
        await client.EhloAsync("untrusted.test");
        Assert.Equal(250, (await client.CommandAsync("MAIL FROM:<someone@elsewhere.test>")).Code);
        string[] tricks =
        [
            "<victim@foreign.test>",
            "<victim%foreign.test@local.test>",
            "<\"victim@foreign.test\"@local.test>",
            "<foreign.test!victim@local.test>",
            "<@local.test:victim@foreign.test>",
            "<victim@[192.0.2.1]>",
            "<victim@local.test.foreign.test>",
        ];
        foreach (var rcpt in tricks)
        {
            var reply = await client.CommandAsync($"RCPT TO:{rcpt}");
            Assert.True(reply.Code == 550 && reply.EnhancedCode == "5.7.1", $"{rcpt}: {reply}\n{client.Transcript}");
        }

        // user@foreign@local is not even an address (the parser refuses it before any decision).
        Assert.Equal(5, (await client.CommandAsync("RCPT TO:<victim@foreign.test@local.test>")).Class);
        Assert.Equal(250, await RcptCodeAsync(client, "<user@LOCAL.TEST.>"));
        Assert.Equal(250, await RcptCodeAsync(client, "<Postmaster>"));
        Assert.Equal(354, (await client.CommandAsync("DATA")).Code);
        await client.SendAsync(SmtpBytes.DataPayload(TestMessages.Plain("to a local domain", "hello")));
        Assert.Equal(250, (await client.ReadReplyAsync()).Code);

        var delivered = Assert.Single(await downstream.Messages.WaitForCountAsync(1, Wait, "the local message"));
        Assert.Equal(2, delivered.RcptCommands.Count);
        Assert.DoesNotContain(downstream.Commands.Snapshot(), c => c.Contains("foreign.test", StringComparison.OrdinalIgnoreCase));

        // XFORWARD: the downstream learns the real client before MAIL.
        var xforward = string.Join(' ', downstream.Commands.Snapshot().Where(c => c.StartsWith("XFORWARD", StringComparison.Ordinal)));
        Assert.Contains("ADDR=127.0.0.2", xforward);
        Assert.Contains("HELO=untrusted.test", xforward);
        Assert.Contains("PROTO=ESMTP", xforward);
        Assert.Contains("SOURCE=LOCAL", xforward);
        Assert.Contains("IDENT=", xforward);
        Assert.Contains("PORT=", xforward);
        var commands = downstream.Commands.Snapshot().ToList();
        Assert.True(commands.FindIndex(c => c.StartsWith("XFORWARD", StringComparison.Ordinal)) < commands.FindIndex(c => c.StartsWith("MAIL", StringComparison.Ordinal)));

        // A trusted client (127.0.0.1, the default trusted_networks) relays anywhere.
        await using var trusted = await RawSmtpClient.ConnectAsync(gateway.Port);
        await trusted.EhloAsync();
        Assert.Equal(250, (await trusted.CommandAsync("MAIL FROM:<a@local.test>")).Code);
        Assert.Equal(250, await RcptCodeAsync(trusted, "<someone@foreign.test>"));

        // max_connections_per_ip = 3: the fourth from 127.0.0.2 gets 421; others still get in.
        await using var second = await RawSmtpClient.ConnectAsync(gateway.Port, from: AccessFixtures.Untrusted);
        await using var third = await RawSmtpClient.ConnectAsync(gateway.Port, from: AccessFixtures.Untrusted);
        await using var fourth = await RawSmtpClient.ConnectAsync(gateway.Port, from: AccessFixtures.Untrusted);
        Assert.Equal([220, 220, 421], new[] { second.Banner.Code, third.Banner.Code, fourth.Banner.Code });
        Assert.Equal("4.7.0", fourth.Banner.EnhancedCode);
        await using var other = await RawSmtpClient.ConnectAsync(gateway.Port, from: IPAddress.Parse("127.0.0.3"));
        Assert.Equal(220, other.Banner.Code);
        // The trusted address (127.0.0.1, already holding one connection) is not held to the per-address limit.
        var fromTrusted = new List<RawSmtpClient>();
        for (int i = 0; i < 4; i++) fromTrusted.Add(await RawSmtpClient.ConnectAsync(gateway.Port));
        Assert.All(fromTrusted, c => Assert.Equal(220, c.Banner.Code));
        foreach (var c in fromTrusted) await c.DisposeAsync();
        await gateway.StopAsync();
    }

    [Fact]
    public async Task Tcprules_cdb_and_POP_before_SMTP_decide_relaying()
    {
        var folder = GatewayIni.NewRoot();
        try
        {
            var cdb = Path.Combine(folder, "tcp.smtp.cdb");
            AccessFixtures.Tool("tcprules", "127.0.0.3:deny\n127.0.0.2:allow,RELAYCLIENT=\"\"\n127.0.0.4-5:allow,RELAYCLIENT=\"\"\n:allow\n", cdb, cdb + ".tmp");
            var pop = Path.Combine(folder, "pop-before-smtp");
            var now = DateTimeOffset.UtcNow.ToUnixTimeSeconds();
            await File.WriteAllTextAsync(pop, $"127.0.0.7 {now}\n127.0.0.8 {now - 3600}\n");

            await using var downstream = TestSmtpServer.Start();
            await using var gateway = await GatewayProcess.StartAsync(output, downstream, ini => ini
                .Set("relay", "local_domains", "local.test")
                .Set("relay", "trusted_networks", "127.0.0.1/32")
                .Set("relay", "rules_file", cdb)
                .Set("relay", "pop_before_smtp_file", pop)
                .Set("relay", "pop_before_smtp_ttl", "10m"));

            async Task<int> ForeignFromAsync(string address)
            {
                await using var c = await RawSmtpClient.ConnectAsync(gateway.Port, from: IPAddress.Parse(address));
                if (c.Banner.Code != 220) return c.Banner.Code;
                await c.EhloAsync();
                Assert.Equal(250, (await c.CommandAsync("MAIL FROM:<a@b.test>")).Code);
                return await RcptCodeAsync(c, "<x@foreign.test>");
            }

            Assert.Equal(554, await ForeignFromAsync("127.0.0.3"));   // deny: refused at the banner
            Assert.Equal(250, await ForeignFromAsync("127.0.0.2"));   // RELAYCLIENT
            Assert.Equal(250, await ForeignFromAsync("127.0.0.5"));   // RELAYCLIENT by range
            Assert.Equal(550, await ForeignFromAsync("127.0.0.6"));   // the empty rule: allow, no relaying
            Assert.Equal(250, await ForeignFromAsync("127.0.0.7"));   // a fresh POP login
            Assert.Equal(550, await ForeignFromAsync("127.0.0.8"));   // a login older than the ttl

            // The POP server's hook rewrites the file: 127.0.0.6 logs in, 127.0.0.7's entry ages out.
            await File.WriteAllTextAsync(pop, $"127.0.0.6 {now}\n127.0.0.7 {now - 601}\n");
            Assert.Equal(250, await ForeignFromAsync("127.0.0.6"));
            Assert.Equal(550, await ForeignFromAsync("127.0.0.7"));
            await gateway.StopAsync();
        }
        finally
        {
            Directory.Delete(folder, recursive: true);
        }
    }

    [Fact]
    public async Task AUTH_after_STARTTLS_with_both_hash_kinds_lets_a_client_relay_and_failures_are_throttled()
    {
        var folder = GatewayIni.NewRoot();
        try
        {
            var (cert, key) = AccessFixtures.SelfSignedCertificate(folder);
            var passwd = Path.Combine(folder, "passwd");
            var bcrypt = AccessFixtures.Tool("htpasswd", null, "-nbB", "-C", "5", "alice", "alice-pw");
            var sha = AccessFixtures.Tool("openssl", null, "passwd", "-6", "carol-pw");
            await File.WriteAllTextAsync(passwd, $"{bcrypt}\ncarol:{sha}\n");
            int tlsPort = AccessFixtures.FreePort();

            await using var downstream = TestSmtpServer.Start();
            await using var gateway = await GatewayProcess.StartAsync(output, downstream, ini => ini
                .Set("general", "interfaces", $"127.0.0.1:{ini.ListenPort}, 127.0.0.1:{tlsPort}/tls")
                .Set("relay", "local_domains", "local.test")
                .Set("relay", "trusted_networks", "127.0.0.1/32")
                .Set("tls", "certificate", cert)
                .Set("tls", "key", key)
                .Set("auth", "passwd_file", passwd)
                .Set("auth", "max_failures", "3")
                .Set("auth", "failure_delay", "0"));

            // Before TLS: no AUTH on offer, and trying gets 538.
            await using (var plain = await RawSmtpClient.ConnectAsync(gateway.Port, from: AccessFixtures.Untrusted))
            {
                var ehlo = await plain.EhloAsync();
                Assert.True(ehlo.Advertises("STARTTLS"));
                Assert.False(ehlo.Advertises("AUTH"));
                var refused = await plain.CommandAsync("AUTH PLAIN " + Convert.ToBase64String(Encoding.UTF8.GetBytes("\0alice\0alice-pw")));
                Assert.Equal(538, refused.Code);
            }

            // STARTTLS + AUTH PLAIN (bcrypt user), then relaying to a foreign domain.
            await SendWithMailKitAsync(gateway.Port, SecureSocketOptions.StartTls, "alice", "alice-pw", usePlain: true);
            var first = Assert.Single(await downstream.Messages.WaitForCountAsync(1, Wait, "alice's message"));
            var headers = Encoding.ASCII.GetString(first.Content);
            Assert.Contains("with ESMTPSA", headers);
            Assert.Contains("(Authenticated sender: alice)", headers);
            var record = await gateway.WaitForLogRecordAsync(r => r.Get("user") == "alice");
            Assert.Equal("127.0.0.2", record["client"]);

            // Implicit TLS (/tls listener) + AUTH LOGIN (SHA-512-crypt user).
            await SendWithMailKitAsync(tlsPort, SecureSocketOptions.SslOnConnect, "carol", "carol-pw", usePlain: false);
            await downstream.Messages.WaitForCountAsync(2, Wait, "carol's message");

            // Wrong passwords from one address: 535, 535, then 421 and the address is refused for a while.
            var attacker = IPAddress.Parse("127.0.0.9");
            var codes = new List<int>();
            await using (var tls = await TlsClient.ConnectAsync(tlsPort, attacker))
            {
                await tls.CommandAsync("EHLO attacker.test");
                for (var i = 0; i < 3; i++)
                    codes.Add((await tls.CommandAsync("AUTH PLAIN " + Convert.ToBase64String(Encoding.UTF8.GetBytes("\0alice\0guess" + i)))).Code);
                Assert.Null(await tls.ReadLineOrNullAsync()); // closed after the 421
            }

            Assert.Equal([535, 535, 421], codes);
            await using (var again = await TlsClient.ConnectAsync(tlsPort, attacker))
            {
                await again.CommandAsync("EHLO attacker.test");
                var reply = await again.CommandAsync("AUTH PLAIN " + Convert.ToBase64String(Encoding.UTF8.GetBytes("\0alice\0alice-pw")));
                Assert.Equal(454, reply.Code);
            }

            await gateway.StopAsync();
        }
        finally
        {
            Directory.Delete(folder, recursive: true);
        }
    }

    [Fact]
    public async Task Connections_still_in_the_TLS_handshake_count_against_the_connection_limits()
    {
        var folder = GatewayIni.NewRoot();
        try
        {
            var (cert, key) = AccessFixtures.SelfSignedCertificate(folder);
            int tlsPort = AccessFixtures.FreePort();
            await using var downstream = TestSmtpServer.Start();
            await using var gateway = await GatewayProcess.StartAsync(output, downstream, ini => ini
                .Set("general", "interfaces", $"127.0.0.1:{ini.ListenPort}, 127.0.0.1:{tlsPort}/tls")
                .Set("tls", "certificate", cert)
                .Set("tls", "key", key)
                .Set("relay", "trusted_networks", "127.0.0.1/32")   // trusted addresses have no per-address limit
                .Set("limits", "max_connections_per_ip", "2"));

            // Two connections to the implicit-TLS port that never send a ClientHello.
            var stalled = new List<Socket>();
            try
            {
                for (var i = 0; i < 2; i++)
                {
                    var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
                    stalled.Add(socket);
                    socket.Bind(new IPEndPoint(AccessFixtures.Untrusted, 0));
                    await socket.ConnectAsync(IPAddress.Loopback, tlsPort);
                }

                // They hold that address's two places: another connection from it is refused once
                // the gateway has taken them in (plain port, same limiter).
                var deadline = DateTime.UtcNow + Wait;
                int banner;
                do
                {
                    await using var probe = await RawSmtpClient.ConnectAsync(gateway.Port, from: AccessFixtures.Untrusted);
                    banner = probe.Banner.Code;
                }
                while (banner == 220 && DateTime.UtcNow < deadline);
                Assert.Equal(421, banner);
            }
            finally
            {
                foreach (var socket in stalled) socket.Dispose();
            }

            await gateway.StopAsync();
        }
        finally
        {
            Directory.Delete(folder, recursive: true);
        }
    }

    [Fact]
    public async Task An_AUTH_user_name_cannot_write_lines_of_its_own_into_the_log()
    {
        var folder = GatewayIni.NewRoot();
        try
        {
            var passwd = Path.Combine(folder, "passwd");
            await File.WriteAllTextAsync(passwd, $"carol:{AccessFixtures.Tool("openssl", null, "passwd", "-6", "carol-pw")}\n");
            await using var downstream = TestSmtpServer.Start();
            await using var gateway = await GatewayProcess.StartAsync(output, downstream, ini => ini
                .Set("auth", "passwd_file", passwd)
                .Set("auth", "allow_plaintext", "yes")
                .Set("auth", "failure_delay", "0"));

            await using (var client = await RawSmtpClient.ConnectAsync(gateway.Port, from: AccessFixtures.Untrusted))
            {
                await client.EhloAsync();
                var forged = "x\nsession=FORGED client=192.0.2.66 authentication failed user=root mechanism=PLAIN failures=9";
                var reply = await client.CommandAsync("AUTH PLAIN " + Convert.ToBase64String(Encoding.UTF8.GetBytes("\0" + forged + "\0wrong")));
                Assert.Equal(535, reply.Code);
                await client.CommandAsync("QUIT");
            }

            await gateway.StopAsync();
            var lines = gateway.Stderr.Snapshot().Where(l => l.Contains("FORGED", StringComparison.Ordinal)).ToList();
            Assert.NotEmpty(lines);
            Assert.All(lines, l => Assert.Contains("authentication failed user=", l[..l.IndexOf("FORGED", StringComparison.Ordinal)]));
        }
        finally
        {
            Directory.Delete(folder, recursive: true);
        }
    }

    [Fact]
    public async Task Commands_pipelined_behind_STARTTLS_are_never_answered()
    {
        var folder = GatewayIni.NewRoot();
        try
        {
            var (cert, key) = AccessFixtures.SelfSignedCertificate(folder);
            await using var downstream = TestSmtpServer.Start();
            await using var gateway = await GatewayProcess.StartAsync(output, downstream, ini => ini
                .Set("tls", "certificate", cert)
                .Set("tls", "key", key));

            await using var client = await TlsClient.ConnectPlainAsync(gateway.Port, IPAddress.Loopback);
            await client.CommandAsync("EHLO client.test");
            await client.SendAsync("STARTTLS\r\nMAIL FROM:<evil@x.test>\r\n");
            Assert.Equal("220 2.0.0 Ready to start TLS", await client.ReadLineOrNullAsync());
            await client.StartTlsAsync(); // fails if a plaintext reply to MAIL arrived first
            var mail = await client.CommandAsync("MAIL FROM:<good@x.test>");
            Assert.Equal(503, mail.Code); // the EHLO from before TLS is forgotten, and no MAIL is open
            await client.CommandAsync("QUIT");
            Assert.DoesNotContain(downstream.Commands.Snapshot(), c => c.Contains("evil", StringComparison.Ordinal));
            await gateway.StopAsync();
        }
        finally
        {
            Directory.Delete(folder, recursive: true);
        }
    }

    [Fact]
    public async Task AUTH_checked_by_the_downstream_server()
    {
        await using var downstream = new TestSmtpServer(DownstreamExtensions.Default | DownstreamExtensions.Auth)
        {
            Users = new() { ["bob"] = "bob-pw" },
        }.Start();
        await using var gateway = await GatewayProcess.StartAsync(output, downstream, ini => ini
            .Set("relay", "local_domains", "local.test")
            .Set("relay", "trusted_networks", "127.0.0.1/32")
            .Set("auth", "downstream", "yes")
            .Set("auth", "allow_plaintext", "yes")
            .Set("auth", "failure_delay", "0"));

        await using var client = await RawSmtpClient.ConnectAsync(gateway.Port, from: AccessFixtures.Untrusted);
        Assert.True((await client.EhloAsync()).Advertises("AUTH"));
        Assert.Equal(535, (await client.CommandAsync("AUTH PLAIN " + Convert.ToBase64String(Encoding.UTF8.GetBytes("\0bob\0nope")))).Code);
        Assert.Equal(334, (await client.CommandAsync("AUTH LOGIN")).Code);
        Assert.Equal(334, (await client.CommandAsync(Convert.ToBase64String(Encoding.UTF8.GetBytes("bob")))).Code);
        Assert.Equal(235, (await client.CommandAsync(Convert.ToBase64String(Encoding.UTF8.GetBytes("bob-pw")))).Code);
        Assert.Equal(250, (await client.CommandAsync("MAIL FROM:<bob@local.test>")).Code);
        Assert.Equal(250, await RcptCodeAsync(client, "<friend@foreign.test>"));
        Assert.Equal(["bob", "bob"], downstream.AuthAttempts.Snapshot());
        await gateway.StopAsync();
    }

    [Fact]
    public async Task PROXY_v1_and_v2_from_HAProxy_give_the_real_client_and_untrusted_peers_are_refused()
    {
        int proxyPort = AccessFixtures.FreePort();
        await using var downstream = TestSmtpServer.Start(DownstreamExtensions.Default | DownstreamExtensions.XForward);
        await using var gateway = await GatewayProcess.StartAsync(output, downstream, ini => ini
            .Set("general", "interfaces", $"127.0.0.1:{ini.ListenPort}, 127.0.0.1:{proxyPort}/proxy")
            .Set("general", "proxy_trusted", "127.0.0.1/32")
            .Set("relay", "local_domains", "local.test")
            .Set("relay", "trusted_networks", "127.0.0.3/32"));
        await using var haproxy = await HaProxy.StartAsync(gateway.Config.Root, proxyPort);

        foreach (var port in new[] { haproxy.V1Port, haproxy.V2Port })
        {
            // Through the balancer from 127.0.0.2: not trusted, so only the local domain.
            await using (var client = await RawSmtpClient.ConnectAsync(port, from: AccessFixtures.Untrusted))
            {
                Assert.Equal(220, client.Banner.Code);
                await client.EhloAsync("behind.test");
                Assert.Equal(250, (await client.CommandAsync("MAIL FROM:<a@b.test>")).Code);
                Assert.Equal(550, await RcptCodeAsync(client, "<x@foreign.test>"));
                Assert.Equal(250, await RcptCodeAsync(client, "<x@local.test>"));
            }

            // From 127.0.0.3 (trusted): the balancer's own address (127.0.0.1) does not count, this one does.
            await using (var client = await RawSmtpClient.ConnectAsync(port, from: IPAddress.Parse("127.0.0.3")))
            {
                await client.EhloAsync("trusted.test");
                Assert.Equal(250, (await client.CommandAsync("MAIL FROM:<a@b.test>")).Code);
                Assert.Equal(250, await RcptCodeAsync(client, "<x@foreign.test>"));
                Assert.Equal(354, (await client.CommandAsync("DATA")).Code);
                await client.SendAsync(SmtpBytes.DataPayload(TestMessages.Plain("via haproxy", "hello")));
                Assert.Equal(250, (await client.ReadReplyAsync()).Code);
            }

            var record = await gateway.WaitForLogRecordAsync(r => r["helo"] == "trusted.test" && r["client"] == "127.0.0.3");
            Assert.Equal("127.0.0.3", record["client"]);
        }

        Assert.Contains(downstream.Commands.Snapshot(), c => c.StartsWith("XFORWARD", StringComparison.Ordinal) && c.Contains("ADDR=127.0.0.3"));

        // A PROXY header straight from a peer that is not in proxy_trusted is refused.
        using var direct = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        direct.Bind(new IPEndPoint(AccessFixtures.Untrusted, 0));
        await direct.ConnectAsync(IPAddress.Loopback, proxyPort);
        await direct.SendAsync(Encoding.ASCII.GetBytes("PROXY TCP4 127.0.0.3 127.0.0.1 5555 25\r\nEHLO x\r\n"));
        var answer = new byte[512];
        var n = await direct.ReceiveAsync(answer, SocketFlags.None).WaitAsync(Wait);
        Assert.StartsWith("554 5.7.1", Encoding.ASCII.GetString(answer, 0, n));
        await gateway.StopAsync();
    }

    private static async Task SendWithMailKitAsync(int port, SecureSocketOptions security, string user, string password, bool usePlain)
    {
        using var smtp = new SmtpClient
        {
            LocalEndPoint = new IPEndPoint(AccessFixtures.Untrusted, 0),
            ServerCertificateValidationCallback = (_, _, _, _) => true,
            Timeout = 20000,
        };
        await smtp.ConnectAsync("127.0.0.1", port, security);
        Assert.True(smtp.IsSecure);
        if (usePlain) smtp.AuthenticationMechanisms.Remove("LOGIN");
        else smtp.AuthenticationMechanisms.Remove("PLAIN");
        await smtp.AuthenticateAsync(user, password);
        var message = new MimeMessage();
        message.From.Add(MailboxAddress.Parse($"{user}@local.test"));
        message.To.Add(MailboxAddress.Parse("friend@foreign.test"));
        message.Subject = "relayed after AUTH";
        message.Body = new TextPart("plain") { Text = "hello" };
        await smtp.SendAsync(message);
        await smtp.DisconnectAsync(true);
    }
}

// A line-level SMTP client that can start TLS mid-conversation (reads byte by byte before the
// handshake so nothing of it is consumed early).
internal sealed class TlsClient : IAsyncDisposable
{
    private readonly Socket socket;
    private Stream stream;

    private TlsClient(Socket socket)
    {
        this.socket = socket;
        stream = new NetworkStream(socket, ownsSocket: false);
    }

    public static async Task<TlsClient> ConnectPlainAsync(int port, IPAddress from)
    {
        var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        socket.Bind(new IPEndPoint(from, 0));
        await socket.ConnectAsync(IPAddress.Loopback, port);
        var client = new TlsClient(socket);
        Assert.StartsWith("220 ", await client.ReadLineOrNullAsync());
        return client;
    }

    // An implicit-TLS connection (a /tls listener).
    public static async Task<TlsClient> ConnectAsync(int port, IPAddress from)
    {
        var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        socket.Bind(new IPEndPoint(from, 0));
        await socket.ConnectAsync(IPAddress.Loopback, port);
        var client = new TlsClient(socket);
        await client.StartTlsAsync();
        Assert.StartsWith("220 ", await client.ReadLineOrNullAsync());
        return client;
    }

    public async Task StartTlsAsync()
    {
        var ssl = new SslStream(stream, leaveInnerStreamOpen: false);
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(20));
        await ssl.AuthenticateAsClientAsync(new SslClientAuthenticationOptions
        {
            TargetHost = "gw.test",
            RemoteCertificateValidationCallback = (_, _, _, _) => true,
        }, cts.Token);
        stream = ssl;
    }

    public Task SendAsync(string text) => stream.WriteAsync(Encoding.ASCII.GetBytes(text)).AsTask();

    public async Task<string?> ReadLineOrNullAsync()
    {
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(20));
        var line = new List<byte>();
        var one = new byte[1];
        while (true)
        {
            int n;
            try { n = await stream.ReadAsync(one, cts.Token); }
            catch (IOException) { n = 0; }
            if (n == 0) return line.Count == 0 ? null : Encoding.ASCII.GetString([.. line]);
            if (one[0] == '\n') return Encoding.ASCII.GetString([.. line]).TrimEnd('\r');
            line.Add(one[0]);
        }
    }

    public async Task<SmtpReply> CommandAsync(string line)
    {
        await SendAsync(line + "\r\n");
        var lines = new List<string>();
        while (true)
        {
            var text = await ReadLineOrNullAsync() ?? throw new IOException("closed before a reply to " + line);
            lines.Add(text.Length > 4 ? text[4..] : "");
            if (text.Length <= 3 || text[3] == ' ') return new SmtpReply(int.Parse(text[..3]), lines);
        }
    }

    public async ValueTask DisposeAsync()
    {
        await stream.DisposeAsync();
        socket.Dispose();
    }
}
