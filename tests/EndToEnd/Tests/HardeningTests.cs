using System.Diagnostics;
using System.Net.Sockets;
using System.Text;
using System.Text.Json;
using Portcullis.EndToEnd.Harness;
using Xunit;
using Xunit.Abstractions;

namespace Portcullis.EndToEnd.Tests;

// Issue 11 against the published binary: the AUTH throttle across a reload, Debian's own password
// hashes, the quarantine CLI over a hostile folder, the quarantine folder's mode, stale spill
// files, Unicode around a local domain, and a status page under idle connections.
public sealed class HardeningTests(ITestOutputHelper output)
{
    private static readonly TimeSpan Wait = TimeSpan.FromSeconds(30);

    private static string Mkpasswd(string method, string password)
    {
        var start = new ProcessStartInfo("mkpasswd") { RedirectStandardOutput = true, UseShellExecute = false };
        foreach (var a in new[] { "-m", method, password }) start.ArgumentList.Add(a);
        using var process = Process.Start(start)!;
        var hash = process.StandardOutput.ReadToEnd().Trim();
        process.WaitForExit();
        Assert.True(process.ExitCode == 0, "mkpasswd failed (build/deps.sh installs whois)");
        return hash;
    }

    private static string Plain(string user, string password) =>
        "AUTH PLAIN " + Convert.ToBase64String(Encoding.UTF8.GetBytes("\0" + user + "\0" + password));

    [Fact]
    public async Task A_yescrypt_user_logs_in_and_AUTH_failures_stay_counted_across_a_reload()
    {
        var folder = GatewayIni.NewRoot();
        try
        {
            var passwd = Path.Combine(folder, "passwd");
            await File.WriteAllTextAsync(passwd, $"dora:{Mkpasswd("yescrypt", "dora-pw")}\n");
            await using var downstream = TestSmtpServer.Start();
            await using var gateway = await GatewayProcess.StartAsync(output, downstream, ini => ini
                .Set("auth", "passwd_file", passwd)
                .Set("auth", "allow_plaintext", "yes")
                .Set("auth", "max_failures", "2")
                .Set("auth", "failure_window", "1h")
                .Set("auth", "failure_delay", "0"));

            await using (var user = await RawSmtpClient.ConnectAsync(gateway.Port, from: System.Net.IPAddress.Parse("127.0.0.3")))
            {
                await user.EhloAsync();
                Assert.Equal(235, (await user.CommandAsync(Plain("dora", "dora-pw"))).Code);
            }

            var codes = new List<int>();
            await using (var attacker = await RawSmtpClient.ConnectAsync(gateway.Port, from: AccessFixtures.Untrusted))
            {
                await attacker.EhloAsync();
                for (var i = 0; i < 2; i++) codes.Add((await attacker.CommandAsync(Plain("dora", "guess" + i))).Code);
            }
            Assert.Equal([535, 421], codes);

            var reload = await Control.ReloadAsync(gateway);
            Assert.True(reload.ExitCode == 0, reload.ToString());

            await using (var again = await RawSmtpClient.ConnectAsync(gateway.Port, from: AccessFixtures.Untrusted))
            {
                await again.EhloAsync();
                Assert.Equal(454, (await again.CommandAsync(Plain("dora", "dora-pw"))).Code);
            }
            await gateway.StopAsync();
        }
        finally
        {
            Directory.Delete(folder, recursive: true);
        }
    }

    [Fact]
    public async Task Check_config_refuses_a_passwd_file_nobody_can_log_in_with()
    {
        var root = GatewayIni.NewRoot();
        try
        {
            var passwd = Path.Combine(root, "passwd");
            await File.WriteAllTextAsync(passwd, "old:$1$8hp8Z.YN$OFRACWeuqmfuHFdfBkDog/\nlocked:!\n");
            var ini = new GatewayIni(root, GatewayIni.FreePort(), GatewayIni.FreePort())
                .Set("auth", "passwd_file", passwd)
                .Set("auth", "allow_plaintext", "yes");
            await ini.WriteAsync();

            var check = await PortcullisBinary.RunAsync("check-config", "--config", ini.FilePath);
            Assert.True(check.ExitCode == 78, check.ToString());
            Assert.Contains(passwd, check.Stderr);
            Assert.Contains("no usable user:hash line", check.Stderr);
            Assert.Contains("md5crypt", check.Stderr);
        }
        finally
        {
            Directory.Delete(root, recursive: true);
        }
    }

