using System.CommandLine;
using System.CommandLine.Parsing;
using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;
using Portcullis.Appliance.Configuration;
using Portcullis.Appliance.Gateway;
using Portcullis.Appliance.Messages;
using Portcullis.Appliance.Notifications;
using Portcullis.Appliance.Quarantine;
using Portcullis.SmtpCore.Downstream;

namespace Portcullis.Appliance.Cli;

// `portcullis quarantine list|show|release|delete|purge`: the quarantine manager. Exit 0 on
// success, 1 when the entry is missing or broken, the folder cannot be read or the mail server
// refused a release, 64 bad usage, 78 bad configuration. Problems are one line on stderr, never a
// stack trace.
internal static class QuarantineCommands
{
    public const int ExitFailed = 1;

    // `portcullis quarantine VERB`: each verb's arguments become one Options, handled by RunAsync.
    internal static Command Verb()
    {
        var list = new Command("list", "quarantined messages, oldest first");
        var since = new Option<DateTimeOffset?>("--since")
        {
            Description = "only entries quarantined at or after DATE (2024-01-31 or 2024-01-31T12:00, local time)",
            HelpName = "DATE",
            CustomParser = ParseSince,
        };
        var virus = new Option<string>("--virus")
        {
            Description = "only entries whose detection name matches PATTERN (a substring, or a glob with * and ?; case-insensitive)",
            HelpName = "PATTERN",
        };
        var json = new Option<bool>("--json") { Description = "print the entries as a JSON array" };
        list.Options.Add(since);
        list.Options.Add(virus);
        list.Options.Add(json);

        var show = new Command("show", "the metadata and the message's header");
        var release = new Command("release",
            "deliver through [general] smtp_server_address to the original recipients (or the given ones), with an X-Portcullis-Released header; exit 1 when refused");
        var to = new Option<string[]>("--to")
        {
            Description = "deliver to ADDRESS instead of the original recipients (repeatable, or a comma-separated list)",
            HelpName = "ADDRESS",
            Arity = ArgumentArity.OneOrMore,
            CustomParser = ParseAddresses,
        };
        release.Options.Add(to);
        var delete = new Command("delete", "remove an entry");
        var purge = new Command("purge", "remove the entries older than DAYS (default: [quarantine] retention_days)");
        var olderThan = new Option<int?>("--older-than")
        {
            Description = "the age in days, 0 to 36500",
            HelpName = "DAYS",
            CustomParser = ParseDays,
        };
        purge.Options.Add(olderThan);

        var verb = new Command("quarantine", "the quarantine manager: exit 0 done, 1 the entry is missing or broken, the folder cannot be read, or the mail server refused");
        foreach (var command in new[] { list, show, release, delete, purge })
        {
            var config = CommandLine.ConfigOption();
            command.Options.Add(config);
            Argument<string>? id = null;
            if (command != list && command != purge)
            {
                id = new Argument<string>("ID") { Description = "the entry's id, as `portcullis quarantine list` shows it" };
                command.Arguments.Add(id);
            }

            var name = command.Name;
            command.SetAction((parsed, _) => RunAsync(name, new Options
            {
                Config = parsed.GetValue(config),
                Since = parsed.GetValue(since),
                Virus = parsed.GetValue(virus) is { } pattern ? Options.Pattern(pattern) : null,
                Json = parsed.GetValue(json),
                To = [.. parsed.GetValue(to) ?? []],
                OlderThan = parsed.GetValue(olderThan),
                Ids = id is null ? [] : [parsed.GetValue(id)!],
            }));
            verb.Subcommands.Add(command);
        }

        var help = new Command("help", "print this text") { Hidden = true };
        help.SetAction(_ => CommandLine.ShowHelp(["quarantine", "--help"]));
        verb.Subcommands.Add(help);
        return verb;
    }

    private static DateTimeOffset? ParseSince(ArgumentResult result)
    {
        var value = result.Tokens[0].Value;
        if (!DateTimeOffset.TryParse(value, CultureInfo.InvariantCulture, DateTimeStyles.AssumeLocal, out var since))
        {
            result.AddError($"--since \"{value}\": expected a date such as 2024-01-31 or 2024-01-31T12:00");
            return null;
        }

        return since;
    }

    private static string[] ParseAddresses(ArgumentResult result)
    {
        var addresses = new List<string>();
        foreach (var token in result.Tokens)
        {
            foreach (var address in ConfigValues.SplitList(token.Value))
            {
                if (!ConfigValues.IsMailAddress(address.Trim('<', '>')))
                {
                    result.AddError($"--to \"{address}\": expected a mail address such as user@example.com");
                    return [];
                }

                addresses.Add(address.Trim('<', '>'));
            }
        }

        return [.. addresses];
    }

