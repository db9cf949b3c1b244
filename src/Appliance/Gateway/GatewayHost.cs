// The daemon: load the engine, start the scanner pool, open the listeners (or take the ones
// systemd passed), and run one SmtpSession per accepted connection until asked to stop.
// Start-up problems (no signatures, a port in use, an unusable temp_folder) end the process
// with a clear message and a non-zero exit code before any mail is accepted.
//
// Around the sessions: sd_notify (READY/RELOADING/STOPPING/STATUS/WATCHDOG), SIGHUP and the
// control socket for reloads, the database folder poll, the status/metrics server. SIGTERM
// stops accepting, lets open transactions finish within [general] shutdown_timeout, answers
// idle sessions 421, and exits 0.
using System.Buffers;
using System.Net;
using System.Net.Security;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using System.Text;
using Portcullis.Appliance.Access;
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

    // Log lines go through one writer thread from here on; whatever is queued at the end is
    // written before the process exits.
    public static async Task<int> RunAsync(GatewayConfig config, string configPath, CancellationToken stop)
    {
        var logWriter = LogWriter.Start();
        try
        {
            return await RunLoggedAsync(config, configPath, logWriter, stop).ConfigureAwait(false);
        }
        finally
        {
            logWriter.Complete(TimeSpan.FromSeconds(10));
        }
    }

    private static async Task<int> RunLoggedAsync(GatewayConfig config, string configPath, LogWriter logWriter, CancellationToken stop)
    {
        try
        {
            Directory.CreateDirectory(config.General.TempFolder);
            if (Messages.MessageBuffer.RemoveStaleSpillFiles(config.General.TempFolder) is > 0 and var stale)
                Log.Info($"removed {stale} spill file(s) a previous run left in {config.General.TempFolder}");
            Directory.CreateDirectory(Scanning.ScanSettings.ScratchFolder(config));
            RemoveStaleScratch(Scanning.ScanSettings.ScratchFolder(config));
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
        foreach (var (key, create) in new (string, Action)[] { ("[quarantine] folder", quarantine.PrepareFolder), ("[general] queue_folder", outbox.EnsureFolder) })
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

        // The queue's leftovers from a crash are cleared before anything is accepted.
        var queueStore = new Queue.QueueStore(Queue.QueueStore.FolderFor(config.General.QueueFolder), config.Queue.MaxSize);
        try
        {
            var queued = queueStore.Recover(Log.Warn);
            if (queued.Count > 0) Log.Info($"queue: {queued.Count} message(s), {queueStore.Bytes} bytes waiting in {queueStore.Folder}");
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            Log.Error($"[general] queue_folder {queueStore.Folder} is not usable: {e.Message}");
            return 73; // EX_CANTCREAT
        }

        // Read (and removed from the environment) before anything else could start a child.
        var passed = SocketActivation.TakeFromEnvironment(out var passProblem);
        if (passProblem is not null)
        {
            Log.Warn($"socket activation: {passProblem}");
        }

        using var systemd = SystemdNotifier.FromEnvironment();
        // No database file at all is the first start before freshclam: run, defer mail, wait for
        // them. Files that do not load are an error as before.
        ScanEngine? engine = null;
        try
        {
            ClamAV.Initialize();
            if (SignatureDatabases.Present(config.Scan.DatabaseFolder))
                engine = ScanEngine.Load(Scanning.ScanSettings.EngineOptionsFor(config));
        }
        catch (Exception e) when (e is ClamAVException or IOException or DirectoryNotFoundException or InvalidOperationException or DllNotFoundException)
        {
            Log.Error($"cannot load signatures from {config.Scan.DatabaseFolder}: {e.Message}");
            foreach (var p in passed) p.Socket.Dispose();
            return 69; // EX_UNAVAILABLE
        }
        if (engine is not null)
            Log.Info($"libclamav {ClamAV.Version}, {engine.SignatureCount} signatures (database {engine.DatabaseVersion}) from {config.Scan.DatabaseFolder}");
        else
            Log.Warn(SignatureDatabases.FirstStartAdvice(config.Scan.DatabaseFolder));
        if (config.Tls.FromDefault && !config.Tls.Enabled && File.Exists(TlsSection.SnakeoilCertificate))
            Log.Warn($"no STARTTLS: Debian's snakeoil certificate is there but {TlsSection.SnakeoilKey} is not readable by this process; " +
                     "add SupplementaryGroups=ssl-cert to the unit (or the user to group ssl-cert), or set [tls] certificate and key");

        GatewayAccess access;
        try
        {
            access = GatewayAccess.Load(config);
        }
        catch (InvalidDataException e)
        {
            Log.Error($"{config.SourcePath}: {e.Message}");
            engine?.Dispose();
            return 78; // EX_CONFIG
        }

        var engines = engine is null ? new EngineHolder() : new EngineHolder(engine);
        var scanners = new ScannerPool(engines, config.Scan.ScannerThreads, config.Scan.QueueLength);
        Messages.MessageMemoryBudget.Shared.Limit = Messages.MessageMemoryBudget.LimitFor(config.Limits.MemoryBudget);
        using var messageLog = new MessageLog(Console.OpenStandardOutput(), config.Log.Folder, writer: logWriter);
        var notifier = new Notifier(outbox, NotificationServer(config));
        GatewayRuntime? current = null;
        var queue = new QueueDelivery(queueStore, () => current!.Context);
        var ctx = new GatewayContext(config, engines, scanners, messageLog, access.Relay)
        {
            Templates = templates,
            Notifier = notifier,
            Queue = queue,
            Tls = access.Tls,
            Passwords = access.Passwords,
            Connections = new ConnectionLimiter(config.Limits.MaxConnections, config.Limits.MaxConnectionsPerIp),
        };
        if (access.Tls is not null) Log.Info($"TLS certificate {access.Tls.Subject} from {config.Tls.Certificate}");
        var runtime = current = new GatewayRuntime(configPath, ctx, systemd);
        try
        {
            if (ctx.KnownRecipients is { } known) Log.Info($"[relay] recipients_file {known.Path}: {known.Current.Count} entries");
        }
        catch (InvalidDataException e)
        {
            Log.Error($"{config.SourcePath}: [relay] recipients_file: {e.Message}");
            engine?.Dispose();
            return 78; // EX_CONFIG
        }
        runtime.Reloader.WarnIfOld(force: true);

        await ProbeDownstreamAsync(runtime.Context, stop).ConfigureAwait(false);

        var listeners = new List<(Socket Socket, ListenEndpoint Endpoint)>();
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
            foreach (var l in listeners) l.Socket.Dispose();
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
        var accepts = listeners.Select(l => AcceptLoopAsync(l.Socket, l.Endpoint, runtime, sessions, drain.Token, abort.Token)).ToArray();
        runtime.AcceptLoopsAlive = () => drain.IsCancellationRequested || accepts.All(a => !a.IsCompleted);

        // Notifications keep going out while sessions drain; what is left stays in the outbox.
        var services = new List<Task>
        {
            HousekeepingAsync(runtime, background.Token),
            notifier.RunAsync(background.Token),
            queue.RunAsync(config.Queue.Concurrency, background.Token),
            PurgeDailyAsync(quarantine, config.Quarantine.RetentionDays, background.Token),
        };
        if (status is not null) services.Add(status.RunAsync(background.Token));
        if (control is not null) services.Add(control.RunAsync(background.Token));
        Log.Info($"portcullis {GatewayContext.ProductVersion} listening on {string.Join(", ", listeners.Select(l => l.Endpoint))}, " +
                 $"forwarding to {config.General.SmtpServerList}");
        // READY=1 (and the watchdog, which systemd only arms after it) once signatures are loaded.
        services.Add(ReadyWhenSignaturesLoadedAsync(runtime, systemd, background.Token));

        try
        {
            await Task.Delay(Timeout.Infinite, stop).ConfigureAwait(false);
        }
        catch (OperationCanceledException) { }

        var timeout = runtime.Context.Config.General.ShutdownTimeout;
        systemd.Stopping($"stopping: {sessions.Count} sessions finishing (up to {timeout.TotalSeconds:0}s)");
        Log.Info($"stopping: closing listeners; {sessions.Count} open sessions get up to {timeout.TotalSeconds:0}s to finish their transactions");
        foreach (var l in listeners) l.Socket.Dispose();
        drain.Cancel();
        await Task.WhenAll(accepts).ConfigureAwait(false);
        if (!await sessions.WaitAllAsync(timeout).ConfigureAwait(false))
        {
            Log.Warn($"stopping: {sessions.Count} sessions still open after shutdown_timeout; closing them");
            abort.Cancel();
            await sessions.WaitAllAsync(TimeSpan.FromSeconds(5)).ConfigureAwait(false);
        }
        // The warm downstream connections hear QUIT (the mail server logs a clean disconnect).
        var pool = runtime.Context.DownstreamPool;
        await pool.CloseAsync().ConfigureAwait(false);
        Log.Info($"downstream connections made: {pool.Connects}, lent by sessions inside DATA: {pool.Lent}");

        // Notifications the last sessions queued go to the outbox; the next start sends them.
        notifier.Complete();
        background.Cancel();
        await Task.WhenAll(services).ConfigureAwait(false);
        status?.Dispose();
        control?.Dispose();
        Shutdown(scanners, engines, runtime);
        // For load measurements (build/load.sh): managed allocation totals, read once at exit.
        if (Environment.GetEnvironmentVariable("PORTCULLIS_GC_REPORT") == "1")
        {
            var gc = GC.GetGCMemoryInfo();
            Log.Info($"gc allocated_bytes={GC.GetTotalAllocatedBytes(precise: true)} gen0={GC.CollectionCount(0)} " +
                     $"gen1={GC.CollectionCount(1)} gen2={GC.CollectionCount(2)} heap_bytes={gc.HeapSizeBytes} committed_bytes={gc.TotalCommittedBytes}");
        }
        Log.Info("stopped");
        return 0;
    }

    // [notification] smtp_server_*, else the servers in [general] smtp_server_address in order.
    internal static DownstreamOptions NotificationServer(GatewayConfig config)
    {
        bool own = config.Notification.SmtpServerAddress.Length > 0;
        List<(string Host, int Port)> servers = own
            ? [(config.Notification.SmtpServerAddress, config.Notification.SmtpServerPort ?? config.General.SmtpServerPort)]
            : [.. config.General.SmtpServers.Select(s => (s.Host, config.Notification.SmtpServerPort ?? s.Port))];
        DownstreamOptions Server((string Host, int Port) server, IReadOnlyList<DownstreamOptions> alternatives) => new()
        {
            Host = server.Host,
            Port = server.Port,
            HeloName = config.General.Hostname,
            ConnectTimeout = TimeSpan.FromSeconds(Math.Min(30, config.General.SmtpServerTimeout.TotalSeconds)),
            ReplyTimeout = config.General.SmtpServerTimeout,
            DataReplyTimeout = config.General.SmtpServerTimeout,
            Alternatives = alternatives,
        };
        return Server(servers[0], [.. servers.Skip(1).Select(s => Server(s, []))]);
    }

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
            Alternatives = options.Alternatives,
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
    // passed socket that matches no entry is used as it is (plain SMTP, no flags).
    private static List<(Socket Socket, ListenEndpoint Endpoint)> OpenListeners(GatewayConfig config, IReadOnlyList<PassedSocket> passed)
    {
        var result = new List<(Socket Socket, ListenEndpoint Endpoint)>();
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
                    result.Add((match.Socket, entry));
                }
                else
                {
                    result.Add((Listen(entry.EndPoint), entry));
                }
            }

            foreach (var extra in unused)
            {
                Log.Warn($"socket activation: descriptor {extra.Descriptor} ({extra.Name}) on {extra.Socket.LocalEndPoint} matches no [general] interfaces entry " +
                         $"({string.Join(", ", wanted.Select(w => w.ToString()))}); accepting on it as it is");
                result.Add((extra.Socket, new ListenEndpoint((IPEndPoint)extra.Socket.LocalEndPoint!, ListenEndpoint.NoFlags)));
            }

            return result;
        }
        catch
        {
            foreach (var (s, _) in result) s.Dispose();
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
    private static async Task AcceptLoopAsync(Socket listener, ListenEndpoint endpoint, GatewayRuntime runtime, SessionTracker sessions, CancellationToken drain, CancellationToken abort)
    {
        await Acceptor.RunAsync(listener, $"listener {SafeLocal(listener)}",
            client => { sessions.Started(); _ = RunSessionAsync(client, endpoint, runtime.Context, sessions, drain, abort); }, drain).ConfigureAwait(false);
    }

    private static string SafeLocal(Socket s)
    {
        try { return s.LocalEndPoint?.ToString() ?? "?"; }
        catch (ObjectDisposedException) { return "?"; }
    }

    // One connection: the PROXY header on /proxy listeners (only from [general] proxy_trusted),
    // the connection limits, the TLS handshake on /tls listeners, then the SMTP session. The real
    // client address from the header is what every later decision and log line sees. drain asks
    // for a graceful stop (SmtpSession.RunAsync), abort cuts everything at shutdown_timeout.
    // It counts itself out of sessions when it ends (SessionTracker.Started was called for it).
    private static async Task RunSessionAsync(Socket client, ListenEndpoint listener, GatewayContext ctx, SessionTracker sessions,
        CancellationToken drain, CancellationToken abort)
    {
        await Task.Yield();
        try
        {
            var stop = abort;
            ctx.Metrics.ConnectionOpened();
            client.NoDelay = true;
            using var network = new NetworkStream(client, ownsSocket: true);
            Stream stream = network;
            SslStream? tls = null;
            EndPoint? remote = client.RemoteEndPoint;
            string id = GatewayContext.NewSessionId();
            var hostname = ctx.Config.General.Hostname;
            ConnectionLimiter.Lease? lease = null;
            try
            {
                // The PROXY header and the TLS handshake have the command timeout; a plain listener needs no timer.
                using var setup = listener.Proxy || listener.Tls ? CancellationTokenSource.CreateLinkedTokenSource(stop) : null;
                setup?.CancelAfter(ctx.Config.Limits.CommandTimeout);
                if (listener.Proxy)
                {
                    var peer = (remote as IPEndPoint)?.Address;
                    if (!ctx.Config.General.ProxyTrusted.Contains(peer))
                    {
                        Log.Warn($"session={id} PROXY header expected on {listener}, but {peer} is not in [general] proxy_trusted: refused");
                        await WriteLineAsync(network, $"554 5.7.1 {hostname} Connection refused: not a trusted proxy", stop).ConfigureAwait(false);
                        return;
                    }
                    var (header, error) = await ReadProxyHeaderAsync(network, setup!.Token).ConfigureAwait(false);
                    if (header is null)
                    {
                        Log.Warn($"session={id} from {peer}: bad PROXY header: {error}");
                        await WriteLineAsync(network, $"421 4.7.0 {hostname} PROXY protocol header expected", stop).ConfigureAwait(false);
                        return;
                    }
                    if (header.Source is not null) remote = header.Source;
                }

                // Before the TLS handshake: a connection that never finishes it holds its place too.
                var address = (remote as IPEndPoint)?.Address;
                string refusal = "";
                // Trusted networks (the MTAs and hosts that relay through us) count towards
                // max_connections but not towards the per-address limit, as Postfix exempts mynetworks.
                bool exempt = address is not null && ctx.Config.Relay.TrustedNetworks.Contains(address);
                string limit = "";
                lease = ctx.Connections?.TryEnter(exempt ? null : address, out refusal, out limit);
                if (lease is null && ctx.Connections is not null)
                {
                    var reply = $"421 4.7.0 {hostname} {refusal}, try again later";
                    Log.Warn($"session={id} client={address} refused: {refusal}", ("limit", limit));
                    ctx.Metrics.ConnectionLimitRefused(limit);
                    ctx.Log.NotDelivered(new MessageLogEntry { Session = id, Client = address?.ToString() ?? "" }, NotDeliveredReason.ConnectionLimit, reply);
                    // On an implicit-TLS listener a reply in clear means nothing to the client: just close.
                    if (!listener.Tls) await WriteLineAsync(stream, reply, stop).ConfigureAwait(false);
                    return;
                }

                if (listener.Tls)
                {
                    tls = new SslStream(network, leaveInnerStreamOpen: true);
                    try
                    {
                        await tls.AuthenticateAsServerAsync(ctx.Tls!.ServerOptions, setup!.Token).ConfigureAwait(false);
                    }
                    catch (Exception e) when (e is System.Security.Authentication.AuthenticationException or IOException or OperationCanceledException)
                    {
                        Log.Info($"session={id} client={(remote as IPEndPoint)?.Address} TLS handshake failed: {e.Message}");
                        return;
                    }
                    stream = tls;
                }

                var session = new SmtpSession(stream, remote, client.LocalEndPoint, ctx.ServerOptions, new SignaturesPending(ctx, new GatewaySession(ctx)), id);
                await session.RunAsync(drain, abort).ConfigureAwait(false);
            }
            catch (Exception e) when (e is IOException or OperationCanceledException or ObjectDisposedException or SocketException)
            {
                // The client or the balancer went away during set-up.
            }
            catch (Exception e)
            {
                Log.Error($"session={id} ended with an internal error: {e}");
            }
            finally
            {
                ctx.Metrics.ConnectionClosed();
                lease?.Dispose();
                if (tls is not null) await tls.DisposeAsync().ConfigureAwait(false);
            }
        }
        finally
        {
            sessions.Ended();
        }
    }

    private static async Task WriteLineAsync(Stream stream, string line, CancellationToken ct)
    {
        try { await stream.WriteAsync(Encoding.ASCII.GetBytes(line + "\r\n"), ct).ConfigureAwait(false); }
        catch (Exception e) when (e is IOException or OperationCanceledException) { }
    }

    // Reads exactly the header's bytes from the socket (no further: on a /tls listener the TLS
    // handshake follows), fetching only as many as the parser says it still needs.
    internal static async Task<(SmtpCore.Protocol.ProxyHeader?, string)> ReadProxyHeaderAsync(Stream stream, CancellationToken ct)
    {
        var buffer = new byte[16 + 65535];
        int filled = 0;
        while (true)
        {
            var status = SmtpCore.Protocol.ProxyHeaderParser.TryParse(new ReadOnlySequence<byte>(buffer, 0, filled),
                out var header, out _, out int needed, out var error);
            if (status == SmtpCore.Protocol.ProxyParseStatus.Complete) return (header, "");
            if (status == SmtpCore.Protocol.ProxyParseStatus.Error) return (null, error);
            int n = await stream.ReadAsync(buffer.AsMemory(filled, needed), ct).ConfigureAwait(false);
            if (n == 0) return (null, "the connection closed inside the header");
            filled += n;
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

    // Tells systemd READY=1 when an engine is loaded: at once normally; on a first start as soon
    // as database files appear in database_folder (checked every second, loaded through the
    // reloader) or a reload (SIGHUP, `portcullis reload`, the folder poll) loads them. Until then
    // each tick sends EXTEND_TIMEOUT_USEC, and only while the accept loops run, so a gateway that
    // waits is not killed by TimeoutStartSec= but one that has stopped working is.
    private static async Task ReadyWhenSignaturesLoadedAsync(GatewayRuntime runtime, SystemdNotifier systemd, CancellationToken stop)
    {
        var tick = TimeSpan.FromSeconds(1);
        string? tried = null;
        try
        {
            while (!runtime.Engines.IsLoaded)
            {
                if (runtime.AcceptLoopsAlive())
                {
                    systemd.Send($"EXTEND_TIMEOUT_USEC={(long)TimeSpan.FromSeconds(30).TotalMicroseconds}\nSTATUS=waiting for virus signatures in {runtime.Context.Config.Scan.DatabaseFolder}; mail gets 451 4.3.0");
                }

                var folder = runtime.Context.Config.Scan.DatabaseFolder;
                var listing = SignatureDatabases.Present(folder) ? FolderListing(folder) : null;
                if (listing is not null && listing != tried && !runtime.Reloader.IsReloading)
                {
                    tried = listing;
                    var outcome = await runtime.Reloader.RequestAsync($"signature databases appeared in {folder}", withConfig: false).ConfigureAwait(false);
                    if (!outcome.Ok) Log.Warn($"still no signatures ({outcome.Text}); trying again when {folder} changes");
                    continue;
                }

                await Task.Delay(tick, stop).ConfigureAwait(false);
            }
        }
        catch (OperationCanceledException)
        {
            return;
        }

        runtime.MarkReady();
        Log.Info($"ready: {runtime.StatusLine()}");
        systemd.Ready(runtime.StatusLine());
        if (systemd.WatchdogInterval is { } watchdog)
        {
            Log.Info($"systemd watchdog: WATCHDOG=1 every {(watchdog / 2).TotalSeconds:0.###}s while the scanner pool answers canary scans");
            await new ServiceWatchdog(new WatchedGateway(runtime), watchdog).RunAsync(stop).ConfigureAwait(false);
        }
    }

    // Names, sizes and times of the folder's files: a new attempt only when something changed.
    private static string FolderListing(string folder)
    {
        try
        {
            return string.Join('\n', new DirectoryInfo(folder).EnumerateFiles().OrderBy(f => f.Name, StringComparer.Ordinal)
                .Select(f => $"{f.Name} {f.Length} {f.LastWriteTimeUtc.Ticks}"));
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return "";
        }
    }

    // The open sessions, as a count: a session costs no task continuation or set entry.
    private sealed class SessionTracker
    {
        private readonly Lock _lock = new();
        private int _count;
        private TaskCompletionSource? _none;   // completed when the count reaches 0 while someone waits

        public int Count
        {
            get { lock (_lock) return _count; }
        }

        public void Started()
        {
            lock (_lock) _count++;
        }

        public void Ended()
        {
            lock (_lock)
            {
                if (--_count > 0 || _none is null) return;
                _none.TrySetResult();
                _none = null;
            }
        }

        // True when every session ended within the limit.
        public async Task<bool> WaitAllAsync(TimeSpan limit)
        {
            Task none;
            lock (_lock)
            {
                if (_count == 0) return true;
                none = (_none ??= new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously)).Task;
            }
            return await Task.WhenAny(none, Task.Delay(limit)).ConfigureAwait(false) == none;
        }
    }
}
