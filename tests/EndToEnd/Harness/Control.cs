using System.Net.Sockets;
using System.Text;

namespace Portcullis.EndToEnd.Harness;

// `portcullis reload` / `portcullis status` against one test gateway, and plain HTTP GETs to
// its status server.
public static class Control
{
    public static Task<CliResult> ReloadAsync(GatewayProcess gateway) =>
        PortcullisBinary.RunAsync("reload", "--config", gateway.Config.FilePath);

    public static Task<CliResult> StatusAsync(GatewayProcess gateway) =>
        PortcullisBinary.RunAsync("status", "--config", gateway.Config.FilePath);

    // The raw HTTP response (head and body) to `request`, read until the server closes.
    public static async Task<string> HttpAsync(int port, string request)
    {
        using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(15));
        await socket.ConnectAsync(System.Net.IPAddress.Loopback, port, timeout.Token);
        await socket.SendAsync(Encoding.ASCII.GetBytes(request), SocketFlags.None, timeout.Token);
        var response = new MemoryStream();
        var buffer = new byte[16 * 1024];
        int n;
        while ((n = await socket.ReceiveAsync(buffer, SocketFlags.None, timeout.Token)) > 0)
        {
            response.Write(buffer, 0, n);
        }

        return Encoding.UTF8.GetString(response.ToArray());
    }

    public static Task<string> GetAsync(int port, string path) =>
        HttpAsync(port, $"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");

    // A message with the EICAR string: refused while the engine knows it.
    public static byte[] Eicar(string subject) => TestMessages.Plain(subject, "before", TestSignatures.Eicar, "after");

    public static async Task<SmtpReply> SendAsync(GatewayProcess gateway, byte[] content)
    {
        await using var client = await RawSmtpClient.ConnectAsync(gateway.Port);
        var reply = await RawTransaction.SendAsync(client, content);
        await client.CommandAsync("QUIT");
        return reply;
    }
}
