// The daemon: load the engine, start the scanner pool, open the listeners (or take the ones
// systemd passed), and run one SmtpSession per accepted connection until asked to stop.
// Start-up problems (no signatures, a port in use, an unusable temp_folder) end the process
// with a clear message and a non-zero exit code before any mail is accepted.
//
// Around the sessions: sd_notify (READY/RELOADING/STOPPING/STATUS/WATCHDOG), SIGHUP and the
// control socket for reloads, the database folder poll, the status/metrics server. SIGTERM
// stops accepting, lets open transactions finish within [general] shutdown_timeout, answers
// idle sessions 421, and exits 0.
using System.Net;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using Portcullis.Appliance.Configuration;
using Portcullis.Appliance.Logging;
using Portcullis.Appliance.Notifications;
using Portcullis.Appliance.Quarantine;
using Portcullis.Appliance.Status;
using Portcullis.Appliance.Systemd;
using Portcullis.NativeScan;
using Portcullis.SmtpCore.Downstream;
using Portcullis.SmtpCore.Server;

namespace Portcullis.Appliance.Gateway;

internal static class GatewayHost
{
    private static readonly TimeSpan HousekeepingInterval = TimeSpan.FromSeconds(5);

    public static async Task<int> RunAsync(GatewayConfig config, string configPath, CancellationToken stop)
    {
        try
        {
            Directory.CreateDirectory(config.General.TempFolder);
            Directory.CreateDirectory(Cli.ScanCommands.ScratchFolder(config));
            RemoveStaleScratch(Cli.ScanCommands.ScratchFolder(config));
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            Log.Error($"temp_folder {config.General.TempFolder} or scratch_folder is not usable: {e.Message}");
            return 73; // EX_CANTCREAT
        }

        TemplateSet templates;
        try
        {
            templates = TemplateSet.Load(config.Notification.TemplateFolder);
        }
        catch (ConfigException e)
        {
            foreach (var error in e.Errors) Log.Error(error);
            return 78; // EX_CONFIG
        }
        if (templates.BuiltIn.Count > 0)
            Log.Info($"templates {string.Join(", ", templates.BuiltIn)} not in {config.Notification.TemplateFolder}: using the built-in ones");

        var quarantine = new QuarantineStore(config.Quarantine.Folder);
        var outbox = new Outbox(config.General.OutboxFolder);
        foreach (var (key, create) in new (string, Action)[] { ("[quarantine] folder", quarantine.EnsureFolder), ("[general] queue_folder", outbox.EnsureFolder) })
        {
            try
            {
                create();
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                Log.Error($"{key} is not usable: {e.Message}");
                return 73; // EX_CANTCREAT
            }
        }

        // Read (and removed from the environment) before anything else could start a child.
        var passed = SocketActivation.TakeFromEnvironment(out var passProblem);
        if (passProblem is not null)
        {
            Log.Warn($"socket activation: {passProblem}");
        }

        using var systemd = SystemdNotifier.FromEnvironment();
        ScanEngine engine;
        try
        {
            ClamAV.Initialize();
            engine = ScanEngine.Load(Cli.ScanCommands.EngineOptionsFor(config));
        }
        catch (Exception e) when (e is ClamAVException or IOException or DirectoryNotFoundException or InvalidOperationException or DllNotFoundException)
        {
            Log.Error($"cannot load signatures from {config.Scan.DatabaseFolder}: {e.Message}");
            foreach (var p in passed) p.Socket.Dispose();
            return 69; // EX_UNAVAILABLE
        }
        Log.Info($"libclamav {ClamAV.Version}, {engine.SignatureCount} signatures (database {engine.DatabaseVersion}) from {config.Scan.DatabaseFolder}");

        var engines = new EngineHolder(engine);
        var scanners = new ScannerPool(engines, config.Scan.ScannerThreads, config.Scan.QueueLength);
        using var messageLog = new MessageLog(Console.OpenStandardOutput(), config.Log.Folder);
        var notifier = new Notifier(outbox, NotificationServer(config));
        var ctx = new GatewayContext(config, engines, scanners, messageLog, new DownstreamDecidesPolicy())
        {
            Templates = templates,
            Notifier = notifier,
        };
        var runtime = new GatewayRuntime(configPath, ctx, systemd);
        runtime.Reloader.WarnIfOld(force: true);

        await ProbeDownstreamAsync(runtime.Context, stop).ConfigureAwait(false);

        var listeners = new List<Socket>();
        StatusServer? status = null;
        ControlServer? control = null;
        try
        {
            listeners.AddRange(OpenListeners(config, passed));
            if (config.Status.Listen is { } statusEndpoint)
            {
                status = StatusServer.Start(statusEndpoint, runtime);
                Log.Info($"status page and /metrics on http://{statusEndpoint}/");
            }
        }
        catch (SocketException e)
        {
            Log.Error($"cannot listen: {e.Message}");
            foreach (var l in listeners) l.Dispose();
            status?.Dispose();
            Shutdown(scanners, engines, runtime);
            return 71; // EX_OSERR
        }

        if (config.General.ControlSocket.Length > 0)
        {
            try
            {
                control = ControlServer.Start(config.General.ControlSocket, runtime);
            }
            catch (Exception e) when (e is IOException or SocketException or UnauthorizedAccessException)
            {
                Log.Warn($"control socket {config.General.ControlSocket} unavailable ({e.Message}): `portcullis reload` and `portcullis status` will not reach this process; SIGHUP still reloads");
            }
        }

        using var drain = new CancellationTokenSource();
        using var abort = new CancellationTokenSource();
        using var background = new CancellationTokenSource();
        using var hangup = PosixSignalRegistration.Create(PosixSignal.SIGHUP, context =>
        {
            context.Cancel = true;
            _ = runtime.Reloader.RequestAsync("SIGHUP", withConfig: true);
        });

        var sessions = new SessionTracker();
        var accepts = listeners.Select(l => AcceptLoopAsync(l, runtime, sessions, drain.Token, abort.Token)).ToArray();
        runtime.AcceptLoopsAlive = () => drain.IsCancellationRequested || accepts.All(a => !a.IsCompleted);

        // Notifications keep going out while sessions drain; what is left stays in the outbox.
        var services = new List<Task>
        {
            HousekeepingAsync(runtime, background.Token),
            notifier.RunAsync(background.Token),
            PurgeDailyAsync(quarantine, config.Quarantine.RetentionDays, background.Token),
        };
        if (status is not null) services.Add(status.RunAsync(background.Token));
        if (control is not null) services.Add(control.RunAsync(background.Token));
        if (systemd.WatchdogInterval is { } watchdog)
        {
            services.Add(new ServiceWatchdog(runtime, watchdog).RunAsync(background.Token));
            Log.Info($"systemd watchdog: WATCHDOG=1 every {(watchdog / 2).TotalSeconds:0.###}s while the scanner pool answers canary scans");
        }

        Log.Info($"portcullis {GatewayContext.ProductVersion} listening on {string.Join(", ", listeners.Select(l => l.LocalEndPoint))}, " +
                 $"forwarding to {config.General.SmtpServerAddress}:{config.General.SmtpServerPort}");
        systemd.Ready(runtime.StatusLine());

        try
        {
            await Task.Delay(Timeout.Infinite, stop).ConfigureAwait(false);
        }
        catch (OperationCanceledException) { }

        var timeout = runtime.Context.Config.General.ShutdownTimeout;
        systemd.Stopping($"stopping: {sessions.Count} sessions finishing (up to {timeout.TotalSeconds:0}s)");
        Log.Info($"stopping: closing listeners; {sessions.Count} open sessions get up to {timeout.TotalSeconds:0}s to finish their transactions");
        foreach (var l in listeners) l.Dispose();
        drain.Cancel();
        await Task.WhenAll(accepts).ConfigureAwait(false);
        if (!await sessions.WaitAllAsync(timeout).ConfigureAwait(false))
        {
            Log.Warn($"stopping: {sessions.Count} sessions still open after shutdown_timeout; closing them");
            abort.Cancel();
            await sessions.WaitAllAsync(TimeSpan.FromSeconds(5)).ConfigureAwait(false);
        }

        // Notifications the last sessions queued go to the outbox; the next start sends them.
        notifier.Complete();
        background.Cancel();
        await Task.WhenAll(services).ConfigureAwait(false);
        status?.Dispose();
        control?.Dispose();
        Shutdown(scanners, engines, runtime);
        Log.Info("stopped");
        return 0;
    }

