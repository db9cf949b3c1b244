using System.Diagnostics;
using System.Text;
using Xunit.Abstractions;

namespace Portcullis.EndToEnd.Harness;

// A private Postfix instance for one test, from Debian's postfix package: its own
// config_directory, queue_directory and data_directory in a temp folder, smtpd on a free
// loopback port, everything delivered to the discard transport, its log in a file (postlogd).
// `postfix -c DIR start` needs root, as Postfix itself does. DisposeAsync stops it with
// `postfix -c DIR stop`, waits until its master process is gone and removes the folder.
public sealed class PrivatePostfix : IAsyncDisposable
{
    private const string PostfixCommand = "/usr/sbin/postfix";
    private static readonly TimeSpan Wait = TimeSpan.FromSeconds(60);   // a loaded CI machine is slow to start Postfix
    private readonly ITestOutputHelper output;

    private PrivatePostfix(string root, int port, ITestOutputHelper output)
    {
        Root = root;
        Port = port;
        this.output = output;
    }

    public string Root { get; }
    public int Port { get; }
    public string ConfigFolder => Path.Combine(Root, "etc");
    public string LogFile => Path.Combine(Root, "maillog");

    // clientAccess: texthash lines ("127.0.0.3 REJECT text") that smtpd_client_restrictions and
    // smtpd_recipient_restrictions look the client address up in. extraMainCf, extraMasterCf: more
    // lines for main.cf and master.cf; smtpdOptions: "-o name=value" lines for the listener on Port.
    public static PrivatePostfix Start(ITestOutputHelper output, string clientAccess, string extraMainCf = "",
        string extraMasterCf = "", string smtpdOptions = "")
    {
        if (!File.Exists(PostfixCommand)) throw new InvalidOperationException("postfix is not installed (build/deps.sh test)");
        if (getuid() != 0)
            throw new InvalidOperationException("a private Postfix instance needs root (`postfix start` is reserved for the superuser)");

        var root = Path.Combine(Path.GetTempPath(), "portcullis-postfix-" + Guid.NewGuid().ToString("N")[..12]);
        var postfix = new PrivatePostfix(root, GatewayIni.FreePort(), output);
        Directory.CreateDirectory(postfix.ConfigFolder);
        Directory.CreateDirectory(Path.Combine(root, "queue"));
        var data = Directory.CreateDirectory(Path.Combine(root, "data")).FullName;
        File.WriteAllText(Path.Combine(postfix.ConfigFolder, "clients"), clientAccess);
        File.WriteAllText(Path.Combine(postfix.ConfigFolder, "main.cf"), postfix.MainCf() + extraMainCf);
        var options = string.Concat(smtpdOptions.Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(o => "  " + o.Trim() + "\n"));
        File.WriteAllText(Path.Combine(postfix.ConfigFolder, "master.cf"), postfix.MasterCf().Replace(" smtpd\n", " smtpd\n" + options) + extraMasterCf);
        Run("chown", "postfix", data);   // master's lock file lives there and runs as mail_owner
        try
        {
            Run(PostfixCommand, "-c", postfix.ConfigFolder, "start");   // master -w: returns once it listens
        }
        catch (Exception e)
        {
            var log = File.Exists(postfix.LogFile) ? File.ReadAllText(postfix.LogFile) : "(no log)";
            Directory.Delete(root, recursive: true);
            throw new InvalidOperationException($"{e.Message}\n{log}", e);
        }
        return postfix;
    }

    private string MainCf() => $"""
        compatibility_level = 3.6
        queue_directory = {Root}/queue
        data_directory = {Root}/data
        mail_owner = postfix
        maillog_file = {LogFile}
        maillog_file_prefixes = {Root}
        myhostname = postfix.test
        mydomain = test
        myorigin = postfix.test
        mydestination =
        relay_domains = dest.test
        inet_interfaces = loopback-only
        inet_protocols = ipv4
        mynetworks = 127.0.0.1/32
        alias_maps =
        alias_database =
        smtpd_banner = $myhostname ESMTP
        smtpd_client_port_logging = yes
        smtpd_authorized_xclient_hosts = 127.0.0.1
        smtpd_client_restrictions = check_client_access texthash:{ConfigFolder}/clients
        smtpd_recipient_restrictions = check_client_access texthash:{ConfigFolder}/clients, reject_unauth_destination
        smtpd_relay_restrictions = reject_unauth_destination
        default_transport = discard
        relay_transport = discard
        local_transport = discard

        """;

