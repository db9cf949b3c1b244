// The [status] listen endpoint: a deliberately small HTTP/1.1 server (RFC 9112) for /metrics
// and the status page. GET and HEAD (RFC 9110 §9.3.2: GET's headers, no body), one request per
// connection (answered with Connection: close), the request head capped at 8 KB and 2 s, the
// whole exchange at 5 s, at most 16 connections at a time. When all 16 are taken, a new
// connection pushes out the oldest one still waiting for its request head, so idle connections
// cannot starve the page. Loopback by default: the page names senders and viruses.
using System.Net;
using System.Net.Sockets;
using System.Text;
using Portcullis.Appliance.Gateway;
using Portcullis.Appliance.Logging;

namespace Portcullis.Appliance.Status;

internal sealed class StatusServer : IDisposable
{
    private const int MaxHead = 8 * 1024;
    private const int MaxConnections = 16;
    private static readonly TimeSpan HeadTimeout = TimeSpan.FromSeconds(2);
    private static readonly TimeSpan RequestTimeout = TimeSpan.FromSeconds(5);

    private readonly Socket listener;
    private readonly GatewayRuntime runtime;
    private readonly LinkedList<Connection> connections = new();   // oldest first; guarded by itself

    private StatusServer(Socket listener, GatewayRuntime runtime)
    {
        this.listener = listener;
        this.runtime = runtime;
    }

    public EndPoint? LocalEndPoint => listener.LocalEndPoint;

    public static StatusServer Start(IPEndPoint endpoint, GatewayRuntime runtime)
    {
        var socket = new Socket(endpoint.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
        try
        {
            socket.SetSocketOption(SocketOptionLevel.Socket, SocketOptionName.ReuseAddress, true);
            socket.Bind(endpoint);
            socket.Listen(64);
        }
        catch (SocketException e)
        {
            socket.Dispose();
            throw new SocketException((int)e.SocketErrorCode, $"[status] listen {endpoint}: {e.Message}");
        }

        return new StatusServer(socket, runtime);
    }

    public async Task RunAsync(CancellationToken stop)
    {
        await Acceptor.RunAsync(listener, "status", client =>
        {
            var connection = new Connection(client, CancellationTokenSource.CreateLinkedTokenSource(stop));
            lock (connections)
            {
                if (connections.Count >= MaxConnections && !EvictIdle())
                {
                    connection.Timeout.Dispose();
                    client.Dispose(); // every slot is busy answering: this is a status page, not a service
                    return;
                }

                connection.Node = connections.AddLast(connection);
            }

            _ = ServeAsync(connection);
        }, stop).ConfigureAwait(false);
    }

    // Cancels the oldest connection that has not sent its request head yet; false when none.
    private bool EvictIdle()
    {
        for (var node = connections.First; node is not null; node = node.Next)
        {
            if (!node.Value.HeadRead)
            {
                node.Value.Timeout.Cancel();
                connections.Remove(node);
                node.Value.Node = null;
                return true;
            }
        }

        return false;
    }

    public void Dispose() => listener.Dispose();

    private async Task ServeAsync(Connection connection)
    {
        var client = connection.Socket;
        var timeout = connection.Timeout;
        try
        {
            timeout.CancelAfter(HeadTimeout);
            var head = await ReadHeadAsync(client, timeout.Token).ConfigureAwait(false);
            lock (connections)
            {
                if (connection.Node is null) return;   // pushed out just now
                connection.HeadRead = true;
            }

            timeout.CancelAfter(RequestTimeout);
            var (status, type, body) = head is null
                ? (431, "text/plain", "request head too large or incomplete\n")
                : Respond(head);
            var headOnly = head is not null && head.StartsWith("HEAD ", StringComparison.Ordinal);
            await WriteAsync(client, status, type, body, headOnly, timeout.Token).ConfigureAwait(false);
            client.Shutdown(SocketShutdown.Both);
        }
        catch (Exception e) when (e is SocketException or OperationCanceledException or ObjectDisposedException or IOException)
        {
        }
        finally
        {
            lock (connections)
            {
                if (connection.Node is not null)
                {
                    connections.Remove(connection.Node);
                    connection.Node = null;
                }
            }

            // Disposed only once out of the list: an eviction cancels under the same lock.
            timeout.Dispose();
            client.Dispose();
        }
    }

    private sealed class Connection(Socket socket, CancellationTokenSource timeout)
    {
        public Socket Socket { get; } = socket;
        public CancellationTokenSource Timeout { get; } = timeout;
        public LinkedListNode<Connection>? Node { get; set; }
        public bool HeadRead { get; set; }
    }

    // The request line and headers, or null when they do not end within MaxHead bytes.
    private static async Task<string?> ReadHeadAsync(Socket client, CancellationToken ct)
    {
        var buffer = new byte[MaxHead];
        var filled = 0;
        while (filled < buffer.Length)
        {
            var n = await client.ReceiveAsync(buffer.AsMemory(filled), SocketFlags.None, ct).ConfigureAwait(false);
            if (n == 0)
            {
                return null;
            }

            var start = Math.Max(0, filled - 3);
            filled += n;
            if (buffer.AsSpan(start, filled - start).IndexOf("\r\n\r\n"u8) >= 0 || buffer.AsSpan(start, filled - start).IndexOf("\n\n"u8) >= 0)
            {
                return Encoding.Latin1.GetString(buffer, 0, filled);
            }
        }

        return null;
    }

    internal (int Status, string Type, string Body) Respond(string head)
    {
        var line = head.AsSpan(0, Math.Max(0, head.IndexOf('\n'))).TrimEnd('\r').ToString();
        var parts = line.Split(' ');
        if (parts.Length != 3 || !parts[2].StartsWith("HTTP/1.", StringComparison.Ordinal))
        {
            return (400, "text/plain", "bad request\n");
        }

        if (parts[0] is not ("GET" or "HEAD"))
        {
            return (405, "text/plain", "only GET and HEAD\n");
        }

        var path = parts[1].Split('?', 2)[0];
        return path switch
        {
            "/metrics" => (200, "text/plain; version=0.0.4; charset=utf-8", StatusReport.Metrics(runtime)),
            "/" => (200, "text/html; charset=utf-8", StatusReport.Html(runtime)),
            _ => (404, "text/plain", "not found; try / or /metrics\n"),
        };
    }

    private static async Task WriteAsync(Socket client, int status, string type, string body, bool headOnly, CancellationToken ct)
    {
        var reason = status switch
        {
            200 => "OK",
            400 => "Bad Request",
            404 => "Not Found",
            405 => "Method Not Allowed",
            _ => "Request Header Fields Too Large",
        };
        var content = Encoding.UTF8.GetBytes(body);
        var head = $"HTTP/1.1 {status} {reason}\r\nContent-Type: {type}\r\nContent-Length: {content.Length}\r\n" +
                   $"Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n{(status == 405 ? "Allow: GET, HEAD\r\n" : "")}Connection: close\r\n\r\n";
        await client.SendAsync(Encoding.ASCII.GetBytes(head), SocketFlags.None, ct).ConfigureAwait(false);
        var sent = headOnly ? content.Length : 0;
        while (sent < content.Length)
        {
            sent += await client.SendAsync(content.AsMemory(sent), SocketFlags.None, ct).ConfigureAwait(false);
        }
    }
}