    internal static DownstreamOptions NotificationServer(GatewayConfig config) => new()
    {
        Host = config.Notification.SmtpServerAddress.Length > 0 ? config.Notification.SmtpServerAddress : config.General.SmtpServerAddress,
        Port = config.Notification.SmtpServerPort ?? config.General.SmtpServerPort,
        HeloName = config.General.Hostname,
        ConnectTimeout = TimeSpan.FromSeconds(Math.Min(30, config.General.SmtpServerTimeout.TotalSeconds)),
        ReplyTimeout = config.General.SmtpServerTimeout,
        DataReplyTimeout = config.General.SmtpServerTimeout,
    };

    // Removes quarantine entries older than retention_days at start-up and then once a day.
    private static async Task PurgeDailyAsync(QuarantineStore quarantine, int retentionDays, CancellationToken stop)
    {
        if (retentionDays <= 0) return;
        while (!stop.IsCancellationRequested)
        {
            try
            {
                var removed = quarantine.Purge(DateTimeOffset.UtcNow.AddDays(-retentionDays));
                if (removed > 0) Log.Info($"quarantine: purged {removed} entr{(removed == 1 ? "y" : "ies")} older than {retentionDays} days");
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException or QuarantineException)
            {
                Log.Warn($"quarantine purge failed: {e.Message}");
            }

            try
            {
                await Task.Delay(TimeSpan.FromDays(1), stop).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                return;
            }
        }
    }

