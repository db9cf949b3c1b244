// The control socket `portcullis reload` and `portcullis status` talk to: a Unix stream socket
// at [general] control_socket, mode 0660 (owner and group: the portcullis user and group).
// Line protocol, one command per connection:
//   client: RELOAD\n   server: the outcome, one or more lines, then "OK\n" or "ERR <why>\n"
//   client: STATUS\n   server: the summary lines, then "OK\n"
//   client: QUEUE FLUSH\n   server: one line, then "OK\n": every queued entry not held is due now
// A reload answers when the reload that covers the request has ended.
using System.Net.Sockets;
using System.Text;
using Portcullis.Appliance.Logging;
using Portcullis.Appliance.Systemd;

namespace Portcullis.Appliance.Gateway;

internal sealed class ControlServer : IDisposable
{
    private const int MaxLine = 256;
    private readonly Socket listener;
    private readonly GatewayRuntime runtime;
    private readonly string path;

    private ControlServer(Socket listener, string path, GatewayRuntime runtime)
    {
        this.listener = listener;
        this.path = path;
        this.runtime = runtime;
    }

    public static ControlServer Start(string path, GatewayRuntime runtime)
    {
        var folder = Path.GetDirectoryName(path);
        if (!string.IsNullOrEmpty(folder))
        {
            Directory.CreateDirectory(folder);
        }

        // A socket file left by a process that is gone refuses connections; a live one answers.
        if (File.Exists(path))
        {
            if (Answers(path))
            {
                throw new IOException($"control socket {path} is in use by another running portcullis");
            }

            File.Delete(path);
        }

        var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        try
        {
            socket.Bind(new UnixDomainSocketEndPoint(path));
            Libc.ChangeMode(path, Convert.ToUInt32("660", 8));
            socket.Listen(16);
        }
        catch
        {
            socket.Dispose();
            throw;
        }

        return new ControlServer(socket, path, runtime);
    }

    public async Task RunAsync(CancellationToken stop)
    {
        await Acceptor.RunAsync(listener, "control socket", client => _ = ServeAsync(client, stop), stop).ConfigureAwait(false);
    }

    public void Dispose()
    {
        listener.Dispose();
        try
        {
            File.Delete(path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
        }
    }

    private async Task ServeAsync(Socket client, CancellationToken stop)
    {
        using var _ = client;
        try
        {
            string? command;
            using (var timeout = CancellationTokenSource.CreateLinkedTokenSource(stop))
            {
                timeout.CancelAfter(TimeSpan.FromSeconds(5));
                command = await ReadLineAsync(client, timeout.Token).ConfigureAwait(false);
            }

            string reply;
            switch (command?.Trim().ToUpperInvariant())
            {
                case "RELOAD":
                    var outcome = await runtime.Reloader.RequestAsync("portcullis reload", withConfig: true).WaitAsync(stop).ConfigureAwait(false);
                    reply = outcome.Text + "\n" + (outcome.Ok ? "OK\n" : "ERR reload failed (see above and the log)\n");
                    break;
                case "STATUS":
                    reply = runtime.Summary() + "queue: " + Status.StatusReport.QueueSummary(runtime.Metrics) + "\nOK\n";
                    break;
                case "QUEUE FLUSH":
                    if (runtime.Context.Queue is { } queue)
                    {
                        queue.FlushNow();
                        reply = $"flush: every queued message not held is due now ({runtime.Metrics.Queue.Messages} queued)\nOK\n";
                    }
                    else
                    {
                        reply = "ERR this gateway has no queue\n";
                    }
                    break;
                case null:
                    reply = "ERR no command\n";
                    break;
                default:
                    reply = "ERR unknown command; expected RELOAD, STATUS or QUEUE FLUSH\n";
                    break;
            }

            await client.SendAsync(Encoding.UTF8.GetBytes(reply), SocketFlags.None, stop).ConfigureAwait(false);
            client.Shutdown(SocketShutdown.Both);
        }
        catch (Exception e) when (e is SocketException or OperationCanceledException or ObjectDisposedException)
        {
        }
    }

    private static async Task<string?> ReadLineAsync(Socket client, CancellationToken ct)
    {
        var buffer = new byte[MaxLine];
        var filled = 0;
        while (filled < buffer.Length)
        {
            var n = await client.ReceiveAsync(buffer.AsMemory(filled), SocketFlags.None, ct).ConfigureAwait(false);
            if (n == 0)
            {
                break;
            }

            filled += n;
            var end = buffer.AsSpan(0, filled).IndexOf((byte)'\n');
            if (end >= 0)
            {
                return Encoding.ASCII.GetString(buffer, 0, end);
            }
        }

        return filled > 0 ? Encoding.ASCII.GetString(buffer, 0, filled) : null;
    }

    private static bool Answers(string path)
    {
        using var probe = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        try
        {
            probe.Connect(new UnixDomainSocketEndPoint(path));
            return true;
        }
        catch (SocketException)
        {
            return false;
        }
    }
}
