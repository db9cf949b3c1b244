using Portcullis.Appliance.Configuration;
using Portcullis.Appliance.Messages;
using Portcullis.Appliance.Policy;
using Portcullis.Appliance.Scanning;
using Portcullis.NativeScan;

namespace Portcullis.Appliance.Cli;

// `portcullis scan` and `portcullis version`: libclamav used directly, outside the gateway.
// scan prints clamscan-like lines (FILE: OK and FILE: Name FOUND on stdout, FILE: ERROR text on
// stderr) and exits 0 when everything is clean, 1 when anything is infected, 2 when anything
// could not be scanned. With --policy each file is taken as a message as the gateway receives it,
// and the attachment rules of [scan] run inside the same libclamav pass (AttachmentInspector), so
// a message the gateway refuses as Banned.* is FOUND here too.
internal static class ScanCommands
{
    public const int ExitClean = 0;
    public const int ExitInfected = 1;
    public const int ExitError = 2;

    public static int Scan(ScanRequest request)
    {
        if (!TryLoadConfig(request.ConfigPath, out var config, out var configErrors))
        {
            foreach (var error in configErrors)
            {
                Console.Error.WriteLine(error);
            }

            return ExitError;
        }

        ScanEngine engine;
        try
        {
            engine = ScanEngine.Load(ScanSettings.EngineOptionsFor(config));
        }
        catch (Exception e) when (e is ClamAVException or DllNotFoundException or EntryPointNotFoundException or IOException or UnauthorizedAccessException)
        {
            Console.Error.WriteLine($"portcullis: cannot load signatures from {config.Scan.DatabaseFolder}: {e.Message}");
            return ExitError;
        }

        Func<ScanInspector?> inspector = () => null;
        if (request.Policy)
        {
            var banned = BannedAttachments.From(config.Scan);
            inspector = () => AttachmentInspector.For(banned, config.Scan);
        }

        using (engine)
        {
            var report = new ScanReport(Console.Out, Console.Error);
            foreach (var path in request.Paths)
            {
                if (path == "-")
                {
                    report.Add("stdin", ScanStdin(engine, config, inspector()));
                }
                else if (Directory.Exists(path))
                {
                    if (request.Recursive)
                    {
                        ScanTree.Scan(engine, path, report, inspector);
                    }
                    else
                    {
                        report.Add(path, ScanResult.Error(0, "is a directory (use -r to scan the files under it)"));
                    }
                }
                else
                {
                    report.Add(path, ScanPath(engine, path, inspector()));
                }
            }

            return report.ExitCode;
        }
    }

    // The first line of `portcullis version`, and all of `portcullis --version`.
    public static string ProgramVersionLine() =>
        $"portcullis {typeof(ScanCommands).Assembly.GetName().Version?.ToString(3) ?? "unknown"}";

    public static int Version(string? configPath)
    {
        Console.Out.WriteLine(ProgramVersionLine());
        try
        {
            Console.Out.WriteLine($"libclamav {ClamAV.Version}");
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException or ClamAVException)
        {
            Console.Out.WriteLine($"libclamav not available: {e.Message}");
            return ExitClean;
        }

        if (!TryLoadConfig(configPath, out var config, out var errors))
        {
            Console.Out.WriteLine($"signatures not loaded: the configuration has {errors.Count} error(s); run portcullis check-config");
            return ExitClean;
        }

        try
        {
            // The exception already carries libclamav's error line; don't print it twice.
            ClamAV.MessageSink = static (_, _) => { };
            using var engine = ScanEngine.Load(ScanSettings.EngineOptionsFor(config));
            Console.Out.WriteLine($"signatures {engine.SignatureCount} (database {engine.DatabaseVersion})");
        }
        catch (Exception e) when (e is ClamAVException or IOException or UnauthorizedAccessException)
        {
            Console.Out.WriteLine($"signatures not loaded from {config.Scan.DatabaseFolder}: {e.Message}");
        }

        return ExitClean;
    }

    // An explicit --config must load; without one the default file is used when it exists, else the defaults.
    private static bool TryLoadConfig(string? configPath, out GatewayConfig config, out IReadOnlyList<string> errors)
    {
        errors = [];
        try
        {
            config = configPath is null && !File.Exists(ConfigLoader.DefaultPath)
                ? GatewayConfig.Defaults
                : ConfigLoader.Load(configPath ?? ConfigLoader.DefaultPath);
            return true;
        }
        catch (ConfigException e)
        {
            errors = e.Errors;
            config = GatewayConfig.Defaults;
            return false;
        }
    }

    private static ScanResult ScanPath(ScanEngine engine, string path, ScanInspector? inspector)
    {
        try
        {
            if (inspector is null) return engine.ScanFile(path);
            using var file = File.OpenHandle(path);
            return engine.ScanFile(file, path, inspector);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return ScanResult.Error(0, e.Message);
        }
    }

    private static ScanResult ScanStdin(ScanEngine engine, GatewayConfig config, ScanInspector? inspector)
    {
        var tempFolder = Directory.Exists(config.General.TempFolder) ? config.General.TempFolder : Path.GetTempPath();
        using var message = new MessageBuffer(config.Limits.MemoryThreshold, tempFolder);
        try
        {
            using var stdin = Console.OpenStandardInput();
            while (true)
            {
                var span = message.GetSpan(MessageBuffer.SegmentSize);
                var n = stdin.Read(span);
                if (n == 0)
                {
                    break;
                }

                message.Advance(n);
            }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return ScanResult.Error(0, $"reading stdin: {e.Message}");
        }

        return engine.Scan(message, "stdin", inspector);
    }
}

// What `portcullis scan` was asked to do: the options of the verb, one member each.
internal sealed record ScanRequest(string? ConfigPath, IReadOnlyList<string> Paths, bool Recursive, bool Policy = false);

// The lines of one scan run and its exit code: an error outranks an infection, an infection a clean file.
internal sealed class ScanReport(TextWriter output, TextWriter errors)
{
    public int ExitCode { get; private set; } = ScanCommands.ExitClean;

    public void Add(string name, ScanResult result)
    {
        switch (result.Outcome)
        {
            case ScanOutcome.Clean:
                output.WriteLine($"{name}: OK");
                break;
            case ScanOutcome.Infected:
                output.WriteLine($"{name}: {result.VirusName} FOUND");
                ExitCode = Math.Max(ExitCode, ScanCommands.ExitInfected);
                break;
            default:
                errors.WriteLine($"{name}: ERROR {result.ErrorText}");
                ExitCode = ScanCommands.ExitError;
                break;
        }
    }
}