    // Learn what the downstream offers (DSN is advertised only when it has it) before the
    // first client arrives; sessions refresh this on every downstream connection.
    private static async Task ProbeDownstreamAsync(GatewayContext ctx, CancellationToken stop)
    {
        var options = ctx.DownstreamOptions;
        var probe = new SmtpCore.Downstream.DownstreamOptions
        {
            Host = options.Host,
            Port = options.Port,
            HeloName = options.HeloName,
            ConnectTimeout = TimeSpan.FromSeconds(Math.Min(5, options.ConnectTimeout.TotalSeconds)),
            ReplyTimeout = TimeSpan.FromSeconds(Math.Min(5, options.ReplyTimeout.TotalSeconds)),
        };
        try
        {
            await using var client = await SmtpCore.Downstream.DownstreamClient.ConnectAsync(probe, stop).ConfigureAwait(false);
            ctx.DownstreamCapabilities = client.Capabilities;
            Log.Info($"downstream {client.RemoteDescription}: {string.Join(' ', client.Capabilities.Raw.Keys)}");
        }
        catch (Exception e) when (e is SmtpCore.Downstream.DownstreamException or OperationCanceledException)
        {
            Log.Warn($"downstream {options.Host}:{options.Port} not reachable at start-up ({e.Message}); mail will get 451 until it is");
        }
    }

    // Spill files are unlinked when opened, but libclamav's own unpack folders survive a kill -9
    // of a scan in progress: remove them before the first scan of this process.
    private static void RemoveStaleScratch(string folder)
    {
        foreach (var entry in new DirectoryInfo(folder).EnumerateFileSystemInfos())
        {
            if (!entry.Name.Contains("-scantemp.", StringComparison.Ordinal) && !entry.Name.StartsWith("clamav-", StringComparison.Ordinal))
                continue;
            try
            {
                if (entry is DirectoryInfo dir) dir.Delete(recursive: true); else entry.Delete();
                Log.Info($"removed stale scan scratch {entry.FullName}");
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                Log.Warn($"cannot remove stale scan scratch {entry.FullName}: {e.Message}");
            }
        }
    }

    // A scanner thread stuck in libclamav must not keep the process from exiting.
    private static void Shutdown(ScannerPool scanners, EngineHolder engines, GatewayRuntime runtime)
    {
        if (!Task.Run(scanners.Dispose).Wait(TimeSpan.FromSeconds(10)))
        {
            Log.Warn("stopping: a scanner thread did not return within 10s; leaving it behind");
        }

        runtime.Reloader.Dispose();
        engines.Dispose();
    }

    // Each interfaces entry gets the socket systemd passed for its address, or a new one; a
    // passed socket that matches no entry is used as it is.
    private static List<Socket> OpenListeners(GatewayConfig config, IReadOnlyList<PassedSocket> passed)
    {
        var result = new List<Socket>();
        var unused = passed.ToList();
        try
        {
            var wanted = config.General.Interfaces.Select(i => i.EndPoint).ToArray();
            foreach (var entry in config.General.Interfaces)
            {
                var match = unused.FirstOrDefault(p => SocketActivation.MatchInterface((IPEndPoint)p.Socket.LocalEndPoint!, [entry.EndPoint]) == 0);
                if (match is not null)
                {
                    unused.Remove(match);
                    Log.Info($"socket activation: {entry} uses descriptor {match.Descriptor} ({match.Name}) passed by systemd");
                    result.Add(match.Socket);
                }
                else
                {
                    result.Add(Listen(entry.EndPoint));
                }
            }

            foreach (var extra in unused)
            {
                Log.Warn($"socket activation: descriptor {extra.Descriptor} ({extra.Name}) on {extra.Socket.LocalEndPoint} matches no [general] interfaces entry " +
                         $"({string.Join(", ", wanted.Select(w => w.ToString()))}); accepting on it as it is");
                result.Add(extra.Socket);
            }

            return result;
        }
        catch
        {
            foreach (var s in result) s.Dispose();
            foreach (var p in unused) p.Socket.Dispose();
            throw;
        }
    }