    [Fact]
    public async Task Quarantine_cli_refuses_symlinks_and_bad_envelopes_and_escapes_what_it_prints()
    {
        var root = GatewayIni.NewRoot();
        try
        {
            await using var downstream = TestSmtpServer.Start();
            var ini = new GatewayIni(root, GatewayIni.FreePort(), downstream.Port);
            await ini.WriteAsync();
            var q = ini.QuarantineFolder;
            Directory.CreateDirectory(q, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
            var secret = Path.Combine(root, "shadow");
            await File.WriteAllTextAsync(secret, "root:TOP-SECRET:19000::::::\n");
            File.SetUnixFileMode(secret, UnixFileMode.UserRead);

            const string linked = "20240101-120000-0000000a", crlf = "20240101-120000-0000000b", escapes = "20240101-120000-0000000c";
            WriteEntry(q, linked, ["victim@dest.test"], "client.test", "linked");
            File.CreateSymbolicLink(Path.Combine(q, linked + ".eml"), secret);
            WriteEntry(q, crlf, ["victim@dest.test\r\nRCPT TO:<other@dest.test>"], "client.test", "crlf");
            await File.WriteAllTextAsync(Path.Combine(q, crlf + ".eml"), "Subject: crlf\r\n\r\nbody\r\n");
            WriteEntry(q, escapes, ["victim@dest.test"], "\u001b[2Jevil", "\u001b]0;pwned\u0007 hello");
            await File.WriteAllTextAsync(Path.Combine(q, escapes + ".eml"), "Subject: x\r\nX-Evil: \u001b[2J\u001b]0;pwned\u0007\r\n\r\nbody\r\n");

            Task<CliResult> Quarantine(params string[] args) => PortcullisBinary.RunAsync(["quarantine", .. args, "--config", ini.FilePath]);

            var show = await Quarantine("show", linked);
            Assert.True(show.ExitCode == 1, show.ToString());
            Assert.Contains("symbolic link", show.Stderr);
            Assert.DoesNotContain("TOP-SECRET", show.Stdout + show.Stderr);
            var release = await Quarantine("release", linked);
            Assert.True(release.ExitCode == 1, release.ToString());
            Assert.DoesNotContain("TOP-SECRET", release.Stdout + release.Stderr);

            var smuggle = await Quarantine("release", crlf);
            Assert.True(smuggle.ExitCode == 1, smuggle.ToString());
            Assert.Contains("is corrupt", smuggle.Stderr);
            Assert.DoesNotContain("   at ", smuggle.Stderr);
            Assert.Equal(0, downstream.Messages.Count);

            var list = await Quarantine("list");
            var shown = await Quarantine("show", escapes);
            Assert.True(shown.ExitCode == 0, shown.ToString());
            foreach (var text in new[] { list.Stdout, list.Stderr, shown.Stdout, shown.Stderr, show.Stderr, smuggle.Stderr })
            {
                Assert.DoesNotContain('\u001b', text);
                Assert.DoesNotContain('\u0007', text);
                Assert.DoesNotContain('\r', text);
            }
            Assert.Contains("\\x1B]0;pwned\\x07 hello", list.Stdout);
            Assert.Contains("helo:           \\x1B[2Jevil\n", shown.Stdout);
            Assert.Contains("X-Evil: \\x1B[2J\\x1B]0;pwned\\x07\n", shown.Stdout);
        }
        finally
        {
            Directory.Delete(root, recursive: true);
        }
    }

    private static void WriteEntry(string folder, string id, string[] recipients, string helo, string subject)
    {
        using var file = File.Create(Path.Combine(folder, id + ".json"));
        using var json = new Utf8JsonWriter(file);
        json.WriteStartObject();
        json.WriteString("id", id);
        json.WriteString("time", "2024-01-01T12:00:00+00:00");
        json.WriteString("session", "S1");
        json.WriteString("client_address", "192.0.2.1");
        json.WriteString("helo", helo);
        json.WriteString("sender", "sender@src.test");
        json.WriteStartArray("recipients");
        foreach (var r in recipients) json.WriteStringValue(r);
        json.WriteEndArray();
        json.WriteNumber("size", 20);
        json.WriteString("virus", "Eicar-Test");
        json.WriteString("action", "rejected");
        json.WriteString("subject", subject);
        json.WriteString("message_id", "<m@src.test>");
        json.WriteEndObject();
    }

    [Fact]
    public async Task A_lax_quarantine_folder_is_made_private_and_stale_spill_files_are_removed_at_start()
    {
        await using var downstream = TestSmtpServer.Start();
        string stale = "", other = "";
        await using var gateway = await GatewayProcess.StartAsync(output, downstream, launch: new GatewayLaunch
        {
            BeforeStart = ini =>
            {
                Directory.CreateDirectory(ini.QuarantineFolder);
                File.SetUnixFileMode(ini.QuarantineFolder, (UnixFileMode)0b111_101_101);   // 0755
                stale = Path.Combine(ini.SpoolFolder, "portcullis-00112233445566778899aabb.spill");
                File.WriteAllText(stale, "a message a kill -9 left behind");
                other = Path.Combine(ini.SpoolFolder, "keep.txt");
                File.WriteAllText(other, "not ours");
            },
        });

        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute, File.GetUnixFileMode(gateway.Config.QuarantineFolder));
        Assert.False(File.Exists(stale), "the stale spill file is still there");
        Assert.True(File.Exists(other));
        File.Delete(other);   // StopAsync checks that temp_folder is empty
        await gateway.StopAsync();
    }

