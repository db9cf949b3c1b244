// Reloads configuration and signatures while mail flows. One reload runs at a time; requests
// that arrive meanwhile coalesce into one more reload after it (the folder may have changed
// after the running load read it), and every requester learns the outcome of the reload that
// covered its request.
//
// reload_memory = concurrent: the next engine is built on a background thread while scans go on
// with the current one, then swapped in; scans in flight keep the old engine alive until they
// end. A failed load keeps the old engine.
// reload_memory = low: the scanner pool is held (new messages queue, and are deferred only past
// the queue's bound), the old engine is freed once the scans on it have ended, then the new
// one is built. Peak memory is one engine, not two; a failed load leaves no engine, so messages
// are deferred (451) until a later reload succeeds.
using System.Diagnostics;
using Portcullis.Appliance.Configuration;
using Portcullis.Appliance.Logging;
using Portcullis.Appliance.Status;
using Portcullis.Appliance.Systemd;
using Portcullis.NativeScan;

namespace Portcullis.Appliance.Gateway;

internal sealed record ReloadOutcome(bool Ok, string Text);

internal sealed class SignatureReloader : IDisposable
{
    private readonly GatewayRuntime runtime;
    private readonly Lock gate = new();
    private readonly Lock watchLock = new();
    private TaskCompletionSource<ReloadOutcome>? pending;
    private bool pendingConfig;
    private bool running;
    private DatabaseWatch? watch;
    private long reloadStartedTicks;
    private DateTimeOffset lastAgeWarning = DateTimeOffset.MinValue;

    public SignatureReloader(GatewayRuntime runtime)
    {
        this.runtime = runtime;
        watch = NewWatch(runtime.Context.Config.Scan.DatabaseFolder);
    }

    public bool IsReloading => Volatile.Read(ref reloadStartedTicks) != 0;

    // When the running reload started (Environment.TickCount64), 0 when none runs.
    public long ReloadStartedTicks => Volatile.Read(ref reloadStartedTicks);

    public DateTimeOffset? LastReloadTime { get; private set; }

    public string LastReloadText { get; private set; } = "none since start";

    public bool LastReloadFailed { get; private set; }

    // withConfig: read the configuration file again too (SIGHUP, `portcullis reload`).
    public Task<ReloadOutcome> RequestAsync(string reason, bool withConfig)
    {
        TaskCompletionSource<ReloadOutcome> request;
        var start = false;
        lock (gate)
        {
            pending ??= new TaskCompletionSource<ReloadOutcome>(TaskCreationOptions.RunContinuationsAsynchronously);
            pendingConfig |= withConfig;
            request = pending;
            if (!running)
            {
                running = true;
                start = true;
            }
        }

        Log.Info($"reload requested: {reason}" + (start ? "" : " (joins the next reload)"));
        if (start)
        {
            _ = Task.Factory.StartNew(RunReloads, CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default);
        }

        return request.Task;
    }

    // The [scan] reload_check_interval poll: a reload when freshclam (or anyone) changed the folder.
    public void CheckFolder()
    {
        bool changed;
        lock (watchLock)
        {
            if (watch is null)
            {
                watch = NewWatch(runtime.Context.Config.Scan.DatabaseFolder);
                changed = watch is not null;
            }
            else
            {
                try
                {
                    changed = watch.HasChanged();
                }
                catch (ClamAVException e)
                {
                    Log.Warn($"checking {watch.Folder} for changes failed: {e.Message}");
                    changed = false;
                }
            }
        }

        if (changed)
        {
            _ = RequestAsync("database folder changed", withConfig: false);
        }

        WarnIfOld();
    }