    // Only the services a message that ends in discard needs, none chrooted.
    private string MasterCf() => $"""
        127.0.0.1:{Port} inet n - n - - smtpd
        cleanup unix n - n - 0 cleanup
        qmgr unix n - n 300 1 qmgr
        rewrite unix - - n - - trivial-rewrite
        bounce unix - - n - 0 bounce
        defer unix - - n - 0 bounce
        trace unix - - n - 0 bounce
        verify unix - - n - 1 verify
        flush unix n - n 1000? 0 flush
        proxymap unix - - n - - proxymap
        showq unix n - n - - showq
        error unix - - n - - error
        retry unix - - n - - error
        discard unix - - n - - discard
        anvil unix - - n - 1 anvil
        scache unix - - n - 1 scache
        postlog unix-dgram n - n - 1 postlogd

        """;

    public string Log() => File.Exists(LogFile) ? File.ReadAllText(LogFile) : "";

    // The first log line that matches; Postfix's daemons log through postlogd, a moment later.
    public async Task<string> WaitForLogLineAsync(Func<string, bool> match, string what) =>
        (await WaitForLogLinesAsync(match, 1, what))[0];

    // Once at least `count` log lines match: all of them.
    public async Task<IReadOnlyList<string>> WaitForLogLinesAsync(Func<string, bool> match, int count, string what)
    {
        var deadline = Stopwatch.StartNew();
        while (true)
        {
            var lines = Log().Split('\n').Where(match).ToList();
            if (lines.Count >= count) return lines;
            if (deadline.Elapsed > Wait) throw new TimeoutException($"Postfix did not log {what} within {Wait.TotalSeconds}s:\n{Log()}");
            await Task.Delay(50);
        }
    }

    public async ValueTask DisposeAsync()
    {
        var pidFile = Path.Combine(Root, "queue", "pid", "master.pid");
        int pid = 0;
        try
        {
            // Read with cat: master holds a lock on its pid file that .NET's own open would trip over.
            if (File.Exists(pidFile) && int.TryParse(Run("cat", pidFile).Trim(), out var p)) pid = p;
            Run(PostfixCommand, "-c", ConfigFolder, "stop");
        }
        catch (Exception e)
        {
            output.WriteLine($"postfix stop: {e.Message}");
        }
        // `postfix stop` returns once master has been told; its children go with it.
        var deadline = Stopwatch.StartNew();
        while (pid > 0 && Directory.Exists($"/proc/{pid}") && deadline.Elapsed < Wait) await Task.Delay(50);
        if (pid > 0 && Directory.Exists($"/proc/{pid}"))
        {
            output.WriteLine($"postfix master {pid} still running after stop: killing it");
            kill(pid, 9);
        }
        output.WriteLine("--- postfix log ---\n" + Log());
        Directory.Delete(Root, recursive: true);
    }

    private static string Run(string command, params string[] arguments)
    {
        var start = new ProcessStartInfo(command) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var argument in arguments) start.ArgumentList.Add(argument);
        using var process = Process.Start(start)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        if (!process.WaitForExit(Wait))
        {
            process.Kill(entireProcessTree: true);
            throw new TimeoutException($"{command} {string.Join(' ', arguments)} did not finish within {Wait.TotalSeconds}s");
        }
        var text = new StringBuilder().Append(stdout.Result).Append(stderr.Result).ToString();
        if (process.ExitCode != 0)
            throw new InvalidOperationException($"{command} {string.Join(' ', arguments)} exited {process.ExitCode}: {text}");
        return text;
    }

    [System.Runtime.InteropServices.DllImport("libc", SetLastError = true)]
    private static extern uint getuid();

    [System.Runtime.InteropServices.DllImport("libc", SetLastError = true)]
    private static extern int kill(int pid, int signal);
}