    private static int? ParseDays(ArgumentResult result)
    {
        var value = result.Tokens[0].Value;
        if (!int.TryParse(value, NumberStyles.None, CultureInfo.InvariantCulture, out var days) || days > 36500)
        {
            result.AddError($"--older-than \"{value}\": expected a number of days from 0 to 36500");
            return null;
        }

        return days;
    }

    internal static async Task<int> RunAsync(string verb, Options options)
    {
        if (CommandLine.LoadConfig(options.Config, Console.Error) is not { } config)
        {
            return CommandLine.ExitConfig;
        }

        if (FolderProblem(config.Quarantine.Folder) is { } problem)
        {
            Console.Error.WriteLine($"portcullis: {problem}");
            return ExitFailed;
        }

        var store = new QuarantineStore(config.Quarantine.Folder);
        try
        {
            return verb switch
            {
                "list" => List(store, options),
                "show" => Show(store, options.Ids[0]),
                "release" => await ReleaseAsync(store, config, options.Ids[0], options.To),
                "delete" => Delete(store, options.Ids[0]),
                "purge" => Purge(store, config, options.OlderThan),
                _ => throw new ArgumentOutOfRangeException(nameof(verb), verb, "not a quarantine verb"),
            };
        }
        catch (QuarantineException e)
        {
            Console.Error.WriteLine($"portcullis: {e.Message}");
            return ExitFailed;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            Console.Error.WriteLine($"portcullis: quarantine {config.Quarantine.Folder}: {e.Message}");
            return ExitFailed;
        }
    }

    // A folder this user may not look into reads as missing to Directory.Exists, and so as an empty
    // quarantine: say so instead. A folder that does not exist yet is an empty quarantine.
    internal static string? FolderProblem(string folder, string what = "quarantine")
    {
        try
        {
            using var entries = Directory.EnumerateFileSystemEntries(folder).GetEnumerator();
            entries.MoveNext();
            return null;
        }
        catch (DirectoryNotFoundException)
        {
            return File.Exists(folder) ? $"{what} {folder} is a file, not a folder" : null;
        }
        catch (UnauthorizedAccessException)
        {
            return $"{what} {folder}: permission denied (run as root or as the gateway's user, portcullis)";
        }
        catch (IOException e)
        {
            return $"{what} {folder}: {e.Message}";
        }
    }

    private static int List(QuarantineStore store, Options options)
    {
        var listings = store.List();
        var selected = listings.Where(l => l.Entry is null
            ? options.Since is null && options.Virus is null
            : (options.Since is null || l.Entry.Time >= options.Since) && (options.Virus is null || options.Virus.IsMatch(l.Entry.Virus))).ToList();
        if (options.Json)
        {
            var entries = selected.Where(l => l.Entry is not null).Select(l => l.Entry!).ToList();
            Console.Out.WriteLine(JsonSerializer.Serialize(entries, QuarantineJson.Default.ListQuarantineEntry));
        }
        else
        {
            foreach (var listing in selected)
            {
                if (listing.Entry is { } e)
                {
                    Console.Out.WriteLine(TerminalText.Escape($"{e.Id}  {e.Time.ToLocalTime():yyyy-MM-dd HH:mm:ss}  {e.Action,-9}  {e.Virus}  from=<{e.Sender}>  subject={Quote(e.Subject)}"));
                }
            }
        }

        foreach (var broken in selected.Where(l => l.Entry is null))
        {
            Console.Error.WriteLine(TerminalText.Escape($"portcullis: {broken.Problem}"));
        }

        return 0;
    }

    private static int Show(QuarantineStore store, string id)
    {
        var entry = store.Get(id);
        var text = new StringBuilder();
        // Every value came from the mail or the client: escaped, one line each.
        void Field(string name, string? value) => text.Append(name).Append(TerminalText.Escape(value)).Append('\n');
        Field("id:             ", entry.Id);
        Field("time:           ", entry.Time.ToString("yyyy-MM-dd HH:mm:ss zzz", CultureInfo.InvariantCulture));
        Field("virus:          ", entry.Virus);
        Field("action:         ", entry.Action);
        Field("client address: ", entry.ClientAddress);
        Field("helo:           ", entry.Helo);
        Field("sender:         ", "<" + entry.Sender + ">");
        Field("recipients:     ", string.Join(", ", entry.Recipients.Select(r => "<" + r + ">")));
        Field("size:           ", entry.Size.ToString(CultureInfo.InvariantCulture));
        Field("subject:        ", entry.Subject);
        Field("message-id:     ", entry.MessageId);
        text.Append('\n');
        using (var message = store.OpenMessage(id))
        using (var reader = new StreamReader(message, Encoding.UTF8))
        {
            while (reader.ReadLine() is { } line && line.Length > 0)
            {
                text.Append(TerminalText.Escape(line)).Append('\n');
            }
        }

        Console.Out.Write(text.ToString());
        return 0;
    }

