using System.Net;
using System.Net.Sockets;
using System.Text;

namespace Portcullis.EndToEnd.Harness;

// The INI file one test's gateway runs with; starts from the values below and lets a test
// change single keys.
public sealed class GatewayIni
{
    private readonly List<(string Section, List<(string Key, string Value)> Keys)> sections = [];

    public GatewayIni(string root, int listenPort, int downstreamPort)
    {
        Root = root;
        ListenPort = listenPort;
        Set("general", "interfaces", $"127.0.0.1:{listenPort}");
        Set("general", "hostname", "gw.test");
        Set("general", "smtp_server_address", "127.0.0.1");
        Set("general", "smtp_server_port", downstreamPort.ToString());
        Set("general", "smtp_server_timeout", "5s");
        Set("general", "temp_folder", SpoolFolder);
        Set("general", "queue_folder", QueueFolder);
        Set("general", "control_socket", ControlSocket);
        Set("general", "shutdown_timeout", "10s");
        Set("scan", "database_folder", DatabaseFolder);
        Set("scan", "timeout", "30s");
        Set("scan", "on_error", "tempfail");
        Set("scan", "scanner_threads", "2");
        Set("limits", "max_message_size", "50M");
        Set("limits", "max_recipients", "100");
        Set("limits", "command_timeout", "30s");
        Set("limits", "data_timeout", "30s");
        Set("limits", "memory_threshold", "1M");
        Set("limits", "bare_newline", "normalize");
        Set("quarantine", "folder", QuarantineFolder);
        // No TLS unless a test sets it: the built-in default would use the machine's snakeoil pair.
        Set("tls", "certificate", "");
        Set("tls", "key", "");
        Set("notification", "template_folder", Path.Combine(Root, "templates"));
        StatusPort = FreePort();
        Set("status", "listen", $"127.0.0.1:{StatusPort}");
    }

    public string Root { get; }
    public int ListenPort { get; }
    public string SpoolFolder => Path.Combine(Root, "spool");
    public string DatabaseFolder => Path.Combine(Root, "db");
    public string QueueFolder => Path.Combine(Root, "queue");
    public string OutboxFolder => Path.Combine(QueueFolder, "outbox");
    public string QuarantineFolder => Path.Combine(Root, "quarantine");
    public string FilePath => Path.Combine(Root, "portcullis.ini");
    public string ControlSocket => Path.Combine(Root, "control.sock");
    public int StatusPort { get; }

    public GatewayIni Set(string section, string key, string value)
    {
        var keys = sections.FirstOrDefault(s => s.Section == section).Keys;
        if (keys is null)
        {
            keys = [];
            sections.Add((section, keys));
        }

        keys.RemoveAll(k => k.Key == key);
        keys.Add((key, value));
        return this;
    }

    public string Render()
    {
        var text = new StringBuilder();
        foreach (var (section, keys) in sections)
        {
            text.Append('[').Append(section).Append("]\n");
            foreach (var (key, value) in keys)
            {
                text.Append(key).Append(" = ").Append(value).Append('\n');
            }

            text.Append('\n');
        }

        return text.ToString();
    }

    // Writes the file and the signature folder, and creates the spool folder.
    public async Task<string> WriteAsync()
    {
        Directory.CreateDirectory(SpoolFolder);
        await TestSignatures.WriteAsync(DatabaseFolder);
        await File.WriteAllTextAsync(FilePath, Render());
        return FilePath;
    }

    public static string NewRoot()
    {
        var root = Path.Combine(Path.GetTempPath(), "portcullis-e2e-" + Guid.NewGuid().ToString("N")[..12]);
        Directory.CreateDirectory(root);
        return root;
    }

    // A loopback port nothing listens on right now (bind port 0, note it, let it go).
    public static int FreePort()
    {
        using var probe = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        probe.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        return ((IPEndPoint)probe.LocalEndPoint!).Port;
    }
}
