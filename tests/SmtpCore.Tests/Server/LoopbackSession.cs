using System.Net;
using System.Net.Sockets;
using System.Text;
using Portcullis.SmtpCore.Server;
using Xunit;

namespace Portcullis.SmtpCore.Tests.Server;

// A real SmtpSession on the accepted end of a loopback TCP connection, and a raw client on the other.
internal sealed class LoopbackSession : IAsyncDisposable
{
    public static readonly TimeSpan Patience = TimeSpan.FromSeconds(10); // a hung session fails, never hangs

    private readonly Socket _client;
    private readonly NetworkStream _stream;
    private readonly List<byte> _pending = [];
    private readonly byte[] _buffer = new byte[16 * 1024];
    private bool _eof;

    private LoopbackSession(Socket client, Task run)
    {
        _client = client;
        _stream = new NetworkStream(client, ownsSocket: false);
        Run = run;
    }

    public Task Run { get; }

    public static async Task<LoopbackSession> StartAsync(SmtpServerOptions options, ISmtpSessionHandler handler,
        CancellationToken shutdown = default, CancellationToken? drain = null)
    {
        using var listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        listener.Listen(1);
        var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        var connect = client.ConnectAsync(listener.LocalEndPoint!);
        var accepted = await listener.AcceptAsync();
        await connect;
        var run = Task.Run(async () =>
        {
            var transport = new NetworkStream(accepted, ownsSocket: true);
            try
            {
                var session = new SmtpSession(transport, accepted.RemoteEndPoint, accepted.LocalEndPoint, options, handler, "t1");
                await (drain is { } graceful ? session.RunAsync(graceful, shutdown) : session.RunAsync(shutdown));
            }
            finally
            {
                await transport.DisposeAsync(); // the session leaves the transport open; closing is ours
            }
        });
        return new LoopbackSession(client, run);
    }

    public async Task SendAsync(byte[] bytes)
    {
        using var cts = new CancellationTokenSource(Patience);
        await _stream.WriteAsync(bytes, cts.Token);
    }

    public Task SendAsync(string text) => SendAsync(Encoding.UTF8.GetBytes(text));

    public void ShutdownSend() => _client.Shutdown(SocketShutdown.Send);

    // One reply line without its CRLF; null once the server has closed and everything was read.
    public async Task<string?> ReadLineAsync()
    {
        while (true)
        {
            int lf = _pending.IndexOf((byte)'\n');
            if (lf >= 0)
            {
                string line = Encoding.UTF8.GetString(_pending.GetRange(0, lf).ToArray());
                _pending.RemoveRange(0, lf + 1);
                Assert.True(line.EndsWith('\r'), $"server line {line} does not end with CRLF");
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

    private async Task FillAsync()
    {
        using var cts = new CancellationTokenSource(Patience);
        int n;
        try
        {
            n = await _stream.ReadAsync(_buffer, cts.Token);
        }
        catch (OperationCanceledException)
        {
            throw new TimeoutException($"the server said nothing for {Patience.TotalSeconds} s");
        }
        catch (IOException)
        {
            n = 0; // reset by the server: as good as closed
        }
        if (n == 0) _eof = true;
        else _pending.AddRange(_buffer.AsSpan(0, n));
    }

    // Waits for the server to close; returns whatever it still sent.
    public async Task<string> ReadToEndAsync()
    {
        while (!_eof) await FillAsync();
        string rest = Encoding.UTF8.GetString(_pending.ToArray());
        _pending.Clear();
        return rest;
    }

    public async Task WaitForSessionEndAsync() => await Run.WaitAsync(Patience);

    public async ValueTask DisposeAsync()
    {
        _client.Dispose();
        try { await Run.WaitAsync(Patience); } catch { /* the test already failed */ }
    }
}
