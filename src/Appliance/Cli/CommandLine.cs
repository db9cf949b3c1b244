using System.CommandLine;
using System.CommandLine.Help;
using System.CommandLine.Invocation;
using System.CommandLine.Parsing;
using System.Net;
using System.Runtime.InteropServices;
using Portcullis.Appliance.Configuration;
using Portcullis.Appliance.Gateway;
using Portcullis.Appliance.Logging;

namespace Portcullis.Appliance.Cli;

// The verbs of the one `portcullis` binary, parsed by System.CommandLine (help on every verb,
// completion through its [suggest] directive). Exit codes follow sysexits(3): 64 bad usage,
// 78 bad configuration; `scan` uses clamscan's 0 clean / 1 infected / 2 error.
internal static class CommandLine
{
    public const int ExitOk = 0;
    public const int ExitUsage = 64;
    public const int ExitConfig = 78;

    private static readonly ParserConfiguration ParserSettings = new()
    {
        // `@file` is a file name here (scan), never a file of more arguments.
        ResponseFileTokenReplacer = null,
    };

    private static readonly InvocationConfiguration InvocationSettings = new()
    {
        // `run` handles SIGTERM/SIGINT itself (graceful stop); an exception is a bug to see, not a line to hide.
        ProcessTerminationTimeout = null,
        EnableDefaultExceptionHandler = false,
    };

    // Built once: the verbs, their options and help texts; `portcullis [suggest:N] "LINE"` answers bash completion from it.
    internal static readonly RootCommand Verbs = BuildVerbs();

    public static async Task<int> RunAsync(string[] args)
    {
        var parsed = Parse(args);
        if (parsed.Action is ParseErrorAction)
        {
            return UsageError(parsed);
        }

        if (UnknownOption(parsed) is { } option)
        {
            return UsageError(parsed, $"unknown option \"{option}\" (a FILE or ID that starts with - goes after --)");
        }

        return await parsed.InvokeAsync(InvocationSettings);
    }

    // System.CommandLine takes an unknown "--verbose" as a FILE or an ID; here it is a mistyped
    // option, as with getopt. "-" is stdin, and after "--" every word is an argument.
    internal static string? UnknownOption(ParseResult parsed)
    {
        var tokens = parsed.Tokens.ToList();
        var end = tokens.FindIndex(t => t.Type == TokenType.DoubleDash);
        foreach (var argument in parsed.CommandResult.Children.OfType<ArgumentResult>())
        {
            foreach (var token in argument.Tokens)
            {
                var at = tokens.FindIndex(t => ReferenceEquals(t, token));
                if (token.Value.Length > 1 && token.Value[0] == '-' && (end < 0 || at < end))
                {
                    return token.Value;
                }
            }
        }

        return null;
    }

    internal static ParseResult Parse(IReadOnlyList<string> args) => Verbs.Parse(args, ParserSettings);

    private static RootCommand BuildVerbs()
    {
        var root = new RootCommand("Portcullis, an SMTP antivirus gateway: it sits in front of a mail server and lets through only clean mail.");
        for (var i = 0; i < root.Options.Count; i++)
        {
            switch (root.Options[i])
            {
                // -h and --help on every verb, without the DOS spellings /? /h -?.
                case HelpOption:
                    root.Options[i] = new HelpOption("--help", "-h");
                    break;
                case VersionOption version:
                    version.Action = new VersionLineAction();
                    break;
            }
        }

        root.Subcommands.Add(RunVerb());
        root.Subcommands.Add(CheckConfigVerb());
        root.Subcommands.Add(ScanVerb());
        root.Subcommands.Add(VersionVerb());
        root.Subcommands.Add(QuarantineCommands.Verb());
        root.Subcommands.Add(QueueCommands.Verb());
        root.Subcommands.Add(ControlVerb("reload", "RELOAD",
            "ask the running gateway to reload its configuration and signatures; waits for it: exit 0 done, 1 failed, 69 no gateway answered"));
        root.Subcommands.Add(ControlVerb("status", "STATUS",
            "print the running gateway's status (signatures, database age, last reload, traffic, last detections); exit 69 when no gateway answered"));
        root.Subcommands.Add(HelpVerb(root));
        return root;
    }

    // The configuration for a verb that needs all of it; null after its errors went to `error` (exit 78).
    internal static GatewayConfig? LoadConfig(string? path, TextWriter error)
    {
        try
        {
            return ConfigLoader.Load(path ?? ConfigLoader.DefaultPath);
        }
        catch (ConfigException e)
        {
            foreach (var line in e.Errors)
            {
                error.WriteLine(line);
            }

            return null;
        }
    }

    internal static Option<string> ConfigOption() => new("--config", "-c")
    {
        Description = $"the configuration file (default {ConfigLoader.DefaultPath})",
        HelpName = "FILE",
        Validators =
        {
            static result =>
            {
                if (result.GetValueOrDefault<string>() is "")
                {
                    result.AddError("--config needs a FILE");
                }
            },
        },
    };