    private static Socket Listen(IPEndPoint endpoint)
    {
        var socket = new Socket(endpoint.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
        try
        {
            socket.SetSocketOption(SocketOptionLevel.Socket, SocketOptionName.ReuseAddress, true);
            // [::]:25 and 0.0.0.0:25 are separate listeners, as written in interfaces.
            if (endpoint.AddressFamily == AddressFamily.InterNetworkV6) socket.DualMode = false;
            socket.Bind(endpoint);
            socket.Listen(512);
            return socket;
        }
        catch (SocketException e)
        {
            socket.Dispose();
            throw new SocketException((int)e.SocketErrorCode, $"{endpoint}: {e.Message}");
        }
    }

    // Ends when the listener is closed (drain) or the accept loop cannot go on.
    private static async Task AcceptLoopAsync(Socket listener, GatewayRuntime runtime, SessionTracker sessions, CancellationToken drain, CancellationToken abort)
    {
        while (!drain.IsCancellationRequested)
        {
            Socket client;
            try
            {
                client = await listener.AcceptAsync(drain).ConfigureAwait(false);
            }
            catch (OperationCanceledException) { return; }
            catch (ObjectDisposedException) { return; }
            catch (SocketException e) when (e.SocketErrorCode is SocketError.OperationAborted or SocketError.Interrupted && drain.IsCancellationRequested)
            {
                return;
            }
            catch (SocketException e)
            {
                // EMFILE and friends: log, back off briefly rather than spin.
                Log.Warn($"accept failed on {SafeLocal(listener)}: {e.Message}");
                try { await Task.Delay(100, drain).ConfigureAwait(false); } catch (OperationCanceledException) { return; }
                continue;
            }
            sessions.Run(RunSessionAsync(client, runtime.Context, drain, abort));
        }
    }

    private static string SafeLocal(Socket s)
    {
        try { return s.LocalEndPoint?.ToString() ?? "?"; }
        catch (ObjectDisposedException) { return "?"; }
    }

    private static async Task RunSessionAsync(Socket client, GatewayContext ctx, CancellationToken drain, CancellationToken abort)
    {
        await Task.Yield();
        ctx.Metrics.ConnectionOpened();
        try
        {
            client.NoDelay = true;
            using var stream = new NetworkStream(client, ownsSocket: true);
            var session = new SmtpSession(stream, client.RemoteEndPoint, client.LocalEndPoint, ctx.ServerOptions,
                new GatewaySession(ctx), GatewayContext.NewSessionId());
            try
            {
                await session.RunAsync(drain, abort).ConfigureAwait(false);
            }
            catch (Exception e)
            {
                Log.Error($"session={session.Id} ended with an internal error: {e}");
            }
        }
        catch (SocketException)
        {
            // The client was gone before the session began.
        }
        finally
        {
            ctx.Metrics.ConnectionClosed();
        }
    }

    // Every HousekeepingInterval: STATUS= for systemctl status, the definitions-age warning, and
    // the database folder poll every [scan] reload_check_interval.
    private static async Task HousekeepingAsync(GatewayRuntime runtime, CancellationToken stop)
    {
        var check = runtime.Context.Config.Scan.ReloadCheckInterval;
        using var timer = new PeriodicTimer(check > TimeSpan.Zero && check < HousekeepingInterval ? check : HousekeepingInterval);
        var lastPoll = Environment.TickCount64;
        var lastStatus = "";
        try
        {
            while (await timer.WaitForNextTickAsync(stop).ConfigureAwait(false))
            {
                var interval = runtime.Context.Config.Scan.ReloadCheckInterval;
                if (interval > TimeSpan.Zero && Environment.TickCount64 - lastPoll >= (long)interval.TotalMilliseconds)
                {
                    lastPoll = Environment.TickCount64;
                    runtime.Reloader.CheckFolder();
                }
                else
                {
                    runtime.Reloader.WarnIfOld();
                }

                var line = runtime.StatusLine();
                if (line != lastStatus && !runtime.Reloader.IsReloading)
                {
                    lastStatus = line;
                    runtime.Notifier.Status(line);
                }
            }
        }
        catch (OperationCanceledException) { }
    }

    private sealed class SessionTracker
    {
        private readonly HashSet<Task> _running = [];
        private readonly Lock _lock = new();

        public int Count
        {
            get { lock (_lock) return _running.Count; }
        }

        public void Run(Task session)
        {
            lock (_lock) _running.Add(session);
            session.ContinueWith(t => { lock (_lock) _running.Remove(t); }, TaskScheduler.Default);
        }

        // True when every session ended within the limit.
        public async Task<bool> WaitAllAsync(TimeSpan limit)
        {
            Task[] all;
            lock (_lock) all = [.. _running];
            var done = Task.WhenAll(all);
            return await Task.WhenAny(done, Task.Delay(limit)).ConfigureAwait(false) == done;
        }
    }
}
