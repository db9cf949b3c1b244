using System.Net;
using System.Net.Sockets;
using System.Text;

namespace Portcullis.Appliance.Tests.Gateway;

// A mail server for downstream pool and failover tests (extensions: the EHLO lines after the
// first, the last one as "250 X"): accepts any number of connections on
// 127.0.0.1 and answers every command of each (220 banner, EHLO with the given extensions, 250 to
// MAIL/RCPT/RSET/NOOP/AUTH, 220 to XCLIENT, 354 and 250 around DATA, 221 to QUIT), recording what each
// connection received. Greeting replaces the banner (a 4xx banner is followed by a close);
// CloseAfterMessage drops the connection after a message's 250; NoopReply answers NOOP;
// XClientOnce leaves XCLIENT out of the EHLO reply after an XCLIENT, as Postfix does when the
// client it was told about is not in smtpd_authorized_xclient_hosts.
internal sealed class DownstreamSink : IAsyncDisposable
{
    private readonly Socket _listener;
    private readonly CancellationTokenSource _stop = new();
    private readonly Task _accepting;
    private readonly List<Task> _connections = [];
    private readonly List<Connection> _seen = [];
    private int _messages;

    public DownstreamSink(string extensions = "PIPELINING\r\n250 8BITMIME", string greeting = "220 sink.test ESMTP")
    {
        Extensions = extensions;
        Greeting = greeting;
        _listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        _listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        _listener.Listen(64);
        Port = ((IPEndPoint)_listener.LocalEndPoint!).Port;
        _accepting = AcceptAsync();
    }

    public int Port { get; }
    public string Extensions { get; }
    public string Greeting { get; }
    public bool CloseAfterMessage { get; init; }
    public string NoopReply { get; init; } = "250 2.0.0 Ok";
    public bool XClientOnce { get; init; }

    public int Messages => Volatile.Read(ref _messages);

    public IReadOnlyList<Connection> Seen
    {
        get { lock (_seen) return [.. _seen]; }
    }

    // A port on 127.0.0.1 where nothing listens: connecting is refused.
    public static int RefusingPort()
    {
        using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        socket.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        return ((IPEndPoint)socket.LocalEndPoint!).Port;
    }

    private async Task AcceptAsync()
    {
        try
        {
            while (true)
            {
                var socket = await _listener.AcceptAsync(_stop.Token);
                var connection = new Connection();
                lock (_seen)
                {
                    _seen.Add(connection);
                    _connections.Add(ServeAsync(socket, connection));
                }
            }
        }
        catch (Exception e) when (e is OperationCanceledException or SocketException or ObjectDisposedException)
        {
        }
    }

    private async Task ServeAsync(Socket socket, Connection connection)
    {
        using var _ = socket;
        await using var stream = new NetworkStream(socket, ownsSocket: false);
        using var reader = new StreamReader(stream, Encoding.ASCII);
        async Task Say(string text) => await stream.WriteAsync(Encoding.ASCII.GetBytes(text + "\r\n"), _stop.Token);
        bool told = false;
        try
        {
            await Say(Greeting);
            if (!Greeting.StartsWith("220", StringComparison.Ordinal)) return;
            while (await reader.ReadLineAsync(_stop.Token) is { } line)
            {
                connection.Add(line);
                string verb = line.Split(' ', ':')[0].ToUpperInvariant();
                switch (verb)
                {
                    case "EHLO":
                        var lines = ("250-" + Extensions).Split("\r\n")
                            .Where(l => !(told && XClientOnce && l.Contains("XCLIENT", StringComparison.Ordinal))).ToList();
                        lines[^1] = "250 " + lines[^1][4..];
                        await Say("250-sink.test\r\n" + string.Join("\r\n", lines));
                        break;
                    case "NOOP": await Say(NoopReply); if (NoopReply.StartsWith("421", StringComparison.Ordinal)) return; break;
                    case "QUIT": await Say("221 2.0.0 Bye"); return;
                    case "AUTH": await Say("235 2.7.0 Authentication successful"); break;
                    case "XCLIENT": told = true; await Say("220 sink.test ESMTP"); break;
                    case "DATA":
                        await Say("354 End data with <CR><LF>.<CR><LF>");
                        while (await reader.ReadLineAsync(_stop.Token) is { } data && data != ".") { }
                        Interlocked.Increment(ref _messages);
                        await Say("250 2.0.0 Ok: queued");
                        if (CloseAfterMessage) return;
                        break;
                    default: await Say("250 2.0.0 Ok"); break;
                }
            }
        }
        catch (Exception e) when (e is IOException or OperationCanceledException or SocketException)
        {
        }
        finally
        {
            connection.Close();
        }
    }

    public async ValueTask DisposeAsync()
    {
        _stop.Cancel();
        _listener.Dispose();
        await _accepting;
        Task[] running;
        lock (_seen) running = [.. _connections];
        await Task.WhenAll(running);
        _stop.Dispose();
    }

    // What one connection received, and when it ended.
    internal sealed class Connection
    {
        private readonly List<string> _lines = [];
        private readonly TaskCompletionSource _closed = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public IReadOnlyList<string> Lines
        {
            get { lock (_lines) return [.. _lines]; }
        }

        // Completes when the connection has ended (QUIT, a close by either side).
        public Task Closed => _closed.Task;

        public void Add(string line)
        {
            lock (_lines) _lines.Add(line);
        }

        public void Close() => _closed.TrySetResult();
    }
}
