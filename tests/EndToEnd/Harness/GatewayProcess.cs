using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using Xunit;
using Xunit.Abstractions;

namespace Portcullis.EndToEnd.Harness;

// One `portcullis run` process for one test: its own temp folder (config, signatures, spool),
// its own port. Ready once the listener accepts; stopped with SIGTERM. A test ends with
// StopAsync (graceful exit, empty spool); DisposeAsync only cleans up and prints the logs.
public sealed class GatewayProcess : IAsyncDisposable
{
    private static readonly TimeSpan StartDeadline = TimeSpan.FromSeconds(30);
    private static readonly TimeSpan StopDeadline = TimeSpan.FromSeconds(15);

    private readonly Process process;
    private readonly ITestOutputHelper output;
    private readonly TestSmtpServer? downstream;
    private bool stopped;

    private GatewayProcess(Process process, GatewayIni config, ITestOutputHelper output, TestSmtpServer? downstream)
    {
        this.process = process;
        this.output = output;
        this.downstream = downstream;
        Config = config;
    }

    public GatewayIni Config { get; }
    public int Port => Config.ListenPort;
    public int ProcessId => process.Id;
    public bool HasExited => process.HasExited;
    public EventLog<string> Stdout { get; } = new();
    public EventLog<string> Stderr { get; } = new();

    // Leave the root folder in place on dispose, for a second gateway on the same root.
    public bool KeepRoot { get; set; }

    public static Task<GatewayProcess> StartAsync(ITestOutputHelper output, TestSmtpServer downstream, Action<GatewayIni>? configure = null, GatewayLaunch? launch = null) =>
        StartAsync(output, downstream.Port, configure, downstream, launch);

    public static async Task<GatewayProcess> StartAsync(ITestOutputHelper output, int downstreamPort, Action<GatewayIni>? configure = null,
        TestSmtpServer? downstream = null, GatewayLaunch? launch = null)
    {
        PortcullisBinary.Require();
        var config = new GatewayIni(GatewayIni.NewRoot(), GatewayIni.FreePort(), downstreamPort);
        configure?.Invoke(config);
        return await StartAsync(output, config, downstream, launch);
    }

    // Starts a gateway on an existing root (a restart keeps the quarantine and the outbox).
    public static async Task<GatewayProcess> StartAsync(ITestOutputHelper output, GatewayIni config, TestSmtpServer? downstream, GatewayLaunch? launch = null)
    {
        var binary = PortcullisBinary.Require();
        var configFile = await config.WriteAsync();
        launch?.BeforeStart?.Invoke(config);

        // A wrapper such as systemd-socket-activate execs the gateway in its own process.
        var wrapper = launch?.Wrapper?.Invoke(config) ?? [];
        var start = new ProcessStartInfo(wrapper.Count > 0 ? wrapper[0] : binary)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
            UseShellExecute = false,
            WorkingDirectory = config.Root,
        };
        foreach (var argument in wrapper.Skip(1))
        {
            start.ArgumentList.Add(argument);
        }

        if (wrapper.Count > 0)
        {
            start.ArgumentList.Add(binary);
        }

        foreach (var (name, value) in launch?.Environment ?? new Dictionary<string, string>())
        {
            start.Environment[name] = value;
        }

        start.ArgumentList.Add("run");
        start.ArgumentList.Add("--config");
        start.ArgumentList.Add(configFile);

        var process = new Process { StartInfo = start, EnableRaisingEvents = true };
        var gateway = new GatewayProcess(process, config, output, downstream);
        process.OutputDataReceived += (_, e) => { if (e.Data is not null) gateway.Stdout.Add(e.Data); };
        process.ErrorDataReceived += (_, e) => { if (e.Data is not null) gateway.Stderr.Add(e.Data); };
        process.Start();
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();

        try
        {
            await gateway.WaitUntilAcceptingAsync();
        }
        catch
        {
            await gateway.DisposeAsync();
            throw;
        }

