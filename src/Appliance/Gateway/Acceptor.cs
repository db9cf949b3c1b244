// One accept loop for every listening socket: the SMTP listeners, the control socket and the
// status page. It returns when stopped or when the socket is closed; an accept error such as
// EMFILE is logged and retried after a short pause rather than spinning.
using System.Net.Sockets;
using Portcullis.Appliance.Logging;

namespace Portcullis.Appliance.Gateway;

internal static class Acceptor
{
    private static readonly TimeSpan ErrorPause = TimeSpan.FromMilliseconds(100);

    public static async Task RunAsync(Socket listener, string what, Action<Socket> serve, CancellationToken stop)
    {
        while (!stop.IsCancellationRequested)
        {
            Socket client;
            try
            {
                client = await listener.AcceptAsync(stop).ConfigureAwait(false);
            }
            catch (Exception e) when (e is OperationCanceledException or ObjectDisposedException)
            {
                return;
            }
            catch (SocketException) when (stop.IsCancellationRequested)
            {
                return;
            }
            catch (SocketException e)
            {
                Log.Warn($"{what}: accept failed: {e.Message}");
                try { await Task.Delay(ErrorPause, stop).ConfigureAwait(false); }
                catch (OperationCanceledException) { return; }
                continue;
            }
            serve(client);
        }
    }
}
