using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using Xunit;

namespace Portcullis.EndToEnd.Harness;

// Files and helper processes the access tests need: a self-signed certificate (openssl),
// password hashes (openssl passwd -6, htpasswd -nbB), a tcprules-compiled cdb, and HAProxy.
public static class AccessFixtures
{
    public static readonly IPAddress Untrusted = IPAddress.Parse("127.0.0.2");

    public static string Tool(string tool, string? stdin, params string[] args)
    {
        var start = new ProcessStartInfo(tool)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = stdin is not null,
            UseShellExecute = false,
        };
        foreach (var arg in args) start.ArgumentList.Add(arg);
        Process process;
        try
        {
            process = Process.Start(start)!;
        }
        catch (System.ComponentModel.Win32Exception)
        {
            throw new InvalidOperationException($"{tool} is not installed (build/deps.sh test installs it)");
        }

        using (process)
        {
            if (stdin is not null)
            {
                process.StandardInput.Write(stdin);
                process.StandardInput.Close();
            }

            var output = process.StandardOutput.ReadToEnd();
            var error = process.StandardError.ReadToEnd();
            process.WaitForExit();
            Assert.True(process.ExitCode == 0, $"{tool} {string.Join(' ', args)} failed: {error}");
            return output.Trim();
        }
    }

    // (certificate, key) PEM files for CN=<commonName>, written over any earlier pair in folder.
    public static (string Cert, string Key) SelfSignedCertificate(string folder, string commonName = "gw.test")
    {
        var cert = Path.Combine(folder, "cert.pem");
        var key = Path.Combine(folder, "key.pem");
        Tool("openssl", null, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=" + commonName);
        return (cert, key);
    }

    public static int FreePort() => GatewayIni.FreePort();

    // Polls until something accepts on the port (process start-up), bounded by a deadline.
    public static async Task WaitForListenerAsync(int port, Process? process = null)
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(20);
        while (true)
        {
            using var probe = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
            try
            {
                await probe.ConnectAsync(IPAddress.Loopback, port);
                return;
            }
            catch (SocketException) when (DateTime.UtcNow < deadline && process is not { HasExited: true })
            {
                await Task.Delay(50); // waiting for another process to start listening; bounded by the deadline
            }
        }
    }
}

// HAProxy in TCP mode on loopback, in the foreground, with two frontends: one sends PROXY v1
// (send-proxy) and one v2 (send-proxy-v2) to the gateway's /proxy listener.
public sealed class HaProxy : IAsyncDisposable
{
    private readonly Process process;

    private HaProxy(Process process, int v1Port, int v2Port)
    {
        this.process = process;
        V1Port = v1Port;
        V2Port = v2Port;
    }

    public int V1Port { get; }
    public int V2Port { get; }

    public static async Task<HaProxy> StartAsync(string folder, int gatewayProxyPort)
    {
        int v1 = AccessFixtures.FreePort(), v2 = AccessFixtures.FreePort();
        var config = Path.Combine(folder, "haproxy.cfg");
        await File.WriteAllTextAsync(config, $"""
            global
                maxconn 64
            defaults
                mode tcp
                timeout connect 5s
                timeout client 30s
                timeout server 30s
            frontend v1
                bind 127.0.0.1:{v1}
                default_backend gateway_v1
            frontend v2
                bind 127.0.0.1:{v2}
                default_backend gateway_v2
            backend gateway_v1
                server gw 127.0.0.1:{gatewayProxyPort} send-proxy
            backend gateway_v2
                server gw 127.0.0.1:{gatewayProxyPort} send-proxy-v2

            """);
        var start = new ProcessStartInfo("haproxy") { UseShellExecute = false, RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var arg in new[] { "-db", "-f", config }) start.ArgumentList.Add(arg);
        Process process;
        try
        {
            process = Process.Start(start)!;
        }
        catch (System.ComponentModel.Win32Exception)
        {
            throw new InvalidOperationException("haproxy is not installed (build/deps.sh test installs it)");
        }

        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        var proxy = new HaProxy(process, v1, v2);
        await AccessFixtures.WaitForListenerAsync(v1, process);
        await AccessFixtures.WaitForListenerAsync(v2, process);
        return proxy;
    }

    public async ValueTask DisposeAsync()
    {
        if (!process.HasExited)
        {
            process.Kill();
            await process.WaitForExitAsync();
        }

        process.Dispose();
    }
}
