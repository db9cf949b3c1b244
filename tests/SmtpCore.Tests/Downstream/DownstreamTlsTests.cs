using System.Net;
using System.Net.Security;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using Portcullis.SmtpCore.Downstream;
using Xunit;

namespace Portcullis.SmtpCore.Tests.Downstream;

// STARTTLS towards the downstream (RFC 3207): a minimal server that offers it, switches to TLS
// after its 220, and then expects a fresh EHLO.
public sealed class DownstreamTlsTests
{
    private static readonly X509Certificate2 Certificate = CreateCertificate();

    private static X509Certificate2 CreateCertificate()
    {
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest("CN=downstream.test", key, HashAlgorithmName.SHA256);
        return request.CreateSelfSigned(DateTimeOffset.UtcNow.AddDays(-1), DateTimeOffset.UtcNow.AddDays(1));
    }

    // Returns the port and the task running one conversation; it records the commands it saw and
    // whether each arrived over TLS.
    private static (int Port, Task<List<string>> Server) StartServer(bool offerTls)
    {
        var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        int port = ((IPEndPoint)listener.LocalEndpoint).Port;
        var server = Task.Run(async () =>
        {
            var seen = new List<string>();
            using var socket = await listener.AcceptSocketAsync();
            listener.Stop();
            Stream stream = new NetworkStream(socket, ownsSocket: false);
            bool tls = false;
            async Task Say(string text) => await stream.WriteAsync(Encoding.ASCII.GetBytes(text + "\r\n"));
            async Task<string?> Line()
            {
                var bytes = new List<byte>();
                var one = new byte[1];
                while (await stream.ReadAsync(one) == 1)
                {
                    if (one[0] == '\n') return Encoding.ASCII.GetString([.. bytes]).TrimEnd('\r');
                    bytes.Add(one[0]);
                }
                return null;
            }
            await Say("220 downstream.test ESMTP");
            while (await Line() is { } command)
            {
                seen.Add((tls ? "tls " : "plain ") + command);
                var verb = command.Split(' ')[0].ToUpperInvariant();
                if (verb == "EHLO") await Say(offerTls && !tls ? "250-downstream.test\r\n250-PIPELINING\r\n250 STARTTLS" : "250-downstream.test\r\n250 PIPELINING");
                else if (verb == "STARTTLS")
                {
                    await Say("220 2.0.0 go ahead");
                    var ssl = new SslStream(stream);
                    try { await ssl.AuthenticateAsServerAsync(new SslServerAuthenticationOptions { ServerCertificate = Certificate }); }
                    catch (Exception e) when (e is IOException or System.Security.Authentication.AuthenticationException)
                    {
                        seen.Add("handshake failed");
                        break;
                    }
                    stream = ssl;
                    tls = true;
                }
                else if (verb == "QUIT") { await Say("221 bye"); break; }
                else await Say("250 ok");
            }
            return seen;
        });
        return (port, server);
    }

    private static DownstreamOptions Options(int port, DownstreamTlsMode mode, bool trustAnything) => new()
    {
        Host = "127.0.0.1",
        Port = port,
        HeloName = "gw.test",
        ReplyTimeout = TimeSpan.FromSeconds(10),
        Tls = mode,
        TlsClientOptions = new SslClientAuthenticationOptions
        {
            TargetHost = "downstream.test",
            RemoteCertificateValidationCallback = trustAnything ? (_, _, _, _) => true : null,
        },
    };

    [Fact]
    public async Task Required_TLS_upgrades_and_says_EHLO_again()
    {
        var (port, server) = StartServer(offerTls: true);
        await using (var client = await DownstreamClient.ConnectAsync(Options(port, DownstreamTlsMode.Required, trustAnything: true)))
        {
            Assert.True(client.IsTls);
            Assert.False(client.Capabilities.StartTls);
            Assert.Equal(250, (await client.NoopAsync()).Code);
        }
        var seen = await server.WaitAsync(TimeSpan.FromSeconds(10));
        Assert.Equal(["plain EHLO gw.test", "plain STARTTLS", "tls EHLO gw.test", "tls NOOP", "tls QUIT"], seen);
    }

    [Fact]
    public async Task An_untrusted_certificate_fails_the_connection()
    {
        var (port, server) = StartServer(offerTls: true);
        var e = await Assert.ThrowsAsync<DownstreamException>(() => DownstreamClient.ConnectAsync(Options(port, DownstreamTlsMode.Opportunistic, trustAnything: false)));
        Assert.Contains("TLS handshake failed", e.Message);
        await server.WaitAsync(TimeSpan.FromSeconds(10));
    }

    [Fact]
    public async Task Opportunistic_goes_on_in_clear_when_not_offered_and_required_refuses()
    {
        var (port, server) = StartServer(offerTls: false);
        await using (var client = await DownstreamClient.ConnectAsync(Options(port, DownstreamTlsMode.Opportunistic, trustAnything: true)))
        {
            Assert.False(client.IsTls);
        }
        Assert.Equal(["plain EHLO gw.test", "plain EHLO gw.test", "plain QUIT"], await server.WaitAsync(TimeSpan.FromSeconds(10)));

        (port, server) = StartServer(offerTls: false);
        var e = await Assert.ThrowsAsync<DownstreamException>(() => DownstreamClient.ConnectAsync(Options(port, DownstreamTlsMode.Required, trustAnything: true)));
        Assert.Contains("does not offer STARTTLS", e.Message);
        await server.WaitAsync(TimeSpan.FromSeconds(10));
    }
}