    [Fact]
    public async Task Unicode_whitespace_after_a_local_domain_is_not_accepted_for_relay()
    {
        await using var downstream = TestSmtpServer.Start();
        await using var gateway = await GatewayProcess.StartAsync(output, downstream, ini => ini.Set("relay", "local_domains", "local.test"));
        await using var client = await RawSmtpClient.ConnectAsync(gateway.Port, from: AccessFixtures.Untrusted);
        await client.EhloAsync();
        Assert.Equal(250, (await client.CommandAsync("MAIL FROM:<a@src.test> SMTPUTF8")).Code);
        foreach (var tail in new[] { "\u00A0", "\u3000", "\u0085" })
        {
            await client.SendAsync(Encoding.UTF8.GetBytes($"RCPT TO:<victim@local.test{tail}>\r\n"));
            var reply = await client.ReadReplyAsync();
            Assert.True(reply.Code is 501 or 550, $"U+{(int)tail[0]:X4}: {reply}");
        }
        Assert.DoesNotContain(downstream.Commands.Snapshot(), c => c.StartsWith("RCPT", StringComparison.OrdinalIgnoreCase));
        await gateway.StopAsync();
    }

    [Fact]
    public async Task The_status_page_keeps_serving_while_idle_connections_hold_every_slot_and_answers_HEAD()
    {
        await using var downstream = TestSmtpServer.Start();
        await using var gateway = await GatewayProcess.StartAsync(output, downstream);
        var port = gateway.Config.StatusPort;

        var idle = new List<Socket>();
        try
        {
            for (var i = 0; i < 20; i++)
            {
                var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
                idle.Add(socket);
                await socket.ConnectAsync(System.Net.IPAddress.Loopback, port);
            }

            var metrics = await Control.GetAsync(port, "/metrics");
            Assert.StartsWith("HTTP/1.1 200 OK\r\n", metrics);

            // An idle connection is closed by the server, not kept.
            using var timeout = new CancellationTokenSource(Wait);
            var buffer = new byte[16];
            int n;
            try
            {
                n = await idle[^1].ReceiveAsync(buffer, SocketFlags.None, timeout.Token);
            }
            catch (SocketException)
            {
                n = 0;   // reset: closed as well
            }
            Assert.Equal(0, n);
        }
        finally
        {
            foreach (var socket in idle) socket.Dispose();
        }

        var get = await Control.GetAsync(port, "/");
        var head = await Control.HttpAsync(port, "HEAD / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
        Assert.StartsWith("HTTP/1.1 200 OK\r\n", head);
        Assert.EndsWith("\r\n\r\n", head);
        Assert.Equal(Header(get, "Content-Type"), Header(head, "Content-Type"));
        Assert.True(int.Parse(Header(head, "Content-Length")) > 0, head);
        Assert.StartsWith("HTTP/1.1 405 ", await Control.HttpAsync(port, "DELETE / HTTP/1.1\r\nHost: x\r\n\r\n"));
        await gateway.StopAsync();
    }

    private static string Header(string response, string name)
    {
        foreach (var line in response[..response.IndexOf("\r\n\r\n", StringComparison.Ordinal)].Split("\r\n"))
        {
            if (line.StartsWith(name + ": ", StringComparison.OrdinalIgnoreCase)) return line[(name.Length + 2)..];
        }
        return "";
    }
}
