// `portcullis reload` and `portcullis status`: one command over the running gateway's control
// socket ([general] control_socket of the configuration file), its answer printed as it comes.
// Exit 0 when the gateway answered OK, 1 when it answered ERR, 69 when no gateway answered.
using System.Net.Sockets;
using System.Text;
using Portcullis.Appliance.Configuration;

namespace Portcullis.Appliance.Cli;

internal static class ControlClient
{
    public const int ExitFailed = 1;
    public const int ExitUnavailable = 69;

    public static async Task<int> RunAsync(string configPath, string command)
    {
        // Only control_socket is read: the rest of the file may have errors the running gateway
        // will report (and keep its configuration) when it reloads.
        string socketPath;
        try
        {
            socketPath = ConfigLoader.ReadControlSocket(configPath);
        }
        catch (ConfigException e)
        {
            foreach (var error in e.Errors)
            {
                Console.Error.WriteLine(error);
            }

            return CommandLine.ExitConfig;
        }

        if (socketPath.Length == 0)
        {
            Console.Error.WriteLine($"portcullis: [general] control_socket is empty in {configPath}: the gateway has no control socket (send it SIGHUP instead)");
            return ExitUnavailable;
        }

        using var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        try
        {
            await socket.ConnectAsync(new UnixDomainSocketEndPoint(socketPath));
        }
        catch (SocketException e)
        {
            Console.Error.WriteLine($"portcullis: cannot reach the gateway at {socketPath}: {e.Message} (is it running?)");
            return ExitUnavailable;
        }

        // A reload of a large database can take minutes on a small machine.
        using var timeout = new CancellationTokenSource(TimeSpan.FromMinutes(15));
        await socket.SendAsync(Encoding.ASCII.GetBytes(command + "\n"), SocketFlags.None, timeout.Token);
        var answer = new MemoryStream();
        var buffer = new byte[4096];
        try
        {
            int n;
            while ((n = await socket.ReceiveAsync(buffer, SocketFlags.None, timeout.Token)) > 0)
            {
                answer.Write(buffer, 0, n);
            }
        }
        catch (OperationCanceledException)
        {
            Console.Error.WriteLine("portcullis: the gateway did not answer within 15 minutes");
            return ExitFailed;
        }

        var lines = Encoding.UTF8.GetString(answer.ToArray()).TrimEnd('\n').Split('\n');
        var last = lines[^1];
        foreach (var line in lines[..^1])
        {
            Console.Out.WriteLine(line);
        }

        if (last == "OK")
        {
            return CommandLine.ExitOk;
        }

        Console.Error.WriteLine("portcullis: " + (last.StartsWith("ERR ", StringComparison.Ordinal) ? last[4..] : "unexpected answer: " + last));
        return ExitFailed;
    }
}
