using System.CommandLine;
using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;
using Portcullis.Appliance.Configuration;
using Portcullis.Appliance.Quarantine;
using Portcullis.Appliance.Queue;

namespace Portcullis.Appliance.Cli;

// `portcullis queue list|show|flush|hold|release|delete`: the store-and-forward queue in
// <queue_folder>/queue, read and changed directly (QueueStore's locks keep this safe while the
// gateway runs); flush asks the running gateway over its control socket. Exit codes as for
// `quarantine`: 0 done, 1 the entry is missing, busy or broken, or the folder cannot be read,
// 64 bad usage, 69 no gateway answered (flush), 78 bad configuration. Problems are one line on
// stderr, never a stack trace.
internal static class QueueCommands
{
    public const int ExitFailed = 1;

    internal static Command Verb()
    {
        var list = new Command("list", "queued messages, oldest first: id, arrival, size, sender, recipients and their state, attempts, next attempt, held, last reply");
        var json = new Option<bool>("--json") { Description = "print the entries as a JSON array" };
        list.Options.Add(json);
        var show = new Command("show", "an entry's envelope, every recipient's state and the message's header");
        var flush = new Command("flush", "ask the running gateway to try every queued message that is not held now; exit 69 when no gateway answered");
        var hold = new Command("hold", "keep an entry in the queue without delivery attempts until it is released");
        var release = new Command("release", "end a hold: the entry is due at once (the gateway picks it up within 30 s, at once after a flush)");
        var delete = new Command("delete", "remove an entry without delivering it and without a bounce");

        var verb = new Command("queue", "the store-and-forward queue: exit 0 done, 1 the entry is missing or busy, or the folder cannot be read");
        foreach (var command in new[] { list, show, flush, hold, release, delete })
        {
            var config = CommandLine.ConfigOption();
            command.Options.Add(config);
            Argument<string>? id = null;
            if (command != list && command != flush)
            {
                id = new Argument<string>("ID") { Description = "the entry's id, as `portcullis queue list` shows it" };
                command.Arguments.Add(id);
            }

            var name = command.Name;
            if (command == flush)
            {
                command.SetAction((parsed, _) => ControlClient.RunAsync(parsed.GetValue(config) ?? ConfigLoader.DefaultPath, "QUEUE FLUSH"));
            }
            else
            {
                command.SetAction(parsed => Run(name, parsed.GetValue(config), id is null ? null : parsed.GetValue(id), parsed.GetValue(json),
                    Console.Out, Console.Error));
            }

            verb.Subcommands.Add(command);
        }

        var help = new Command("help", "print this text") { Hidden = true };
        help.SetAction(_ => CommandLine.ShowHelp(["queue", "--help"]));
        verb.Subcommands.Add(help);
        return verb;
    }

    // One verb other than flush; output and error are the terminal's except in tests.
    internal static int Run(string verb, string? configPath, string? id, bool json, TextWriter output, TextWriter error)
    {
        if (CommandLine.LoadConfig(configPath, error) is not { } config)
        {
            return CommandLine.ExitConfig;
        }

        var store = new QueueStore(QueueStore.FolderFor(config.General.QueueFolder), config.Queue.MaxSize);
        if (QuarantineCommands.FolderProblem(store.Folder, "queue") is { } problem)
        {
            error.WriteLine($"portcullis: {problem}");
            return ExitFailed;
        }

        if (id is not null && !QueueStore.IsValidId(id))
        {
            error.WriteLine(TerminalText.Escape($"portcullis: \"{id}\" is not a queue id (they look like 20261206051234567-0a1b2c, as `portcullis queue list` shows them)"));
            return ExitFailed;
        }

        try
        {
            return verb switch
            {
                "list" => List(store, json, output, error),
                "show" => Show(store, id!, output),
                "hold" => Done(output, "held", store.Hold(id!)),
                "release" => Done(output, "released", store.Release(id!)),
                "delete" => Done(output, "deleted", store.Delete(id!)),
                _ => throw new ArgumentOutOfRangeException(nameof(verb), verb, "not a queue verb"),
            };
        }
        catch (QueueEntryNotFoundException e)
        {
            error.WriteLine($"portcullis: no queue entry {e.Id} in {store.Folder}");
            return ExitFailed;
        }
        catch (QueueBusyException e)
        {
            error.WriteLine($"portcullis: {e.Message}");
            return ExitFailed;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            error.WriteLine($"portcullis: queue {store.Folder}: {e.Message}");
            return ExitFailed;
        }
    }

