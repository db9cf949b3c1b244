using System.Net;
using System.Runtime.InteropServices;
using Portcullis.Appliance.Configuration;
using Portcullis.Appliance.Gateway;
using Portcullis.Appliance.Logging;

namespace Portcullis.Appliance.Cli;

// The verbs of the one `portcullis` binary. Exit codes follow sysexits(3): 64 bad usage, 78 bad
// configuration; `scan` uses clamscan's 0 clean / 1 infected / 2 error.
internal static class CommandLine
{
    public const int ExitOk = 0;
    public const int ExitUsage = 64;
    public const int ExitConfig = 78;

    public const string Usage = """
        usage: portcullis VERB [OPTIONS]

          run [--config FILE]             run the gateway in the foreground (systemd starts this)
          check-config [--config FILE]    validate the configuration and print a summary
          scan [--config FILE] FILE...|-  scan files, or a message on stdin (exit 0 clean, 1 infected, 2 error)
          version [--config FILE]         print the versions of portcullis, libclamav and the signatures
          quarantine list|show|release|delete|purge [--config FILE] ...
                                          the quarantine manager (portcullis quarantine help for details)
          reload [--config FILE]          ask the running gateway to reload its configuration and signatures
          status [--config FILE]          print the running gateway's status (signatures, traffic, last reload)
          help                            print this text

        FILE defaults to /etc/portcullis/portcullis.ini.
        """;

    public static async Task<int> RunAsync(string[] args)
    {
        if (args.Length == 0)
        {
            return UsageError("no verb given");
        }

        var verb = args[0];
        if (verb is "help" or "--help" or "-h")
        {
            Console.Out.WriteLine(Usage);
            return ExitOk;
        }

        if (verb == "quarantine")
        {
            if (args.Length > 1 && args[1] is "help" or "--help" or "-h")
            {
                Console.Out.Write(QuarantineCommands.Usage);
                return ExitOk;
            }

            return await QuarantineCommands.RunAsync(args.AsMemory(1));
        }

        if (!CommandArguments.TryParse(args.AsSpan(1), out var arguments, out var problem))
        {
            return UsageError($"{verb}: {problem}");
        }

        switch (verb)
        {
            case "run" or "check-config" or "version" or "reload" or "status" when arguments.Paths.Count > 0:
                return UsageError($"{verb}: unexpected argument \"{arguments.Paths[0]}\"");
            case "run":
                return await RunGatewayAsync(arguments.ConfigPath ?? ConfigLoader.DefaultPath);
            case "check-config":
                return CheckConfig(arguments.ConfigPath ?? ConfigLoader.DefaultPath);
            case "version":
                return ScanCommands.Version(arguments.ConfigPath);
            case "reload":
                return await ControlClient.RunAsync(arguments.ConfigPath ?? ConfigLoader.DefaultPath, "RELOAD");
            case "status":
                return await ControlClient.RunAsync(arguments.ConfigPath ?? ConfigLoader.DefaultPath, "STATUS");
            case "scan" when arguments.Paths.Count == 0:
                return UsageError("scan: no FILE given (use - for stdin)");
            case "scan":
                return ScanCommands.Scan(arguments.ConfigPath, arguments.Paths);
            default:
                return UsageError($"unknown verb \"{verb}\"");
        }
    }

    private static int UsageError(string problem)
    {
        Console.Error.WriteLine($"portcullis: {problem}");
        Console.Error.WriteLine(Usage);
        return ExitUsage;
    }

    private static async Task<int> RunGatewayAsync(string configPath)
    {
        GatewayConfig config;
        try
        {
            config = ConfigLoader.Load(configPath);
        }
        catch (ConfigException e)
        {
            foreach (var error in e.Errors)
            {
                Log.Error(error);
            }

            return ExitConfig;
        }

        using var stop = new CancellationTokenSource();

        // The first SIGTERM/SIGINT asks for a graceful stop; a second SIGINT kills as usual.
        void OnSignal(PosixSignalContext context)
        {
            context.Cancel = !stop.IsCancellationRequested;
            stop.Cancel();
        }

        using var term = PosixSignalRegistration.Create(PosixSignal.SIGTERM, OnSignal);
        using var interrupt = PosixSignalRegistration.Create(PosixSignal.SIGINT, OnSignal);
        return await GatewayHost.RunAsync(config, configPath, stop.Token);
    }

