using System.Net.Sockets;
using System.Text;

namespace Portcullis.EndToEnd.Harness;

// Plays systemd's side of sd_notify(3): a Unix datagram socket the gateway finds in
// $NOTIFY_SOCKET. Each datagram is recorded as one message (its KEY=VALUE lines), in order.
// Abstract: the socket has an abstract name, passed as "@name" the way systemd writes it.
public sealed class NotifyReceiver : IAsyncDisposable
{
    private readonly Socket socket = new(AddressFamily.Unix, SocketType.Dgram, ProtocolType.Unspecified);
    private readonly CancellationTokenSource stopping = new();
    private readonly Task loop;
    private readonly string? path;

    public NotifyReceiver(bool abstractName = false)
    {
        var name = "portcullis-notify-" + Guid.NewGuid().ToString("N")[..12];
        if (abstractName)
        {
            socket.Bind(new UnixDomainSocketEndPoint("\0" + name));
            SocketVariable = "@" + name;
        }
        else
        {
            path = Path.Combine(Path.GetTempPath(), name + ".sock");
            socket.Bind(new UnixDomainSocketEndPoint(path));
            SocketVariable = path;
        }

        loop = ReceiveAsync();
    }

    // The value for NOTIFY_SOCKET.
    public string SocketVariable { get; }

    public EventLog<NotifyMessage> Messages { get; } = new();

    public Task<NotifyMessage> WaitForAsync(Func<NotifyMessage, bool> match, string what, int after = 0, TimeSpan? timeout = null) =>
        Messages.WaitUntilAsync(all => all.Skip(after).Any(match), timeout ?? TimeSpan.FromSeconds(30), what)
            .ContinueWith(t => t.Result.Skip(after).First(match), TaskContinuationOptions.ExecuteSynchronously);

    public async ValueTask DisposeAsync()
    {
        stopping.Cancel();
        socket.Dispose();
        try
        {
            await loop;
        }
        catch (Exception e) when (e is OperationCanceledException or ObjectDisposedException or SocketException)
        {
        }

        if (path is not null)
        {
            File.Delete(path);
        }
    }

    private async Task ReceiveAsync()
    {
        var buffer = new byte[64 * 1024];
        while (!stopping.IsCancellationRequested)
        {
            var n = await socket.ReceiveAsync(buffer, SocketFlags.None, stopping.Token);
            Messages.Add(NotifyMessage.Parse(Encoding.UTF8.GetString(buffer, 0, n)));
        }
    }
}

public sealed record NotifyMessage(IReadOnlyDictionary<string, string> Fields, string Text)
{
    public static NotifyMessage Parse(string text)
    {
        var fields = new Dictionary<string, string>();
        foreach (var line in text.Split('\n', StringSplitOptions.RemoveEmptyEntries))
        {
            var eq = line.IndexOf('=');
            if (eq > 0)
            {
                fields[line[..eq]] = line[(eq + 1)..];
            }
        }

        return new NotifyMessage(fields, text);
    }

    public bool Has(string key, string value = "1") => Fields.TryGetValue(key, out var v) && v == value;

    public bool Ready => Has("READY");
    public bool Reloading => Has("RELOADING");
    public bool Stopping => Has("STOPPING");
    public bool Watchdog => Has("WATCHDOG");
    public string? Status => Fields.GetValueOrDefault("STATUS");

    // The READY/RELOADING/STOPPING/WATCHDOG word of this message, for sequence checks.
    public string Kind => Ready ? "READY" : Reloading ? "RELOADING" : Stopping ? "STOPPING" : Watchdog ? "WATCHDOG" : "STATUS";

    public override string ToString() => Text.Replace('\n', ' ');
}