    // Logs at most once an hour while the newest database is older than max_definitions_age.
    public void WarnIfOld(bool force = false)
    {
        var age = runtime.DefinitionsAge();
        var limit = runtime.Context.Config.Scan.MaxDefinitionsAge;
        if (age is null || age <= limit)
        {
            return;
        }

        var now = DateTimeOffset.UtcNow;
        if (!force && now - lastAgeWarning < TimeSpan.FromHours(1))
        {
            return;
        }

        lastAgeWarning = now;
        Log.Warn($"signatures are outdated: the newest database is {GatewayRuntime.FormatAge(age.Value)} old " +
                 $"(max_definitions_age {ConfigValues.FormatTime(limit)}); is freshclam running?");
    }

    public void Dispose()
    {
        lock (watchLock)
        {
            watch?.Dispose();
            watch = null;
        }
    }

    private void RunReloads()
    {
        while (true)
        {
            TaskCompletionSource<ReloadOutcome> current;
            bool withConfig;
            lock (gate)
            {
                if (pending is null)
                {
                    running = false;
                    return;
                }

                current = pending;
                withConfig = pendingConfig;
                pending = null;
                pendingConfig = false;
            }

            ReloadOutcome outcome;
            try
            {
                outcome = ReloadOnce(withConfig);
            }
            catch (Exception e)
            {
                outcome = new ReloadOutcome(false, "reload failed: " + e.Message);
                Log.Error($"reload failed with an internal error: {e}");
                NotifyDone();
            }

            current.TrySetResult(outcome);
        }
    }

    private ReloadOutcome ReloadOnce(bool withConfig)
    {
        var started = Stopwatch.GetTimestamp();
        Volatile.Write(ref reloadStartedTicks, Environment.TickCount64);
        var what = withConfig ? "reloading configuration and signatures" : "reloading signatures";
        if (runtime.IsReady) runtime.Notifier.Reloading(what); else runtime.Notifier.Status(what);
        var notes = new List<string>();
        var configOk = true;
        try
        {
            if (withConfig)
            {
                (configOk, var note) = ReloadConfiguration();
                notes.Add(note);
            }

            var config = runtime.Context.Config;

            // Watch from before the load, so a change made while it runs causes another reload.
            lock (watchLock)
            {
                watch?.Dispose();
                watch = NewWatch(config.Scan.DatabaseFolder);
            }

            var (ok, text) = config.Scan.ReloadMemory == ReloadMemory.Low ? ReloadLow(config) : ReloadConcurrent(config);
            var took = Stopwatch.GetElapsedTime(started);
            runtime.Metrics.Reloaded(ok, took);
            LastReloadTime = DateTimeOffset.UtcNow;
            LastReloadFailed = !ok;
            LastReloadText = $"{text} ({took.TotalSeconds:0.0}s, {config.Scan.ReloadMemory.ToString().ToLowerInvariant()})";
            if (ok)
            {
                Log.Info($"signatures reloaded: {LastReloadText}");
                WarnIfOld(force: true);
            }
            else
            {
                Log.Error($"signature reload failed: {LastReloadText}");
            }

            notes.Add(LastReloadText);
            // An invalid configuration fails the request (systemctl reload reports it) even
            // though the signatures were reloaded under the running configuration.
            return new ReloadOutcome(ok && configOk, string.Join("; ", notes.Where(n => n.Length > 0)));
        }
        finally
        {
            Volatile.Write(ref reloadStartedTicks, 0);
            NotifyDone();
        }
    }

    // READY=1 ends RELOADING=1; before the first READY=1 (no signatures yet) it would claim
    // readiness too early, so then only the status changes.
    private void NotifyDone()
    {
        if (runtime.IsReady) runtime.Notifier.Ready(runtime.StatusLine()); else runtime.Notifier.Status(runtime.StatusLine());
    }

