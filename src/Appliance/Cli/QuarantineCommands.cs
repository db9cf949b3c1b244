using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;
using Portcullis.Appliance.Configuration;
using Portcullis.Appliance.Gateway;
using Portcullis.Appliance.Messages;
using Portcullis.Appliance.Quarantine;
using Portcullis.SmtpCore.Downstream;

namespace Portcullis.Appliance.Cli;

// `portcullis quarantine list|show|release|delete|purge`: the quarantine manager. Exit 0 on
// success, 1 when the entry is missing or broken or the mail server refused a release, 64 bad
// usage, 78 bad configuration. Problems are one line on stderr, never a stack trace.
internal static class QuarantineCommands
{
    public const int ExitFailed = 1;

    public const string Usage = """
        usage: portcullis quarantine VERB [--config FILE] ...

          list [--since DATE] [--virus PATTERN] [--json]   entries, oldest first (PATTERN: substring, or a glob with * and ?)
          show ID                                          metadata and the message's header
          release ID [--to ADDRESS...]                     deliver through [general] smtp_server_address to the original
                                                           recipients (or the given ones), with an X-Portcullis-Released header
          delete ID                                        remove the entry
          purge [--older-than DAYS]                        remove entries older than DAYS (default: [quarantine] retention_days)
        """;

    public static async Task<int> RunAsync(ReadOnlyMemory<string> args)
    {
        if (args.Length == 0)
        {
            return UsageError("no quarantine verb given");
        }

        var verb = args.Span[0];
        if (!Options.TryParse(args.Span[1..], out var options, out var problem))
        {
            return UsageError($"quarantine {verb}: {problem}");
        }

        GatewayConfig config;
        try
        {
            config = ConfigLoader.Load(options.Config ?? ConfigLoader.DefaultPath);
        }
        catch (ConfigException e)
        {
            foreach (var error in e.Errors)
            {
                Console.Error.WriteLine(error);
            }

            return CommandLine.ExitConfig;
        }

        var store = new QuarantineStore(config.Quarantine.Folder);
        try
        {
            return verb switch
            {
                "list" when options.Ids.Count == 0 => List(store, options),
                "show" when options.Ids.Count == 1 => Show(store, options.Ids[0]),
                "release" when options.Ids.Count == 1 => await ReleaseAsync(store, config, options.Ids[0], options.To),
                "delete" when options.Ids.Count == 1 => Delete(store, options.Ids[0]),
                "purge" when options.Ids.Count == 0 => Purge(store, config, options.OlderThan),
                "list" or "purge" => UsageError($"quarantine {verb}: unexpected argument \"{options.Ids[0]}\""),
                "show" or "release" or "delete" => UsageError($"quarantine {verb}: expected one ID"),
                _ => UsageError($"unknown quarantine verb \"{verb}\""),
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

    private static int UsageError(string problem)
    {
        Console.Error.WriteLine($"portcullis: {problem}");
        Console.Error.Write(Usage);
        return CommandLine.ExitUsage;
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

    // --config FILE, --since DATE, --virus PATTERN, --json, --to ADDRESS (repeatable, or a comma list), --older-than DAYS.
    internal sealed class Options
    {
        public string? Config { get; private set; }
        public DateTimeOffset? Since { get; private set; }
        public Regex? Virus { get; private set; }
        public bool Json { get; private set; }
        public List<string> To { get; } = [];
        public int? OlderThan { get; private set; }
        public List<string> Ids { get; } = [];

        public static bool TryParse(ReadOnlySpan<string> args, out Options options, out string problem)
        {
            options = new Options();
            problem = "";
            for (var i = 0; i < args.Length; i++)
            {
                var arg = args[i];
                var (name, inline) = arg.StartsWith("--", StringComparison.Ordinal) && arg.IndexOf('=') is var eq and > 0
                    ? (arg[..eq], arg[(eq + 1)..])
                    : (arg, null);
                if (!name.StartsWith('-'))
                {
                    options.Ids.Add(arg);
                    continue;
                }

                if (name == "--json")
                {
                    options.Json = true;
                    continue;
                }

                if (name is not ("--config" or "-c" or "--since" or "--virus" or "--to" or "--older-than"))
                {
                    problem = $"unknown option \"{arg}\"";
                    return false;
                }

                var value = inline;
                if (value is null)
                {
                    if (i + 1 >= args.Length)
                    {
                        problem = $"{name} needs a value";
                        return false;
                    }

                    value = args[++i];
                }

                switch (name)
                {
                    case "--config" or "-c":
                        options.Config = value;
                        break;
                    case "--since":
                        if (!DateTimeOffset.TryParse(value, CultureInfo.InvariantCulture, DateTimeStyles.AssumeLocal, out var since))
                        {
                            problem = $"--since \"{value}\": expected a date such as 2024-01-31 or 2024-01-31T12:00";
                            return false;
                        }

                        options.Since = since;
                        break;
                    case "--virus":
                        options.Virus = Pattern(value);
                        break;
                    case "--to":
                        foreach (var address in ConfigValues.SplitList(value))
                        {
                            if (!ConfigValues.IsMailAddress(address.Trim('<', '>')))
                            {
                                problem = $"--to \"{address}\": expected a mail address such as user@example.com";
                                return false;
                            }

                            options.To.Add(address.Trim('<', '>'));
                        }

                        break;
                    case "--older-than":
                        if (!int.TryParse(value, NumberStyles.None, CultureInfo.InvariantCulture, out var days) || days > 36500)
                        {
                            problem = $"--older-than \"{value}\": expected a number of days from 0 to 36500";
                            return false;
                        }

                        options.OlderThan = days;
                        break;
                }
            }

            return true;
        }

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