    internal static int CheckConfig(string configPath)
    {
        GatewayConfig config;
        try
        {
            config = ConfigLoader.Load(configPath);
        }
        catch (ConfigException e)
        {
            foreach (var error in e.Errors)
            {
                Console.Error.WriteLine(error);
            }

            return ExitConfig;
        }

        // A template with an unknown placeholder is a configuration error, found now rather than when a virus arrives.
        try
        {
            Notifications.TemplateSet.Load(config.Notification.TemplateFolder);
        }
        catch (ConfigException e)
        {
            foreach (var error in e.Errors)
            {
                Console.Error.WriteLine(error);
            }

            return ExitConfig;
        }

        // Relay rules, password and certificate files must be readable now, not at the first connection.
        try
        {
            Gateway.GatewayAccess.Load(config);
        }
        catch (InvalidDataException e)
        {
            Console.Error.WriteLine($"{config.SourcePath}: {e.Message}");
            return ExitConfig;
        }

        Console.Out.Write(Summary(config));
        foreach (var warning in FolderWarnings(config).Concat(ConfigChecks.Warnings(config)))
        {
            Console.Error.WriteLine("warning: " + warning);
        }

        return ExitOk;
    }

    internal static string Summary(GatewayConfig config) =>
        $"""
        configuration OK: {config.SourcePath}
          listeners: {string.Join(", ", config.General.Interfaces)}
          forward to: {ForwardTarget(config.General)} (reply timeout {ConfigValues.FormatTime(config.General.SmtpServerTimeout)})
          database folder: {config.Scan.DatabaseFolder}
          actions: {ActionSummary(config.Scan)}
          quarantine: {config.Quarantine.Folder} (copy {(config.Quarantine.Copy ? "every detection" : "discarded mail only")}, retention {(config.Quarantine.RetentionDays > 0 ? config.Quarantine.RetentionDays + " days" : "for ever")})

        """;

    private static string ActionSummary(ScanSection scan)
    {
        static string Word(DetectionAction action) => action.ToString().ToLowerInvariant();
        var text = Word(scan.Action);
        foreach (var detectionClass in new[] { Policy.DetectionClass.Pua, Policy.DetectionClass.Heuristics, Policy.DetectionClass.Phishing, Policy.DetectionClass.Unofficial, Policy.DetectionClass.Banned })
        {
            var action = scan.ActionFor(detectionClass);
            if (action != scan.Action) text += $", {Policy.Detection.ClassName(detectionClass)} {Word(action)}";
        }

        return text;
    }

    internal static string ForwardTarget(GeneralSection general) =>
        IPAddress.TryParse(general.SmtpServerAddress, out var address)
            ? new IPEndPoint(address, general.SmtpServerPort).ToString()
            : $"{general.SmtpServerAddress}:{general.SmtpServerPort}";

    // Not errors: check-config may run on a machine other than the one the file is for.
    private static IEnumerable<string> FolderWarnings(GatewayConfig config)
    {
        (string Key, string Folder)[] folders =
        [
            ("[general] temp_folder", config.General.TempFolder),
            ("[general] queue_folder", config.General.QueueFolder),
            ("[scan] database_folder", config.Scan.DatabaseFolder),
            ("[log] folder", config.Log.Folder),
            ("[quarantine] folder", config.Quarantine.Folder),
            ("[notification] template_folder (the built-in templates are used)", config.Notification.TemplateFolder),
        ];
        foreach (var (key, folder) in folders)
        {
            if (folder.Length > 0 && !Directory.Exists(folder))
            {
                yield return $"{key} {folder} does not exist on this machine";
            }
        }

        // Safe (no open relay) but surprising on a new install: mail from the internet is refused.
        if (config.Relay.LocalDomains.Count == 0 && config.Relay.LocalDomainsFile.Length == 0)
        {
            yield return "[relay] local_domains and local_domains_file are empty: only trusted_networks, " +
                         "RELAYCLIENT rules, POP-before-SMTP and authenticated clients can send mail through this gateway";
        }
    }
}

// `--config FILE`, `--config=FILE` or `-c FILE`, then positional paths (`-` is stdin, `--` ends options).
internal sealed record CommandArguments(string? ConfigPath, IReadOnlyList<string> Paths)
{
    public static bool TryParse(ReadOnlySpan<string> args, out CommandArguments arguments, out string problem)
    {
        string? config = null;
        var paths = new List<string>();
        var optionsEnded = false;
        arguments = new CommandArguments(null, paths);
        for (var i = 0; i < args.Length; i++)
        {
            var arg = args[i];
            if (optionsEnded || arg == "-" || !arg.StartsWith('-'))
            {
                paths.Add(arg);
            }
            else if (arg == "--")
            {
                optionsEnded = true;
            }
            else if (arg is "--config" or "-c")
            {
                if (i + 1 >= args.Length)
                {
                    problem = $"{arg} needs a FILE";
                    return false;
                }

                config = args[++i];
            }
            else if (arg.StartsWith("--config=", StringComparison.Ordinal))
            {
                config = arg["--config=".Length..];
            }
            else
            {
                problem = $"unknown option \"{arg}\"";
                return false;
            }
        }

        if (config is "")
        {
            problem = "--config needs a FILE";
            return false;
        }

        arguments = new CommandArguments(config, paths);
        problem = "";
        return true;
    }
}