    // An invalid file keeps the running configuration; what needs a restart is logged.
    private (bool Ok, string Text) ReloadConfiguration()
    {
        GatewayConfig next;
        try
        {
            next = ConfigLoader.Load(runtime.ConfigPath);
        }
        catch (ConfigException e)
        {
            foreach (var error in e.Errors)
            {
                Log.Error(error);
            }

            Log.Error($"configuration reload failed: {runtime.ConfigPath} has {e.Errors.Count} error(s); the running configuration stays in force");
            return (false, $"configuration NOT reloaded ({e.Errors.Count} error(s), see the log); running configuration kept");
        }

        IReadOnlyList<string> restart;
        try
        {
            restart = runtime.ApplyConfiguration(next);
        }
        catch (InvalidDataException e)
        {
            Log.Error($"configuration reload failed: {runtime.ConfigPath}: {e.Message}; the running configuration stays in force");
            return (false, "configuration NOT reloaded (a relay, password or certificate file cannot be loaded, see the log); running configuration kept");
        }
        if (restart.Count > 0)
        {
            Log.Warn($"configuration reloaded; these changes need a restart to take effect: {string.Join(", ", restart)}");
            return (true, $"configuration reloaded (needs a restart: {string.Join(", ", restart)})");
        }

        Log.Info("configuration reloaded");
        return (true, "configuration reloaded");
    }

    private (bool Ok, string Text) ReloadConcurrent(GatewayConfig config)
    {
        ScanEngine next;
        try
        {
            next = ScanEngine.Load(Scanning.ScanSettings.EngineOptionsFor(config));
        }
        catch (Exception e) when (IsLoadFailure(e))
        {
            var kept = runtime.Engines.TryGetCurrent(out var old) ? $"kept {old.SignatureCount} signatures ({old.DatabaseVersion})" : "no engine loaded";
            return (false, $"cannot load {config.Scan.DatabaseFolder}: {e.Message}; {kept}");
        }

        runtime.Engines.TryGetCurrent(out var previous);
        runtime.Engines.Swap(next);
        ReturnMemoryWhenFreed(previous);
        return (true, Describe(next, config));
    }

    private (bool Ok, string Text) ReloadLow(GatewayConfig config)
    {
        var pool = runtime.Scanners;
        pool.Hold();
        try
        {
            // Scans bound their own run time (CL_ENGINE_MAX_SCANTIME): wait for them a little longer.
            var limit = config.Scan.Timeout + TimeSpan.FromSeconds(30);
            if (!pool.WhenIdleAsync().Wait(limit))
            {
                Log.Warn($"low-memory reload: scans still running after {limit.TotalSeconds:0}s; building the new engine beside the old one");
                pool.Resume();
                return ReloadConcurrent(config);
            }

            var old = runtime.Engines.Unload();
            if (old is not null && old.Freed.Wait(TimeSpan.FromSeconds(30)))
            {
                Libc.TrimHeap();
            }

            try
            {
                var next = ScanEngine.Load(Scanning.ScanSettings.EngineOptionsFor(config));
                runtime.Engines.Swap(next);
                return (true, Describe(next, config));
            }
            catch (Exception e) when (IsLoadFailure(e))
            {
                return (false, $"cannot load {config.Scan.DatabaseFolder}: {e.Message}; NO signatures are loaded " +
                               "(reload_memory = low freed the old ones first): messages are deferred until a reload succeeds");
            }
        }
        finally
        {
            pool.Resume();
        }
    }

    // The old engine goes when its last scan ends; then glibc gets its arenas trimmed.
    private static void ReturnMemoryWhenFreed(ScanEngine? previous)
    {
        previous?.Freed.ContinueWith(static _ => Libc.TrimHeap(), CancellationToken.None,
            TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
    }

    private static string Describe(ScanEngine engine, GatewayConfig config) =>
        $"{engine.SignatureCount} signatures (database {engine.DatabaseVersion}) from {config.Scan.DatabaseFolder}";

    private static bool IsLoadFailure(Exception e) =>
        e is ClamAVException or IOException or UnauthorizedAccessException or InvalidOperationException or ArgumentException;

    private static DatabaseWatch? NewWatch(string folder)
    {
        try
        {
            return new DatabaseWatch(folder);
        }
        catch (Exception e) when (e is ClamAVException or IOException)
        {
            Log.Warn($"cannot watch {folder} for changes: {e.Message}");
            return null;
        }
    }
}