    private static async Task<int> ReleaseAsync(QuarantineStore store, GatewayConfig config, string id, IReadOnlyList<string> to)
    {
        var entry = store.Get(id);
        var recipients = to.Count > 0 ? to : entry.Recipients;
        if (recipients.Count == 0)
        {
            Console.Error.WriteLine(TerminalText.Escape($"portcullis: quarantine entry {id} has no recipients; give them with --to"));
            return ExitFailed;
        }

        byte[] message;
        using (var file = store.OpenMessage(id))
        using (var copy = new MemoryStream())
        {
            file.CopyTo(copy);
            message = copy.ToArray();
        }

        var header = Encoding.UTF8.GetBytes($"X-Portcullis-Released: {id} by {config.General.Hostname}; {MessageHeaders.Rfc5322Date(DateTimeOffset.Now)}\r\n");
        var server = new DownstreamOptions
        {
            Host = config.General.SmtpServerAddress,
            Port = config.General.SmtpServerPort,
            HeloName = config.General.Hostname,
            ConnectTimeout = TimeSpan.FromSeconds(30),
            ReplyTimeout = config.General.SmtpServerTimeout,
            DataReplyTimeout = config.General.SmtpServerTimeout,
        };
        DirectDelivery.Result result;
        try
        {
            result = await DirectDelivery.SendAsync(server, entry.Sender, recipients, header, new BytesContent(message), CancellationToken.None);
        }
        catch (DownstreamException e)
        {
            Console.Error.WriteLine(TerminalText.Escape($"portcullis: release of {id} failed: {e.Message}"));
            return ExitFailed;
        }
        catch (ArgumentException e)
        {
            // A recipient or sender the SMTP client will not put on the wire (CR, LF, NUL).
            Console.Error.WriteLine(TerminalText.Escape($"portcullis: release of {id} failed: {e.Message}"));
            return ExitFailed;
        }

        foreach (var (recipient, reply) in result.Refused)
        {
            Console.Error.WriteLine(TerminalText.Escape($"portcullis: release of {id}: <{recipient}> refused by {server.Host}:{server.Port}: {reply}"));
        }

        if (!result.Delivered)
        {
            Console.Error.WriteLine(TerminalText.Escape($"portcullis: release of {id} refused by {server.Host}:{server.Port}: {result.Reply}"));
            return ExitFailed;
        }

        var delivered = recipients.Except(result.Refused.Select(r => r.Recipient)).ToList();
        Console.Out.WriteLine(TerminalText.Escape($"released {id} to {string.Join(", ", delivered.Select(r => "<" + r + ">"))}: {result.Reply}"));
        return result.Refused.Count == 0 ? 0 : ExitFailed;
    }

    private static int Delete(QuarantineStore store, string id)
    {
        if (!store.Delete(id))
        {
            Console.Error.WriteLine($"portcullis: no quarantine entry {id} in {store.Folder}");
            return ExitFailed;
        }

        Console.Out.WriteLine($"deleted {id}");
        return 0;
    }

    private static int Purge(QuarantineStore store, GatewayConfig config, int? olderThan)
    {
        var days = olderThan ?? config.Quarantine.RetentionDays;
        if (days <= 0 && olderThan is null)
        {
            Console.Out.WriteLine("retention_days = 0 keeps entries for ever: nothing purged (use --older-than DAYS)");
            return 0;
        }

        var removed = store.Purge(DateTimeOffset.UtcNow.AddDays(-days));
        Console.Out.WriteLine($"purged {removed} entr{(removed == 1 ? "y" : "ies")} older than {days} day{(days == 1 ? "" : "s")}");
        return 0;
    }

    private static string Quote(string text) => "\"" + text.Replace("\\", "\\\\").Replace("\"", "\\\"") + "\"";

    // The arguments of one quarantine verb, as the command line gave them.
    internal sealed class Options
    {
        public string? Config { get; init; }
        public DateTimeOffset? Since { get; init; }
        public Regex? Virus { get; init; }
        public bool Json { get; init; }
        public List<string> To { get; init; } = [];
        public int? OlderThan { get; init; }
        public List<string> Ids { get; init; } = [];

        // A glob (* and ?) matches the whole name; plain text matches anywhere in it. Case-insensitive.
        internal static Regex Pattern(string text)
        {
            if (text.IndexOfAny(['*', '?']) < 0)
            {
                return new Regex(Regex.Escape(text), RegexOptions.IgnoreCase | RegexOptions.CultureInvariant);
            }

            var pattern = "^" + Regex.Escape(text).Replace("\\*", ".*").Replace("\\?", ".") + "$";
            return new Regex(pattern, RegexOptions.IgnoreCase | RegexOptions.CultureInvariant);
        }
    }
}