        return gateway;
    }

    // The next per-message log line that matches.
    public async Task<LogRecord> WaitForLogRecordAsync(Func<LogRecord, bool>? match = null, TimeSpan? timeout = null)
    {
        var line = await Stdout.WaitForAsync(
            l => LogRecord.TryParse(l) is { } record && (match?.Invoke(record) ?? true),
            timeout ?? TimeSpan.FromSeconds(15),
            "a per-message log line on stdout");
        return LogRecord.TryParse(line)!;
    }

    // Sends a signal without waiting for anything (SIGHUP: reload, SIGTERM: graceful stop).
    public void Signal(int signal)
    {
        if (kill(process.Id, signal) != 0)
        {
            throw new InvalidOperationException($"kill({signal}) failed: errno {Marshal.GetLastPInvokeError()}");
        }
    }

    // The exit code, once the process has exited on its own (after Signal(SIGTERM), say).
    public async Task<int> WaitForExitAsync(TimeSpan timeout)
    {
        using var deadline = new CancellationTokenSource(timeout);
        try
        {
            await process.WaitForExitAsync(deadline.Token);
        }
        catch (OperationCanceledException)
        {
            throw new TimeoutException($"the gateway did not exit within {timeout.TotalSeconds}s\n{Logs()}");
        }

        stopped = true;
        return process.ExitCode;
    }

    // SIGTERM, wait for a graceful exit, then check that nothing was left in temp_folder.
    public async Task StopAsync()
    {
        Assert.False(process.HasExited, $"the gateway exited on its own before the test stopped it (exit {ExitCodeText()})\n{Logs()}");
        stopped = true;
        var exitedGracefully = await TerminateAsync();
        Assert.True(exitedGracefully, $"the gateway did not exit within {StopDeadline.TotalSeconds}s of SIGTERM and was killed\n{Logs()}");
        var leftovers = Directory.Exists(Config.SpoolFolder)
            ? Directory.EnumerateFileSystemEntries(Config.SpoolFolder, "*", SearchOption.AllDirectories).ToArray()
            : [];
        Assert.True(leftovers.Length == 0, $"temp_folder is not empty after stop: {string.Join(", ", leftovers)}\n{Logs()}");
    }

    // SIGKILL, as a crash or the OOM killer would: no chance to clean up. The folder stays for a
    // restart (StartAsync with Config); the restarted gateway's DisposeAsync removes it.
    public async Task KillAsync()
    {
        Assert.False(process.HasExited, $"the gateway exited on its own before the test killed it\n{Logs()}");
        stopped = true;
        KeepRoot = true;
        Assert.Equal(0, kill(process.Id, SIGKILL));
        using var deadline = new CancellationTokenSource(StopDeadline);
        await process.WaitForExitAsync(deadline.Token);
    }

    // The process's status line from /proc (VmRSS, VmHWM, Threads...) in kB or as written.
    public long ProcStatusKb(string field)
    {
        foreach (var line in File.ReadLines($"/proc/{process.Id}/status"))
        {
            if (line.StartsWith(field + ":", StringComparison.Ordinal))
            {
                return long.Parse(line[(field.Length + 1)..].Trim().Split(' ')[0]);
            }
        }

        throw new InvalidOperationException($"no {field} in /proc/{process.Id}/status");
    }

    public async ValueTask DisposeAsync()
    {
        if (!stopped && !process.HasExited)
        {
            await TerminateAsync();
        }

        try
        {
            output.WriteLine(Logs());
            if (downstream is not null)
            {
                output.WriteLine(downstream.ToString());
            }
        }
        catch (InvalidOperationException)
        {
            // No test is running any more to take the output.
        }

        process.Dispose();
        if (KeepRoot)
        {
            return;
        }

        try
        {
            Directory.Delete(Config.Root, recursive: true);
        }
        catch (IOException)
        {
        }
    }

    public string Logs() =>
        $"--- gateway 127.0.0.1:{Port}, config {Config.FilePath}:\n{Config.Render()}" +
        $"--- stdout:\n{string.Join("\n", Stdout.Snapshot())}\n--- stderr:\n{string.Join("\n", Stderr.Snapshot())}\n---";

    private async Task WaitUntilAcceptingAsync()
    {
        var deadline = DateTime.UtcNow + StartDeadline;
        while (true)
        {
            if (process.HasExited)
            {
                process.WaitForExit(); // let the output readers finish
                throw new InvalidOperationException($"the gateway exited during start-up (exit {process.ExitCode})\n{Logs()}");
            }

            using var probe = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
            try
            {
                using var attempt = new CancellationTokenSource(TimeSpan.FromSeconds(1));
                await probe.ConnectAsync(new IPEndPoint(IPAddress.Loopback, Port), attempt.Token);
                return;
            }
            catch (Exception e) when (e is SocketException or OperationCanceledException)
            {
                if (DateTime.UtcNow > deadline)
                {
                    throw new TimeoutException($"the gateway did not accept connections on port {Port} within {StartDeadline.TotalSeconds}s\n{Logs()}");
                }
            }

            await Task.Delay(50); // polling for process readiness, bounded by the deadline above
        }
    }

    // True if the process exited on SIGTERM within the deadline; otherwise it is killed.
    private async Task<bool> TerminateAsync()
    {
        if (kill(process.Id, SIGTERM) != 0)
        {
            output.WriteLine($"kill(SIGTERM) failed: errno {Marshal.GetLastPInvokeError()}");
        }

        using var deadline = new CancellationTokenSource(StopDeadline);
        try
        {
            await process.WaitForExitAsync(deadline.Token);
            return true;
        }
        catch (OperationCanceledException)
        {
            process.Kill(entireProcessTree: true);
            await process.WaitForExitAsync();
            return false;
        }
    }

    private string ExitCodeText() => process.HasExited ? process.ExitCode.ToString() : "running";

    public const int SIGHUP = 1;
    public const int SIGTERM = 15;
    private const int SIGKILL = 9;

    [DllImport("libc", SetLastError = true)]
    private static extern int kill(int pid, int sig);
}

// How a test starts the process beyond the INI file: extra environment variables, a wrapper
// command that execs the gateway (given the config, returns the wrapper's argv before the
// binary), and a hook that runs once the config and signature folder exist.
public sealed record GatewayLaunch
{
    public IReadOnlyDictionary<string, string> Environment { get; init; } = new Dictionary<string, string>();
    public Func<GatewayIni, IReadOnlyList<string>>? Wrapper { get; init; }
    public Action<GatewayIni>? BeforeStart { get; init; }
}
