using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using System.Text;
using Xunit.Abstractions;

namespace Portcullis.EndToEnd.Harness;

// A private Dovecot POP3 server for one test (Debian's dovecot-pop3d): its own base_dir,
// state_dir and log in a temp folder, one passwd-file user, a POP3 listener on a free loopback
// port, and a post-login script (script-login) run for every login as the dovecot user.
// Runs in the foreground (-F) as the test's child; DisposeAsync stops it with SIGTERM, waits
// for it to exit and removes the folder. Needs root, as Dovecot's master does.
public sealed class PrivateDovecot : IAsyncDisposable
{
    private const string DovecotCommand = "/usr/sbin/dovecot";
    private static readonly TimeSpan Wait = TimeSpan.FromSeconds(20);
    private readonly Process process;
    private readonly ITestOutputHelper output;
    private readonly StringBuilder console = new();

    private PrivateDovecot(string root, int port, Process process, ITestOutputHelper output)
    {
        Root = root;
        Port = port;
        this.process = process;
        this.output = output;
    }

    public string Root { get; }
    public int Port { get; }
    public string LogFile => Path.Combine(Root, "dovecot.log");

    public string Log() => File.Exists(LogFile) ? File.ReadAllText(LogFile) : "";

    // postLogin: the script-login command line (script and its options), run as the dovecot user.
    public static async Task<PrivateDovecot> StartAsync(ITestOutputHelper output, string user, string password, string postLogin)
    {
        if (!File.Exists(DovecotCommand)) throw new InvalidOperationException("dovecot is not installed (build/deps.sh test: dovecot-pop3d)");
        if (getuid() != 0) throw new InvalidOperationException("a private Dovecot instance needs root");

        var root = Path.Combine(Path.GetTempPath(), "portcullis-dovecot-" + Guid.NewGuid().ToString("N")[..12]);
        foreach (var folder in new[] { "run", "state", "home" }) Directory.CreateDirectory(Path.Combine(root, folder));
        Chown("nobody:nogroup", Path.Combine(root, "home"));   // the mail process runs as the userdb's uid
        await File.WriteAllTextAsync(Path.Combine(root, "users"), $"{user}:{{PLAIN}}{password}::::::\n");
        int port = GatewayIni.FreePort();
        var conf = Path.Combine(root, "dovecot.conf");
        await File.WriteAllTextAsync(conf, $$"""
            instance_name = portcullis-{{Path.GetFileName(root)}}
            base_dir = {{root}}/run
            state_dir = {{root}}/state
            log_path = {{root}}/dovecot.log
            protocols = pop3
            listen = 127.0.0.1
            ssl = no
            disable_plaintext_auth = no
            auth_mechanisms = plain
            first_valid_uid = 1
            passdb {
              driver = passwd-file
              args = scheme=PLAIN username_format=%u {{root}}/users
            }
            userdb {
              driver = static
              args = uid=nobody gid=nogroup home={{root}}/home/%u
            }
            mail_location = maildir:~/Maildir
            service pop3-login {
              chroot =
              inet_listener pop3 {
                address = 127.0.0.1
                port = {{port}}
              }
            }
            service pop3 {
              executable = pop3 pop-before-smtp
            }
            service pop-before-smtp {
              executable = script-login {{postLogin}}
              user = dovecot
              unix_listener pop-before-smtp {
              }
            }

            """);

        var start = new ProcessStartInfo(DovecotCommand) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var argument in new[] { "-F", "-c", conf }) start.ArgumentList.Add(argument);
        var process = Process.Start(start)!;
        var dovecot = new PrivateDovecot(root, port, process, output);
        process.OutputDataReceived += (_, e) => { if (e.Data is not null) lock (dovecot.console) dovecot.console.AppendLine(e.Data); };
        process.ErrorDataReceived += (_, e) => { if (e.Data is not null) lock (dovecot.console) dovecot.console.AppendLine(e.Data); };
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        try
        {
            await dovecot.WaitUntilListeningAsync();
        }
        catch
        {
            await dovecot.DisposeAsync();
            throw;
        }
        return dovecot;
    }

    private async Task WaitUntilListeningAsync()
    {
        var deadline = Stopwatch.StartNew();
        while (true)
        {
            if (process.HasExited) throw new InvalidOperationException($"dovecot exited with {process.ExitCode}: {console}\n{Log()}");
            try
            {
                using var probe = new TcpClient();
                await probe.ConnectAsync(IPAddress.Loopback, Port);
                return;
            }
            catch (SocketException) when (deadline.Elapsed < Wait)
            {
                await Task.Delay(50);
            }
        }
    }

    // USER/PASS from the given local address; returns the server's answer to PASS.
    public async Task<string> LoginAsync(IPAddress from, string user, string password)
    {
        using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        socket.Bind(new IPEndPoint(from, 0));
        await socket.ConnectAsync(IPAddress.Loopback, Port);
        await using var stream = new NetworkStream(socket, ownsSocket: false);
        using var reader = new StreamReader(stream, Encoding.ASCII);
        using var timeout = new CancellationTokenSource(Wait);

        async Task<string> ReplyAsync() => await reader.ReadLineAsync(timeout.Token) ?? "(closed)";
        async Task<string> CommandAsync(string line)
        {
            await stream.WriteAsync(Encoding.ASCII.GetBytes(line + "\r\n"), timeout.Token);
            return await ReplyAsync();
        }

        var greeting = await ReplyAsync();
        if (!greeting.StartsWith("+OK", StringComparison.Ordinal)) return greeting;
        var userReply = await CommandAsync("USER " + user);
        if (!userReply.StartsWith("+OK", StringComparison.Ordinal)) return userReply;
        // The post-login script has finished when the mail process answers PASS.
        var pass = await CommandAsync("PASS " + password);
        if (pass.StartsWith("+OK", StringComparison.Ordinal)) await CommandAsync("QUIT");
        return pass;
    }

    public async ValueTask DisposeAsync()
    {
        if (!process.HasExited)
        {
            kill(process.Id, 15);
            using var deadline = new CancellationTokenSource(Wait);
            try
            {
                await process.WaitForExitAsync(deadline.Token);
            }
            catch (OperationCanceledException)
            {
                output.WriteLine("dovecot did not stop on SIGTERM: killing it");
                process.Kill(entireProcessTree: true);
                await process.WaitForExitAsync();
            }
        }
        output.WriteLine("--- dovecot log ---\n" + Log() + console);
        process.Dispose();
        Directory.Delete(Root, recursive: true);
    }

    private static void Chown(string owner, string path)
    {
        using var chown = Process.Start("chown", [owner, path]);
        chown.WaitForExit();
        if (chown.ExitCode != 0) throw new InvalidOperationException($"chown {owner} {path} failed");
    }

    [DllImport("libc", SetLastError = true)]
    private static extern uint getuid();

    [DllImport("libc", SetLastError = true)]
    private static extern int kill(int pid, int signal);
}