    private static Command RunVerb()
    {
        var config = ConfigOption();
        var verb = new Command("run", "run the gateway in the foreground (systemd starts this); exit 78 on a bad configuration") { config };
        verb.SetAction((parsed, _) => RunGatewayAsync(parsed.GetValue(config) ?? ConfigLoader.DefaultPath));
        return verb;
    }

    private static Command CheckConfigVerb()
    {
        var config = ConfigOption();
        var verb = new Command("check-config",
            "validate the configuration and print a summary; every bad value names file, section, key and what was expected (exit 78)") { config };
        verb.SetAction(parsed => CheckConfig(parsed.GetValue(config) ?? ConfigLoader.DefaultPath));
        return verb;
    }

    private static Command ScanVerb()
    {
        var config = ConfigOption();
        var recursive = new Option<bool>("--recursive", "-r")
        {
            Description = "scan the files under each directory given, and under their subdirectories",
        };
        var policy = new Option<bool>("--policy")
        {
            Description = "take each file as a mail message and apply the gateway's whole verdict: the attachment rules of [scan] too (Banned.*)",
        };
        var paths = new Argument<string[]>("FILE")
        {
            Arity = ArgumentArity.OneOrMore,
            Description = "a file, a directory (with -r), or - for a message on stdin",
        };
        var verb = new Command("scan",
            "scan files or a message with the gateway's signatures and limits: exit 0 clean, 1 infected, 2 error (errors on stderr)")
        {
            config, recursive, policy, paths,
        };
        verb.SetAction(parsed => ScanCommands.Scan(new ScanRequest(parsed.GetValue(config), parsed.GetValue(paths) ?? [], parsed.GetValue(recursive), parsed.GetValue(policy))));
        return verb;
    }

    private static Command VersionVerb()
    {
        var config = ConfigOption();
        var verb = new Command("version", "print the versions of portcullis, libclamav and the signatures") { config };
        verb.SetAction(parsed => ScanCommands.Version(parsed.GetValue(config)));
        return verb;
    }

    private static Command ControlVerb(string name, string command, string description)
    {
        var config = ConfigOption();
        var verb = new Command(name, description) { config };
        verb.SetAction((parsed, _) => ControlClient.RunAsync(parsed.GetValue(config) ?? ConfigLoader.DefaultPath, command));
        return verb;
    }

    // `portcullis help [VERB...]` as before System.CommandLine: the same text as `portcullis [VERB...] --help`.
    private static Command HelpVerb(RootCommand root)
    {
        var verbs = new Argument<string[]>("VERB") { Arity = ArgumentArity.ZeroOrMore };
        var verb = new Command("help", "print this text, or a verb's help") { verbs };
        verb.Hidden = true;
        verb.SetAction(parsed => ShowHelp([.. parsed.GetValue(verbs) ?? [], "--help"]));
        return verb;
    }

    internal static int ShowHelp(string[] verbsThenHelp)
    {
        var parsed = Parse(verbsThenHelp);
        return parsed.Action is ParseErrorAction ? UsageError(parsed) : parsed.Invoke(InvocationSettings);
    }

    // Usage problems exit 64 (sysexits EX_USAGE) with one line each and a pointer to the verb's help.
    private static int UsageError(ParseResult parsed, params string[] problems)
    {
        foreach (var problem in parsed.Errors.Select(e => e.Message).Concat(problems))
        {
            Console.Error.WriteLine($"portcullis: {problem}");
        }

        Console.Error.WriteLine($"Run '{VerbPath(parsed.CommandResult.Command)} --help' for usage.");
        return ExitUsage;
    }

    private static string VerbPath(Command command)
    {
        var names = new List<string>();
        for (Command? at = command; at is not null and not RootCommand; at = at.Parents.OfType<Command>().FirstOrDefault())
        {
            names.Insert(0, at.Name);
        }

        names.Insert(0, "portcullis");
        return string.Join(' ', names);
    }

    // `portcullis --version`: the program's version alone, at once (`portcullis version` also loads the signatures).
    private sealed class VersionLineAction : SynchronousCommandLineAction
    {
        public override int Invoke(ParseResult parseResult)
        {
            parseResult.InvocationConfiguration.Output.WriteLine(ScanCommands.ProgramVersionLine());
            return ExitOk;
        }
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
        foreach (var warning in Warnings(config))
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

    internal static string ForwardTarget(GeneralSection general) => general.SmtpServerList;

    // Everything check-config warns about (on stderr, "warning: " first); a warning never changes the exit code.
    internal static IEnumerable<string> Warnings(GatewayConfig config) => FolderWarnings(config).Concat(ConfigChecks.Warnings(config));

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
