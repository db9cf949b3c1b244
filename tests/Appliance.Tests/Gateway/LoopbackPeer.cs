using System.Net;
using System.Net.Sockets;
using System.Text;
using Portcullis.SmtpCore.Server;
using Xunit;

namespace Portcullis.Appliance.Tests.Gateway;

// One end of a loopback TCP connection, read a line at a time: the client talking to a real
// SmtpSession, or the scripted downstream the gateway connected to.
internal sealed class LoopbackPeer : IDisposable, IAsyncDisposable
{
    private readonly Socket _socket;
    private Stream _stream;
    private readonly List<byte> _pending = [];
    private readonly byte[] _buffer = new byte[16 * 1024];
    private bool _eof;
    private Task _session = Task.CompletedTask;

    public LoopbackPeer(Socket socket)
    {
        _socket = socket;
        _socket.NoDelay = true;
        _stream = new NetworkStream(socket, ownsSocket: false);
    }

    public bool Closed { get; private set; }

    // A real SmtpSession with this handler on the accepted end; the peer is its client.
    public static async Task<LoopbackPeer> StartSessionAsync(SmtpServerOptions options, ISmtpSessionHandler handler)
    {
        using var listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        listener.Listen(1);
        var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        var connect = client.ConnectAsync(listener.LocalEndPoint!);
        var accepted = await listener.AcceptAsync();
        await connect;
        var peer = new LoopbackPeer(client);
        peer._session = Task.Run(async () =>
        {
            var transport = new NetworkStream(accepted, ownsSocket: true);
            try
            {
                var session = new SmtpSession(transport, accepted.RemoteEndPoint, accepted.LocalEndPoint, options, handler, "t1");
                await session.RunAsync(CancellationToken.None);
            }
            finally
            {
                await transport.DisposeAsync(); // the session leaves the transport open; closing is ours
            }
        });
        return peer;
    }

    public async Task SendAsync(byte[] bytes)
    {
        using var cts = new CancellationTokenSource(GatewayTranscript.Patience);
        await _stream.WriteAsync(bytes, cts.Token);
    }

    public void ShutdownSend() => _socket.Shutdown(SocketShutdown.Send);

    // The client's side of STARTTLS: everything after this goes over TLS (any certificate).
    public async Task StartTlsAsync()
    {
        Assert.True(_pending.Count == 0, "bytes left over in clear before the TLS handshake");
        var tls = new System.Net.Security.SslStream(_stream, leaveInnerStreamOpen: false, (_, _, _, _) => true);
        using var cts = new CancellationTokenSource(GatewayTranscript.Patience);
        await tls.AuthenticateAsClientAsync(new System.Net.Security.SslClientAuthenticationOptions { TargetHost = "mx.test" }, cts.Token);
        _stream = tls;
    }

    public void Close()
    {
        Closed = true;
        _socket.Close();
    }

    // One line without its CRLF; null once the other end has closed and everything was read.
    public async Task<string?> ReadLineAsync()
    {
        while (true)
        {
            int lf = _pending.IndexOf((byte)'\n');
            if (lf >= 0)
            {
                string line = Encoding.UTF8.GetString(_pending.GetRange(0, lf).ToArray());
                _pending.RemoveRange(0, lf + 1);
                Assert.True(line.EndsWith('\r'), $"line '{line}' does not end with CRLF");
                return line[..^1];
            }
            if (_eof)
            {
                if (_pending.Count == 0) return null;
                string rest = Encoding.UTF8.GetString(_pending.ToArray());
                _pending.Clear();
                return rest;
            }
            await FillAsync();
        }
    }

    // Waits for the other end to close; returns whatever it still sent.
    public async Task<string> ReadToEndAsync()
    {
        while (!_eof) await FillAsync();
        string rest = Encoding.UTF8.GetString(_pending.ToArray());
        _pending.Clear();
        Closed = true;
        return rest;
    }

    private async Task FillAsync()
    {
        using var cts = new CancellationTokenSource(GatewayTranscript.Patience);
        int n;
        try
        {
            n = await _stream.ReadAsync(_buffer, cts.Token);
        }
        catch (OperationCanceledException)
        {
            throw new TimeoutException($"nothing arrived for {GatewayTranscript.Patience.TotalSeconds} s");
        }
        catch (IOException)
        {
            n = 0; // reset by the other end: as good as closed
        }
        if (n == 0) _eof = true;
        else _pending.AddRange(_buffer.AsSpan(0, n));
    }

    public async Task WaitForSessionEndAsync() => await _session.WaitAsync(GatewayTranscript.Patience);

    public void Dispose()
    {
        _stream.Dispose();
        _socket.Dispose();
    }

    public async ValueTask DisposeAsync()
    {
        Dispose();
        try { await _session.WaitAsync(GatewayTranscript.Patience); } catch { /* the test already failed */ }
    }
}