    private static int Done(TextWriter output, string what, QueueEntry entry)
    {
        output.WriteLine(TerminalText.Escape($"{what} {entry.Id} from <{entry.Sender}> to {string.Join(", ", entry.Pending.Select(r => "<" + r.Address + ">"))}"));
        return 0;
    }

    private static int List(QueueStore store, bool json, TextWriter output, TextWriter error)
    {
        var problems = new List<string>();
        var entries = store.List(problems.Add);
        if (json)
        {
            output.WriteLine(JsonSerializer.Serialize(entries.ToList(), QueueListJson.Default.ListQueueEntry));
        }
        else if (entries.Count == 0)
        {
            output.WriteLine("the queue is empty");
        }
        else
        {
            var text = new StringBuilder();
            foreach (var e in entries)
            {
                // Every value came from the mail or the client: escaped, one line each.
                text.Append(TerminalText.Escape($"{e.Id}  {Time(e.Arrival)}  {e.Size,9}  <{e.Sender}>  attempts {e.Attempts}"
                    + (e.Held ? "  HELD" : $"  next {Time(e.NextAttempt)}"))).Append('\n');
                foreach (var r in e.Recipients)
                {
                    text.Append(TerminalText.Escape($"    <{r.Address}>  {State(r.State)}{(r.LastReply.Length > 0 ? "  " + r.LastReply : "")}")).Append('\n');
                }

                if (e.LastReply.Length > 0) text.Append(TerminalText.Escape("    last reply: " + e.LastReply)).Append('\n');
            }

            text.Append(CultureInfo.InvariantCulture, $"{entries.Count} message{(entries.Count == 1 ? "" : "s")}, {entries.Sum(e => e.Size)} bytes\n");
            output.Write(text.ToString());
        }

        foreach (var problem in problems)
        {
            error.WriteLine(TerminalText.Escape($"portcullis: {problem}"));
        }

        return 0;
    }

    private static int Show(QueueStore store, string id, TextWriter output)
    {
        var entry = store.Find(id) ?? throw new QueueEntryNotFoundException(id);
        var text = new StringBuilder();
        void Field(string name, string? value) => text.Append(name).Append(TerminalText.Escape(value)).Append('\n');
        Field("id:             ", entry.Id);
        Field("arrival:        ", Time(entry.Arrival));
        Field("size:           ", entry.Size.ToString(CultureInfo.InvariantCulture));
        Field("sender:         ", "<" + entry.Sender + ">");
        Field("client address: ", entry.ClientAddress);
        Field("helo:           ", entry.Helo);
        if (entry.AuthUser is { } user) Field("auth user:      ", user);
        Field("dsn:            ", $"RET={entry.Ret ?? "(none)"} ENVID={entry.EnvId ?? "(none)"}");
        Field("attempts:       ", entry.Attempts.ToString(CultureInfo.InvariantCulture));
        Field("last attempt:   ", entry.LastAttempt is { } last ? Time(last) : "never");
        Field("next attempt:   ", entry.Held ? "held (portcullis queue release " + entry.Id + ")" : Time(entry.NextAttempt));
        Field("last reply:     ", entry.LastReply);
        foreach (var r in entry.Recipients)
        {
            Field("recipient:      ", $"<{r.Address}> {State(r.State)}"
                + (r.Notify is { } notify ? " NOTIFY=" + notify : "") + (r.OriginalRecipient is { } orcpt ? " ORCPT=" + orcpt : "")
                + (r.LastReply.Length > 0 ? ": " + r.LastReply : ""));
        }

        text.Append('\n');
        using (var message = store.OpenMessage(id))
        using (var reader = new StreamReader(message, Encoding.UTF8))
        {
            while (reader.ReadLine() is { } line && line.Length > 0)
            {
                text.Append(TerminalText.Escape(line)).Append('\n');
            }
        }

        output.Write(text.ToString());
        return 0;
    }

    private static string State(RecipientState state) => state.ToString().ToLowerInvariant();

    private static string Time(DateTimeOffset time) => time.ToLocalTime().ToString("yyyy-MM-dd HH:mm:ss", CultureInfo.InvariantCulture);
}

// `queue list --json`: the entries as the queue keeps them, with snake_case names and states as
// the text output writes them (pending, delivered, failed); absent values are null, so every
// entry has the same keys.
[JsonSourceGenerationOptions(PropertyNamingPolicy = JsonKnownNamingPolicy.SnakeCaseLower, WriteIndented = true,
    Converters = [typeof(RecipientStateWords)])]
[JsonSerializable(typeof(List<QueueEntry>))]
internal sealed partial class QueueListJson : JsonSerializerContext;

internal sealed class RecipientStateWords() : JsonStringEnumConverter<RecipientState>(JsonNamingPolicy.SnakeCaseLower);
